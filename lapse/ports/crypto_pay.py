"""The Crypto Pay (CryptoBot) port: ``createInvoice``, ``getInvoices`` and ``deleteInvoice`` through httpx.

Every call carries the ``Crypto-Pay-API-Token`` header and a timeout; 429
(honouring ``Retry-After``), 5xx and transport errors are retried with
backoff, a bounded number of times, behind a circuit breaker. A body that is
not what the API documents raises ``CryptoPayGarbage``: never a silent drop.
Amounts are minor units here and decimal strings at the API (fiat invoices).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from domain.errors import RetryableError
from domain.purchases import Invoice
from lapse.platform.breaker import CircuitBreaker

MAX_IDS = 100  # getInvoices takes at most 100 invoice ids per call


class CryptoPayUnavailable(RetryableError):
    """Crypto Pay did not answer usefully after the retries (timeouts, 5xx, 429)."""


class CryptoPayGarbage(RetryableError):
    """Crypto Pay answered with a body Lapse cannot read; nothing was done with it."""


class CryptoPay:
    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, attempts: int = 3,
                 backoff: float = 0.5, breaker: CircuitBreaker | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(timeout=timeout, headers={"Crypto-Pay-API-Token": token})
        self.attempts, self.backoff, self.sleep = attempts, backoff, sleep
        self.breaker = breaker or CircuitBreaker("crypto_pay")

    def create_invoice(self, *, purchase_id: int, amount: int, currency: str,
                       expires_in: int) -> Invoice:
        """A fiat invoice the provider itself expires after ``expires_in`` seconds (M4's TTL)."""
        result = self._call("createInvoice", {
            "currency_type": "fiat", "fiat": currency, "amount": _decimal(amount),
            "payload": str(purchase_id), "expires_in": expires_in})
        return _invoice(result)

    def get_invoices(self, invoice_ids: Sequence[str]) -> list[Invoice]:
        found: list[Invoice] = []
        for start in range(0, len(invoice_ids), MAX_IDS):
            chunk = invoice_ids[start:start + MAX_IDS]
            result = self._call("getInvoices", {"invoice_ids": ",".join(chunk),
                                                "count": len(chunk)})
            items = result.get("items") if isinstance(result, dict) else None
            if not isinstance(items, list):
                raise CryptoPayGarbage(f"getInvoices: no items list in {str(result)[:200]}")
            found.extend(_invoice(item) for item in items)
        return found

    def delete_invoice(self, invoice_id: str) -> None:
        """Delete an invoice at the provider: it can no longer be paid and leaves ``getInvoices``."""
        result = self._call("deleteInvoice", {"invoice_id": int(invoice_id)})
        if result is not True:
            raise CryptoPayGarbage(f"deleteInvoice {invoice_id}: result {str(result)[:200]}")

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        self.breaker.before_call()
        problem = "no attempt made"
        for attempt in range(self.attempts):
            try:
                response = self.client.post(f"{self.base_url}/{method}", json=params)
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
                self.sleep(self.backoff * 2 ** attempt)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                self.sleep(_retry_after(response) or self.backoff * 2 ** attempt)
                continue
            self.breaker.succeeded()
            return _result(method, response)
        self.breaker.failed()
        raise CryptoPayUnavailable(f"{method}: {problem} after {self.attempts} attempts")


def _result(method: str, response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise CryptoPayGarbage(f"{method}: HTTP {response.status_code}, not JSON: "
                               f"{response.text[:200]!r}") from None
    if not isinstance(body, dict) or body.get("ok") is not True or "result" not in body:
        raise CryptoPayGarbage(f"{method}: HTTP {response.status_code}: {str(body)[:200]}")
    return body["result"]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(float(value), 30.0) if value is not None else None
    except ValueError:
        return None


def _decimal(minor: int) -> str:
    return str((Decimal(minor) / 100).quantize(Decimal("0.01")))


def _invoice(item: Any) -> Invoice:
    try:
        expires = item.get("expiration_date")
        return Invoice(invoice_id=str(item["invoice_id"]), status=str(item["status"]),
                       amount=int((Decimal(str(item["amount"])) * 100).to_integral_exact()),
                       currency=str(item.get("fiat") or item["asset"]),
                       expires_at=datetime.fromisoformat(expires) if expires else None)
    except (KeyError, TypeError, ValueError, InvalidOperation) as error:
        raise CryptoPayGarbage(f"an invoice Lapse cannot read ({error!r}): {str(item)[:200]}"
                               ) from None


_port: CryptoPay | None = None


def port() -> CryptoPay:
    """The process's Crypto Pay client, from LAPSE_CRYPTO_URL and LAPSE_CRYPTO_TOKEN."""
    global _port
    if _port is None:
        from lapse.platform.config import ConfigError, settings

        config = settings()
        if not config.crypto_token:
            raise ConfigError("LAPSE_CRYPTO_TOKEN", "required to verify and watch crypto payments")
        _port = CryptoPay(config.crypto_url, config.crypto_token)
    return _port


def install_port(new_port: CryptoPay | None) -> CryptoPay | None:
    """Use ``new_port`` as the process's client (tests); return the previous one."""
    global _port
    old, _port = _port, new_port
    return old
