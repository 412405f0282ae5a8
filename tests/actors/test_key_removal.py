"""A2/A3: every move to expired removes the key from every panel; a conversion keeps it.

Real PostgreSQL, the fake 3x-ui panel on loopback. The races run real threads.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import timedelta

import pytest

import actors
from domain import lifecycle, panels, renewals
from lapse.flows import key_removal, reconcile
from lapse.platform.after_commit import transaction
from lapse.ports.fakes import xui as fake
from tests.actors.conftest import dead_letters
from tests.actors.key_support import T0, add_panel, on_panel, put_key, states, xui  # noqa: F401
from tests.conftest import eventually
from tests.support import factories as f
from tests.support.factories import given

GRACE = timedelta(days=3)
pytestmark = pytest.mark.usefixtures("panel_env")


@pytest.fixture
def panel_env(monkeypatch):
    from tests.actors.key_support import PREFIX

    monkeypatch.setenv(f"{PREFIX}_TOKEN", fake.TOKEN)


def provisioned(pool, server, panel, *, kind="paid", status="active", expires_at=T0,
                auto_renew=False, balance=0) -> tuple[int, int, str]:
    """A user with a subscription whose key is on the panel (``present``)."""
    def build(conn):
        user = f.user(conn)
        if balance:
            f.credit(conn, user, balance)
        sub = f.subscription(conn, user, kind=kind, status=status, started_at=T0 - timedelta(days=30),
                             expires_at=expires_at, auto_renew=auto_renew)
        key = str(conn.execute("select access_key from subscriptions where id = %s",
                               (sub,)).fetchone()["access_key"])
        panels.record_client_state(conn, key, panel.id, "present", now=T0)
        return user, sub, key
    user, sub, key = given(pool, build)
    put_key(server, key)
    return user, sub, key


def expire(pool, sub, user, *, now):
    with pool.connection() as conn, transaction(conn):
        return lifecycle.expire_if_due(conn, sub, user, now=now, billing_grace=GRACE)


def test_an_expiry_nulls_the_key_marks_it_removing_and_remove_client_takes_it_off_every_panel(
        pool, sent, xui):  # noqa: F811
    other = fake.FakeXui.start()
    try:
        a, b = add_panel(pool, xui), add_panel(pool, other)
        user, sub, key = provisioned(pool, xui, a)
        put_key(other, key)
        assert expire(pool, sub, user, now=T0 + timedelta(seconds=1)).rule == "paid_ended"
        with pool.connection() as conn:
            row = conn.execute("select status, access_key from subscriptions where id = %s",
                               (sub,)).fetchone()
            [event] = conn.execute("select type, access_key from subscription_events "
                                   "where subscription_id = %s", (sub,)).fetchall()
        assert (row["status"], row["access_key"]) == ("expired", None)
        assert (event["type"], str(event["access_key"])) == ("expired", key)
        assert states(pool, key) == {a.name: "removing"}
        sends = [(m.actor_name, m.args) for m in sent]
        assert ("remove_client", (key,)) in sends and ("tag_recordings", (user,)) in sends
        actors.keys.remove_client(key)
        assert key not in on_panel(xui) and key not in on_panel(other)
        assert states(pool, key) == {a.name: "removed", b.name: "removed"}
        actors.keys.remove_client(key)  # again: missing is success
    finally:
        other.stop()


@pytest.mark.parametrize("how", ["refund", "revoke", "auto_renew_off_in_grace", "grace_end",
                                 "trial_end"])
def test_every_move_to_expired_sends_remove_client(pool, sent, xui, how):  # noqa: F811
    panel = add_panel(pool, xui)
    status = "grace" if how in ("auto_renew_off_in_grace", "grace_end") else "active"
    kind = "trial" if how == "trial_end" else "paid"
    expires = T0 - GRACE - timedelta(hours=1) if how == "grace_end" else T0 + timedelta(days=1)
    if how == "trial_end":
        expires = T0 - timedelta(minutes=1)
    user, sub, key = provisioned(pool, xui, panel, kind=kind, status=status, expires_at=expires,
                                 auto_renew=status == "grace")
    with pool.connection() as conn, transaction(conn):
        if how == "refund":
            lifecycle.refund(conn, sub, now=T0)
        elif how == "revoke":
            lifecycle.revoke(conn, sub, now=T0)
        elif how == "auto_renew_off_in_grace":
            lifecycle.set_auto_renew(conn, sub, False, now=T0)
        else:
            assert lifecycle.expire_if_due(conn, sub, user, now=T0, billing_grace=GRACE)
    assert [m.args for m in sent if m.actor_name == "remove_client"] == [(key,)]
    assert states(pool, key) == {panel.name: "removing"}


def test_the_activation_deadline_sends_remove_client_for_a_persisted_key(pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    key = str(uuid.uuid4())
    user, sub = given(pool, lambda conn: (u := f.user(conn), f.subscription(
        conn, u, status="pending", started_at=T0 - timedelta(days=2), expires_at=T0 + timedelta(days=28),
        access_key=key)))
    put_key(xui, key)  # an activation that reached the panel but never marked the row active
    assert expire(pool, sub, user, now=T0).rule == "activation_deadline"
    assert [m.args for m in sent if m.actor_name == "remove_client"] == [(key,)]
    actors.keys.remove_client(key)
    assert key not in on_panel(xui) and states(pool, key) == {panel.name: "removed"}


def test_a_conversion_moves_the_key_and_sends_no_remove_client(pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    user, trial, key = provisioned(pool, xui, panel, kind="trial", expires_at=T0 + timedelta(hours=1))
    with pool.connection() as conn, transaction(conn):
        f.plan(conn)
        granted = lifecycle.apply_plan(conn, user, "month", now=T0)
    assert granted.transition == "converted_trial"
    assert not [m for m in sent if m.actor_name == "remove_client"]
    with pool.connection() as conn:
        paid = conn.execute("select status, access_key from subscriptions where id = %s",
                            (granted.subscription_id,)).fetchone()
    assert (paid["status"], str(paid["access_key"])) == ("active", key)
    assert states(pool, key) == {panel.name: "present"} and key in on_panel(xui)


def test_a_trial_user_who_buys_a_second_before_the_trial_expiry_sweep_keeps_the_key(
        pool, sent, xui):  # noqa: F811
    from lapse.flows import sweeps

    panel = add_panel(pool, xui)
    user, trial, key = provisioned(pool, xui, panel, kind="trial", expires_at=T0)
    with pool.connection() as conn, transaction(conn):
        f.plan(conn)
        lifecycle.apply_plan(conn, user, "month", now=T0 - timedelta(seconds=1))
    counts = sweeps.run_sweep(pool, "fast_expiry", now=T0 + timedelta(seconds=1), budget_seconds=60)
    assert counts.get("trial_ended", 0) == 0
    for message in [m for m in sent if m.actor_name == "remove_client"]:
        actors.keys.remove_client(*message.args)
    reconcile.reconcile_panel(pool, panel, now=T0 + timedelta(seconds=2))
    assert key in on_panel(xui) and states(pool, key) == {panel.name: "present"}


def test_remove_client_leaves_a_key_that_is_current_again(pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    _, _, key = provisioned(pool, xui, panel)
    assert key_removal.remove_key(pool, key, None, now=T0)["kept_current"] == 1
    assert key in on_panel(xui) and states(pool, key) == {panel.name: "present"}
    assert not xui.calls("/clients/del/")


def test_a_key_that_is_current_again_after_the_first_panel_is_not_removed_from_the_next(
        pool, sent, xui):  # noqa: F811
    """The re-check before every panel after the first (the first is checked in the targets' read)."""
    second = fake.FakeXui.start()
    try:
        a = add_panel(pool, xui)
        add_panel(pool, second)
        user, sub, key = provisioned(pool, xui, a)
        put_key(second, key)
        expire(pool, sub, user, now=T0 + timedelta(seconds=1))

        def current_again(request, server):  # while panel A removes it, the key is current again
            given(pool, lambda conn: f.subscription(
                conn, f.user(conn), status="active", access_key=key, started_at=T0,
                expires_at=T0 + timedelta(days=30)))

        xui.inject(current_again, on="/clients/del/")
        counts = key_removal.remove_key(pool, key, None, now=T0)
        assert counts == {"removed": 1, "kept_current": 1}
        assert key not in on_panel(xui) and key in on_panel(second)
        assert not second.calls("/clients/del/")
    finally:
        second.stop()


def test_a_login_refused_panel_is_skipped_and_the_others_are_cleared(pool, sent, xui):  # noqa: F811
    refusing = fake.FakeXui.start()
    try:
        a, b = add_panel(pool, xui), add_panel(pool, refusing)
        given(pool, lambda conn: panels.mark_login_refused(conn, b.id, "refused", now=T0))
        user, sub, key = provisioned(pool, xui, a)
        put_key(refusing, key)
        expire(pool, sub, user, now=T0 + timedelta(seconds=1))
        counts = key_removal.remove_key(pool, key, None, now=T0)
        assert counts == {"removed": 1, "skipped_login_refused": 1}
        assert key not in on_panel(xui) and key in on_panel(refusing)
        assert not refusing.received
    finally:
        refusing.stop()


def test_a_panel_answering_malformed_json_is_a_clear_retryable_error_and_nothing_changes(
        pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    user, sub, key = provisioned(pool, xui, panel)
    expire(pool, sub, user, now=T0 + timedelta(seconds=1))
    xui.inject(fake.malformed(), on="/clients/del/", times=1)
    with pytest.raises(key_removal.KeyRemovalIncomplete, match=panel.name):
        actors.keys.remove_client(key)
    assert key in on_panel(xui)
    with pool.connection() as conn:
        [row] = panels.client_states(conn, key)
    assert row["state"] == "removing" and "unreadable answer" in row["last_error"]
    actors.keys.remove_client(key)  # the retry
    assert key not in on_panel(xui) and states(pool, key) == {panel.name: "removed"}


def test_remove_client_refuses_a_key_that_is_no_uuid_before_any_database_or_panel_call(
        pool, xui):  # noqa: F811
    from domain.errors import InvalidArguments

    add_panel(pool, xui)
    with pytest.raises(InvalidArguments, match="access_key must be a UUID"):
        actors.keys.remove_client("not-a-uuid")
    assert not xui.received


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "1234"])
def test_remove_client_with_a_key_that_is_no_uuid_is_dead_lettered_at_once(stub_worker, pool, bad):
    broker, _ = stub_worker
    actors.keys.remove_client.send(bad)
    broker.join("activation", fail_fast=False)
    [row] = eventually(lambda: dead_letters(pool), timeout=10, what="the dead letter")
    assert row["actor_name"] == "remove_client" and row["reason"] == "invalid_arguments"
    assert "access_key must be" in row["exception"]
    assert "retries" not in (row["options"] or {})


