"""The first run as a user meets it: the README's commands on a brand-new empty database.

Every other test database is cloned from a template that a plain connection
migrated, which hid that ``lapse db migrate`` (dict_row connections) skipped
the dramatiq-postgres queue schema on an empty database. Here the commands of
README's "Running it" block run verbatim, as subprocesses, on a database made
with a bare ``create database`` — for the Postgres broker, the Redis broker,
and the embedded default (no DATABASE_URL: embedded PostgreSQL, local S3
server and Postgres broker under a new LAPSE_HOME). Then a lapsed user's
``tag_recordings`` is sent by name and tags the S3 object, the scheduler's
start-up ticks run a sweep, and two bad messages show up in ``lapse dlq list``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from dramatiq.message import Message
from psycopg.rows import dict_row

from tests.conftest import (
    REDIS_NAMESPACE,
    ROOT,
    create_database,
    database_name,
    delete_namespace,
    drop_database,
    eventually,
    service_unavailable,
)
from tests.support.processes import spawn, stop_process_groups

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"
# inside this run's namespace (deleted with it), apart from other tests' leftover messages
FIRST_RUN_NAMESPACE = f"{REDIS_NAMESPACE}:first-run"
BIN = str(Path(sys.executable).parent)


def readme_commands() -> list[str]:
    """The commands of the README's "Running it" block, comments removed."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Running it\s+```sh\n(.*?)```", readme, re.S)
    assert block, "README has no ```sh block under '## Running it'"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()
            if line.split("#", 1)[0].strip()]


MIGRATE, WORKER, SCHEDULER = readme_commands()


@dataclass
class FirstRun:
    """One deployment started from nothing by the README's commands."""

    broker: str
    env: dict[str, str]
    logs: Path
    url: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, command: str, log_name: str) -> None:
        self.processes.append(spawn(["bash", "-c", command], self.env, self.logs / log_name))

    def stop(self) -> None:
        stop_process_groups(self.processes, grace=20)

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted(self.logs.glob("*.log")))

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def send(self, actor_name: str, *args: Any, queue: str = "retention") -> None:
        """Send a message by actor name, the way another service would."""
        from lapse.platform.brokers import LapsePostgresBroker, LapseRedisBroker

        message: Message[Any] = Message(queue_name=queue, actor_name=actor_name, args=args,
                                        kwargs={}, options={})
        if self.broker == "redis":
            LapseRedisBroker(url=REDIS_URL, namespace=FIRST_RUN_NAMESPACE).enqueue(message)
            return
        broker = LapsePostgresBroker(url=self.url, results=False)
        try:
            broker.enqueue(message)
        finally:
            broker.close()


