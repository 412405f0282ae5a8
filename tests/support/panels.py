"""Fake 3x-ui panels on loopback registered as ``panels`` rows, for the activation tests."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from domain import panels
from lapse.ports.fakes import xui as fake


@contextmanager
def fake_panels(pool: Any, monkeypatch: Any, count: int = 2) -> Iterator[list[Any]]:
    """``count`` threaded fake panels, each a ``panels`` row (a fresh name: the port's
    circuit breakers are per name and per process) with its token in the environment."""
    servers = [fake.FakeXui.start() for _ in range(count)]
    try:
        with pool.connection() as conn:
            for server in servers:
                name = f"p{uuid.uuid4().hex[:8]}"
                prefix = f"LAPSE_PANEL_{name.upper()}"
                monkeypatch.setenv(f"{prefix}_TOKEN", fake.TOKEN)
                server.row = panels.add_panel(conn, name, server.url, 1, prefix,
                                              now=datetime.now(UTC))
                server.env = {f"{prefix}_TOKEN": fake.TOKEN}
            conn.commit()
        yield servers
    finally:
        for server in servers:
            server.stop()


def adds(server: Any) -> Counter[str]:
    """Add requests the panel received, per key."""
    return Counter(r.body["client"]["email"] for r in server.calls("/clients/add"))


def down(server: Any) -> None:
    """Every request answered 503 from now on."""
    server.inject(fake.status(503), on="", times=10**9)


def back_up(server: Any) -> None:
    """The panel answers again (every injected fault dropped), and this process's circuit
    breaker for it lets the next call through as its half-open probe, as after its cooldown."""
    from lapse.ports import panel as panel_port

    server.clear_faults()
    breaker = panel_port._breakers.get(server.row.name)
    if breaker is not None and breaker.opened_at is not None:
        breaker.opened_at -= breaker.cooldown  # the cooldown has passed


class Flaky:
    """Answers ``share`` of the client calls 503 (before acting), and counts them per key."""

    def __init__(self, server: Any, share: float, seed: int = 7) -> None:
        self.random, self.share = random.Random(seed), share
        self.failed: Counter[str] = Counter()
        self.lock = threading.Lock()
        server.inject(self.answer, on="/clients/", times=10**9)

    def answer(self, request: Any, server: Any) -> Any:
        with self.lock:
            if self.random.random() >= self.share:
                return None
            if "/clients/add" in request.path:
                self.failed[request.get_json()["client"]["email"]] += 1
        return fake.status(503)(request, server)
