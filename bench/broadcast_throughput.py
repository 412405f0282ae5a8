"""Broadcast throughput: 8 sender threads vs one at a time, against the fake Bot API at 50 ms.

The whole path runs: ``lapse broadcast create``/``start``, the walk in a real
``dramatiq actors`` worker on the Redis broker, one ``send_notification``
per user (rate token, claim, re-check, render, send, outcome) against the fake
Bot API answering every request after ``--latency-ms``. The rate limit is set
to 1,000/s, so the senders, not the limiter, are the bottleneck: with 50 ms
per request one thread sends at most 20/s, eight at most 160/s. Each run
counts messages per second from the fake's receive times (first to last
delivered). The anchor is the one-thread run of the same script. Goal: >= 6x.

    REDIS_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/broadcast_throughput.py \
        [--users 1600] [--anchor-users 200] [--latency-ms 50] [--threads 8] [--processes 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database, report  # noqa: E402
from lapse.ports.fakes.telegram import FakeTelegram  # noqa: E402
from tests.support.broadcast_stack import BroadcastStack, wait_for  # noqa: E402


def run(users: int, threads: int, latency: float, redis_url: str, logs: Path,
        processes: int = 1) -> float:
    """Messages per second delivered by a broadcast to ``users`` with ``threads`` sender threads."""
    fake = FakeTelegram.start()
    fake.latency = latency
    stack = BroadcastStack(fresh_database(f"lapse_bench_broadcast_{threads}"), redis_url,
                           f"lapse-bench-{uuid.uuid4().hex[:8]}", logs, fake, rate=1000.0)
    try:
        stack.seed_users(users)
        stack.start_worker(threads=threads, processes=processes)
        text = logs / "en.txt"
        text.write_text("Benchmark broadcast.")
        for args in (("create", "--text-file", str(text)), ("start", "1")):
            done = stack.lapse("broadcast", *args)
            assert done.returncode == 0, done.stderr
        wait_for(lambda: len(fake.delivered()) >= users, timeout=users / 5 + 120,
                 what=f"{users} deliveries", interval=0.5)
        times = sorted(r.at for r in fake.delivered())
        return (len(times) - 1) / (times[-1] - times[0])
    finally:
        stack.close()
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1600)
    parser.add_argument("--anchor-users", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes sharing the threads (8 threads = 2 x 4)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per request
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")
    with tempfile.TemporaryDirectory(prefix="lapse-bench-broadcast-") as tmp:
        started = time.perf_counter()
        one = run(args.anchor_users, 1, args.latency_ms / 1000, redis_url, Path(tmp))
        many = run(args.users, args.threads // args.processes, args.latency_ms / 1000, redis_url,
                   Path(tmp), processes=args.processes)
        took = time.perf_counter() - started
    with report("Broadcast throughput against the fake Bot API"):
        print(f"latency {args.latency_ms:.0f} ms per request, rate limit 1,000/s")
        print("| senders | users | messages/s |\n|---|---|---|")
        print(f"| 1 thread (anchor) | {args.anchor_users} | {one:.1f} |")
        layout = f"{args.processes} process(es) x {args.threads // args.processes}"
        print(f"| {args.threads} threads ({layout}) | {args.users} | {many:.1f} |")
        print(f"ratio: **{many / one:.2f}x** (goal >= 6x); wall time of the script {took:.0f} s; "
              f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
