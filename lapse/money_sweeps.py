"""The money sweeps: auto-renewal (M3). Batches of due subscriptions, one transaction per batch."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from psycopg_pool import ConnectionPool

from domain import renewals
from lapse.after_commit import transaction
from lapse.config import settings
from lapse.sweeps import SweepContext

BATCH = 100


def sweep_auto_renewals(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """M3: renew every due subscription once; rows another sweep holds are left to it."""
    window = timedelta(hours=settings().renewal_window_hours)
    counts: Counter[str] = Counter()
    after = int((context.cursor or {}).get("after", 0))
    while True:
        with pool.connection() as conn, (conn.transaction(force_rollback=True) if context.dry_run
                                         else transaction(conn)):
            batch = renewals.renew_due_batch(conn, now=context.now, window=window, after=after,
                                             limit=BATCH)
        if batch.last_id is None:
            return dict(counts)
        counts.update(batch.counts)
        after = batch.last_id
        if context.out_of_time():
            context.resume = {"after": after}
            return dict(counts)
