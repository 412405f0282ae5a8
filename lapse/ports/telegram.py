"""The Telegram port: Bot API ``sendMessage`` through httpx, one HTTP attempt per call.

Every call returns a typed outcome and never sleeps, so the caller decides
(record it, or ``raise dramatiq.Retry(delay=...)``):

- ``Sent(message_id)``: Telegram answered ``ok``.
- ``Undeliverable(reason)``: permanent. ``blocked``, ``deactivated``,
  ``forbidden`` (another 403) and ``chat_not_found`` mean the user cannot be
  reached (``user_unreachable``); ``rejected`` means Telegram refused this
  message (another 4xx), the user is fine.
- ``TryLater(delay)``: nothing was delivered. 429 (and the shared pause is set
  for ``retry_after``, so every sender waits), 5xx, a network error before
  the request went out, or an open circuit.
- ``DeliveryUnknown``: the request may have reached Telegram (read timeout, a
  dropped connection, a body Lapse cannot read) and the Bot API has no
  idempotency key: sending again might deliver twice.

A refused bot token raises ``TelegramTokenRefused`` (configuration, not a
message's fate). The token is part of every URL: it is kept out of outcomes,
exception text and logs (httpx logs request URLs at INFO; a filter on its
logger masks the token).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from lapse.platform.breaker import CircuitBreaker, CircuitOpen
from lapse.platform.config import Settings
from lapse.platform.errors import PermanentError
from lapse.platform.rate_limits import Pause, RateLimiter, Store, store_for

logger = logging.getLogger(__name__)

UnreachableReason = Literal["blocked", "deactivated", "forbidden", "chat_not_found"]
DEFAULT_RETRY_AFTER = 5.0  # a 429 whose body names no retry_after (a proxy's)


@dataclass(frozen=True)
class Sent:
    message_id: int


@dataclass(frozen=True)
class Undeliverable:
    reason: UnreachableReason | Literal["rejected"]
    description: str

    @property
    def user_unreachable(self) -> bool:
        return self.reason != "rejected"


@dataclass(frozen=True)
class TryLater:
    delay: float
    problem: str


@dataclass(frozen=True)
class DeliveryUnknown:
    problem: str


SendResult = Sent | Undeliverable | TryLater | DeliveryUnknown


class TelegramTokenRefused(PermanentError):
    """Telegram refused the bot token (401/404): every message would fail; fix LAPSE_TELEGRAM_TOKEN."""


class TelegramPort:
    def __init__(self, base_url: str, token: str, *, pause: Pause, timeout: float = 10.0,
                 breaker: CircuitBreaker | None = None, backoff: float = 1.0,
                 max_backoff: float = 300.0) -> None:
        self._base_url, self._token = base_url.rstrip("/"), _Secret(token)
        self.client = httpx.Client(timeout=httpx.Timeout(timeout))
        self.pause, self.backoff, self.max_backoff = pause, backoff, max_backoff
        self.breaker = breaker or CircuitBreaker("telegram")
        _mask_in_httpx_logs(token)

    def __repr__(self) -> str:
        return "TelegramPort(token=***)"

    def send_message(self, chat_id: int | str, text: str, *, parse_mode: str | None = None,
                     attempt: int = 0) -> SendResult:
        """Send ``text`` to ``chat_id`` once; ``attempt`` (0, 1, …) sets the backoff of TryLater."""
        try:
            self.breaker.before_call()
        except CircuitOpen as error:
            return TryLater(max(error.retry_in, 1.0), str(error))
        body: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if parse_mode is not None:
            body["parse_mode"] = parse_mode
        try:
            response = self.client.post(
                f"{self._base_url}/bot{self._token.value}/sendMessage", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            self.breaker.failed()
            return TryLater(self._backoff(attempt), self._masked(error))
        except httpx.HTTPError as error:
            self.breaker.failed()
            return DeliveryUnknown(self._masked(error))
        return self._outcome(response, attempt)

    def _outcome(self, response: httpx.Response, attempt: int) -> SendResult:
        status, answer = response.status_code, _json(response)
        if status >= 500:
            self.breaker.failed()
            return TryLater(self._backoff(attempt), f"HTTP {status}: {_describe(answer, response)}")
        if status == 429:  # Telegram's, or a proxy's without a Bot API body: slow down either way
            self.breaker.succeeded()
            retry_after = _retry_after(answer or {}, response)
            self.pause.set(retry_after)
            logger.warning("telegram: 429, every sender pauses for %.0f s", retry_after)
            return TryLater(retry_after, f"HTTP 429: {_describe(answer, response)}")
        if answer is None:
            self.breaker.failed()
            return DeliveryUnknown(f"HTTP {status}, not a Bot API answer: {response.text[:200]!r}")
        if status in (401, 404):
            self.breaker.failed()
            raise TelegramTokenRefused(f"Telegram refused the bot token: HTTP {status} "
                                       f"{answer.get('description', '')}; check LAPSE_TELEGRAM_TOKEN")
        self.breaker.succeeded()
        if answer.get("ok") is True and status == 200:
            message_id = (answer.get("result") or {}).get("message_id")
            if isinstance(message_id, int):
                return Sent(message_id)
            return DeliveryUnknown(f"ok without a message_id: {str(answer)[:200]}")
        return _undeliverable(status, str(answer.get("description", "")))

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff * 2 ** max(attempt, 0), self.max_backoff)

    def _masked(self, error: Exception) -> str:
        return f"{type(error).__name__}: {error}".replace(self._token.value, "***")


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and isinstance(answer.get("ok"), bool) else None


def _describe(answer: dict[str, Any] | None, response: httpx.Response) -> str:
    return str(answer.get("description", "")) if answer else repr(response.text[:200])


def _retry_after(answer: dict[str, Any], response: httpx.Response) -> float:
    for value in ((answer.get("parameters") or {}).get("retry_after"),
                  response.headers.get("Retry-After")):
        try:
            if value is not None and float(value) >= 0:
                return float(value)
        except ValueError:
            continue
    return DEFAULT_RETRY_AFTER


def _undeliverable(status: int, description: str) -> Undeliverable:
    lowered = description.lower()
    if status == 403:
        if "blocked by the user" in lowered:
            return Undeliverable("blocked", description)
        if "deactivated" in lowered:
            return Undeliverable("deactivated", description)
        return Undeliverable("forbidden", description)
    if status == 400 and "chat not found" in lowered:
        return Undeliverable("chat_not_found", description)
    return Undeliverable("rejected", f"HTTP {status}: {description}")


class _Secret:
    """Holds the token so that a repr of the port (a debugger, an error reporter) shows ***."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"


