"""SPEC §6 panel facts: each worker, when it starts, logs in to and lists every enabled panel and
says which is unreachable or refuses the credentials; a panel marked as refusing Lapse's login is
not logged in to (3x-ui locks an address out after five refused logins)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dramatiq
import pytest

from domain import panels
from lapse.flows.panel_check import check_at_start
from lapse.platform.config import reset_settings
from lapse.ports.fakes import xui as fake
from tests.conftest import eventually


@pytest.fixture
def three_panels(pool, monkeypatch):
    """``good`` (token), ``wrong`` (a wrong password) and ``marked`` (already marked refused)."""
    servers = {name: fake.FakeXui.start() for name in ("good", "wrong", "marked")}
    monkeypatch.setenv("LAPSE_PANEL_GOOD_TOKEN", fake.TOKEN)
    for name in ("wrong", "marked"):
        monkeypatch.setenv(f"LAPSE_PANEL_{name.upper()}_USER", servers[name].user)
        monkeypatch.setenv(f"LAPSE_PANEL_{name.upper()}_PASSWORD", "not-the-password")
    now = datetime.now(UTC)
    with pool.connection() as conn:
        for name, server in servers.items():
            server.row = panels.add_panel(conn, name, server.url, 1, f"LAPSE_PANEL_{name.upper()}",
                                          now=now)
        panels.mark_login_refused(conn, servers["marked"].row.id, "refused earlier", now=now)
        conn.commit()
    servers["good"].put_client("k1", comment="lapse")
    yield servers
    for server in servers.values():
        server.stop()


def test_the_check_says_what_each_panel_is_marks_a_refusal_and_leaves_a_marked_panel_alone(
        pool, three_panels, caplog):
    caplog.set_level(logging.INFO, logger="lapse.flows.panel_check")
    checked = {c.name: c for c in check_at_start(pool, timeout=5)}
    assert set(checked) == {"good", "wrong"}
    assert checked["good"].problem is None and checked["good"].lapse_clients == 1
    assert checked["wrong"].login == "refused" and "refuses the credentials" in (
        checked["wrong"].problem or "")
    with pool.connection() as conn:
        assert panels.panel_by_id(conn, three_panels["wrong"].row.id).login_refused
    assert three_panels["marked"].received == [] and three_panels["marked"].login_attempts == 0
    assert three_panels["wrong"].login_attempts == 1  # once, never in a loop
    said = caplog.text
    assert "panel good" in said and "ok, 1 Lapse clients" in said
    assert "panel wrong" in said and "refuses the credentials" in said
    assert "panel marked" in said and "lapse panel check" in said


def test_workers_starting_together_check_a_panel_once(pool, three_panels):
    """`dramatiq actors` starts a process per core: were each to log in, a wrong password would
    cost one refused login per process, and five lock the address out for 15 minutes."""
    import threading

    results: list[list[str]] = []
    start = threading.Barrier(6)

    def worker_boot() -> None:
        start.wait()
        results.append([c.name for c in check_at_start(pool, timeout=5)])

    threads = [threading.Thread(target=worker_boot) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(name for names in results for name in names) == ["good", "wrong"]
    assert three_panels["wrong"].login_attempts == 1
    assert len(three_panels["good"].calls("/clients/list")) == 1


def test_a_worker_runs_the_check_when_it_starts_unless_switched_off(pool, three_panels,
                                                                    monkeypatch):
    import actors

    for setting, expected_lists in (("0", 0), ("1", 1)):
        monkeypatch.setenv("LAPSE_PANEL_CHECK_AT_START", setting)
        reset_settings()
        with pool.connection() as conn:  # the interval between two boots' checks has passed
            conn.execute("update panels set boot_checked_at = null")
            conn.commit()
        before = len(three_panels["good"].calls("/clients/list"))
        worker = dramatiq.Worker(actors.broker, worker_threads=1, queues={"activation"})
        worker.start()
        try:
            if expected_lists:
                eventually(lambda before=before: len(three_panels["good"].calls(
                    "/clients/list")) > before, timeout=10, what="the start-up check's list")
        finally:
            worker.stop()
        middleware = next(m for m in actors.broker.middleware
                          if type(m).__name__ == "PanelCheckAtStart")
        if middleware.thread is not None:
            middleware.thread.join(timeout=10)
        assert len(three_panels["good"].calls("/clients/list")) - before == expected_lists


@pytest.fixture(autouse=True)
def _settings_restored():
    yield
    reset_settings()  # the environment is restored by monkeypatch; the cached settings here
