"""The money sweeps: auto-renewal (M3) and the crypto payment watcher (M4)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from domain import renewals
from lapse.platform.after_commit import send_after_commit, transaction
from lapse.platform.config import settings
from lapse.platform.faults import fault_point
from lapse.platform.sql import queries
from lapse.platform.sweeps import SweepContext
from lapse.ports import crypto_pay

SQL = queries(__file__, "money_sweeps")
BATCH = 100
LATE_WINDOW = timedelta(days=1)


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
    """M4: poll pending crypto invoices (100 per call, no transaction held across the call).

    Paid → ``finalize_purchase`` (which re-verifies); expired at the provider
    or older than the TTL → the purchase expires. Purchases expired within
    the last day are still watched, so a late payment is credited.
    """
    ttl = timedelta(minutes=settings().crypto_invoice_ttl_minutes)
    counts: Counter[str] = Counter()
    after = int((context.cursor or {}).get("after", 0))
    while True:
        with pool.connection() as conn:
            page: list[Any] = conn.execute(SQL["crypto_to_watch"], {
                "after": after, "now": context.now, "late_window": LATE_WINDOW,
                "limit": crypto_pay.MAX_IDS}).fetchall()
            conn.rollback()
        if not page:
            return dict(counts)
        found = {i.invoice_id: i for i in crypto_pay.port().get_invoices(
            [p["provider_invoice_id"] for p in page])}
        with pool.connection() as conn, transaction(conn, dry_run=context.dry_run):
            for purchase in page:
                counts[_watch(conn, purchase, found.get(purchase["provider_invoice_id"]),
                              context, ttl)] += 1
        after = page[-1]["id"]
        if context.out_of_time():
            context.resume = {"after": after}
            return dict(counts)


def _watch(conn: Any, purchase: Any, invoice: Any, context: SweepContext, ttl: timedelta) -> str:
    if invoice is not None and invoice.status == "paid":
        if not context.dry_run:
            send_after_commit(conn, "finalize_purchase", purchase["id"], "crypto",
                              invoice.invoice_id, invoice.amount, invoice.currency)
        return "paid"
    if purchase["status"] == "expired":
        return "expired_still_watched"
    if (invoice is not None and invoice.status == "expired") or (
            purchase["created_at"] < context.now - ttl):
        conn.execute(SQL["expire_purchase"], {"id": purchase["id"]})
        return "expired"
    return "waiting" if invoice is not None else "unknown_at_provider"
