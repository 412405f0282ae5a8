"""Notification actors (SPEC §6 N1, A6): ``send_notification`` and ``send_broadcast``.

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
from lapse.flows import broadcasts as broadcast_flow
from lapse.flows import notifications as flows
from lapse.platform import db
from lapse.platform.config import settings

logger = logging.getLogger(__name__)
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
    """Walk one step of a broadcast (A6): queue keyset pages of its audience, one
    ``send_notification`` per user, then send itself again until it is done or cancelled."""
    config = settings()
    run = broadcast_flow.walk(db.pool(), broadcast_id,
                              pace=broadcast_flow.Pace.from_settings(config),
                              budget_seconds=config.sweep_budget_seconds)
    logger.info(
        "send_broadcast broadcast_id=%s outcome=%s batches=%s queued=%s next_in=%s",
        broadcast_id, run.outcome, run.batches, run.queued, run.next_in)
