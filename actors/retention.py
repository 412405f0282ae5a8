"""Recording retention actors (SPEC §4): ``tag_recordings`` (R3) and ``restore_recordings`` (R5).

Thin: each runs one flow of ``lapse.flows.recordings`` (a decision in one short
transaction under the user lock, then the user's batches applied to S3) and
turns a ``retry`` decision into a ``dramatiq.Retry`` with its delay. The
retry count is shared: a user who is entitled again at each retry (flapping)
reaches the dead-letter archive after 14, and the archive closes the user's
tagging request (R2), so the next lapse enqueues again.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import dramatiq
from psycopg import Connection

from actors.declare import lapse_actor
from domain import retention
from lapse.flows import recordings as flows
from lapse.platform import clock, db, dead_letters
from lapse.platform.config import settings
from lapse.ports import s3

logger = logging.getLogger(__name__)
MAX_DELAY = timedelta(days=7) - timedelta(minutes=1)  # Dramatiq's cap on a delay


# Priority 10 (dramatiq's default is 0): a worker holding both a removal and a tagging runs the
# removal first. Taking away access that is no longer paid for comes before the audio's tag,
# which only waits a moment longer (its purge is days away, R6).
@lapse_actor(queue_name="retention", max_retries=14, priority=10)
def tag_recordings(user_id: int) -> None:
    """R3: tag a lapsed user's recordings; retry at a known end within 6 days; else superseded."""
    now = clock.now()
    decision = flows.tag_user(db.pool(), s3.lazy_store(), user_id, now=now, config=settings())
    logger.info("tag_recordings user_id=%s outcome=%s batch=%s keys=%s retry_at=%s", user_id,
                decision.outcome, decision.batch_id, decision.keys,
                decision.retry_at.isoformat() if decision.retry_at else None)
    if decision.retry_at is not None:
        delay = min(decision.retry_at - now, MAX_DELAY)
        raise dramatiq.Retry(f"user {user_id} is entitled until {decision.retry_at.isoformat()}",
                             delay=max(int(delay.total_seconds() * 1000), 1))


def _close_tagging_request(conn: Connection[Any], concerns: dict[str, Any]) -> None:
    if concerns["user_id"] is not None:
        retention.close_request(conn, concerns["user_id"])


dead_letters.when_dead("tag_recordings", _close_tagging_request)


@lapse_actor(queue_name="retention")
def restore_recordings(user_id: int) -> None:
    """R5: give an entitled user's tagged, unpurged recordings back; apply the user's pending batches."""
    decision = flows.restore_user(db.pool(), s3.lazy_store(), user_id, now=clock.now(),
                                  config=settings())
    logger.info("restore_recordings user_id=%s outcome=%s batch=%s keys=%s", user_id,
                decision.outcome, decision.batch_id, decision.keys)
