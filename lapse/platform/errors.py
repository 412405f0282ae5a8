"""The two kinds of failure every layer speaks: permanent and retryable.

A permanent error sends the message to the dead-letter archive at once (the
actors list ``PermanentError`` in ``throws``); anything else is retried with
backoff and archived when retries run out. The domain's own errors
(``domain/errors.py``) subclass these.
"""

from __future__ import annotations


class LapseError(Exception):
    """Base of Lapse's own errors."""

    permanent = False


class PermanentError(LapseError):
    """Retrying cannot help; an operator must look at the message."""

    permanent = True


class RetryableError(LapseError):
    """A transient failure (a service down, a lock timeout); retry with backoff."""


class InvalidArguments(PermanentError):
    """A message's arguments do not fit its actor (wrong type, count, or value)."""

    def __init__(self, actor_name: str, problem: str) -> None:
        super().__init__(f"{actor_name}: {problem}")
        self.actor_name = actor_name


class UnknownSweep(PermanentError):
    """A sweep name that Lapse does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown sweep {name!r}; known: {', '.join(known)}")
        self.name = name
