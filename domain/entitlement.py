"""Entitlement (SPEC §3): access and retention, evaluated by the SQL functions of migration 0002.

Every source of entitlement is a window [valid_from, valid_until) computed by
``entitlement_windows`` in SQL; a policy holds at t when one of its windows
contains t. These wrappers only pass ``now`` and the billing grace in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from lapse.platform.sql import queries

SQL = queries(__file__, "entitlement")


@dataclass(frozen=True)
class Window:
    policy: str
    source: str
    ref_id: int
    valid_from: datetime | None  # None: open (-infinity)
    valid_until: datetime | None  # None: open (infinity)

    def holds(self, at: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= at) and (
            self.valid_until is None or at < self.valid_until)


def has_access(conn: Connection[Any], user_id: int, *, now: datetime, billing_grace: timedelta) -> bool:
    """access(u, now): may the user use the VPN?"""
    row = conn.execute(SQL["access"], {"user_id": user_id, "now": now, "grace": billing_grace}).fetchone()
    return bool(row and row["holds"])


def has_retention(conn: Connection[Any], user_id: int, *, now: datetime,
                  billing_grace: timedelta) -> bool:
    """retention(u, now): may the user's recordings be kept?"""
    row = conn.execute(SQL["retention"], {"user_id": user_id, "now": now,
                                          "grace": billing_grace}).fetchone()
    return bool(row and row["holds"])


def retention_end(conn: Connection[Any], user_id: int, *, now: datetime,
                  billing_grace: timedelta) -> datetime | None:
    """The last moment retention held (now while it holds); None for a user with nothing."""
    row = conn.execute(SQL["retention_end"], {"user_id": user_id, "now": now,
                                              "grace": billing_grace}).fetchone()
    return None if row is None else row["retention_end"]


def windows(conn: Connection[Any], user_id: int, *, billing_grace: timedelta) -> list[Window]:
    """Every entitlement source of one user, as the windows the policies read."""
    rows = conn.execute(SQL["windows"], {"user_id": user_id, "grace": billing_grace}).fetchall()
    return [Window(**row) for row in rows]
