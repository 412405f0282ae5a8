"""Sign-up and activation (SPEC §3a rows 1–2, §6 A1): decisions in short transactions.

The panel calls happen between them, in ``lapse.flows.activation``: ``claim``
takes the row's lease and persists the key (before any panel is called) and
says which usable panels still lack it; ``finish`` records what each panel
did and marks the row ``active`` only from ``pending``, only for the lease
holder, only when at least one panel holds the key. A row that expired
meanwhile has the client we added removed instead (``remove_client``), unless
the key moved to another current row (a trial's conversion).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from domain import panels
from domain.errors import ActivationBusy, NoTelegramId, UnknownSubscription
from domain.lifecycle import ACTIVATION_DEADLINE, lock_family
from domain.retention import lock_user, request_restore
from lapse.platform.after_commit import send_after_commit
from lapse.platform.sql import queries

SQL = queries(__file__, "activation")
LEASE = timedelta(minutes=6)  # longer than the actor's 5-minute time limit


@dataclass(frozen=True)
class TrialStart:
    """What ``start_trial`` did: ``started`` (with the row), or why it changed nothing."""

    outcome: str  # started, had_trial, has_current
    subscription_id: int | None = None


def start_trial(conn: Connection[Any], user_id: int, *, now: datetime,
                length: timedelta) -> TrialStart:
    """§3a sign-up: a trial ``pending`` row with its key, then ``activate_subscription``;
    nothing for a user who ever had a trial or has a current subscription.

    NoTelegramId (permanent, nothing changed) for a user the bot cannot reach: sign-up comes
    from the bot. A paid row of such a user still activates: it was paid for."""
    lock_user(conn, user_id)
    seen: Any = conn.execute(SQL["user_subscriptions"], {"user_id": user_id}).fetchone()
    if seen["telegram_id"] is None:
        raise NoTelegramId(user_id)
    if seen["had_trial"]:
        return TrialStart("had_trial")
    if seen["has_current"]:
        return TrialStart("has_current")
    row: Any = conn.execute(SQL["new_trial"], {"user_id": user_id, "now": now,
                                               "expires_at": now + length,
                                               "key": uuid.uuid4()}).fetchone()
    subscription_id = int(row["id"])
    _event(conn, subscription_id, user_id, "trial_started", now)
    send_after_commit(conn, "activate_subscription", subscription_id)
    return TrialStart("started", subscription_id)


@dataclass(frozen=True)
class Claim:
    """A lease on a pending row: its key, and the usable panels that do not hold it yet."""

    subscription_id: int
    user_id: int
    kind: str
    access_key: str
    owner: str
    to_add: list[panels.Panel]
    held: list[int]


def claim(conn: Connection[Any], subscription_id: int, *, now: datetime,
          lease: timedelta = LEASE) -> Claim | str:
    """Take the activation lease and persist the key; a string says why there is nothing to do.

    ActivationBusy when another worker holds the row or its lease (retried later);
    UnknownSubscription for an id with no row (permanent, nothing changed).
    """
    row: Any = conn.execute(SQL["lock_for_activation"], {"id": subscription_id}).fetchone()
    if row is None:
        if conn.execute(SQL["subscription_exists"], {"id": subscription_id}).fetchone() is None:
            raise UnknownSubscription(subscription_id)
        raise ActivationBusy(subscription_id, "another transaction")
    if row["status"] != "pending":
        return f"already {row['status']}"
    if row["activation_lease_until"] is not None and row["activation_lease_until"] > now:
        raise ActivationBusy(subscription_id, f"the lease until {row['activation_lease_until']}")
    key, owner = str(row["access_key"] or uuid.uuid4()), str(uuid.uuid4())
    conn.execute(SQL["take_lease"], {"id": subscription_id, "key": key, "until": now + lease,
                                     "owner": owner})
    states = {r["panel_id"]: r["state"] for r in panels.client_states(conn, key)}
    usable = panels.usable_panels(conn)
    to_add = [p for p in usable if states.get(p.id) != "present"]
    for panel in to_add:
        panels.record_client_state(conn, key, panel.id, "adding", now=now)
    return Claim(subscription_id, int(row["user_id"]), row["kind"], key, owner, to_add,
                 [p.id for p in usable if states.get(p.id) == "present"])


@dataclass
class Finished:
    """What ``finish`` did: ``activated``, ``no_panel`` (retry), ``lease_lost`` or ``no_longer_pending``."""

    outcome: str
    provision: list[int] = field(default_factory=list)  # panels sent provision_client
    removed: list[int] = field(default_factory=list)  # panels sent remove_client


def finish(conn: Connection[Any], claim: Claim, added: dict[int, str | None],
           refused: dict[int, str], *, now: datetime) -> Finished:
    """Record each panel's outcome (None = holds the key, else the error) and decide (§3a row 2)."""
    members = lock_family(conn, claim.user_id, now=now)
    row: Any = conn.execute(SQL["lock_subscription"], {"id": claim.subscription_id}).fetchone()
    for panel_id, error in added.items():
        panels.record_client_state(conn, claim.access_key, panel_id,
                                   "failed" if error else "present", now=now, error=error)
    for panel_id, error in refused.items():
        panels.mark_login_refused(conn, panel_id, error, now=now)
        panels.record_client_state(conn, claim.access_key, panel_id, "failed", now=now,
                                   error=error)
    holding = [p for p, error in added.items() if error is None]
    if row["status"] != "pending":
        return Finished("no_longer_pending", removed=_remove_if_not_current(
            conn, claim.access_key, holding, now=now))
    if not holding and not claim.held:
        conn.execute(SQL["release_lease"], {"id": claim.subscription_id, "owner": claim.owner})
        return Finished("no_panel")
    if conn.execute(SQL["mark_active"], {"id": claim.subscription_id,
                                         "owner": claim.owner}).fetchone() is None:
        return Finished("lease_lost")
    _event(conn, claim.subscription_id, claim.user_id, "activated", now)
    for user in (claim.user_id, *(members if claim.kind == "paid" else ())):
        request_restore(conn, user)  # R5: the row now gives access (an owner's: the family's too)
    failed = [p for p, error in added.items() if error is not None]
    for panel_id in failed:
        send_after_commit(conn, "provision_client", claim.access_key, panel_id)
    return Finished("activated", provision=failed)


