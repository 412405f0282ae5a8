"""Panels (SPEC §6): the 3x-ui servers that hold keys, and where each key is on each of them.

Credentials never reach the database: a panel names the prefix of the
environment variables that hold them. The default panel comes from
``LAPSE_PANEL_*``; more are added by ``lapse panel add``. A panel that refused
Lapse's login is marked (``login_refused_at``) so nothing logs in to it again
until ``lapse panel check`` succeeds — 3x-ui locks an address out after five
refused logins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import psycopg
from psycopg import Connection
from psycopg.rows import class_row, dict_row

from domain.errors import InvalidPanel, UnknownPanel
from lapse.platform.sql import queries

SQL = queries(__file__, "panels")
DEFAULT_NAME = "default"
DEFAULT_CREDENTIALS_ENV = "LAPSE_PANEL"
CLIENT_STATES = ("adding", "present", "failed", "removing", "removed")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PREFIX = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Panel:
    id: int
    name: str
    url: str
    inbound_id: int
    credentials_env: str
    enabled: bool
    login_refused_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime | None
    boot_checked_at: datetime | None = None  # the last worker start-up check (claim)

    @property
    def login_refused(self) -> bool:
        return self.login_refused_at is not None


def _one(conn: Connection[Any], block: str, params: dict[str, Any]) -> Panel | None:
    with conn.cursor(row_factory=class_row(Panel)) as cursor:
        return cursor.execute(SQL[block], params).fetchone()


def add_panel(conn: Connection[Any], name: str, url: str, inbound_id: int, credentials_env: str,
              *, now: datetime) -> Panel:
    """Add an enabled panel; InvalidPanel for a bad definition or a name already taken."""
    _validate(name, url, inbound_id, credentials_env)
    if name == DEFAULT_NAME:
        raise InvalidPanel(name, "the name is the LAPSE_PANEL_* panel's (set LAPSE_PANEL_URL)")
    try:
        panel = _one(conn, "insert_panel", {"name": name, "url": url.rstrip("/"),
                                            "inbound_id": inbound_id,
                                            "credentials_env": credentials_env, "now": now})
    except psycopg.errors.UniqueViolation as error:
        if error.diag.constraint_name == "panels_name_unique":
            raise InvalidPanel(name, "the name is taken") from None
        raise
    assert panel is not None
    return panel


def _validate(name: str, url: str, inbound_id: int, credentials_env: str) -> None:
    if not _NAME.match(name):
        raise InvalidPanel(name, "a name is 1-63 of a-z, 0-9, '-', '_' (starting with a letter "
                                 "or digit)")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidPanel(name, f"the URL must be http(s)://host[:port][/path], got {url!r}")
    if inbound_id <= 0:
        raise InvalidPanel(name, f"the inbound must be a positive integer, got {inbound_id}")
    if not _PREFIX.match(credentials_env):
        raise InvalidPanel(name, "the credentials prefix must be an environment variable name "
                                 f"in capitals (e.g. LAPSE_PANEL_B), got {credentials_env!r}")


def ensure_default_panel(conn: Connection[Any], url: str | None, inbound_id: int,
                         *, now: datetime) -> Panel | None:
    """The panel of ``LAPSE_PANEL_*`` (named ``default``), created or brought in line with the
    environment; None when LAPSE_PANEL_URL is unset."""
    if url is None:
        return None
    params = {"name": DEFAULT_NAME, "url": url.rstrip("/"), "inbound_id": inbound_id,
              "credentials_env": DEFAULT_CREDENTIALS_ENV, "now": now}
    changed = _one(conn, "upsert_default_panel", params)
    return changed or panel_by_name(conn, DEFAULT_NAME)


def panel_by_name(conn: Connection[Any], name: str) -> Panel:
    panel = _one(conn, "panel_by_name", {"name": name})
    if panel is None:
        raise UnknownPanel(name)
    return panel


def panel_by_id(conn: Connection[Any], panel_id: int) -> Panel:
    panel = _one(conn, "panel_by_id", {"panel_id": panel_id})
    if panel is None:
        raise UnknownPanel(panel_id)
    return panel


def list_panels(conn: Connection[Any], *, enabled_only: bool = False) -> list[Panel]:
    with conn.cursor(row_factory=class_row(Panel)) as cursor:
        return cursor.execute(SQL["list_panels"], {"enabled_only": enabled_only}).fetchall()


def usable_panels(conn: Connection[Any]) -> list[Panel]:
    """The panels to call: enabled and not marked login-refused (a refused login is not
    tried again until ``lapse panel check`` succeeds)."""
    with conn.cursor(row_factory=class_row(Panel)) as cursor:
        return cursor.execute(SQL["usable_panels"]).fetchall()


def set_enabled(conn: Connection[Any], name: str, enabled: bool, *, now: datetime) -> Panel:
    """Enable or disable a panel; a disabled panel gets no new keys and is drained by reconcile."""
    panel = _one(conn, "set_enabled", {"name": name, "enabled": enabled, "now": now})
    if panel is None:
        raise UnknownPanel(name)
    return panel


def claim_boot_check(conn: Connection[Any], panel_id: int, *, now: datetime,
                     every: timedelta) -> bool:
    """Whether this worker checks the panel at start: none has within ``every``, it is enabled
    and not marked as refusing Lapse's login."""
    return conn.execute(SQL["claim_boot_check"], {"panel_id": panel_id, "now": now,
                                                  "every": every}).fetchone() is not None


def mark_login_refused(conn: Connection[Any], panel_id: int, error: str, *,
                       now: datetime) -> Panel:
    """Record that the panel refused Lapse's login: nothing logs in to it again until
    ``lapse panel check`` succeeds (``clear_login_refused``)."""
    panel = _one(conn, "mark_login_refused", {"panel_id": panel_id, "error": error, "now": now})
    if panel is None:
        raise UnknownPanel(panel_id)
    return panel


def clear_login_refused(conn: Connection[Any], panel_id: int, *, now: datetime) -> Panel:
    panel = _one(conn, "clear_login_refused", {"panel_id": panel_id, "now": now})
    if panel is None:
        raise UnknownPanel(panel_id)
    return panel


def record_client_state(conn: Connection[Any], access_key: UUID | str, panel_id: int, state: str,
                        *, now: datetime, error: str | None = None) -> dict[str, Any]:
    """Record where a key is on a panel; an error counts one more failed attempt."""
    if state not in CLIENT_STATES:
        raise ValueError(f"unknown panel client state {state!r}; known: {', '.join(CLIENT_STATES)}")
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(SQL["record_client_state"], {
            "access_key": access_key, "panel_id": panel_id, "state": state, "error": error,
            "now": now}).fetchone()
    assert row is not None
    return row


def client_states(conn: Connection[Any], access_key: UUID | str) -> list[dict[str, Any]]:
    """Each panel's state of one key (``lapse explain``, the console's user page)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(SQL["client_states"], {"access_key": access_key}).fetchall()


def client_counts(conn: Connection[Any]) -> dict[int, dict[str, int]]:
    """Keys per panel and state (``lapse panel list``)."""
    counts: dict[int, dict[str, int]] = {}
    with conn.cursor(row_factory=dict_row) as cursor:
        for row in cursor.execute(SQL["client_counts"]):
            counts.setdefault(row["panel_id"], {})[row["state"]] = row["clients"]
    return counts
