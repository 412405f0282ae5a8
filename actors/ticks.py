"""periodiq tick triggers, one per sweep, each written out, on the ``schedules`` queue.

A trigger claims its (sweep, UTC minute) tick in Postgres and, when it won,
sends the sweep after commit; a duplicate scheduler's tick finds the claim
taken. ``check_daily_sweeps`` (hourly) re-runs a daily sweep whose tick was
dropped (periodiq never catches up). The worker must know these actors, so
they live in the ``actors`` package; ``schedules.py`` is what periodiq runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dramatiq.middleware import CurrentMessage
from periodiq import cron

from actors.declare import lapse_actor
from lapse.flows import sweeps
from lapse.platform import clock, db
from lapse.platform.after_commit import transaction

TICK_OPTIONS: dict[str, Any] = {"queue_name": "schedules", "max_retries": 0}


def _tick_time() -> datetime:
    message = CurrentMessage.get_current_message()
    scheduled = message.options.get("scheduled_at") if message is not None else None
    return clock.parse_time(scheduled) if scheduled else clock.now()


def _claim(name: str) -> None:
    at = _tick_time()
    with db.pool().connection() as conn, transaction(conn):
        sweeps.claim_tick(conn, sweeps.get(name), minute=at, now=clock.now())


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["lapses"].cron))
def tick_lapses() -> None:
    """periodiq trigger of sweep_lapses: claim the tick, send the sweep."""
    _claim("lapses")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["retention"].cron))
def tick_retention() -> None:
    """periodiq trigger of sweep_retention: claim the tick, send the sweep."""
    _claim("retention")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["purge"].cron))
def tick_purge() -> None:
    """periodiq trigger of sweep_purge: claim the tick, send the sweep."""
    _claim("purge")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["auto_renewals"].cron))
def tick_auto_renewals() -> None:
    """periodiq trigger of sweep_auto_renewals: claim the tick, send the sweep."""
    _claim("auto_renewals")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["fast_expiry"].cron))
def tick_fast_expiry() -> None:
    """periodiq trigger of sweep_fast_expiry: claim the tick, send the sweep."""
    _claim("fast_expiry")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["activations"].cron))
def tick_activations() -> None:
    """periodiq trigger of sweep_activations: claim the tick, send the sweep."""
    _claim("activations")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["crypto_payments"].cron))
def tick_crypto_payments() -> None:
    """periodiq trigger of sweep_crypto_payments: claim the tick, send the sweep."""
    _claim("crypto_payments")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["outbox"].cron))
def tick_outbox() -> None:
    """periodiq trigger of sweep_outbox: claim the tick, send the sweep."""
    _claim("outbox")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["trial_notifications"].cron))
def tick_trial_notifications() -> None:
    """periodiq trigger of sweep_trial_notifications: claim the tick, send the sweep."""
    _claim("trial_notifications")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["reconcile"].cron))
def tick_reconcile() -> None:
    """periodiq trigger of sweep_reconcile: claim the tick, send the sweep."""
    _claim("reconcile")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.SWEEPS["reminders"].cron))
def tick_reminders() -> None:
    """periodiq trigger of sweep_reminders: claim the tick, send the sweep."""
    _claim("reminders")


@lapse_actor(**TICK_OPTIONS, periodic=cron(sweeps.DAILY_CHECK_CRON))
def check_daily_sweeps() -> None:
    """Hourly: run any daily sweep whose last slot passed with no completed run."""
    at = _tick_time()
    with db.pool().connection() as conn, transaction(conn):
        for sweep in sweeps.missed_daily_sweeps(conn, now=at):
            sweeps.claim_tick(conn, sweep, minute=at, now=clock.now())
