"""Money actors (SPEC §5): ``finalize_purchase`` (M2).

Thin: validate, fetch the provider's confirmation of a crypto invoice
(before the transaction: no transaction is held across a provider call),
then one transaction under the user lock, follow-up messages after commit.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from actors.declare import lapse_actor
from domain import purchases
from domain.errors import InvalidArguments
from lapse.flows import money_sweeps
from lapse.platform import clock, db
from lapse.platform.after_commit import transaction
from lapse.platform.config import settings
from lapse.platform.faults import fault_point
from lapse.ports import crypto_pay

logger = logging.getLogger(__name__)
_CURRENCY = re.compile(r"^[A-Z][A-Z0-9]{2,9}$")


@lapse_actor(queue_name="payments")
def finalize_purchase(
    purchase_id: int,
    provider: Literal["balance", "crypto", "telegram"],
    provider_payment_id: str,
    amount: int,
    currency: str,
) -> None:
    """Record a provider's payment for a purchase exactly once (M2)."""
    if not _CURRENCY.match(currency):
        raise InvalidArguments("finalize_purchase", f"currency must be a currency code, got {currency!r}")
    invoice = _provider_invoice(purchase_id) if provider == "crypto" else None
    fault_point("finalize.after_provider_call")
    payment = purchases.Payment(purchase_id, provider, provider_payment_id, amount, currency)
    with db.pool().connection() as conn, transaction(conn):
        done = purchases.finalize_purchase(conn, payment, now=clock.now(), invoice=invoice,
                                           referral_reward=settings().referral_reward)
        fault_point("finalize.before_commit")
    logger.info("finalize_purchase purchase_id=%s provider=%s outcome=%s payment=%s "
                "subscription=%s credited=%s reason=%s", purchase_id, provider, done.outcome,
                done.payment_id, done.subscription_id, done.credited, done.reason)


def _provider_invoice(purchase_id: int) -> purchases.Invoice | None:
    """Crypto Pay's own view of the purchase's invoice, fetched before any transaction opens."""
    with db.pool().connection() as conn:
        row: Any = conn.execute(money_sweeps.SQL["invoice_of"], {"id": purchase_id}).fetchone()
    if row is None:
        raise purchases.UnknownPurchase(purchase_id)
    if row["provider_invoice_id"] is None:
        return None  # finalize refuses it: a crypto payment needs the provider's invoice
    found = crypto_pay.port().get_invoices([row["provider_invoice_id"]])
    return found[0] if found else None
