"""Sign-up and activation (SPEC §3a rows 1–2, §6 A1) against real PostgreSQL and fake panels.

The decisions run on the test's database; the panel calls go to fake 3x-ui
servers on loopback; messages sent after commit are recorded (``sent``).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from domain import activation, lifecycle, panels
from domain.errors import ActivationBusy, NoPanelHoldsKey, UnknownSubscription, UnknownUser
from lapse.flows import activation as flows
from lapse.flows import key_removal
from lapse.platform.after_commit import transaction
from lapse.platform.sweeps import SweepContext
from tests.support import factories as make
from tests.support.panels import adds, down, fake_panels

TRIAL = timedelta(days=3)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def two_panels(pool, monkeypatch):
    with fake_panels(pool, monkeypatch, 2) as servers:
        yield servers


def sign_up(pool, user, now=NOW):
    with pool.connection() as conn, transaction(conn):
        return activation.start_trial(conn, user, now=now, length=TRIAL)


def new_user(pool):
    with pool.connection() as conn:
        user = make.bot_user(conn)
        conn.commit()
    return user


def row(pool, subscription_id):
    with pool.connection() as conn:
        return conn.execute("select * from subscriptions where id = %s",
                            (subscription_id,)).fetchone()


def names(sent):
    return [(m.actor_name, *m.args) for m in sent]


def test_sign_up_stores_a_key_and_sends_the_activation_after_commit(pool, sent):
    user = new_user(pool)
    started = sign_up(pool, user)
    trial = row(pool, started.subscription_id)
    assert (started.outcome, trial["kind"], trial["status"]) == ("started", "trial", "pending")
    assert trial["access_key"] is not None and trial["expires_at"] == NOW + TRIAL
    assert names(sent) == [("activate_subscription", started.subscription_id)]


def test_sign_up_changes_nothing_twice_after_a_trial_or_with_a_current_subscription(pool, sent):
    again, expired_trial, paying = new_user(pool), new_user(pool), new_user(pool)
    sign_up(pool, again)
    with pool.connection() as conn:
        make.subscription(conn, expired_trial, kind="trial", status="expired",
                          started_at=NOW - timedelta(days=9), expires_at=NOW - timedelta(days=6),
                          ended_at=NOW - timedelta(days=6))
        make.subscription(conn, paying, started_at=NOW, expires_at=NOW + timedelta(days=30))
        conn.commit()
    sent.clear()
    assert sign_up(pool, again).outcome == "had_trial"
    assert sign_up(pool, expired_trial).outcome == "had_trial"
    assert sign_up(pool, paying).outcome == "has_current"
    assert sent == []
    with pool.connection() as conn:
        assert conn.execute("select count(*) as n from subscriptions").fetchone()["n"] == 3


def test_sign_up_of_an_unknown_user_is_a_permanent_error(pool, sent):
    with pytest.raises(UnknownUser):
        sign_up(pool, 999_999)
    assert sent == []


def test_activation_adds_the_key_to_each_panel_once_and_marks_the_row_active(
        pool, sent, two_panels):
    started = sign_up(pool, new_user(pool))
    finished = flows.activate(pool, started.subscription_id)
    trial = row(pool, started.subscription_id)
    key = str(trial["access_key"])
    assert (finished.outcome, trial["status"], trial["activation_lease_owner"]) == (
        "activated", "active", None)
    assert [adds(server) for server in two_panels] == [{key: 1}, {key: 1}]
    assert flows.activate(pool, started.subscription_id).outcome == "already active"
    assert [adds(server) for server in two_panels] == [{key: 1}, {key: 1}]


def test_a_paid_row_without_a_key_gets_one_persisted_before_any_panel_call(pool, sent, two_panels):
    a, b = two_panels
    down(a), down(b)
    with pool.connection() as conn:
        user = make.bot_user(conn)
        paid = make.subscription(conn, user, status="pending", started_at=NOW,
                                 expires_at=NOW + timedelta(days=30))
        conn.commit()
    with pytest.raises(NoPanelHoldsKey):
        flows.activate(pool, paid)
    key = row(pool, paid)["access_key"]
    assert key is not None and row(pool, paid)["status"] == "pending"
    a.faults.clear(), b.faults.clear()
    assert flows.activate(pool, paid).outcome == "activated"
    assert row(pool, paid)["access_key"] == key  # the retry used the persisted key


def test_unknown_subscription_is_a_clear_permanent_error_and_changes_nothing(pool, sent):
    with pytest.raises(UnknownSubscription, match="no subscription with id 424242"):
        flows.activate(pool, 424242)
    with pool.connection() as conn:
        assert conn.execute("select count(*) as n from panel_clients").fetchone()["n"] == 0
    assert sent == []


def test_a_second_claim_while_the_lease_holds_is_busy_and_adds_nothing(pool, sent, two_panels):
    """Guard: the lease (``activation_lease_until > now`` in ``claim``)."""
    started = sign_up(pool, new_user(pool))
    with pool.connection() as conn, transaction(conn):
        first = activation.claim(conn, started.subscription_id, now=NOW)
    with pytest.raises(ActivationBusy), pool.connection() as conn, transaction(conn):
        activation.claim(conn, started.subscription_id, now=NOW + timedelta(minutes=1))
    assert isinstance(first, activation.Claim) and len(first.to_add) == 2


def test_a_claim_never_waits_for_a_row_another_transaction_holds(pool, sent):
    """Guard: ``FOR UPDATE SKIP LOCKED`` (without it the claim waits and times out)."""
    started = sign_up(pool, new_user(pool))
    with pool.connection() as holder, holder.transaction():  # pool connections autocommit
        holder.execute("select 1 from subscriptions where id = %s for update",
                       (started.subscription_id,))
        with pool.connection() as conn:
            conn.execute("set lock_timeout = '2s'")
            with pytest.raises(ActivationBusy), transaction(conn):
                activation.claim(conn, started.subscription_id, now=NOW)
            conn.execute("reset lock_timeout")


def test_two_workers_on_one_row_add_once_per_panel(pool, sent, two_panels):
    """Guards: the lease and SKIP LOCKED, together, under real threads."""
    started = sign_up(pool, new_user(pool))
    barrier, outcomes = threading.Barrier(2), []

    def worker():
        barrier.wait()
        try:
            outcomes.append(flows.activate(pool, started.subscription_id).outcome)
        except ActivationBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    key = str(row(pool, started.subscription_id)["access_key"])
    assert sorted(outcomes) in (["activated", "busy"], ["activated", "already active"])
    assert [adds(server) for server in two_panels] == [{key: 1}, {key: 1}]


def test_a_worker_whose_lease_ran_out_and_was_taken_does_not_mark_the_row_active(
        pool, sent, two_panels):
    """Guard: ``activation_lease_owner = owner`` in ``mark_active`` and in ``finish``."""
    started = sign_up(pool, new_user(pool))
    later = NOW + activation.LEASE + timedelta(seconds=1)
    with pool.connection() as conn, transaction(conn):
        stale = activation.claim(conn, started.subscription_id, now=NOW)
    with pool.connection() as conn, transaction(conn):
        current = activation.claim(conn, started.subscription_id, now=later)
    assert isinstance(stale, activation.Claim) and isinstance(current, activation.Claim)
    done = {p.id: None for p in stale.to_add}
    with pool.connection() as conn, transaction(conn):
        assert activation.finish(conn, stale, done, {}, now=later).outcome == "lease_lost"
    assert row(pool, started.subscription_id)["status"] == "pending"
    with pool.connection() as conn, transaction(conn):
        assert activation.finish(conn, current, done, {}, now=later).outcome == "activated"


def test_a_late_activation_of_a_row_that_expired_meanwhile_leaves_no_client_behind(
        pool, sent, two_panels):
    """Guard: ``where status = 'pending'`` and the removal of what the late activation added.

    The activation claims the row and calls the panels; meanwhile fast expiry ends the trial
    and its own ``remove_client`` runs before the late adds land (nothing to remove yet). The
    activation then finishes: the row stays expired, and the ``remove_client`` it sends for
    each panel it added to, run here as the actor would, leaves no client on any panel.
    """
    started = sign_up(pool, new_user(pool))
    with pool.connection() as conn, transaction(conn):
        claim = activation.claim(conn, started.subscription_id, now=NOW)
    assert isinstance(claim, activation.Claim)
    sent.clear()
    with pool.connection() as conn, transaction(conn):  # the trial ended meanwhile (fast expiry)
        assert lifecycle.expire_if_due(conn, started.subscription_id, claim.user_id,
                                       now=NOW + TRIAL, billing_grace=timedelta(hours=72))
    assert ("remove_client", claim.access_key) in names(sent)
    removal(pool, sent)  # the expiry's removal, before the late adds land
    added = {p.id: flows.add_to_panel(p, claim.access_key).error for p in claim.to_add}
    assert added == {s.row.id: None for s in two_panels}
    assert all(claim.access_key in s.clients for s in two_panels)  # the late adds landed
    with pool.connection() as conn, transaction(conn):
        finished = activation.finish(conn, claim, added, {}, now=NOW + TRIAL)
    assert finished.outcome == "no_longer_pending" and sorted(finished.removed) == sorted(added)
    assert sorted(names(sent)) == sorted(("remove_client", claim.access_key, p) for p in added)
    removal(pool, sent)
    assert row(pool, started.subscription_id)["status"] == "expired"
    assert [s.clients for s in two_panels] == [{}, {}]  # no client for the key on any panel
    with pool.connection() as conn:
        assert {r["state"] for r in panels.client_states(conn, claim.access_key)} == {"removed"}


def removal(pool, sent):
    """Run the ``remove_client`` messages recorded so far, as the actor would, and forget them."""
    for message in [m for m in sent if m.actor_name == "remove_client"]:
        key, panel_id = (*message.args, None)[:2]  # remove_client(access_key, panel_id=None)
        key_removal.remove_key(pool, key, panel_id, now=NOW + TRIAL)
    sent.clear()


def test_a_pending_trial_converted_by_a_purchase_keeps_activating_as_the_paid_row(
        pool, sent, two_panels):
    started = sign_up(pool, new_user(pool))
    with pool.connection() as conn, transaction(conn):
        trial_claim = activation.claim(conn, started.subscription_id, now=NOW)
    assert isinstance(trial_claim, activation.Claim)
    with pool.connection() as conn, transaction(conn):
        make.plan(conn)
        granted = lifecycle.apply_plan(conn, trial_claim.user_id, "month", now=NOW)
    paid = row(pool, granted.subscription_id)
    assert (granted.transition, paid["status"]) == ("converted_trial", "pending")
    assert str(paid["access_key"]) == trial_claim.access_key
    sent.clear()
    # the trial's own activation adds the key and finishes late: the key is the paid row's
    # now, so nothing is removed, and the paid row's activation finds it on both panels
    added = {p.id: flows.add_to_panel(p, trial_claim.access_key).error for p in trial_claim.to_add}
    with pool.connection() as conn, transaction(conn):
        late = activation.finish(conn, trial_claim, added, {}, now=NOW)
    assert (late.outcome, late.removed, sent) == ("no_longer_pending", [], [])
    assert flows.activate(pool, granted.subscription_id).outcome == "activated"
    assert row(pool, granted.subscription_id)["status"] == "active"
    assert [adds(s)[trial_claim.access_key] for s in two_panels] == [1, 1]


def test_an_owners_paid_row_restores_the_family_when_it_becomes_active(pool, sent, two_panels):
    with pool.connection() as conn:
        owner, member = make.bot_user(conn), make.bot_user(conn)
        make.family(conn, owner, member, added_at=NOW - timedelta(days=1))
        paid = make.subscription(conn, owner, status="pending", started_at=NOW,
                                 expires_at=NOW + timedelta(days=30))
        conn.commit()
    assert flows.activate(pool, paid).outcome == "activated"
    assert sorted(m.args[0] for m in sent if m.actor_name == "restore_recordings") == sorted(
        [owner, member])


def test_a_failed_panel_gets_its_own_provision_client_and_the_row_is_active_through_the_other(
        pool, sent, two_panels):
    a, b = two_panels
    down(b)
    started = sign_up(pool, new_user(pool))
    finished = flows.activate(pool, started.subscription_id)
    key = str(row(pool, started.subscription_id)["access_key"])
    assert finished.outcome == "activated" and finished.provision == [b.row.id]
    assert ("provision_client", key, b.row.id) in names(sent)
    with pool.connection() as conn:
        states = {r["panel_id"]: r["state"] for r in conn.execute(
            "select panel_id, state from panel_clients where access_key = %s", (key,))}
    assert states == {a.row.id: "present", b.row.id: "failed"}
    with pytest.raises(Exception, match="unreachable"):
        flows.provision(pool, key, b.row.id)
    b.faults.clear()
    assert flows.provision(pool, key, b.row.id) == "present"
    assert adds(b)[key] >= 1 and key in b.clients


def test_provision_of_a_key_no_longer_current_does_nothing(pool, sent, two_panels):
    a, _ = two_panels
    assert flows.provision(pool, "6f0c2f57-2f2c-4c55-9d3c-1d2f0a8f0e11", a.row.id) == (
        "key no longer current")
    assert adds(a) == {}


def test_a_panel_refusing_the_login_is_marked_and_skipped(pool, sent, two_panels, monkeypatch):
    a, b = two_panels
    monkeypatch.setenv(f"{b.row.credentials_env}_TOKEN", "wrong-token")
    started = sign_up(pool, new_user(pool))
    assert flows.activate(pool, started.subscription_id).outcome == "activated"
    with pool.connection() as conn:
        refused = conn.execute("select login_refused_at from panels where id = %s",
                               (b.row.id,)).fetchone()["login_refused_at"]
    assert refused is not None
    assert not any(m.actor_name == "provision_client" for m in sent)


def test_a_pending_trial_expires_at_its_end(pool, sent):
    started = sign_up(pool, new_user(pool))
    with pool.connection() as conn:
        due = lifecycle.due_expiries(conn, now=NOW + TRIAL, billing_grace=timedelta(hours=72))
        conn.rollback()
    assert (started.subscription_id, row(pool, started.subscription_id)["user_id"]) in due
    with pool.connection() as conn, transaction(conn):
        ended = lifecycle.expire_if_due(conn, started.subscription_id,
                                        row(pool, started.subscription_id)["user_id"],
                                        now=NOW + TRIAL, billing_grace=timedelta(hours=72))
    assert ended is not None and ended.rule == "trial_ended"
    expired = row(pool, started.subscription_id)
    assert (expired["status"], expired["ended_at"]) == ("expired", NOW + TRIAL)


def sweep(pool, now):
    context = SweepContext(now=now, dry_run=False, deadline=float("inf"))
    return flows.sweep_activations(pool, context)


def test_sweep_activations_resends_only_what_no_message_can_still_be_retrying_for(pool, sent):
    span = flows.resend_after()
    with pool.connection() as conn:
        users = [make.bot_user(conn) for _ in range(3)]
        lost = make.subscription(conn, users[0], status="pending", started_at=NOW - span,
                                 expires_at=NOW + timedelta(days=30))
        retrying = make.subscription(conn, users[1], status="pending",
                                     started_at=NOW - span + timedelta(minutes=1),
                                     expires_at=NOW + timedelta(days=30))
        past_deadline = make.subscription(conn, users[2], status="pending",
                                          started_at=NOW - lifecycle.ACTIVATION_DEADLINE,
                                          expires_at=NOW + timedelta(days=30))
        conn.commit()
    assert sweep(pool, NOW) == {"lost": 1, "resent": 1}
    assert names(sent) == [("activate_subscription", lost)]
    assert sweep(pool, NOW) == {"lost": 0, "resent": 0}  # its new send is recent now
    assert sweep(pool, NOW + span) == {"lost": 2, "resent": 2}
    assert {retrying, lost} == {m.args[0] for m in sent[1:]}
    assert past_deadline not in {m.args[0] for m in sent}
