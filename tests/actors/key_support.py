"""Shared by the key-removal and reconcile tests: a threaded fake panel on loopback and its row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from domain import panels
from lapse.ports.fakes import xui as fake
from tests.support.factories import given

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PREFIX = "LAPSE_TEST_KEYS_PANEL"


@pytest.fixture
def xui() -> Iterator[fake.FakeXui]:
    """A fake 3x-ui panel on its own threaded server (one per test: a fresh port and breaker)."""
    server = fake.FakeXui.start()
    yield server
    server.stop()


@pytest.fixture
def panel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}_TOKEN", fake.TOKEN)
    monkeypatch.setenv("LAPSE_PANEL_TIMEOUT_SECONDS", "2")


def add_panel(pool: Any, server: fake.FakeXui, *, enabled: bool = True) -> panels.Panel:
    """A ``panels`` row for ``server`` with a name of its own (ports and breakers are per name)."""
    name = f"p-{uuid.uuid4().hex[:10]}"

    def build(conn: Any) -> panels.Panel:
        row = panels.add_panel(conn, name, server.url, 1, PREFIX, now=T0)
        return row if enabled else panels.set_enabled(conn, name, False, now=T0)

    return given(pool, build)


def put_key(server: fake.FakeXui, key: str) -> None:
    """Lapse's client for ``key`` on the fake, as activation leaves it."""
    server.put_client(key, uuid_=key, sub_id=key, comment="lapse")


def on_panel(server: fake.FakeXui) -> set[str]:
    return {email for email, c in server.clients.items() if c["comment"] == "lapse"}


def states(pool: Any, key: Any) -> dict[str, str]:
    with pool.connection() as conn:
        return {r["panel"]: r["state"] for r in panels.client_states(conn, key)}
