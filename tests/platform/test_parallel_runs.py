"""Two test runs against one PostgreSQL server and one Redis database do not collide.

A second pytest session runs while this one holds its template, shared and
cloned databases and has keys in Redis: it must pass, leave all of this run's
databases and keys in place (its start-up cleanup only drops databases of
runs whose advisory lock is free), and drop its own when it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from tests.conftest import (
    REDIS_NAMESPACE,
    ROOT,
    RUN_ID,
    SHARED,
    TEMPLATE,
    database_name,
    run_databases,
)

pytestmark = pytest.mark.slow


def test_database_names_and_the_redis_namespace_carry_the_run_id():
    assert (f"lapse_test_{RUN_ID}_template", f"lapse_test_{RUN_ID}_shared") == (TEMPLATE, SHARED)
    assert database_name("x").startswith(f"lapse_test_{RUN_ID}_x_")
    assert REDIS_NAMESPACE == os.environ["LAPSE_REDIS_NAMESPACE"] == f"lapse-test-{RUN_ID}"


def test_a_second_run_on_the_same_servers_leaves_this_run_alone(database, clean_redis, tmp_path):
    client = redis.Redis.from_url(clean_redis)
    client.set(f"{REDIS_NAMESPACE}:first-run", "here")
    mine = set(run_databases())
    assert {TEMPLATE, SHARED, database.rsplit("/", 1)[1]} <= mine
    report = tmp_path / "second-run-id"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["LAPSE_TEST_SECOND_RUN_REPORT"] = str(report)

    second = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/support/second_run.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 passed" in second.stdout
    other = report.read_text()
    assert other != RUN_ID
    assert set(run_databases()) == mine
    assert client.get(f"{REDIS_NAMESPACE}:first-run") == b"here"
    assert run_databases(other) == []
    assert list(client.scan_iter(match=f"lapse-test-{other}:*")) == []
