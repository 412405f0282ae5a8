"""The periodic sweeps: their cadences, tick claiming, run records.

Each sweep claims its tick in Postgres (unique sweep + UTC minute), so two
schedulers, a scheduler restarted inside the same minute, or a redelivered
tick run a sweep once. periodiq drops ticks older than 30 s and never catches
up, so the daily sweeps are also checked hourly against their last completed
run: a dropped 01:30 tick costs at most an hour.

A sweep body receives the pool (never a held connection: it may call other
services between its transactions) and a ``SweepContext``; it returns counts.
A body that runs out of its time budget sets ``context.resume`` to its
cursor; the run is then recorded as ``continued`` and the sweep re-enqueues
itself with that cursor. Sweeps whose logic belongs to a later issue have no
body yet: running them records a run whose log line says so, and does no work.

This module is the runner; the table of sweeps and their bodies is
``lapse/flows/sweeps.py`` (the bodies are flows, above the platform).
"""

from __future__ import annotations

import logging
import time as monotonic_time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from lapse.platform import clock
from lapse.platform.after_commit import send_after_commit, transaction
from lapse.platform.sql import queries

logger = logging.getLogger(__name__)
SQL = queries(__file__, "sweeps")


@dataclass
class SweepContext:
    now: datetime
    dry_run: bool
    deadline: float
    cursor: dict[str, Any] | None = None
    resume: dict[str, Any] | None = field(default=None)

    def out_of_time(self) -> bool:
        return monotonic_time.monotonic() >= self.deadline


SweepBody = Callable[[ConnectionPool, SweepContext], dict[str, int]]


@dataclass(frozen=True)
class Sweep:
    """A periodic sweep: its name, cron (UTC), daily slot, and body (None: not built yet)."""

    name: str
    cron: str
    body: SweepBody | None
    daily_at: time | None = None
    pending: str | None = None

    @property
    def actor_name(self) -> str:
        return f"sweep_{self.name}"


DAILY_CHECK_CRON = "15 * * * *"


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def claim_tick(conn: Any, sweep: Sweep, *, minute: datetime, now: datetime) -> bool:
    """Claim (sweep, minute); on success queue the sweep after commit. False for a duplicate."""
    row = conn.execute(SQL["claim_tick"], {"sweep": sweep.name, "minute": minute_of(minute),
                                           "now": now}).fetchone()
    claimed = bool(row["claimed"])
    if claimed:
        send_after_commit(conn, sweep.actor_name, tick_minute=minute_of(minute).isoformat())
    return claimed


def last_daily_slot(sweep: Sweep, now: datetime) -> datetime:
    assert sweep.daily_at is not None
    slot = now.replace(hour=sweep.daily_at.hour, minute=sweep.daily_at.minute, second=0,
                       microsecond=0)
    return slot if slot <= now else slot - timedelta(days=1)


def missed_daily_sweeps(conn: Any, sweeps: Iterable[Sweep], *, now: datetime) -> list[Sweep]:
    """Daily sweeps with no completed run since their last slot and none started in the last hour."""
    missed = []
    for sweep in sweeps:
        if sweep.daily_at is None:
            continue
        row = conn.execute(SQL["daily_status"], {"sweep": sweep.name,
                                                 "slot": last_daily_slot(sweep, now),
                                                 "recent": now - timedelta(hours=1)}).fetchone()
        if not row["completed_since_slot"] and not row["started_recently"]:
            missed.append(sweep)
    return missed


def run_sweep(pool: ConnectionPool, sweep: Sweep, *, now: datetime, budget_seconds: float,
              tick_minute: datetime | None = None, dry_run: bool = False,
              cursor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one sweep in this process, recording the run (not for a dry run); return its counts.

    When the body runs out of budget it leaves a cursor in ``context.resume``:
    the run is recorded as ``continued`` and the sweep is sent again, after
    commit, with that cursor.
    """
    context = SweepContext(now, dry_run, monotonic_time.monotonic() + budget_seconds, cursor)
    run_id = None if dry_run else _start_run(pool, sweep, now, tick_minute)
    if run_id is None and not dry_run:
        _log(sweep, "duplicate_tick", {}, tick_minute)
        return {"duplicate_tick": 1}
    try:
        counts = sweep.body(pool, context) if sweep.body else {}
    except Exception as error:
        if run_id is not None:
            with pool.connection() as conn, transaction(conn):
                conn.execute(SQL["fail_run"], {"id": run_id, "now": clock.now(), "error": repr(error)})
        _log(sweep, "failed", {}, tick_minute, error=repr(error))
        raise
    status = "continued" if context.resume is not None else "completed"
    if run_id is not None:
        with pool.connection() as conn, transaction(conn):
            conn.execute(SQL["finish_run"], {"id": run_id, "now": clock.now(), "status": status,
                                             "counts": Jsonb(counts)})
            if context.resume is not None:
                send_after_commit(conn, sweep.actor_name, cursor=context.resume)
    outcome = "dry_run" if dry_run else status
    _log(sweep, outcome, counts, tick_minute)
    return counts


def _start_run(pool: ConnectionPool, sweep: Sweep, now: datetime,
               tick_minute: datetime | None) -> int | None:
    with pool.connection() as conn, transaction(conn):
        row: Any = conn.execute(SQL["start_run"], {"sweep": sweep.name,
                                                   "tick_minute": tick_minute,
                                                   "now": now}).fetchone()
    return None if row is None else int(row["id"])


def _log(sweep: Sweep, outcome: str, counts: dict[str, Any], tick: datetime | None,
         error: str | None = None) -> None:
    fields = {"sweep": sweep.actor_name, "outcome": outcome,
              "tick": tick.isoformat() if tick else None, **counts}
    if sweep.body is None:
        fields["note"] = f"not implemented yet: {sweep.pending}; no work done"
    if error:
        fields["error"] = error
    logger.info(" ".join(f"{k}={v}" for k, v in fields.items()))
