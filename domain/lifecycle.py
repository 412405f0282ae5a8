"""Subscription life-cycle transitions that end or grant entitlement (SPEC §3a), and family and sponsorship changes.

Each transition runs on the caller's transaction under the user lock and
writes a ``subscription_events`` row. Every one that ends an entitlement
source enqueues ``tag_recordings`` for everyone it affects (R2: no "looks
premium" filter; the tagging actor decides); every grant sends
``restore_recordings`` (R5). Purchases and renewals (issue 4) use the same
helpers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import Connection

from domain import keys, ledger, notifications
from domain.errors import PermanentError
from domain.retention import lock_user, request_restore, request_tagging
from lapse.platform.after_commit import send_after_commit
from lapse.platform.sql import queries

SQL = queries(__file__, "lifecycle")


class TransitionRefused(PermanentError):
    """A transition §3a does not allow from the subscription's current state."""

    def __init__(self, subscription_id: int, problem: str) -> None:
        super().__init__(f"subscription {subscription_id}: {problem}")
        self.subscription_id = subscription_id


class NotFound(PermanentError):
    """A subscription, family membership or sponsorship that does not exist (or is already ended)."""


@dataclass(frozen=True)
class Expired:
    subscription_id: int
    user_id: int
    rule: str


ACTIVATION_DEADLINE = timedelta(hours=24)


def due_expiries(conn: Connection[Any], *, now: datetime, billing_grace: timedelta,
                 after: int = 0, until: int | None = None, limit: int = 500,
                 activation_deadline: timedelta = ACTIVATION_DEADLINE) -> list[tuple[int, int]]:
    """(subscription id, user id) of current subscriptions whose expiry is due, keyset by id
    in ``(after, until]`` (``until`` None: no upper bound)."""
    rows = conn.execute(SQL["due_expiries"], {"now": now, "grace": billing_grace, "after": after,
                                              "until": until, "limit": limit,
                                              "activation_deadline": activation_deadline}).fetchall()
    return [(int(r["id"]), int(r["user_id"])) for r in rows]


def due_expiry_bounds(conn: Connection[Any], shards: int, *, now: datetime,
                      billing_grace: timedelta, after: int = 0,
                      activation_deadline: timedelta = ACTIVATION_DEADLINE) -> list[int]:
    """Ascending ids b1 < … < b(k-1), k ≤ ``shards``, splitting the due set after ``after`` into
    near-equal ranges (after, b1], (b1, b2], …, (b(k-1), ∞) that cover every id after ``after``."""
    rows = conn.execute(SQL["due_expiry_bounds"], {"now": now, "grace": billing_grace,
                                                   "after": after, "shards": shards,
                                                   "activation_deadline": activation_deadline})
    return [int(r["until"]) for r in rows.fetchall()]


def expire_if_due(conn: Connection[Any], subscription_id: int, user_id: int, *, now: datetime,
                  billing_grace: timedelta,
                  activation_deadline: timedelta = ACTIVATION_DEADLINE) -> Expired | None:
    """§3a's time-driven ends: trial, paid active (auto-renew off) or cancelled past expiry,
    grace past the billing grace, and a paid row still pending after the activation deadline
    (its payments refunded to the balance, with a notice)."""
    members = lock_family(conn, user_id, now=now)
    sub = _subscription(conn, subscription_id)
    if sub["kind"] == "paid" and sub["status"] == "pending":
        if sub["started_at"] + activation_deadline > now:
            return None
        _end(conn, sub, ended_at=now, event="activation_failed", now=now, members=members)
        credited = _credit_payments(conn, sub, reason="activation_refund", now=now)
        notifications.queue(conn, user_id, "activation_failed",
                            f"activation_failed:{subscription_id}",
                            {"subscription_id": subscription_id, "credited": credited,
                             **_currency(conn, sub)}, now=now)
        return Expired(subscription_id, user_id, "activation_deadline")
    pending_trial = sub["kind"] == "trial" and sub["status"] == "pending"  # §3a: ends unactivated
    if (sub["status"] not in ("active", "cancelled", "grace") and not pending_trial) \
            or sub["expires_at"] > now:
        return None
    if sub["kind"] == "trial":
        rule, ended_at = "trial_ended", sub["expires_at"]
    elif sub["status"] == "cancelled" or (sub["status"] == "active" and not sub["auto_renew"]):
        rule, ended_at = "paid_ended", sub["expires_at"]
    elif sub["expires_at"] + billing_grace > now:
        return None  # in billing grace: the renewal sweep charges it or moves it to grace
    else:
        # grace, or auto-renewing active the renewal sweep never reached: never charged now
        rule, ended_at = "grace_ended", now
    _end(conn, sub, ended_at=ended_at, event="expired", now=now, members=members)
    return Expired(subscription_id, user_id, rule)


