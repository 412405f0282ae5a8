"""Checking the panels (SPEC §6 panel facts): ``lapse panel check`` and each worker at start.

``check_panel`` logs in, lists the clients and looks for the inbound, and says
what is wrong in the operator's words: unreachable, refusing the credentials,
too old (no ``/panel/api/clients/*``), an unreadable answer, the inbound
missing. ``check_at_start`` is what a worker runs once when it boots: every
enabled panel not already marked as refusing Lapse's login (3x-ui locks an
address out after five refused logins, so a marked panel is left alone until
``lapse panel check`` succeeds) and not checked by another worker process in
the last five minutes (``dramatiq`` starts a process per core: each would
log in), one line each in the log, a refusal marked.
No database connection is held across a panel call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from psycopg_pool import ConnectionPool

from domain import panels
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.platform.breaker import CircuitOpen
from lapse.ports.panel import (
    MissingCredentials,
    PanelGarbage,
    PanelLoginRefused,
    PanelRefused,
    PanelSessionLost,
    PanelTooOld,
    PanelUnavailable,
    connect,
)

logger = logging.getLogger(__name__)
BOOT_CHECK_EVERY = timedelta(minutes=5)  # workers starting together check a panel once


@dataclass
class Checked:
    name: str
    url: str
    inbound_id: int
    reachable: bool | None = None
    version_ok: bool | None = None
    login: str = "not tried"
    inbound_found: bool | None = None
    lapse_clients: int | None = None
    other_clients: int | None = None
    problem: str | None = None


def check_panel(panel: panels.Panel, timeout: float) -> Checked:
    """Log in, find the inbound, list the clients; say what is wrong in the operator's words."""
    checked = Checked(panel.name, panel.url, panel.inbound_id)
    try:
        port = connect(panel, timeout=timeout)
        port.login()
        checked.reachable, checked.login = True, "ok"
        found = port.list_clients(only_lapse=False)
        checked.version_ok = True
        checked.inbound_found = port.inbound_exists()
    except MissingCredentials as error:
        checked.problem = f"credentials missing: {error}"
        return checked
    except (PanelUnavailable, CircuitOpen) as error:
        checked.reachable, checked.problem = False, f"unreachable: {error}"
        return checked
    except PanelLoginRefused as error:
        checked.reachable, checked.login = True, "refused"
        checked.problem = f"refuses the credentials: {error}"
        return checked
    except PanelTooOld as error:
        checked.reachable, checked.version_ok = True, False
        checked.problem = f"too old: {error}"
        return checked
    except PanelSessionLost as error:
        checked.reachable, checked.login = True, "not kept"
        checked.problem = f"session not kept: {error}"
        return checked
    except (PanelGarbage, PanelRefused) as error:
        checked.reachable, checked.problem = True, f"unreadable answer: {error}"
        return checked
    checked.lapse_clients = sum(1 for c in found if c.is_lapse)
    checked.other_clients = len(found) - checked.lapse_clients
    if not checked.inbound_found:
        checked.problem = f"inbound {panel.inbound_id} not found on the panel"
    return checked


def check_at_start(pool: ConnectionPool, timeout: float) -> list[Checked]:
    """A worker's start-up check: each enabled panel not marked as refusing Lapse's login that
    no other worker process checked within BOOT_CHECK_EVERY (claimed in the database first)."""
    with pool.connection() as conn:
        enabled = panels.list_panels(conn, enabled_only=True)
    results = []
    for panel in enabled:
        if panel.login_refused:
            logger.error("panel %s (%s) is marked as refusing Lapse's login since %s: not "
                         "logged in to; fix its credentials, then run `lapse panel check`",
                         panel.name, panel.url, panel.login_refused_at)
            continue
        with pool.connection() as conn, transaction(conn):
            mine = panels.claim_boot_check(conn, panel.id, now=clock.now(), every=BOOT_CHECK_EVERY)
        if not mine:
            logger.info("panel %s: checked by another worker at its start (or marked meanwhile)",
                        panel.name)
            continue
        checked = check_panel(panel, timeout)
        results.append(checked)
        if checked.login == "refused":
            with pool.connection() as conn, transaction(conn):
                panels.mark_login_refused(conn, panel.id, checked.problem or "", now=clock.now())
        if checked.problem is None:
            logger.info("panel %s (%s): ok, %s Lapse clients, %s others", panel.name, panel.url,
                        checked.lapse_clients, checked.other_clients)
        else:
            logger.error("panel %s (%s): %s", panel.name, panel.url, checked.problem)
    return results
