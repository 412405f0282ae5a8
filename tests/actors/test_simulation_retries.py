"""The simulation's retries follow the actor's own policy, as Dramatiq's Retries middleware does.

An actor with ``retry_when`` (the outbox's ``send_notification`` retries a
rate-limit wait without limit) is retried as long as it says so, past
``max_retries``; an actor without it goes to the dead-letter archive after
``max_retries``. Both run inline on the simulated clock, each retry at its
delay.
"""

from __future__ import annotations

from datetime import timedelta

import dramatiq

from actors.declare import lapse_actor
from lapse.platform.after_commit import PendingMessage
from tests.actors.conftest import dead_letters

ATTEMPTS: dict[str, int] = {}


def _always_retry(retries: int, exception: BaseException) -> bool:
    return True


@lapse_actor(queue_name="probe", max_retries=2, retry_when=_always_retry)
def probe_wait_then_run(token: str) -> None:
    """Asks to wait (like a rate-limited send) five times, then runs."""
    ATTEMPTS[token] = ATTEMPTS.get(token, 0) + 1
    if ATTEMPTS[token] <= 5:
        raise dramatiq.Retry("rate limit", delay=33)


@lapse_actor(queue_name="probe", max_retries=2)
def probe_wait_forever(token: str) -> None:
    ATTEMPTS[token] = ATTEMPTS.get(token, 0) + 1
    raise dramatiq.Retry("rate limit", delay=33)


def test_retry_when_keeps_a_waiting_message_past_max_retries(sim, pool):
    sim.work.queue.append(PendingMessage("probe_wait_then_run", ("a",)))
    sim.drain()
    sim.advance(sim.now + timedelta(seconds=1), step=timedelta(seconds=1))
    assert ATTEMPTS["a"] == 6 and sim.outcomes["ran"] == 1
    assert dead_letters(pool) == []


def test_without_retry_when_max_retries_sends_it_to_the_archive(sim, pool):
    sim.work.queue.append(PendingMessage("probe_wait_forever", ("b",)))
    sim.drain()
    sim.advance(sim.now + timedelta(seconds=1), step=timedelta(seconds=1))
    assert ATTEMPTS["b"] == 3  # the first attempt and max_retries = 2 retries
    assert [d["actor_name"] for d in dead_letters(pool)] == ["probe_wait_forever"]