@dataclass(frozen=True)
class Granted:
    """What a plan purchase did to the user's subscriptions (§3a)."""

    subscription_id: int
    transition: str  # new_pending, converted_trial, extended
    period_start: datetime  # the period this payment pays for (§3a)
    period_end: datetime


def apply_plan(conn: Connection[Any], user_id: int, plan_code: str, *, now: datetime) -> Granted:
    """§3a's plan purchase, under the user lock: extend, convert a trial, or a new paid row.

    A new key only when the user has none: a converted trial's key moves to
    the paid row. A new ``pending`` row is activated by
    ``activate_subscription`` after commit. Every grant sends
    ``restore_recordings`` (R5).
    """
    members = lock_family(conn, user_id, now=now)
    plan: Any = conn.execute(SQL["plan"], {"code": plan_code}).fetchone()
    if plan is None:
        raise NotFound(f"no plan {plan_code!r}")
    period = timedelta(days=int(plan["period_days"]))
    current: Any = conn.execute(SQL["current_for_update"], {"user_id": user_id}).fetchone()
    if current is not None and current["kind"] == "paid":
        extended: Any = conn.execute(SQL["extend"], {"id": current["id"],
                                                     "period": period}).fetchone()
        _event(conn, current, "extended", now)
        assert extended is not None
        _restore(conn, user_id, members if extended["status"] != "pending" else [])
        return Granted(int(current["id"]), "extended", extended["expires_at"] - period,
                       extended["expires_at"])
    key, status, transition = uuid.uuid4(), "pending", "new_pending"
    if current is not None:  # a trial: it ends now and its key moves to the paid row
        conn.execute(SQL["convert_trial"], {"id": current["id"], "now": now})
        _event(conn, current, "converted", now)
        key, transition = current["access_key"] or key, "converted_trial"
        status = "active" if current["status"] == "active" else "pending"
    row: Any = conn.execute(SQL["new_paid"], {"user_id": user_id, "status": status,
                                              "plan": plan_code, "now": now,
                                              "expires_at": now + period, "key": key}).fetchone()
    sub = {"id": row["id"], "user_id": user_id}
    _event(conn, sub, "purchased", now)
    if status == "pending":
        send_after_commit(conn, "activate_subscription", int(row["id"]))
    # a pending row keeps only its buyer's recordings (§3 source 2), an active one the family's too
    _restore(conn, user_id, members if status != "pending" else [])
    return Granted(int(row["id"]), transition, now, now + period)


def lock_family(conn: Connection[Any], owner_id: int, *, now: datetime) -> list[int]:
    """Lock an owner, then the owner's current family members in ascending id (SPEC §3); return them."""
    lock_user(conn, owner_id)
    members = [int(m["member_id"]) for m in conn.execute(
        SQL["current_members"], {"owner_id": owner_id, "now": now}).fetchall()]
    for member in members:
        lock_user(conn, member)
    return members


def _restore(conn: Connection[Any], user_id: int, members: list[int]) -> None:
    """R5: ``restore_recordings`` to the buyer and to every family member the grant gives retention."""
    for user in (user_id, *members):
        request_restore(conn, user)


