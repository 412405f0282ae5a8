"""The ``lapse`` command: exit codes, one clear line for bad input, the clock guard."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import lapse


def one_error_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_lists_every_command():
    result = lapse("--help")
    assert result.returncode == 0
    for command in ("db", "sweep", "audit", "explain", "dlq", "demo"):
        assert command in result.stdout


def test_demo_help_teaches_what_it_does_its_defaults_and_where_its_output_goes():
    result = lapse("demo", "--help", env={"COLUMNS": "200"})  # no line wrapped inside a phrase
    assert result.returncode == 0
    for taught in ("default 2000", "default 30", "default 7", "demo.log", "report.html",
                   "_demo", "lapse web", "--users 200 --days 7"):
        assert taught in result.stdout, taught


def test_the_demo_prints_its_database_url_without_the_password():
    from lapse.operator.demo import _shown

    assert _shown("postgresql://lapse:s3cret@db:5432/x_demo") == \
        "postgresql://lapse:PASSWORD@db:5432/x_demo"
    assert _shown("postgresql://postgres@127.0.0.1:5432/x_demo") == \
        "postgresql://postgres@127.0.0.1:5432/x_demo"


def test_bad_database_url_is_one_line(database):
    line = one_error_line(lapse("audit", "invariants",
                                env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nope"}))
    assert "DATABASE_URL" in line


def test_malformed_database_url_names_the_variable():
    line = one_error_line(lapse("db", "migrate", env={"DATABASE_URL": "mysql://x/y"}))
    assert line.startswith("lapse: error: DATABASE_URL")


def test_unreachable_redis_is_one_line(database):
    line = one_error_line(lapse("sweep", "lapses", env={
        "DATABASE_URL": database, "LAPSE_BROKER": "redis", "REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert "Redis" in line and "unreachable" in line


def test_unknown_sweep_is_one_line(database):
    line = one_error_line(lapse("sweep", "nonsense", env={"DATABASE_URL": database}))
    assert "unknown sweep 'nonsense'" in line and "retention" in line


def test_malformed_now_is_refused(database):
    result = lapse("audit", "invariants", "--now", "yesterday", env={"DATABASE_URL": database})
    assert result.returncode == 2 and "not an ISO 8601 time" in result.stderr
    assert "Traceback" not in result.stderr


def test_now_on_a_state_changing_command_needs_the_override(database):
    env = {"DATABASE_URL": database}
    line = one_error_line(lapse("sweep", "lapses", "--now", "2026-01-01T00:00:00Z", env=env))
    assert "LAPSE_ALLOW_CLOCK_OVERRIDE=1" in line
    assert lapse("sweep", "lapses", "--now", "2026-01-01T00:00:00Z", "--dry-run",
                 env=env).returncode == 0
    allowed = lapse("sweep", "lapses", "--now", "2026-01-01T00:00:00Z",
                    env=env | {"LAPSE_ALLOW_CLOCK_OVERRIDE": "1"})
    assert allowed.returncode == 0, allowed.stderr


def test_sweep_records_its_run(pool, database):
    result = lapse("sweep", "reminders", env={"DATABASE_URL": database})
    assert result.returncode == 0, result.stderr
    assert "read: 0" in result.stdout and "not implemented" not in result.stdout
    done = lapse("sweep", "retention", env={"DATABASE_URL": database})
    assert done.returncode == 0 and "users_scanned: 0" in done.stdout, done.stderr
    with pool.connection() as conn:
        runs = conn.execute("select sweep, status from sweep_runs order by id").fetchall()
    assert runs == [{"sweep": "reminders", "status": "completed"},
                    {"sweep": "retention", "status": "completed"}]


def test_dry_run_changes_nothing(pool, database):
    assert lapse("sweep", "purge", "--dry-run", env={"DATABASE_URL": database}).returncode == 0
    with pool.connection() as conn:
        assert conn.execute("select count(*) as n from sweep_runs").fetchone()["n"] == 0


def test_migrate_is_idempotent_from_the_command_line(database):
    result = lapse("db", "migrate", env={"DATABASE_URL": database})
    assert result.returncode == 0 and result.stdout.strip() == "up to date"


def test_missing_schema_says_to_migrate(database):
    from tests.conftest import create_database, database_name, drop_database

    name = database_name("unmigrated")
    url = create_database(name, template=None)
    try:
        line = one_error_line(lapse("audit", "invariants", env={"DATABASE_URL": url}))
        assert "lapse db migrate" in line
    finally:
        drop_database(name)


def test_audit_invariants_exit_1_with_the_offending_rows(pool, database):
    with pool.connection() as conn:
        conn.execute("alter table subscriptions drop constraint subscriptions_expired_has_no_key")
        conn.execute("insert into users (id) values (41)")
        conn.execute("insert into subscriptions (user_id, kind, status, started_at, expires_at, "
                     "ended_at, access_key) values (41, 'trial', 'expired', '2026-01-01', "
                     "'2026-01-04', '2026-01-04', gen_random_uuid())")
    result = lapse("audit", "invariants", env={"DATABASE_URL": database})
    assert result.returncode == 1
    assert "FAIL  expired_has_no_key" in result.stdout and "user_id=41" in result.stdout
    report = json.loads(lapse("audit", "invariants", "--json",
                              env={"DATABASE_URL": database}).stdout)
    failed = [c["name"] for c in report["checks"] if c["violations"]]
    assert failed == ["expired_has_no_key"]


def test_explain_shows_sources_and_refuses_unknown_users(pool, database):
    with pool.connection() as conn:
        conn.execute("insert into users (id) values (5)")
        conn.execute("insert into sponsorships (user_id, sponsor, granted_at, revoked_at) "
                     "values (5, 'school', '2026-01-01Z', '2026-02-01Z')")
    env = {"DATABASE_URL": database}
    shown = lapse("explain", "5", "--now", "2026-01-15T00:00:00Z", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "retention: yes" in shown.stdout and "access:    no" in shown.stdout
    assert "sponsorship" in shown.stdout and "next change of a source: 2026-02-01" in shown.stdout
    assert "next: retention ends at 2026-02-01T00:00:00+00:00; then tag_recordings" in shown.stdout
    after = lapse("explain", "5", "--now", "2026-03-01T00:00:00Z", env=env).stdout
    assert "recordings: 0 with audio" in after and "no retention and no audio kept" in after
    assert "no user with id 99" in one_error_line(lapse("explain", "99", env=env))


@pytest.mark.parametrize("args", [["dlq", "show", "0"], ["explain", "-3"]])
def test_non_positive_ids_are_refused(args, database):
    result = lapse(*args, env={"DATABASE_URL": database})
    assert result.returncode == 2 and "positive integer" in result.stderr


def test_the_demo_runs_the_real_sweeps_and_ends_clean(database, s3_server):
    from tests.conftest import drop_database

    env = {"DATABASE_URL": database, "LAPSE_S3_ENDPOINT_URL": s3_server.url}
    try:
        result = lapse("demo", "--users", "30", "--days", "2", env=env, timeout=300)
    finally:
        drop_database(database.rsplit("/", 1)[1] + "_demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tagged for deletion" in result.stdout and "S3 agrees with the database" in result.stdout
    assert "all audits pass: invariants hold, no leaks past the alert age" in result.stdout
