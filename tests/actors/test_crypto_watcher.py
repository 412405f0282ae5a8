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
                    kind="topup", amount=500, expires_at=None):
    invoice = api.add(status=status, amount=f"{amount / 100:.2f}", expires_at=expires_at)
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
    assert counts == {"paid": 1} and follow_up["ran"] == 2  # finalize_purchase, its receipt
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 500
    assert row(pool, "select status from purchases where id = %s", purchase)["status"] == "paid"
    assert len(api.calls("getInvoices")) == 3  # 2 sweeps + the actor's own verification
    assert watch(pool)[0] == {}  # paid: no longer watched


def status_of(pool, purchase):
    return row(pool, "select status from purchases where id = %s", purchase)["status"]


def test_expired_at_the_provider_expires_and_a_payment_within_3_days_is_credited(pool, api):
    user, purchase, invoice = crypto_purchase(pool, api, status="expired")
    assert watch(pool)[0] == {"expired": 1} and status_of(pool, purchase) == "expired"
    assert watch(pool, NOW + timedelta(days=2, hours=23))[0] == {"expired_still_watched": 1}
    api.invoices[invoice]["status"] = "paid"  # the provider reports it paid after all
    assert watch(pool, NOW + timedelta(days=2, hours=23))[0] == {"paid": 1}
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 500
    assert status_of(pool, purchase) == "failed"
    assert row(pool, "select kind from payments where provider_payment_id = %s",
               invoice)["kind"] == "unmatched"
    assert row(pool, "select kind from notifications where user_id = %s",
               user)["kind"] == "payment_unmatched"
    assert watch(pool, NOW + timedelta(days=2, hours=23))[0] == {}  # settled: not watched


def test_an_expired_purchase_is_watched_for_3_days_and_then_no_longer(pool, api):
    _, purchase, _ = crypto_purchase(pool, api, status="expired")
    watch(pool)
    assert watch(pool, NOW + timedelta(days=3) - timedelta(minutes=1))[0] == {
        "expired_still_watched": 1}
    calls = len(api.calls("getInvoices"))
    assert watch(pool, NOW + timedelta(days=3, minutes=1))[0] == {}
    assert len(api.calls("getInvoices")) == calls


def test_an_invoice_still_active_5_minutes_past_its_expiry_is_deleted_then_expired(pool, api):
    _, purchase, invoice = crypto_purchase(pool, api, expires_at=NOW - timedelta(minutes=4))
    assert watch(pool)[0] == {"waiting": 1} and api.calls("deleteInvoice") == []
    assert watch(pool, NOW + timedelta(minutes=1))[0] == {"deleted": 1}
    assert api.calls("deleteInvoice") == [{"invoice_id": int(invoice)}] and api.deleted == [invoice]
    assert status_of(pool, purchase) == "expired"
    assert watch(pool, NOW + timedelta(minutes=2))[0] == {"expired_still_watched": 1}


def test_without_an_expiration_date_the_ttl_from_creation_decides(pool, api):
    _, purchase, _ = crypto_purchase(pool, api, created=NOW - timedelta(minutes=64))
    assert watch(pool)[0] == {"waiting": 1}  # 60 min TTL + 5 min
    assert watch(pool, NOW + timedelta(minutes=1))[0] == {"deleted": 1}
    assert status_of(pool, purchase) == "expired"


def test_a_failed_deletion_leaves_the_purchase_pending_and_a_late_payment_pays_it(pool, api):
    user, purchase, invoice = crypto_purchase(pool, api, expires_at=NOW - timedelta(hours=1))
    api.method_faults["deleteInvoice"] = [fake.status(503)] * 3  # the port's 3 attempts
    assert watch(pool)[0] == {"delete_failed": 1}
    assert status_of(pool, purchase) == "pending" and invoice in api.invoices
    api.invoices[invoice]["status"] = "paid"  # paid before the next poll
    assert watch(pool, NOW + timedelta(minutes=1))[0] == {"paid": 1}
    assert status_of(pool, purchase) == "paid"
    assert row(pool, "select balance from users where id = %s", user)["balance"] == 500


def test_an_invoice_gone_from_the_provider_past_its_ttl_counts_as_deleted(pool, api):
    # gone, its expiration_date is gone too: creation + the TTL (the expires_in it was made with)
    _, purchase, invoice = crypto_purchase(pool, api, created=NOW - timedelta(minutes=70))
    del api.invoices[invoice]  # deleted by an earlier run that died before its commit
    assert watch(pool)[0] == {"gone_at_provider": 1} and status_of(pool, purchase) == "expired"
    _, early, gone = crypto_purchase(pool, api, created=NOW - timedelta(minutes=50))
    del api.invoices[gone]
    assert watch(pool)[0] == {"unknown_at_provider": 1, "expired_still_watched": 1}
    assert status_of(pool, early) == "pending"


def test_a_dry_run_changes_nothing_and_deletes_nothing(pool, api):
    _, purchase, _ = crypto_purchase(pool, api, status="expired")
    _, overdue, _ = crypto_purchase(pool, api, expires_at=NOW - timedelta(hours=1))
    counts, follow_up = watch(pool, dry_run=True)
    assert counts == {"expired": 1, "would_delete": 1} and not follow_up
    assert status_of(pool, purchase) == "pending" and status_of(pool, overdue) == "pending"
    assert api.calls("deleteInvoice") == []


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


def test_no_transaction_is_open_while_the_provider_is_called(pool, api, database):
    import psycopg

    crypto_purchase(pool, api, expires_at=NOW - timedelta(hours=1))
    open_transactions = []

    def look():
        with psycopg.connect(database) as conn:
            open_transactions.append(conn.execute(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and state like 'idle in transaction%%' and pid <> pg_backend_pid()").fetchone()[0])
        return None  # then the fake answers normally

    api.faults += [look, look]  # getInvoices, then deleteInvoice
    assert watch(pool)[0] == {"deleted": 1}
    assert open_transactions == [0, 0]
