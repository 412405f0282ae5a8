"""A fake Crypto Pay API: a real local HTTP server (pytest-httpserver) that records what it received.

Methods as the real API shapes them: ``createInvoice`` (``expires_in``, 1 to
2678400 seconds, gives the invoice an ``expiration_date``), ``getInvoices``
(``{ok, result: {items: [...]}}``, a deleted invoice is absent) and
``deleteInvoice`` (``{ok: true, result: true}``); errors are
``{ok: false, error: {code, name}}``. The fake does not expire invoices on
its own: a test sets ``status`` as the provider would.

Fault injection: push onto ``faults`` what the next requests get instead of
a normal answer (``status(503)``, ``rate_limited(2)``, ``slow(1.5)``,
``garbage()``, ``not_ok()``); each fault is used once, in order. Faults in
``method_faults[name]`` apply only to that method's requests.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug import Request, Response

TOKEN = "test-crypto-token"
Fault = Callable[[], Response | None]


def status(code: int) -> Fault:
    return lambda: Response(json.dumps({"ok": False, "error": {"code": code}}), status=code)


def rate_limited(retry_after: int) -> Fault:
    return lambda: Response("{}", status=429, headers={"Retry-After": str(retry_after)})


def slow(seconds: float) -> Fault:
    def answer() -> None:
        time.sleep(seconds)
        return None  # then answer normally (the client has given up by then)
    return answer


def garbage() -> Fault:
    return lambda: Response("<html>bad gateway</html>", status=200)


def not_ok() -> Fault:
    return lambda: Response(json.dumps({"ok": False, "error": {"name": "METHOD_DISABLED"}}))


@dataclass
class FakeCryptoPay:
    url: str
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    method_faults: dict[str, list[Fault]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    server: Any = None

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)

    @classmethod
    def serve(cls, httpserver: Any) -> FakeCryptoPay:
        fake = cls(httpserver.url_for("/api"))
        httpserver.expect_request(re.compile(r"^/api/\w+$"), method="POST").respond_with_handler(
            fake.handle)
        return fake

    @classmethod
    def start(cls, clock: Callable[[], datetime] | None = None) -> FakeCryptoPay:
        """Serve on its own (threaded) server, e.g. for the demo; ``stop()`` ends it."""
        from pytest_httpserver import HTTPServer

        server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        server.start()
        fake = cls.serve(server)
        if clock is not None:
            fake.clock = clock
        fake.server = server
        return fake

    def stop(self) -> None:
        if self.server is not None and self.server.is_running():
            self.server.stop()

    def add(self, *, status: str = "active", amount: str = "5.00", fiat: str = "USD",
            expires_at: datetime | None = None) -> str:
        invoice_id = str(next(self._ids))
        self.invoices[invoice_id] = {"invoice_id": int(invoice_id), "status": status,
                                     "amount": amount, "currency_type": "fiat", "fiat": fiat,
                                     "created_at": _iso(self.clock())}
        if expires_at is not None:
            self.invoices[invoice_id]["expiration_date"] = _iso(expires_at)
        return invoice_id

    def handle(self, request: Request) -> Response:
        method = request.path.rsplit("/", 1)[1]
        body = request.get_json(silent=True) or {}
        self.requests.append((method, request.headers.get("Crypto-Pay-API-Token"), body))
        for queue in (self.faults, self.method_faults.get(method, [])):
            answer = queue.pop(0)() if queue else None
            if answer is not None:
                return answer
        if request.headers.get("Crypto-Pay-API-Token") != TOKEN:
            return Response(json.dumps({"ok": False, "error": {"name": "UNAUTHORIZED"}}), 401)
        if method == "createInvoice":
            return self._create(body)
        if method == "getInvoices":
            ids = [i for i in str(body.get("invoice_ids", "")).split(",") if i]
            return _ok({"items": [self.invoices[i] for i in ids if i in self.invoices]})
        if method == "deleteInvoice":
            invoice_id = str(body.get("invoice_id"))
            if self.invoices.pop(invoice_id, None) is None:
                return _error(400, "INVOICE_NOT_FOUND")
            self.deleted.append(invoice_id)
            return _ok(True)
        return _error(404, "METHOD_NOT_FOUND")

    def _create(self, body: dict[str, Any]) -> Response:
        expires_in = body.get("expires_in")
        if expires_in is not None and not (isinstance(expires_in, int)
                                           and 1 <= expires_in <= 2678400):
            return _error(400, "EXPIRES_IN_INVALID")
        expires_at = (self.clock() + timedelta(seconds=expires_in)) if expires_in else None
        invoice_id = self.add(amount=body["amount"], fiat=body["fiat"], expires_at=expires_at)
        return _ok(self.invoices[invoice_id] | {"payload": body.get("payload")})

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [body for name, _, body in self.requests if name == method]


def _ok(result: Any) -> Response:
    return Response(json.dumps({"ok": True, "result": result}), content_type="application/json")


def _error(code: int, name: str) -> Response:
    return Response(json.dumps({"ok": False, "error": {"code": code, "name": name}}), status=code,
                    content_type="application/json")


def _iso(at: datetime) -> str:
    """ISO 8601 in UTC with a Z, as the API writes its dates."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
