"""finalize_purchase (M2): a provider's payment for a purchase, recorded exactly once.

One transaction under the user lock (the caller's). The (provider,
provider_payment_id) unique key makes a repeated message return the earlier
result. Money a provider took is never dropped: a payment that cannot buy
what it was for (wrong amount or currency, an expired purchase, an exhausted
promo code) fails the purchase and credits the amount to the balance with a
notice. A purchase already ``paid`` or ``failed`` accepts no further payment
id: that message is refused (a permanent error, archived for an operator),
because crediting it automatically let forged messages mint money. A crypto
payment's id is its invoice id, and it must come with the provider's own
confirmation of the invoice, fetched before the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from domain import ledger, lifecycle, notifications
from domain.errors import PermanentError
from domain.retention import lock_user
from lapse.platform.faults import fault_point
from lapse.platform.sql import queries

SQL = queries(__file__, "purchases")


class UnknownPurchase(PermanentError):
    """A payment for a purchase id that does not exist: no user to credit, an operator must look."""

    def __init__(self, purchase_id: int) -> None:
        super().__init__(f"no purchase with id {purchase_id}")
        self.purchase_id = purchase_id


class UnverifiedPayment(PermanentError):
    """A crypto payment the provider does not confirm as paid for this invoice, amount and currency."""

    def __init__(self, purchase_id: int, problem: str) -> None:
        super().__init__(f"purchase {purchase_id}: {problem}")
        self.purchase_id = purchase_id


class PaymentRefused(PermanentError):
    """A payment message M2 refuses without crediting anything: an operator reviews it in the archive."""

    def __init__(self, purchase_id: int, problem: str) -> None:
        super().__init__(f"purchase {purchase_id}: {problem}")
        self.purchase_id = purchase_id


@dataclass(frozen=True)
class Invoice:
    """The provider's own view of an invoice (Crypto Pay ``getInvoices``)."""

    invoice_id: str
    status: str  # active, paid, expired
    amount: int
    currency: str
    expires_at: datetime | None = None  # expiration_date: when created with expires_in


@dataclass(frozen=True)
class Payment:
    purchase_id: int
    provider: str
    provider_payment_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Finalized:
    outcome: str  # paid, failed, duplicate
    payment_id: int
    subscription_id: int | None = None
    credited: int = 0
    reason: str | None = None


def finalize_purchase(conn: Connection[Any], payment: Payment, *, now: datetime,
                      referral_reward: int, invoice: Invoice | None = None) -> Finalized:
    """Record ``payment`` once: pay the purchase, or fail it and credit what was paid."""
    purchase: Any = conn.execute(SQL["purchase_and_user_for_update"],
                                 {"id": payment.purchase_id}).fetchone()
    if purchase is None:
        raise UnknownPurchase(payment.purchase_id)
    fault_point("finalize.locked")
    earlier: Any = conn.execute(SQL["payment_by_provider_id"], {
        "provider": payment.provider,
        "provider_payment_id": payment.provider_payment_id}).fetchone()
    if earlier is not None:
        return Finalized("duplicate", int(earlier["id"]), earlier["subscription_id"])
    _refuse(purchase, payment)
    if payment.provider == "crypto":
        _verify(purchase, payment, invoice)
    problem = _mismatch(purchase, payment)
    if problem is not None:
        return _fail(conn, purchase, payment, problem, now)
    if purchase["promo_code"] is not None or payment.provider == "balance":
        try:
            with conn.transaction():  # a savepoint: a refused debit gives the promo use back
                _consume_promo(conn, purchase)
                if payment.provider == "balance":
                    ledger.post(conn, purchase["user_id"], -payment.amount, reason="purchase",
                                ref=f"purchase:{purchase['id']}", now=now)
        except (_PromoExhausted, ledger.InsufficientBalance) as refused:
            return _fail(conn, purchase, payment, str(refused), now)
    granted = None
    if purchase["kind"] == "topup":
        ledger.post(conn, purchase["user_id"], payment.amount, reason="topup",
                    ref=f"purchase:{purchase['id']}", now=now)
    else:
        granted = lifecycle.apply_plan(conn, purchase["user_id"], purchase["plan_code"], now=now)
        _reward_referrer(conn, purchase, referral_reward, now)
    payment_id = _record(conn, purchase, payment, "purchase", granted, now, query="settle")
    notifications.queue(conn, purchase["user_id"], "payment_credited",
                        f"payment_credited:{payment.provider}:{payment.provider_payment_id}",
                        {"purchase_id": purchase["id"], "purchase_kind": purchase["kind"],
                         "amount": payment.amount, "currency": payment.currency}, now=now)
    fault_point("finalize.money_moved")
    return Finalized("paid", payment_id, granted.subscription_id if granted else None)


class _PromoExhausted(Exception):
    pass


