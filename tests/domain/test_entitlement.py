"""SPEC §3: access and retention in SQL, at the exact boundaries of every source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.entitlement import has_access, has_retention, retention_end, windows
from domain.retention import state as retention_state
from tests.domain import spec_entitlement as spec
from tests.support import factories as make
from tests.support.factories import SECOND

GRACE = timedelta(days=3)
T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
DAY = timedelta(days=1)


def access(conn, user, at):
    return has_access(conn, user, now=at, billing_grace=GRACE)


def retention(conn, user, at):
    return has_retention(conn, user, now=at, billing_grace=GRACE)


def around(conn, check, user, edge):
    """(a second before, at, a second after) the edge."""
    return tuple(check(conn, user, edge + d) for d in (-S, 0 * S, S))


@pytest.mark.parametrize("status", ["active", "cancelled"])
@pytest.mark.parametrize("kind", ["trial", "paid"])
def test_access_from_start_until_expiry(conn, kind, status):
    u = make.user(conn)
    make.subscription(conn, u, kind=kind, status=status, started_at=T, expires_at=T + 30 * DAY)
    assert around(conn, access, u, T) == (False, True, True)
    assert around(conn, access, u, T + 30 * DAY) == (True, False, False)


def test_grace_gives_access_until_expiry_plus_billing_grace(conn):
    u = make.user(conn)
    make.subscription(conn, u, status="grace", started_at=T, expires_at=T + 30 * DAY)
    assert around(conn, access, u, T + 30 * DAY + GRACE) == (True, False, False)


def test_an_auto_renewing_active_row_is_in_billing_grace_from_its_end(conn):
    """Issue 9 (4a): a failed renewal costs no access before the renewal sweep moves it to grace."""
    u = make.user(conn)
    make.subscription(conn, u, status="active", auto_renew=True, started_at=T,
                      expires_at=T + 30 * DAY)
    assert around(conn, access, u, T + 30 * DAY) == (True, True, True)
    assert around(conn, access, u, T + 30 * DAY + GRACE) == (True, False, False)
    assert around(conn, retention, u, T + 30 * DAY) == (True, True, True)


@pytest.mark.parametrize(("kind", "status", "auto_renew"), [
    ("paid", "active", False), ("paid", "cancelled", False), ("trial", "active", True)])
def test_no_billing_grace_without_auto_renew_or_for_a_trial(conn, kind, status, auto_renew):
    u = make.user(conn)
    make.subscription(conn, u, kind=kind, status=status, auto_renew=auto_renew, started_at=T,
                      expires_at=T + 30 * DAY)
    assert around(conn, access, u, T + 30 * DAY) == (True, False, False)


@pytest.mark.parametrize("status", ["pending", "expired"])
def test_pending_and_expired_give_no_access(conn, status):
    u = make.user(conn)
    ended = T + DAY if status == "expired" else None
    make.subscription(conn, u, kind="trial", status=status, started_at=T, expires_at=T + 3 * DAY,
                      ended_at=ended)
    assert not access(conn, u, T + 2 * DAY)


def test_retention_1_access(conn):
    u = make.user(conn)
    make.subscription(conn, u, kind="trial", started_at=T, expires_at=T + 3 * DAY)
    assert around(conn, retention, u, T + 3 * DAY) == (True, False, False)


def test_retention_2_paid_pending_activation(conn):
    u = make.user(conn)
    make.subscription(conn, u, status="pending", started_at=T, expires_at=T + 30 * DAY)
    assert not access(conn, u, T + DAY)
    assert around(conn, retention, u, T) == (False, True, True)
    assert around(conn, retention, u, T + 30 * DAY) == (True, False, False)


def test_retention_3_seven_days_after_a_paid_subscription_ended(conn):
    u = make.user(conn)
    end = T + 30 * DAY
    make.subscription(conn, u, status="expired", started_at=T, expires_at=end, ended_at=end)
    assert around(conn, retention, u, end + 7 * DAY) == (True, False, False)


def test_retention_3_trials_have_no_retention_grace(conn):
    u = make.user(conn)
    end = T + 3 * DAY
    make.subscription(conn, u, kind="trial", status="expired", started_at=T, expires_at=end,
                      ended_at=end)
    assert around(conn, retention, u, end) == (False, False, False)


@pytest.mark.parametrize("event_type", ["expired", "cancelled"])
def test_retention_4_event_on_a_paid_subscription(conn, event_type):
    u = make.user(conn)
    sub = make.subscription(conn, u, status="expired", started_at=T - 400 * DAY,
                            expires_at=T - 300 * DAY, ended_at=T - 300 * DAY)
    make.event(conn, sub, u, event_type, T)
    assert around(conn, retention, u, T + 7 * DAY) == (True, False, False)


@pytest.mark.parametrize("event_type", ["expired", "cancelled"])
def test_retention_4_an_event_does_not_count_before_it_happened(conn, event_type):
    u = make.user(conn)
    sub = make.subscription(conn, u, status="expired", started_at=T - 400 * DAY,
                            expires_at=T - 300 * DAY, ended_at=T - 300 * DAY)
    make.event(conn, sub, u, event_type, T)
    assert around(conn, retention, u, T) == (False, True, True)
    assert not retention(conn, u, T - 3 * DAY)


def test_retention_4_ignores_events_of_trials_and_other_types(conn):
    u = make.user(conn)
    trial = make.subscription(conn, u, kind="trial", status="expired", started_at=T - 9 * DAY,
                              expires_at=T - 6 * DAY, ended_at=T - 6 * DAY)
    make.event(conn, trial, u, "expired", T)
    make.event(conn, trial, u, "converted", T)
    assert not retention(conn, u, T + S)


def test_retention_5_family_member_of_a_paying_owner(conn):
    owner, member = make.user(conn), make.user(conn)
    make.subscription(conn, owner, started_at=T, expires_at=T + 30 * DAY)
    make.family(conn, owner, member, added_at=T + DAY, removed_at=T + 10 * DAY)
    assert around(conn, retention, member, T + DAY) == (False, True, True)
    assert around(conn, retention, member, T + 10 * DAY) == (True, False, False)
    assert not access(conn, member, T + 2 * DAY)


def test_retention_5_ends_with_the_owners_access(conn):
    owner, member = make.user(conn), make.user(conn)
    make.subscription(conn, owner, started_at=T, expires_at=T + 30 * DAY)
    make.family(conn, owner, member, added_at=T)
    assert around(conn, retention, member, T + 30 * DAY) == (True, False, False)


def test_retention_5_not_through_an_owner_on_trial(conn):
    owner, member = make.user(conn), make.user(conn)
    make.subscription(conn, owner, kind="trial", started_at=T, expires_at=T + 3 * DAY)
    make.family(conn, owner, member, added_at=T)
    assert not retention(conn, member, T + DAY)


def test_retention_6_sponsorship(conn):
    u = make.user(conn)
    make.sponsorship(conn, u, granted_at=T, revoked_at=T + 5 * DAY)
    assert around(conn, retention, u, T) == (False, True, True)
    assert around(conn, retention, u, T + 5 * DAY) == (True, False, False)


def test_retention_7_loyalty_two_years_after_a_paid_start_is_permanent(conn):
    u = make.user(conn)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    make.subscription(conn, u, status="expired", started_at=start, expires_at=start + 30 * DAY,
                      ended_at=start + 30 * DAY)
    assert around(conn, retention, u, datetime(2026, 3, 1, tzinfo=UTC)) == (False, True, True)
    assert retention(conn, u, datetime(2031, 1, 1, tzinfo=UTC))


LOYAL_START = datetime(2024, 3, 1, tzinfo=UTC)
LOYAL_AT = datetime(2026, 6, 1, tzinfo=UTC)


def test_retention_7_no_loyalty_for_a_paid_row_that_never_reached_active(conn):
    u = make.user(conn)
    make.subscription(conn, u, status="expired", started_at=LOYAL_START,
                      expires_at=LOYAL_START + 30 * DAY, ended_at=LOYAL_START + DAY,
                      reached_active=False)
    assert not retention(conn, u, LOYAL_AT)


@pytest.mark.parametrize("how", ["refunded", "revoked"])
def test_retention_7_no_loyalty_when_refunded_or_revoked_in_its_first_period(conn, how):
    u = make.user(conn)
    ended = LOYAL_START + 30 * DAY - S
    sub = make.subscription(conn, u, status="expired", started_at=LOYAL_START,
                            expires_at=LOYAL_START + 30 * DAY, ended_at=ended)
    make.event(conn, sub, u, how, ended)
    assert not retention(conn, u, LOYAL_AT)


@pytest.mark.parametrize("how", ["refunded", "revoked"])
def test_retention_7_a_later_goodwill_refund_keeps_loyalty(conn, how):
    u = make.user(conn)
    ended = LOYAL_START + 30 * DAY
    sub = make.subscription(conn, u, status="expired", started_at=LOYAL_START,
                            expires_at=LOYAL_START + 60 * DAY, ended_at=ended)
    make.event(conn, sub, u, how, ended)
    assert retention(conn, u, LOYAL_AT)


def test_retention_end_ignores_a_trial_converted_while_pending(conn):
    """A pending trial gave no access: its conversion is not where retention ended."""
    u = make.user(conn)
    make.recording(conn, u, has_audio=False, created_at=T - DAY)
    trial = make.subscription(conn, u, kind="trial", status="pending", started_at=T,
                              expires_at=T + 3 * DAY)
    conn.execute("update subscriptions set status = 'expired', ended_at = %s where id = %s",
                 (T + DAY, trial))
    assert retention_end(conn, u, now=T + 9 * DAY, billing_grace=GRACE) == T - DAY


def test_nothing_moves_out_of_expired(conn):
    import psycopg

    u = make.user(conn)
    sub = make.subscription(conn, u, status="expired", started_at=T, expires_at=T + DAY,
                            ended_at=T + DAY)
    with pytest.raises(psycopg.errors.CheckViolation, match="out of expired"), conn.transaction():
        conn.execute("update subscriptions set status = 'active', ended_at = null, "
                     "access_key = gen_random_uuid() where id = %s", (sub,))
    conn.execute("update subscriptions set auto_renew = true where id = %s", (sub,))  # not a move


def test_retention_end_is_the_end_of_the_last_window(conn):
    u = make.user(conn)
    end = T + 30 * DAY
    make.subscription(conn, u, status="expired", started_at=T, expires_at=end, ended_at=end)
    assert retention_end(conn, u, now=end + 20 * DAY, billing_grace=GRACE) == end + 7 * DAY
    assert retention_end(conn, u, now=end, billing_grace=GRACE) == end


def test_retention_end_of_a_user_never_entitled_is_their_first_recording(conn):
    u = make.user(conn)
    make.recording(conn, u, has_audio=False, created_at=T + DAY)
    make.recording(conn, u, has_audio=False, created_at=T)
    assert retention_end(conn, u, now=T + 9 * DAY, billing_grace=GRACE) == T


def test_windows_name_every_source(conn):
    owner, u = make.user(conn), make.user(conn)
    make.subscription(conn, owner, started_at=T, expires_at=T + 30 * DAY)
    make.family(conn, owner, u, added_at=T)
    make.sponsorship(conn, u, granted_at=T)
    sources = {w.source for w in windows(conn, u, billing_grace=GRACE)}
    assert sources == {"family", "sponsorship"}


# --- property: the SQL agrees with a plain reading of the spec -------------------------------

hours = st.integers(min_value=-24 * 800, max_value=24 * 800).map(lambda h: T + timedelta(hours=h))
seconds = st.sampled_from([-S, 0 * S, S])


@st.composite
def worlds(draw):
    users = [1, 2, 3]
    subs, events, members, grants = [], [], [], []
    next_id = 1
    for u in users:
        current_taken = False
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["trial", "paid"]))
            statuses = ["expired"] + ([] if current_taken else ["pending", "active", "cancelled"]
                                      + (["grace"] if kind == "paid" else []))
            status = draw(st.sampled_from(statuses))
            current_taken |= status != "expired"
            start = draw(hours)
            expires = start + timedelta(hours=draw(st.integers(0, 24 * 60)))
            ended = expires + timedelta(hours=draw(st.integers(-48, 48))) if status == "expired" else None
            if ended is not None and ended < start:
                ended = start
            reached_active = (status in ("active", "grace", "cancelled")
                              or (status == "expired" and draw(st.booleans())))
            subs.append(spec.Sub(next_id, u, kind, status, start, expires, ended,
                                 auto_renew=draw(st.booleans()), reached_active=reached_active))
            if draw(st.booleans()):
                events.append(spec.Event(next_id, u, draw(st.sampled_from(
                    ["expired", "cancelled", "converted", "refunded", "revoked"])), draw(hours)))
            next_id += 1
    for member in users:
        if draw(st.booleans()):
            owner = draw(st.sampled_from([x for x in users if x != member]))
            added = draw(hours)
            removed = draw(st.none() | hours.filter(lambda h, a=added: h >= a))
            members.append(spec.Member(owner, member, added, removed))
        if draw(st.booleans()):
            granted = draw(hours)
            grants.append(spec.Grant(member, granted, draw(st.none() | hours.filter(
                lambda h, g=granted: h >= g))))
    return spec.World(subs, events, members, grants)


def _insert(conn, world):
    ids = {u: make.user(conn) for u in (1, 2, 3)}
    sub_ids = {}
    for s in world.subs:
        assert s.first_period == 30 * DAY  # the factories' plan
        sub_ids[s.id] = make.subscription(conn, ids[s.user], kind=s.kind, status=s.status,
                                          started_at=s.started_at, expires_at=s.expires_at,
                                          ended_at=s.ended_at, auto_renew=s.auto_renew,
                                          reached_active=s.reached_active)
    for e in world.events:
        make.event(conn, sub_ids[e.subscription], ids[e.user], e.type, e.created_at)
    for m in world.members:
        make.family(conn, ids[m.owner], ids[m.member], added_at=m.added_at, removed_at=m.removed_at)
    for g in world.grants:
        make.sponsorship(conn, ids[g.user], granted_at=g.granted_at, revoked_at=g.revoked_at)
    return ids


def _edges(world):
    for s in world.subs:
        yield from (s.started_at, s.expires_at, s.expires_at + GRACE)
        if s.ended_at:
            yield s.ended_at + 7 * DAY
        yield spec.add_years(s.started_at, 2)
    for e in world.events:
        yield from (e.created_at, e.created_at + 7 * DAY)
    for m in world.members:
        yield m.added_at
        if m.removed_at:
            yield m.removed_at
    for g in world.grants:
        yield g.granted_at
        if g.revoked_at:
            yield g.revoked_at


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds(), data=st.data())
def test_sql_agrees_with_a_plain_reading_of_the_spec(conn, world, data):
    edges = list(_edges(world))
    at = data.draw(st.sampled_from(edges) if edges else hours) + data.draw(seconds)
    with conn.transaction(force_rollback=True):
        ids = _insert(conn, world)
        for u, db_id in ids.items():
            assert access(conn, db_id, at) == spec.access(world, u, at, GRACE), (u, at)
            assert retention(conn, db_id, at) == spec.retention(world, u, at, GRACE), (u, at)
            # retention_until: the first moment after ``at`` where retention stops holding
            state = retention_state(conn, db_id, now=at, billing_grace=GRACE)
            if state.holds and state.holds_until is not None:
                assert retention(conn, db_id, state.holds_until - SECOND)
                assert not retention(conn, db_id, state.holds_until)
                assert not spec.retention(world, u, state.holds_until, GRACE)
