"""Operator actions on the dead-letter archive (``lapse dlq``), for both brokers.

Requeue sends the archived message again under its original message id (its
idempotency key), with retries reset, and clears the broker's own dead copy;
purge deletes the archive row and the broker's copy.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.message import Message
from psycopg import Connection

from lapse.platform.dead_letters import SQL

_RESET_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta", "redis_message_id")


class DeadLetterNotFound(Exception):
    """No archived dead letter with that id."""


def list_dead(conn: Connection[Any], *, queue: str | None = None, actor: str | None = None,
              user_id: int | None = None, include_requeued: bool = False,
              limit: int = 100) -> list[dict[str, Any]]:
    return conn.execute(SQL["list"], {"queue": queue, "actor": actor, "user_id": user_id,
                                      "include_requeued": include_requeued,
                                      "limit": limit}).fetchall()


def show(conn: Connection[Any], dead_id: int) -> dict[str, Any]:
    row = conn.execute(SQL["get"], {"id": dead_id}).fetchone()
    if row is None:
        raise DeadLetterNotFound(f"no dead letter with id {dead_id}")
    return row


def _clear_broker_copy(conn: Connection[Any], broker: dramatiq.Broker, row: dict[str, Any],
                       *, keep_postgres_row: bool = False) -> None:
    options = row["options"] or {}
    if isinstance(broker, RedisBroker) and row["broker"] == "redis":
        redis_id = options.get("redis_message_id")
        if redis_id and row["queue_name"]:
            xq = f"{broker.namespace}:{q_name(row['queue_name'])}.XQ"
            broker.client.zrem(xq, redis_id)
            broker.client.hdel(f"{xq}.msgs", redis_id)
    elif row["broker"] == "postgres" and not keep_postgres_row:
        conn.execute(SQL["delete_postgres_copy"], {"message_id": row["message_id"]})


def requeue(conn: Connection[Any], broker: dramatiq.Broker, dead_id: int, *, now: Any) -> Message:
    """Send the dead message again with retries reset; mark the archive row requeued."""
    row = show(conn, dead_id)
    if row["actor_name"] is None:
        raise DeadLetterNotFound(
            f"dead letter {dead_id} could not be decoded; there is nothing to requeue (purge it)")
    options = {k: v for k, v in (row["options"] or {}).items() if k not in _RESET_OPTIONS}
    message: Message[Any] = Message(queue_name=q_name(row["queue_name"]), actor_name=row["actor_name"],
                      args=tuple(row["args"] or ()), kwargs=row["kwargs"] or {},
                      options=options, message_id=row["message_id"])
    # dramatiq-postgres upserts on message id: the enqueue itself turns its
    # rejected row back into a queued one.
    _clear_broker_copy(conn, broker, row, keep_postgres_row=True)
    sent = broker.enqueue(message)
    conn.execute(SQL["mark_requeued"], {"id": dead_id, "now": now})
    return sent


def purge(conn: Connection[Any], broker: dramatiq.Broker, dead_id: int) -> None:
    """Forget a dead message: the archive row and the broker's own copy."""
    row = show(conn, dead_id)
    _clear_broker_copy(conn, broker, row)
    conn.execute(SQL["delete"], {"id": dead_id})
