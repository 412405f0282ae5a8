"""``lapse audit leaks`` (R8), ``lapse audit s3`` (R9) and ``lapse sweep retention --dry-run`` as an operator runs them."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from tests.support import factories as make
from tests.support.cli import lapse

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)


def world(pool, store=None):
    """An entitled user, a trial-ender leaking for 30 h, a paid user leaking for 2 h, an unapplied batch."""
    with pool.connection() as conn:
        kept, old, fresh, pending = (make.user(conn) for _ in range(4))
        make.subscription(conn, kept, started_at=NOW - DAY, expires_at=NOW + 20 * DAY)
        make.subscription(conn, old, kind="trial", status="expired", started_at=NOW - 4 * DAY,
                          expires_at=NOW - 30 * HOUR, ended_at=NOW - 30 * HOUR)
        make.subscription(conn, fresh, status="expired", started_at=NOW - 40 * DAY,
                          expires_at=NOW - 7 * DAY - 2 * HOUR, ended_at=NOW - 7 * DAY - 2 * HOUR)
        recs = {u: make.recording(conn, u, created_at=NOW - 2 * DAY) for u in (kept, old, fresh)}
        conn.execute("insert into tagging_batches (user_id, action, keys, created_at) "
                     "values (%s, 'tag', array['audio/p'], %s)", (pending, NOW - 3 * HOUR))
        conn.commit()
        keys = {u: conn.execute("select audio_key from recordings where id = %s",
                                (r,)).fetchone()["audio_key"] for u, r in recs.items()}
    if store is not None:
        for key in keys.values():
            store.put(key, b"x")
    return kept, old, fresh, keys


def test_leaks_table_reports_days_history_and_unapplied_batches_and_alerts_past_max_age(
        pool, database):
    _, old, fresh, _ = world(pool)
    env = {"DATABASE_URL": database}
    result = lapse("audit", "leaks", "--now", NOW.isoformat(), env=env)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "leaked users: 2 (2 recordings)" in out
    assert "2026-06-08               3        2   66.667" in out
    assert "ever_trial           1" in out and "paid_ended_lt_30d    1" in out
    assert "not applied in S3 (counted as leaks): 1" in out and "PAST THE ALERT AGE" in out
    relaxed = lapse("audit", "leaks", "--now", NOW.isoformat(), "--max-age", "31h", env=env)
    assert relaxed.returncode == 0 and "within the alert age" in relaxed.stdout


def test_leaks_as_json_csv_and_prometheus(pool, database):
    _, old, fresh, _ = world(pool)
    env, at = {"DATABASE_URL": database}, NOW.isoformat()
    report = json.loads(lapse("audit", "leaks", "--now", at, "--format", "json", env=env).stdout)
    assert report["leaked_user_ids"] == [old, fresh] and report["unapplied_batches"][0]["keys"] == 1
    assert report["oldest_leak_age_hours"] == 30.0 and report["too_old"] is True
    rows = list(csv.DictReader(io.StringIO(
        lapse("audit", "leaks", "--now", at, "--format", "csv", env=env).stdout)))
    assert {"section": "day", "key": "2026-06-08", "new_with_audio": "3", "leaked": "2",
            "leak_percent": "66.667"} in rows
    metrics = lapse("audit", "leaks", "--now", at, "--format", "prometheus", env=env).stdout
    assert "lapse_leaked_recordings 2.0" in metrics and "lapse_unapplied_tagging_batches 1.0" in metrics
    assert "lapse_oldest_leak_age_seconds 108000.0" in metrics


def test_bad_audit_input_is_one_line_and_exit_2(database):
    result = lapse("audit", "leaks", "--max-age", "soon", env={"DATABASE_URL": database})
    assert result.returncode == 2 and "not a duration" in result.stderr


def test_retention_dry_run_prints_what_it_would_do_and_changes_nothing(pool, database):
    world(pool)
    env = {"DATABASE_URL": database, "LAPSE_ALLOW_CLOCK_OVERRIDE": "1"}
    result = lapse("sweep", "retention", "--dry-run", "--now", NOW.isoformat(), env=env)
    assert result.returncode == 0, result.stderr
    assert "tag: 2" in result.stdout and "apply: 1" in result.stdout
    with pool.connection() as conn:
        assert conn.execute("select count(*) as n from recordings where has_audio").fetchone()["n"] == 3
        assert conn.execute("select count(*) as n from sweep_runs").fetchone()["n"] == 0


def test_the_retention_sweep_from_the_command_line_tags_and_the_s3_audit_agrees(
        pool, database, store, s3_server):
    kept, old, fresh, keys = world(pool, store)
    env = {"DATABASE_URL": database, "LAPSE_ALLOW_CLOCK_OVERRIDE": "1",
           "LAPSE_S3_ENDPOINT_URL": s3_server.url, "LAPSE_S3_BUCKET": store.bucket}
    store.put("audio/p", b"x")
    drift = lapse("audit", "s3", env=env)
    assert drift.returncode == 0, drift.stdout + drift.stderr  # the pending batch is not drift yet
    swept = lapse("sweep", "retention", "--now", NOW.isoformat(), env=env)
    assert swept.returncode == 0, swept.stderr
    assert "follow-up ran: 3" in swept.stdout
    assert store.inspect(keys[old]).tagged and store.inspect(keys[fresh]).tagged
    assert not store.inspect(keys[kept]).tagged and store.inspect("audio/p").tagged
    assert lapse("audit", "leaks", "--now", NOW.isoformat(), env=env).returncode == 0
    store.client.delete_object(Bucket=store.bucket, Key=keys[kept])
    report = json.loads(lapse("audit", "s3", "--sample", "10", "--json", env=env).stdout)
    assert report["drift"] == {"audio_object_missing": 1} and report["ok"] is False
