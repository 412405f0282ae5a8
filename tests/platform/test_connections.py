"""The pool: worker timeouts set, and a connection used after its return fails loudly."""

from __future__ import annotations

import psycopg
import pytest

from lapse.platform import db
from lapse.platform.config import load_settings


def test_connection_used_after_return_to_the_pool_fails(pool):
    with pool.connection() as conn:
        conn.execute("select 1")
    with pytest.raises(psycopg.OperationalError, match="closed"):
        conn.execute("select 1")


def test_worker_connections_have_timeouts(pool):
    config = load_settings()
    with pool.connection() as conn:
        assert conn.execute("show statement_timeout").fetchone()["statement_timeout"] == (
            f"{config.statement_timeout_ms // 1000}s")
        assert conn.execute("show lock_timeout").fetchone()["lock_timeout"] == (
            f"{config.lock_timeout_ms // 1000}s")
        assert conn.execute("show idle_in_transaction_session_timeout").fetchone()[
            "idle_in_transaction_session_timeout"] == "1min"
        assert conn.execute("show timezone").fetchone()["TimeZone"] == "UTC"


def test_the_default_pool_is_sized_from_the_config(database):
    config = load_settings({"DATABASE_URL": database, "LAPSE_DB_POOL_SIZE": "5"})
    real = db.make_pool(database, config)
    try:
        assert real.max_size == 5
        assert not isinstance(real, db.PoisoningPool)
    finally:
        real.close()


def test_the_postgres_broker_has_its_own_pool_of_tuple_rows(database):
    # dramatiq-postgres and ArchivingPostgresConsumer.claim unpack tuples; Lapse's pool
    # gives dict rows, so the broker must never be handed that pool.
    from lapse.platform.brokers import build_broker

    broker = build_broker(load_settings({"DATABASE_URL": database, "LAPSE_BROKER": "postgres"}))
    try:
        with broker.pool.connection() as conn:
            assert conn.execute("select 1, 2").fetchone() == (1, 2)
    finally:
        broker.close()
