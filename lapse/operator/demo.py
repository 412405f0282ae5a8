"""`lapse demo`: a month of a synthetic population, run by the real actors and sweeps on a simulated clock.

The demo works in its own database (``<name>_demo`` on the configured server,
recreated each run) and its own bucket, against the fake panel, Crypto Pay
and Telegram servers (real local HTTP servers) with faults injected at a low
rate. A seed writes the population's script (``demo_script``): sign-ups and
trials, sessions through the R1 gate, plans bought by balance, crypto
invoice or in-app payment, top-ups, auto-renewals until a balance runs dry,
cancellations, re-subscriptions inside and outside billing grace, refunds,
families and sponsorships. The simulated clock moves an hour at a time: the
hour's actions run first (each as the bot or the operator would: a
transaction, or a message to an actor), then due retries, then every sweep
whose cadence has a slot in the hour. Messages run inline, one at a time, in
the order they were sent (``Simulation``), so no thread interleaving can
change a number: the same seed gives the same ``--json``.

Worker logs go to a file; the screen shows a progress bar per simulated day,
then the audits, a summary table and the HTML report.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

from domain import broadcasts, lifecycle, retention
from lapse.flows import sweeps
from lapse.operator import demo_audits
from lapse.operator.demo_script import CURRENCY, PLANS, Action, write_script
from lapse.operator.demo_world import FaultPlan, World
from lapse.operator.progress import Progress
from lapse.operator.simulation import Simulation
from lapse.platform import db, migrate
from lapse.platform.after_commit import PendingMessage
from lapse.platform.config import Settings, settings
from lapse.platform.sql import queries
from lapse.ports import crypto_pay, s3

SQL = queries(__file__, "demo")
HOUR = timedelta(hours=1)
FAULT_RATE = 0.01
# The demo's fixed start: the numbers must not depend on the day it is run.
START = datetime(2026, 1, 5, tzinfo=UTC)
logger = logging.getLogger("lapse.demo")


def _demo_url(config: Settings) -> str:
    base = urlparse(db.database_url(config))
    name = (base.path.lstrip("/") or "lapse") + "_demo"
    admin = urlunparse(base._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
        # A throwaway database: a commit need not wait for the disk (no effect on any result).
        conn.execute(f'alter database "{name}" set synchronous_commit = off')
    return urlunparse(base._replace(path=f"/{name}"))


def _shown(url: str) -> str:
    """The demo database's URL to print, its password (if any) left out."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    return urlunparse(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@",
                                                                 ":PASSWORD@", 1)))


def _demo_store(config: Settings) -> s3.S3RecordingStore:
    from lapse.platform import local_s3

    endpoint, session = config.s3_endpoint_url, None
    if endpoint is None:
        endpoint, session = local_s3.ensure_running(config.home), local_s3.session()
    store = s3.S3RecordingStore(bucket=f"{config.s3_bucket}-demo", endpoint_url=endpoint,
                                region=config.aws_region, concurrency=config.s3_concurrency,
                                session=session)
    store.ensure_bucket()
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:  # a bucket left by an earlier run: start empty, like the database
            store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": keys})
    return store


@contextmanager
def seeded_uuids(seed: int) -> Iterator[None]:
    """Access keys and lease owners drawn from the seed, so a run repeats exactly (demo only)."""
    rng = random.Random(f"uuid:{seed}")
    original = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4 = original  # type: ignore[assignment]


