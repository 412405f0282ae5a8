"""A broadcast to 20,000 users through real worker processes and the fake Bot API (SPEC §6 A6).

The rate limit is set to 1,000/s. The walk is checked for bounded memory (the
rows waiting for an outcome and the broker's queue never exceed the backlog;
the workers' RSS growth is reported), the worker is SIGKILLed halfway and
restarted, and the fake's record of what each chat received proves nobody got
the broadcast twice; chats that blocked the bot are counted, never retried.
``LAPSE_TEST_BROADCAST_USERS`` (default 20,000) sets the population.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from lapse.flows.notifications import OVERDUE
from lapse.ports.fakes.telegram import FakeTelegram
from tests.conftest import REDIS_NAMESPACE, create_database, database_name, drop_database
from tests.support.broadcast_stack import FIRST_CHAT, BroadcastStack, wait_for

pytestmark = pytest.mark.slow

USERS = int(os.environ.get("LAPSE_TEST_BROADCAST_USERS", "20000"))
SUBSCRIBED_EVERY = 97  # these users have a current subscription: not in the audience
BLOCKED_EVERY = 251  # these chats blocked the bot: the fake answers 403
BATCH = 500
BACKLOG_SECONDS = 2


@pytest.fixture
def stack(tmp_path, redis_url) -> Iterator[BroadcastStack]:
    name = database_name("broadcast")
    fake = FakeTelegram.start()
    built = BroadcastStack(create_database(name), redis_url, f"{REDIS_NAMESPACE}.bc{uuid.uuid4().hex[:6]}",
                           tmp_path, fake, rate=1000.0,
                           extra_env={"LAPSE_BROADCAST_BATCH_SIZE": str(BATCH),
                                      "LAPSE_BROADCAST_BACKLOG_SECONDS": str(BACKLOG_SECONDS)})
    try:
        yield built
    finally:
        built.close()
        fake.stop()
        drop_database(name)


def audience(n: int) -> list[int]:
    return [FIRST_CHAT + i for i in range(1, n + 1) if i % SUBSCRIBED_EVERY]


def created_and_started(stack: BroadcastStack, tmp_path) -> int:
    (tmp_path / "en.txt").write_text("Lapse is back: 50% off your first month.")
    (tmp_path / "ru.txt").write_text("Lapse снова с вами: скидка 50% на первый месяц.")
    created = stack.lapse("broadcast", "create", "--text-file", str(tmp_path / "en.txt"),
                          "--text-file", f"ru={tmp_path / 'ru.txt'}")
    assert created.returncode == 0, created.stderr
    started = stack.lapse("broadcast", "start", "1")
    assert started.returncode == 0, started.stderr
    return 1


OVERDUE_AGO = f"{int(OVERDUE.total_seconds()) + 60} seconds"


def status(stack: BroadcastStack, broadcast_id: int) -> dict:
    shown = stack.lapse("broadcast", "status", str(broadcast_id), "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_broadcast_to_20000_users_killed_halfway_reaches_each_once(stack, tmp_path):
    stack.seed_users(USERS, subscribed_every=SUBSCRIBED_EVERY)
    chats = audience(USERS)
    blocked = {c for c in chats if (c - FIRST_CHAT) % BLOCKED_EVERY == 0}
    stack.fake.blocked.update(blocked)
    backlog = max(BATCH, math.ceil(stack.rate * BACKLOG_SECONDS))
    worker = stack.start_worker(threads=8)
    broadcast_id = created_and_started(stack, tmp_path)

    samples: list[tuple[int, int]] = []  # (rows waiting for an outcome, broker messages)

    def sent_at_least(n: int) -> bool:
        waiting = stack.query("select count(*) as n from notifications where broadcast_id = %s "
                              "and status not in ('sent', 'failed', 'skipped', 'unknown')",
                              broadcast_id)[0]["n"]
        samples.append((int(waiting), stack.queued_messages()))
        return len(stack.fake.delivered()) >= n

    wait_for(lambda: sent_at_least(len(chats) // 20), timeout=120, what="5% delivered")
    rss_early = stack.worker_rss_mb()
    progress = status(stack, broadcast_id)
    assert progress["status"] == "running" and 0 < progress["sent"] < len(chats)
    assert progress["remaining"] > 0 and 0 < progress["progress"] < 1
    wait_for(lambda: sent_at_least(len(chats) // 2), timeout=600, what="half delivered")
    rss_half = stack.worker_rss_mb()
    stack.kill(worker)
    at_kill = len(stack.fake.received)

    stack.start_worker(threads=8)
    resumed = stack.lapse("broadcast", "start", str(broadcast_id))
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr

    stalled = Counter[str]()

    def finished() -> bool:
        stack.lapse("sweep", "outbox")  # what the minute tick does: the killed worker's claims
        if status(stack, broadcast_id)["status"] == "done":
            return True
        # Rows whose message died with the worker come back through sweep_outbox's overdue
        # rule, ten minutes after they were due. Once nothing moves (no send for 10 s, no
        # claim open), let those ten minutes pass for the rows still pending, not for the test.
        delivered, sending = len(stack.fake.received), stack.outcomes(broadcast_id)["sending"]
        stalled["polls"] = stalled["polls"] + 1 if delivered == stalled["delivered"] else 0
        stalled["delivered"] = delivered
        if stalled["polls"] >= 5 and sending == 0:
            moved = stack.query(
                "update notifications set created_at = created_at - %s::interval, "
                "next_attempt_at = next_attempt_at - %s::interval "
                "where broadcast_id = %s and status = 'pending' returning id",
                OVERDUE_AGO, OVERDUE_AGO, broadcast_id)
            stalled["moved"] += len(moved)
            stalled["polls"] = 0
        return False

    wait_for(finished, timeout=900, interval=2, what="the broadcast to finish")
    print(f"\nrows whose message the kill lost, recovered by sweep_outbox: {stalled['moved']}")

    per_chat = Counter(r.chat_id for r in stack.fake.received)
    assert max(per_chat.values()) == 1, [c for c, n in per_chat.items() if n > 1][:10]
    assert set(per_chat) <= set(chats)  # nobody outside the audience
    delivered = {r.chat_id for r in stack.fake.delivered()}
    outcomes = stack.outcomes(broadcast_id)
    final = status(stack, broadcast_id)
    by_chat = {r["telegram_id"]: r for r in stack.query(
        "select u.telegram_id, n.status, u.unreachable_at from notifications n "
        "join users u on u.id = n.user_id where n.broadcast_id = %s", broadcast_id)}
    assert sorted(by_chat) == chats and final["queued"] == len(chats)  # one row per user
    assert final["sent"] == outcomes["sent"] and final["remaining"] == 0
    assert final["progress"] == 1 and final["skipped"] == 0
    # at most once: a chat never asked is a claim the kill cut off (unknown), never resent
    unknown = {c for c, r in by_chat.items() if r["status"] == "unknown"}
    assert set(chats) - set(per_chat) <= unknown
    assert outcomes["sent"] <= len(delivered) <= outcomes["sent"] + len(unknown)
    # blocked chats: asked once, answered 403, counted as failed, the user marked unreachable
    assert not (delivered & blocked)
    assert {by_chat[c]["status"] for c in blocked} <= {"failed", "unknown"}
    assert final["failed"] == len([c for c in blocked if by_chat[c]["status"] == "failed"]) > 0
    assert all(by_chat[c]["unreachable_at"] is not None for c in blocked
               if by_chat[c]["status"] == "failed")
    assert len(stack.fake.received) > at_kill  # the restart really sent the second half
    print(f"\noutcomes after the kill and restart: {dict(outcomes)}; "
          f"{len(delivered)} delivered, {len(blocked)} blocked")

    most_waiting = max(w for w, _ in samples)
    most_queued = max(q for _, q in samples)
    print(f"\nbroadcast of {len(chats)} users: memory rss early {rss_early:.0f} MB, "
          f"half {rss_half:.0f} MB; most rows waiting {most_waiting}, most broker messages "
          f"{most_queued} (backlog {backlog})")
    assert most_waiting <= backlog
    assert most_queued <= backlog + 16  # the walk's own messages and the killed worker's redeliveries
    assert rss_half - rss_early < 64


@pytest.mark.parametrize("broker", ["redis", "postgres"])
def test_cancel_stops_the_walk_and_every_unclaimed_send(stack, tmp_path, broker):
    stack.rate, stack.broker = 100.0, broker  # slow enough to cancel in the middle
    stack.seed_users(3000)
    stack.start_worker(threads=4)
    broadcast_id = created_and_started(stack, tmp_path)
    wait_for(lambda: len(stack.fake.delivered()) >= 200, timeout=120, what="200 delivered")
    cancelled = stack.lapse("broadcast", "cancel", str(broadcast_id))
    assert cancelled.returncode == 0, cancelled.stderr
    claimed_at_cancel = stack.query(
        "select count(*) as n from notifications where broadcast_id = %s "
        "and status not in ('pending', 'sent', 'failed', 'skipped', 'unknown')", broadcast_id)[0]["n"]
    received_at_cancel = len(stack.fake.received)
    rows_at_cancel = stack.query("select count(*) as n from notifications where broadcast_id = %s",
                                 broadcast_id)[0]["n"]
    wait_for(lambda: not stack.query(
        "select 1 from notifications where broadcast_id = %s "
        "and status not in ('sent', 'failed', 'skipped', 'unknown')", broadcast_id),
        timeout=60, what="the claimed sends to finish")
    rows_at_end = stack.query("select count(*) as n from notifications where broadcast_id = %s",
                              broadcast_id)[0]["n"]
    final = status(stack, broadcast_id)
    assert final["status"] == "cancelled" and final["queued"] == rows_at_end < 3000
    assert len(stack.fake.received) <= received_at_cancel + claimed_at_cancel
    assert final["skipped"] > 0 and final["remaining"] == 0
    assert final["sent"] == len(stack.fake.delivered())
    assert rows_at_end == rows_at_cancel  # the walk stopped: no row was added after the cancel
    # the shared limiter held the sends to 100/s: no 1-second window of the fake's receive
    # times holds more than the rate plus the burst (2) and the sender threads in flight
    times = sorted(r.at for r in stack.fake.received)
    assert max(bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times)) <= 100 + 2 + 4
