"""The predecessor's two seed races (SPEC §2) and every lapse path of R2, through the real sweeps and actors.

Bounds are measured from the real end of entitlement (``retention_end``) to
the moment the recordings were tagged, with the simulated clock stepping in
15-minute steps around the end and the sweeps at their production cadences.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import entitlement, lifecycle
from lapse.platform.config import settings
from tests.actors.retention_support import T0, buy, recordings
from tests.support import factories as make
from tests.support.factories import given

DAY, HOUR, MINUTES_15 = timedelta(days=1), timedelta(hours=1), timedelta(minutes=15)
BOUND = HOUR + MINUTES_15  # one hourly sweep_lapses period plus one clock step


def tagged_after_real_end(pool, user):
    """(tagged at, real end of retention) for a user whose recordings are all tagged."""
    rows = recordings(pool, user)
    assert rows and all(not r["has_audio"] for r in rows), rows
    tagged = max(r["deletion_tagged_at"] for r in rows)
    with pool.connection() as conn:
        ended = entitlement.retention_end(conn, user, now=tagged,
                                          billing_grace=settings().billing_grace)
    return tagged, ended


def test_race_a_resubscribed_between_trial_end_and_the_hourly_check_then_cancelled(sim, pool):
    trial_end = T0 + 10 * HOUR
    user = given(pool, lambda c: make.user(c))
    given(pool, lambda c: make.subscription(c, user, kind="trial", started_at=T0 - 2 * DAY,
                                            expires_at=trial_end))
    sim.record(user)
    sim.advance(trial_end + timedelta(minutes=10))  # between the trial's end and the hourly check
    sub = sim.act(lambda c: buy(c, user, now=sim.now))
    paid_end = sim.now + 30 * DAY
    sim.advance(trial_end + 2 * HOUR)  # the hourly check ran at 11:00 and 12:00
    assert recordings(pool, user)[0]["has_audio"]
    sim.advance(trial_end + 5 * DAY, step=6 * HOUR)
    sim.act(lambda c: lifecycle.set_auto_renew(c, sub, False, now=sim.now))  # cancels later
    sim.advance(paid_end - HOUR, step=6 * HOUR)
    sim.advance(paid_end + HOUR, step=MINUTES_15)  # fast expiry ends it
    sim.advance(paid_end + 7 * DAY - 2 * HOUR, step=6 * HOUR)
    assert recordings(pool, user)[0]["has_audio"]  # the 7-day retention grace still holds
    sim.advance(paid_end + 7 * DAY + 3 * HOUR, step=MINUTES_15)
    tagged, ended = tagged_after_real_end(pool, user)
    assert paid_end + 7 * DAY <= ended <= paid_end + 7 * DAY + MINUTES_15
    assert timedelta(0) <= tagged - ended <= BOUND


def test_race_b_entitled_at_the_daily_run_and_lapsed_15_minutes_after_it(sim, pool):
    daily_run = T0 + 2 * DAY + timedelta(hours=1, minutes=30)
    lapse_at = daily_run + MINUTES_15
    user = given(pool, lambda c: make.user(c))
    given(pool, lambda c: make.sponsorship(c, user, granted_at=T0 - DAY, revoked_at=lapse_at))
    sim.record(user)
    sim.advance(daily_run)
    assert (daily_run, "retention") in sim.runs and recordings(pool, user)[0]["has_audio"]
    sim.advance(lapse_at + 3 * HOUR)
    tagged, ended = tagged_after_real_end(pool, user)
    assert ended == lapse_at and timedelta(0) <= tagged - ended <= BOUND


def _trial(c, user, at):
    return make.subscription(c, user, kind="trial", started_at=at - 3 * DAY, expires_at=at)


def _paid(c, user, at, **kw):
    return make.subscription(c, user, started_at=at - 30 * DAY, expires_at=at, **kw)


END = T0 + 2 * DAY  # every scenario's entitlement source ends here (or its lapse happens here)

# name: (rows to build, domain change at END or None, real end of retention)
PATHS = {
    "trial_expiry": (lambda c, u: _trial(c, u, END), None, END),
    "paid_auto_renew_off_expiry": (lambda c, u: _paid(c, u, END), None, END + 7 * DAY),
    "cancelled_expiry": (lambda c, u: _paid(c, u, END, status="cancelled"), None, END + 7 * DAY),
    "grace_expiry": (lambda c, u: _paid(c, u, END - settings().billing_grace, status="grace",
                                        auto_renew=True), None, END + 7 * DAY),
    "grace_auto_renew_off": (
        lambda c, u: _paid(c, u, END - HOUR, status="grace", auto_renew=True),
        lambda c, sub, now: lifecycle.set_auto_renew(c, sub, False, now=now), END + 7 * DAY),
    "operator_revoke": (lambda c, u: _paid(c, u, END + 20 * DAY),
                        lambda c, sub, now: lifecycle.revoke(c, sub, now=now), END + 7 * DAY),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_subscription_lapse_path_ends_tagged_without_the_reconciliation(sim, pool, path):
    build, change, real_end = PATHS[path]
    user = given(pool, lambda c: make.user(c))
    sub = given(pool, lambda c: build(c, user))
    given(pool, lambda c: make.recording(c, user, created_at=T0 - DAY))
    sim.off = {"retention"}
    sim.advance(END - HOUR, step=6 * HOUR)
    sim.advance(END, step=MINUTES_15)
    if change is not None:
        sim.act(lambda c: change(c, sub, sim.now))
    if real_end > END:
        sim.advance(real_end - HOUR, step=6 * HOUR)
        assert recordings(pool, user)[0]["has_audio"], "tagged while still entitled"
    sim.advance(real_end + 2 * HOUR, step=MINUTES_15)
    tagged, ended = tagged_after_real_end(pool, user)
    assert ended == real_end and tagged - ended <= BOUND


def test_family_removal_and_the_owners_lapse_tag_the_members(sim, pool):
    def build(c):
        owner, removed, stays = make.user(c), make.user(c), make.user(c)
        owner_sub = _paid(c, owner, END + 20 * DAY)
        for member in (removed, stays):
            make.family(c, owner, member, added_at=T0 - DAY)
            make.recording(c, member, created_at=T0 - DAY)
        return owner, owner_sub, removed, stays
    owner, owner_sub, removed, stays = given(pool, build)
    sim.off = {"retention"}
    sim.advance(END, step=6 * HOUR)
    sim.act(lambda c: lifecycle.remove_family_member(c, owner, removed, now=sim.now))
    sim.advance(END + 2 * HOUR, step=MINUTES_15)
    tagged, ended = tagged_after_real_end(pool, removed)
    assert ended == END and tagged - ended <= BOUND
    assert recordings(pool, stays)[0]["has_audio"]
    sim.act(lambda c: lifecycle.revoke(c, owner_sub, now=sim.now))  # the owner's lapse
    revoked_at = sim.now
    sim.advance(revoked_at + 2 * HOUR, step=MINUTES_15)
    tagged, ended = tagged_after_real_end(pool, stays)
    assert ended == revoked_at and tagged - ended <= BOUND


def test_sponsorship_revocation_tags_the_user(sim, pool):
    user = given(pool, lambda c: make.user(c))
    sponsorship = sim.act(lambda c: lifecycle.grant_sponsorship(c, user, sponsor="school",
                                                                now=sim.now))
    sim.record(user)
    sim.off = {"retention", "lapses"}  # the revocation's own enqueue, nothing else
    sim.advance(END, step=6 * HOUR)
    sim.act(lambda c: lifecycle.revoke_sponsorship(c, sponsorship, user, now=sim.now))
    tagged, ended = tagged_after_real_end(pool, user)
    assert ended == END and tagged == END
