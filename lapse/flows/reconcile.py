"""A5 reconcile (``sweep_reconcile``, every 10 min): make every panel's Lapse clients match the database.

For each panel, in this order:

1. **List the panel first** (every client of the inbound). A panel that cannot
   be listed (5xx, garbage, refused login, open breaker) is skipped and
   counted, never taken as empty.
2. **Then read the database**: the whole set of current subscriptions' keys
   (keyset pages into one dict). A key activated while the panel was being
   listed is therefore in the set, and never taken for an orphan.
3. Compare, and **re-check each candidate** against the database right before
   acting on it, in its own short transaction (no connection is held across a
   panel call): an orphan is removed only if no current subscription holds it
   now; a missing key is added only if it is still current and not ``pending``
   (activation owns a pending key).

Only clients with ``comment = lapse`` are ever touched. A disabled panel is
drained: its Lapse clients are removed. ``panel_clients`` records what was done.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from uuid import UUID

from psycopg_pool import ConnectionPool

from domain import keys, panels
from domain.panels import Panel
from lapse.platform.after_commit import transaction
from lapse.platform.errors import LapseError
from lapse.platform.sweeps import SweepContext
from lapse.ports.panel import (
    COMMENT,
    ForeignClient,
    PanelLoginRefused,
    PanelRefused,
    XuiPanel,
    connect,
)

logger = logging.getLogger(__name__)
# A failure of one client (the panel answered): count it and go on with the others.
_PER_CLIENT = (PanelRefused, ForeignClient)


def sweep_reconcile(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """A5 for every panel (enabled: remove orphans, add missing keys; disabled: drain)."""
    with pool.connection() as conn:
        every_panel = panels.list_panels(conn)
    after = int((context.cursor or {}).get("after_panel", 0))
    counts: Counter[str] = Counter()
    for panel in every_panel:
        if panel.id <= after:
            continue
        counts.update(reconcile_panel(pool, panel, now=context.now, dry_run=context.dry_run))
        if context.out_of_time():
            context.resume = {"after_panel": panel.id}
            break
    return dict(sorted(counts.items()))


def reconcile_panel(pool: ConnectionPool, panel: Panel, *, now: datetime,
                    dry_run: bool = False) -> Counter[str]:
    """Reconcile one panel; counts by outcome (``skipped_unlistable`` when it could not be listed)."""
    counts: Counter[str] = Counter(panels=1)
    if panel.login_refused:
        counts["skipped_login_refused"] += 1
        return counts
    try:
        port = connect(panel)  # credentials missing: skipped like an unreachable panel
        listed = port.list_emails()  # the panel first, then the database
    except LapseError as error:
        logger.warning("reconcile: panel %s skipped, it cannot be listed: %s", panel.name, error)
        counts["skipped_unlistable"] += 1
        if isinstance(error, PanelLoginRefused):
            _mark_refused(pool, panel, str(error), now=now)
        return counts
    on_panel = {email for email, comment in listed if comment == COMMENT}  # never a foreign client
    counts["foreign_left_alone"] += len(listed) - len(on_panel)
    counts["listed"] += len(on_panel)
    if not panel.enabled:
        return counts + _act(pool, port, panel, sorted(on_panel), "drain", now=now, dry_run=dry_run)
    current = read_current_keys(pool)
    orphans = sorted(on_panel - current.keys())
    missing = sorted(k for k, status in current.items() if status != "pending" and k not in on_panel)
    counts["current_keys"] += len(current)
    counts += _act(pool, port, panel, orphans, "orphan", now=now, dry_run=dry_run)
    counts += _act(pool, port, panel, missing, "missing", now=now, dry_run=dry_run)
    return counts


def read_current_keys(pool: ConnectionPool) -> dict[str, str]:
    """The whole set of current subscriptions' keys with their status, read in keyset pages."""
    current: dict[str, str] = {}
    with pool.connection() as conn:
        for page in keys.current_keys(conn):
            current.update(page)
    return current


def _act(pool: ConnectionPool, port: XuiPanel, panel: Panel, candidates: list[str], kind: str,
         *, now: datetime, dry_run: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    for key in candidates:
        if kind != "drain" and not _still_needed(pool, key, kind):  # re-checked right before
            counts[f"{kind}_rechecked_kept"] += 1
            continue
        counts[f"{kind}_found"] += 1
        if dry_run:
            continue
        try:
            if kind == "missing":
                port.add_client(key)
            else:
                port.remove_client(key)
        except _PER_CLIENT as error:
            logger.warning("reconcile: panel %s, key %s: %s", panel.name, key, error)
            counts[f"{kind}_failed"] += 1
            continue
        except LapseError as error:  # the panel is down (retries spent, breaker open)
            logger.warning("reconcile: panel %s stopped: %s", panel.name, error)
            counts["panel_failed"] += 1
            return counts
        counts["added" if kind == "missing" else "removed"] += 1
        if _is_uuid(key):
            _record(pool, panel, key, "present" if kind == "missing" else "removed", now=now)
    return counts


def _still_needed(pool: ConnectionPool, key: str, kind: str) -> bool:
    """An orphan is still one when no current subscription holds it; a missing key still needs
    adding when it is current and not pending."""
    if not _is_uuid(key):
        return kind == "orphan"  # no subscription can hold a key that is not a UUID
    with pool.connection() as conn:
        status = keys.current_status(conn, key)
    return status is None if kind == "orphan" else status not in (None, "pending")


def _record(pool: ConnectionPool, panel: Panel, key: str, state: str, *, now: datetime) -> None:
    with pool.connection() as conn, transaction(conn):
        panels.record_client_state(conn, key, panel.id, state, now=now)


def _mark_refused(pool: ConnectionPool, panel: Panel, error: str, *, now: datetime) -> None:
    with pool.connection() as conn, transaction(conn):
        panels.mark_login_refused(conn, panel.id, error, now=now)


def _is_uuid(text: str) -> bool:
    try:
        return str(UUID(text)) == text
    except ValueError:
        return False
