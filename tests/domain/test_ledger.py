"""The ledger (M1): one row per change, never below zero, balance = sum(ledger) at every commit."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from domain import ledger
from tests.support import factories as make

T = datetime(2026, 5, 1, tzinfo=UTC)


def test_credits_and_debits_move_the_balance_with_one_row_each(conn):
    user = make.user(conn)
    assert ledger.post(conn, user, 500, reason="topup", ref="p1", now=T).balance == 500
    assert ledger.post(conn, user, -200, reason="purchase", ref="p2", now=T).balance == 300
    rows = conn.execute("select amount, reason, ref from balance_ledger where user_id = %s "
                        "order by id", (user,)).fetchall()
    assert rows == [{"amount": 500, "reason": "topup", "ref": "p1"},
                    {"amount": -200, "reason": "purchase", "ref": "p2"}]


def test_a_debit_below_zero_is_refused_and_changes_nothing(conn):
    user = make.user(conn)
    ledger.post(conn, user, 100, reason="topup", ref="p1", now=T)
    with pytest.raises(ledger.InsufficientBalance, match="balance of 100, cannot debit 101"):
        ledger.post(conn, user, -101, reason="purchase", ref="p2", now=T)
    assert conn.execute("select balance from users where id = %s", (user,)).fetchone()["balance"] == 100
    assert conn.execute("select count(*) as n from balance_ledger where user_id = %s",
                        (user,)).fetchone()["n"] == 1


def test_the_same_reference_is_posted_once(conn):
    user = make.user(conn)
    ledger.post(conn, user, 100, reason="topup", ref="p1", now=T)
    with pytest.raises(ledger.AlreadyPosted):
        ledger.post(conn, user, 100, reason="topup", ref="p1", now=T)
    with pytest.raises(ValueError):
        ledger.post(conn, user, 0, reason="topup", ref="p3", now=T)
    assert conn.execute("select balance from users where id = %s", (user,)).fetchone()["balance"] == 100


def test_a_balance_changed_outside_the_ledger_cannot_commit(pool):
    with pool.connection() as c:
        user = make.user(c)
        with pytest.raises(psycopg.errors.CheckViolation, match="ledger sums to 0"), \
                c.transaction():  # checked at its COMMIT
            c.execute("update users set balance = 50 where id = %s", (user,))


def test_an_unknown_user_is_refused(conn):
    from domain.errors import UnknownUser

    with pytest.raises(UnknownUser):
        ledger.post(conn, 987_654_321, 100, reason="topup", ref="p1", now=T)


@pytest.mark.parametrize("change", [
    "update balance_ledger set amount = 900 where user_id = %s",
    "delete from balance_ledger where user_id = %s",
])
def test_the_database_refuses_to_change_or_delete_a_ledger_row(conn, change):
    user = make.user(conn)
    ledger.post(conn, user, 100, reason="topup", ref="p1", now=T)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                       match="balance_ledger is append-only"):
        conn.execute(change, (user,))
