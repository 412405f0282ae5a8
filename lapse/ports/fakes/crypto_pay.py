"""A fake Crypto Pay API: a real local HTTP server (pytest-httpserver) that records what it received.

Fault injection: push onto ``faults`` what the next requests get instead of
a normal answer (``status(503)``, ``rate_limited(2)``, ``slow(1.5)``,
``garbage()``, ``not_ok()``); each fault is used once, in order.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)

    @classmethod
    def serve(cls, httpserver: Any) -> FakeCryptoPay:
        fake = cls(httpserver.url_for("/api"))
        httpserver.expect_request(re.compile(r"^/api/\w+$"), method="POST").respond_with_handler(
            fake.handle)
        return fake

    def add(self, *, status: str = "active", amount: str = "5.00", fiat: str = "USD") -> str:
        invoice_id = str(next(self._ids))
        self.invoices[invoice_id] = {"invoice_id": int(invoice_id), "status": status,
                                     "amount": amount, "currency_type": "fiat", "fiat": fiat}
        return invoice_id

    def handle(self, request: Request) -> Response:
        method = request.path.rsplit("/", 1)[1]
        body = request.get_json(silent=True) or {}
        self.requests.append((method, request.headers.get("Crypto-Pay-API-Token"), body))
        if self.faults:
            answer = self.faults.pop(0)()
            if answer is not None:
                return answer
        if request.headers.get("Crypto-Pay-API-Token") != TOKEN:
            return Response(json.dumps({"ok": False, "error": {"name": "UNAUTHORIZED"}}), 401)
        if method == "createInvoice":
            invoice_id = self.add(amount=body["amount"], fiat=body["fiat"])
            return _ok(self.invoices[invoice_id] | {"payload": body.get("payload")})
        if method == "getInvoices":
            ids = [i for i in str(body.get("invoice_ids", "")).split(",") if i]
            return _ok({"items": [self.invoices[i] for i in ids if i in self.invoices]})
        return Response(json.dumps({"ok": False, "error": {"name": "METHOD_NOT_FOUND"}}), 404)

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [body for name, _, body in self.requests if name == method]


def _ok(result: Any) -> Response:
    return Response(json.dumps({"ok": True, "result": result}), content_type="application/json")
