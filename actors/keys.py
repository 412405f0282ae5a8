"""Access-key removal (SPEC §6 A2/A3, §9): ``remove_client(access_key, panel_id=None)``.

Sent after commit by every move to ``expired`` (the key is already NULL in the
database and its panel rows ``removing``). Thin: validates the key, runs
``lapse.flows.key_removal``; a panel that failed raises a retryable error
and the message is retried with backoff (policy below). A lost or
dead-lettered removal leaves an orphan client that ``sweep_reconcile``
removes.
"""

from __future__ import annotations

import logging
import uuid

from actors.declare import lapse_actor
from domain.errors import InvalidArguments
from lapse.flows import key_removal
from lapse.platform import clock, db

logger = logging.getLogger(__name__)


# On the activation queue: each queue costs the Postgres broker two consumers, each holding a
# connection of its 16-connection pool; a queue of its own exhausted it (test_processes).
@lapse_actor(queue_name="activation", max_retries=10, min_backoff=10_000, max_backoff=3_600_000)
def remove_client(access_key: str, panel_id: int | None = None) -> None:
    """Remove an ended key's client from one panel, or from every panel it may be on."""
    try:
        key = str(uuid.UUID(access_key))
    except ValueError:
        raise InvalidArguments("remove_client", f"access_key must be a UUID, got {access_key!r}"
                               ) from None
    counts = key_removal.remove_key(db.pool(), key, panel_id, now=clock.now())
    logger.info("remove_client access_key=%s panel_id=%s %s", key, panel_id,
                " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
