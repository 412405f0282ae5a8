"""Test fixtures: real PostgreSQL (DATABASE_URL, or the embedded server), real Redis when reachable.

Databases: a template migrated once per session; ``database`` clones it for a
test that commits or runs actors; ``conn`` is a transaction on a shared
migrated database, rolled back at the end. Every pool the tests use is a
``PoisoningPool``. With CI=true, a test that needs Redis or PostgreSQL fails
instead of being skipped.

Two runs may share one PostgreSQL server and one Redis database: every
database of a run is named ``lapse_test_<run id>_…`` and dropped when the
session ends, and its Redis keys live under its own ``LAPSE_REDIS_NAMESPACE``
(only those are deleted, never the whole Redis database). A run holds a
session advisory lock on its id for as long as it lives; databases of a run
whose lock is free (the run is gone) are dropped at the next session start.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
os.environ["LAPSE_BROKER"] = "stub"
os.environ["LAPSE_PANEL_CHECK_AT_START"] = "0"  # on in tests/actors/test_panel_check.py only
# Nothing in the tests may reach real AWS: credentials are fakes, the endpoint is moto's.
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"})
os.environ.setdefault("LAPSE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
os.environ.pop("REDIS_URL_FOR_LAPSE", None)
CI = os.environ.get("CI", "").lower() == "true"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from lapse.platform import embedded

    home = Path(os.environ.get("LAPSE_HOME", ROOT / ".lapse")).resolve()
    return embedded.ensure_running(home)


def with_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


SERVER = _server_url()
ADMIN = with_database(SERVER, "postgres")
RUN_ID = f"r{os.getpid()}_{secrets.token_hex(3)}"
PREFIX = f"lapse_test_{RUN_ID}"
TEMPLATE = f"{PREFIX}_template"
SHARED = f"{PREFIX}_shared"
REDIS_NAMESPACE = f"lapse-test-{RUN_ID}"
os.environ["LAPSE_REDIS_NAMESPACE"] = REDIS_NAMESPACE
_RUN_DATABASE = re.compile(r"lapse_test_(r[0-9]+_[0-9a-f]{6})_.+")
_run_lock: psycopg.Connection[Any] | None = None


def database_name(purpose: str = "db") -> str:
    """A fresh database name of this run (dropped at the latest when the session ends)."""
    name = f"{PREFIX}_{purpose}_{uuid.uuid4().hex[:8]}"
    assert len(name) <= 63, f"PostgreSQL truncates names over 63 bytes: {name}"
    return name


def _admin(sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def _hold_run_lock() -> psycopg.Connection[Any]:
    """Take this run's advisory lock on a connection kept open for the whole session."""
    conn = psycopg.connect(ADMIN, autocommit=True, keepalives=1, keepalives_idle=30)
    conn.execute("select pg_advisory_lock(hashtext('lapse-test-run'), hashtext(%s))", (RUN_ID,))
    return conn


def run_databases(run_id: str = RUN_ID) -> list[str]:
    """Databases of one run (this one by default); with ``"*"``, of every run."""
    names = [name for (name,) in _admin("select datname from pg_database order by 1")]
    return [n for n in names if (m := _RUN_DATABASE.fullmatch(n)) and run_id in ("*", m.group(1))]


def _drop_databases_of_dead_runs() -> None:
    # A run takes its lock before it creates a database and holds it until its
    # process ends, so a free lock proves that nothing of that run is running.
    runs = {m.group(1) for n in run_databases("*") if (m := _RUN_DATABASE.fullmatch(n))}
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for run in sorted(runs - {RUN_ID}):
            key = (run,)
            free = conn.execute("select pg_try_advisory_lock(hashtext('lapse-test-run'), "
                                "hashtext(%s))", key).fetchone()
            if not (free and free[0]):
                continue
            try:
                for name in run_databases(run):
                    conn.execute(f'drop database if exists "{name}" with (force)')
            finally:
                conn.execute("select pg_advisory_unlock(hashtext('lapse-test-run'), hashtext(%s))",
                             key)


