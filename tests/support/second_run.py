"""A tiny test session started by tests/platform/test_parallel_runs.py while its own run is live.

It uses a cloned database and its Redis namespace like any test, and reports
its run id so that the first run can check what it left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import redis

from tests.conftest import REDIS_NAMESPACE, RUN_ID


def test_a_second_run_works_in_its_own_databases_and_namespace(database, clean_redis):
    Path(os.environ["LAPSE_TEST_SECOND_RUN_REPORT"]).write_text(RUN_ID)
    assert RUN_ID in database and RUN_ID in REDIS_NAMESPACE
    with psycopg.connect(database) as conn:
        assert conn.execute("select count(*) from schema_migrations").fetchone() != (0,)
    redis.Redis.from_url(clean_redis).set(f"{REDIS_NAMESPACE}:second-run", "here")
