"""Bulk requeue or purge of dead letters by filter, in two steps (SPEC §7 Operator console).

The dry run counts the open dead letters a filter matches and notes the
highest id it counted and a digest of the ids; the confirmation acts only on
rows of that filter up to that id, so a message that dies between the two is
left alone, and it refuses when more rows match than were counted or when
they are not the rows counted (a requeued row died again, another operator
purged one): the operator then runs the dry run again.
Each row goes through ``lapse dlq``'s own requeue or purge, in a transaction
of its own that first locks the row and re-checks it is still open, so two
confirmations of one dry run never send or purge a row twice; every
attempt, refused or not, is written to ``web_audit``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import dramatiq
from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from lapse.operator import dlq
from lapse.platform.sql import queries

SQL = queries(__file__, "web")
ACTIONS = ("requeue", "purge")


class BadFilter(ValueError):
    """A filter or bulk request the console cannot read (answered with 400)."""


@dataclass(frozen=True)
class DeadFilter:
    actor: str | None = None
    queue: str | None = None
    user_id: int | None = None
    error: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DeadFilter:
        def text(name: str) -> str | None:
            value = str(params.get(name) or "").strip()
            return value or None

        user = text("user")
        if user is not None and not (user.isdigit() and int(user) > 0):
            raise BadFilter(f"user must be a positive integer, got {user!r}")
        return cls(text("actor"), text("queue"), int(user) if user else None, text("error"))

    def sql(self) -> dict[str, Any]:
        return asdict(self)

    def query(self) -> str:
        """The filter as URL parameters (bookmarkable)."""
        pairs = {"actor": self.actor, "queue": self.queue, "user": self.user_id, "error": self.error}
        return urlencode({k: v for k, v in pairs.items() if v is not None})

    def empty(self) -> bool:
        return not any(asdict(self).values())


@dataclass(frozen=True)
class DryRun:
    action: str
    filter: DeadFilter
    count: int
    max_id: int | None
    digest: str


@dataclass
class BulkResult:
    action: str
    outcome: str  # done | refused | failed
    acted_ids: list[int] = field(default_factory=list)
    detail: str | None = None
    audit_id: int | None = None


def dry_run(conn: Connection[Any], action: str, flt: DeadFilter) -> DryRun:
    """How many open dead letters ``flt`` matches now, and the highest id among them."""
    if action not in ACTIONS:
        raise BadFilter(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    row = conn.execute(SQL["dead_count"], flt.sql()).fetchone()
    assert row is not None
    return DryRun(action, flt, int(row["count"]), row["max_id"], row["digest"])


def digest(ids: list[int]) -> str:
    """The dry run's digest of the ids it counted (the same as ``dead_count``'s, in SQL)."""
    return hashlib.sha256(",".join(str(i) for i in sorted(ids)).encode()).hexdigest()


def record(conn: Connection[Any], result: BulkResult, flt: DeadFilter, *, counted: int | None,
           counted_max_id: int | None, client: str | None, now: datetime) -> BulkResult:
    """Write one console action (done, refused or failed) to the audit table."""
    row = conn.execute(SQL["audit_insert"], {
        "action": result.action, "filter": Jsonb(flt.sql()), "counted": counted,
        "counted_max_id": counted_max_id, "acted_ids": result.acted_ids,
        "outcome": result.outcome, "detail": result.detail, "client": client, "now": now,
    }).fetchone()
    assert row is not None
    result.audit_id = int(row["id"])
    return result


def confirm(pool: ConnectionPool, broker: dramatiq.Broker, action: str, flt: DeadFilter, *,
            counted: int, counted_max_id: int, counted_digest: str, client: str | None,
            now: datetime) -> BulkResult:
    """Requeue or purge the rows the confirmed dry run counted (``flt`` and id <= counted_max_id)."""
    if action not in ACTIONS:
        raise BadFilter(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    with pool.connection() as conn:
        rows: list[Any] = conn.execute(SQL["dead_ids_counted"],
                                       flt.sql() | {"max_id": counted_max_id}).fetchall()
        ids = [int(r["id"]) for r in rows]
        result = BulkResult(action, "done")
        if len(ids) > counted:
            result.outcome = "refused"
            result.detail = (f"{len(ids)} rows match now but the dry run counted {counted}: "
                             "run the dry run again")
        elif digest(ids) != counted_digest:
            result.outcome = "refused"
            result.detail = ("the rows that match are not the ones the dry run counted (one was "
                             "purged or died again since): run the dry run again")
        else:
            try:
                _act(conn, broker, action, ids, result, now)
            except Exception as error:
                result.outcome = "failed"
                result.detail = f"stopped after {len(result.acted_ids)} of {len(ids)}: {error!r}"
                with conn.transaction():
                    record(conn, result, flt, counted=counted, counted_max_id=counted_max_id,
                           client=client, now=now)
                raise
        with conn.transaction():
            record(conn, result, flt, counted=counted, counted_max_id=counted_max_id,
                   client=client, now=now)
    return result


def _act(conn: Connection[Any], broker: dramatiq.Broker, action: str, ids: list[int],
         result: BulkResult, now: datetime) -> None:
    gone = 0
    for dead_id in ids:
        try:
            with conn.transaction():
                if conn.execute(SQL["lock_open_dead_letter"], {"id": dead_id}).fetchone() is None:
                    gone += 1  # requeued or purged by another confirmation meanwhile
                    continue
                if action == "requeue":
                    dlq.requeue(conn, broker, dead_id, now=now)
                else:
                    dlq.purge(conn, broker, dead_id)
        except dlq.DeadLetterNotFound:
            gone += 1  # undecodable, for a requeue: nothing to send
            continue
        result.acted_ids.append(dead_id)
    result.detail = f"{action}d {len(result.acted_ids)} of {len(ids)} counted" + (
        f"; {gone} gone or not requeueable" if gone else "")
