"""A broadcast end to end: a fresh database, the fake Bot API on loopback, real worker processes.

Shared by ``tests/actors/test_broadcast_processes.py`` and
``bench/broadcast_throughput.py``. Workers run ``dramatiq actors`` on the
Redis broker under a namespace of their own (deleted by ``close``), with the
Telegram settings pointing at the fake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

from lapse.ports.fakes.telegram import TOKEN, FakeTelegram

ROOT = Path(__file__).resolve().parents[2]
FIRST_CHAT = 10_000_000


@dataclass
class BroadcastStack:
    url: str
    redis_url: str
    namespace: str
    logs: Path
    fake: FakeTelegram
    rate: float = 1000.0
    broker: str = "redis"
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update({"DATABASE_URL": self.url, "LAPSE_BROKER": self.broker,
                    "REDIS_URL": self.redis_url,
                    "LAPSE_REDIS_NAMESPACE": self.namespace, "TZ": "UTC",
                    "PYTHONPATH": str(ROOT), "LAPSE_LOG_LEVEL": "WARNING",
                    "LAPSE_TELEGRAM_URL": self.fake.url, "LAPSE_TELEGRAM_TOKEN": TOKEN,
                    "LAPSE_TELEGRAM_RATE_PER_SECOND": str(self.rate),
                    "LAPSE_TELEGRAM_TIMEOUT_SECONDS": "2"})
        env.update(self.extra_env)
        return env

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def seed_users(self, count: int, *, subscribed_every: int = 0) -> None:
        """``count`` users with chats FIRST_CHAT + n (n from 1); every ``subscribed_every``-th has a
        current subscription (outside the audience). One in three speaks Russian."""
        self.query("insert into users (telegram_id, language) select %s + n, "
                   "case when n %% 3 = 0 then 'ru' else 'en' end "
                   "from generate_series(1, %s) n", FIRST_CHAT, count)
        if subscribed_every:
            self.query("insert into plans (code, period_days, price, currency) "
                       "values ('month', 30, 500, 'USD') on conflict do nothing")
            self.query("insert into subscriptions (user_id, kind, status, plan_code, started_at, "
                       "expires_at, access_key, reached_active) "
                       "select id, 'paid', 'active', 'month', now(), now() + interval '30 days', "
                       "gen_random_uuid(), true from users where id %% %s = 0", subscribed_every)

    def start_worker(self, threads: int = 8, name: str = "worker",
                     processes: int = 1) -> subprocess.Popen[bytes]:
        bin_dir = Path(sys.executable).parent
        log = open(self.logs / f"{name}-{len(self.workers)}.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [str(bin_dir / "dramatiq"), "actors", "--processes", str(processes),
             "--threads", str(threads),
             "--queues", "notifications"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker's whole process group (the dramatiq parent and its forked child)."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)

    def lapse(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lapse.operator.cli", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=120,
                              check=False)

    def outcomes(self, broadcast_id: int) -> Counter[str]:
        rows = self.query("select status, count(*) as n from notifications "
                          "where broadcast_id = %s group by status", broadcast_id)
        return Counter({r["status"]: int(r["n"]) for r in rows})

    def worker_rss_mb(self) -> float:
        """Resident memory of every process of the live workers' groups, in MB."""
        total = 0
        for worker in self.workers:
            if worker.poll() is not None:
                continue
            for pid in _group_members(worker.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                total += next((int(line.split()[1]) for line in status.splitlines()
                               if line.startswith("VmRSS:")), 0)
        return total / 1024

    def queued_messages(self) -> int:
        """Messages waiting in the broker (the notifications queue and its delay queue)."""
        client = redis.Redis.from_url(self.redis_url)
        return int(client.llen(f"{self.namespace}:notifications")) + int(
            client.llen(f"{self.namespace}:notifications.DQ"))

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.namespace}:*", count=500))
        if keys:
            client.delete(*keys)


def _group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == group:
                members.append(int(entry.name))
        except OSError:
            continue
    return members


def wait_for(predicate: Any, *, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until truthy; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
