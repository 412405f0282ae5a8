"""Connections: one psycopg pool per process, with the worker timeouts set.

A worker holds no connection across an external call or a sleep; the pool is
sized to the worker's threads plus a margin (LAPSE_DB_POOL_SIZE). Pool
connections are in autocommit: a read is one round trip (no BEGIN, no
ROLLBACK, which in psycopg also drops the connection's prepared statements),
and every change that must be atomic or hold a lock runs in an explicit
``transaction(conn)`` (``lapse.platform.after_commit``) or ``conn.transaction()``. The test
suite installs ``PoisoningPool`` so a connection used after it went back to the
pool fails loudly instead of silently working.
"""

from __future__ import annotations

import threading
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from lapse.platform.config import Settings, settings

_lock = threading.Lock()
_pool: ConnectionPool | None = None
_url: str | None = None


def database_url(config: Settings | None = None) -> str:
    """DATABASE_URL, or the embedded server's URL (started on first use)."""
    global _url
    config = config or settings()
    if config.database_url is not None:
        return config.database_url
    if _url is None:
        from lapse.platform import embedded

        _url = embedded.ensure_running(config.home)
    return _url


def connection_options(config: Settings) -> str:
    return (
        f"-c statement_timeout={config.statement_timeout_ms}"
        f" -c lock_timeout={config.lock_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={config.idle_in_transaction_timeout_ms}"
        " -c timezone=UTC"
    )


class PoisoningPool(ConnectionPool):
    """A pool that closes every connection handed back to it.

    psycopg lets a connection returned to the pool keep working silently; in
    tests that would hide use-after-return bugs (one predecessor had one). A
    closed connection is discarded by the pool and replaced, and any later use
    of the returned object raises ``OperationalError: the connection is closed``.
    """

    def putconn(self, conn: Connection[Any]) -> None:
        if not conn.closed:
            conn.close()
        super().putconn(conn)


def make_pool(
    url: str, config: Settings, *, size: int | None = None, poisoning: bool = False
) -> ConnectionPool:
    cls = PoisoningPool if poisoning else ConnectionPool
    return cls(
        url,
        min_size=0 if poisoning else 1,
        max_size=size or config.pool_size,
        kwargs={"row_factory": dict_row, "options": connection_options(config),
                "application_name": "lapse", "autocommit": True},
        open=True,
        name="lapse",
        timeout=30,
    )


def pool() -> ConnectionPool:
    """The process's pool, created on first use."""
    global _pool
    with _lock:
        if _pool is None:
            config = settings()
            _pool = make_pool(database_url(config), config)
        return _pool


def install_pool(new_pool: ConnectionPool | None) -> ConnectionPool | None:
    """Replace the process's pool (tests install a poisoning pool); return the old one."""
    global _pool, _url
    with _lock:
        old, _pool = _pool, new_pool
        if new_pool is None:
            _url = None
        return old
