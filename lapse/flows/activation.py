"""Activation flows (SPEC §6 A1): decide in a short transaction, call the panels with no
connection held, record the outcome in another short transaction.

``activate`` adds a pending row's key to each usable panel once and marks it
``active`` when at least one holds it; each panel that failed gets its own
``provision_client`` (``provision``) with its own retries, so one panel's
outage never holds the others back. ``sweep_activations`` re-sends
``activate_subscription`` only for a row no message can still be retrying for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from psycopg_pool import ConnectionPool

from domain import activation
from domain.errors import NoPanelHoldsKey
from domain.panels import Panel
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.platform.config import retry_span, settings
from lapse.platform.errors import LapseError
from lapse.platform.faults import fault_point
from lapse.platform.sweeps import SweepContext
from lapse.ports import panel as panel_port

logger = logging.getLogger(__name__)
PAGE = 500
ATTEMPT_TIME = timedelta(minutes=5)  # the actors' time limit: each attempt may run this long
RESEND_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True)
class Added:
    """One panel's answer to an add: ``error`` None when the panel holds the key."""

    error: str | None = None
    login_refused: bool = False


def add_to_panel(panel: Panel, key: str) -> Added:
    """Add ``key``'s client to one panel (no connection held): a refused login is reported,
    never retried; any other Lapse error is this panel's failure, not the others'."""
    try:
        panel_port.connect(panel).add_client(key)
    except panel_port.PanelLoginRefused as error:
        return Added(str(error), login_refused=True)
    except LapseError as error:
        return Added(f"{type(error).__name__}: {error}")
    return Added()


def activate(pool: ConnectionPool, subscription_id: int) -> activation.Finished:
    """A1 for one row; raises NoPanelHoldsKey (retry) when no usable panel took the key."""
    with pool.connection() as conn, transaction(conn):
        claim = activation.claim(conn, subscription_id, now=clock.now())
    if isinstance(claim, str):
        return activation.Finished(claim)
    results = {panel.id: add_to_panel(panel, claim.access_key) for panel in claim.to_add}
    fault_point("activation.panels_called")  # clients added, the row not yet active
    added = {p: r.error for p, r in results.items() if not r.login_refused}
    refused = {p: str(r.error) for p, r in results.items() if r.login_refused}
    with pool.connection() as conn, transaction(conn):
        finished = activation.finish(conn, claim, added, refused, now=clock.now())
    if finished.outcome == "no_panel":
        problems = "; ".join(str(r.error) for r in results.values()) or "no usable panel"
        raise NoPanelHoldsKey(subscription_id, problems)
    return finished


def provision(pool: ConnectionPool, access_key: str, panel_id: int) -> str:
    """Add a current key to one panel; raises the panel's error so the message is retried."""
    with pool.connection() as conn, transaction(conn):
        target = activation.provision_target(conn, access_key, panel_id, now=clock.now())
    if isinstance(target, str):
        return target
    result = add_to_panel(target, access_key)
    with pool.connection() as conn, transaction(conn):
        outcome = activation.provision_done(conn, access_key, panel_id, result.error,
                                            now=clock.now(), login_refused=result.login_refused)
    if result.error is not None and not result.login_refused:
        raise panel_port.PanelUnavailable(target.name, result.error)
    return "login refused" if result.login_refused else outcome


def resend_after() -> timedelta:
    """How long after its last send a pending row's activation message may still be retrying."""
    config = settings()
    span = retry_span(config.panel_retries, config.panel_min_backoff_ms,
                      config.panel_max_backoff_ms)
    return span + ATTEMPT_TIME * (config.panel_retries + 1) + RESEND_MARGIN


def sweep_activations(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """Re-send ``activate_subscription`` for pending rows whose message was lost (A1).

    The activation deadline (paid rows pending 24 h, refunded) and a pending
    trial's end are fast expiry's (``sweep_fast_expiry``): one place for both.
    """
    counts: dict[str, int] = {"lost": 0, "resent": 0}
    after = int((context.cursor or {}).get("after", 0))
    sent_before = context.now - resend_after()
    while True:
        with pool.connection() as conn:
            lost = activation.lost_activations(conn, now=context.now, sent_before=sent_before,
                                               after=after, limit=PAGE)
        if not lost:
            return counts
        counts["lost"] += len(lost)
        for subscription_id in lost if not context.dry_run else ():
            with pool.connection() as conn, transaction(conn):
                counts["resent"] += activation.resend_activation(conn, subscription_id,
                                                                 now=context.now)
        after = lost[-1]
        if context.out_of_time():
            context.resume = {"after": after}
            return counts
