"""The shared rate-limit store in Postgres, for the Postgres-broker variant (one dependency).

One short transaction per decision: lock the buckets' rows (the overall one
first, so all senders queue on it), decide with the same GCRA as the other
stores, advance the rows when admitted (or the line's row when a place in it
was handed out). The lock is held for a few
milliseconds and never across the HTTP call. ``now`` is a parameter (the
application clock), never SQL ``now()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import ConnectionPool

from lapse.platform import sql
from lapse.platform.rate_limits import Bucket, admit, line_key

QUERIES = sql.queries(__file__, "rate_limits")


class PostgresStore:
    """Limits and pauses as rows of ``rate_limits``."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def acquire(self, pause_key: str, buckets: Sequence[Bucket], now: float) -> float:
        keys, line = [b.key for b in buckets], line_key(buckets[0])
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(QUERIES["no_flush_wait"])
            rows: list[Any] = conn.execute(QUERIES["lock_buckets"], {
                "keys": [*keys, line], "pause_key": pause_key}).fetchall()
            arrivals = {row["key"]: _seconds(row["not_before"]) for row in rows}
            wait, following, line_end = admit([arrivals[k] for k in keys], buckets, now,
                                              _seconds(rows[0]["pause_until"]), arrivals[line])
            if wait == 0:
                conn.execute(QUERIES["advance_buckets"], {
                    "keys": keys, "not_befores": [_time(t) for t in following]})
            elif line_end is not None:
                conn.execute(QUERIES["advance_buckets"], {
                    "keys": [line], "not_befores": [_time(line_end)]})
        return wait

    def extend_pause(self, key: str, until: float, now: float) -> None:
        with self.pool.connection() as conn:  # committed and flushed: every sender must see it
            conn.execute(QUERIES["extend_pause"], {"key": key, "until": _time(until)})

    def pause_until(self, key: str) -> float | None:
        with self.pool.connection() as conn:
            row: Any = conn.execute(QUERIES["pause_until"], {"key": key}).fetchone()
        return _seconds(row["not_before"]) if row else None


def _seconds(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
