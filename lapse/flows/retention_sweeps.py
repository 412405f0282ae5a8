"""The retention sweeps (R2, R4, R6) and fast expiry: keyset pages, short transactions, resumable cursors.

``sweep_lapses`` (hourly) requests tagging for everyone an entitlement source
ended for since its persisted watermark, re-reading a 15-minute overlap.
``sweep_retention`` (daily) is the reconciliation that does not trust any
event: it tags every lapsed user past the settle window, restores every
entitled user with tagged objects, and re-applies unapplied batches.
``sweep_purge`` (daily) deletes objects tagged longer than the purge window.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from domain import lifecycle
from domain.retention import request_tagging
from lapse.flows import recordings as flows
from lapse.platform import clock
from lapse.platform.after_commit import send_after_commit, transaction
from lapse.platform.config import settings
from lapse.platform.sql import queries
from lapse.platform.sweeps import SweepContext
from lapse.ports import s3

logger = logging.getLogger(__name__)
SQL = queries(__file__, "retention_sweeps")
OVERLAP = timedelta(minutes=15)
FIRST_LOOKBACK = timedelta(days=8)  # a first run covers the 7-day retention grace and a day
PAGE = 500
FAST_EXPIRY_ACTOR = "sweep_fast_expiry"  # its shards are sent to the sweep's own actor


class RateLimiter:
    """At most ``per_second`` actions on average since it was made; sleeps (holding no connection) to keep to it."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.started = time.monotonic()
        self.done = 0

    def acted(self, count: int) -> None:
        self.done += count
        ahead = self.done / self.per_second - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def _page(pool: ConnectionPool, query: str, params: dict[str, Any]) -> list[int]:
    with pool.connection() as conn:
        rows: list[Any] = conn.execute(SQL[query], {"limit": PAGE} | params).fetchall()
    return [int(r["user_id"]) for r in rows]