def _consume_promo(conn: Connection[Any], purchase: Any) -> None:
    """One use of the purchase's promo code, never beyond max uses (the row is locked by the update)."""
    if purchase["promo_code"] is None:
        return
    if conn.execute(SQL["consume_promo"], {"code": purchase["promo_code"]}).fetchone() is None:
        raise _PromoExhausted(f"promo code {purchase['promo_code']} is exhausted")


def _refuse(purchase: Any, payment: Payment) -> None:
    """M2's refusals: nothing is credited, the message goes to the archive for an operator."""
    if purchase["status"] in ("paid", "failed"):
        raise PaymentRefused(purchase["id"], f"already {purchase['status']}: a further payment "
                             f"{payment.provider}:{payment.provider_payment_id} is credited by "
                             "an operator, never automatically")
    if purchase["kind"] == "topup" and "balance" in (payment.provider, purchase["provider"]):
        raise PaymentRefused(purchase["id"], "a top-up cannot be paid from the balance")
    if payment.provider == "balance" and purchase["provider"] != "balance":
        # Nothing was paid: failing the purchase would only make its real payment be refused.
        raise PaymentRefused(purchase["id"], f"a balance payment for a {purchase['provider']} "
                             "purchase: it is paid through its own provider")


def _verify(purchase: Any, payment: Payment, invoice: Invoice | None) -> None:
    if payment.provider_payment_id != purchase["provider_invoice_id"]:
        raise UnverifiedPayment(purchase["id"], f"payment id {payment.provider_payment_id} is not "
                                f"this purchase's invoice ({purchase['provider_invoice_id']}): "
                                "a crypto payment's id is its invoice id")
    if invoice is None:
        raise UnverifiedPayment(purchase["id"], "a crypto payment needs the provider's invoice")
    if invoice.invoice_id != purchase["provider_invoice_id"]:
        raise UnverifiedPayment(purchase["id"], f"invoice {invoice.invoice_id} is not this "
                                f"purchase's ({purchase['provider_invoice_id']})")
    if invoice.status != "paid" or (invoice.amount, invoice.currency) != (payment.amount,
                                                                          payment.currency):
        raise UnverifiedPayment(purchase["id"], f"the provider reports {invoice.status} "
                                f"{invoice.amount} {invoice.currency}")


def _mismatch(purchase: Any, payment: Payment) -> str | None:
    if payment.provider != purchase["provider"]:
        return f"paid through {payment.provider}, the purchase is for {purchase['provider']}"
    if purchase["status"] != "pending":
        return f"the purchase is already {purchase['status']}"
    if (payment.amount, payment.currency) != (purchase["amount"], purchase["currency"]):
        return (f"paid {payment.amount} {payment.currency}, the purchase costs "
                f"{purchase['amount']} {purchase['currency']}")
    return None


def _fail(conn: Connection[Any], purchase: Any, payment: Payment, problem: str,
          now: datetime) -> Finalized:
    """The purchase (pending or expired) fails; what the provider took is credited, with a notice."""
    conn.execute(SQL["set_status"], {"id": purchase["id"], "status": "failed", "now": now})
    credited = 0
    if payment.provider != "balance":  # a balance payment took nothing yet
        ledger.post(conn, purchase["user_id"], payment.amount, reason="unmatched_payment",
                    ref=f"{payment.provider}:{payment.provider_payment_id}", now=now)
        credited = payment.amount
    payment_id = _record(conn, purchase, payment, "unmatched", None, now)
    notifications.queue(conn, purchase["user_id"], "payment_unmatched",
                        f"payment_unmatched:{payment.provider}:{payment.provider_payment_id}",
                        {"purchase_id": purchase["id"], "problem": problem,
                         "credited": credited, "currency": payment.currency}, now=now)
    return Finalized("failed", payment_id, None, credited, problem)


def _reward_referrer(conn: Connection[Any], purchase: Any, reward: int, now: datetime) -> None:
    row: Any = conn.execute(SQL["referrer_if_first_plan"], {
        "user_id": purchase["user_id"], "purchase_id": purchase["id"]}).fetchone()
    if row is None or reward <= 0:
        return
    lock_user(conn, row["referred_by"])
    try:
        ledger.post(conn, row["referred_by"], reward, reason="referral",
                    ref=f"user:{purchase['user_id']}", now=now)
    except ledger.AlreadyPosted:
        return  # rewarded once already: the reference is the referred user


def _record(conn: Connection[Any], purchase: Any, payment: Payment, kind: str,
            granted: lifecycle.Granted | None, now: datetime, query: str = "insert_payment") -> int:
    """The payment row; a plan payment records the period it pays for (§3a)."""
    row: Any = conn.execute(SQL[query], {
        "user_id": purchase["user_id"], "purchase_id": purchase["id"],
        "subscription_id": granted.subscription_id if granted else None,
        "period_start": granted.period_start if granted else None,
        "period_end": granted.period_end if granted else None, "provider": payment.provider,
        "provider_payment_id": payment.provider_payment_id, "amount": payment.amount,
        "currency": payment.currency, "kind": kind, "now": now}).fetchone()
    return int(row["id"])
