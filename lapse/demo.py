"""`lapse demo`: a synthetic population run through simulated days by the real sweeps.

The demo works in its own database (``<name>_demo`` on the configured server,
recreated each run), so it never touches real data. For now it creates users
with trials, paid plans, cancellations, families, sponsorships and
recordings, runs every sweep once per simulated day (those not implemented
yet say so), and ends with ``lapse audit invariants``.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

from domain import invariants
from lapse import clock, db, migrate, sweeps
from lapse.config import Settings
from lapse.sql import queries

SQL = queries(__file__, "demo")


def _demo_url(config: Settings) -> str:
    base = urlparse(db.database_url(config))
    name = (base.path.lstrip("/") or "lapse") + "_demo"
    admin = urlunparse(base._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return urlunparse(base._replace(path=f"/{name}"))


def populate(conn: Any, *, users: int, seed: int, now: Any) -> dict[str, int]:
    """Insert a varied population as of ``now``; return how many of each kind."""
    rng = random.Random(seed)
    conn.execute(SQL["plans"])
    counts = dict.fromkeys(("trial", "paid", "cancelled", "expired", "family", "sponsored",
                            "recordings"), 0)
    owners: list[int] = []
    for n in range(users):
        user = conn.execute(SQL["user"], {"telegram_id": 10_000 + n,
                                          "created": now - timedelta(days=rng.randint(1, 60))}
                            ).fetchone()["id"]
        roll = rng.random()
        if roll < 0.35:
            start = now - timedelta(days=rng.randint(0, 2), hours=rng.randint(0, 20))
            conn.execute(SQL["subscription"], {"user_id": user, "kind": "trial", "status": "active",
                         "plan": None, "start": start, "end": start + timedelta(days=3),
                         "key": uuid.uuid4(), "ended": None, "renew": False})
            counts["trial"] += 1
        elif roll < 0.65:
            start = now - timedelta(days=rng.randint(0, 25))
            status = "cancelled" if rng.random() < 0.25 else "active"
            conn.execute(SQL["subscription"], {"user_id": user, "kind": "paid", "status": status,
                         "plan": "month", "start": start, "end": start + timedelta(days=30),
                         "key": uuid.uuid4(), "ended": None, "renew": status == "active"})
            counts["paid" if status == "active" else "cancelled"] += 1
            owners.append(user)
        elif roll < 0.8:
            start = now - timedelta(days=rng.randint(31, 90))
            conn.execute(SQL["subscription"], {"user_id": user, "kind": "paid", "status": "expired",
                         "plan": "month", "start": start, "end": start + timedelta(days=30),
                         "key": None, "ended": start + timedelta(days=30), "renew": False})
            counts["expired"] += 1
        elif roll < 0.9 and owners:
            conn.execute(SQL["family"], {"owner": rng.choice(owners), "member": user,
                                         "added": now - timedelta(days=1)})
            counts["family"] += 1
        else:
            conn.execute(SQL["sponsorship"], {"user_id": user, "granted": now - timedelta(days=2)})
            counts["sponsored"] += 1
        for _ in range(rng.randint(0, 3)):
            conn.execute(SQL["recording"], {"user_id": user, "key": f"audio/{user}/{uuid.uuid4()}",
                                            "created": now - timedelta(hours=rng.randint(1, 40))})
            counts["recordings"] += 1
    return counts


def run(config: Settings, *, users: int, days: int, seed: int) -> int:
    url = _demo_url(config)
    previous = db.install_pool(db.make_pool(url, config))
    try:
        start = clock.now()
        with db.pool().connection() as conn:
            print("migrate:", ", ".join(migrate.migrate(conn)))
            with conn.transaction():
                counts = populate(conn, users=users, seed=seed, now=start)
        print("population:", ", ".join(f"{k}={v}" for k, v in counts.items()))
        for day in range(days):
            at = start + timedelta(days=day)
            clock.override(at, changes_state=True, allowed=True)
            ran = [sweeps.run_sweep(db.pool(), name, now=at, budget_seconds=60) for name in sweeps.SWEEPS]
            print(f"day {day + 1} ({at:%Y-%m-%d %H:%M} UTC): ran {len(ran)} sweeps "
                  f"({sum(1 for s in sweeps.SWEEPS.values() if s.body is None)} not implemented yet)")
        with db.pool().connection() as conn:
            results = invariants.check_invariants(conn, now=clock.now(),
                                                  billing_grace=config.billing_grace,
                                                  alert_age=timedelta(hours=26))
        for r in results:
            print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name:32} {r.meaning}")
        failed = [r for r in results if not r.ok]
        print("all invariants hold" if not failed else f"{len(failed)} invariant(s) violated")
        return 1 if failed else 0
    finally:
        clock.override(None, changes_state=False, allowed=True)
        demo_pool = db.install_pool(previous)
        if demo_pool is not None:
            demo_pool.close()