def _environment(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # the suite's own settings (stub broker, its shared database, a dead S3 endpoint) are not a user's
    for name in ("DATABASE_URL", "LAPSE_BROKER", "LAPSE_S3_ENDPOINT_URL", "LAPSE_S3_BUCKET",
                 "REDIS_URL", "PYTHONPATH"):
        env.pop(name, None)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def _seed_lapsed_user(run: FirstRun, store: Any) -> tuple[int, str]:
    key = f"audio/first-run/{uuid.uuid4()}"
    store.put(key, b"audio")
    [user] = run.query("insert into users (created_at) values (now() - interval '9 days') returning id")
    run.query("insert into subscriptions (user_id, kind, status, started_at, expires_at, ended_at) "
              "values (%s, 'trial', 'expired', now() - interval '5 days', "
              "now() - interval '2 days', now() - interval '2 days')", user["id"])
    run.query("insert into recordings (user_id, has_audio, audio_key, created_at) "
              "values (%s, true, %s, now() - interval '4 days')", user["id"], key)
    return int(user["id"]), key


def _first_run(run: FirstRun, store: Any) -> None:
    """The README's three commands, then one message of each kind, checked from outside."""
    migrated = run.run(MIGRATE)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied: 0001_"), migrated.stdout
    run.start(WORKER, "worker.log")
    run.start(SCHEDULER, "scheduler.log")
    if not run.url:
        run.url = run.run("lapse embedded url").stdout.strip()
    user_id, key = _seed_lapsed_user(run, store)

    run.send("tag_recordings", user_id)
    run.send("tag_recordings", "x")
    run.send("no_such_actor", user_id)

    def waiting(what: str) -> str:
        return f"{what} ({run.broker})\n{run.log_tails()}"

    eventually(lambda: run.query("select 1 from tagging_batches where user_id = %s "
                                 "and state = 'applied'", user_id),
               timeout=60, interval=0.5, what=waiting("the tagging batch applied by the worker"))
    assert store.inspect(key).tagged
    eventually(lambda: run.query("select 1 from sweep_runs where status = 'completed' "
                                 "and tick_minute is not null"),
               timeout=60, interval=0.5, what=waiting("a sweep run by the scheduler's start-up tick"))
    assert run.query("select 1 from sweep_ticks")
    eventually(lambda: len(run.query("select 1 from dead_letters")) >= 2, timeout=30,
               interval=0.5, what=waiting("both bad messages in the dead-letter archive"))

    listed = run.run("lapse dlq list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any("tag_recordings" in line and "invalid_arguments" in line for line in lines), listed.stdout
    assert any("no_such_actor" in line and "unknown_actor" in line for line in lines), listed.stdout
    assert [p.poll() for p in run.processes] == [None, None], waiting("worker or scheduler exited")


def test_the_readme_block_is_migrate_worker_scheduler():
    assert (MIGRATE, WORKER, SCHEDULER) == (
        "lapse db migrate", "dramatiq actors", "TZ=UTC periodiq actors schedules")


@pytest.fixture
def bucket_store(s3_server: Any) -> Any:
    from lapse.ports.s3 import S3RecordingStore

    store = S3RecordingStore(bucket=f"first-run-{uuid.uuid4().hex[:8]}", endpoint_url=s3_server.url,
                             region="us-east-1")
    store.ensure_bucket()
    return store


@pytest.fixture
def empty_database() -> Iterator[tuple[str, str]]:
    """A brand-new database made by a bare ``create database`` (no clone of the test template)."""
    name = database_name("first_run")
    url = create_database(name, template=None)
    yield name, url
    drop_database(name)


@pytest.mark.parametrize("broker", ["postgres", "redis"])
def test_first_run_on_an_empty_database(broker, empty_database, s3_server, bucket_store, tmp_path):
    _, url = empty_database
    extra: dict[str, str | None] = {}
    if broker == "redis":
        try:
            delete_namespace(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2),
                             FIRST_RUN_NAMESPACE)
        except redis.RedisError as error:
            service_unavailable(f"Redis at {REDIS_URL} is unreachable ({error})")
        extra = {"REDIS_URL": REDIS_URL, "LAPSE_REDIS_NAMESPACE": FIRST_RUN_NAMESPACE}
    env = _environment(DATABASE_URL=url, LAPSE_BROKER=broker, LAPSE_HOME=str(tmp_path / "home"),
                       LAPSE_S3_ENDPOINT_URL=s3_server.url,
                       LAPSE_S3_BUCKET=bucket_store.bucket, **extra)
    run = FirstRun(broker, env, tmp_path, url=url)
    try:
        _first_run(run, bucket_store)
    finally:
        run.stop()


def test_first_run_of_the_embedded_default(tmp_path):
    from lapse.platform import local_s3
    from lapse.ports.s3 import S3RecordingStore

    home = tmp_path / "lapse-home"
    run = FirstRun("embedded", _environment(LAPSE_HOME=str(home)), tmp_path)
    try:
        # the object the user recorded, in the local S3 server the worker will use
        store = S3RecordingStore(bucket="lapse-recordings", endpoint_url=local_s3.ensure_running(home),
                                 region="us-east-1", session=local_s3.session())
        store.ensure_bucket()
        _first_run(run, store)
    finally:
        run.stop()
        stopped = run.run("lapse embedded stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout.splitlines()[0], stopped.stdout
