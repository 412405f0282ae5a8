"""Money actors (SPEC §5): ``finalize_purchase`` (M2).

Thin: validate, fetch the provider's confirmation of a crypto invoice
(before the transaction: no transaction is held across a provider call),
then one transaction under the user lock, follow-up messages after commit.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from actors.declare import lapse_actor
from domain import purchases
from domain.errors import InvalidArguments, RetryableError
from lapse import clock, db
from lapse.after_commit import transaction
from lapse.config import settings

logger = logging.getLogger(__name__)
_CURRENCY = re.compile(r"^[A-Z][A-Z0-9]{2,9}$")


class CryptoPortMissing(RetryableError):
    """Crypto payments are verified with Crypto Pay's getInvoices; that port is not built yet (issue 4, M4)."""


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
    if provider == "crypto":
        raise CryptoPortMissing(f"purchase {purchase_id}: crypto payments wait for the Crypto Pay "
                                "port (requeue from the dead-letter archive once it exists)")
    payment = purchases.Payment(purchase_id, provider, provider_payment_id, amount, currency)
    with db.pool().connection() as conn, transaction(conn):
        done = purchases.finalize_purchase(conn, payment, now=clock.now(),
                                           referral_reward=settings().referral_reward)
    logger.info("finalize_purchase purchase_id=%s provider=%s outcome=%s payment=%s "
                "subscription=%s credited=%s reason=%s", purchase_id, provider, done.outcome,
                done.payment_id, done.subscription_id, done.credited, done.reason)
