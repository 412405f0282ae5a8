"""Each invariant check finds a violation when one exists (constraints dropped to plant it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.invariants import CHECKS, check_invariants
from tests.support import factories as make

T = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def failing(conn, now=T):
    results = check_invariants(conn, now=now, billing_grace=3 * DAY, alert_age=timedelta(hours=26))
    assert [r.name for r in results] == list(CHECKS)
    return {r.name for r in results if not r.ok}


def drop(conn, table, *constraints):
    for c in constraints:
        conn.execute(f"alter table {table} drop constraint {c}")


def test_a_clean_database_passes(conn):
    u = make.user(conn)
    make.subscription(conn, u, started_at=T, expires_at=T + 30 * DAY)
    make.recording(conn, u, created_at=T + DAY)
    assert failing(conn, T + 2 * DAY) == set()


PLANTS = {
    "expired_has_no_key": lambda c, u: (
        drop(c, "subscriptions", "subscriptions_expired_has_no_key"),
        c.execute("insert into subscriptions (user_id, kind, status, started_at, expires_at, "
                  "ended_at, access_key) values (%s, 'trial', 'expired', %s, %s, %s, "
                  "gen_random_uuid())", (u, T, T, T))),
    "current_has_key": lambda c, u: (
        drop(c, "subscriptions", "subscriptions_current_has_key"),
        make.subscription(c, u, started_at=T, expires_at=T + DAY, access_key=None)),
    "one_current_subscription": lambda c, u: (
        c.execute("drop index subscriptions_one_current"),
        make.subscription(c, u, started_at=T, expires_at=T + DAY),
        make.subscription(c, u, started_at=T, expires_at=T + DAY)),
    "balance_matches_ledger": lambda c, u: (
        c.execute("set constraints all immediate"),
        c.execute("alter table users disable trigger users_balance_matches_ledger"),
        c.execute("update users set balance = 5 where id = %s", (u,))),
    "balance_not_negative": lambda c, u: (
        c.execute("set constraints all immediate"),
        drop(c, "users", "users_balance_not_negative"),
        c.execute("alter table users disable trigger users_balance_matches_ledger"),
        c.execute("alter table balance_ledger disable trigger balance_ledger_matches_balance"),
        c.execute("update users set balance = -5 where id = %s", (u,)),
        c.execute("insert into balance_ledger (user_id, amount, reason, ref) "
                  "values (%s, -5, 'test', 'x')", (u,))),
    "paid_purchase_has_one_payment": lambda c, u: c.execute(
        "insert into purchases (user_id, kind, amount, currency, provider, status) "
        "values (%s, 'topup', 100, 'USD', 'crypto', 'paid')", (u,)),
    "payment_recorded_once": lambda c, u: (
        drop(c, "payments", "payments_once"),
        [c.execute("insert into payments (user_id, provider, provider_payment_id, amount, currency, "
                   "kind) values (%s, 'crypto', 'inv-1', 100, 'USD', 'purchase')", (u,))
         for _ in range(2)]),
    "renewal_within_period": lambda c, u: (
        drop(c, "subscriptions", "subscriptions_renewal_within_period"),
        make.subscription(c, u, started_at=T, expires_at=T + DAY, last_auto_renewal_at=T + 2 * DAY)),
    "no_old_leaks": lambda c, u: make.recording(c, u, created_at=T - 2 * DAY),
    "unapplied_tagging_batches": lambda c, u: c.execute(
        "insert into tagging_batches (user_id, action, keys, created_at) "
        "values (%s, 'tag', array['audio/x'], %s)", (u, T - 2 * DAY)),
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_each_check_finds_its_violation(conn, check):
    u = make.user(conn)
    PLANTS[check](conn, u)
    assert failing(conn) == {check}


def test_a_recent_leak_is_not_yet_an_alert(conn):
    u = make.user(conn)
    make.recording(conn, u, created_at=T - 25 * timedelta(hours=1))
    assert failing(conn) == set()
