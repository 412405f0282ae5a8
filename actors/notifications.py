"""Notification actors (SPEC §6, A4/A6). Their logic is not yet filed as an issue."""

from __future__ import annotations

from actors.declare import lapse_actor
from actors.pending import not_implemented

ISSUE = "SPEC §6 notifications (not yet filed as an issue)"


@lapse_actor(queue_name="notifications")
def send_notification(notification_id: int) -> None:
    """Send one claimed notification (A4). Not implemented yet: logs and does nothing."""
    not_implemented("send_notification", ISSUE, notification_id=notification_id)


@lapse_actor(queue_name="notifications")
def send_broadcast(broadcast_id: int) -> None:
    """Send a broadcast to users without a subscription (A6). Not implemented yet: logs only."""
    not_implemented("send_broadcast", ISSUE, broadcast_id=broadcast_id)
