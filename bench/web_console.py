"""The web console's pages and the HTML report on a demo-sized database, against `lapse audit leaks`.

The database holds ``--users`` users (default 2,000), each with a paid
subscription, 30 days of subscription events (one per user and day), ledger
rows and payments, notifications, tagging batches, 10 recordings, and
``--dead`` dead letters (default 2,000) under 4 errors. Each page is served
through Starlette's TestClient (in process, stub broker) and timed (best of
3); the anchor is the leak audit over the same 30 days (``leak_report``, what
`lapse audit leaks` runs), measured in the same run.

    .venv/bin/python bench/web_console.py [--users 2000] [--dead 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LAPSE_BROKER", "stub")

from bench.common import fresh_database, timed  # noqa: E402

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
POPULATE = """
insert into plans (code, period_days, price, currency) values ('month', 30, 500, 'USD');
insert into users (id, balance, created_at) overriding system value
select g, 1000, %(now)s - interval '60 days' from generate_series(1, %(users)s) g;
insert into subscriptions (id, user_id, kind, status, plan_code, started_at, expires_at,
                           access_key, reached_active) overriding system value
select g, g, 'paid', 'active', 'month', %(now)s - interval '10 days', %(now)s + interval '20 days',
       gen_random_uuid(), true
from generate_series(1, %(users)s) g;
insert into subscription_events (subscription_id, user_id, type, created_at)
select u, u, (array['renewed', 'grace', 'expired', 'activated'])[1 + (u + d) %% 4],
       %(now)s - make_interval(days => d, hours => u %% 24)
from generate_series(1, %(users)s) u, generate_series(0, 29) d;
insert into balance_ledger (user_id, amount, reason, ref, created_at)
select u, 1000, 'seed', 'seed:' || u, %(now)s - interval '40 days' from generate_series(1, %(users)s) u;
insert into notifications (user_id, kind, idempotency_key, status, created_at)
select u, 'renewal_failed', 'k' || u || ':' || d, 'sent', %(now)s - make_interval(days => d)
from generate_series(1, %(users)s) u, generate_series(0, 4) d;
insert into tagging_batches (user_id, action, keys, state, created_at, applied_at)
select u, case when d %% 2 = 0 then 'tag' else 'untag' end, array['k' || u], 'applied',
       %(now)s - make_interval(days => d), %(now)s - make_interval(days => d)
from generate_series(1, %(users)s) u, generate_series(0, 3) d;
insert into recordings (user_id, kind, has_audio, audio_key, created_at)
select u, 'recite', true, 'audio/' || u || '/' || r, %(now)s - make_interval(days => r * 3)
from generate_series(1, %(users)s) u, generate_series(0, 9) r;
insert into dead_letters (message_id, broker, queue_name, actor_name, args, kwargs, options, user_id,
                          reason, exception, traceback, first_failed_at, last_failed_at)
select 'm' || g, 'stub', 'retention', 'tag_recordings', jsonb_build_array(1 + g %% %(users)s), '{}',
       '{}', 1 + g %% %(users)s, 'retries_exhausted',
       (array['PanelUnavailable(''down'')', 'ValueError: x', 'TimeoutError()', 'KeyError(''k'')'])[1 + g %% 4],
       'Traceback ...', %(now)s - make_interval(hours => g %% 700), %(now)s - make_interval(hours => g %% 700)
from generate_series(1, %(dead)s) g;
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--dead", type=int, default=2000)
    args = parser.parse_args()
    import psycopg
    from starlette.testclient import TestClient

    import actors
    from domain.audits import leak_report
    from lapse.operator.report import write_html_report
    from lapse.operator.web.app import create_app
    from lapse.platform import db
    from lapse.platform.config import load_settings

    url = fresh_database("lapse_bench_web")
    with psycopg.connect(url) as conn:
        for statement in POPULATE.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"now": NOW, "users": args.users, "dead": args.dead})
    config = replace(load_settings(), web_token="bench-token-0123456789")
    pool = db.make_pool(url, config, size=4)
    db.install_pool(pool)

    def anchor() -> None:
        with pool.connection() as conn:
            leak_report(conn, now=NOW, since=NOW - timedelta(days=29),
                        max_age=config.leak_alert_age, billing_grace=config.billing_grace)

    client = TestClient(create_app(pool, config, broker=lambda: actors.broker, now=lambda: NOW))
    report_path = Path(tempfile.mkdtemp()) / "report.html"
    cases = {
        "/ (overview, lapse status + 14-day charts)": lambda: client.get("/"),
        "/charts?days=30": lambda: client.get("/charts?days=30"),
        "/dead-letters (grouped, 200 rows)": lambda: client.get("/dead-letters"),
        "/dead-letters?error=ValueError": lambda: client.get("/dead-letters?error=ValueError"),
        "/dead-letters/bulk dry run": lambda: client.get("/dead-letters/bulk?action=purge&error=ValueError"),
        "/users/1 (explain + timeline)": lambda: client.get("/users/1"),
        "/sweeps": lambda: client.get("/sweeps"),
        "report --html (30 days)": lambda: write_html_report(
            pool, report_path, since=NOW - timedelta(days=29), now=NOW, config=config),
    }
    for fn in cases.values():
        fn()  # warm up (templates compiled, plans cached)
    base = timed(anchor)
    print(f"{args.users} users, {args.users * 30} events, {args.dead} dead letters")
    print(f"anchor: leak_report over 30 days  {base * 1000:8.1f} ms")
    for name, fn in cases.items():
        seconds = timed(fn)
        print(f"{name:46} {seconds * 1000:8.1f} ms  {seconds / base:6.2f}x the anchor")
    print(f"report size: {report_path.stat().st_size / 1024:.0f} KiB")
    pool.close()


if __name__ == "__main__":
    main()
