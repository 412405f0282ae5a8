"""Reconciliation decision over 200k users / 1M recordings (5% lapsed).

Times ``sweep_retention --dry-run`` (the whole keyset walk and its per-page
decision queries) against the bare leak query in the same run, on the same
database; the goal is a ratio <= 2. Then runs the dry run in a child process
to measure the sweeping process's peak RSS (goal < 200 MB).

    .venv/bin/python bench/retention_reconcile.py [--users 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import fresh_database, peak_rss_mb_of, timed  # noqa: E402

NOW = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
GRACE = timedelta(hours=72)
POPULATE = """
insert into plans (code, period_days, price, currency) values ('month', 30, 500, 'USD');
insert into users (id, created_at) overriding system value
select g, %(now)s - interval '400 days' from generate_series(1, %(users)s) g;
-- 95 percent paying, 5 percent trial-enders whose trial ended 10 days ago
insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, ended_at,
                           auto_renew, access_key)
select g,
       case when mod(g, 20) = 0 then 'trial' else 'paid' end,
       case when mod(g, 20) = 0 then 'expired' else 'active' end,
       case when mod(g, 20) = 0 then null else 'month' end,
       %(now)s - interval '13 days',
       case when mod(g, 20) = 0 then %(now)s - interval '10 days' else %(now)s + interval '17 days' end,
       case when mod(g, 20) = 0 then %(now)s - interval '10 days' end,
       mod(g, 20) <> 0,
       case when mod(g, 20) = 0 then null else gen_random_uuid() end
from generate_series(1, %(users)s) g;
insert into recordings (user_id, kind, has_audio, audio_key, created_at)
select (g - 1) / 5 + 1, 'recite', true, 'audio/' || g, %(now)s - interval '12 days'
from generate_series(1, %(users)s * 5) g;
"""
LEAK_QUERY = """
select count(*) from (select distinct user_id from recordings
                      where has_audio and kind = 'recite' and not is_deleted) u
where not retention_holds(u.user_id, %(now)s, %(grace)s)
"""
DRY_RUN = """
import json, sys
from datetime import datetime
from lapse.platform import db, sweeps
from lapse.platform.config import load_settings
pool = db.make_pool(sys.argv[1], load_settings(), size=2)
counts = sweeps.run_sweep(pool, "retention", now=datetime.fromisoformat(sys.argv[2]),
                          dry_run=True, budget_seconds=float("inf"))
print(json.dumps(counts))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    args = parser.parse_args()
    url = fresh_database("lapse_bench_retention")
    with psycopg.connect(url) as conn:
        for statement in filter(str.strip, POPULATE.split(";")):
            conn.execute(statement, {"users": args.users, "now": NOW})
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")

    def leak_query() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute(LEAK_QUERY, {"now": NOW, "grace": GRACE}).fetchone()
            return int(row[0]) if row else 0

    from lapse.platform import db, sweeps
    from lapse.platform.config import load_settings

    pool = db.make_pool(url, load_settings(), size=2)
    result: dict[str, int] = {}

    def dry_run() -> None:
        result.update(sweeps.run_sweep(pool, "retention", now=NOW, dry_run=True,
                                       budget_seconds=float("inf")))

    leaked = leak_query()
    anchor = timed(leak_query)
    swept = timed(dry_run)
    pool.close()
    rss, out = peak_rss_mb_of(["-c", DRY_RUN, url, NOW.isoformat()], {})
    child = json.loads(out)
    assert result["tag"] == leaked == child["tag"], (result, leaked, child)
    print(f"users={args.users} recordings={args.users * 5} lapsed_users={leaked}")
    print(f"bare leak query:              {anchor:.2f} s (anchor)")
    print(f"sweep_retention --dry-run:    {swept:.2f} s = {swept / anchor:.2f}x the anchor (goal <= 2x)")
    print(f"peak RSS of the dry-run process: {rss:.0f} MB (goal < 200 MB)")


if __name__ == "__main__":
    main()
