"""The retention sweeps' own guards, each tested alone: no other lapse path can stand in for it here."""

from __future__ import annotations

from datetime import timedelta

from domain import retention
from lapse.flows import retention_sweeps
from lapse.platform.after_commit import transaction
from lapse.platform.config import settings
from lapse.platform.sweeps import SweepContext
from tests.actors.retention_support import T0, recordings
from tests.support import factories as make
from tests.support.factories import given

DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
NOW = T0 + 10 * DAY


def context(now, *, dry_run=False):
    return SweepContext(now=now, dry_run=dry_run, deadline=float("inf"))


def open_requests(pool):
    with pool.connection() as conn:
        return sorted(r["user_id"] for r in conn.execute("select user_id from tagging_requests"))


def test_sweep_lapses_requests_tagging_for_the_members_of_an_owner_whose_plan_ended(pool, sent):
    """The rows are written directly: no life-cycle transition enqueues, only the sweep."""
    def build(conn):
        owner, member = make.user(conn), make.user(conn)
        make.subscription(conn, owner, status="cancelled", started_at=NOW - 30 * DAY,
                          expires_at=NOW - 30 * MINUTE)
        make.family(conn, owner, member, added_at=NOW - 20 * DAY)
        return owner, member
    owner, member = given(pool, build)
    retention_sweeps.sweep_lapses(pool, context(NOW))
    assert open_requests(pool) == sorted([owner, member])
    assert sorted(m.args[0] for m in sent if m.actor_name == "tag_recordings") == sorted([owner,
                                                                                          member])


def test_sweep_retention_leaves_a_user_alone_inside_the_settle_window(pool):
    ended = NOW - 10 * MINUTE

    def build(conn):
        user = make.user(conn)
        make.subscription(conn, user, kind="trial", started_at=ended - 3 * DAY, expires_at=ended)
        make.recording(conn, user, created_at=ended - DAY)
    given(pool, build)
    assert retention_sweeps.sweep_retention(pool, context(NOW, dry_run=True))["tag"] == 0
    settled = ended + settings().settle + MINUTE
    assert retention_sweeps.sweep_retention(pool, context(settled, dry_run=True))["tag"] == 1


def test_a_purge_takes_only_the_recordings_tagged_before_the_window(pool):
    def build(conn):
        user = make.user(conn)
        old, recent = make.recording(conn, user, created_at=NOW - 60 * DAY), \
            make.recording(conn, user, created_at=NOW - 60 * DAY)
        for recording, tagged in ((old, NOW - 31 * DAY), (recent, NOW - DAY)):
            conn.execute("update recordings set has_audio = false, deletion_tagged_at = %s "
                         "where id = %s", (tagged, recording))
        return user, old
    user, old = given(pool, build)
    with pool.connection() as conn, transaction(conn):
        decision = retention.decide_purge(conn, user, now=NOW, billing_grace=settings().billing_grace,
                                          purge_after=30 * DAY)
    assert (decision.outcome, decision.keys) == ("purged", 1)
    assert [r["id"] for r in recordings(pool, user) if r["audio_purged_at"]] == [old]


def test_a_failed_renewal_costs_no_retention_before_the_renewal_sweep_moves_the_row_to_grace(
        sim, pool):
    """Issue 9, 4a: sweep_lapses enqueues at the end (over-inclusive); tagging must find access."""
    end = T0 + 2 * DAY + 20 * MINUTE
    user = given(pool, lambda c: make.user(c))
    given(pool, lambda c: make.subscription(c, user, auto_renew=True, started_at=end - 30 * DAY,
                                            expires_at=end))
    sim.record(user)
    sim.advance(end + 3 * HOUR, step=HOUR)  # no renewal sweep runs in this simulation
    assert ((end + HOUR).replace(minute=0), "lapses") in sim.runs
    assert recordings(pool, user)[0]["has_audio"]
    with pool.connection() as conn:
        assert retention.state(conn, user, now=sim.now,
                               billing_grace=settings().billing_grace).holds_until == \
            end + settings().billing_grace
