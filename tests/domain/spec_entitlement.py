"""An independent, straightforward Python reading of SPEC §3, for the property test only.

Written from the text of §3, clause by clause, not from the SQL: each
function below quotes the sentence it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

SEVEN_DAYS = timedelta(days=7)


@dataclass
class Sub:
    id: int
    user: int
    kind: str
    status: str
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    auto_renew: bool = False
    reached_active: bool = False  # it was `active` at some point of its life
    first_period: timedelta = timedelta(days=30)  # its plan's period


@dataclass
class Event:
    subscription: int
    user: int
    type: str
    created_at: datetime


@dataclass
class Member:
    owner: int
    member: int
    added_at: datetime
    removed_at: datetime | None


@dataclass
class Grant:
    user: int
    granted_at: datetime
    revoked_at: datetime | None


@dataclass
class World:
    subs: list[Sub]
    events: list[Event]
    members: list[Member]
    grants: list[Grant]


def add_years(at: datetime, years: int) -> datetime:
    try:
        return at.replace(year=at.year + years)
    except ValueError:  # 29 February, as PostgreSQL does it
        return at.replace(year=at.year + years, day=28)


def gives_access(s: Sub, t: datetime, grace: timedelta) -> bool:
    """"a subscription (trial or paid) with started_at <= t and either status in
    ('active','cancelled') and t < expires_at, or a paid one with status = 'grace',
    or status = 'active' and auto_renew, and t < expires_at + billing_grace"."""
    if not s.started_at <= t:
        return False
    if s.status in ("active", "cancelled") and t < s.expires_at:
        return True
    in_billing_grace = s.status == "grace" or (s.status == "active" and s.auto_renew)
    return s.kind == "paid" and in_billing_grace and t < s.expires_at + grace


def access(w: World, u: int, t: datetime, grace: timedelta) -> bool:
    return any(s.user == u and gives_access(s, t, grace) for s in w.subs)


def _pending_paid(w: World, u: int, t: datetime) -> bool:
    """2. "a paid subscription with status = 'pending' and started_at <= t < expires_at"."""
    return any(s.user == u and s.kind == "paid" and s.status == "pending"
               and s.started_at <= t < s.expires_at for s in w.subs)


def _retention_grace(w: World, u: int, t: datetime) -> bool:
    """3. "a paid subscription that ended less than 7 days before t (ended_at > t - 7 days)"."""
    return any(s.user == u and s.kind == "paid" and s.ended_at is not None
               and s.ended_at > t - SEVEN_DAYS for s in w.subs)


def _recent_event(w: World, u: int, t: datetime) -> bool:
    """4. "an event of type expired or cancelled on a paid subscription at or before t and
    less than 7 days before t (created_at <= t < created_at + 7 days)"."""
    paid = {s.id for s in w.subs if s.kind == "paid"}
    return any(e.user == u and e.type in ("expired", "cancelled") and e.subscription in paid
               and e.created_at <= t < e.created_at + SEVEN_DAYS for e in w.events)


def _family(w: World, u: int, t: datetime, grace: timedelta) -> bool:
    """5. "u is a member (added_at <= t, not removed at t) of an owner who has access(owner, t)
    on a paid plan"."""
    return any(m.member == u and m.added_at <= t and (m.removed_at is None or t < m.removed_at)
               and any(o.user == m.owner and o.kind == "paid" and gives_access(o, t, grace)
                       for o in w.subs)
               for m in w.members)


def _sponsored(w: World, u: int, t: datetime) -> bool:
    """6. "a grant to u with granted_at <= t and (revoked_at is null or t < revoked_at)"."""
    return any(g.user == u and g.granted_at <= t and (g.revoked_at is None or t < g.revoked_at)
               for g in w.grants)


def _ended_early(w: World, s: Sub) -> bool:
    """"ended by a refund or revoke before its first period was over"."""
    return any(e.subscription == s.id and e.type in ("refunded", "revoked")
               and e.created_at < s.started_at + s.first_period for e in w.events)


def _loyal(w: World, u: int, t: datetime) -> bool:
    """7. "u has a paid subscription that reached active, started at least 2 years before t,
    and did not end by a refund or revoke before its first period was over"."""
    return any(s.user == u and s.kind == "paid" and s.reached_active
               and add_years(s.started_at, 2) <= t and not _ended_early(w, s)
               for s in w.subs)


def retention(w: World, u: int, t: datetime, grace: timedelta) -> bool:
    """retention(u, t): true when any of §3's seven sources holds."""
    return (access(w, u, t, grace) or _pending_paid(w, u, t) or _retention_grace(w, u, t)
            or _recent_event(w, u, t) or _family(w, u, t, grace) or _sponsored(w, u, t)
            or _loyal(w, u, t))
