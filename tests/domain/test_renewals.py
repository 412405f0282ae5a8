"""Auto-renewal (M3) fed real rows for every branch, and three concurrent sweep processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from domain import renewals
from lapse.platform.after_commit import transaction
from tests.conftest import ROOT
from tests.support import factories as make
from tests.support.factories import given

pytestmark = pytest.mark.usefixtures("sent")  # the notices' send_notification, recorded
T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY, HOUR, WINDOW = timedelta(days=1), timedelta(hours=1), timedelta(hours=12)
GRACE = timedelta(days=3)


def sweep(pool, now=T):
    with pool.connection() as conn, transaction(conn):
        return renewals.renew_due_batch(conn, now=now, window=WINDOW, billing_grace=GRACE).counts


def state(pool, sub):
    with pool.connection() as conn:
        return conn.execute(
            "select s.status, s.expires_at, s.last_auto_renewal_at, s.access_key, u.balance, "
            "(select count(*) from payments p where p.subscription_id = s.id) as payments, "
            "(select array_agg(kind order by id) from notifications n where n.user_id = s.user_id)"
            " as notices from subscriptions s join users u on u.id = s.user_id where s.id = %s",
            (sub,)).fetchone()


def paying(pool, *, balance, ends, status="active", auto_renew=True):
    def build(conn):
        user = make.user(conn)
        if balance:
            make.credit(conn, user, balance)
        return make.subscription(conn, user, status=status, started_at=ends - 30 * DAY,
                                 expires_at=ends, auto_renew=auto_renew)
    return given(pool, build)


def test_enough_balance_renews_once_from_the_old_end_and_keeps_the_key(pool):
    sub = paying(pool, balance=800, ends=T + 6 * HOUR)
    key = state(pool, sub)["access_key"]
    assert sweep(pool) == {"renewed": 1}
    after = state(pool, sub)
    assert after["expires_at"] == T + 6 * HOUR + 30 * DAY and after["balance"] == 300
    assert after["last_auto_renewal_at"] == T and after["access_key"] == key
    assert after["payments"] == 1 and after["notices"] == ["renewed"]
    assert sweep(pool) == {}  # already renewed for this period: not due


def test_not_enough_balance_before_the_end_waits_and_after_it_goes_to_grace_with_one_notice(pool):
    sub = paying(pool, balance=100, ends=T + 6 * HOUR)
    assert sweep(pool) == {"not_enough_balance_yet": 1}
    assert state(pool, sub)["status"] == "active" and state(pool, sub)["notices"] is None
    assert sweep(pool, T + 7 * HOUR) == {"grace": 1}
    after = state(pool, sub)
    assert after["status"] == "grace" and after["notices"] == ["renewal_failed"]
    assert after["last_auto_renewal_at"] is None and after["balance"] == 100


def top_up(pool, sub, amount):
    given(pool, lambda c: make.credit(c, subscription_row(pool, sub)["user_id"], amount,
                                      ref="top-up"))


def test_a_grace_row_that_still_cannot_pay_is_not_attempted_until_a_top_up_covers_the_price(pool):
    sub = paying(pool, balance=100, ends=T - HOUR)
    assert sweep(pool) == {"grace": 1}
    before = state(pool, sub)
    # not claimed at all: no savepoint, no refused debit, no count, no second notice
    assert sweep(pool, T + HOUR) == {} and sweep(pool, T + 2 * DAY) == {}
    assert state(pool, sub) == before and before["notices"] == ["renewal_failed"]
    top_up(pool, sub, 400)  # 500: exactly the price, as the ledger counts it
    assert sweep(pool, T + 2 * DAY) == {"renewed": 1}  # the very next sweep
    after = state(pool, sub)
    assert after["status"] == "active" and after["expires_at"] == T - HOUR + 30 * DAY
    assert after["balance"] == 0 and after["payments"] == 1
    assert after["notices"] == ["renewal_failed", "renewed"]


def test_rows_left_out_do_not_end_the_batch_or_take_its_places(pool):
    dry = [paying(pool, balance=0, ends=T - HOUR) for _ in range(3)]
    assert sweep(pool) == {"grace": 3}
    payable = paying(pool, balance=500, ends=T - HOUR, status="grace")
    with pool.connection() as conn, transaction(conn):
        batch = renewals.renew_due_batch(conn, now=T + HOUR, window=WINDOW, billing_grace=GRACE,
                                         limit=1)
    assert batch.counts == {"renewed": 1} and batch.last_id == payable > max(dry)


def test_a_top_up_during_grace_renews_from_the_old_end(pool):
    sub = paying(pool, balance=0, ends=T - DAY, status="grace")
    with pool.connection() as conn:
        user = conn.execute("select user_id from subscriptions where id = %s", (sub,)).fetchone()
        make.credit(conn, user["user_id"], 500)
        conn.commit()
    assert sweep(pool) == {"renewed": 1}
    after = state(pool, sub)
    assert after["status"] == "active" and after["expires_at"] == T - DAY + 30 * DAY


def test_cancelled_or_auto_renew_off_subscriptions_are_not_due(pool):
    paying(pool, balance=900, ends=T + HOUR, status="cancelled", auto_renew=False)
    paying(pool, balance=900, ends=T + HOUR, auto_renew=False)
    paying(pool, balance=900, ends=T + 2 * DAY)  # outside the window
    assert sweep(pool) == {}


def test_a_user_locked_elsewhere_is_skipped_and_renewed_by_the_next_sweep(pool):
    sub = paying(pool, balance=900, ends=T + HOUR)
    with pool.connection() as holder, holder.transaction():  # pool connections autocommit
        user = holder.execute("select user_id from subscriptions where id = %s", (sub,)).fetchone()
        holder.execute("select 1 from users where id = %s for update", (user["user_id"],))
        assert sweep(pool) == {}  # skipped while its user is locked
    assert sweep(pool) == {"renewed": 1}


def test_2000_due_subscriptions_renewed_by_3_concurrent_sweep_processes_are_each_charged_once(
        pool, database):
    now = datetime.now(UTC).replace(microsecond=0)
    with pool.connection() as conn, conn.transaction():  # balance and ledger at one commit
        make.plan(conn)
        conn.execute(
            "with u as (insert into users (balance) select 0 from generate_series(1, 2000) "
            "returning id) "
            "insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, "
            "auto_renew, access_key) select id, 'paid', 'active', 'month', %s, %s, true, "
            "gen_random_uuid() from u", (now - 29 * DAY, now + HOUR))
        conn.execute("insert into balance_ledger (user_id, amount, reason, ref) "
                     "select id, 500, 'seed', 'seed' from users")
        conn.execute("update users set balance = 500")
    env = {"DATABASE_URL": database, "LAPSE_BROKER": "stub"}
    import os

    go = threading.Barrier(3)
    results: list[subprocess.CompletedProcess[str]] = []

    def run():
        go.wait()
        results.append(subprocess.run(
            [sys.executable, "-m", "lapse.operator.cli", "sweep", "auto_renewals"], cwd=ROOT,
            env=os.environ | env, capture_output=True, text=True, timeout=300, check=False))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    renewed = [_count(r.stdout, "renewed") for r in results]
    print("renewed per process:", renewed)
    assert sum(renewed) == 2000
    assert sum(1 for n in renewed if n > 0) >= 2, renewed  # the processes really shared the work
    with psycopg.connect(database) as conn:
        charged = conn.execute("select count(*), count(distinct subscription_id) from payments "
                               "where kind = 'renewal'").fetchone()
        balances = conn.execute("select min(balance), max(balance) from users").fetchone()
    assert charged == (2000, 2000) and balances == (0, 0)


def _count(stdout: str, key: str) -> int:
    for line in stdout.splitlines():
        if line.strip().startswith(f"{key}:"):
            return int(line.split(":")[1])
    return 0


def test_one_renewal_the_database_refuses_does_not_undo_the_others(pool):
    good = paying(pool, balance=900, ends=T + HOUR)

    def build(conn):
        make.plan(conn, "day", days=1, price=100)
        user = make.user(conn)
        make.credit(conn, user, 500)
        # two days into grace on a one-day plan: the renewed period would end before now
        return make.subscription(conn, user, status="grace", plan_code="day",
                                 started_at=T - 5 * DAY, expires_at=T - 2 * DAY, auto_renew=True)
    bad = given(pool, build)
    assert sweep(pool) == {"renewed": 1, "failed": 1}
    assert state(pool, good)["payments"] == 1
    assert state(pool, bad)["payments"] == 0 and state(pool, bad)["balance"] == 500


def test_a_row_past_its_billing_grace_is_never_charged_and_expires_instead(pool, sent):
    from domain import lifecycle

    in_grace = paying(pool, balance=800, ends=T - 4 * DAY, status="grace")
    never_swept = paying(pool, balance=800, ends=T - 4 * DAY)  # active: the sweep never ran
    assert sweep(pool) == {}
    for sub in (in_grace, never_swept):
        assert state(pool, sub)["balance"] == 800 and state(pool, sub)["payments"] == 0
    with pool.connection() as conn, transaction(conn):
        due = lifecycle.due_expiries(conn, now=T, billing_grace=GRACE)
        ended = [lifecycle.expire_if_due(conn, s, u, now=T, billing_grace=GRACE) for s, u in due]
    assert sorted((e.subscription_id, e.rule) for e in ended) == [
        (in_grace, "grace_ended"), (never_swept, "grace_ended")]
    assert {state(pool, s)["status"] for s in (in_grace, never_swept)} == {"expired"}


def test_an_auto_renewing_row_inside_its_billing_grace_is_left_to_the_renewal_sweep(pool, sent):
    from domain import lifecycle

    sub = paying(pool, balance=0, ends=T - DAY)
    with pool.connection() as conn, transaction(conn):
        user = conn.execute("select user_id from subscriptions where id = %s", (sub,)).fetchone()
        assert lifecycle.due_expiries(conn, now=T, billing_grace=GRACE) == []
        assert lifecycle.expire_if_due(conn, sub, user["user_id"], now=T,
                                       billing_grace=GRACE) is None
    assert sweep(pool) == {"grace": 1}


def subscription_row(pool, sub):
    with pool.connection() as conn:
        return conn.execute("select user_id, expires_at from subscriptions where id = %s",
                            (sub,)).fetchone()


def test_a_period_already_renewed_is_not_due_again(pool):
    # a renewal payment for the current period start exists (another writer charged it):
    # the due query must not claim it, so nothing is charged or even attempted
    sub = paying(pool, balance=800, ends=T + HOUR)
    row = subscription_row(pool, sub)
    given(pool, lambda c: c.execute(
        "insert into payments (user_id, subscription_id, provider, provider_payment_id, amount, "
        "currency, kind, period_start, period_end) values (%s, %s, 'balance', 'elsewhere', 500, "
        "'USD', 'renewal', %s, %s)", (row["user_id"], sub, row["expires_at"],
                                      row["expires_at"] + 30 * DAY)))
    assert sweep(pool) == {}
    assert state(pool, sub)["balance"] == 800 and state(pool, sub)["expires_at"] == T + HOUR


def test_the_database_refuses_a_second_renewal_payment_for_one_period(pool):
    # a writer with a stale view renews the same period twice: the unique key
    # (subscription, period start) refuses the second, so the end moves once
    sub = paying(pool, balance=0, ends=T + HOUR)
    row = subscription_row(pool, sub)
    params = {"id": sub, "user_id": row["user_id"], "now": T, "period_start": T + HOUR,
              "period": 30 * DAY, "amount": 500, "currency": "USD", "key": "k", "payload": Jsonb({})}
    with pool.connection() as conn:
        conn.execute(renewals.SQL["renew"], params | {"payment_id": "first"})
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation, match="payments_one_renewal_per_period"):
            conn.execute(renewals.SQL["renew"], params | {"payment_id": "second", "key": "k2"})
        conn.rollback()
    assert state(pool, sub)["expires_at"] == T + HOUR + 30 * DAY


def grace_without_money(pool):
    sub = paying(pool, balance=0, ends=T - HOUR)
    assert sweep(pool) == {"grace": 1}
    return sub


def test_a_pruned_renewal_failed_notice_is_not_sent_again_in_the_same_period(pool):
    sub = grace_without_money(pool)
    given(pool, lambda c: c.execute("delete from notifications where kind = 'renewal_failed'"))
    assert sweep(pool, T + HOUR) == {}  # notified for this period and still dry: not claimed
    assert state(pool, sub)["notices"] is None  # the period's notice was sent: not again


def test_the_renewal_failed_notice_is_keyed_by_its_period(pool):
    sub = grace_without_money(pool)
    given(pool, lambda c: c.execute(
        "update subscriptions set renewal_failed_notified_for = null where id = %s", (sub,)))
    assert sweep(pool, T + HOUR) == {"grace": 1}
    assert state(pool, sub)["notices"] == ["renewal_failed"]