def set_auto_renew(conn: Connection[Any], subscription_id: int, on: bool, *, now: datetime) -> str:
    """Switch auto-renew: active → cancelled, grace → expired, cancelled → active (before expiry)."""
    sub = _locked_subscription(conn, subscription_id, now=now)
    status = sub["status"]
    if sub["kind"] != "paid":
        raise TransitionRefused(subscription_id, "a trial has no auto-renew")
    if not on and status == "active":
        conn.execute(SQL["set_status"], {"id": subscription_id, "status": "cancelled",
                                         "auto_renew": False})
        _event(conn, sub, "cancelled", now)
        return "cancelled"
    if not on and status == "grace":
        _end(conn, sub, ended_at=now, event="expired", now=now)
        return "expired"
    if on and status == "cancelled" and now < sub["expires_at"]:
        conn.execute(SQL["set_status"], {"id": subscription_id, "status": "active",
                                         "auto_renew": True})
        _event(conn, sub, "auto_renew_on", now)
        return "active"
    raise TransitionRefused(subscription_id, f"cannot switch auto-renew {'on' if on else 'off'} "
                            f"from {status}")


def revoke(conn: Connection[Any], subscription_id: int, *, now: datetime) -> None:
    """An operator revokes a paid subscription: expired now, event ``revoked``."""
    sub = _locked_subscription(conn, subscription_id, now=now)
    if sub["kind"] != "paid" or sub["status"] not in ("active", "grace", "cancelled"):
        raise TransitionRefused(subscription_id, f"cannot revoke a {sub['kind']} {sub['status']} "
                                "subscription")
    _end(conn, sub, ended_at=now, event="revoked", now=now)


class RefundTooLarge(PermanentError):
    """An operator's refund amount above what §3a allows for the subscription; nothing was changed."""

    def __init__(self, subscription_id: int, amount: int, refundable: int) -> None:
        super().__init__(f"subscription {subscription_id}: cannot refund {amount}, at most "
                         f"{refundable} (the periods not yet used)")
        self.subscription_id, self.amount, self.refundable = subscription_id, amount, refundable


def refund(conn: Connection[Any], subscription_id: int, *, now: datetime,
           amount: int | None = None) -> int:
    """§3a's refund: expired now (event ``refunded``), the unused periods credited back once; returns the credit.

    Refundable: every plan payment (purchase or renewal) whose period starts
    after ``now``, plus the one whose period contains ``now``; nothing in
    ``grace``. ``amount`` replaces that sum and may not exceed it. One ledger
    row, reference ``subscription:<id>``.
    """
    sub = _locked_subscription(conn, subscription_id, now=now)
    if sub["kind"] != "paid" or sub["status"] not in ("active", "grace", "cancelled"):
        raise TransitionRefused(subscription_id, f"cannot refund a {sub['kind']} {sub['status']} "
                                "subscription")
    refundable = 0
    if sub["status"] != "grace":
        row: Any = conn.execute(SQL["refundable"], {"id": subscription_id, "now": now}).fetchone()
        refundable = int(row["refundable"])
    if amount is not None and amount > refundable:
        raise RefundTooLarge(subscription_id, amount, refundable)
    credit = refundable if amount is None else amount
    _end(conn, sub, ended_at=now, event="refunded", now=now)
    if credit > 0:
        ledger.post(conn, sub["user_id"], credit, reason="refund",
                    ref=f"subscription:{subscription_id}", now=now)
    notifications.queue(conn, sub["user_id"], "refunded", f"refunded:{subscription_id}",
                        {"subscription_id": subscription_id, "credited": credit,
                         **_currency(conn, sub)}, now=now)
    return credit


def _currency(conn: Connection[Any], sub: Any) -> dict[str, str]:
    """The currency of the subscription's plan, for a notice's amounts (none for a trial)."""
    row: Any = conn.execute(SQL["plan_currency"], {"id": sub["id"]}).fetchone()
    return {"currency": row["currency"]} if row is not None else {}


def _credit_payments(conn: Connection[Any], sub: dict[str, Any], *, reason: str,
                     now: datetime) -> int:
    """Credit everything paid for the subscription (purchases and renewals) back, once: a paid
    row that never became active used none of it."""
    paid: Any = conn.execute(SQL["paid_for"], {"id": sub["id"]}).fetchone()
    if paid["paid"] > 0:
        ledger.post(conn, sub["user_id"], int(paid["paid"]), reason=reason,
                    ref=f"subscription:{sub['id']}", now=now)
    return int(paid["paid"])


