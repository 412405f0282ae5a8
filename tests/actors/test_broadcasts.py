"""The ``send_broadcast`` actor (SPEC §6 A6, §9): one run of the walk, its pacing, bad arguments.

The sends themselves are recorded (the ``sent`` fixture), not delivered: the
whole path through real workers and the fake Bot API is
``test_broadcast_processes.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dramatiq
import pytest

from domain import broadcasts
from lapse.flows.broadcasts import Pace, walk
from lapse.platform.after_commit import transaction
from tests.actors.conftest import dead_letters
from tests.conftest import eventually
from tests.support import factories

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def running_broadcast(pool: Any, users: int) -> int:
    factories.given(pool, lambda c: [factories.user(c, telegram_id=9000 + n) for n in range(users)])
    with pool.connection() as conn, transaction(conn):
        broadcast_id = broadcasts.create(conn, now=NOW, texts={"en": "Hello"})
        broadcasts.start(conn, broadcast_id, now=NOW)
    return broadcast_id


def test_one_run_queues_pages_until_the_backlog_is_full_then_sends_itself_later(pool, sent):
    broadcast_id = running_broadcast(pool, 25)
    sent.clear()
    run = walk(pool, broadcast_id, pace=Pace(batch_size=4, backlog=10, rate=5.0),
               budget_seconds=60)
    assert (run.outcome, run.batches, run.queued) == ("backlog", 3, 10)
    names = [m.actor_name for m in sent]
    assert names == ["send_notification"] * 10 + ["send_broadcast"]
    assert sent[-1].delay_ms == 1000  # (10 waiting - 5) / 5 per second


def test_a_spent_budget_sends_the_next_step_at_once(pool, sent):
    broadcast_id = running_broadcast(pool, 25)
    sent.clear()
    run = walk(pool, broadcast_id, pace=Pace(batch_size=4, backlog=100, rate=5.0),
               budget_seconds=0)
    assert (run.outcome, run.batches, run.queued, run.next_in) == ("queued", 1, 4, 0.0)
    assert (sent[-1].actor_name, sent[-1].delay_ms) == ("send_broadcast", None)


def test_the_actor_walks_to_the_end_and_stops_on_a_cancelled_broadcast(pool, sent):
    import actors

    broadcast_id = running_broadcast(pool, 7)
    actors.notifications.send_broadcast.fn(broadcast_id)
    assert [m.actor_name for m in sent].count("send_notification") == 7
    with pool.connection() as conn, transaction(conn):
        broadcasts.cancel(conn, broadcast_id, now=NOW)
    sent.clear()
    actors.notifications.send_broadcast.fn(broadcast_id)
    assert sent == []  # cancelled: no more rows, no next step


@pytest.fixture
def worker(pool):
    import actors

    broker = actors.broker
    broker.flush_all()
    running = dramatiq.Worker(broker, worker_timeout=20, worker_threads=1,
                              queues={"notifications"})
    running.start()
    yield broker
    running.stop()
    broker.flush_all()


def test_an_unknown_or_invalid_broadcast_id_is_dead_lettered_at_once(pool, worker):
    import actors

    actors.notifications.send_broadcast.send(987_654)
    actors.notifications.send_broadcast.send(0)
    worker.join("notifications", fail_fast=False, timeout=30_000)
    dead = eventually(lambda: len(rows := dead_letters(pool)) == 2 and rows, timeout=10,
                      what="two dead letters")
    assert sorted((r["reason"], r["failures"]) for r in dead) == [
        ("invalid_arguments", 1), ("permanent_error", 1)]
    assert any("no broadcast with id 987654" in (r["exception"] or "") for r in dead)
