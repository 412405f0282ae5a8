"""A small world for the console's tests: a user with a history, dead letters, sweep runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from tests.support import factories

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAYS = 7  # the charts in these tests show NOW - 6 days .. NOW
TOKEN = "test-token-0123456789abcdef"


@dataclass
class World:
    user_id: int
    subscription_id: int
    dead_ids: list[int]


def config(token: str | None = TOKEN) -> Any:
    from lapse.platform.config import load_settings

    return replace(load_settings(), web_token=token)


def dead_letter(conn: Any, *, user_id: int | None, exception: str = "PanelUnavailable('panel down')",
                actor: str = "tag_recordings", queue: str = "retention",
                at: datetime = NOW - timedelta(hours=2)) -> int:
    row = conn.execute(
        "insert into dead_letters (message_id, broker, queue_name, actor_name, args, kwargs, options,"
        " user_id, reason, exception, traceback, first_failed_at, last_failed_at) values "
        "(%s, 'stub', %s, %s, %s, '{}', '{}', %s, 'retries_exhausted', %s, %s, %s, %s) returning id",
        (str(uuid.uuid4()), queue, actor, Jsonb([user_id or 1]), user_id, exception,
         f"Traceback (most recent call last):\n  File \"actors/retention.py\", line 40\n{exception}",
         at, at)).fetchone()
    return int(row["id"])


def build(conn: Any) -> World:
    """One user with a subscription that renewed, failed to renew, expired; a panel client; notices."""
    user = factories.user(conn, telegram_id=4242)
    sub = factories.subscription(conn, user, status="active", started_at=NOW - timedelta(days=20),
                                 expires_at=NOW + timedelta(days=10), created_at=NOW - timedelta(days=20))
    for days_ago, type_ in ((5, "activated"), (4, "renewed"), (3, "grace"), (3, "renewed"),
                            (2, "expired"), (1, "activated")):
        factories.event(conn, sub, user, type_, NOW - timedelta(days=days_ago, hours=1))
    factories.credit(conn, user, 1000, ref="welcome")
    conn.execute("insert into payments (user_id, subscription_id, provider, provider_payment_id, "
                 "amount, currency, kind, period_start, created_at) values (%s, %s, 'balance', 'renewal:x', 500, "
                 "'USD', 'renewal', %s, %s)", (user, sub, NOW - timedelta(days=10), NOW - timedelta(days=4)))
    conn.execute("insert into notifications (user_id, kind, idempotency_key, status, created_at) "
                 "values (%s, 'renewal_failed', 'k1', 'sent', %s)", (user, NOW - timedelta(days=3)))
    conn.execute("insert into tagging_batches (user_id, action, keys, state, created_at, applied_at) "
                 "values (%(u)s, 'tag', '{a,b}', 'applied', %(t)s, %(t)s), "
                 "(%(u)s, 'untag', '{a,b}', 'applied', %(r)s, %(r)s)",
                 {"u": user, "t": NOW - timedelta(days=2), "r": NOW - timedelta(days=1)})
    panel = conn.execute("insert into panels (name, url, inbound_id, credentials_env, created_at) "
                         "values ('main', 'http://127.0.0.1:9', 1, 'LAPSE_PANEL', %s) returning id",
                         (NOW - timedelta(days=30),)).fetchone()["id"]
    key = conn.execute("select access_key from subscriptions where id = %s", (sub,)).fetchone()
    conn.execute("insert into panel_clients (access_key, panel_id, state, updated_at) "
                 "values (%s, %s, 'present', %s)", (key["access_key"], panel, NOW - timedelta(days=5)))
    conn.execute("insert into sweep_runs (sweep, started_at, finished_at, status, clock, counts) "
                 "values ('lapses', %s, %s, 'completed', %s, '{\"tagged\": 3}'), "
                 "('purge', %s, %s, 'failed', %s, '{}')",
                 (NOW - timedelta(minutes=30), NOW - timedelta(minutes=29), NOW - timedelta(minutes=30),
                  NOW - timedelta(hours=9), NOW - timedelta(hours=9), NOW - timedelta(hours=9)))
    conn.execute("update sweep_runs set error = 'RuntimeError(''s3 down'')' where sweep = 'purge'")
    dead = [dead_letter(conn, user_id=user),
            dead_letter(conn, user_id=user, at=NOW - timedelta(days=3)),
            dead_letter(conn, user_id=None, exception="ValueError: bad key", actor="remove_client",
                        queue="activation")]
    return World(user, sub, dead)