def _remove_if_not_current(conn: Connection[Any], key: str, holding: list[int], *,
                           now: datetime) -> list[int]:
    """A late activation: remove what it added, unless the key is another current row's."""
    if conn.execute(SQL["key_is_current"], {"key": key}).fetchone() is not None:
        return []
    for panel_id in holding:
        panels.record_client_state(conn, key, panel_id, "removing", now=now)
        send_after_commit(conn, "remove_client", key, panel_id)
    return holding


def provision_target(conn: Connection[Any], access_key: str, panel_id: int, *,
                     now: datetime) -> panels.Panel | str:
    """The panel to add a current key to (marked ``adding``), or why not: the key is no
    longer current, or the panel is disabled or refusing Lapse's login."""
    if conn.execute(SQL["key_is_current"], {"key": access_key}).fetchone() is None:
        return "key no longer current"
    panel = panels.panel_by_id(conn, panel_id)
    if not panel.enabled or panel.login_refused:
        return "panel not usable"
    panels.record_client_state(conn, access_key, panel_id, "adding", now=now)
    return panel


def provision_done(conn: Connection[Any], access_key: str, panel_id: int, error: str | None, *,
                   now: datetime, login_refused: bool = False) -> str:
    """Record one provision attempt; a key that ended meanwhile is removed again."""
    if login_refused and error:
        panels.mark_login_refused(conn, panel_id, error, now=now)
    if error:
        panels.record_client_state(conn, access_key, panel_id, "failed", now=now, error=error)
        return "failed"
    panels.record_client_state(conn, access_key, panel_id, "present", now=now)
    if _remove_if_not_current(conn, access_key, [panel_id], now=now):
        return "removed_again"
    return "present"


def lost_activations(conn: Connection[Any], *, now: datetime, sent_before: datetime,
                     after: int = 0, limit: int = 500,
                     activation_deadline: timedelta = ACTIVATION_DEADLINE) -> list[int]:
    """Pending rows no activation message can still be retrying for, keyset after ``after``."""
    rows = conn.execute(SQL["lost_activations"], {
        "now": now, "sent_before": sent_before, "after": after, "limit": limit,
        "activation_deadline": activation_deadline}).fetchall()
    return [int(r["id"]) for r in rows]


def resend_activation(conn: Connection[Any], subscription_id: int, *, now: datetime) -> bool:
    """Send ``activate_subscription`` again after commit, noting when (still pending only)."""
    if conn.execute(SQL["mark_sent"], {"id": subscription_id, "now": now}).fetchone() is None:
        return False
    send_after_commit(conn, "activate_subscription", subscription_id)
    return True


def _event(conn: Connection[Any], subscription_id: int, user_id: int, kind: str,
           now: datetime) -> None:
    conn.execute(SQL["event"], {"subscription_id": subscription_id, "user_id": user_id,
                                "type": kind, "now": now})
