"""`lapse db migrate`: apply the numbered SQL migrations in order, once.

All pending migrations and the dramatiq-postgres queue schema are applied in
one transaction under an advisory lock, so two processes migrating at once
serialise: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dramatiq_postgres
from psycopg import Connection
from psycopg.rows import tuple_row

MIGRATIONS = Path(__file__).resolve().parents[2] / "domain" / "sql" / "migrations"
_LOCK_KEY = "lapse-migrate"


def available() -> list[Path]:
    return sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate(conn: Connection[Any]) -> list[str]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (_LOCK_KEY,))
        conn.execute(
            "create table if not exists schema_migrations ("
            " version text primary key, applied_at timestamptz not null default now())"
        )
        done = _applied(conn)
        for path in available():
            version = path.stem
            if version in done:
                continue
            conn.execute(path.read_text().encode())
            conn.execute("insert into schema_migrations (version) values (%s)", (version,))
            applied_now.append(version)
        # dramatiq-postgres unpacks tuples: a dict_row cursor (the CLI's pool) made it
        # read "to_regclass" as an existing table and skip creating the queue schema.
        with conn.cursor(row_factory=tuple_row) as cursor:
            if dramatiq_postgres.init(cursor):
                applied_now.append("dramatiq-postgres queue schema")
    return applied_now


def pending(conn: Connection[Any]) -> list[str]:
    """Versions not yet applied (all of them on an empty database)."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        row = cursor.execute("select to_regclass('schema_migrations') is not null").fetchone()
    done = _applied(conn) if row and row[0] else set()
    return [p.stem for p in available() if p.stem not in done]


def _applied(conn: Connection[Any]) -> set[str]:
    # A tuple cursor: callers pass connections with and without dict_row.
    with conn.cursor(row_factory=tuple_row) as cursor:
        return {str(version) for (version,) in cursor.execute("select version from schema_migrations")}
