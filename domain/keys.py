"""Access keys ending (SPEC §3a, §6 A2/A3/A5): what the database says about a key and its panels.

A move to ``expired`` nulls the subscription's key; ``mark_removing`` (in the
same transaction) turns each panel's row of that key to ``removing``, and the
caller sends ``remove_client`` after commit. ``current_status`` is the
re-check every panel action makes right before acting (``removal_targets``
reads it with the panels): a key that is a current subscription's again is
never removed. ``current_keys`` is the whole
set of current keys that reconcile compares a panel's list with.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import dict_row

from domain.panels import Panel
from lapse.platform.sql import queries

SQL = queries(__file__, "keys")
CURRENT_PAGE = 10_000


def mark_removing(conn: Connection[Any], access_key: UUID | str, *, now: datetime) -> int:
    """Every panel's row of an ended key → ``removing``; returns how many rows."""
    return conn.execute(SQL["mark_removing"], {"access_key": access_key, "now": now}).rowcount


def current_status(conn: Connection[Any], access_key: UUID | str) -> str | None:
    """The status of the current subscription holding ``access_key``; None when no current one does."""
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(SQL["current_status"], {"access_key": access_key}).fetchone()
    return None if row is None else str(row["status"])


def removal_targets(conn: Connection[Any], access_key: UUID | str) -> tuple[bool, list[Panel]]:
    """In one read: whether ``access_key`` is a current subscription's (``current_status``), and
    the panels an ended key may be on: every enabled one, and any other whose row of it is not
    ``removed``."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(SQL["removal_targets"], {"access_key": access_key}).fetchall()
    return bool(rows[0]["key_current"]), [
        Panel(**{k: v for k, v in row.items() if k != "key_current"})
        for row in rows if row["id"] is not None]


def current_keys(conn: Connection[Any], *, page: int = CURRENT_PAGE) -> Iterator[list[tuple[str, str]]]:
    """Pages of (key, status) of every current subscription, keyset by id (the last id is taken
    only from a non-empty page)."""
    after = 0
    while True:
        with conn.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(SQL["current_keys_page"], {"after": after, "limit": page}).fetchall()
        if not rows:
            return
        yield [(str(r["access_key"]), str(r["status"])) for r in rows]
        after = int(rows[-1]["id"])


def ended_keys(conn: Connection[Any], user_id: int, *, limit: int = 5) -> list[dict[str, Any]]:
    """The keys the user's subscriptions held until they expired, newest first (``lapse explain``)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(SQL["ended_keys"], {"user_id": user_id, "limit": limit}).fetchall()


def current_key(conn: Connection[Any], user_id: int) -> dict[str, Any] | None:
    """The user's current subscription (id, status, access_key) when it holds a key."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(SQL["current_key"], {"user_id": user_id}).fetchone()
