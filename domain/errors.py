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

__all__ = ["ActivationBusy", "BroadcastRefused", "InvalidArguments", "InvalidBroadcast",
           "InvalidPanel", "LapseError", "NoPanelHoldsKey", "PermanentError", "RetryableError",
           "UnknownBroadcast", "UnknownNotification", "UnknownPanel", "UnknownSubscription",
           "UnknownSweep", "UnknownUser"]


class UnknownUser(PermanentError):
    """A user id with no row in ``users``."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"no user with id {user_id}")
        self.user_id = user_id


class NoTelegramId(PermanentError):
    """A sign-up for a user with no Telegram id: a trial starts from the bot, which is also where
    its key is delivered, so there is nobody to give it to. Nothing was changed."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"user {user_id} has no Telegram id: a trial is a sign-up from the bot "
                         "and its key is delivered there; nothing was changed (set "
                         "users.telegram_id, then send start_trial again)")
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


class UnknownBroadcast(PermanentError):
    """A broadcast id with no row in ``broadcasts``; nothing was changed."""

    def __init__(self, broadcast_id: int) -> None:
        super().__init__(f"no broadcast with id {broadcast_id}")
        self.broadcast_id = broadcast_id


class InvalidBroadcast(PermanentError):
    """A broadcast message Lapse refuses (no English text, empty, too long, unknown template)."""


class BroadcastRefused(PermanentError):
    """The broadcast's state does not allow the operation (start a cancelled one, cancel a done one)."""

    def __init__(self, broadcast_id: int, status: str, action: str) -> None:
        super().__init__(f"broadcast {broadcast_id} is {status}: cannot {action} it")
        self.broadcast_id, self.status = broadcast_id, status


class UnknownNotification(PermanentError):
    """A notification id with no row in ``notifications``; nothing was sent."""

    def __init__(self, notification_id: int) -> None:
        super().__init__(f"no notification with id {notification_id}")
        self.notification_id = notification_id
