"""The console in a real browser: headless Chromium (Debian's ``chromium``) through Playwright.

Never ``playwright install``: the browser is the system's, given by ``executable_path``.
Without Chromium this test is skipped and says why; the TestClient tests still run.
Screenshots go under the test's tmp_path.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import eventually
from tests.operator import support
from tests.support.factories import given

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def served(pool, world, stub_broker) -> Iterator[str]:
    """The console on a free loopback port, served by uvicorn in a thread."""
    import uvicorn

    from lapse.operator.web.app import create_app
    from lapse.platform.embedded import _free_port

    app = create_app(pool, support.config(), broker=lambda: stub_broker, now=lambda: support.NOW)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=20, what="uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def page(served, tmp_path) -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian's `chromium`; .ci/run installs it): "
                    "the browser test did not run, the TestClient tests did")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
        context = browser.new_context()
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        yield tab
        context.close()
        browser.close()


def requeued(pool) -> list[int]:
    with pool.connection() as conn:
        return [r["id"] for r in conn.execute(
            "select id from dead_letters where requeued_at is not null order by id")]


def test_an_operator_walks_through_the_console(page, served, pool, world, tmp_path):
    shot = 0

    def screenshot(name: str) -> None:
        nonlocal shot
        shot += 1
        page.screenshot(path=str(tmp_path / f"{shot:02d}-{name}.png"), full_page=True)

    page.goto(served + "/")
    assert page.locator("h1").inner_text() == "Does anything need me?"
    assert page.evaluate("typeof window.htmx") == "object"  # the vendored htmx loaded
    assert "sweep_purge's last run failed" in page.locator("#attention").inner_text()
    screenshot("overview")

    # live refresh: a dead letter archived now shows up without a reload (htmx polls every 5 s)
    given(pool, lambda conn: support.dead_letter(conn, user_id=None, exception="KeyError('x')"))
    page.wait_for_function("document.querySelector('#live').innerText.includes('4 open')",
                           timeout=30_000)
    assert page.locator("#dead-groups").inner_text().count("KeyError") == 1

    page.locator("#pause").click()  # live refresh paused, remembered
    assert page.locator("#pause").inner_text() == "Resume live refresh"
    assert page.evaluate("lapsePaused()") is True
    page.locator("#pause").click()
    assert page.evaluate("lapsePaused()") is False

    page.locator("header a", has_text="Dead letters").click()
    page.locator(f'a.dead-letter[href="/dead-letters/{world.dead_ids[0]}"]').click()
    assert "Traceback (most recent call last)" in page.locator("#traceback").inner_text()
    assert "PanelUnavailable('panel down')" in page.locator("#traceback").inner_text()
    screenshot("traceback")

    page.goto(served + "/dead-letters?error=PanelUnavailable")
    page.locator("#bulk-requeue").click()
    assert page.locator("#counted").inner_text() == "2"
    screenshot("dry-run")
    page.locator("#confirm-button").click()  # no token typed: refused
    assert "wrong or missing token" in page.locator("#problem").inner_text()
    assert requeued(pool) == []
    screenshot("refused")
    page.go_back()
    page.locator("#token").fill(support.TOKEN)
    page.locator("#confirm-button").click()
    assert "requeued 2 of 2 counted" in page.locator("#outcome").inner_text()
    assert requeued(pool) == world.dead_ids[:2]
    screenshot("requeued")

    page.locator('header input[name="id"]').fill(str(world.user_id))
    page.locator("header button", has_text="Open user").click()
    assert page.url.endswith(f"/users/{world.user_id}")
    timeline = page.locator("#timeline")
    assert timeline.locator("tr.timeline-payment").count() == 1
    assert timeline.locator("tr.timeline-restore").count() == 1
    assert "yes" in page.locator("#verdict").inner_text()
    screenshot("user")

    page.goto(served + "/charts?days=7")
    points = page.evaluate("""() => [...document.querySelectorAll('svg.chart')].map(svg => ({
        svg: svg instanceof SVGSVGElement,
        series: [...svg.querySelectorAll('g.series')].map(
            g => g.querySelectorAll('circle.point').length)}))""")
    assert len(points) == 6
    assert all(chart["svg"] and chart["series"] and set(chart["series"]) == {7} for chart in points)
    screenshot("charts")
    assert len(list(tmp_path.glob("*.png"))) == shot
