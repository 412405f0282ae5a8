"""A2 fast expiry of N lapsed subscriptions whose keys are on the fake 3x-ui panel, per broker.

For each broker (redis, postgres):

1. **End to end**, timed from the sweep's start until the last key is gone
   from the fake panel: real ``dramatiq actors`` worker processes run
   ``sweep_fast_expiry`` (one thread) and the ``remove_client`` and
   ``tag_recordings`` messages it sends after each commit (the others), against
   the fake panel in its own process answering every call ``--latency-ms``
   late. 2 processes x 4 threads against 1 process x 1 thread; goal >= 6x.
   The sweep fans a backlog out over ``LAPSE_FAST_EXPIRY_SHARDS`` (default 8)
   id ranges, each its own ``sweep_fast_expiry`` message; 1 x 1 runs them
   one after another.
   The start is the moment the sweep message is sent to idle workers; the end
   is when the fake (its own watcher thread, every 5 ms) sees its last client
   go. Both processes read the same wall clock. ``tag_recordings`` (priority
   10) runs after the removals a worker holds; when its last request closed
   is reported too (``tagging_done_after_seconds``, polled every 0.2 s).
2. **The database half alone**: the body of ``sweep_fast_expiry`` in one
   shard (``LAPSE_FAST_EXPIRY_SHARDS=1``: no worker runs the others) (each
   transition under the user lock, its event, its key's ``panel_clients``
   marked ``removing``, ``remove_client`` and ``tag_recordings`` enqueued on
   the real broker after commit), no worker running, against the same rows
   expired by one set-based UPDATE in the same run (the anchor).

Every phase gets a fresh database (``bench.common.fresh_database``) and an
empty broker namespace; the figures are checked (every row expired, every
key gone, every ``panel_clients`` row ``removed``) before they are printed.

    .venv/bin/python bench/fast_expiry.py [--subscriptions 10000] [--latency-ms 20]
        [--brokers redis,postgres] [--skip-serial]

With DATABASE_URL unset it uses the embedded PostgreSQL under ``.lapse``;
REDIS_URL (default redis://127.0.0.1:6379/1) for the Redis broker.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from bench.common import ROOT, fresh_database  # noqa: E402

NAMESPACE = "lapse_bench_fast_expiry"
PANEL_PREFIX = "LAPSE_BENCH_PANEL"
POPULATE = """
insert into plans (code, period_days, price, currency) values ('month', 30, 500, 'USD')
on conflict do nothing;
insert into users (id, created_at) overriding system value
select g, %(now)s - interval '60 days' from generate_series(1, %(n)s) g;
insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, auto_renew,
                           access_key, reached_active)
select g, 'paid', 'active', 'month', %(now)s - interval '31 days', %(now)s - interval '1 hour',
       false, gen_random_uuid(), true
from generate_series(1, %(n)s) g;
"""
PANEL_CLIENTS = """
insert into panel_clients (access_key, panel_id, state, updated_at)
select access_key, %(panel)s, 'present', %(now)s from subscriptions
"""
# The anchor: the same rows expired by one statement (the transitions' state change alone).
SET_BASED = """
update subscriptions set status = 'expired', access_key = null, ended_at = expires_at
where status = 'active' and not auto_renew and expires_at <= %(now)s
"""
FAKE = """
import logging, sys, threading, time
from lapse.ports.fakes import xui
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
fake = xui.FakeXui.start()
for line in open(sys.argv[1]):
    key = line.strip()
    fake.put_client(key, uuid_=key, sub_id=key, comment="lapse")
fake.inject(xui.latency(float(sys.argv[2]) / 1000), on="", times=10**9)
print(fake.url, flush=True)
def watch():
    while fake.clients:
        time.sleep(0.005)
    print("empty", time.time(), flush=True)
