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
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.message import Message

from domain import retention
from lapse.flows import sweeps
from lapse.flows.inline import InlineWork
from lapse.platform import clock, dead_letters
from lapse.platform.after_commit import PendingMessage, install_sender, transaction
from lapse.platform.config import settings
from lapse.platform.errors import LapseError

HOUR = timedelta(hours=1)
logger = logging.getLogger(__name__)
DRAMATIQ_MIN_BACKOFF_MS, DRAMATIQ_MAX_BACKOFF_MS = 15_000, 7 * 24 * 3_600_000


@dataclass
class Simulation:
    pool: Any
    store: Any
    broker: Any
    now: datetime
    off: set[str] = field(default_factory=set)  # sweeps switched off
    money: bool = False  # also run auto-renewal at each step
    # sweeps run at their own cadence (``lapse.flows.sweeps.SWEEPS``); None: the retention set
    schedule: tuple[str, ...] | None = None
    delayed: list[tuple[datetime, int, PendingMessage]] = field(default_factory=list)
    retries: dict[int, int] = field(default_factory=dict)
    dead: list[PendingMessage] = field(default_factory=list)
    runs: list[tuple[datetime, str]] = field(default_factory=list)
    observers: list[Callable[[Simulation], None]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per sweep (benchmarks)

    def __post_init__(self) -> None:
        self._seq = itertools.count()
        self.work = InlineWork(self.broker, on_retry=self._schedule)
        self._previous = install_sender(self._send)
        clock.override(self.now, changes_state=True, allowed=True)

    def close(self) -> None:
        install_sender(self._previous)
        clock.override(None, changes_state=False, allowed=True)

    def _send(self, message: PendingMessage) -> None:
        """After commit: at once, or at now + its delay on the simulated clock."""
        if message.delay_ms:
            due = self.now + timedelta(milliseconds=message.delay_ms)
            heapq.heappush(self.delayed, (due, next(self._seq), replace(message, delay_ms=None)))
        else:
            self.work.queue.append(message)

    def jump(self, at: datetime) -> None:
        """Set the clock to ``at`` without running anything in between."""
        self.now = at
        clock.override(at, changes_state=True, allowed=True)

    def _schedule(self, message: PendingMessage, delay_ms: int | None,
                  error: BaseException | None = None) -> None:
        key = id(message)
        retries = self.retries.get(key, 0)  # retries so far, as Dramatiq's Retries middleware counts
        options = self.broker.get_actor(message.actor_name).options
        retry_when = options.get("retry_when")
        if (not retry_when(retries, error) if retry_when is not None
                else retries >= options.get("max_retries", 20)):
            self._dead(message, error)
            return
        self.retries[key] = retries = retries + 1
        if delay_ms is None:  # a failure: the actor's exponential backoff, as Dramatiq's Retries
            delay_ms = min(options.get("min_backoff", DRAMATIQ_MIN_BACKOFF_MS) * 2 ** (retries - 1),
                           options.get("max_backoff", DRAMATIQ_MAX_BACKOFF_MS))
        due = self.now + timedelta(milliseconds=delay_ms)
        heapq.heappush(self.delayed, (due, next(self._seq), message))

    def _dead(self, message: PendingMessage, error: BaseException | None) -> None:
        """Into the dead-letter archive, as the broker's middleware would put it."""
        self.retries.pop(id(message), None)
        self.dead.append(message)
        self.outcomes["dead_lettered"] += 1
        actor = self.broker.get_actor(message.actor_name)
        dead: Message[Any] = Message(queue_name=actor.queue_name, actor_name=message.actor_name,
                       args=message.args, kwargs=message.kwargs, options={})
        with self.pool.connection() as conn, transaction(conn):
            dead_letters.archive(conn, self.broker, dead, error, "simulation")

    def drain(self) -> None:
        """Run every queued message (and what it queues) once, in order; failures wait for retry."""
        queue = self.work.queue
        while queue:
            message = queue.popleft()
            actor = self.broker.get_actor(message.actor_name)
            try:
                actor.fn(*message.args, **message.kwargs)
            except dramatiq.Retry as retry:
                self.outcomes["retry_requested"] += 1
                self._schedule(message, retry.delay, retry)
            except LapseError as error:
                self.outcomes["failed_" + ("permanent" if error.permanent else "retryable")] += 1
                logger.warning("%s%s failed: %r", message.actor_name, message.args, error)
                if error.permanent:
                    self._dead(message, error)
                else:
                    self._schedule(message, None, error)
            except Exception as error:  # noqa: BLE001  not Lapse's own: logged with its traceback, retried
                self.outcomes["failed_unexpected"] += 1
                logger.exception("%s%s failed unexpectedly", message.actor_name, message.args)
                self._schedule(message, None, error)
            else:
                self.outcomes["ran"] += 1
                self.retries.pop(id(message), None)

    def run_sweep(self, name: str) -> dict[str, Any]:
        started = time.perf_counter()
        counts = sweeps.run_sweep(self.pool, name, now=self.now, budget_seconds=float("inf"))
        self.runs.append((self.now, name))
        self.drain()
        key = f"sweep_{name}"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
        return counts

    def advance(self, until: datetime, step: timedelta = timedelta(minutes=15)) -> None:
        """Move the clock to ``until`` in steps, delivering due retries and running due sweeps."""
        while self.now < until:
            self.step(self.now, min(self.now + step, until))

    def step(self, after: datetime, until: datetime) -> None:
        """One simulated step: retries due by ``until`` (each at its time, never before now), then
        every sweep with a slot in (after, until], at ``until``, in the schedule's order."""
        while self.delayed and self.delayed[0][0] <= until:
            due, _, message = heapq.heappop(self.delayed)
            self.jump(max(due, self.now))
            self.work.queue.append(message)
            self.drain()
        self.jump(until)
        self.drain()
        for name in self._due_sweeps(after, until):
            self.run_sweep(name)
        for observe in self.observers:
            observe(self)

    def _due_sweeps(self, after: datetime, until: datetime) -> Iterable[str]:
        if self.schedule is not None:
            for name in self.schedule:
                if name not in self.off and cron_due(sweeps.SWEEPS[name].cron, after, until):
                    yield name
            return
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


def cron_due(cron: str, after: datetime, until: datetime) -> bool:
    """Whether a slot of ``cron`` (minute and hour fields; the others ``*``) lies in (after, until]."""
    minute, hour, *rest = cron.split()
    if any(f != "*" for f in rest):
        raise ValueError(f"the simulation reads only the minute and hour of a cron, got {cron!r}")
    at = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while at <= until:
        if _field_matches(minute, at.minute) and _field_matches(hour, at.hour):
            return True
        at += timedelta(minutes=1) if hour == "*" or _field_matches(hour, at.hour) else HOUR - \
            timedelta(minutes=at.minute)
    return False


def _field_matches(field_: str, value: int) -> bool:
    if field_ == "*":
        return True
    if field_.startswith("*/"):
        return value % int(field_[2:]) == 0
    return value in {int(part) for part in field_.split(",")}