@contextmanager
def logs_to_file(path: Path, level: str) -> Iterator[None]:
    """Every log record of the run into ``path``, none on the screen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    saved = (root.handlers[:], root.level)
    root.handlers = [handler]
    root.setLevel(level)
    for noisy in ("werkzeug", "httpx", "botocore", "urllib3", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield
    finally:
        handler.close()
        root.handlers, root.level = saved


class Demo:
    """The population's actions, done as the bot and the operator would do them."""

    def __init__(self, sim: Simulation, world: World, store: s3.S3RecordingStore) -> None:
        self.sim, self.world, self.store = sim, world, store
        self.ids: dict[int, int] = {}  # population index → user id
        self.done: dict[str, int] = {}
        self.uploads: list[str] = []
        self.invoices_to_pay: list[tuple[datetime, str]] = []
        self.sessions = 0
        self.seconds: dict[str, float] = {}  # wall time per action kind (benchmarks)

    def count(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    def run(self, action: Action) -> None:
        if action.kind not in ("signup", "broadcast") and action.user not in self.ids:
            return self.count(f"{action.kind}_skipped")
        if action.kind != "record":
            self.flush_uploads()
        handler: Callable[[Action], str | None] = getattr(self, f"do_{action.kind}")
        started = time.perf_counter()
        outcome = handler(action)
        self.seconds[action.kind] = self.seconds.get(action.kind, 0.0) + time.perf_counter() - started
        self.count(f"{action.kind}_{outcome}" if outcome else action.kind)
        return None

    # -- the user's side ------------------------------------------------------------------

    def do_signup(self, action: Action) -> None:
        referrer = action.params["referrer"]
        user_id = self.sim.act(lambda conn: conn.execute(SQL["user"], {
            "telegram_id": 100_000 + action.user, "language": action.params["language"],
            "referred_by": self.ids.get(referrer) if referrer is not None else None,
            "now": self.sim.now}).fetchone()["id"])
        self.ids[action.user] = int(user_id)
        self.send("start_trial", int(user_id))

    def do_record(self, action: Action) -> str:
        user_id = self.ids[action.user]
        self.sessions += 1
        key = f"audio/{user_id}/{self.sessions}"
        gate = self.sim.act(lambda conn: retention.record_session(
            conn, user_id, audio_key=key, now=self.sim.now, billing_grace=settings().billing_grace))
        if gate.store_audio:
            self.uploads.append(key)
            return "stored"
        return "refused"

    def do_buy(self, action: Action) -> str:
        return self.purchase(self.ids[action.user], "plan", action.params["plan"],
                             action.params["provider"], action.params["pays_after"])

    def do_topup(self, action: Action) -> str:
        return self.purchase(self.ids[action.user], "topup", None, action.params["provider"],
                             action.params["pays_after"], amount=action.params["amount"])

    def do_resubscribe(self, action: Action) -> str:
        """Back after the balance ran dry: top up in the app, buy the plan from the balance."""
        user_id = self.ids[action.user]
        current = self.current(user_id)
        if current is not None and current["status"] != "grace":
            return "not_needed"
        where = "in_grace" if current is not None else "after_expiry"
        price = PLANS[action.params["plan"]][1]
        self.purchase(user_id, "topup", None, "telegram", None, amount=price)
        self.purchase(user_id, "plan", action.params["plan"], "balance", None)
        return where

    def do_cancel(self, action: Action) -> str:
        current = self.current(self.ids[action.user])
        if current is None or current["kind"] != "paid" or current["status"] != "active":
            return "not_applicable"
        self.sim.act(lambda conn: lifecycle.set_auto_renew(conn, current["id"], False,
                                                           now=self.sim.now))
        return "done"

    # -- the operator's side --------------------------------------------------------------

    def do_refund(self, action: Action) -> str:
        current = self.current(self.ids[action.user])
        if current is None or current["kind"] != "paid" or current["status"] == "pending":
            return "not_applicable"
        self.sim.act(lambda conn: lifecycle.refund(conn, current["id"], now=self.sim.now))
        return "done"

    def do_family_add(self, action: Action) -> str:
        owner, member = self.ids[action.user], self.ids.get(action.params["member"])
        if member is None:
            return "not_applicable"
        current = self.current(owner)
        with self.sim.pool.connection() as conn:
            busy = any(conn.execute(SQL["is_owner_or_member"], {"user_id": u}).fetchone()["busy"]
                       for u in (owner, member))
        if busy or current is None or current["kind"] != "paid":
            return "not_applicable"
        self.sim.act(lambda conn: lifecycle.add_family_member(conn, owner, member,
                                                              now=self.sim.now))
        return "done"

    def do_family_remove(self, action: Action) -> str:
        owner, member = self.ids[action.user], self.ids.get(action.params["member"])
        with self.sim.pool.connection() as conn:
            row = conn.execute(SQL["current_membership"], {"member_id": member}).fetchone()
        if member is None or row is None or row["owner_id"] != owner:
            return "not_applicable"
        self.sim.act(lambda conn: lifecycle.remove_family_member(conn, owner, member,
                                                                 now=self.sim.now))
        return "done"

    def do_sponsor(self, action: Action) -> None:
        self.sim.act(lambda conn: lifecycle.grant_sponsorship(conn, self.ids[action.user],
                                                              sponsor="demo", now=self.sim.now))

    def do_unsponsor(self, action: Action) -> str:
        user_id = self.ids[action.user]
        with self.sim.pool.connection() as conn:
            row = conn.execute(SQL["active_sponsorship"], {"user_id": user_id}).fetchone()
        if row is None:
            return "not_applicable"
        self.sim.act(lambda conn: lifecycle.revoke_sponsorship(conn, row["id"], user_id,
                                                               now=self.sim.now))
        return "done"

    def do_broadcast(self, action: Action) -> None:
        """``lapse broadcast create`` and ``start``: news to everyone without a subscription."""
        broadcast_id = self.sim.act(lambda conn: broadcasts.create(conn, now=self.sim.now, texts={
            "en": "Lapse demo: a month of news. Come back with a week plan!",
            "ru": "Демо Lapse: новости месяца. Возвращайтесь с недельным планом!"}))
        self.sim.act(lambda conn: broadcasts.start(conn, broadcast_id, now=self.sim.now))

    # -- helpers --------------------------------------------------------------------------

    def purchase(self, user_id: int, kind: str, plan: str | None, provider: str,
                 pays_after: int | None, *, amount: int | None = None) -> str:
        """The bot's sale: a pending purchase, then the provider's payment (M2) or an invoice (M4)."""
        amount = amount if amount is not None else PLANS[plan or ""][1]
        purchase_id = int(self.sim.act(lambda conn: conn.execute(SQL["purchase"], {
            "user_id": user_id, "kind": kind, "plan_code": plan, "amount": amount,
            "currency": CURRENCY, "provider": provider, "now": self.sim.now}).fetchone()["id"]))
        if provider in ("telegram", "balance"):
            self.send("finalize_purchase", purchase_id, provider, f"{provider}-{purchase_id}",
                      amount, CURRENCY)
            return provider
        try:
            invoice = crypto_pay.port().create_invoice(
                purchase_id=purchase_id, amount=amount, currency=CURRENCY,
                expires_in=settings().crypto_invoice_ttl_minutes * 60)
        except (crypto_pay.CryptoPayUnavailable, crypto_pay.CryptoPayGarbage) as error:
            logger.warning("demo bot: no invoice for purchase %s (%s)", purchase_id, error)
            self.sim.act(lambda conn: conn.execute(SQL["invoice_not_created"], {"id": purchase_id}))
            return "crypto_invoice_failed"
        self.sim.act(lambda conn: conn.execute(SQL["set_invoice"], {
            "id": purchase_id, "invoice_id": invoice.invoice_id}))
        if pays_after is not None:
            self.invoices_to_pay.append((self.sim.now + timedelta(minutes=pays_after),
                                         invoice.invoice_id))
            return "crypto_paid_later"
        return "crypto_never_paid"

    def pay_due_invoices(self, until: datetime) -> None:
        due = [i for at, i in self.invoices_to_pay if at < until]
        self.invoices_to_pay = [(at, i) for at, i in self.invoices_to_pay if at >= until]
        for invoice_id in due:
            self.world.pay_invoice(invoice_id)

    def current(self, user_id: int) -> dict[str, Any] | None:
        with self.sim.pool.connection() as conn:
            row = conn.execute(SQL["current_subscription"], {"user_id": user_id}).fetchone()
        return row

    def send(self, actor_name: str, *args: Any) -> None:
        """A message to an actor, as the bot sends it; run at once by the simulation."""
        self.sim.work.queue.append(PendingMessage(actor_name, args))
        self.sim.drain()

    def flush_uploads(self) -> None:
        if self.uploads:
            self.store.put_all(self.uploads, b"demo audio")
            self.uploads = []


def run(config: Settings, *, users: int, days: int, seed: int, as_json: bool = False,
        out: Any = None) -> int:
    import actors

    out = out or sys.stdout
    log_path = (Path(config.home) / "demo" / "demo.log").resolve()
    started = time.monotonic()
    url = _demo_url(config)
    previous_pool = db.install_pool(db.make_pool(url, config))
    store = _demo_store(config)
    previous_store = s3.install_store(store)
    print(f"lapse demo: {users} users, {days} days, seed {seed}; worker logs: {log_path}",
          file=sys.stderr)
    try:
        with logs_to_file(log_path, config.log_level), seeded_uuids(seed):
            world = World.start()
            try:
                with db.pool().connection() as conn:
                    migrate.migrate(conn)
                    with conn.transaction():
                        conn.execute(SQL["plans"])
                        world.register_panel(conn)
                result = _simulate(actors.broker, world, store, users=users, days=days,
                                   seed=seed)
                audits = demo_audits.run_audits(db.pool(), store, world, now=result["end"])
            finally:
                world.stop()
        report, verdicts = _html_report(config, result["end"])
        summary = demo_audits.summary(db.pool(), result, audits)
    finally:
        s3.install_store(previous_store)
        demo_pool = db.install_pool(previous_pool)
    try:
        if as_json:
            print(json.dumps(summary, indent=2, sort_keys=True), file=out)
        else:
            demo_audits.print_summary(summary, out)
            print(f"HTML report: {report} (its verdicts: " + ", ".join(
                f"{v.name} {'ok' if v.ok else 'FAIL'}" for v in verdicts) + ")", file=out)
            print(f"worker logs: {log_path}", file=out)
        print(f"look around: DATABASE_URL={_shown(url)} lapse web   (or lapse status, "
              "lapse explain USER_ID)", file=sys.stderr if as_json else out)
        print(f"lapse demo: finished in {time.monotonic() - started:.1f} s", file=sys.stderr)
    finally:
        if demo_pool is not None:
            demo_pool.close()
    return 0 if summary["audits"]["ok"] else 1


def _simulate(broker: Any, world: World, store: s3.S3RecordingStore, *, users: int, days: int,
              seed: int) -> dict[str, Any]:
    script = write_script(users=users, days=days, seed=seed, start=START)
    schedule = tuple(name for name, sweep in sweeps.SWEEPS.items() if sweep.body is not None)
    sim = Simulation(db.pool(), store, broker, START, schedule=schedule)
    faults = FaultPlan(FAULT_RATE, random.Random(f"faults:{seed}"))
    demo = Demo(sim, world, store)
    progress = Progress(days, sys.stderr)
    try:
        hour, end = START, script.end
        while hour < end:
            following = hour + HOUR
            if following < end:
                faults.inject(world)
            else:
                faults.clear(world)  # the last hour is quiet: the audits see a settled world
            for action in script.due(hour):
                sim.jump(action.at)
                demo.run(action)
            demo.flush_uploads()
            demo.pay_due_invoices(following)
            sim.step(hour, following)
            hour = following
            if (hour - START) % timedelta(days=1) == timedelta(0):
                progress.day_done((hour - START).days, sim_now=hour)
    finally:
        progress.close()
        sim.close()
        spent = sorted({**sim.seconds, **demo.seconds}.items(), key=lambda kv: -kv[1])
        print("lapse demo: wall time by part: " + ", ".join(
            f"{name} {seconds:.1f}s" for name, seconds in spent), file=sys.stderr)
    return {"end": end, "planned": dict(script.planned), "done": demo.done,
            "faults": dict(faults.injected), "outcomes": dict(sim.outcomes),
            "retries_waiting": len(sim.delayed), "sweep_runs": len(sim.runs)}


def _html_report(config: Settings, now: datetime) -> tuple[str, list[Any]]:
    """The run's HTML report (``lapse report --html``): charts per simulated day and verdicts."""
    from lapse.operator import report

    path = (Path(config.home) / "demo" / "report.html").resolve()
    verdicts = report.write_html_report(db.pool(), path, since=START, now=now, config=config)
    return str(path), verdicts
