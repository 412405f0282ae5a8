"""`lapse demo` end to end: the same seed gives the same numbers, the end state passes every audit,
and no worker logged an unexpected error.

The demo runs as the operator runs it (a subprocess of the real command) on a
small population, twice with one seed, each with its own LAPSE_HOME so each
run's log file can be read afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import drop_database
from tests.support.cli import lapse

pytestmark = pytest.mark.slow

SMALL = ("--users", "100", "--days", "5")
# What the injected faults (503 from the panel, 502 from Crypto Pay) may make an actor raise:
# a retry the simulation schedules. Anything else in a failure line is unexpected.
EXPECTED_FAILURES = {"PanelUnavailable", "NoPanelHoldsKey", "KeyRemovalIncomplete",
                     "CryptoPayUnavailable", "CircuitOpen"}


def run_demo(database: str, s3_url: str, home: Path, *args: str) -> tuple[dict[str, Any], str]:
    env = {"DATABASE_URL": database, "LAPSE_S3_ENDPOINT_URL": s3_url, "LAPSE_HOME": str(home)}
    try:
        result = lapse("demo", *args, "--json", env=env, timeout=600)
    finally:
        drop_database(database.rsplit("/", 1)[1] + "_demo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (home / "demo" / "demo.log").read_text()
    assert str(home / "demo" / "demo.log") in result.stderr, "the demo must say where its logs go"
    return json.loads(result.stdout), log


def unexpected_log_lines(log: str) -> list[str]:
    """ERROR and CRITICAL lines, tracebacks, and failures that no injected fault explains."""
    found = []
    for line in log.splitlines():
        if re.match(r"^\S+ \S+ (ERROR|CRITICAL) ", line) or line.startswith("Traceback"):
            found.append(line)
        failure = re.search(r" failed: (\w+)\(", line)
        if failure and failure.group(1) not in EXPECTED_FAILURES:
            found.append(line)
    return found


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, Any], str]]:
    import moto.server

    from lapse.platform.embedded import _free_port
    from tests.conftest import create_database, database_name

    port = _free_port()
    server = moto.server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    runs = []
    try:
        for n in range(2):
            name = database_name()
            url = create_database(name)
            try:
                runs.append(run_demo(url, f"http://127.0.0.1:{port}",
                                     tmp_path_factory.mktemp(f"demo{n}"), *SMALL, "--seed", "11"))
            finally:
                drop_database(name)
    finally:
        server.stop()
    return runs


def test_the_same_seed_gives_the_same_json(two_runs):
    (first, _), (second, _) = two_runs
    assert first == second


def test_the_end_state_passes_every_audit(two_runs):
    summary, _ = two_runs[0]
    audits = summary["audits"]
    assert audits["ok"]
    assert audits["invariant_violations"] == 0 and set(audits["invariants"].values()) == {"ok"}
    assert audits["leaks_past_alert_age"] == 0 and audits["unapplied_batches"] == 0
    assert audits["s3_drift"] == {} and audits["s3_checked"] > 0
    panel = audits["panel"]
    assert panel["missing_from_panel"] == 0 and panel["orphans_on_panel"] == 0
    assert panel["current_keys"] > 0
    assert summary["numbers"]["dead_letters"] == 0  # a low fault rate costs retries, not messages


def test_the_population_exercises_the_main_capabilities(two_runs):
    """Five days of 100 users: families, sponsorships and renewals need the month (README)."""
    summary, _ = two_runs[0]
    n = summary["numbers"]
    for key in ("users", "trials", "trials_converted", "trials_expired", "plans_by_balance",
                "plans_by_crypto", "plans_in_app", "topups", "recordings_kept",
                "recordings_tagged", "sessions_refused_by_gate"):
        assert n[key] > 0, key
    assert sum(summary["faults_injected"].values()) > 0


def test_no_worker_logged_an_unexpected_error(two_runs):
    for _, log in two_runs:
        assert "finalize_purchase" in log and "sweep_fast_expiry" in log  # the workers did log
        assert unexpected_log_lines(log) == []


def test_the_log_scan_catches_an_error_line():
    planted = ("2026-01-05 10:00:00,000 ERROR lapse.operator.simulation tag_recordings(3,) "
               "failed unexpectedly\n"
               "2026-01-05 10:00:00,000 WARNING lapse.operator.simulation x(1,) failed: "
               "ZeroDivisionError('boom')\n"
               "2026-01-05 10:00:00,000 WARNING lapse.operator.simulation y(1,) failed: "
               "PanelUnavailable('panel default: unreachable')\n")
    assert len(unexpected_log_lines(planted)) == 2