def create_database(name: str, template: str | None = TEMPLATE) -> str:
    _admin(f'drop database if exists "{name}" with (force)')
    _admin(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    return with_database(SERVER, name)


def drop_database(name: str) -> None:
    _admin(f'drop database if exists "{name}" with (force)')


def pytest_sessionstart(session: pytest.Session) -> None:
    global _run_lock
    from lapse.platform import migrate

    _run_lock = _hold_run_lock()
    _drop_databases_of_dead_runs()
    url = create_database(TEMPLATE, template=None)
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    create_database(SHARED)
    os.environ["DATABASE_URL"] = with_database(SERVER, SHARED)
    from lapse.platform.config import reset_settings

    reset_settings()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for name in run_databases():
        drop_database(name)
    _delete_redis_keys()
    if _run_lock is not None:
        _run_lock.close()


def _delete_redis_keys() -> None:
    import redis

    try:
        client = redis.Redis.from_url(_redis_url(), socket_connect_timeout=2)
        delete_namespace(client, REDIS_NAMESPACE)
    except redis.RedisError:
        return  # no Redis, so this run left nothing there


def delete_namespace(client: Any, namespace: str) -> int:
    """Delete the Redis keys under ``namespace:`` (and nothing else); return how many."""
    keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
    return int(client.delete(*keys)) if keys else 0


@pytest.fixture
def database() -> Iterator[str]:
    """URL of a fresh database cloned from the migrated template."""
    name = database_name()
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture
def pool(database: str) -> Iterator[Any]:
    """A poisoning pool on a fresh database, installed as the process's pool."""
    from lapse.platform import db
    from lapse.platform.config import load_settings

    test_pool = db.make_pool(database, load_settings(), size=6, poisoning=True)
    previous = db.install_pool(test_pool)
    yield test_pool
    db.install_pool(previous)
    test_pool.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A real moto S3 server on a free local port (in this process, so its objects outlive a stop())."""
    from moto.server import ThreadedMotoServer

    from lapse.platform.embedded import _free_port

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    os.environ["LAPSE_S3_ENDPOINT_URL"] = server.url  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def store(s3_server: Any) -> Iterator[Any]:
    """The boto3 adapter on a fresh bucket of the moto server, installed as the process's store."""
    from lapse.ports import s3

    adapter = s3.S3RecordingStore(bucket=f"test-{uuid.uuid4().hex[:12]}", endpoint_url=s3_server.url,
                                  region="us-east-1", concurrency=8)
    adapter.ensure_bucket()
    previous = s3.install_store(adapter)
    yield adapter
    s3.install_store(previous)


@pytest.fixture
def conn() -> Iterator[psycopg.Connection[Any]]:
    """A connection inside a transaction that is rolled back after the test."""
    with psycopg.connect(with_database(SERVER, SHARED), row_factory=dict_row) as connection:
        connection.execute("set timezone = 'UTC'")
        connection.commit()
        connection.execute("begin")
        yield connection
        connection.rollback()


@pytest.fixture
def sent() -> Iterator[list[Any]]:
    """Messages sent after commit, recorded instead of reaching a broker."""
    from lapse.platform import after_commit

    messages: list[Any] = []
    after_commit.install_sender(messages.append)
    yield messages
    after_commit.install_sender(None)


def service_unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def _redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (REDIS_URL or 127.0.0.1:6379, database 15); skipped when absent."""
    import redis

    url = _redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        service_unavailable(f"Redis at {url} is unreachable ({error}); Redis tests skipped")
    return url


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    """The Redis URL with this run's namespace empty (other runs' keys are left alone)."""
    import redis

    delete_namespace(redis.Redis.from_url(redis_url), REDIS_NAMESPACE)
    return redis_url


def eventually(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