threading.Thread(target=watch, daemon=True).start()
sys.stdin.read()
fake.stop()
"""
SEND = """
import time, actors
print(time.time(), flush=True)
actors.sweeps.sweep_fast_expiry.send()
"""
DATABASE_HALF = """
import json, time
import actors  # the broker of LAPSE_BROKER; after-commit messages go to it
from lapse.flows import sweeps
from lapse.platform import clock, db
started = time.perf_counter()
counts = sweeps.run_sweep(db.pool(), "fast_expiry", now=clock.now(), budget_seconds=float("inf"))
print(json.dumps({"seconds": time.perf_counter() - started, "counts": counts}), flush=True)
"""


def env_for(broker: str, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAPSE_PANEL_", "PYTEST"))}
    env |= {"DATABASE_URL": url, "LAPSE_BROKER": broker, "TZ": "UTC", "PYTHONPATH": str(ROOT),
            "LAPSE_REDIS_NAMESPACE": NAMESPACE,
            f"{PANEL_PREFIX}_TOKEN": "test-panel-token", "LAPSE_PANEL_TIMEOUT_SECONDS": "30",
            # no recordings, so tagging never calls S3; a closed local port, never AWS
            "LAPSE_S3_ENDPOINT_URL": "http://127.0.0.1:9", "LAPSE_S3_BUCKET": "bench"}
    if broker == "redis":
        env["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1")
    return env


def flush(broker: str, env: dict[str, str]) -> None:
    """An empty broker: the Postgres queue lives in each phase's fresh database; Redis is shared."""
    if broker == "redis":
        import redis

        client = redis.Redis.from_url(env["REDIS_URL"])
        for key in client.scan_iter(f"{NAMESPACE}:*"):
            client.delete(key)


