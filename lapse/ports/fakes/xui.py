"""A fake 3x-ui panel (v3.1+): a real local HTTP server speaking the endpoints py3xui 0.7 calls.

Served through pytest-httpserver (``FakeXui.serve(httpserver)`` in tests) or
standalone (``FakeXui.start()``: its own threaded HTTP/1.1 server that keeps
connections alive, as the panel's Go ``net/http`` does; werkzeug's server
closes every connection). It behaves like the panel where Lapse's client has
to cope (3x-ui's Go source, ``internal/web/controller``):

- ``GET /csrf-token`` starts a session (cookie ``3x-ui``) and returns its CSRF
  token; ``POST /login`` needs it in ``X-CSRF-Token`` (403 otherwise), answers
  a wrong password with HTTP 200 ``success: false`` and locks the address and
  user out after five failures in five minutes, for fifteen minutes.
- ``/panel/api/*`` takes ``Authorization: Bearer <token>`` or a logged-in
  session (with the CSRF header on POST); anything else, including an expired
  session, is answered 404 — not 401 — unless ``X-Requested-With`` is sent.
- Errors are HTTP 200 ``{success: false, msg}`` in the panel's language
  (``language="ru"`` proves a client never reads the text); ``obj`` carries data.
- Adding an existing email fails ("email already in use") unless the subId is
  the same; deleting or getting a missing email fails; update replaces every
  field (what the body lacks becomes empty); ``version < (3, 1)`` has no
  ``/panel/api/clients/*`` at all (404).

Fault injection: ``inject(fault, on="clients/add", times=1)`` — ``latency``,
``status`` (5xx), ``drop`` (connection closed without an answer, before or
after acting), ``expired_session``, ``already_in_use``, ``not_found``,
``malformed``; ``expire_sessions()`` ends every session. What it received is
in ``received`` and ``login_attempts``.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import itertools
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response

USER, PASSWORD, TOKEN = "admin", "test-panel-password", "test-panel-token"
COOKIE = "3x-ui"
MESSAGES = {
    "en": {"wrong": "Invalid username or password or two-factor code.",
           "login": "You have successfully logged into your account.",
           "fail": "Something went wrong", "obtain": "Obtain",
           "added": "Inbound client(s) have been added.", "deleted": "Inbound client has been deleted.",
           "updated": "Inbound client has been updated."},
    "ru": {"wrong": "Неверные данные учетной записи.", "login": "Вход выполнен успешно",
           "fail": "Что-то пошло не так", "obtain": "Получить",
           "added": "Клиент(ы) подключения добавлен(ы)", "deleted": "Клиент подключения удалён",
           "updated": "Клиент подключения обновлён"},
}
Answer = Callable[[Request, "FakeXui"], Response | None]


@dataclass
class Fault:
    on: str
    answer: Answer
    times: int


@dataclass
class Received:
    method: str
    path: str
    body: Any
    auth: str | None  # "bearer", "session" or None


def latency(seconds: float) -> Answer:
    """Answer normally, ``seconds`` late."""
    def answer(request: Request, fake: FakeXui) -> None:
        time.sleep(seconds)
    return answer


def status(code: int) -> Answer:
    return lambda request, fake: Response(f"<html>{code}</html>", status=code)


def drop(*, after_acting: bool = False) -> Answer:
    """Close the connection without an answer (after doing the work, if ``after_acting``)."""
    def answer(request: Request, fake: FakeXui) -> Response:
        if after_acting:
            fake.act(request)
        connection = request.environ["werkzeug.socket"]
        connection.shutdown(socket.SHUT_RDWR)
        return Response("", status=500)  # never reaches the client
    return answer


def expired_session() -> Answer:
    """The session is gone: every session ends and this request is answered 404."""
    def answer(request: Request, fake: FakeXui) -> Response:
        fake.expire_sessions()
        return Response("404 page not found", status=404)
    return answer


def already_in_use() -> Answer:
    return lambda request, fake: fake.failure("fail", f"email already in use: {_email(request)}")


def not_found() -> Answer:
    return lambda request, fake: fake.failure(
        "fail", f"client {_email(request)!r} not found in any inbound or client record")


def malformed() -> Answer:
    return lambda request, fake: Response('{"success": true, "obj": [{"email": ', status=200,
                                          content_type="application/json")


def _email(request: Request) -> str:
    body = request.get_json(silent=True) or {}
    client = body.get("client") if isinstance(body, dict) else None
    if isinstance(client, dict) and client.get("email"):
        return str(client["email"])
    return request.path.rsplit("/", 1)[-1]


@dataclass
class FakeXui:
    url: str
    language: str = "en"
    version: tuple[int, int, int] = (3, 6, 0)
    user: str = USER
    password: str = PASSWORD
    token: str | None = TOKEN
    inbounds: set[int] = field(default_factory=lambda: {1})
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    login_attempts: int = 0
    lockout_failures: int = 5
    lockout_window: float = 300.0
    lockout_cooldown: float = 900.0

    def __post_init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, list[float]] = {}
        self.blocked_until: dict[str, float] = {}
        self._row_ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server: Any = None

    # -- serving ------------------------------------------------------------------------

    @classmethod
    def serve(cls, httpserver: Any, **options: Any) -> FakeXui:
        fake = cls(httpserver.url_for("").rstrip("/"), **options)
        httpserver.expect_request(re.compile(r"^/.*$")).respond_with_handler(fake.handle)
        return fake

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0, **options: Any) -> FakeXui:
        """Serve on its own keep-alive server (the demo, benchmarks, tests); ``stop()`` ends it."""
        server = _Server((host, port), _Handler)
        fake = cls(f"http://{host}:{server.server_address[1]}", **options)
        server.fake = fake
        threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-xui", daemon=True).start()
        fake._server = server
        return fake

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- test helpers -------------------------------------------------------------------

    def inject(self, answer: Answer, *, on: str = "", times: int = 1) -> None:
        """The next ``times`` requests whose path contains ``on`` get ``answer``."""
        with self._lock:
            self.faults.append(Fault(on, answer, times))

    def clear_faults(self) -> None:
        """Drop every injected fault: the panel answers normally again."""
        with self._lock:
            self.faults.clear()

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    def put_client(self, email: str, *, uuid_: str | None = None, sub_id: str | None = None,
                   comment: str = "", inbound_ids: tuple[int, ...] = (1,),
                   **fields: Any) -> dict[str, Any]:
        """A client created by someone else (or by Lapse, given ``comment="lapse"``)."""
        with self._lock:
            record = _record({"email": email, "id": uuid_ or str(uuid.uuid4()),
                              "subId": sub_id or uuid.uuid4().hex[:16], "comment": comment,
                              "enable": True} | fields, row_id=next(self._row_ids))
            record["inboundIds"] = list(inbound_ids)
            self.clients[email] = record
            return record

    def calls(self, path_part: str) -> list[Received]:
        return [r for r in self.received if path_part in r.path]

    def failure(self, text: str, error: str = "") -> Response:
        message = MESSAGES[self.language][text] + (f" ({error})" if error else "")
        return _json({"success": False, "msg": message, "obj": None})

    def success(self, obj: Any = None, text: str | None = None) -> Response:
        message = MESSAGES[self.language][text] if text else ""
        return _json({"success": True, "msg": message, "obj": obj})

    # -- the panel ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.received.append(Received(request.method, request.path, _body(request),
                                          self._auth(request)))
            fault = self._fault(request.path)
        if fault is not None:
            answer = fault(request, self)
            if answer is not None:
                return answer
        return self.act(request)

    def _fault(self, path: str) -> Answer | None:
        for fault in self.faults:
            if fault.on in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault.answer
        return None

    def act(self, request: Request) -> Response:
        with self._lock:
            path, method = request.path, request.method
            if path == "/csrf-token" and method == "GET":
                return self._csrf_token(request)
            if path == "/login" and method == "POST":
                return self._login(request)
            if not path.startswith("/panel/api/"):
                return Response("404 page not found", status=404)
            if self._auth(request) is None:
                if request.headers.get("X-Requested-With") == "XMLHttpRequest":
                    return Response("", status=401)
                return Response("404 page not found", status=404)
            if method == "POST" and self._auth(request) == "session" and not self._csrf_ok(request):
                return Response("", status=403)
            return self._api(request, path[len("/panel/api/"):], method)

    def _auth(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if self.token is not None and header == f"Bearer {self.token}":
            return "bearer"
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        return "session" if session is not None and session.get("user") else None

    def _csrf_ok(self, request: Request) -> bool:
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        return session is not None and request.headers.get("X-CSRF-Token") == session["csrf"]

    def _csrf_token(self, request: Request) -> Response:
        cookie = request.cookies.get(COOKIE, "")
        if cookie not in self.sessions:
            cookie = secrets.token_hex(16)
            self.sessions[cookie] = {"csrf": secrets.token_urlsafe(16), "user": None}
        response = _json({"success": True, "obj": self.sessions[cookie]["csrf"]})
        response.set_cookie(COOKIE, cookie, httponly=True)
        return response

    def _login(self, request: Request) -> Response:
        self.login_attempts += 1
        if not self._csrf_ok(request):
            return Response("", status=403)
        body = _body(request) if isinstance(_body(request), dict) else {}
        username, password = str(body.get("username", "")), str(body.get("password", ""))
        key, now = f"{request.remote_addr}|{username}", time.monotonic()
        if self.blocked_until.get(key, 0.0) > now:
            return self.failure("wrong")
        if username != self.user or password != self.password:
            recent = [t for t in self.failures.get(key, []) if t > now - self.lockout_window]
            recent.append(now)
            self.failures[key] = recent
            if len(recent) >= self.lockout_failures:
                self.blocked_until[key] = now + self.lockout_cooldown
            return self.failure("wrong")
        self.failures.pop(key, None)
        old = self.sessions.pop(request.cookies.get(COOKIE, ""))
        cookie = secrets.token_hex(16)
        self.sessions[cookie] = {"csrf": old["csrf"], "user": username}
        response = self.success(None, "login")
        response.set_cookie(COOKIE, cookie, httponly=True)
        return response

    def locked_out(self) -> bool:
        now = time.monotonic()
        return any(until > now for until in self.blocked_until.values())

    def _api(self, request: Request, route: str, method: str) -> Response:
        if route.startswith("clients/") and self.version < (3, 1, 0):
            return Response("404 page not found", status=404)
        body = _body(request)
        routes: dict[tuple[str, str], Callable[[str], Response]] = {
            ("GET", "clients/list"): lambda _: self.success(
                [dict(r) for r in sorted(self.clients.values(), key=lambda r: r["id"])]),
            ("GET", "clients/get"): self._get,
            ("POST", "clients/add"): lambda _: self._add(body),
            ("POST", "clients/update"): lambda email: self._update(email, body),
            ("POST", "clients/del"): self._delete,
            ("GET", "inbounds/list"): lambda _: self.success(
                [_inbound(i) for i in sorted(self.inbounds)]),
            ("GET", "inbounds/get"): lambda i: self.success(_inbound(int(i)))
            if i.isdigit() and int(i) in self.inbounds else self.failure("obtain", "record not found"),
        }
        for (verb, prefix), handler in routes.items():
            if method == verb and (route == prefix or route.startswith(prefix + "/")):
                return handler(route[len(prefix) + 1:])
        return Response("404 page not found", status=404)

    def _get(self, email: str) -> Response:
        record = self.clients.get(email)
        if record is None:
            return self.failure("obtain", "record not found")
        client = {k: v for k, v in record.items() if k != "inboundIds"}
        return self.success({"client": client, "inboundIds": list(record["inboundIds"]),
                             "externalLinks": [], "usedTraffic": 0})

    def _add(self, body: Any) -> Response:
        client = body.get("client") if isinstance(body, dict) else None
        inbound_ids = body.get("inboundIds") if isinstance(body, dict) else None
        if not isinstance(client, dict) or not str(client.get("email", "")).strip():
            return self.failure("fail", "client email is required")
        if not inbound_ids:
            return self.failure("fail", "at least one inbound is required")
        if any(i not in self.inbounds for i in inbound_ids):
            return self.failure("fail", "record not found")
        email, sub_id = str(client["email"]), str(client.get("subId") or uuid.uuid4().hex[:16])
        existing = self.clients.get(email)
        if existing is not None and (not existing["subId"] or existing["subId"] != sub_id):
            return self.failure("fail", f"email already in use: {email}")
        if any(r["subId"] == sub_id and r["email"] != email for r in self.clients.values()):
            return self.failure("fail", f"subId already in use: {sub_id}")
        if existing is None:
            existing = _record(client | {"subId": sub_id}, row_id=next(self._row_ids))
            existing["inboundIds"] = []
            self.clients[email] = existing
        existing["inboundIds"] = sorted(set(existing["inboundIds"]) | set(inbound_ids))
        return self.success(None, "added")

    def _update(self, email: str, body: Any) -> Response:
        record = self.clients.get(email)
        if record is None or not isinstance(body, dict):
            return self.failure("fail", "record not found")
        replaced = _record(body, row_id=record["id"])  # every field: what is missing is emptied
        replaced["inboundIds"] = record["inboundIds"]
        del self.clients[email]
        self.clients[replaced["email"]] = replaced
        return self.success(None, "updated")

    def _delete(self, email: str) -> Response:
        if self.clients.pop(email, None) is None:
            return self.failure("fail", f"client {email!r} not found in any inbound or client record")
        return self.success(None, "deleted")


def _record(client: dict[str, Any], *, row_id: int) -> dict[str, Any]:
    """A clients-table row as the API shows it: ``id`` is the row, ``uuid`` the client id."""
    return {"id": row_id, "email": str(client.get("email", "")),
            "subId": str(client.get("subId") or ""), "uuid": str(client.get("id") or ""),
            "password": str(client.get("password") or ""), "flow": str(client.get("flow") or ""),
            "security": str(client.get("security") or ""), "limitIp": int(client.get("limitIp") or 0),
            "totalGB": int(client.get("totalGB") or 0),
            "expiryTime": int(client.get("expiryTime") or 0),
            "enable": bool(client.get("enable", False)), "tgId": int(client.get("tgId") or 0),
            "group": str(client.get("group") or ""), "comment": str(client.get("comment") or ""),
            "reset": int(client.get("reset") or 0), "createdAt": int(time.time() * 1000),
            "updatedAt": int(time.time() * 1000)}


def _inbound(inbound_id: int) -> dict[str, Any]:
    return {"id": inbound_id, "remark": f"fake-{inbound_id}", "protocol": "vless",
            "port": 443 + inbound_id, "enable": True, "up": 0, "down": 0, "total": 0,
            "expiryTime": 0, "listen": "", "tag": f"inbound-{inbound_id}",
            "settings": "{\"clients\": [], \"decryption\": \"none\"}",
            "streamSettings": "{}", "sniffing": "{}", "clientStats": []}


def _body(request: Request) -> Any:
    if request.mimetype == "application/json":
        return request.get_json(silent=True)
    return dict(request.form) if request.form else None


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), content_type="application/json")


class _Server(http.server.ThreadingHTTPServer):
    """One thread per connection; ``server_close`` also closes the kept-alive connections."""

    daemon_threads = True
    block_on_close = False
    fake: FakeXui

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()

    def server_close(self) -> None:
        super().server_close()
        with self.open_lock:
            for connection in self.open:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: each request is read whole (its Content-Length), handed to
    ``FakeXui.handle`` as a werkzeug ``Request`` and answered with a Content-Length."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    timeout = 60  # an idle kept-alive connection is closed, as a real server does
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.open_lock:
            self.server.open.add(self.connection)

    def finish(self) -> None:
        with self.server.open_lock:
            self.server.open.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._answer()

    do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query, "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
            "wsgi.input": io.BytesIO(self.rfile.read(length)), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "werkzeug.socket": self.connection}
        for name, value in self.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        response = self.server.fake.handle(Request(environ))
        body = response.get_data()
        try:
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # a dropped connection (the ``drop`` fault): nothing to answer on
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # no line per request
