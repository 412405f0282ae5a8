"""``lapse web``: the real command serves the console on 127.0.0.1 by default."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from lapse.operator.cli import _parser
from lapse.platform.embedded import _free_port
from tests.conftest import ROOT, eventually
from tests.operator import support
from tests.support.processes import stop_process_groups


def test_it_listens_on_loopback_unless_told_otherwise():
    assert _parser().parse_args(["web"]).host == "127.0.0.1"
    assert _parser().parse_args(["web", "--host", "0.0.0.0", "--port", "9000"]).port == 9000


def test_lapse_web_serves_the_console_read_only_without_a_token(pool, world, database, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env |= {"DATABASE_URL": database, "LAPSE_BROKER": "stub"}
    env.pop("LAPSE_WEB_TOKEN", None)
    with open(tmp_path / "web.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "lapse.operator.cli", "web", "--port",
                                    str(port)], cwd=ROOT, env=env, stdout=log, stderr=log,
                                   start_new_session=True)
        try:
            def overview() -> httpx.Response | None:
                assert process.poll() is None, (tmp_path / "web.log").read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/overview.json", timeout=5)
                except httpx.TransportError:
                    return None

            answer = eventually(overview, timeout=30, what="lapse web to answer")
            assert answer.status_code == 200 and answer.json()["dead_letters"]["open"] == 3
            refused = httpx.post(f"http://127.0.0.1:{port}/dead-letters/bulk.json",
                                 headers={"authorization": f"Bearer {support.TOKEN}"},
                                 data={"action": "purge", "counted": "3", "max_id": "99"})
            assert refused.status_code == 403 and "read-only" in refused.text
        finally:
            stop_process_groups([process], grace=10)
