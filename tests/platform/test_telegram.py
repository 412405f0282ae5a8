"""The Telegram port against the fake Bot API: every answer class, the breaker, the secret token."""

from __future__ import annotations

import logging

import pytest

from lapse.platform.breaker import CircuitBreaker
from lapse.platform.rate_limits import MemoryStore, RateLimiter
from lapse.ports import telegram
from lapse.ports.fakes import telegram as fake
from lapse.ports.telegram import (
    DeliveryUnknown,
    Sent,
    TelegramPort,
    TelegramTokenRefused,
    TryLater,
    Undeliverable,
)
from tests.conftest import eventually


@pytest.fixture
def api():
    server = fake.FakeTelegram.start()
    yield server
    server.stop()


@pytest.fixture
def limiter():
    return RateLimiter(MemoryStore(), "telegram", rate=1000, per_key_rate=1000)


def port(api, limiter, *, token=fake.TOKEN, timeout=2.0, breaker=None, url=None):
    return TelegramPort(url or api.url, token, pause=limiter.pause, timeout=timeout,
                        breaker=breaker or CircuitBreaker("telegram-test", threshold=3))


def test_a_message_is_sent_as_the_bot_api_expects(api, limiter):
    result = port(api, limiter).send_message(42, "Привет <b>you</b>", parse_mode="HTML")
    assert isinstance(result, Sent) and result.message_id >= 1
    [got] = api.delivered()
    assert (got.chat_id, got.text, got.parse_mode, got.status) == (42, "Привет <b>you</b>",
                                                                    "HTML", 200)


@pytest.mark.parametrize(("chats", "reason"), [
    ("blocked", "blocked"), ("deactivated", "deactivated"), ("missing", "chat_not_found")])
def test_a_user_who_cannot_be_reached_is_a_permanent_outcome(api, limiter, chats, reason):
    getattr(api, chats).add(7)
    result = port(api, limiter).send_message(7, "hello")
    assert isinstance(result, Undeliverable)
    assert (result.reason, result.user_unreachable) == (reason, True)
    assert api.delivered() == []


def test_a_message_telegram_refuses_is_permanent_but_the_user_stays_reachable(api, limiter):
    result = port(api, limiter).send_message(7, "")
    assert isinstance(result, Undeliverable) and result.reason == "rejected"
    assert not result.user_unreachable and "message text is empty" in result.description


def test_429_pauses_every_sender_of_the_limiter_for_retry_after(api, limiter, caplog):
    api.faults.append(fake.rate_limited(3))
    result = port(api, limiter).send_message(1, "hello")
    assert "every sender pauses for 3 s" in caplog.text
    assert isinstance(result, TryLater) and result.delay == 3
    assert 2.5 < limiter.pause.remaining() <= 3
    assert limiter.try_acquire(2) > 2.5  # another chat, another sender: it waits too


def test_a_429_without_a_bot_api_body_still_pauses_for_its_retry_after_header(api, limiter):
    from werkzeug import Response

    api.faults.append(lambda: Response("slow down", status=429, headers={"Retry-After": "4"}))
    result = port(api, limiter).send_message(1, "hello")
    assert isinstance(result, TryLater) and result.delay == 4
    assert 3.5 < limiter.pause.remaining() <= 4


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_is_temporary_with_a_backoff_that_grows_with_the_attempt(api, limiter, code):
    api.faults += [fake.server_error(code)] * 2
    sender = port(api, limiter)
    first, third = sender.send_message(1, "a"), sender.send_message(1, "b", attempt=2)
    assert isinstance(first, TryLater) and isinstance(third, TryLater)
    assert (first.delay, third.delay) == (1.0, 4.0) and f"HTTP {code}" in first.problem
    assert limiter.pause.remaining() == 0


def test_a_connection_refused_is_temporary_nothing_was_sent(api, limiter):
    api.stop()
    result = port(api, limiter).send_message(1, "hello")
    assert isinstance(result, TryLater) and "ConnectError" in result.problem


def test_a_timeout_leaves_delivery_unknown_and_the_fake_did_deliver_it(api, limiter):
    api.faults.append(fake.hang(1.0))
    result = port(api, limiter, timeout=0.3).send_message(1, "hello")
    assert isinstance(result, DeliveryUnknown) and "ReadTimeout" in result.problem
    # sending again could deliver twice: the user got the first one
    eventually(lambda: len(api.delivered()) == 1, timeout=5, what="the hung request")


def test_garbage_is_a_clear_outcome_never_a_crash(api, limiter):
    api.faults.append(fake.garbage())
    result = port(api, limiter).send_message(1, "hello")
    assert isinstance(result, DeliveryUnknown)
    assert "not a Bot API answer" in result.problem and "502 Bad Gateway" in result.problem


def test_a_refused_token_raises_without_showing_it(api, limiter):
    with pytest.raises(TelegramTokenRefused, match="HTTP 401 Unauthorized") as raised:
        port(api, limiter, token="999:WRONG-token").send_message(1, "hello")
    assert "WRONG-token" not in str(raised.value)


def test_the_circuit_opens_after_repeated_failures_and_the_service_is_not_hammered(api, limiter):
    sender = port(api, limiter, breaker=CircuitBreaker("telegram-test", threshold=3))
    api.faults += [fake.server_error(503)] * 3
    for _ in range(3):
        assert isinstance(sender.send_message(1, "x"), TryLater)
    result = sender.send_message(1, "x")
    assert isinstance(result, TryLater) and "circuit open" in result.problem
    assert result.delay > 1 and len(api.received) == 3


def test_a_429_or_a_blocked_user_does_not_open_the_circuit(api, limiter):
    sender = port(api, limiter, breaker=CircuitBreaker("telegram-test", threshold=2))
    api.blocked.add(5)
    api.faults += [fake.rate_limited(0)] * 2
    outcomes = [sender.send_message(5, "x") for _ in range(4)]
    assert [type(o).__name__ for o in outcomes] == ["TryLater", "TryLater", "Undeliverable",
                                                    "Undeliverable"]
    assert sender.breaker.state == "closed"


def test_the_token_never_appears_in_logs_outcomes_or_exceptions(api, limiter, caplog):
    caplog.set_level(logging.DEBUG)
    sender = port(api, limiter, timeout=0.3)
    api.blocked.add(3)
    api.faults += [fake.rate_limited(0), fake.server_error(500), fake.garbage(), fake.hang(1.0)]
    outcomes = [sender.send_message(c, "x") for c in (1, 1, 1, 1, 3, 4)]
    api.stop()
    outcomes.append(sender.send_message(1, "x"))
    assert any("HTTP Request: POST" in r.getMessage() for r in caplog.records)  # httpx did log
    # werkzeug's access log is the fake server's (standing in for Telegram's own logs)
    ours = [r.getMessage() for r in caplog.records if r.name != "werkzeug"]
    text = "\n".join(ours + [repr(o) for o in outcomes]
                     + [repr(sender), str(vars(sender))])
    secret = fake.TOKEN.split(":", 1)[1]
    assert secret not in text and "***" in text


def test_the_process_port_needs_a_token(monkeypatch):
    from lapse.platform.config import ConfigError, reset_settings

    monkeypatch.delenv("LAPSE_TELEGRAM_TOKEN", raising=False)
    reset_settings()
    previous = telegram.install(None)
    try:
        with pytest.raises(ConfigError, match="LAPSE_TELEGRAM_TOKEN"):
            telegram.port()
    finally:
        telegram.install(*previous)
        reset_settings()
