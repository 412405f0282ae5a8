"""The finalize_purchase actor with the stub broker: a payment lands once; an unknown purchase is archived at once."""

from __future__ import annotations

from tests.actors.conftest import dead_letters
from tests.conftest import eventually
from tests.support import factories as make
from tests.support.cli import lapse


def test_a_telegram_top_up_message_credits_once_and_an_unknown_purchase_is_archived(
        stub_worker, pool):
    import actors

    broker, _ = stub_worker
    with pool.connection() as conn:
        user = make.user(conn)
        purchase = make.purchase(conn, user, kind="topup", amount=300)
        conn.commit()
    for _ in range(2):
        actors.money.finalize_purchase.send(purchase, "telegram", "tg-actor", 300, "USD")
    actors.money.finalize_purchase.send(999_001, "telegram", "tg-lost", 300, "USD")
    actors.money.finalize_purchase.send(purchase, "telegram", "tg-bad", 300, "usd")
    actors.money.finalize_purchase.send(purchase, "telegram", "tg-neg", -300, "USD")
    broker.join("payments", fail_fast=False)
    with pool.connection() as conn:
        assert conn.execute("select balance from users where id = %s", (user,)).fetchone()[
            "balance"] == 300
    dead = eventually(lambda: len(rows := dead_letters(pool)) == 3 and rows, timeout=10,
                      what="three dead letters")
    assert sorted(r["reason"] for r in dead) == ["invalid_arguments", "invalid_arguments",
                                                 "permanent_error"]
    assert any("amount must be positive" in (r["exception"] or "") for r in dead)
    assert any("no purchase with id 999001" in (r["exception"] or "") for r in dead)


def test_lapse_refund_from_the_command_line(pool, database):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    with pool.connection() as conn:
        user = make.user(conn)
        sub = make.subscription(conn, user, started_at=now - timedelta(days=1),
                                expires_at=now + timedelta(days=29))
        conn.execute("insert into payments (user_id, subscription_id, provider, provider_payment_id,"
                     " amount, currency, kind, period_start, period_end) values (%s, %s, "
                     "'telegram', 'tg-r', 500, 'USD', 'purchase', %s, %s)",
                     (user, sub, now - timedelta(days=1), now + timedelta(days=29)))
        conn.commit()
    env = {"DATABASE_URL": database}
    too_much = lapse("refund", str(sub), "--amount", "501", env=env)
    assert too_much.returncode == 2 and too_much.stderr.strip().splitlines() == [
        f"lapse: error: subscription {sub}: cannot refund 501, at most 500 (the periods not yet "
        "used)"]
    with pool.connection() as conn:
        assert conn.execute("select status from subscriptions where id = %s",
                            (sub,)).fetchone()["status"] == "active"
    done = lapse("refund", str(sub), "--reason", "chargeback", "--amount", "300", env=env)
    assert done.returncode == 0, done.stderr
    assert "refunded subscription" in done.stdout and "300 credited" in done.stdout
    again = lapse("refund", str(sub), env=env)
    assert again.returncode == 2 and "cannot refund a paid expired" in again.stderr
    missing = lapse("refund", "999999", env=env)
    assert missing.returncode == 2 and "no subscription 999999" in missing.stderr


RACER = """
import sys, threading, time
import actors  # the after-commit messages (the receipt's send_notification) need their actors
from domain import purchases
from lapse.platform import db
from lapse.platform.after_commit import transaction
from lapse.platform.config import load_settings
purchase, start_at = int(sys.argv[1]), float(sys.argv[2])
pool = db.make_pool(db.database_url(), load_settings(), size=5)
barrier, outcomes = threading.Barrier(4), []
def race():
    barrier.wait()
    time.sleep(max(0.0, start_at - time.time()))
    with pool.connection() as conn, transaction(conn):
        done = purchases.finalize_purchase(conn, purchases.Payment(
            purchase, "telegram", "tg-2proc", 500, "USD"), now=purchases_now, referral_reward=100)
    outcomes.append(done.outcome)
from datetime import datetime, timezone
purchases_now = datetime.now(timezone.utc)
threads = [threading.Thread(target=race) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(outcomes))
"""


def test_the_same_payment_finalized_by_8_threads_in_2_processes_credits_once(pool, database):
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    with pool.connection() as conn:
        user = make.user(conn)
        purchase = make.purchase(conn, user, kind="topup")
        conn.commit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env |= {"DATABASE_URL": database, "LAPSE_BROKER": "stub"}
    start_at = str(time.time() + 3)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(purchase), start_at], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err[-2000:]
        outcomes += out.split()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["paid"]  # 7 waited on the lock, then saw it
    with pool.connection() as conn:
        assert conn.execute("select balance from users where id = %s", (user,)).fetchone()[
            "balance"] == 500
        assert conn.execute("select count(*) as n from payments").fetchone()["n"] == 1
