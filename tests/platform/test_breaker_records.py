"""Circuit-breaker transitions in the database: every process's breakers visible to the console."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from lapse.platform import db
from lapse.platform.breaker import CircuitBreaker
from lapse.platform.config import load_settings
from lapse.platform.workers import process_name
from tests.conftest import ROOT

OPEN_IN_A_CHILD = """
from lapse.platform.breaker import CircuitBreaker
CircuitBreaker("telegram", threshold=1).failed()
"""


def rows(pool: Any, sql: str) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(sql).fetchall()


def test_each_process_writes_its_own_row_per_port(pool, database):
    CircuitBreaker("telegram", threshold=1).failed()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")} | {
        "DATABASE_URL": database, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", OPEN_IN_A_CHILD], env=env, check=True, cwd=ROOT)
    found = rows(pool, "select port, worker, state, failures from breaker_states order by worker")
    assert len(found) == 2 and {r["state"] for r in found} == {"open"}
    assert process_name() in {r["worker"] for r in found}


def test_calls_that_change_nothing_write_nothing(pool):
    breaker = CircuitBreaker("crypto_pay", threshold=3)
    for _ in range(5):
        breaker.succeeded()
    breaker.failed()
    breaker.failed()  # still closed: 2 of 3
    assert rows(pool, "select * from breaker_transitions") == []
    breaker.failed()
    assert [(r["from_state"], r["to_state"], r["failures"]) for r in rows(
        pool, "select * from breaker_transitions")] == [("closed", "open", 3)]


def test_an_unreachable_database_never_fails_the_guarded_call(pool, caplog):
    unreachable = db.make_pool("postgresql://lapse@127.0.0.1:9/none", load_settings(), size=1,
                               poisoning=True)
    previous = db.install_pool(unreachable)
    try:
        breaker = CircuitBreaker("panel:down", threshold=1)
        breaker.failed()  # the write fails after the pool's timeout; the breaker still opens
        assert breaker.state == "open"
    finally:
        db.install_pool(previous)
        unreachable.close()
    assert "not recorded in the database" in caplog.text


@pytest.fixture(autouse=True)
def _no_leftover_gauge_labels() -> Any:
    yield
    from lapse.platform.breaker import STATE

    for port in ("telegram", "crypto_pay", "panel:down"):
        STATE.labels(port).set(0)


def test_a_late_write_of_an_older_transition_does_not_overwrite_a_newer_state(pool):
    from datetime import UTC, datetime

    from lapse.platform import clock
    from lapse.platform.breaker import record_in_database

    later, earlier = datetime(2026, 6, 10, 12, 1, tzinfo=UTC), datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    try:
        clock.override(later, changes_state=False, allowed=True)
        record_in_database("telegram", "closed", "open", 5)
        clock.override(earlier, changes_state=False, allowed=True)
        record_in_database("telegram", "half_open", "closed", 0)  # decided first, written last
    finally:
        clock.override(None, changes_state=False, allowed=True)
    [row] = rows(pool, "select state, changed_at from breaker_states")
    assert row["state"] == "open" and row["changed_at"] == later
    assert len(rows(pool, "select * from breaker_transitions")) == 2
