"""Tick claiming and the hourly check of daily sweeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import UnknownSweep
from lapse.flows import sweeps
from lapse.platform.after_commit import transaction

T = datetime(2026, 11, 24, 1, 30, 17, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)


def test_a_tick_is_claimed_once_per_sweep_and_minute(pool, sent):
    sweep = sweeps.get("sweep_retention")
    with pool.connection() as conn:
        for at in (T, T + timedelta(seconds=20), T):
            with transaction(conn):
                sweeps.claim_tick(conn, sweep, minute=at, now=at)
        row = conn.execute("select minute, duplicates from sweep_ticks").fetchone()
    assert row == {"minute": T.replace(second=0), "duplicates": 2}
    assert [(m.actor_name, m.kwargs) for m in sent] == [
        ("sweep_retention", {"tick_minute": "2026-11-24T01:30:00+00:00"})]


def test_a_sweep_runs_once_per_tick(pool):
    first = sweeps.run_sweep(pool, "lapses", now=T, tick_minute=T.replace(second=0),
                             budget_seconds=5)
    again = sweeps.run_sweep(pool, "lapses", now=T, tick_minute=T.replace(second=0),
                             budget_seconds=5)
    assert first == {"candidates": 0, "requested": 0, "already_open": 0}
    assert again == {"duplicate_tick": 1}


def test_unknown_sweep_names_the_known_ones():
    with pytest.raises(UnknownSweep, match="retention"):
        sweeps.get("nope")


def test_daily_sweeps_with_a_dropped_tick_are_caught_up_hourly(pool):
    daily = {"retention", "purge", "reminders"}
    at = datetime(2026, 11, 24, 12, 15, tzinfo=UTC)
    with pool.connection() as conn:
        assert {s.name for s in sweeps.missed_daily_sweeps(conn, now=at)} == daily
    sweeps.run_sweep(pool, "retention", now=at - timedelta(hours=10), budget_seconds=5)
    sweeps.run_sweep(pool, "purge", now=at - timedelta(hours=20), budget_seconds=5)
    with pool.connection() as conn:
        # retention ran after today's 01:30; purge's run predates today's 03:00 slot
        assert {s.name for s in sweeps.missed_daily_sweeps(conn, now=at)} == {"purge", "reminders"}
        conn.execute("insert into sweep_runs (sweep, started_at, clock) values ('purge', %s, %s)",
                     (at - timedelta(minutes=20), at - timedelta(minutes=20)))
        conn.commit()
        # a purge run started 20 minutes ago is still going: do not start another
        assert {s.name for s in sweeps.missed_daily_sweeps(conn, now=at)} == {"reminders"}


def test_cadences_follow_the_spec():
    cron = {name: s.cron for name, s in sweeps.SWEEPS.items()}
    assert cron["lapses"] == "0 * * * *" and cron["retention"] == "30 1 * * *"
    assert cron["purge"] == "0 3 * * *" and cron["auto_renewals"] == "*/10 * * * *"
    assert cron["trial_notifications"] == "*/5 * * * *" and cron["reconcile"] == "*/10 * * * *"
    assert {cron[n] for n in ("fast_expiry", "activations", "crypto_payments", "outbox")} == {
        "* * * * *"}


def test_a_sweep_out_of_budget_records_a_continued_run_and_resends_itself_with_its_cursor(
        pool, sent):
    from tests.support import factories as make

    with pool.connection() as conn:
        users = [make.user(conn) for _ in range(2)]
        for user in users:
            make.recording(conn, user, created_at=T - timedelta(days=3))
        conn.commit()
    counts = sweeps.run_sweep(pool, "retention", now=T, budget_seconds=0)
    assert counts["tag"] == 2
    [tagging_1, tagging_2, again] = sent
    assert {tagging_1.args, tagging_2.args} == {(users[0],), (users[1],)}
    assert again.actor_name == "sweep_retention"
    assert again.kwargs == {"cursor": {"phase": "tag", "after": users[1]}}
    rest = sweeps.run_sweep(pool, "retention", now=T, budget_seconds=60, cursor=again.kwargs["cursor"])
    assert rest["tag"] == 0 and len(sent) == 3  # carried on from the cursor, nothing twice
    with pool.connection() as conn:
        statuses = [r["status"] for r in conn.execute("select status from sweep_runs order by id")]
    assert statuses == ["continued", "completed"]


def test_the_rate_limit_sleeps_to_keep_to_its_rate(monkeypatch):
    from lapse.flows import retention_sweeps

    slept = []
    monkeypatch.setattr(retention_sweeps.time, "sleep", slept.append)
    limiter = retention_sweeps.RateLimiter(per_second=100)
    limiter.acted(500)
    assert len(slept) == 1 and 4.5 < slept[0] <= 5.0


def test_sweep_lapses_keeps_a_watermark_and_rereads_a_15_minute_overlap(pool, sent):
    from tests.support import factories as make

    noon = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    sweeps.run_sweep(pool, "lapses", now=noon, budget_seconds=60)
    with pool.connection() as conn:
        late, too_late, ended_later = make.user(conn), make.user(conn), make.user(conn)
        # revocations that committed after the noon run, stamped before it
        make.sponsorship(conn, late, granted_at=noon - DAY, revoked_at=noon - timedelta(minutes=10))
        make.sponsorship(conn, too_late, granted_at=noon - DAY,
                         revoked_at=noon - timedelta(minutes=20))
        make.sponsorship(conn, ended_later, granted_at=noon - DAY,
                         revoked_at=noon + timedelta(minutes=30))
        conn.commit()
    counts = sweeps.run_sweep(pool, "lapses", now=noon + HOUR, budget_seconds=60)
    assert counts == {"candidates": 2, "requested": 2, "already_open": 0}
    assert sorted(m.args for m in sent) == [(late,), (ended_later,)]
    # outside the overlap: left to the daily reconciliation, which trusts no watermark
    with pool.connection() as conn:
        assert conn.execute("select watermark from sweep_state where sweep = 'lapses'"
                            ).fetchone()["watermark"] == noon + HOUR
