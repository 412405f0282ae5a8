"""Test fixtures: real PostgreSQL (DATABASE_URL, or the embedded server), real Redis when reachable.

Databases: a template migrated once per session; ``database`` clones it for a
test that commits or runs actors; ``conn`` is a transaction on a shared
migrated database, rolled back at the end. Every pool the tests use is a
``PoisoningPool``. With CI=true, a test that needs Redis or PostgreSQL fails
instead of being skipped.
"""

from __future__ import annotations

import os
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
TEMPLATE = "lapse_test_template"
SHARED = "lapse_test_shared"


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def create_database(name: str, template: str | None = TEMPLATE) -> str:
    _admin(f'drop database if exists "{name}" with (force)')
    _admin(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    return with_database(SERVER, name)


def drop_database(name: str) -> None:
    _admin(f'drop database if exists "{name}" with (force)')


def pytest_sessionstart(session: pytest.Session) -> None:
    from lapse.platform import migrate

    url = create_database(TEMPLATE, template=None)
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    create_database(SHARED)
    os.environ["DATABASE_URL"] = with_database(SERVER, SHARED)
    from lapse.platform.config import reset_settings

    reset_settings()


@pytest.fixture
def database() -> Iterator[str]:
    """URL of a fresh database cloned from the migrated template."""
    name = f"lapse_test_{uuid.uuid4().hex[:10]}"
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


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (REDIS_URL or 127.0.0.1:6379, database 15), flushed; skipped when absent."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        service_unavailable(f"Redis at {url} is unreachable ({error}); Redis tests skipped")
    return url


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
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
