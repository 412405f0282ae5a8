"""Fixtures for the outbox tests: the fake Bot API on loopback installed as the process's Telegram."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lapse.platform.breaker import CircuitBreaker
from lapse.platform.config import reset_settings
from lapse.platform.rate_limits import MemoryStore, RateLimiter
from lapse.ports import telegram
from lapse.ports.fakes import telegram as fake


@pytest.fixture
def bot(monkeypatch) -> Iterator[fake.FakeTelegram]:
    """The fake Bot API, with LAPSE_TELEGRAM_URL/TOKEN pointing at it and a fresh port and limiter
    (its own memory store: no pause or bucket is shared with other tests); all restored after."""
    api = fake.FakeTelegram.start()
    monkeypatch.setenv("LAPSE_TELEGRAM_URL", api.url)
    monkeypatch.setenv("LAPSE_TELEGRAM_TOKEN", fake.TOKEN)
    monkeypatch.setenv("LAPSE_TELEGRAM_TIMEOUT_SECONDS", "2")
    reset_settings()
    limiter = RateLimiter(MemoryStore(), "telegram", rate=1000, per_key_rate=1000)
    port = telegram.TelegramPort(api.url, fake.TOKEN, pause=limiter.pause, timeout=2,
                                 breaker=CircuitBreaker("telegram-outbox-test", threshold=1000))
    previous = telegram.install(port, limiter)
    yield api
    telegram.install(*previous)
    monkeypatch.undo()
    reset_settings()
    api.stop()


def notice_rows(pool: Any, user_id: int | None = None) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(
            "select id, kind, status, attempts, last_error, idempotency_key, next_attempt_at "
            "from notifications where %(user)s::bigint is null or user_id = %(user)s order by id",
            {"user": user_id}).fetchall()
