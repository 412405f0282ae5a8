"""`lapse db migrate`: in order, recorded, idempotent, safe when two run at once."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.rows import dict_row, tuple_row

from lapse.platform import migrate
from tests.conftest import create_database, database_name, drop_database


# The CLI's pool hands migrate() dict_row connections; dramatiq_postgres.init unpacks
# tuples, and with a dict it once read the column name as "the queue table exists".
@pytest.mark.parametrize("row_factory", [tuple_row, dict_row], ids=["tuple_row", "dict_row"])
def test_migrations_apply_once_and_are_recorded(row_factory):
    name = database_name("empty")
    url = create_database(name, template=None)
    try:
        with psycopg.connect(url, row_factory=row_factory) as conn:
            assert migrate.pending(conn) == [p.stem for p in migrate.available()]
            first = migrate.migrate(conn)
            assert first[: len(migrate.available())] == [p.stem for p in migrate.available()]
            assert "dramatiq-postgres queue schema" in first
            assert migrate.migrate(conn) == []
            assert migrate.pending(conn) == []
        with psycopg.connect(url) as conn:
            queue = conn.execute("select to_regclass('dramatiq.queue')").fetchone()
            assert queue == ("dramatiq.queue",)
    finally:
        drop_database(name)


def test_two_concurrent_migrations_serialise():
    name = database_name("empty")
    url = create_database(name, template=None)
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(url) as conn:
                barrier.wait()
                results.append(migrate.migrate(conn))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(len(r) for r in results) == [0, len(migrate.available()) + 1]
        with psycopg.connect(url) as conn:
            count = conn.execute("select count(*) from schema_migrations").fetchone()
            assert count == (len(migrate.available()),)
    finally:
        drop_database(name)
