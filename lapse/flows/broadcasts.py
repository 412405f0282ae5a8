"""The walk of one broadcast (SPEC §6 A6): batches under a time budget, paced by the send rate.

Each batch is one short transaction (``domain.broadcasts.queue_next_batch``).
The walk queues no more while more rows wait for an outcome than the senders
can work off in ``LAPSE_BROADCAST_BACKLOG_SECONDS`` at the Telegram rate, so
the broker holds a bounded number of ``send_notification`` messages and a
worker never loads the audience: it holds one keyset page at a time. When the
budget is spent, or the backlog is full, it sends ``send_broadcast`` again (with
a delay for the backlog to drain) from inside its last transaction, so the
next step and the cursor it starts from are committed together.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from domain import broadcasts
from lapse.platform import clock
from lapse.platform.after_commit import send_after_commit, transaction

WALKED_POLL_SECONDS = 1.0  # walked: look again for the last outcomes to mark it done
MAX_DELAY_SECONDS = 30.0


@dataclass(frozen=True)
class Pace:
    """How big a batch is, how many rows may wait for an outcome, how fast they drain."""

    batch_size: int
    backlog: int
    rate: float

    @classmethod
    def from_settings(cls, config: Any) -> Pace:
        backlog = max(config.broadcast_batch_size,
                      math.ceil(config.telegram_rate * config.broadcast_backlog_seconds))
        return cls(config.broadcast_batch_size, backlog, config.telegram_rate)

    def drain_delay(self, outstanding: int) -> float:
        """Seconds until about half the backlog has been sent at the rate."""
        excess = outstanding - self.backlog / 2
        return min(max(excess / self.rate, 0.2), MAX_DELAY_SECONDS)


@dataclass
class WalkRun:
    """What one run of ``send_broadcast`` did (its log line)."""

    outcome: str = "queued"
    batches: int = 0
    queued: int = 0
    next_in: float | None = None


def walk(pool: Any, broadcast_id: int, *, pace: Pace, budget_seconds: float) -> WalkRun:
    """Queue batches until the budget is spent or the backlog is full, then send the next step."""
    deadline = time.monotonic() + budget_seconds
    run = WalkRun()
    while True:
        with pool.connection() as conn, transaction(conn):
            step = broadcasts.queue_next_batch(conn, broadcast_id, now=clock.now(),
                                               batch_size=pace.batch_size, backlog=pace.backlog)
            run.outcome = step.outcome
            run.queued += step.queued
            run.batches += step.outcome == "queued"
            if step.outcome in ("done", "cancelled", "draft"):
                return run
            if step.outcome == "queued" and time.monotonic() < deadline:
                continue
            run.next_in = _next_in(step, pace)
            send_after_commit(conn, "send_broadcast", broadcast_id,
                              delay_ms=int(run.next_in * 1000) or None)
        return run


def _next_in(step: broadcasts.Step, pace: Pace) -> float:
    if step.outcome == "backlog":
        return pace.drain_delay(step.outstanding)
    if step.outcome == "walked":
        return WALKED_POLL_SECONDS
    return 0.0  # the budget ran out with work left: go on at once (other messages go first)
