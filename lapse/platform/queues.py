"""Depth and oldest-message age of every queue, on either broker (SPEC §7 Observability).

For each declared queue three kinds are reported: ``ready`` (the queue
itself), ``delayed`` (its ``.DQ`` queue: retries and messages with a delay)
and ``dead`` (the broker's own dead letters, which expire; the archive in
``dead_letters`` keeps them). Depth counts the messages the broker still
holds for that queue, waiting or being worked on (unacknowledged); the age is
that of the oldest one (enqueued, or for dead ones, rejected).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.common import dq_name, xq_name

from lapse.platform.sql import queries

SQL = queries(__file__, "queues")
KINDS = ("ready", "delayed", "dead")


@dataclass(frozen=True)
class QueueStat:
    queue: str
    kind: str
    depth: int
    oldest_at: datetime | None

    def oldest_age_seconds(self, now: datetime) -> float:
        return max((now - self.oldest_at).total_seconds(), 0.0) if self.oldest_at else 0.0


def canonical_queues(broker: dramatiq.Broker) -> list[str]:
    names = {q.removesuffix(".DQ").removesuffix(".XQ") for q in broker.get_declared_queues()}
    return sorted(names)


def queue_stats(broker: dramatiq.Broker, *, conn: Any = None) -> list[QueueStat]:
    """Ready, delayed and dead depth and oldest message of every declared queue.

    ``conn``: a connection to the Lapse database (the Postgres broker's queue
    table lives there); unused for Redis.
    """
    queues = canonical_queues(broker)
    kind = type(broker).__name__
    if "Redis" in kind:
        return _redis_stats(broker, queues)
    if "Postgres" in kind:
        return _postgres_stats(conn, queues)
    return _stub_stats(broker, queues)


def _millis(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value) / 1000, UTC)


def _redis_oldest(client: Any, namespace: str, name: str) -> datetime | None:
    first = client.lindex(f"{namespace}:{name}", 0)
    body = client.hget(f"{namespace}:{name}.msgs", first) if first is not None else None
    if body is None:
        return None
    try:
        return _millis(json.loads(body).get("message_timestamp"))
    except (ValueError, AttributeError):
        return None  # an undecodable body: the consumer archives it


def _redis_stats(broker: Any, queues: list[str]) -> list[QueueStat]:
    client, ns, stats = broker.client, broker.namespace, []
    for queue in queues:
        for kind, name in (("ready", queue), ("delayed", dq_name(queue))):
            depth = int(client.hlen(f"{ns}:{name}.msgs"))
            stats.append(QueueStat(queue, kind, depth, _redis_oldest(client, ns, name) if depth else None))
        dead = f"{ns}:{xq_name(queue)}"
        oldest = client.zrange(dead, 0, 0, withscores=True)
        stats.append(QueueStat(queue, "dead", int(client.zcard(dead)),
                               _millis(oldest[0][1]) if oldest else None))
    return stats


def _postgres_stats(conn: Any, queues: list[str]) -> list[QueueStat]:
    found = {(r["queue"], r["kind"]): r for r in conn.execute(SQL["postgres_queue_stats"])}
    stats = []
    for queue in queues:
        for kind in KINDS:
            row = found.get((queue, kind))
            stats.append(QueueStat(queue, kind, int(row["depth"]) if row else 0,
                                   _millis(row["oldest_ms"]) if row else None))
    return stats


def _stub_stats(broker: Any, queues: list[str]) -> list[QueueStat]:
    stats = []
    for queue in queues:
        for kind, name in (("ready", queue), ("delayed", dq_name(queue))):
            messages = list(broker.queues[name].queue) if name in broker.queues else []
            oldest = min((m.message_timestamp for m in _decoded(messages)), default=None)
            stats.append(QueueStat(queue, kind, len(messages), _millis(oldest)))
        dead = [m for m in broker.dead_letters if m.queue_name in (queue, dq_name(queue))]
        stats.append(QueueStat(queue, "dead", len(dead), None))
    return stats


def _decoded(items: list[Any]) -> list[Any]:
    return [dramatiq.Message.decode(i) if isinstance(i, bytes) else i for i in items]
