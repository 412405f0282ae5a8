"""A fake Telegram Bot API: a real local HTTP server (pytest-httpserver) that records what it received.

``POST /bot<token>/sendMessage`` with the real answer shapes. Every request
is recorded (``received``: chat id, text, parse mode, receive time on the
application clock, the status answered), in order of arrival.

Fault injection: per chat (``blocked``, ``deactivated``, ``missing``: 403 or
400 every time), ``latency`` for every request, and one-shot faults pushed
onto ``faults`` and used by the next requests in order: ``rate_limited(2)``,
``server_error(502)``, ``hang(3.0)`` (longer than the client's timeout; the
message is delivered afterwards, as Telegram may), ``garbage()``,
``blocked_by_user()``, ``user_deactivated()``, ``chat_not_found()``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from lapse.platform import clock

TOKEN = "123456:TEST-fake-bot-token_0123456789"
Fault = Callable[[], Response | None]
_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>\w+)$")


def error(code: int, description: str, **parameters: Any) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Response(json.dumps(body), status=code, content_type="application/json")


def rate_limited(retry_after: int) -> Fault:
    return lambda: error(429, f"Too Many Requests: retry after {retry_after}",
                         retry_after=retry_after)


def server_error(code: int = 502) -> Fault:
    return lambda: error(code, "Bad Gateway" if code == 502 else "Internal Server Error")


def blocked_by_user() -> Fault:
    return lambda: error(403, "Forbidden: bot was blocked by the user")


def user_deactivated() -> Fault:
    return lambda: error(403, "Forbidden: user is deactivated")


def chat_not_found() -> Fault:
    return lambda: error(400, "Bad Request: chat not found")


def garbage() -> Fault:
    return lambda: Response("<html><body>502 Bad Gateway</body></html>", status=200)


def hang(seconds: float) -> Fault:
    def answer() -> None:
        time.sleep(seconds)
        return None  # then deliver and answer normally: the client gave up, the user got it
    return answer


@dataclass(frozen=True)
class Received:
    chat_id: Any
    text: Any
    parse_mode: str | None
    at: float  # application clock, seconds since the epoch, when the request arrived
    status: int
    delivered: bool  # the user got the message (a hung request too: the client gave up late)


@dataclass
class FakeTelegram:
    url: str
    received: list[Received] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    blocked: set[Any] = field(default_factory=set)
    deactivated: set[Any] = field(default_factory=set)
    missing: set[Any] = field(default_factory=set)
    latency: float = 0.0
    server: HTTPServer | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._message_ids = itertools.count(1)

    @classmethod
    def serve(cls, httpserver: HTTPServer) -> FakeTelegram:
        """Answer on an existing server (pytest-httpserver's fixture)."""
        fake = cls(httpserver.url_for("/").rstrip("/"), server=httpserver)
        httpserver.expect_request(_PATH).respond_with_handler(fake.handle)
        return fake

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0) -> FakeTelegram:
        """A server of its own that answers concurrent requests in threads (latency, hangs)."""
        server = HTTPServer(host=host, port=port, threaded=True)
        server.start()
        return cls.serve(server)

    def stop(self) -> None:
        if self.server is not None and self.server.is_running():
            self.server.stop()

    def handle(self, request: Request) -> Response:
        at = clock.now().timestamp()
        body = request.get_json(silent=True) or {}
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
        answer, delivered = self._answer(request, body, fault)
        with self._lock:
            self.received.append(Received(body.get("chat_id"), body.get("text"),
                                          body.get("parse_mode"), at, answer.status_code,
                                          delivered))
        return answer

    def _answer(self, request: Request, body: dict[str, Any],
                fault: Fault | None) -> tuple[Response, bool]:
        if self.latency:
            time.sleep(self.latency)
        answer = fault() if fault is not None else None
        if answer is not None:
            return answer, False
        match = _PATH.match(request.path)
        if match is None or match["token"] != TOKEN:
            return error(401, "Unauthorized"), False
        if match["method"] != "sendMessage":
            return error(404, "Not Found"), False
        answer = self._send_message(body)
        return answer, answer.status_code == 200

    def _send_message(self, body: dict[str, Any]) -> Response:
        chat_id, text = body.get("chat_id"), body.get("text")
        if not text:
            return error(400, "Bad Request: message text is empty")
        if chat_id in self.missing or chat_id is None:
            return error(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            return error(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.deactivated:
            return error(403, "Forbidden: user is deactivated")
        result = {"message_id": next(self._message_ids), "date": int(clock.now().timestamp()),
                  "chat": {"id": chat_id, "type": "private"}, "text": text}
        return Response(json.dumps({"ok": True, "result": result}),
                        content_type="application/json")

    def delivered(self) -> list[Received]:
        """What users got, in order of arrival."""
        with self._lock:
            return [r for r in self.received if r.delivered]
