"""An independent, straightforward Python reading of SPEC §3, for the property test only."""

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
    if s.started_at > t:
        return False
    if s.status in ("active", "cancelled"):
        return t < s.expires_at
    if s.status == "grace":
        return t < s.expires_at + grace
    return False


def access(w: World, u: int, t: datetime, grace: timedelta) -> bool:
    return any(s.user == u and gives_access(s, t, grace) for s in w.subs)


def retention(w: World, u: int, t: datetime, grace: timedelta) -> bool:
    mine = [s for s in w.subs if s.user == u]
    paid = [s for s in mine if s.kind == "paid"]
    kinds = {s.id: s.kind for s in w.subs}
    return (
        access(w, u, t, grace)
        or any(s.status == "pending" and s.started_at <= t < s.expires_at for s in paid)
        or any(s.ended_at is not None and s.ended_at > t - SEVEN_DAYS for s in paid)
        or any(e.user == u and e.type in ("expired", "cancelled") and kinds[e.subscription] == "paid"
               and e.created_at > t - SEVEN_DAYS for e in w.events)
        or any(m.member == u and m.added_at <= t and (m.removed_at is None or t < m.removed_at)
               and any(o.user == m.owner and o.kind == "paid" and gives_access(o, t, grace)
                       for o in w.subs)
               for m in w.members)
        or any(g.user == u and g.granted_at <= t and (g.revoked_at is None or t < g.revoked_at)
               for g in w.grants)
        or any(add_years(s.started_at, 2) <= t for s in paid)
    )
