"""§3a transitions on a real database: who they lock, what they restore and tag, and their re-checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from domain import lifecycle
from lapse.platform.after_commit import transaction
from tests.support import factories as make
from tests.support.factories import given

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY, HOUR, GRACE = timedelta(days=1), timedelta(hours=1), timedelta(hours=72)


def sends(sent, actor):
    return [m.args[0] for m in sent if m.actor_name == actor]


def row(pool, sub):
    with pool.connection() as conn:
        return conn.execute("select * from subscriptions where id = %s", (sub,)).fetchone()


def family(pool, owner_sub=None, *, members=2):
    """An owner (with a subscription built by ``owner_sub``) and ``members`` family members."""
    def build(conn):
        make.plan(conn)
        owner = make.user(conn)
        sub = owner_sub(conn, owner) if owner_sub else None
        kids = [make.user(conn) for _ in range(members)]
        for kid in kids:
            make.family(conn, owner, kid, added_at=T - DAY)
        return owner, sub, kids
    return given(pool, build)


def act(pool, change):
    with pool.connection() as conn, transaction(conn):
        return change(conn)


# --- R5: every grant restores each user it gives retention to ------------------------------

def test_an_extension_restores_the_owner_and_every_family_member(pool, sent):
    owner, sub, kids = family(pool, lambda c, u: make.subscription(
        c, u, started_at=T - DAY, expires_at=T + 29 * DAY))
    granted = act(pool, lambda c: lifecycle.apply_plan(c, owner, "month", now=T))
    assert (granted.subscription_id, granted.transition) == (sub, "extended")
    assert row(pool, sub)["expires_at"] == T + 59 * DAY
    assert sorted(sends(sent, "restore_recordings")) == sorted([owner, *kids])


def test_a_purchase_out_of_grace_is_active_from_the_old_end_and_restores_the_family(pool, sent):
    old_end = T - DAY
    owner, sub, kids = family(pool, lambda c, u: make.subscription(
        c, u, status="grace", auto_renew=True, started_at=T - 31 * DAY, expires_at=old_end))
    act(pool, lambda c: lifecycle.apply_plan(c, owner, "month", now=T))
    after = row(pool, sub)
    assert after["status"] == "active" and after["expires_at"] == old_end + 30 * DAY
    assert sorted(sends(sent, "restore_recordings")) == sorted([owner, *kids])


def test_a_conversion_of_an_active_trial_restores_the_family(pool, sent):
    owner, trial, kids = family(pool, lambda c, u: make.subscription(
        c, u, kind="trial", started_at=T - DAY, expires_at=T + 2 * DAY))
    key = row(pool, trial)["access_key"]
    granted = act(pool, lambda c: lifecycle.apply_plan(c, owner, "month", now=T))
    paid = row(pool, granted.subscription_id)
    assert granted.transition == "converted_trial"
    assert (paid["status"], paid["access_key"]) == ("active", key)
    assert sorted(sends(sent, "restore_recordings")) == sorted([owner, *kids])
    assert sends(sent, "activate_subscription") == []


def test_a_pending_trial_converts_to_a_pending_paid_row_that_goes_on_activating(pool, sent):
    import uuid

    key = uuid.uuid4()
    owner, trial, kids = family(pool, lambda c, u: make.subscription(
        c, u, kind="trial", status="pending", started_at=T - HOUR, expires_at=T + 3 * DAY,
        access_key=key))
    granted = act(pool, lambda c: lifecycle.apply_plan(c, owner, "month", now=T))
    ended, paid = row(pool, trial), row(pool, granted.subscription_id)
    assert (ended["status"], ended["ended_at"], ended["access_key"]) == ("expired", T, None)
    assert (paid["status"], paid["access_key"], paid["kind"]) == ("pending", key, "paid")
    assert sends(sent, "activate_subscription") == [granted.subscription_id]
    # a pending row keeps the buyer's recordings (§3 source 2), not the family's
    assert sends(sent, "restore_recordings") == [owner]
    with pool.connection() as conn:
        events = conn.execute("select type from subscription_events where subscription_id = %s",
                              (trial,)).fetchall()
    assert [e["type"] for e in events] == ["converted"]


# --- R2: family paths enqueue tagging directly ------------------------------------------------

def open_requests(pool):
    with pool.connection() as conn:
        return sorted(r["user_id"] for r in conn.execute("select user_id from tagging_requests"))


def test_family_removal_requests_tagging_for_the_member(pool, sent):
    owner, _, [kid] = family(pool, lambda c, u: make.subscription(
        c, u, started_at=T - DAY, expires_at=T + 29 * DAY), members=1)
    act(pool, lambda c: lifecycle.remove_family_member(c, owner, kid, now=T))
    assert open_requests(pool) == [kid] and sends(sent, "tag_recordings") == [kid]


def test_an_owners_lapse_requests_tagging_for_each_member(pool, sent):
    owner, sub, kids = family(pool, lambda c, u: make.subscription(
        c, u, started_at=T - DAY, expires_at=T + 29 * DAY))
    act(pool, lambda c: lifecycle.revoke(c, sub, now=T))
    assert open_requests(pool) == sorted([owner, *kids])
    assert sorted(sends(sent, "tag_recordings")) == sorted([owner, *kids])


# --- §3a re-checks under the lock -------------------------------------------------------------

def test_an_expiry_listed_before_a_purchase_extended_the_row_is_skipped(pool, sent):
    user = given(pool, make.user)
    sub = given(pool, lambda c: make.subscription(c, user, status="cancelled", started_at=T - 30 * DAY,
                                                  expires_at=T))
    with pool.connection() as conn:
        due = lifecycle.due_expiries(conn, now=T + HOUR, billing_grace=GRACE)
        conn.rollback()
    assert due == [(sub, user)]
    act(pool, lambda c: lifecycle.apply_plan(c, user, "month", now=T + HOUR))  # after the listing
    ended = act(pool, lambda c: lifecycle.expire_if_due(c, sub, user, now=T + HOUR,
                                                         billing_grace=GRACE))
    assert ended is None and row(pool, sub)["status"] == "cancelled"


def test_a_paid_row_within_its_activation_deadline_is_not_expired(pool, sent):
    user = given(pool, make.user)
    sub = given(pool, lambda c: make.subscription(c, user, status="pending", started_at=T,
                                                  expires_at=T + 30 * DAY))
    ended = act(pool, lambda c: lifecycle.expire_if_due(c, sub, user, now=T + 23 * HOUR,
                                                         billing_grace=GRACE))
    assert ended is None and row(pool, sub)["status"] == "pending"
    ended = act(pool, lambda c: lifecycle.expire_if_due(c, sub, user, now=T + DAY,
                                                         billing_grace=GRACE))
    assert ended is not None and ended.rule == "activation_deadline"
    with pool.connection() as conn:
        [event] = conn.execute("select type from subscription_events where subscription_id = %s",
                               (sub,)).fetchall()
    assert event["type"] == "activation_failed" and not row(pool, sub)["reached_active"]


def test_an_auto_renewing_active_row_is_never_expired_by_fast_expiry(pool, sent):
    user = given(pool, make.user)
    sub = given(pool, lambda c: make.subscription(c, user, auto_renew=True, started_at=T - 30 * DAY,
                                                  expires_at=T))
    with pool.connection() as conn:
        # not before its billing grace has ended (main's fast expiry ends it after that, §3a)
        assert lifecycle.due_expiries(conn, now=T + GRACE - HOUR, billing_grace=GRACE) == []
        conn.rollback()
    assert act(pool, lambda c: lifecycle.expire_if_due(c, sub, user, now=T + HOUR,
                                                        billing_grace=GRACE)) is None


# --- SPEC §3: an owner's transition locks the members; a family change locks owner then member

def locked(pool, user_id):
    """Whether another transaction holds ``user_id``'s lock right now (a foreign key's KEY SHARE lock does not count)."""
    with pool.connection() as other:
        try:
            other.execute("select id from users where id = %s for no key update nowait", (user_id,))
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            other.rollback()
    return False


@pytest.mark.parametrize("change", ["apply_plan", "revoke", "set_auto_renew", "expire_if_due"])
def test_an_owners_transition_locks_every_member(pool, sent, change):
    owner, sub, kids = family(pool, lambda c, u: make.subscription(
        c, u, started_at=T - 30 * DAY, expires_at=T))
    run = {"apply_plan": lambda c: lifecycle.apply_plan(c, owner, "month", now=T),
           "revoke": lambda c: lifecycle.revoke(c, sub, now=T),
           "set_auto_renew": lambda c: lifecycle.set_auto_renew(c, sub, False, now=T - HOUR),
           "expire_if_due": lambda c: lifecycle.expire_if_due(c, sub, owner, now=T,
                                                              billing_grace=GRACE)}[change]
    with pool.connection() as conn, transaction(conn):
        run(conn)
        assert [locked(pool, u) for u in (owner, *kids)] == [True, True, True]


@pytest.mark.parametrize("change", ["add", "remove"])
def test_a_family_change_locks_the_owner_and_the_member(pool, sent, change):
    owner, _, [kid] = family(pool, members=1)
    newcomer = given(pool, make.user)
    with pool.connection() as conn, transaction(conn):
        if change == "add":
            lifecycle.add_family_member(conn, owner, newcomer, now=T)
            assert (locked(pool, owner), locked(pool, newcomer)) == (True, True)
        else:
            lifecycle.remove_family_member(conn, owner, kid, now=T)
            assert (locked(pool, owner), locked(pool, kid)) == (True, True)
