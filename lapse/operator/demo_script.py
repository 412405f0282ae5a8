"""The demo's synthetic population: what each user will try to do, and when, drawn from one seed.

The script is written before the simulation starts and never looks at the
database, so a seed always gives the same script. Whether an action still
makes sense when its time comes (a cancellation of a subscription that
already expired, a purchase in billing grace or after it) is decided then,
against the database, by ``lapse.operator.demo``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

HOUR = timedelta(hours=1)

# The plans the demo sells: a week (renewals and dry balances within a month) and a month.
PLANS = {"week": (7, 150), "month": (30, 500)}
CURRENCY = "USD"
OPERATOR = -1  # the ``user`` of the operator's own actions (the broadcast)


@dataclass(frozen=True)
class Action:
    """One thing a user (or the operator, or the bot) does at a simulated time."""

    at: datetime
    seq: int  # the order of actions within one hour: the script's order, never the clock's
    kind: str
    user: int  # the user's index in the population (0-based); its id once signed up
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Script:
    start: datetime
    end: datetime
    users: int
    by_hour: dict[datetime, list[Action]] = field(default_factory=lambda: defaultdict(list))
    planned: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _seq: int = 0

    def add(self, at: datetime, kind: str, user: int, **params: Any) -> None:
        if not self.start <= at < self.end:
            return
        hour = at.replace(minute=0, second=0, microsecond=0)
        self.by_hour[hour].append(Action(at, self._seq, kind, user, params))
        self.planned[kind] += 1
        self._seq += 1

    def due(self, hour: datetime) -> list[Action]:
        """The actions of the hour starting at ``hour``, in time order (script order on ties)."""
        return sorted(self.by_hour.get(hour, []), key=lambda a: (a.at, a.seq))


def write_script(*, users: int, days: int, seed: int, start: datetime) -> Script:
    """Every user's sign-up, sessions, purchases, top-ups, cancellations, refunds, families…"""
    rng = random.Random(seed)
    end = start + timedelta(days=days)
    script = Script(start, end, users)
    span_hours = max(int(days * 24 * 0.85), 1)  # sign-ups stop before the end: their story plays
    # the operator's broadcast to everyone without a subscription, mid-run at noon
    script.add(start + timedelta(days=days // 2, hours=12), "broadcast", OPERATOR)
    for user in range(users):
        signup = start + HOUR * rng.randrange(span_hours) + timedelta(minutes=rng.randrange(60))
        referrer = rng.randrange(user) if user and rng.random() < 0.15 else None
        script.add(signup, "signup", user, language="ru" if rng.random() < 0.3 else "en",
                   referrer=referrer)
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            script.add(signup + timedelta(minutes=rng.randrange(30, days * 24 * 60)), "record", user)
        if rng.random() < 0.04:
            granted = signup + HOUR * rng.randrange(1, 240)
            script.add(granted, "sponsor", user)
            if rng.random() < 0.5:
                script.add(granted + HOUR * rng.randrange(48, 240), "unsponsor", user)
        if rng.random() < 0.55:
            _buyer(script, rng, user, signup, users)
    return script


def _buyer(script: Script, rng: random.Random, user: int, signup: datetime, users: int) -> None:
    """A paying user: a plan by balance, crypto invoice or in-app payment, then renewals or not."""
    buy = signup + timedelta(minutes=rng.randrange(6 * 60, 100 * 60))  # in the trial or after it
    plan = "week" if rng.random() < 0.6 else "month"
    period, price = PLANS[plan]
    provider = rng.choices(("balance", "crypto", "telegram"), (0.3, 0.35, 0.35))[0]
    if provider == "balance":  # the balance is topped up in the app first
        script.add(buy - HOUR, "topup", user, provider="telegram",
                   amount=price * rng.choice((1, 1, 2, 3)), pays_after=None)
    pays_after = rng.randrange(2, 50) if provider == "crypto" and rng.random() < 0.85 else None
    script.add(buy, "buy", user, plan=plan, provider=provider, pays_after=pays_after)
    if rng.random() < 0.5:  # a top-up for renewals later, by crypto or in the app
        topup_provider = "crypto" if rng.random() < 0.4 else "telegram"
        script.add(buy + HOUR * rng.randrange(24, 24 * 20), "topup", user, provider=topup_provider,
                   amount=price * rng.choice((1, 2, 4)),
                   pays_after=rng.randrange(2, 40) if topup_provider == "crypto" else None)
    if rng.random() < 0.15:
        script.add(buy + HOUR * rng.randrange(24, 24 * 25), "cancel", user)
    if rng.random() < 0.05:
        script.add(buy + HOUR * rng.randrange(24, 24 * 10), "refund", user)
    if rng.random() < 0.5:  # back after the balance ran dry: inside billing grace or after it
        script.add(buy + timedelta(days=period) + HOUR * rng.randrange(1, 24 * 6), "resubscribe",
                   user, plan=plan)
    if rng.random() < 0.2 and users > 1:
        member = rng.randrange(users - 1)
        member += member >= user  # anyone but the owner
        added = buy + HOUR * rng.randrange(2, 24 * 5)
        script.add(added, "family_add", user, member=member)
        if rng.random() < 0.3:
            script.add(added + HOUR * rng.randrange(24, 24 * 10), "family_remove", user,
                       member=member)
