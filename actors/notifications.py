"""Notification actors (SPEC §6 N1, A6): ``send_notification``; ``send_broadcast`` is still a stub.

``send_notification`` is thin: it runs ``lapse.flows.notifications.deliver``
and logs one line. When no rate token is free (a 429 pause, the overall or
the per-chat limit) it raises ``dramatiq.Retry`` with the wait, so no worker
thread sleeps. Those waits are not failures: ``retry_when`` always retries
them, and retries an error (a database outage) while the message has made
fewer than ``ATTEMPTS`` tries in all, waits included, with backoff capped at
a minute. A message that still ends dead loses nothing: the row stays
``pending`` and ``sweep_outbox`` sends it again, and a duplicate message is
harmless because only one claim of a row can succeed.
"""

from __future__ import annotations

import logging

import dramatiq

from actors.declare import lapse_actor
from actors.pending import not_implemented
from lapse.flows import notifications as flows
from lapse.platform import db

logger = logging.getLogger(__name__)
ISSUE = "SPEC §6 notifications (not yet filed as an issue)"
ATTEMPTS = 200


def retry_when(retries: int, exception: BaseException) -> bool:
    """A wait for a rate token always tries again; an error while under ATTEMPTS tries."""
    return isinstance(exception, dramatiq.Retry) or retries < ATTEMPTS


@lapse_actor(queue_name="notifications", retry_when=retry_when, min_backoff=1_000,
             max_backoff=60_000, time_limit=120_000)
def send_notification(notification_id: int) -> None:
    """N1: rate token, claim with a fresh re-check, send through Telegram, record the outcome."""
    try:
        outcome = flows.deliver(db.pool(), notification_id)
    except flows.WaitForRate as wait:
        raise dramatiq.Retry(str(wait), delay=wait.delay_ms) from None
    logger.info("send_notification notification_id=%s outcome=%s", notification_id, outcome)


@lapse_actor(queue_name="notifications")
def send_broadcast(broadcast_id: int) -> None:
    """Send a broadcast to users without a subscription (A6). Not implemented yet: logs only."""
    not_implemented("send_broadcast", ISSUE, broadcast_id=broadcast_id)
