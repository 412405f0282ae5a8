"""Every error the domain raises, and whether it is permanent.

The base classes live in ``lapse/platform/errors.py`` (the platform below the
domain archives and retries by them); the domain's errors subclass them.
"""

from __future__ import annotations

from lapse.platform.errors import (
    InvalidArguments,
    LapseError,
    PermanentError,
    RetryableError,
    UnknownSweep,
)

__all__ = ["InvalidArguments", "LapseError", "PermanentError", "RetryableError", "UnknownSweep",
           "UnknownUser"]


class UnknownUser(PermanentError):
    """A user id with no row in ``users``."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"no user with id {user_id}")
        self.user_id = user_id
