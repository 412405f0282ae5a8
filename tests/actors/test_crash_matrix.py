"""Crash matrix (M5): a worker process SIGKILLed at each named step of finalize and of a renewal.

Every run is a real subprocess against the test's database (and the fake
Crypto Pay server) with ``LAPSE_FAULT_POINT`` naming where to die. After
each kill: either nothing or everything happened, the invariants hold, and
a retry (the same work run again, unharmed) converges to exactly once. The
test asserts that every point was reached by a killed run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from domain import invariants
from lapse.ports.fakes import crypto_pay as fake
from tests.conftest import ROOT
from tests.support import factories as make

FINALIZE_POINTS = ["finalize.after_provider_call", "finalize.locked", "finalize.money_moved",
                   "finalize.before_commit", "after_commit.committed"]
RENEWAL_POINTS = ["renewal.claimed", "renewal.debited", "renewal.extended",
                  "renewal.batch_committed"]
FINALIZE = ("import sys, actors; actors.money.finalize_purchase.fn(int(sys.argv[1]), 'crypto', "
            "sys.argv[2], 500, 'USD')")
GRACE, ALERT = timedelta(hours=72), timedelta(hours=26)


def run(args, env, point=None, log=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environment |= env | {"LAPSE_BROKER": "stub"}
    environment.pop("LAPSE_FAULT_POINT", None)
    if point:
        environment |= {"LAPSE_FAULT_POINT": point, "LAPSE_FAULT_LOG": str(log)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)


def assert_invariants(pool):
    with pool.connection() as conn:
        failed = [r.name for r in invariants.check_invariants(
            conn, now=datetime.now(UTC), billing_grace=GRACE, alert_age=ALERT) if not r.ok]
    assert failed == []


def finalize_state(pool, purchase, user, referrer):
    with pool.connection() as conn:
        return conn.execute(
            "select p.status, (select count(*) from payments where purchase_id = p.id) as payments,"
            " (select count(*) from subscriptions where user_id = %s) as subscriptions,"
            " (select balance from users where id = %s) as referrer_balance "
            "from purchases p where p.id = %s", (user, referrer, purchase)).fetchone()


NOTHING = {"status": "pending", "payments": 0, "subscriptions": 0, "referrer_balance": 0}
EVERYTHING = {"status": "paid", "payments": 1, "subscriptions": 1, "referrer_balance": 100}


def test_finalize_killed_at_every_step_leaves_nothing_or_everything_and_a_retry_converges(
        pool, database, httpserver, tmp_path):
    api = fake.FakeCryptoPay.serve(httpserver)
    env = {"DATABASE_URL": database, "LAPSE_CRYPTO_URL": api.url, "LAPSE_CRYPTO_TOKEN": fake.TOKEN}
    log = tmp_path / "faults.log"
    outcomes = {}
    for point in FINALIZE_POINTS:
        invoice = api.add(status="paid")
        with pool.connection() as conn:
            referrer, user = make.user(conn), make.user(conn)
            conn.execute("update users set referred_by = %s where id = %s", (referrer, user))
            purchase = make.purchase(conn, user, provider="crypto", invoice=invoice)
            conn.commit()
        killed = run(["-c", FINALIZE, str(purchase), invoice], env, point, log)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        after_kill = finalize_state(pool, purchase, user, referrer)
        assert after_kill in (NOTHING, EVERYTHING), (point, after_kill)
        outcomes[point] = "everything" if after_kill == EVERYTHING else "nothing"
        assert_invariants(pool)
        retried = run(["-c", FINALIZE, str(purchase), invoice], env)
        assert retried.returncode == 0, (point, retried.stderr[-2000:])
        assert finalize_state(pool, purchase, user, referrer) == EVERYTHING, point
        assert_invariants(pool)
    assert set(log.read_text().split()) >= set(FINALIZE_POINTS)
    assert outcomes == {"finalize.after_provider_call": "nothing", "finalize.locked": "nothing",
                        "finalize.money_moved": "nothing", "finalize.before_commit": "nothing",
                        "after_commit.committed": "everything"}


@pytest.mark.parametrize("point", RENEWAL_POINTS)
def test_a_renewal_sweep_killed_at_every_step_charges_each_subscription_once_after_a_retry(
        pool, database, tmp_path, point):
    now = datetime.now(UTC)
    with pool.connection() as conn:
        make.plan(conn)
        users = [make.user(conn) for _ in range(30)]
        subs = []
        for user in users:
            make.credit(conn, user, 500)
            subs.append(make.subscription(conn, user, started_at=now - timedelta(days=29),
                                          expires_at=now + timedelta(hours=1), auto_renew=True))
        conn.commit()
    log = tmp_path / "faults.log"
    env = {"DATABASE_URL": database}
    killed = run(["-m", "lapse.operator.cli", "sweep", "auto_renewals"], env, point, log)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert point in log.read_text().split()
    state = renewal_state(pool)
    partial = [s for s in state if s not in ((0, 500, False), (1, 0, True))]
    assert partial == [], partial  # each subscription: all of its renewal or none of it
    assert_invariants(pool)
    retried = run(["-m", "lapse.operator.cli", "sweep", "auto_renewals"], env)
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert renewal_state(pool) == [(1, 0, True)] * 30
    assert_invariants(pool)


def renewal_state(pool):
    """Per subscription: (renewal payments, balance, extended)."""
    with pool.connection() as conn:
        return [(r["payments"], r["balance"], r["extended"]) for r in conn.execute(
            "select (select count(*) from payments p where p.subscription_id = s.id and "
            "p.kind = 'renewal') as payments, u.balance, "
            "s.expires_at > s.started_at + interval '40 days' as extended "
            "from subscriptions s join users u on u.id = s.user_id order by s.id")]
