"""The Crypto Pay adapter against a fake server with fault injection, and its circuit breaker."""

from __future__ import annotations

import pytest

from lapse.platform.breaker import CircuitBreaker, CircuitOpen
from lapse.ports.crypto_pay import CryptoPay, CryptoPayGarbage, CryptoPayUnavailable
from lapse.ports.fakes import crypto_pay as fake
from tests.conftest import eventually


@pytest.fixture
def api(httpserver):
    return fake.FakeCryptoPay.serve(httpserver)


def client(api, *, slept=None, timeout=2.0, breaker=None):
    return CryptoPay(api.url, fake.TOKEN, timeout=timeout, backoff=0.01,
                     sleep=(slept.append if slept is not None else lambda s: None),
                     breaker=breaker or CircuitBreaker("test", threshold=2, cooldown=60))


def test_create_invoice_sends_the_token_and_a_fiat_amount(api):
    invoice = client(api).create_invoice(purchase_id=7, amount=500, currency="USD", expires_in=3600)
    assert (invoice.status, invoice.amount, invoice.currency) == ("active", 500, "USD")
    [(method, token, body)] = api.requests
    assert method == "createInvoice" and token == fake.TOKEN
    assert body == {"currency_type": "fiat", "fiat": "USD", "amount": "5.00", "payload": "7",
                    "expires_in": 3600}


def test_get_invoices_asks_for_at_most_100_ids_per_call(api):
    ids = [api.add(status="paid") for _ in range(250)]
    found = client(api).get_invoices(ids)
    assert [i.invoice_id for i in found] == ids and {i.status for i in found} == {"paid"}
    assert [len(c["invoice_ids"].split(",")) for c in api.calls("getInvoices")] == [100, 100, 50]


def test_429_honours_retry_after_and_5xx_is_retried_with_backoff(api):
    slept = []
    invoice_id = api.add()
    api.faults += [fake.rate_limited(2), fake.status(502)]
    [invoice] = client(api, slept=slept).get_invoices([invoice_id])
    assert invoice.invoice_id == invoice_id and slept == [2.0, 0.02]


def test_a_timeout_is_retried_and_then_reported(api):
    api.faults += [fake.slow(0.6)] * 3
    with pytest.raises(CryptoPayUnavailable, match="ReadTimeout.*after 3 attempts"):
        client(api, timeout=0.2).get_invoices([api.add()])
    # the server answers one request at a time: let it take the abandoned ones before the next test
    eventually(lambda: len(api.requests) == 3, timeout=5, what="the three timed-out requests")


def test_garbage_is_an_error_never_a_silent_drop(api):
    api.faults.append(fake.garbage())
    with pytest.raises(CryptoPayGarbage, match="not JSON"):
        client(api).get_invoices(["1"])
    api.faults.append(fake.not_ok())
    with pytest.raises(CryptoPayGarbage, match="METHOD_DISABLED"):
        client(api).get_invoices(["1"])
    api.invoices["9"] = {"invoice_id": 9, "status": "paid", "amount": "lots"}
    with pytest.raises(CryptoPayGarbage, match="cannot read"):
        client(api).get_invoices(["9"])


def test_the_circuit_opens_after_repeated_failures_and_a_probe_closes_it(api):
    now = [0.0]
    breaker = CircuitBreaker("test", threshold=2, cooldown=30, clock=lambda: now[0])
    pay = client(api, breaker=breaker)
    api.faults += [fake.status(503)] * 6
    for _ in range(2):
        with pytest.raises(CryptoPayUnavailable):
            pay.get_invoices(["1"])
    assert breaker.state == "open"
    calls = len(api.requests)
    with pytest.raises(CircuitOpen):
        pay.get_invoices(["1"])
    assert len(api.requests) == calls  # not hammered while open
    now[0] = 31
    api.faults.clear()
    assert pay.get_invoices([api.add()]) and breaker.state == "closed"


def test_create_invoice_with_expires_in_reads_back_its_expiration_date(api):
    from datetime import UTC, datetime

    api.clock = lambda: datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    pay = client(api)
    invoice = pay.create_invoice(purchase_id=8, amount=500, currency="USD", expires_in=3600)
    assert invoice.expires_at == datetime(2026, 5, 1, 13, 0, tzinfo=UTC)
    [again] = pay.get_invoices([invoice.invoice_id])
    assert again.expires_at == invoice.expires_at and again.status == "active"
    assert api.invoices[invoice.invoice_id]["expiration_date"] == "2026-05-01T13:00:00.000Z"
    with pytest.raises(CryptoPayGarbage, match="EXPIRES_IN_INVALID"):
        pay.create_invoice(purchase_id=9, amount=500, currency="USD", expires_in=0)


def test_delete_invoice_removes_it_from_get_invoices_and_an_unknown_one_is_an_error(api):
    pay = client(api)
    invoice_id = api.add()
    pay.delete_invoice(invoice_id)
    assert api.calls("deleteInvoice") == [{"invoice_id": int(invoice_id)}]
    assert pay.get_invoices([invoice_id]) == []
    with pytest.raises(CryptoPayGarbage, match="INVOICE_NOT_FOUND"):
        pay.delete_invoice(invoice_id)
