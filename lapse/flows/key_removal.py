"""Removing an ended key from the panels (SPEC §3a, §6 A2/A3): ``remove_client``'s flow.

The move to ``expired`` already nulled the key and marked its panel rows
``removing`` in the expiry's transaction. Here, after commit, each panel is
asked to remove the client by email (a missing client is success) and the row
is recorded ``removed``. Right before each panel call the database is asked
again whether the key is a current subscription's: a key is never re-used,
but a removal must never take a working key away. No connection or
transaction is held across a panel call. A panel that refused Lapse's login
is skipped (reconcile removes the orphan once ``lapse panel check`` clears
it); a panel that failed makes the whole message retry with backoff.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import nullcontext
from datetime import datetime

from psycopg_pool import ConnectionPool

from domain import keys, panels
from domain.panels import Panel
from lapse.platform.after_commit import transaction
from lapse.platform.errors import PermanentError, RetryableError
from lapse.ports.panel import PanelLoginRefused, connect

logger = logging.getLogger(__name__)


class KeyRemovalIncomplete(RetryableError):
    """At least one panel could not remove the key now; the message is retried with backoff."""

    def __init__(self, access_key: str, failed: list[str]) -> None:
        super().__init__(f"key {access_key}: not yet removed from panel(s) {', '.join(failed)}")
        self.access_key, self.failed = access_key, failed


def remove_key(pool: ConnectionPool, access_key: str, panel_id: int | None, *,
               now: datetime) -> Counter[str]:
    """Remove an ended key from one panel, or (``panel_id`` None) from every panel it may be on.

    Returns counts by outcome; raises ``KeyRemovalIncomplete`` when a panel must be retried.
    """
    counts: Counter[str] = Counter()
    with pool.connection() as conn:
        if panel_id is None:
            current, targets = keys.removal_targets(conn, access_key)
        else:
            current = keys.current_status(conn, access_key) is not None
            targets = [panels.panel_by_id(conn, panel_id)]
    failed: list[str] = []
    for number, panel in enumerate(targets):
        # re-checked right before each panel call (before the first, in the read of the targets)
        if current if number == 0 else _is_current(pool, access_key):
            counts["kept_current"] += 1
            logger.warning("remove_client: key %s is a current subscription's; not removed",
                           access_key)
            return counts
        outcome = _remove_from(pool, panel, access_key, now=now)
        counts[outcome] += 1
        if outcome == "retry":
            failed.append(panel.name)
    if failed:
        raise KeyRemovalIncomplete(access_key, failed)
    return counts


def _is_current(pool: ConnectionPool, access_key: str) -> bool:
    with pool.connection() as conn:
        status = keys.current_status(conn, access_key)
    return status is not None


def _remove_from(pool: ConnectionPool, panel: Panel, access_key: str, *, now: datetime) -> str:
    """One panel: ``removed``, ``skipped_login_refused``, ``failed`` (permanent) or ``retry``."""
    if panel.login_refused:
        return "skipped_login_refused"
    try:
        connect(panel).remove_client(access_key)
    except PanelLoginRefused as error:
        _record(pool, panel, access_key, "removing", now=now, error=str(error), refused=True)
        return "skipped_login_refused"
    except PermanentError as error:  # too old, credentials missing: an operator must act
        _record(pool, panel, access_key, "removing", now=now, error=str(error))
        logger.error("remove_client: key %s on panel %s: %s", access_key, panel.name, error)
        return "failed"
    except RetryableError as error:
        _record(pool, panel, access_key, "removing", now=now, error=str(error))
        return "retry"
    _record(pool, panel, access_key, "removed", now=now)
    return "removed"


def _record(pool: ConnectionPool, panel: Panel, access_key: str, state: str, *, now: datetime,
            error: str | None = None, refused: bool = False) -> None:
    # one statement is its own transaction (autocommit); the refusal's two are one together
    with pool.connection() as conn, transaction(conn) if refused else nullcontext():
        panels.record_client_state(conn, access_key, panel.id, state, now=now, error=error)
        if refused:
            panels.mark_login_refused(conn, panel.id, error or "", now=now)