class _MaskToken(logging.Filter):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "***"), ()
        return True


def _mask_in_httpx_logs(token: str) -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskToken) and f.token == token for f in httpx_logger.filters):
        httpx_logger.addFilter(_MaskToken(token))


_port: TelegramPort | None = None
_limiter: RateLimiter | None = None
# Telegram counts the requests as they reach it, and the network bunches a few (a slow first
# connection, jitter): sending at 99.5% of the configured limit keeps what it sees under it.
HEADROOM = 0.995


def new_limiter(store: Store, config: Settings) -> RateLimiter:
    """The Telegram limits of ``config`` (with the headroom) on ``store``."""
    return RateLimiter(store, "telegram", rate=config.telegram_rate * HEADROOM,
                       per_key_rate=config.telegram_chat_rate, burst=config.telegram_burst)


def rate_limiter() -> RateLimiter:
    """The limiter every sender shares (LAPSE_TELEGRAM_RATE_PER_SECOND, …_CHAT_RATE_PER_SECOND, …_BURST)."""
    global _limiter
    if _limiter is None:
        from lapse.platform.config import settings

        config = settings()
        _limiter = new_limiter(store_for(config), config)
    return _limiter


def port() -> TelegramPort:
    """The process's Telegram client, from LAPSE_TELEGRAM_URL and LAPSE_TELEGRAM_TOKEN."""
    global _port
    if _port is None:
        from lapse.platform.config import ConfigError, settings

        config = settings()
        if not config.telegram_token:
            raise ConfigError("LAPSE_TELEGRAM_TOKEN", "required to send notifications")
        _port = TelegramPort(config.telegram_url, config.telegram_token,
                             pause=rate_limiter().pause, timeout=config.telegram_timeout)
    return _port


def install(new_port: TelegramPort | None, limiter: RateLimiter | None = None
            ) -> tuple[TelegramPort | None, RateLimiter | None]:
    """Use ``new_port`` and ``limiter`` as the process's (tests); return the previous pair."""
    global _port, _limiter
    old = (_port, _limiter)
    _port, _limiter = new_port, limiter
    return old
