"""Money actors (SPEC §5). Their logic comes with issue 4."""

from __future__ import annotations

import re
from typing import Literal

from actors.declare import lapse_actor
from actors.pending import not_implemented
from domain.errors import InvalidArguments

ISSUE = "issue 4 (money) not implemented yet"
_CURRENCY = re.compile(r"^[A-Z][A-Z0-9]{2,9}$")


@lapse_actor(queue_name="payments")
def finalize_purchase(
    purchase_id: int,
    provider: Literal["balance", "crypto", "telegram"],
    provider_payment_id: str,
    amount: int,
    currency: str,
) -> None:
    """Record a provider's payment for a purchase exactly once (M2). Not implemented yet: logs only."""
    if not _CURRENCY.match(currency):
        raise InvalidArguments("finalize_purchase", f"currency must be a currency code, got {currency!r}")
    not_implemented("finalize_purchase", ISSUE, purchase_id=purchase_id, provider=provider,
                    amount=amount, currency=currency)
