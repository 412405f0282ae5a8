"""The money sweeps: auto-renewal (M3) and the crypto payment watcher (M4)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from domain import renewals
from domain.purchases import Invoice
from lapse.platform.after_commit import send_after_commit, transaction
from lapse.platform.config import settings
from lapse.platform.faults import fault_point
from lapse.platform.sql import queries
from lapse.platform.sweeps import SweepContext
from lapse.ports import crypto_pay

SQL = queries(__file__, "money_sweeps")
logger = logging.getLogger(__name__)
BATCH = 100
DELETE_AFTER = timedelta(minutes=5)  # an invoice still active this long after its expiry is deleted
LATE_WINDOW = timedelta(days=3)  # Crypto Pay retries a webhook for 3 days


def sweep_auto_renewals(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """M3: renew every due subscription once; rows another sweep holds are left to it."""
    window = timedelta(hours=settings().renewal_window_hours)
    counts: Counter[str] = Counter()
    after = int((context.cursor or {}).get("after", 0))
    while True:
        with pool.connection() as conn, transaction(conn, dry_run=context.dry_run):
            batch = renewals.renew_due_batch(conn, now=context.now, window=window,
                                             billing_grace=settings().billing_grace,
                                             after=after, limit=BATCH)
        fault_point("renewal.batch_committed")
        if batch.last_id is None:
            return dict(counts)
        counts.update(batch.counts)
        after = batch.last_id
        if context.out_of_time():
            context.resume = {"after": after}
            return dict(counts)


def sweep_crypto_payments(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """M4: poll watched crypto invoices (100 per call); no transaction is held across a provider call.

    Paid → ``finalize_purchase`` (which re-verifies). Expired at the provider
    → the purchase expires. Still ``active`` 5 minutes after its expiry →
    deleted at the provider, and the purchase expires only once the deletion
    succeeded (a failed deletion leaves it pending, polled again). An
    expired purchase stays watched for 3 days (the provider's webhook retry
    period): a payment seen then is credited (M2).
    """
    ttl = timedelta(minutes=settings().crypto_invoice_ttl_minutes)
    counts: Counter[str] = Counter()
    after = int((context.cursor or {}).get("after", 0))
    while True:
        with pool.connection() as conn:
            page: list[Any] = conn.execute(SQL["crypto_to_watch"], {
                "after": after, "now": context.now, "late_window": LATE_WINDOW,
                "limit": crypto_pay.MAX_IDS}).fetchall()
        if not page:
            return dict(counts)
        found = {i.invoice_id: i for i in crypto_pay.port().get_invoices(
            [p["provider_invoice_id"] for p in page])}
        decided = [(p, i, _decide(p, i, context.now, ttl))
                   for p, i in ((p, found.get(p["provider_invoice_id"])) for p in page)]
        # the deletions at the provider first, with no transaction open; then one applies the page
        acted = [(p, i, _delete(p) if outcome == "delete" and not context.dry_run else outcome)
                 for p, i, outcome in decided]
        with pool.connection() as conn, transaction(conn, dry_run=context.dry_run):
            for purchase, invoice, outcome in acted:
                counts[_apply(conn, purchase, invoice, outcome, context)] += 1
        after = page[-1]["id"]
        if context.out_of_time():
            context.resume = {"after": after}
            return dict(counts)


def _decide(purchase: Any, invoice: Invoice | None, now: datetime, ttl: timedelta) -> str:
    """What the provider's view means for the purchase; ``delete`` is done outside any transaction."""
    if invoice is not None and invoice.status == "paid":
        return "paid"
    if purchase["status"] == "expired":
        return "expired_still_watched"
    if invoice is not None and invoice.status == "expired":
        return "expired"
    expires_at = invoice.expires_at if invoice is not None and invoice.expires_at else (
        purchase["created_at"] + ttl)
    if now < expires_at + DELETE_AFTER:
        return "waiting" if invoice is not None else "unknown_at_provider"
    # still payable past its expiry (or already gone): it must be gone before the purchase expires
    return "delete" if invoice is not None else "gone_at_provider"


def _delete(purchase: Any) -> str:
    try:
        crypto_pay.port().delete_invoice(purchase["provider_invoice_id"])
    except (crypto_pay.CryptoPayUnavailable, crypto_pay.CryptoPayGarbage) as error:
        # M4: a purchase whose invoice may still be paid stays pending and is polled again
        logger.warning("deleteInvoice %s of purchase %s failed, polled again: %s",
                       purchase["provider_invoice_id"], purchase["id"], error)
        return "delete_failed"
    return "deleted"


def _apply(conn: Any, purchase: Any, invoice: Invoice | None, outcome: str,
           context: SweepContext) -> str:
    if outcome == "paid" and invoice is not None and not context.dry_run:
        send_after_commit(conn, "finalize_purchase", purchase["id"], "crypto",
                          invoice.invoice_id, invoice.amount, invoice.currency)
    if outcome in ("expired", "deleted", "gone_at_provider"):
        conn.execute(SQL["expire_purchase"], {"id": purchase["id"], "now": context.now})
    return "would_delete" if outcome == "delete" else outcome
