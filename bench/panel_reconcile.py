"""A5 reconcile of 100,000 keys on one panel against the fake 3x-ui panel.

The database holds 100,000 current keys; the fake panel (its own process,
threaded server) holds all of them but 1,000 (to add) plus 1,000 Lapse
orphans (to remove) and 100 clients Lapse did not create. One
``reconcile_panel`` runs in a child process, which reports its wall time and
its own peak RSS (``ru_maxrss``; goal < 200 MB). The fake's memory is not
counted: it runs in its own process.

    .venv/bin/python bench/panel_reconcile.py [--keys 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import ROOT, fresh_database  # noqa: E402

NOW = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
POPULATE = """
insert into plans (code, period_days, price, currency) values ('month', 30, 500, 'USD');
insert into users (id, created_at) overriding system value
select g, %(now)s - interval '40 days' from generate_series(1, %(keys)s) g;
insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, auto_renew,
                           access_key, reached_active)
select g, 'paid', 'active', 'month', %(now)s - interval '10 days', %(now)s + interval '20 days',
       true, gen_random_uuid(), true
from generate_series(1, %(keys)s) g;
"""
FAKE = """
import sys, uuid
from lapse.ports.fakes.xui import FakeXui
fake = FakeXui.start()
for line in open(sys.argv[1]):
    key, comment = line.split()
    fake.put_client(key, uuid_=key, sub_id=key, comment=comment)
print(fake.url, flush=True)
sys.stdin.read()
fake.stop()
"""
RECONCILE = """
import json, resource, sys, time
from datetime import datetime
from domain import panels
from lapse.flows import reconcile
from lapse.platform import db
from lapse.platform.config import load_settings
pool = db.make_pool(sys.argv[1], load_settings(), size=2)
now = datetime.fromisoformat(sys.argv[2])
with pool.connection() as conn:
    panel = panels.add_panel(conn, "bench", sys.argv[3], 1, "LAPSE_BENCH_PANEL", now=now)
    conn.commit()
started = time.perf_counter()
counts = reconcile.reconcile_panel(pool, panel, now=now)
seconds = time.perf_counter() - started
started = time.perf_counter()
steady = reconcile.reconcile_panel(pool, panel, now=now)
steady_seconds = time.perf_counter() - started
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "steady_seconds": steady_seconds, "peak_rss_mb": rss,
                  "counts": counts, "steady_counts": steady}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    missing, orphans, foreign = args.keys // 100, args.keys // 100, 100
    url = fresh_database("lapse_bench_panel_reconcile")
    with psycopg.connect(url) as conn:
        for statement in filter(str.strip, POPULATE.split(";")):
            conn.execute(statement, {"keys": args.keys, "now": NOW})
        keys = [str(r[0]) for r in conn.execute("select access_key from subscriptions order by id")]
        conn.commit()
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as listing:
        for key in keys[missing:]:
            listing.write(f"{key} lapse\n")
        for _ in range(orphans):
            listing.write(f"{uuid.uuid4()} lapse\n")
        for _ in range(foreign):
            listing.write(f"{uuid.uuid4()} ops\n")
    env = os.environ | {"LAPSE_BENCH_PANEL_TOKEN": "test-panel-token", "PYTHONPATH": str(ROOT),
                        "LAPSE_PANEL_TIMEOUT_SECONDS": "120"}
    fake = subprocess.Popen([sys.executable, "-c", FAKE, listing.name], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        panel_url = fake.stdout.readline().strip()
        result = subprocess.run([sys.executable, "-c", RECONCILE, url, NOW.isoformat(), panel_url],
                                cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    finally:
        assert fake.stdin is not None
        fake.stdin.close()
        fake.wait(30)
        os.unlink(listing.name)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps({"keys": args.keys, "to_add": missing, "orphans": orphans,
                      "foreign": foreign} | report, indent=2))


if __name__ == "__main__":
    main()