def sweep_lapses(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """R2 backstop: a tagging request for every user whose entitlement source ended since the watermark."""
    cursor = context.cursor or {}
    if cursor:
        start, end = clock.parse_time(cursor["start"]), clock.parse_time(cursor["end"])
    else:
        with pool.connection() as conn:
            row: Any = conn.execute(SQL["watermark"], {"sweep": "lapses"}).fetchone()
        start = (row["watermark"] if row and row["watermark"] else context.now - FIRST_LOOKBACK)
        start, end = start - OVERLAP, context.now
    grace = settings().billing_grace
    counts = {"candidates": 0, "requested": 0, "already_open": 0}
    after = int(cursor.get("after", 0))
    while users := _page(pool, "lapsed_between", {"start": start, "end": end, "after": after,
                                                  "grace": grace}):
        counts["candidates"] += len(users)
        if not context.dry_run:
            with pool.connection() as conn, transaction(conn):
                for user_id in users:
                    opened = request_tagging(conn, user_id, now=context.now, reason="sweep_lapses")
                    counts["requested" if opened else "already_open"] += 1
        after = users[-1]
        if context.out_of_time():
            context.resume = {"start": start.isoformat(), "end": end.isoformat(), "after": after}
            return counts
    if not context.dry_run:
        with pool.connection() as conn, transaction(conn):
            conn.execute(SQL["save_watermark"], {"sweep": "lapses", "watermark": end,
                                                 "now": context.now})
    return counts


# (phase, page query, filter query or None, actor sent, count name)
_RECONCILE = (
    ("tag", "users_with_audio", "lapsed_and_settled", "tag_recordings", "tag"),
    ("restore", "users_tagged", "entitled", "restore_recordings", "restore"),
    # restore_recordings applies the user's pending batches whatever it decides
    ("apply", "users_with_pending_batches", None, "restore_recordings", "apply"),
)


def sweep_retention(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """R4: reconcile both ways — tag lapsed users, restore entitled ones, re-apply unapplied batches."""
    config = settings()
    cursor = context.cursor or {"phase": "tag", "after": 0}
    limiter = RateLimiter(config.retention_rate)
    params = {"now": context.now, "grace": config.billing_grace,
              "settled": context.now - config.settle}
    counts = {"users_scanned": 0} | {name: 0 for *_, name in _RECONCILE}
    phases = [p[0] for p in _RECONCILE]
    for phase, page_query, filter_query, actor, name in _RECONCILE[phases.index(cursor["phase"]):]:
        after = int(cursor["after"]) if phase == cursor["phase"] else 0
        while users := _page(pool, page_query, {"after": after}):
            counts["users_scanned"] += len(users)
            targets = _filter(pool, filter_query, users, params)
            counts[name] += len(targets)
            if targets and not context.dry_run:
                with pool.connection() as conn, transaction(conn):
                    for user_id in targets:
                        send_after_commit(conn, actor, user_id)
                limiter.acted(len(targets))
            after = users[-1]
            if context.out_of_time():
                context.resume = {"phase": phase, "after": after}
                return counts
    return counts


def _filter(pool: ConnectionPool, query: str | None, users: list[int],
            params: dict[str, Any]) -> list[int]:
    if query is None:
        return users
    with pool.connection() as conn:
        rows: list[Any] = conn.execute(SQL[query], {"users": users} | params).fetchall()
    return [int(r["user_id"]) for r in rows]


def sweep_purge(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """R6: delete objects tagged longer than the purge window, re-checking retention per user."""
    config = settings()
    counts = {"users": 0, "purged_recordings": 0, "skipped_entitled": 0, "s3_failed": 0}
    after = int((context.cursor or {}).get("after", 0))
    cutoff = context.now - config.purge_after
    while users := _page(pool, "users_to_purge", {"cutoff": cutoff, "after": after}):
        counts["users"] += len(users)
        for user_id in users if not context.dry_run else ():
            try:
                decision = flows.purge_user(pool, s3.store(), user_id, now=context.now, config=config)
            except flows.StorageUnavailable as error:
                logger.warning("sweep_purge: user %s: %s (sweep_retention re-applies it)",
                               user_id, error)
                counts["s3_failed"] += 1
                continue
            counts["purged_recordings"] += decision.keys
            counts["skipped_entitled"] += decision.outcome == "entitled"
        after = users[-1]
        if context.out_of_time():
            context.resume = {"after": after}
            return counts
    return counts


def sweep_fast_expiry(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """§3a's time-driven ends (trial, paid, grace), each under the user lock, tagging enqueued (R2).

    Each end also nulls the key, marks its panel clients ``removing`` and sends
    ``remove_client`` after commit (``lifecycle._end``, SPEC §6 A2/A3).

    A backlog of more than one page is split into ``LAPSE_FAST_EXPIRY_SHARDS``
    disjoint id ranges (after, until]: this run sends one ``sweep_fast_expiry``
    message per other range (cursor ``{"after", "until"}``) and walks the first
    itself, so several workers expire at once. A shard (a cursor with
    ``until``) never splits again and continues itself within its range when out
    of time. Each row is still its own transaction under the user lock with the
    re-check, so an overlapping or duplicate shard finds nothing left to do.
    """
    config = settings()
    grace = config.billing_grace
    counts: dict[str, int] = {"due": 0}
    cursor = context.cursor or {}
    after = int(cursor.get("after", 0))
    sharded = "until" in cursor
    until = None if cursor.get("until") is None else int(cursor["until"])
    while True:
        with pool.connection() as conn:
            due = lifecycle.due_expiries(conn, now=context.now, billing_grace=grace, after=after,
                                         until=until, limit=PAGE)
        if not due:
            return counts
        if not sharded and len(due) == PAGE and config.fast_expiry_shards > 1 and not context.dry_run:
            until, sent = _fan_out(pool, context, after, config.fast_expiry_shards, grace)
            sharded = True
            counts["shards_sent"] = sent
            continue  # re-read the first page within this run's own range
        counts["due"] += len(due)
        for subscription_id, user_id in due if not context.dry_run else ():
            with pool.connection() as conn, transaction(conn):
                ended = lifecycle.expire_if_due(conn, subscription_id, user_id, now=context.now,
                                                billing_grace=grace)
            if ended is not None:
                counts[ended.rule] = counts.get(ended.rule, 0) + 1
        after = due[-1][0]
        if context.out_of_time():
            context.resume = {"after": after} | ({"until": until} if sharded else {})
            return counts


def _fan_out(pool: ConnectionPool, context: SweepContext, after: int, shards: int,
             grace: timedelta) -> tuple[int | None, int]:
    """Split the due set after ``after`` into ranges; send every range but the first as its own
    ``sweep_fast_expiry`` (after commit). Returns the first range's upper bound and how many were sent.

    The ranges (after, b1], (b1, b2], …, (bk, ∞) cover every id after ``after`` whatever becomes due
    meanwhile: no row falls between two ranges.
    """
    with pool.connection() as conn, transaction(conn):
        bounds = lifecycle.due_expiry_bounds(conn, shards, now=context.now, billing_grace=grace,
                                             after=after)
        uppers: list[int | None] = [*bounds, None]
        for lower, upper in zip(bounds, uppers[1:], strict=True):
            send_after_commit(conn, FAST_EXPIRY_ACTOR, cursor={"after": lower, "until": upper})
    return uppers[0], len(bounds)
