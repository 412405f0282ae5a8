"""A simulated clock driving the real sweeps and actors: sweeps at their cadences, retries at their delays.

Used by ``lapse demo`` and by the tests' simulations; never by a worker.

Messages sent after commit run inline (``lapse.flows.inline``) as of the simulated
time; a ``dramatiq.Retry`` or a failure is scheduled at ``now + delay`` and
redelivered when the clock reaches it, counting retries against the actor's
``max_retries`` (past it the message is recorded as dead). Time never comes
from the wall clock: every run sets ``lapse.platform.clock`` to the simulated now.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain import retention
from lapse.flows import sweeps
from lapse.flows.inline import InlineWork
from lapse.platform import clock, dead_letters
from lapse.platform.after_commit import PendingMessage, install_sender, transaction
from lapse.platform.config import settings

HOUR = timedelta(hours=1)


@dataclass
class Simulation:
    pool: Any
    store: Any
    broker: Any
    now: datetime
    off: set[str] = field(default_factory=set)  # sweeps switched off
    money: bool = False  # also run auto-renewal at each step (the demo)
    delayed: list[tuple[datetime, int, PendingMessage]] = field(default_factory=list)
    retries: dict[int, int] = field(default_factory=dict)
    dead: list[PendingMessage] = field(default_factory=list)
    runs: list[tuple[datetime, str]] = field(default_factory=list)
    observers: list[Callable[[Simulation], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._seq = itertools.count()
        self.work = InlineWork(self.broker, on_retry=self._schedule)
        self._previous = install_sender(self.work)
        clock.override(self.now, changes_state=True, allowed=True)

    def close(self) -> None:
        install_sender(self._previous)
        clock.override(None, changes_state=False, allowed=True)

    def jump(self, at: datetime) -> None:
        """Set the clock to ``at`` without running anything in between."""
        self.now = at
        clock.override(at, changes_state=True, allowed=True)

    def _schedule(self, message: PendingMessage, delay_ms: int | None) -> None:
        key = id(message)
        self.retries[key] = self.retries.get(key, 0) + 1
        max_retries = self.broker.get_actor(message.actor_name).options.get("max_retries", 20)
        if self.retries[key] > max_retries:
            self.dead.append(message)
            with self.pool.connection() as conn, transaction(conn):
                dead_letters.ended_dead(conn, self.broker, message.actor_name, message.args,
                                        message.kwargs)
            return
        due = self.now + timedelta(milliseconds=delay_ms or 0)
        heapq.heappush(self.delayed, (due, next(self._seq), message))

    def drain(self) -> None:
        self.work.drain()

    def run_sweep(self, name: str) -> dict[str, Any]:
        counts = sweeps.run_sweep(self.pool, name, now=self.now, budget_seconds=float("inf"))
        self.runs.append((self.now, name))
        self.drain()
        return counts

    def advance(self, until: datetime, step: timedelta = timedelta(minutes=15)) -> None:
        """Move the clock to ``until`` in steps, delivering due retries and running due sweeps."""
        while self.now < until:
            previous, self.now = self.now, min(self.now + step, until)
            clock.override(self.now, changes_state=True, allowed=True)
            while self.delayed and self.delayed[0][0] <= self.now:
                _, _, message = heapq.heappop(self.delayed)
                self.work.queue.append(message)
            self.drain()
            for name in self._due_sweeps(previous, self.now):
                self.run_sweep(name)
            for observe in self.observers:
                observe(self)

    def _due_sweeps(self, after: datetime, until: datetime) -> Iterable[str]:
        if self.money and "auto_renewals" not in self.off:
            yield "auto_renewals"
        if "fast_expiry" not in self.off:
            yield "fast_expiry"
        for name, due in (("lapses", _crossed(after, until, minute=0)),
                          ("retention", _crossed(after, until, hour=1, minute=30)),
                          ("purge", _crossed(after, until, hour=3, minute=0))):
            if due and name not in self.off:
                yield name

    def act(self, change: Callable[[Any], Any]) -> Any:
        """Run a domain change in one transaction as of now, then what it sent."""
        with self.pool.connection() as conn, transaction(conn):
            result = change(conn)
        self.drain()
        return result

    def record(self, user_id: int) -> retention.Gate:
        """A new session through the R1 gate; the audio is uploaded only when the gate says so."""
        key = f"audio/{user_id}/{uuid.uuid4()}"
        gate = self.act(lambda conn: retention.record_session(
            conn, user_id, audio_key=key, now=self.now, billing_grace=settings().billing_grace))
        if gate.store_audio:
            self.store.put(key, b"audio")
        return gate


def _crossed(after: datetime, until: datetime, *, minute: int, hour: int | None = None) -> bool:
    """Whether a wall-clock slot (every hour at :minute, or daily at hour:minute) lies in (after, until]."""
    slot = after.replace(minute=minute, second=0, microsecond=0)
    if hour is not None:
        slot = slot.replace(hour=hour)
    if slot <= after:
        slot += timedelta(days=1) if hour is not None else HOUR
    return slot <= until
