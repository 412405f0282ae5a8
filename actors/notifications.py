"""Notification actors (SPEC §6, A4/A6). Their logic is not yet filed as an issue."""

from __future__ import annotations

import logging

from actors.declare import lapse_actor
from actors.pending import not_implemented

ISSUE = "SPEC §6 notifications (not yet filed as an issue)"


@lapse_actor(queue_name="notifications")
def send_notification(notification_id: int) -> None:
    """Send one claimed notification (A4). Not implemented yet: logs and does nothing."""
    not_implemented("send_notification", ISSUE, notification_id=notification_id)


@lapse_actor(queue_name="notifications")
def send_broadcast(broadcast_id: int) -> None:
    """Walk one step of a broadcast (A6): queue keyset pages of its audience, one
    ``send_notification`` per user, then send itself again until it is done or cancelled."""
    from lapse.flows import broadcasts as broadcast_flow
    from lapse.platform import db
    from lapse.platform.config import settings

    config = settings()
    run = broadcast_flow.walk(db.pool(), broadcast_id,
                              pace=broadcast_flow.Pace.from_settings(config),
                              budget_seconds=config.sweep_budget_seconds)
    logging.getLogger("actors").info(
        "actor=send_broadcast broadcast_id=%s outcome=%s batches=%s queued=%s next_in=%s",
        broadcast_id, run.outcome, run.batches, run.queued, run.next_in)
