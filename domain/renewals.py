"""Auto-renewal (M3): due subscriptions claimed in batches with FOR UPDATE SKIP LOCKED, each renewed in its own savepoint.

The claim locks each due subscription and its user row together
(``FOR UPDATE ... SKIP LOCKED``); a subscription whose user another
transaction holds is left for the next sweep. A subscription is due when it is paid, has auto-renew, is ``active`` or
``grace``, ends within the renewal window (or has ended less than the billing
grace ago), and has no renewal payment for its current period start. Renewing debits the plan's price,
extends ``expires_at`` by the period from the old end, records the payment
(unique per subscription and period start), sets ``last_auto_renewal_at``
and queues a "renewed" notification, all in one savepoint; the key is kept.
A balance that cannot pay moves an ended ``active`` subscription to
``grace`` with one notice per period; until the billing grace ends (then
fast expiry ends it) every sweep renews it once the balance covers the
price. A ``grace`` row already notified for its period whose balance still
cannot pay is not claimed: the attempt would change nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import Connection

from domain import ledger, notifications
from lapse.platform.faults import fault_point
from lapse.platform.sql import queries

SQL = queries(__file__, "renewals")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    counts: Counter[str]
    last_id: int | None  # keyset cursor: the last claimed id, None when nothing was due


def renew_due_batch(conn: Connection[Any], *, now: datetime, window: timedelta,
                    billing_grace: timedelta, after: int = 0, limit: int = 100) -> Batch:
    """Claim one batch of due subscriptions (skipping rows others hold) and renew each in a savepoint.

    A subscription whose billing grace has ended is never claimed: it
    expires (§3a), it is not charged.
    """
    rows: list[Any] = conn.execute(SQL["claim_due"], {
        "now": now, "window": window, "grace": billing_grace, "after": after,
        "limit": limit}).fetchall()
    fault_point("renewal.claimed")
    counts: Counter[str] = Counter()
    for row in rows:
        counts[_renew_one(conn, row, now)] += 1
    return Batch(counts, int(rows[-1]["id"]) if rows else None)


def _renew_one(conn: Connection[Any], sub: Any, now: datetime) -> str:
    params = {"id": sub["id"], "user_id": sub["user_id"], "now": now,
              "period_start": sub["expires_at"]}
    period = sub["expires_at"].isoformat()
    try:
        with conn.transaction():  # a savepoint: one subscription's failure undoes only itself
            ledger.post(conn, sub["user_id"], -int(sub["price"]), reason="renewal",
                        ref=f"subscription:{sub['id']}:{period}", now=now)
            fault_point("renewal.debited")
            conn.execute(SQL["renew"], params | {
                "period": timedelta(days=sub["period_days"]), "amount": sub["price"],
                "currency": sub["currency"], "payment_id": f"renewal:{sub['id']}:{period}"})
            notifications.queue(conn, sub["user_id"], "renewed", f"renewed:{sub['id']}:{period}",
                                _payload(sub), now=now)
            fault_point("renewal.extended")
        return "renewed"
    except ledger.InsufficientBalance:
        return _cannot_pay(conn, sub, params, now)
    except psycopg.errors.IntegrityError as error:
        # the savepoint undid this one; the rest of the batch carries on
        logger.error("renewal of subscription %s refused by the database: %s", sub["id"],
                     error.diag.message_primary)
        return "failed"


def _cannot_pay(conn: Connection[Any], sub: Any, params: dict[str, Any], now: datetime) -> str:
    if now < sub["expires_at"]:
        return "not_enough_balance_yet"  # tried again every sweep until it ends
    if sub["status"] == "active":
        conn.execute(SQL["to_grace"], params)
        conn.execute(SQL["event"], params | {"type": "grace"})
    # claim_due leaves out a grace row notified for this period that cannot pay: this is its notice
    conn.execute(SQL["mark_notified"], params)
    _notify(conn, sub, "renewal_failed", now)
    return "grace"


def _notify(conn: Connection[Any], sub: Any, kind: str, now: datetime) -> None:
    notifications.queue(conn, sub["user_id"], kind,
                        f"{kind}:{sub['id']}:{sub['expires_at'].isoformat()}", _payload(sub),
                        now=now)


def _payload(sub: Any) -> dict[str, Any]:
    return {"subscription_id": sub["id"], "price": sub["price"], "currency": sub["currency"]}
