"""Tagging throughput against a moto S3 server: bounded concurrency vs one call at a time, same run.

Starts ``moto.server`` as a separate process (so the server does not share
this process's interpreter), puts N objects, then tags fresh sets of N keys
with ``LAPSE_S3_CONCURRENCY`` (default 16) and with concurrency 1, each tag
being Lapse's real merge (get the tag set, put it back with the deletion
tag). Goal: >= 4x.

    .venv/bin/python bench/tagging_throughput.py [--objects 400] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

from lapse import s3  # noqa: E402
from lapse.embedded import _free_port  # noqa: E402
from lapse.local_s3 import _wait_for  # noqa: E402


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
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, server)
        url = f"http://127.0.0.1:{port}"
        setup = store(url, 32)
        setup.ensure_bucket()
        keys = [f"audio/{n}" for n in range(args.objects * 4)]
        setup.put_all(keys, b"x")
        sets = [keys[i::4] for i in range(4)]
        rate(url, args.concurrency, sets[0][:50])  # warm up connections and the server
        serial = rate(url, 1, sets[1])
        bounded = rate(url, args.concurrency, sets[2])
        serial_again = rate(url, 1, sets[3])
        anchor = (serial + serial_again) / 2
    finally:
        server.terminate()
    print(f"objects per run={args.objects}")
    print(f"one call at a time:         {anchor:.0f} objects/s (anchor; runs {serial:.0f}, {serial_again:.0f})")
    print(f"concurrency {args.concurrency}:            {bounded:.0f} objects/s = "
          f"{bounded / anchor:.2f}x the anchor (goal >= 4x)")


if __name__ == "__main__":
    main()
