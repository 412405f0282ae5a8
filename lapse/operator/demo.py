"""`lapse demo`: a synthetic population run through simulated days by the real sweeps and actors.

The demo works in its own database (``<name>_demo`` on the configured server,
recreated each run) and its own bucket, so it never touches real data. It
creates users with trials, paid plans, cancellations, families,
sponsorships and recordings (audio uploaded to S3: LAPSE_S3_ENDPOINT_URL, or
the local S3 server), then steps a simulated clock hour by hour: the sweeps
run at their cadences, the messages they send run inline, and every day some
users record new sessions through the R1 gate. It ends with the invariants,
the leak audit and the S3 audit.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

from domain import audits, invariants, ledger
from lapse.operator.simulation import Simulation
from lapse.platform import clock, db, migrate
from lapse.platform.config import Settings
from lapse.platform.sql import queries
from lapse.ports import s3

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
            start = now - timedelta(days=rng.randint(0, 29))
            status = "cancelled" if rng.random() < 0.25 else "active"
            conn.execute(SQL["subscription"], {"user_id": user, "kind": "paid", "status": status,
                         "plan": "month", "start": start, "end": start + timedelta(days=30),
                         "key": uuid.uuid4(), "ended": None, "renew": status == "active"})
            counts["paid" if status == "active" else "cancelled"] += 1
            if rng.random() < 0.6:  # enough balance for an auto-renewal, through the ledger
                ledger.post(conn, user, 1000, reason="demo_topup", ref="seed", now=now)
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


def _demo_store(config: Settings) -> s3.S3RecordingStore:
    from lapse.platform import local_s3

    endpoint, session = config.s3_endpoint_url, None
    if endpoint is None:
        endpoint, session = local_s3.ensure_running(config.home), local_s3.session()
    store = s3.S3RecordingStore(bucket=f"{config.s3_bucket}-demo", endpoint_url=endpoint,
                                region=config.aws_region, concurrency=config.s3_concurrency,
                                session=session)
    store.ensure_bucket()
    return store


def run(config: Settings, *, users: int, days: int, seed: int) -> int:
    import actors

    url = _demo_url(config)
    previous = db.install_pool(db.make_pool(url, config))
    store = _demo_store(config)
    previous_store = s3.install_store(store)
    rng = random.Random(seed)
    start = clock.now().replace(minute=0, second=0, microsecond=0)
    try:
        with db.pool().connection() as conn:
            print("migrate:", ", ".join(migrate.migrate(conn)))
            with conn.transaction():
                counts = populate(conn, users=users, seed=seed, now=start)
                keys: list[str] = [r["audio_key"] for r in conn.execute(SQL["stored_audio"])]  # type: ignore[call-overload]
        store.put_all(keys, b"demo audio")
        print("population:", ", ".join(f"{k}={v}" for k, v in counts.items()),
              f"(audio uploaded: {len(keys)})")
        simulation = Simulation(db.pool(), store, actors.broker, start, money=True)
        try:
            for day in range(days):
                recorded = [simulation.record(rng.randint(1, users)) for _ in range(users // 5)]
                simulation.advance(start + timedelta(days=day + 1), step=timedelta(hours=1))
                print(f"day {day + 1}: {len(recorded)} new sessions "
                      f"({sum(g.store_audio for g in recorded)} stored, the rest refused by the gate); "
                      f"{len(simulation.runs)} sweep runs so far; "
                      f"{len(simulation.delayed)} retries waiting")
        finally:
            simulation.close()
        return _report(config, store, start + timedelta(days=days))
    finally:
        s3.install_store(previous_store)
        demo_pool = db.install_pool(previous)
        if demo_pool is not None:
            demo_pool.close()


def _report(config: Settings, store: s3.S3RecordingStore, now: Any) -> int:
    with db.pool().connection() as conn:
        results = invariants.check_invariants(conn, now=now, billing_grace=config.billing_grace,
                                              alert_age=config.leak_alert_age)
        leaks = audits.leak_report(conn, now=now, since=now - timedelta(days=90),
                                   max_age=config.leak_alert_age, billing_grace=config.billing_grace)
        summary: Any = conn.execute(SQL["summary"]).fetchone()
        recordings = list(audits.recordings_to_check(conn, sample=None))
        pending = audits.pending_keys(conn)
    drift = audits.s3_drift(recordings, store, pending=pending)
    for r in results:
        print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name:32} {r.meaning}")
    print(f"subscriptions: {summary['renewals']} renewed from the balance, {summary['grace']} in "
          f"billing grace (balance too low), {summary['expired']} expired")
    print(f"recordings: {summary['kept']} kept, {summary['tagged']} tagged for deletion, "
          f"{summary['purged']} purged, {summary['refused']} refused by the gate")
    oldest = leaks.oldest_leak_age
    print(f"leak audit: {len(leaks.leaked_users)} leaked users, oldest leak "
          f"{'none' if oldest is None else f'{oldest.total_seconds() / 3600:.1f} h'}, "
          f"{len(leaks.unapplied_batches)} unapplied batches")
    print(f"S3 audit: {drift.checked} recordings checked, "
          f"{'S3 agrees with the database' if drift.ok else f'DRIFT {dict(drift.drift)}'}")
    failed = [r for r in results if not r.ok]
    ok = not failed and not leaks.too_old and drift.ok
    print("all invariants hold, no leaks past the alert age" if ok else "PROBLEMS FOUND")
    return 0 if ok else 1
