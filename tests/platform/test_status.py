"""``lapse status``: exit 1 for each condition it watches, 0 when all is well (SPEC §7 Operator console).

Each test starts from a healthy database (every built sweep succeeded a
minute ago, one worker beating) and plants one problem; the command runs as
an operator runs it, in a subprocess, with ``--now``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lapse.flows.sweeps import SWEEPS
from lapse.platform.config import settings
from tests.conftest import eventually
from tests.support import factories as make
from tests.support.cli import lapse

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def healthy(pool: Any, now: datetime = NOW) -> None:
    with pool.connection() as conn:
        for name, sweep in SWEEPS.items():
            if sweep.body is not None:
                conn.execute("insert into sweep_runs (sweep, started_at, finished_at, status, clock) "
                             "values (%s, %s, %s, 'completed', %s)",
                             (name, now - 2 * MINUTE, now - MINUTE, now - 2 * MINUTE))
        conn.execute("insert into worker_heartbeats (worker, hostname, pid, broker, started_at, "
                     "beat_at) values ('host:1', 'host', 1, 'postgres', %s, %s)",
                     (now - DAY, now - 10 * timedelta(seconds=1)))
        conn.commit()


def status(database: str, *args: str, now: datetime = NOW) -> Any:
    return lapse("status", "--now", now.isoformat(), *args, env={"DATABASE_URL": database})


def findings(database: str, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = status(database, "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def attention(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["kind"], f["subject"]) for f in found if f["severity"] == "attention"]


def test_all_well_exits_0_with_one_screen(pool, database):
    healthy(pool)
    result = status(database)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all well" in result.stdout.splitlines()[0]
    assert len(result.stdout.splitlines()) < 40


def test_json_shape(pool, database):
    healthy(pool)
    report = json.loads(status(database, "--json").stdout)
    assert set(report) >= {"now", "since", "needs_attention", "findings", "sweeps", "dead_letters",
                           "queues", "workers", "leaks", "breakers", "broadcasts"}
    assert report["needs_attention"] is False and report["now"] == NOW.isoformat()
    assert report["since"] == (NOW - DAY).isoformat()
    fast = next(s for s in report["sweeps"] if s["sweep"] == "fast_expiry")
    assert fast["lag_seconds"] == 60.0 and fast["overdue"] is False and fast["cron"] == "* * * * *"
    assert {q["kind"] for q in report["queues"]} <= {"ready", "delayed", "dead"}
    assert report["workers"][0]["stale"] is False
    assert report["broadcasts"] is None  # no broadcasts table in this schema


def test_an_overdue_sweep_exits_1(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        conn.execute("delete from sweep_runs where sweep = 'fast_expiry'")
        conn.execute("insert into sweep_runs (sweep, started_at, finished_at, status, clock) "
                     "values ('fast_expiry', %s, %s, 'completed', %s)",
                     (NOW - 7 * MINUTE, NOW - 7 * MINUTE, NOW - 7 * MINUTE))
        conn.commit()
    code, found = findings(database)
    assert code == 1 and attention(found) == [("sweep_overdue", "fast_expiry")]
    with pool.connection() as conn:  # a minute sweep may lag one cadence plus 5 minutes
        conn.execute("update sweep_runs set finished_at = %s where sweep = 'fast_expiry'",
                     (NOW - 6 * MINUTE,))
        conn.commit()
    assert status(database).returncode == 0


def test_a_daily_sweep_is_overdue_only_past_its_cadence_and_slack(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        conn.execute("update sweep_runs set finished_at = %s where sweep = 'purge'", (NOW - 25 * HOUR,))
        conn.commit()
    assert status(database).returncode == 0
    with pool.connection() as conn:
        conn.execute("update sweep_runs set finished_at = %s where sweep = 'purge'", (NOW - 27 * HOUR,))
        conn.commit()
    assert attention(findings(database)[1]) == [("sweep_overdue", "purge")]


def test_a_failing_sweep_exits_1(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        conn.execute("insert into sweep_runs (sweep, started_at, finished_at, status, clock, error) "
                     "values ('reconcile', %s, %s, 'failed', %s, 'RuntimeError(boom)')",
                     (NOW - 30 * timedelta(seconds=1), NOW - 20 * timedelta(seconds=1), NOW))
        conn.commit()
    code, found = findings(database)
    assert code == 1 and attention(found) == [("sweep_failing", "reconcile")]
    assert "RuntimeError(boom)" in next(f["text"] for f in found if f["kind"] == "sweep_failing")


def test_a_new_dead_letter_exits_1_until_it_is_older_than_since(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        conn.execute("insert into dead_letters (message_id, broker, queue_name, actor_name, reason, "
                     "first_failed_at, last_failed_at) values ('m-1', 'redis', 'retention', "
                     "'tag_recordings', 'retries_exhausted', %s, %s)", (NOW - 2 * HOUR, NOW - HOUR))
        conn.commit()
    code, found = findings(database)
    assert code == 1 and attention(found) == [("dead_letters", "")]
    assert "tag_recordings" in found[0]["text"]
    code, found = findings(database, "--since", (NOW - 30 * MINUTE).isoformat())
    assert code == 0 and [f["kind"] for f in found] == ["dead_letters"]  # info: still archived


def test_a_stale_heartbeat_exits_1_and_a_stopped_worker_does_not(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        conn.execute("update worker_heartbeats set beat_at = %s", (NOW - 5 * MINUTE,))
        conn.commit()
    code, found = findings(database)
    assert code == 1 and ("worker_stale", "host:1") in attention(found)
    with pool.connection() as conn:
        conn.execute("update worker_heartbeats set stopped_at = beat_at")
        conn.commit()
    code, found = findings(database)
    assert code == 0 and [f["kind"] for f in found] == ["no_worker"]


def test_a_real_worker_beats_and_says_when_it_stopped(pool):
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    from lapse.platform.workers import WorkerHeartbeat, process_name

    broker = StubBroker(middleware=[WorkerHeartbeat("stub", interval=0.2)])
    broker.declare_queue("probe")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        def beats() -> list[Any]:
            with pool.connection() as conn:
                return conn.execute("select * from worker_heartbeats").fetchall()
        first = eventually(beats, what="the first heartbeat")[0]
        eventually(lambda: beats()[0]["beat_at"] > first["beat_at"], what="a second heartbeat")
    finally:
        worker.stop()
    [row] = beats()
    assert row["worker"] == process_name() and row["queues"] == ["probe"]
    assert row["stopped_at"] is not None and row["broker"] == "stub"


def test_an_open_breaker_written_by_a_real_breaker_exits_1_and_closing_it_clears_it(pool, database):
    from lapse.platform.breaker import CircuitBreaker, CircuitOpen
    from lapse.platform.workers import process_name

    healthy(pool, now=datetime.now(UTC))
    breaker = CircuitBreaker("panel:status-test", threshold=2, cooldown=0.0)
    breaker.failed()
    assert status(database, now=datetime.now(UTC)).returncode == 0  # one failure: still closed
    breaker.failed()
    code, found = findings_now(database)
    assert code == 1 and attention(found) == [("breaker_open", "panel:status-test")]
    assert process_name() in found[0]["text"]
    breaker.before_call()  # cooled down: this call is the half-open probe
    with pytest.raises(CircuitOpen):
        breaker.cooldown = 60.0
        breaker.before_call()
    breaker.succeeded()
    assert findings_now(database)[0] == 0
    with pool.connection() as conn:
        moves = [(r["from_state"], r["to_state"]) for r in conn.execute(
            "select * from breaker_transitions order by id")]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def findings_now(database: str) -> tuple[int, list[dict[str, Any]]]:
    result = lapse("status", "--json", env={"DATABASE_URL": database})
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def test_a_leak_past_the_alert_age_exits_1_and_a_young_one_does_not(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        leaking = make.user(conn)
        trial = make.subscription(conn, leaking, kind="trial", status="expired",
                                  started_at=NOW - 5 * DAY, expires_at=NOW - 20 * HOUR,
                                  ended_at=NOW - 20 * HOUR)
        make.recording(conn, leaking, created_at=NOW - 4 * DAY)
        conn.commit()
    code, found = findings(database)
    assert code == 0 and [(f["kind"], f["severity"]) for f in found] == [("leaks", "info")]
    with pool.connection() as conn:  # the alert age is 26 h
        conn.execute("update subscriptions set expires_at = %(at)s, ended_at = %(at)s where id = %(id)s",
                     {"at": NOW - 30 * HOUR, "id": trial})
        conn.commit()
    code, found = findings(database)
    assert code == 1 and attention(found) == [("leaks", "")]


def test_an_unapplied_batch_past_the_alert_age_exits_1(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        user = make.user(conn)
        conn.execute("insert into tagging_batches (user_id, action, keys, created_at) "
                     "values (%s, 'tag', array['audio/x'], %s)", (user, NOW - 27 * HOUR))
        conn.commit()
    code, found = findings(database)
    assert code == 1 and attention(found) == [("leaks", "")] and "1 unapplied" in found[0]["text"]


def test_an_old_message_waiting_in_a_queue_needs_attention(pool):
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.message import Message

    from lapse.operator.status import collect_status

    healthy(pool)
    broker = StubBroker()
    broker.declare_queue("retention")
    message = Message(queue_name="retention", actor_name="tag_recordings", args=(1,), kwargs={},
                      options={}, message_timestamp=int((NOW - HOUR).timestamp() * 1000))
    broker.enqueue(message)
    report = collect_status(pool, now=NOW, since=NOW - DAY, broker=broker)
    ready = next(q for q in report.queues if q["queue"] == "retention" and q["kind"] == "ready")
    assert ready["depth"] == 1 and ready["oldest_age_seconds"] == 3600.0
    assert [(f.kind, f.subject) for f in report.findings if f.severity == "attention"] == [
        ("queue_age", "retention")]
    patient = replace(settings(), queue_age_alert_seconds=2 * 3600)
    assert collect_status(pool, now=NOW, since=NOW - DAY, broker=broker,
                          config=patient).needs_attention is False


def test_broadcasts_in_progress_are_shown_when_the_table_exists(pool, database):
    healthy(pool)
    with pool.connection() as conn:
        conn.execute("create table broadcasts (id bigint primary key, status text)")
        conn.execute("insert into broadcasts values (1, 'running'), (2, 'done')")
        conn.commit()
    report = json.loads(status(database, "--json").stdout)
    assert [b["id"] for b in report["broadcasts"]] == [1] and report["needs_attention"] is False
