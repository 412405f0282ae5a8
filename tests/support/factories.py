"""Row factories: callables with overridable defaults, on an explicit connection."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection
from psycopg.rows import tuple_row


def given(pool: Any, build: Any) -> Any:
    """Run ``build(conn)`` (factories) on a pooled connection and commit: rows for tests that commit."""
    with pool.connection() as conn:
        result = build(conn)
        conn.commit()
    return result


_telegram_ids = itertools.count(5_000_000_000)


def bot_user(conn: Connection[Any], **overrides: Any) -> int:
    """A user who came through the bot: a Telegram id of its own (sign-up needs one)."""
    return user(conn, **{"telegram_id": next(_telegram_ids)} | overrides)


def _insert_returning_id(conn: Connection[Any], sql: str, params: Any) -> int:
    with conn.cursor(row_factory=tuple_row) as cursor:
        row = cursor.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def user(conn: Connection[Any], **overrides: Any) -> int:
    values = {"telegram_id": None, "created_at": datetime(2026, 1, 1).astimezone()} | overrides
    return _insert_returning_id(
        conn, "insert into users (telegram_id, created_at) values (%(telegram_id)s, "
        "%(created_at)s) returning id", values)


def plan(conn: Connection[Any], code: str = "month", days: int = 30, price: int = 500) -> str:
    conn.execute("insert into plans (code, period_days, price, currency) values (%s, %s, %s, 'USD') "
                 "on conflict do nothing", (code, days, price))
    return code


def subscription(conn: Connection[Any], user_id: int, *, kind: str = "paid", status: str = "active",
                 started_at: datetime, expires_at: datetime, ended_at: datetime | None = None,
                 **overrides: Any) -> int:
    plan_code = plan(conn) if kind == "paid" else None
    needs_key = status not in ("pending", "expired")
    values = {"user_id": user_id, "kind": kind, "status": status, "plan_code": plan_code,
              "started_at": started_at, "expires_at": expires_at, "ended_at": ended_at,
              "access_key": uuid.uuid4() if needs_key else None,
              # an expired row was active before, unless the test says otherwise
              "reached_active": status != "pending"} | overrides
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({c})s" for c in values)
    return _insert_returning_id(
        conn, f"insert into subscriptions ({columns}) values ({placeholders}) returning id", values)


def event(conn: Connection[Any], subscription_id: int, user_id: int, type_: str,
          at: datetime) -> int:
    return _insert_returning_id(
        conn, "insert into subscription_events (subscription_id, user_id, type, created_at) "
        "values (%s, %s, %s, %s) returning id", (subscription_id, user_id, type_, at))


def family(conn: Connection[Any], owner_id: int, member_id: int, *, added_at: datetime,
           removed_at: datetime | None = None) -> None:
    conn.execute("insert into family_members (owner_id, member_id, added_at, removed_at) "
                 "values (%s, %s, %s, %s)", (owner_id, member_id, added_at, removed_at))


def sponsorship(conn: Connection[Any], user_id: int, *, granted_at: datetime,
                revoked_at: datetime | None = None) -> None:
    conn.execute("insert into sponsorships (user_id, sponsor, granted_at, revoked_at) "
                 "values (%s, 'school', %s, %s)", (user_id, granted_at, revoked_at))


def recording(conn: Connection[Any], user_id: int, *, has_audio: bool = True,
              created_at: datetime, kind: str = "recite") -> int:
    return _insert_returning_id(
        conn, "insert into recordings (user_id, kind, has_audio, audio_key, created_at) "
        "values (%s, %s, %s, %s, %s) returning id",
        (user_id, kind, has_audio, f"audio/{user_id}/{uuid.uuid4()}", created_at))


SECOND = timedelta(seconds=1)


def purchase(conn: Connection[Any], user_id: int, *, kind: str = "plan", amount: int = 500,
             currency: str = "USD", provider: str = "telegram", promo_code: str | None = None,
             plan_code: str | None = "month", invoice: str | None = None,
             status: str = "pending") -> int:
    if kind == "plan":
        plan(conn, plan_code or "month")
    return _insert_returning_id(
        conn, "insert into purchases (user_id, kind, plan_code, amount, currency, promo_code, "
        "provider, provider_invoice_id, status) values (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "returning id",
        (user_id, kind, plan_code if kind == "plan" else None, amount, currency, promo_code,
         provider, invoice, status))


def promo(conn: Connection[Any], code: str = "HALF", *, max_uses: int = 10, used: int = 0) -> str:
    conn.execute("insert into promo_codes (code, discount_percent, max_uses, used_count) "
                 "values (%s, 50, %s, %s)", (code, max_uses, used))
    return code


def credit(conn: Connection[Any], user_id: int, amount: int, ref: str = "seed") -> None:
    """A starting balance, through the ledger like every balance change."""
    from domain import ledger

    ledger.post(conn, user_id, amount, reason="seed", ref=ref,
                now=datetime(2026, 1, 1).astimezone())