# -- races: fast expiry against a renewal or a purchase of the same subscription ------------

def _race(first, second) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(step):
        barrier.wait()
        try:
            step()
        except BaseException as error:  # noqa: BLE001  re-raised in the test thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def _converges(pool, server, panel, sent, *, seed: int) -> None:
    """Deliver the removals (dropping about a third: lost messages), run one reconcile, check A2."""
    lose = random.Random(seed)
    for message in [m for m in sent if m.actor_name == "remove_client"]:
        if lose.random() > 0.33:
            actors.keys.remove_client(*message.args)
    reconcile.reconcile_panel(pool, panel, now=T0 + timedelta(days=5))
    with pool.connection() as conn:
        rows = conn.execute("select access_key::text as key, status from subscriptions "
                            "where status in ('active', 'grace', 'cancelled')").fetchall()
        ended = {str(r["access_key"]) for r in conn.execute(
            "select access_key from subscription_events where access_key is not null")}
    current = {r["key"] for r in rows}
    keys_on_panel = on_panel(server)
    assert current <= keys_on_panel, "a current key is missing on the panel after one reconcile"
    assert not (ended & keys_on_panel), "an expired key is still on the panel after one reconcile"


ITERATIONS = 40


def test_fast_expiry_racing_a_renewal_never_leaves_a_current_key_off_or_an_expired_key_on(
        pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    given(pool, lambda conn: f.plan(conn))
    subs = [provisioned(pool, xui, panel, status="active", auto_renew=True, balance=10_000)
            for _ in range(ITERATIONS)]
    outcomes = set()
    for user, sub, _key in subs:
        def renew(sub=sub):
            with pool.connection() as conn, transaction(conn):
                renewals.renew_due_batch(conn, now=T0 + GRACE - timedelta(seconds=1),
                                         window=timedelta(hours=12), billing_grace=GRACE,
                                         after=sub - 1, limit=1)

        def expiry(sub=sub, user=user):
            expire(pool, sub, user, now=T0 + GRACE + timedelta(seconds=1))

        _race(renew, expiry) if sub % 2 else _race(expiry, renew)
        with pool.connection() as conn:
            outcomes.add(conn.execute("select status from subscriptions where id = %s",
                                      (sub,)).fetchone()["status"])
    assert outcomes <= {"active", "expired"}
    _converges(pool, xui, panel, sent, seed=1)


@pytest.mark.parametrize("kind", ["paid", "trial"])
def test_fast_expiry_racing_a_purchase_never_leaves_a_current_key_off_or_an_expired_key_on(
        pool, sent, xui, kind):  # noqa: F811
    panel = add_panel(pool, xui)
    given(pool, lambda conn: f.plan(conn))
    subs = [provisioned(pool, xui, panel, kind=kind) for _ in range(ITERATIONS)]
    now = T0 + timedelta(seconds=1)
    for user, sub, _key in subs:
        def purchase(user=user):
            with pool.connection() as conn, transaction(conn):
                lifecycle.apply_plan(conn, user, "month", now=now)

        def expiry(sub=sub, user=user):
            expire(pool, sub, user, now=now)

        _race(purchase, expiry) if sub % 2 else _race(expiry, purchase)
    with pool.connection() as conn:
        kept = conn.execute("select count(*) as n from subscriptions where status = 'active'"
                            ).fetchone()["n"]
        lost = conn.execute("select count(*) as n from subscriptions where status = 'pending'"
                            ).fetchone()["n"]
    assert kept + lost == ITERATIONS  # one current row per user, whichever won
    _converges(pool, xui, panel, sent, seed=2)




def test_explain_shows_each_panels_state_of_the_users_keys_without_calling_a_panel(
        pool, database, sent, xui):  # noqa: F811
    from tests.support.cli import lapse

    down = fake.FakeXui.start()
    try:
        a, b = add_panel(pool, xui), add_panel(pool, down)
        user, sub, key = provisioned(pool, xui, a)
        put_key(down, key)
        expire(pool, sub, user, now=T0 + timedelta(seconds=1))
        down.inject(fake.status(503), on="/clients/del/", times=10)
        with pytest.raises(key_removal.KeyRemovalIncomplete):
            actors.keys.remove_client(key)
        calls = (len(xui.received), len(down.received))
        shown = lapse("explain", str(user), "--now", "2026-03-02T00:00:00Z",
                      env={"DATABASE_URL": database})
        assert shown.returncode == 0, shown.stderr
        assert f"key {key} (ended, subscription #{sub} expired" in shown.stdout
        [line_a] = [ln for ln in shown.stdout.splitlines() if ln.strip().startswith(a.name)]
        [line_b] = [ln for ln in shown.stdout.splitlines() if ln.strip().startswith(b.name)]
        assert "removed" in line_a and "removing" in line_b and "HTTP 503" in line_b
        assert (len(xui.received), len(down.received)) == calls
    finally:
        down.stop()


def test_a_worker_takes_a_waiting_removal_before_a_waiting_tagging():
    """Access follows entitlement first: in a worker holding both, ``remove_client`` runs before
    ``tag_recordings`` queued earlier (dramatiq's work queue orders by actor priority, then age)."""
    from queue import PriorityQueue

    from dramatiq.broker import MessageProxy
    from dramatiq.worker import _WorkQueueItem

    work: PriorityQueue[_WorkQueueItem] = PriorityQueue()
    for actor, arg in ((actors.retention.tag_recordings, 1),
                       (actors.keys.remove_client, str(uuid.uuid4()))):
        work.put(_WorkQueueItem(actor.priority, MessageProxy(actor.message(arg))))
    assert [work.get().message.actor_name for _ in range(2)] == ["remove_client", "tag_recordings"]
