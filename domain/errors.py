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

__all__ = ["ActivationBusy", "InvalidArguments", "InvalidPanel", "LapseError", "NoPanelHoldsKey",
           "PermanentError", "RetryableError", "UnknownPanel", "UnknownSubscription",
           "UnknownNotification", "UnknownSweep", "UnknownUser"]


class UnknownUser(PermanentError):
    """A user id with no row in ``users``."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"no user with id {user_id}")
        self.user_id = user_id


class UnknownPanel(PermanentError):
    """A panel name (or id) with no row in ``panels``."""

    def __init__(self, panel: str | int) -> None:
        super().__init__(f"no panel {panel!r}; `lapse panel list` shows the panels")
        self.panel = panel


class InvalidPanel(PermanentError):
    """A panel definition Lapse refuses: a bad name, URL, inbound, prefix, or a name taken."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"panel {name!r}: {problem}")
        self.name = name


class UnknownSubscription(PermanentError):
    """A subscription id with no row in ``subscriptions``; nothing was changed."""

    def __init__(self, subscription_id: int) -> None:
        super().__init__(f"no subscription with id {subscription_id}")
        self.subscription_id = subscription_id


class ActivationBusy(RetryableError):
    """Another worker holds the subscription's row or its activation lease: try again later."""

    def __init__(self, subscription_id: int, holder: str) -> None:
        super().__init__(f"subscription {subscription_id}: activation held by {holder}")
        self.subscription_id = subscription_id


class NoPanelHoldsKey(RetryableError):
    """No usable panel took the subscription's key this time; the activation is retried."""

    def __init__(self, subscription_id: int, problems: str) -> None:
        super().__init__(f"subscription {subscription_id}: no panel holds its key ({problems})")
        self.subscription_id = subscription_id


class UnknownNotification(PermanentError):
    """A notification id with no row in ``notifications``; nothing was sent."""

    def __init__(self, notification_id: int) -> None:
        super().__init__(f"no notification with id {notification_id}")
        self.notification_id = notification_id
