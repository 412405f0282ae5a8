"""The outbox with real processes: a sender SIGKILLed between claim and send, and two dramatiq
worker processes on Redis sharing the rate limit and the 429 pause (N1, N2).

The fake Bot API runs in the test process on loopback; every receive time
the assertions use is the fake's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import psycopg
import pytest
import redis
from dramatiq.message import Message

from domain import notifications
from lapse.flows import sweeps
from lapse.flows.inline import inline
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.ports.fakes import telegram as fake
from tests.conftest import REDIS_NAMESPACE, ROOT, delete_namespace, eventually
from tests.support import factories as make
from tests.support.factories import given
from tests.support.outbox import notice_rows
from tests.support.processes import stop_process_groups

pytestmark = pytest.mark.slow
SEND = "import sys, actors; actors.notifications.send_notification.fn(int(sys.argv[1]))"


def environment(database: str, api: fake.FakeTelegram, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("LAPSE_FAULT_POINT", None)
    return env | {"DATABASE_URL": database, "LAPSE_TELEGRAM_URL": api.url,
                  "LAPSE_TELEGRAM_TOKEN": fake.TOKEN, "LAPSE_TELEGRAM_TIMEOUT_SECONDS": "2",
                  "TZ": "UTC", "PYTHONPATH": str(ROOT)} | extra


def write_notice(pool, user, kind, payload):
    with pool.connection() as conn, transaction(conn):
        return notifications.queue(conn, user, kind, f"{kind}:{user}", payload, now=clock.now())


@pytest.mark.parametrize(("kind", "payload", "end", "delivered"), [
    ("broadcast", {"text": "news"}, "unknown", 0),  # at most once: never sent again
    ("renewed", {"subscription_id": 1, "price": 500, "currency": "USD"}, "sent", 1),
])
def test_a_sender_killed_between_claim_and_send(pool, database, sent, bot, tmp_path, kind,
                                                 payload, end, delivered):
    user = given(pool, lambda c: make.user(c, telegram_id=9100))
    notice = write_notice(pool, user, kind, payload)
    log = tmp_path / "faults.log"
    killed = subprocess.run(
        [sys.executable, "-c", SEND, str(notice)], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=environment(database, bot, LAPSE_BROKER="stub",
                                     LAPSE_FAULT_POINT="notification.claimed",
                                     LAPSE_FAULT_LOG=str(log)))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert log.read_text().split()[-1] == "notification.claimed"
    assert notice_rows(pool, user)[0]["status"] == "sending" and bot.received == []
    import actors

    start = clock.now()
    try:
        for minutes in (1, 2, 3):  # sweep_outbox every minute, the follow-ups run inline
            clock.override(start + timedelta(minutes=minutes), changes_state=True, allowed=True)
            with inline(actors.broker) as work:
                sweeps.run_sweep(pool, "outbox", now=clock.now(), budget_seconds=60)
                work.drain()
    finally:
        clock.override(None, changes_state=False, allowed=True)
    assert notice_rows(pool, user)[0]["status"] == end
    assert len(bot.delivered()) == len(bot.received) == delivered


RATE, NOTICES, RETRY_AFTER, THREADS = 100.0, 1000, 2, 4


def test_two_worker_processes_share_the_rate_and_the_429_pause(pool, database, sent, bot,
                                                               clean_redis, tmp_path):
    from lapse.platform.brokers import LapseRedisBroker

    with pool.connection() as conn:
        users = [make.user(conn, telegram_id=20_000 + n) for n in range(NOTICES)]
        conn.commit()
    ids = [write_notice(pool, user, "broadcast", {"text": f"n{user}"}) for user in users]
    # the 300th request is answered 429 retry_after 2; every other one is delivered
    bot.faults.extend([lambda: None] * 299 + [fake.rate_limited(RETRY_AFTER)])
    env = environment(database, bot, LAPSE_BROKER="redis", REDIS_URL=clean_redis,
                      LAPSE_REDIS_NAMESPACE=REDIS_NAMESPACE,
                      LAPSE_TELEGRAM_RATE_PER_SECOND=str(RATE))
    broker = LapseRedisBroker(url=clean_redis, namespace=REDIS_NAMESPACE)
    broker.declare_queue("notifications")
    for notification_id in ids:
        broker.enqueue(Message(queue_name="notifications", actor_name="send_notification",
                               args=(notification_id,), kwargs={}, options={}))
    bin_dir = os.path.dirname(sys.executable)
    workers = [subprocess.Popen(
        [f"{bin_dir}/dramatiq", "actors", "--processes", "1", "--threads", str(THREADS),
         "--queues", "notifications"], cwd=ROOT, env=env, start_new_session=True,
        stdout=open(tmp_path / f"worker{n}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        for n in (1, 2)]
    try:
        eventually(lambda: count_sent(database) == NOTICES, timeout=240, interval=1.0,
                   what="every notice sent by the two workers")
    finally:
        stop_process_groups(workers, grace=15)
        delete_namespace(redis.Redis.from_url(clean_redis), REDIS_NAMESPACE)
    [limited] = [r for r in bot.received if r.status == 429]
    delivered = bot.delivered()
    assert len(delivered) == NOTICES and len({r.text for r in delivered}) == NOTICES
    in_pause = [r for r in delivered if limited.at < r.at < limited.at + RETRY_AFTER]
    # only requests already in flight when the 429 came back, at most one per other thread
    assert len(in_pause) <= 2 * THREADS - 1, [r.at - limited.at for r in in_pause]
    assert any(r.at >= limited.at + RETRY_AFTER for r in delivered)  # and sending resumed
    times = sorted(r.at for r in bot.received)
    assert max_in_window(times) <= RATE + 2 * THREADS  # the limit plus one in flight a thread
    before = [t for t in times if t <= limited.at]
    assert (len(before) - 1) / (before[-1] - before[0]) <= RATE * 1.02
    assert count_logged(tmp_path, "outcome=sent") == NOTICES


def count_sent(database: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute("select count(*) from notifications where status = 'sent'").fetchone()
    return int(row[0]) if row else 0


def count_logged(tmp_path, text: str) -> int:
    return sum((tmp_path / f"worker{n}.log").read_text(errors="replace").count(text)
               for n in (1, 2))


def max_in_window(times: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