def add_family_member(conn: Connection[Any], owner_id: int, member_id: int, *, now: datetime) -> None:
    lock_user(conn, owner_id)  # every family change: owner, then member (SPEC §3)
    lock_user(conn, member_id)
    conn.execute(SQL["add_member"], {"owner_id": owner_id, "member_id": member_id, "now": now})
    request_restore(conn, member_id)


def remove_family_member(conn: Connection[Any], owner_id: int, member_id: int, *,
                         now: datetime) -> None:
    lock_user(conn, owner_id)  # every family change: owner, then member (SPEC §3)
    lock_user(conn, member_id)
    if conn.execute(SQL["remove_member"], {"owner_id": owner_id, "member_id": member_id,
                                           "now": now}).fetchone() is None:
        raise NotFound(f"user {member_id} is not a current member of {owner_id}'s family")
    request_tagging(conn, member_id, now=now, reason="family_removed")


def grant_sponsorship(conn: Connection[Any], user_id: int, *, sponsor: str, now: datetime) -> int:
    lock_user(conn, user_id)
    row: Any = conn.execute(SQL["grant_sponsorship"], {"user_id": user_id, "sponsor": sponsor,
                                                       "now": now}).fetchone()
    request_restore(conn, user_id)
    return int(row["id"])


def revoke_sponsorship(conn: Connection[Any], sponsorship_id: int, user_id: int, *,
                       now: datetime) -> None:
    lock_user(conn, user_id)
    if conn.execute(SQL["revoke_sponsorship"], {"id": sponsorship_id, "now": now}).fetchone() is None:
        raise NotFound(f"no active sponsorship {sponsorship_id}")
    request_tagging(conn, user_id, now=now, reason="sponsorship_revoked")


def _subscription(conn: Connection[Any], subscription_id: int) -> dict[str, Any]:
    row = conn.execute(SQL["subscription_for_update"], {"id": subscription_id}).fetchone()
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return dict(row)


def _locked_subscription(conn: Connection[Any], subscription_id: int, *,
                         now: datetime) -> dict[str, Any]:
    # The user lock comes first (SPEC §3's order): the owner, the family members
    # whose retention the transition changes, then the subscription row.
    owner = conn.execute(SQL["subscription_owner"], {"id": subscription_id}).fetchone()
    if owner is None:
        raise NotFound(f"no subscription {subscription_id}")
    lock_family(conn, owner["user_id"], now=now)
    return _subscription(conn, subscription_id)


def _event(conn: Connection[Any], sub: dict[str, Any], type_: str, now: datetime,
           access_key: UUID | None = None) -> None:
    conn.execute(SQL["event"], {"subscription_id": sub["id"], "user_id": sub["user_id"],
                                "type": type_, "now": now, "access_key": access_key})


def _end(conn: Connection[Any], sub: dict[str, Any], *, ended_at: datetime, event: str,
         now: datetime, members: list[int] | None = None) -> None:
    """Move to ``expired``: the key nulled and its panel clients ``removing`` (the event names the
    key), then ``remove_client`` after commit; tagging for the user and, for a paid plan, each
    family member. Every move to expired goes through here (SPEC §3a); a trial conversion does
    not: its key moves to the paid row.

    ``sub`` is the row read ``for update`` in this transaction (its key is the key now);
    ``members`` the owner's current members ``lock_family`` returned in it, if the caller has them."""
    access_key = sub["access_key"]
    conn.execute(SQL["expire"], {"id": sub["id"], "ended_at": ended_at, "type": event, "now": now,
                                 "access_key": access_key})
    if access_key is not None:
        keys.mark_removing(conn, access_key, now=now)
        send_after_commit(conn, "remove_client", str(access_key))
    request_tagging(conn, sub["user_id"], now=now, reason=f"subscription_{event}")
    if sub["kind"] == "paid":
        if members is None:
            members = [int(m["member_id"]) for m in conn.execute(
                SQL["current_members"], {"owner_id": sub["user_id"], "now": now}).fetchall()]
        for member in members:
            request_tagging(conn, member, now=now, reason="family_owner_lapsed")
