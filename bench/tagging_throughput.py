"""Tagging throughput against a moto S3 server: bounded concurrency vs one call at a time, same run.

Starts ``moto.server`` as a separate process (so the server does not share
this process's interpreter), puts N objects, then tags fresh sets of N keys
with ``LAPSE_S3_CONCURRENCY`` (default 16) and with concurrency 1, each tag
being Lapse's real merge (get the tag set, put it back with the deletion
tag). Goal: >= 4x.

The moto server is one Python process: under concurrent load it saturates
one core and becomes the limit, whatever the client does, so the script also
reports the server's CPU use. ``--latency-ms`` puts a proxy in front of it
that delays every request like a network round trip to a real S3 endpoint;
that is the regime the bounded concurrency is for.

    .venv/bin/python bench/tagging_throughput.py [--objects 400] [--concurrency 16] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

from lapse.platform.embedded import _free_port  # noqa: E402
from lapse.platform.local_s3 import _wait_for  # noqa: E402
from lapse.ports import s3  # noqa: E402


def store(url: str, concurrency: int) -> s3.S3RecordingStore:
    return s3.S3RecordingStore(bucket="bench", endpoint_url=url, region="us-east-1",
                               concurrency=concurrency)


def rate(url: str, concurrency: int, keys: list[str]) -> float:
    adapter = store(url, concurrency)
    started = time.perf_counter()
    result = adapter.tag(keys)
    elapsed = time.perf_counter() - started
    assert result.done == len(keys) and not result.missing
    return len(keys) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = None
    try:
        _wait_for(port, server)
        url = f"http://127.0.0.1:{port}"
        store(url, 1).ensure_bucket()
        if args.latency_ms:
            proxy_port = _free_port()
            proxy = subprocess.Popen([sys.executable, str(Path(__file__).parent / "latency_proxy.py"),
                                      str(proxy_port), str(port), str(args.latency_ms)])
            _wait_for(proxy_port, proxy)
            url = f"http://127.0.0.1:{proxy_port}"
        setup = store(url, 32)
        keys = [f"audio/{n}" for n in range(args.objects * 4)]
        setup.put_all(keys, b"x")
        sets = [keys[i::4] for i in range(4)]
        rate(url, args.concurrency, sets[0][:50])  # warm up connections and the server
        serial = rate(url, 1, sets[1])
        cpu_before, wall_before = psutil.Process(server.pid).cpu_times(), time.perf_counter()
        bounded = rate(url, args.concurrency, sets[2])
        cpu_after, wall = psutil.Process(server.pid).cpu_times(), time.perf_counter() - wall_before
        serial_again = rate(url, 1, sets[3])
        anchor = (serial + serial_again) / 2
    finally:
        server.terminate()
        if proxy is not None:
            proxy.terminate()
    busy = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
    print(f"objects per run={args.objects}, added latency per request={args.latency_ms:g} ms")
    print(f"one call at a time:         {anchor:.0f} objects/s (anchor; runs {serial:.0f}, {serial_again:.0f})")
    print(f"concurrency {args.concurrency}:            {bounded:.0f} objects/s = "
          f"{bounded / anchor:.2f}x the anchor (goal >= 4x)")
    print(f"moto server CPU during the concurrent run: {busy:.0%} of one core")


if __name__ == "__main__":
    main()
