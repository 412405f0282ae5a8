"""sweep_crypto_payments (M4) and crypto finalize_purchase against the fake Crypto Pay server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import purchases
from lapse.flows import sweeps
from lapse.flows.inline import inline
from lapse.ports import crypto_pay
from lapse.ports.crypto_pay import CryptoPay, CryptoPayGarbage
from lapse.ports.fakes import crypto_pay as fake
from tests.actors.conftest import dead_letters
from tests.conftest import eventually
from tests.support import factories as make

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(httpserver):
    server = fake.FakeCryptoPay.serve(httpserver)
    previous = crypto_pay.install_port(CryptoPay(server.url, fake.TOKEN, backoff=0.01,
                                                 sleep=lambda s: None))
    yield server
    crypto_pay.install_port(previous)


def watch(pool, now=NOW, dry_run=False):
    import actors

    with inline(actors.broker) as work:
        counts = sweeps.run_sweep(pool, "crypto_payments", now=now, budget_seconds=60,
                                  dry_run=dry_run)
        work.drain()
    return counts, work.counts


def crypto_purchase(pool, api, *, status="active", created=NOW - timedelta(minutes=5),
                    kind="topup", amount=500):
    invoice = api.add(status=status, amount=f"{amount / 100:.2f}")
    with pool.connection() as conn:
        user = make.user(conn)
        purchase = make.purchase(conn, user, kind=kind, amount=amount, provider="crypto",
                                 invoice=invoice)
        conn.execute("update purchases set created_at = %s where id = %s", (created, purchase))
        conn.commit()
    return user, purchase, invoice


def row(pool, sql, *params):
    with pool.connection() as conn:
        return conn.execute(sql, params).fetchone()


def test_a_paid_invoice_is_finalized_once_after_the_provider_confirms_it(pool, api):
    user, purchase, invoice = crypto_purchase(pool, api)
    counts, _ = watch(pool)
    assert counts == {"waiting": 1}
    api.invoices[invoice]["status"] = "paid"
    counts, follow_up = watch(pool)
    assert counts == {"paid": 1} and follow_up["ran"] == 1
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 500
    assert row(pool, "select status from purchases where id = %s", purchase)["status"] == "paid"
    assert len(api.calls("getInvoices")) == 3  # 2 sweeps + the actor's own verification
    assert watch(pool)[0] == {}  # paid: no longer watched


def test_expired_at_the_provider_or_past_the_ttl_expires_and_a_late_payment_is_still_credited(
        pool, api):
    _, at_provider, _ = crypto_purchase(pool, api, status="expired")
    user, too_old, invoice = crypto_purchase(pool, api, created=NOW - timedelta(hours=2))
    counts, _ = watch(pool)
    assert counts == {"expired": 2}
    for purchase in (at_provider, too_old):
        assert row(pool, "select status from purchases where id = %s", purchase)["status"] == "expired"
    api.invoices[invoice]["status"] = "paid"  # paid after Lapse expired it
    counts, _ = watch(pool)
    assert counts == {"paid": 1, "expired_still_watched": 1}
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 500
    assert row(pool, "select kind from payments where provider_payment_id = %s",
               invoice)["kind"] == "unmatched"
    assert watch(pool)[0] == {"expired_still_watched": 1}


def test_a_dry_run_changes_nothing(pool, api):
    _, purchase, _ = crypto_purchase(pool, api, status="expired")
    counts, follow_up = watch(pool, dry_run=True)
    assert counts == {"expired": 1} and not follow_up
    assert row(pool, "select status from purchases where id = %s", purchase)["status"] == "pending"


def test_a_provider_returning_garbage_changes_nothing(pool, api):
    _, purchase, _ = crypto_purchase(pool, api, status="paid")
    api.faults.append(fake.garbage())
    with pytest.raises(CryptoPayGarbage):
        watch(pool)
    assert row(pool, "select status from purchases where id = %s", purchase)["status"] == "pending"


def test_a_crypto_message_for_an_unknown_purchase_or_an_unpaid_invoice_is_refused(pool, api):
    import actors

    with pytest.raises(purchases.UnknownPurchase):
        actors.money.finalize_purchase.fn(999_123, "crypto", "777", 500, "USD")
    user, purchase, invoice = crypto_purchase(pool, api)  # still active at the provider
    with pytest.raises(purchases.UnverifiedPayment, match="reports active"):
        actors.money.finalize_purchase.fn(purchase, "crypto", invoice, 500, "USD")
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 0


def test_one_real_crypto_payment_and_three_forged_messages_credit_once_and_archive_the_forgeries(
        stub_worker, pool, api):
    import actors

    broker, _ = stub_worker
    user, purchase, invoice = crypto_purchase(pool, api, status="paid")
    actors.money.finalize_purchase.send(purchase, "crypto", invoice, 500, "USD")
    broker.join("payments", fail_fast=False)
    for n in range(3):
        actors.money.finalize_purchase.send(purchase, "crypto", f"forged-{n}", 500, "USD")
    broker.join("payments", fail_fast=False)
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 500
    dead = eventually(lambda: len(rows := dead_letters(pool)) == 3 and rows, timeout=10,
                      what="three dead letters")
    assert {r["reason"] for r in dead} == {"permanent_error"}
    assert all("already paid" in r["exception"] for r in dead)
