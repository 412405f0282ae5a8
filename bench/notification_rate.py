"""The outbox's send rate against the fake Bot API at 50 ms latency, with the default 30/s limit.

8 sender threads run the real ``send_notification`` body
(``lapse.flows.notifications.deliver``: peek, rate token from the shared
store, claim, send, record) on a fresh database, one chat per notice. A
``WaitForRate`` is what ``dramatiq.Retry(delay=...)`` would do to an actor:
the thread waits that long and asks again. The anchor is the configured
limit; the figures come from the fake's receive times only.

    .venv/bin/python bench/notification_rate.py [--seconds 60] [--threads 8] [--store postgres]
"""

from __future__ import annotations

import argparse
import os
import queue
import threading
import time

from bench.common import fresh_database, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--store", choices=("postgres", "redis"), default="postgres")
    args = parser.parse_args()
    from lapse.platform.config import reset_settings

    url = fresh_database("lapse_bench_notifications")
    from lapse.ports.fakes import telegram as fake

    api = fake.FakeTelegram.start()
    api.latency = args.latency_ms / 1000
    os.environ.update({"DATABASE_URL": url, "LAPSE_BROKER": args.store,
                       "LAPSE_TELEGRAM_URL": api.url, "LAPSE_TELEGRAM_TOKEN": fake.TOKEN})
    reset_settings()
    from lapse.platform import db
    from lapse.platform.config import settings

    pool = db.make_pool(url, settings(), size=args.threads + 4)
    db.install_pool(pool)
    if args.store == "redis":
        _clear_redis_limits(settings())
    rate = settings().telegram_rate
    notices = _write_notices(pool, int(rate * args.seconds * 1.3))
    work: queue.Queue[int] = queue.Queue()
    for notification_id in notices:
        work.put(notification_id)
    stop_at = time.monotonic() + args.seconds
    outcomes: list[str] = []
    threads = [threading.Thread(target=_send, args=(pool, work, stop_at, outcomes))
               for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api.stop()
    times = sorted(r.at for r in api.received)
    mean = (len(times) - 1) / (times[-1] - times[0])
    worst = _max_in_window(times)
    with report("Notification send rate (issue 11)"):
        print(f"store {args.store}, {args.threads} threads, fake latency {args.latency_ms:.0f} ms, "
              f"limit {rate:g}/s (LAPSE_TELEGRAM_RATE_PER_SECOND default)")
        print(f"sends: {len(times)} over {times[-1] - times[0]:.1f} s (fake receive times); "
              f"sent outcomes {outcomes.count('sent')}")
        print(f"mean rate: {mean:.2f}/s = {mean / rate:.3f} x the limit (goal 28.5-30/s)")
        print(f"busiest 1-second window: {worst} (goal <= limit + threads = "
              f"{rate + args.threads:g})")


def _send(pool: object, work: queue.Queue[int], stop_at: float, outcomes: list[str]) -> None:
    from lapse.flows import notifications as flows

    while time.monotonic() < stop_at:
        try:
            notification_id = work.get_nowait()
        except queue.Empty:
            return
        while time.monotonic() < stop_at:
            try:
                outcomes.append(flows.deliver(pool, notification_id))  # type: ignore[arg-type]
                break
            except flows.WaitForRate as wait:  # what dramatiq.Retry(delay=...) does to an actor
                time.sleep(wait.delay)


def _write_notices(pool: object, count: int) -> list[int]:
    from domain import notifications
    from lapse.platform import clock
    from lapse.platform.after_commit import install_sender, transaction

    previous = install_sender(lambda message: None)  # the threads below are the senders
    try:
        with pool.connection() as conn, transaction(conn):  # type: ignore[attr-defined]
            users = [r["id"] for r in conn.execute(
                "insert into users (telegram_id) select 1000000 + n from generate_series(1, %s) n "
                "returning id", (count,)).fetchall()]
            return [notifications.queue(conn, user, "broadcast", f"bench:{user}",
                                        {"text": f"bench {user}"}, now=clock.now())
                    for user in users]
    finally:
        install_sender(previous)


def _clear_redis_limits(config: object) -> None:
    import redis

    client = redis.Redis.from_url(config.redis_url)  # type: ignore[attr-defined]
    for key in client.scan_iter(f"{config.redis_namespace}:lapse:*"):  # type: ignore[attr-defined]
        client.delete(key)


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


if __name__ == "__main__":
    main()