def python(code: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    return result.stdout


def populate(n: int, panel_url: str | None) -> tuple[str, list[str]]:
    """A fresh database with ``n`` lapsed paid subscriptions (their keys on one panel)."""
    from domain import panels

    url = fresh_database("lapse_bench_fast_expiry")
    now = datetime.now(UTC)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        for statement in filter(str.strip, POPULATE.split(";")):
            conn.execute(statement, {"n": n, "now": now})
        panel = panels.add_panel(conn, "bench", panel_url or "http://127.0.0.1:9", 1,
                                 PANEL_PREFIX, now=now)
        conn.execute(PANEL_CLIENTS, {"panel": panel.id, "now": now})
        keys = [str(r["access_key"]) for r in conn.execute("select access_key from subscriptions")]
        conn.commit()
    return url, keys


def readline(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise SystemExit(f"no answer within {timeout:.0f} s")
    return str(stream.readline())


def end_to_end(broker: str, n: int, latency_ms: float, processes: int, threads: int,
               log_dir: str) -> dict[str, Any]:
    """Seconds from sending the sweep to idle workers until the panel's last key is gone."""
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as listing:
        url, keys = populate(n, None)
        listing.write("\n".join(keys) + "\n")
    env = env_for(broker, url)
    flush(broker, env)
    fake = subprocess.Popen([sys.executable, "-c", FAKE, listing.name, str(latency_ms)], cwd=ROOT,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    workers = None
    try:
        panel_url = readline(fake.stdout, 120).strip()
        with psycopg.connect(url) as conn:
            conn.execute("update panels set url = %s where name = 'bench'", (panel_url,))
            conn.commit()
        log = Path(log_dir) / f"{broker}-{processes}x{threads}.log"
        with log.open("w") as handle:
            workers = subprocess.Popen(
                [str(Path(sys.executable).parent / "dramatiq"), "actors", "--processes",
                 str(processes), "--threads", str(threads)], cwd=ROOT, env=env, stdout=handle,
                stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: log.read_text().count("is ready for action") >= processes, 120,
                 f"{processes} worker processes ready ({log})")
        started = float(python(SEND, env).split()[0])
        line = readline(fake.stdout, 3600).split()
        assert line[0] == "empty", line
        seconds = float(line[1]) - started
        wait_for(lambda: removed(url) == n, 300, "every panel_clients row recorded removed")
        # tag_recordings runs after the removals a worker holds (priority 10): when it is done too
        wait_for(lambda: open_tagging(url) == 0, 600, "every tagging request closed")
        tagged = time.time() - started
        with psycopg.connect(url) as conn:
            row = conn.execute("select extract(epoch from max(finished_at)), count(*) "
                               "from sweep_runs where sweep = 'fast_expiry'").fetchone()
        assert row is not None
        return {"seconds": seconds, "keys_per_second": n / seconds,
                "sweep_done_after_seconds": float(row[0]) - started,
                "tagging_done_after_seconds": tagged,
                "sweep_runs": row[1]} | check(url, n)
    finally:
        if workers is not None:
            os.killpg(workers.pid, 15)
            workers.wait(60)
        assert fake.stdin is not None
        fake.stdin.close()
        fake.wait(30)
        os.unlink(listing.name)


def database_half(broker: str, n: int) -> dict[str, Any]:
    """The sweep's transitions and their messages (no worker), and one set-based UPDATE."""
    url, _ = populate(n, None)
    # one shard: with no worker running, the other shards' messages would only be queued
    env = env_for(broker, url) | {"LAPSE_FAST_EXPIRY_SHARDS": "1"}
    flush(broker, env)
    sweep = json.loads(python(DATABASE_HALF, env).strip().splitlines()[-1])
    checked = check(url, n, panel_state="removing")
    messages = queued(broker, env, url)
    flush(broker, env)
    url, _ = populate(n, None)
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        expired = conn.execute(SET_BASED, {"now": datetime.now(UTC)}).rowcount
        conn.commit()
        anchor = time.perf_counter() - started
    assert expired == n, expired
    return {"sweep_seconds": sweep["seconds"], "set_based_update_seconds": anchor,
            "ratio": sweep["seconds"] / anchor, "sweep_counts": sweep["counts"],
            "messages_enqueued": messages} | checked


def check(url: str, n: int, panel_state: str = "removed") -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        expired = conn.execute("select count(*) from subscriptions where status = 'expired' "
                               "and access_key is null").fetchone()
        states = dict(conn.execute("select state, count(*) from panel_clients group by state"))
    assert expired is not None and expired[0] == n, (expired, n)
    assert states == {panel_state: n}, states
    return {"expired": n, "panel_clients": states}


def removed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from panel_clients where state = 'removed'").fetchone()
    return int(row[0]) if row else 0


def open_tagging(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from tagging_requests").fetchone()
    return int(row[0]) if row else 0


def queued(broker: str, env: dict[str, str], url: str) -> dict[str, int]:
    if broker == "postgres":
        with psycopg.connect(url) as conn:
            return dict(conn.execute("select queue_name, count(*) from dramatiq.queue "
                                     "group by queue_name"))
    import redis

    client = redis.Redis.from_url(env["REDIS_URL"])
    return {key.decode().split(":", 1)[1]: int(client.llen(key))
            for key in client.keys(f"{NAMESPACE}:*") if client.type(key) == b"list"}


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--brokers", default="redis,postgres")
    parser.add_argument("--skip-serial", action="store_true",
                        help="only 2x4 (the one-at-a-time run takes N x latency at least)")
    args = parser.parse_args()
    n, results = args.subscriptions, {}
    log_dir = tempfile.mkdtemp(prefix="lapse-bench-fast-expiry-")
    for broker in args.brokers.split(","):
        result: dict[str, Any] = {}
        result["concurrent_2x4"] = end_to_end(broker, n, args.latency_ms, 2, 4, log_dir)
        print(json.dumps({broker: result}, indent=2), flush=True)
        if not args.skip_serial:
            result["serial_1x1"] = end_to_end(broker, n, args.latency_ms, 1, 1, log_dir)
            result["speed_up"] = (result["serial_1x1"]["seconds"]
                                  / result["concurrent_2x4"]["seconds"])
            print(json.dumps({broker: result}, indent=2), flush=True)
        result["database_half"] = database_half(broker, n)
        results[broker] = result
        print(json.dumps({broker: result}, indent=2), flush=True)
    print(json.dumps({"subscriptions": n, "latency_ms": args.latency_ms, "worker_logs": log_dir}
                     | results, indent=2))


if __name__ == "__main__":
    main()
