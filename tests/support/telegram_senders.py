"""A sending worker process for the rate-limit tests: threads sharing one limiter and one port.

Each thread takes the next message, asks the shared limiter, and sends when
told 0; told to wait, it waits that long (what ``Retry(delay=...)`` would do
to an actor) and asks again. A ``TryLater`` (the 429) puts the message back.
Every attempt's text is unique (``<process>-<message>-<attempt>``) so the
test can join the fake's receive times with the times recorded here, written
as JSON to ``--out``: ``asked`` (text → when the sender began the limiter
call that said go: a call begun after the pause was set must see it) and
``rate_limited_at`` (when a sender got the 429 back; the pause was set by then)
and ``held_back`` (how often the limiter said wait).

    python -m tests.support.telegram_senders --store redis --redis-url URL ...
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from typing import Any

from lapse.platform.rate_limits import RateLimiter, Store
from lapse.ports.fakes.telegram import TOKEN
from lapse.ports.telegram import TelegramPort, TryLater


def build_store(args: argparse.Namespace) -> Store:
    if args.store == "redis":
        from lapse.platform.rate_limits_redis import RedisStore

        return RedisStore.from_url(args.redis_url, prefix=args.prefix)
    from lapse.platform import db
    from lapse.platform.config import load_settings
    from lapse.platform.rate_limits_postgres import PostgresStore

    return PostgresStore(db.make_pool(args.database_url, load_settings(), size=args.threads + 1))


def send_all(port: TelegramPort, limiter: RateLimiter, work: queue.Queue[Any],
             record: dict[str, Any], lock: threading.Lock, name: str) -> None:
    while True:
        try:
            number, chat_id, attempt = work.get_nowait()
        except queue.Empty:
            return
        asked = time.time()
        while (wait := limiter.try_acquire(chat_id)) > 0:
            with lock:
                record["held_back"] += 1
            time.sleep(wait)
            asked = time.time()
        text = f"{name}-{number}-{attempt}"
        result = port.send_message(chat_id, text)
        with lock:
            record["asked"][text] = asked
            if isinstance(result, TryLater):
                record["rate_limited_at"].append(time.time())
                work.put((number, chat_id, attempt + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    for option in ("--store", "--redis-url", "--prefix", "--database-url", "--url", "--out",
                   "--name"):
        parser.add_argument(option)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--chats", type=int, default=0, help="0: one chat per message")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--chat-rate", type=float, default=1000.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    limiter = RateLimiter(build_store(args), "telegram", rate=args.rate,
                          per_key_rate=args.chat_rate)
    port = TelegramPort(args.url, TOKEN, pause=limiter.pause, timeout=10)
    work: queue.Queue[Any] = queue.Queue()
    offset = 1_000_000 * int(args.name.strip("p") or 0)
    for number in range(args.messages):
        work.put((number, offset + (number % args.chats if args.chats else number), 0))
    record: dict[str, Any] = {"asked": {}, "rate_limited_at": [], "held_back": 0}
    lock = threading.Lock()
    time.sleep(max(0.0, args.start_at - time.time()))  # both processes start together
    threads = [threading.Thread(target=send_all, args=(port, limiter, work, record, lock,
                                                       args.name)) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(args.out, "w") as out:
        json.dump(record, out)


if __name__ == "__main__":
    main()
