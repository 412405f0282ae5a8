"""Activation under real workers (SPEC §6 A1): four worker threads on the stub broker, two fake
panels on loopback, real PostgreSQL; and worker processes SIGKILLed at the steps that matter.

Retry delays are milliseconds here (the actors' options, patched); no Worker runs under
freezegun.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest

from lapse.flows import activation as flows
from lapse.flows import reconcile
from lapse.platform.sweeps import SweepContext
from tests.actors.conftest import dead_letters
from tests.actors.test_crash_matrix import run
from tests.conftest import eventually
from tests.support import factories as make
from tests.support.panels import Flaky, adds, back_up, down, fake_panels

ROWS = 200


@pytest.fixture
def panels(pool, monkeypatch) -> Iterator[list[Any]]:
    with fake_panels(pool, monkeypatch, 2) as servers:
        yield servers


@pytest.fixture
def fast_retries(monkeypatch) -> None:
    """Retries in milliseconds (three of them), for activate_subscription and provision_client."""
    import actors

    for name in ("activate_subscription", "provision_client"):
        options = actors.broker.get_actor(name).options
        for option, value in (("min_backoff", 1), ("max_backoff", 20), ("max_retries", 3)):
            monkeypatch.setitem(options, option, value)


@pytest.fixture
def workers(pool) -> Iterator[Any]:
    """Four worker threads on the activation and payments queues of the stub broker."""
    import actors

    broker = actors.broker
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_timeout=20, worker_threads=4,
                              queues={"activation", "payments"})
    worker.start()
    yield broker
    worker.stop()
    broker.flush_all()


def pending_rows(pool, count: int) -> list[int]:
    now = datetime.now(UTC)
    with pool.connection() as conn:
        rows = [make.subscription(conn, make.user(conn), status="pending", started_at=now,
                                  expires_at=now + timedelta(days=30)) for _ in range(count)]
        conn.commit()
    return rows


def activate_all(broker: Any, rows: list[int]) -> None:
    import actors

    for subscription_id in rows:
        actors.access.activate_subscription.send(subscription_id)
    broker.join("activation", fail_fast=False, timeout=240_000)


def client_states(pool) -> Counter[tuple[int, str]]:
    with pool.connection() as conn:
        return Counter((r["panel_id"], r["state"]) for r in conn.execute(
            "select panel_id, state from panel_clients"))


def keys_by_status(pool) -> tuple[Counter[str], list[str]]:
    with pool.connection() as conn:
        found = conn.execute("select status, access_key from subscriptions").fetchall()
    return Counter(r["status"] for r in found), [str(r["access_key"]) for r in found]


def test_four_workers_add_each_key_to_each_panel_exactly_once(pool, panels, workers,
                                                              monkeypatch):
    """Every row is sent twice (a redelivery, a lost-and-resent message), side by side so both
    copies meet on the four threads: the row lock and the lease let one of them add the key;
    the other is told the row is busy, retried (in 0.2 s here) and finds it active."""
    import actors

    options = actors.broker.get_actor("activate_subscription").options
    for option, value in (("min_backoff", 200), ("max_backoff", 1000), ("max_retries", 20)):
        monkeypatch.setitem(options, option, value)
    rows = pending_rows(pool, ROWS)
    activate_all(workers, [row for row in rows for _ in range(2)])
    assert dead_letters(pool) == []
    statuses, keys = keys_by_status(pool)
    assert statuses == {"active": ROWS}
    for server in panels:
        assert adds(server) == dict.fromkeys(keys, 1)
        assert sorted(server.clients) == sorted(keys)


def test_with_panel_b_down_every_row_activates_through_a_and_b_is_dead_lettered_per_key(
        pool, panels, workers, fast_retries):
    """... and when B comes back, one reconcile adds every key to B exactly once (A5 fills in
    what was dead-lettered)."""
    a, b = panels
    down(b)
    activate_all(workers, pending_rows(pool, ROWS))
    statuses, keys = keys_by_status(pool)
    assert statuses == {"active": ROWS}
    assert adds(a) == dict.fromkeys(keys, 1)
    dead = eventually(lambda: len(rows := [r for r in dead_letters(pool)
                                           if r["actor_name"] == "provision_client"]) >= ROWS
                      and rows, timeout=20, what="every key's provision_client archived")
    assert sorted(r["args"][0] for r in dead) == sorted(keys)  # every key, none lost
    assert {r["args"][1] for r in dead} == {b.row.id}
    assert {r["reason"] for r in dead} == {"retries_exhausted"}
    assert client_states(pool) == {(a.row.id, "present"): ROWS, (b.row.id, "failed"): ROWS}
    assert b.clients == {}
    back_up(b)
    refused_while_down = adds(b)
    counts = reconcile.sweep_reconcile(pool, SweepContext(now=datetime.now(UTC), dry_run=False,
                                                          deadline=float("inf")))
    assert [counts.get(n, 0) for n in ("added", "removed", "panel_failed")] == [ROWS, 0, 0]
    assert sorted(b.clients) == sorted(keys) and sorted(a.clients) == sorted(keys)
    assert adds(b) - refused_while_down == dict.fromkeys(keys, 1)  # each key added once
    assert adds(a) == dict.fromkeys(keys, 1)  # A already held them all: nothing re-added
    assert client_states(pool) == {(a.row.id, "present"): ROWS, (b.row.id, "present"): ROWS}


def test_with_panel_b_failing_30_percent_every_key_ends_on_b_exactly_once(
        pool, panels, workers, fast_retries, monkeypatch):
    import actors

    monkeypatch.setitem(actors.broker.get_actor("provision_client").options, "max_retries", 20)
    a, b = panels
    flaky = Flaky(b, 0.3)
    activate_all(workers, pending_rows(pool, ROWS))
    statuses, keys = keys_by_status(pool)
    assert statuses == {"active": ROWS}
    assert sorted(b.clients) == sorted(keys)
    answered = adds(b) - flaky.failed  # adds the panel acted on
    assert answered == dict.fromkeys(keys, 1)
    assert [r for r in dead_letters(pool) if r["actor_name"] == "provision_client"] == []


def test_start_trial_is_a_no_op_twice_and_an_unknown_user_or_bad_input_is_dead_lettered(
        pool, panels, workers):
    import actors

    with pool.connection() as conn:
        user = make.bot_user(conn)
        conn.commit()
    actors.access.start_trial.send(user)
    workers.join("activation", fail_fast=False)
    actors.access.start_trial.send(user)
    actors.access.start_trial.send(987_654)
    actors.access.activate_subscription.send(987_654)
    actors.access.provision_client.send("not-a-key", panels[0].row.id)
    workers.join("activation", fail_fast=False)
    with pool.connection() as conn:
        trial = conn.execute("select * from subscriptions where user_id = %s", (user,)).fetchall()
    assert [(t["kind"], t["status"]) for t in trial] == [("trial", "active")]
    dead = eventually(lambda: len(rows := dead_letters(pool)) == 3 and rows, timeout=10,
                      what="three dead letters")
    assert sorted((r["actor_name"], r["reason"]) for r in dead) == [
        ("activate_subscription", "permanent_error"), ("provision_client", "invalid_arguments"),
        ("start_trial", "permanent_error")]
    assert any("no subscription with id 987654" in (r["exception"] or "") for r in dead)


def test_a_sign_up_without_a_telegram_id_is_refused_clearly_and_changes_nothing(
        pool, panels, workers):
    """Bad input (issue 10): sign-up comes from the bot, which also delivers the key, so
    ``start_trial`` for a user with no Telegram id is a permanent error at once (dead letters,
    the reason in words) and changes nothing: no row, no event, no client on any panel. The user
    beside it, with an id, gets a trial and a key as usual; a paid row of a user without one
    still activates (it was paid for, and the panel client is named by the key)."""
    import actors

    now = datetime.now(UTC)
    with pool.connection() as conn:
        without, with_id = make.user(conn), make.bot_user(conn)
        paid = make.subscription(conn, without, status="pending", started_at=now,
                                 expires_at=now + timedelta(days=30))
        before = conn.execute("select * from users order by id").fetchall()
        conn.commit()
    for user in (without, with_id):
        actors.access.start_trial.send(user)
    actors.access.activate_subscription.send(paid)
    workers.join("activation", fail_fast=False)
    with pool.connection() as conn:
        rows = conn.execute("select id, user_id, kind, status, access_key from subscriptions "
                            "order by id").fetchall()
        events = conn.execute("select subscription_id, type from subscription_events "
                              "where user_id = %s", (without,)).fetchall()
        assert conn.execute("select * from users order by id").fetchall() == before
    assert [(r["user_id"], r["kind"], r["status"]) for r in rows] == [
        (without, "paid", "active"), (with_id, "trial", "active")]
    assert [e["type"] for e in events if e["subscription_id"] != paid] == []
    keys = sorted(str(r["access_key"]) for r in rows)
    for server in panels:
        assert sorted(server.clients) == keys
        assert all((c["uuid"], c["subId"], c["comment"]) == (email, email, "lapse")
                   for email, c in server.clients.items())  # named by the key
    [dead] = eventually(lambda: dead_letters(pool), timeout=10, what="the refused sign-up")
    assert (dead["actor_name"], dead["reason"]) == ("start_trial", "permanent_error")
    assert f"user {without} has no Telegram id" in dead["exception"]


def test_a_purchase_after_an_expired_trial_activates_a_new_key_end_to_end(pool, panels, workers):
    import actors

    now = datetime.now(UTC)
    with pool.connection() as conn:
        user = make.bot_user(conn)
        make.plan(conn)
        make.subscription(conn, user, kind="trial", status="expired",
                          started_at=now - timedelta(days=10), expires_at=now - timedelta(days=7),
                          ended_at=now - timedelta(days=7))
        purchase = make.purchase(conn, user, kind="plan", amount=500)
        conn.commit()
    actors.money.finalize_purchase.send(purchase, "telegram", "tg-e2e", 500, "USD")
    workers.join("payments", fail_fast=True)
    workers.join("activation", fail_fast=True)
    with pool.connection() as conn:
        paid = conn.execute("select * from subscriptions where user_id = %s and kind = 'paid'",
                            (user,)).fetchone()
    assert paid["status"] == "active"
    assert [adds(server) for server in panels] == [{str(paid["access_key"]): 1}] * 2


# -- worker processes SIGKILLed (SPEC §7 after-commit; the crash matrix's pattern) --------

START_TRIAL = "import sys, actors; actors.access.start_trial.fn(int(sys.argv[1]))"
ACTIVATE = "import sys, actors; actors.access.activate_subscription.fn(int(sys.argv[1]))"


def panel_env(database: str, panels: list[Any]) -> dict[str, str]:
    env = {"DATABASE_URL": database}
    for server in panels:
        env |= server.env
    return env


def test_killed_between_commit_and_send_the_sweep_activates_it(pool, database, panels, tmp_path,
                                                               sent):
    with pool.connection() as conn:
        user = make.bot_user(conn)
        conn.commit()
    log = tmp_path / "faults.log"
    killed = run(["-c", START_TRIAL, str(user)], panel_env(database, panels),
                 "after_commit.committed", log)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with pool.connection() as conn:
        trial = conn.execute("select * from subscriptions where user_id = %s", (user,)).fetchone()
    assert trial["status"] == "pending" and adds(panels[0]) == {}
    now = datetime.now(UTC)
    assert sweep(pool, now) == {"lost": 0, "resent": 0}  # a message could still be retrying
    assert sweep(pool, now + flows.resend_after()) == {"lost": 1, "resent": 1}
    [message] = sent
    assert (message.actor_name, message.args) == ("activate_subscription", (trial["id"],))
    retried = run(["-c", ACTIVATE, str(trial["id"])], panel_env(database, panels))
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert status_of(pool, trial["id"]) == "active"
    assert [adds(s) for s in panels] == [{str(trial["access_key"]): 1}] * 2


def test_killed_between_the_panel_add_and_the_active_update_the_retry_succeeds_once(
        pool, database, panels, tmp_path):
    [paid] = pending_rows(pool, 1)
    log = tmp_path / "faults.log"
    env = panel_env(database, panels)
    killed = run(["-c", ACTIVATE, str(paid)], env, "activation.panels_called", log)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "activation.panels_called" in log.read_text().split()
    with pool.connection() as conn:
        key = str(conn.execute("select access_key from subscriptions where id = %s",
                               (paid,)).fetchone()["access_key"])
        assert status_of(pool, paid) == "pending"
        # the dead worker's lease runs out before the message is redelivered
        conn.execute("update subscriptions set activation_lease_until = %s where id = %s",
                     (datetime.now(UTC) - timedelta(seconds=1), paid))
        conn.commit()
    assert all(key in server.clients for server in panels)
    retried = run(["-c", ACTIVATE, str(paid)], env)
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert status_of(pool, paid) == "active"
    assert all(list(server.clients) == [key] for server in panels)
    with pool.connection() as conn:
        assert conn.execute("select count(*) as n from subscription_events where "
                            "subscription_id = %s and type = 'activated'",
                            (paid,)).fetchone()["n"] == 1


def sweep(pool, now):
    return flows.sweep_activations(pool, SweepContext(now=now, dry_run=False,
                                                      deadline=float("inf")))


def status_of(pool, subscription_id):
    with pool.connection() as conn:
        return conn.execute("select status from subscriptions where id = %s",
                            (subscription_id,)).fetchone()["status"]


def test_no_connection_or_transaction_is_held_across_a_panel_call(pool, panels, database, sent):
    """SPEC §6 A1 (the predecessor held a connection across a sleep): at every request a panel
    receives — activation's add, removal's delete, reconcile's list and add — this process's
    pool has every connection back and no session of the database is idle in a transaction."""
    import psycopg

    from domain import lifecycle
    from lapse.flows import key_removal
    from lapse.platform.after_commit import transaction

    seen: list[tuple[str, int, int]] = []

    def look(request, fake):
        with psycopg.connect(database) as conn:
            idle_in_transaction = conn.execute(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and state like 'idle in transaction%%' and pid <> pg_backend_pid()").fetchone()[0]
        stats = pool.get_stats()
        seen.append((request.path.split("/")[4], idle_in_transaction,
                     stats["pool_size"] - stats["pool_available"]))
        return None  # then the fake answers as usual

    for server in panels:
        server.inject(look, on="/clients/", times=10**6)
    now = datetime.now(UTC)
    with pool.connection() as conn:
        user = make.bot_user(conn)
        paid = make.subscription(conn, user, status="pending", started_at=now,
                                 expires_at=now + timedelta(days=30))
        other = make.subscription(conn, make.bot_user(conn), status="active", started_at=now,
                                  expires_at=now + timedelta(days=30), access_key=uuid.uuid4())
        conn.commit()
    flows.activate(pool, paid)
    assert status_of(pool, paid) == "active"
    with pool.connection() as conn, transaction(conn):
        key = str(conn.execute("select access_key from subscriptions where id = %s",
                               (paid,)).fetchone()["access_key"])
        lifecycle.revoke(conn, paid, now=now)
    key_removal.remove_key(pool, key, None, now=now)
    for server in panels:
        reconcile.reconcile_panel(pool, server.row, now=now)
    assert {call for call, _, _ in seen} >= {"add", "del", "list"}
    assert other and [(call, held) for call, *counts in seen
                      if (held := tuple(counts)) != (0, 0)] == []


def test_a_panel_marked_login_refused_gets_no_request_until_lapse_panel_check(pool, panels, sent):
    """SPEC §6: 3x-ui locks an address out after five refused logins, so a panel marked as
    refusing Lapse's login is not called again — not by activation, provision_client or
    reconcile — until ``lapse panel check`` clears the mark."""
    from domain import panels as panel_rows

    a, b = panels
    now = datetime.now(UTC)
    with pool.connection() as conn:
        panel_rows.mark_login_refused(conn, b.row.id, "login refused", now=now)
        paid = make.subscription(conn, make.bot_user(conn), status="pending", started_at=now,
                                 expires_at=now + timedelta(days=30))
        conn.commit()
    flows.activate(pool, paid)
    assert status_of(pool, paid) == "active"
    with pool.connection() as conn:
        key = str(conn.execute("select access_key from subscriptions where id = %s",
                               (paid,)).fetchone()["access_key"])
        refused = panel_rows.panel_by_id(conn, b.row.id)
    assert flows.provision(pool, key, b.row.id) == "panel not usable"
    assert reconcile.reconcile_panel(pool, refused, now=now)["skipped_login_refused"] == 1
    assert sorted(a.clients) == [key] and b.received == [] and b.login_attempts == 0
