"""One ``sweep_<name>`` actor per periodic sweep (SPEC §9), each written out.

The tick triggers (``actors/ticks.py``) claim a tick and send these after
commit; ``lapse sweep NAME`` runs the same code inline. A sweep that ran out
of its time budget sends itself again with ``cursor``.
"""

from __future__ import annotations

from typing import Any

from actors.declare import lapse_actor
from lapse.flows import sweeps
from lapse.platform import clock, db
from lapse.platform.brokers import SWEEPS_QUEUE
from lapse.platform.config import settings

SWEEP_OPTIONS: dict[str, Any] = {"queue_name": SWEEPS_QUEUE, "max_retries": 3, "time_limit": 600_000}


def _run(name: str, tick_minute: str | None, cursor: dict[str, Any] | None) -> None:
    tick = clock.parse_time(tick_minute) if tick_minute else None
    sweeps.run_sweep(db.pool(), name, now=clock.now(), tick_minute=tick, cursor=cursor,
                     budget_seconds=settings().sweep_budget_seconds)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_lapses(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Hourly: request tagging for every user an entitlement source ended for (R2)."""
    _run("lapses", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_retention(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Daily 01:30: reconcile recordings with retention both ways, re-apply batches (R4)."""
    _run("retention", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_purge(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Daily 03:00: delete the objects of recordings tagged past the purge window (R6)."""
    _run("purge", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_auto_renewals(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every 10 min: charge due auto-renewing subscriptions from the balance (M3)."""
    _run("auto_renewals", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_fast_expiry(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every minute: expire subscriptions whose access ended (§3a, A2)."""
    _run("fast_expiry", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_activations(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every minute: re-send lost activations, enforce the activation deadline (A1)."""
    _run("activations", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_crypto_payments(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every minute: poll pending crypto invoices, credit or expire them (M4)."""
    _run("crypto_payments", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_outbox(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every minute: settle claims with no outcome by delivery class, re-send overdue notices (N1)."""
    _run("outbox", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_trial_notifications(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every 5 min: trial-ending notices (A4)."""
    _run("trial_notifications", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_reconcile(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Every 10 min: make every panel's clients match the database (A5)."""
    _run("reconcile", tick_minute, cursor)


@lapse_actor(**SWEEP_OPTIONS)
def sweep_reminders(tick_minute: str | None = None, cursor: dict[str, Any] | None = None) -> None:
    """Daily 10:00: reminders before a subscription that will not renew ends (A6)."""
    _run("reminders", tick_minute, cursor)
