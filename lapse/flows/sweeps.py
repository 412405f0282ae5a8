"""The table of periodic sweeps (SPEC §7): name, cadence in UTC, and body.

The runner, tick claiming and run records are ``lapse/platform/sweeps.py``;
this module joins them to the bodies, which are flows. ``lapse sweep NAME``,
the ``sweep_<name>`` actors and the tick triggers all look a sweep up here.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from psycopg_pool import ConnectionPool

from lapse.flows import activation, money_sweeps, notifications, reconcile, retention_sweeps
from lapse.platform import sweeps as runner
from lapse.platform.errors import UnknownSweep
from lapse.platform.sweeps import DAILY_CHECK_CRON, Sweep, SweepContext, claim_tick

__all__ = ["DAILY_CHECK_CRON", "SWEEPS", "Sweep", "SweepContext", "claim_tick", "get",
           "missed_daily_sweeps", "run_sweep"]

SWEEPS: dict[str, Sweep] = {
    s.name: s
    for s in (
        Sweep("lapses", "0 * * * *", retention_sweeps.sweep_lapses),
        Sweep("retention", "30 1 * * *", retention_sweeps.sweep_retention, daily_at=time(1, 30)),
        Sweep("purge", "0 3 * * *", retention_sweeps.sweep_purge, daily_at=time(3, 0)),
        Sweep("auto_renewals", "*/10 * * * *", money_sweeps.sweep_auto_renewals),
        Sweep("fast_expiry", "* * * * *", retention_sweeps.sweep_fast_expiry),
        Sweep("activations", "* * * * *", activation.sweep_activations),
        Sweep("crypto_payments", "* * * * *", money_sweeps.sweep_crypto_payments),
        Sweep("outbox", "* * * * *", notifications.sweep_outbox),
        Sweep("trial_notifications", "*/5 * * * *", notifications.sweep_trial_notifications),
        Sweep("reconcile", "*/10 * * * *", reconcile.sweep_reconcile),
        Sweep("reminders", "0 10 * * *", notifications.sweep_reminders, daily_at=time(10, 0)),
    )
}


def get(name: str) -> Sweep:
    """The sweep called ``name`` (with or without the ``sweep_`` prefix)."""
    key = name.removeprefix("sweep_")
    if key not in SWEEPS:
        raise UnknownSweep(name, sorted(SWEEPS))
    return SWEEPS[key]


def run_sweep(pool: ConnectionPool, name: str, **options: Any) -> dict[str, Any]:
    """Run the sweep called ``name`` once in this process (see ``platform.sweeps.run_sweep``)."""
    return runner.run_sweep(pool, get(name), **options)


def missed_daily_sweeps(conn: Any, *, now: datetime) -> list[Sweep]:
    """Daily sweeps whose last slot passed with no completed run (checked hourly)."""
    return runner.missed_daily_sweeps(conn, SWEEPS.values(), now=now)
