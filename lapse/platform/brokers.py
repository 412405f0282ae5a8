"""The broker, configured from LAPSE_BROKER when this module is imported.

``dramatiq actors`` and ``periodiq actors schedules`` import the ``actors``
package, which imports this module first, so both find the broker Lapse
configured. Nothing falls back to a default Redis: LAPSE_BROKER=redis needs
REDIS_URL.

Both real brokers get consumers that archive a message they cannot decode
(with its raw body) and carry on with the messages behind it.
"""

from __future__ import annotations

import logging
import select
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, default_middleware
from dramatiq_postgres import PostgresBroker
from dramatiq_postgres.broker import QUERIES, PostgresConsumer
from dramatiq_postgres.utils import make_pool, raise_connection_error, retry_pg, tidy4json
from periodiq import PeriodiqMiddleware
from psycopg import Connection
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool
from redis.exceptions import NoScriptError

from lapse.platform import db
from lapse.platform.config import Settings, settings
from lapse.platform.dead_letters import DeadLetterArchive, archive_undecodable
from lapse.platform.worker_metrics import worker_metrics
from lapse.platform.workers import WorkerHeartbeat

logger = logging.getLogger(__name__)

TICK_MAX_AGE_SECONDS = 30


class ArchivingRedisConsumer(_RedisConsumer):
    def __next__(self) -> Any:
        try:
            return super().__next__()
        except DecodeError as error:
            archive_undecodable("redis", self.queue_name, error.data)
            self._drop_undecodable(error.data)
            return None

    def _drop_undecodable(self, data: bytes) -> None:
        broker = self.broker
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        messages = f"{broker.namespace}:{self.queue_name}.msgs"
        for redis_id in broker.client.smembers(acks):
            if broker.client.hget(messages, redis_id) == data:
                broker.client.srem(acks, redis_id)
                broker.client.hdel(messages, redis_id)


SWEEPS_QUEUE = "sweeps"


def _prefetch(queue_name: str, prefetch: int) -> int:
    """A sweep runs for seconds (a fast-expiry shard, a reconcile): a worker prefetches at most as
    many as it has threads (Dramatiq's default prefetch is twice that), so shards sent together
    spread over the processes instead of waiting behind one process's busy threads."""
    return max(1, prefetch // 2) if queue_name == SWEEPS_QUEUE else prefetch


class LapseRedisBroker(RedisBroker):
    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return ArchivingRedisConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return super().consume(queue_name, _prefetch(queue_name, prefetch), timeout)

    def enqueue_all(self, items: list[tuple[Message[Any], int | None]]) -> list[Message[Any]]:
        """Enqueue several messages in one round trip (a pipeline of dramatiq's enqueue script);
        each exactly as ``enqueue`` would (its own Redis id, its delay queue, the middleware)."""
        prepared = []
        for message, delay in items:
            queue_name = message.queue_name
            message = message.copy(options={"redis_message_id": str(uuid4())})
            if delay is not None:
                queue_name = dq_name(queue_name)
                message = message.copy(queue_name=queue_name,
                                       options={"eta": current_millis() + delay})
            self.emit_before("enqueue", message, delay)
            prepared.append((queue_name, message, delay))
        dispatch = self.scripts["dispatch"]
        calls = [["enqueue", current_millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                  self.dead_message_ttl, self._should_do_maintenance("enqueue"),
                  self._max_unpack_size(), message.options["redis_message_id"], message.encode()]
                 for queue_name, message, _ in prepared]
        pipe = self.client.pipeline(transaction=False)
        for args in calls:
            pipe.evalsha(dispatch.sha, 1, self.namespace, *args)
        try:
            pipe.execute()
        except NoScriptError:  # the script is not loaded (a restarted Redis): none ran
            for args in calls:
                dispatch(args=args, keys=[self.namespace])
        for _, message, delay in prepared:
            self.emit_after("enqueue", message, delay)
        return [message for _, message, _ in prepared]


_CLAIM_WITH_ID = QUERIES.CLAIM.replace(
    "RETURNING q.message::text;", "RETURNING q.message_id::text, q.message::text;"
)
assert _CLAIM_WITH_ID != QUERIES.CLAIM, "dramatiq-postgres CLAIM query changed; re-check the pin"


class ArchivingPostgresConsumer(PostgresConsumer):
    @raise_connection_error
    def claim(self, limit: int) -> None:
        """The claim (one ``UPDATE … FOR UPDATE SKIP LOCKED … RETURNING``) is its own transaction
        on the broker's autocommit connection; a message that cannot be decoded is archived."""
        rows = self.get_consume_conn().execute(
            _CLAIM_WITH_ID, (self.queue_name, limit, self.broker.worker_id)).fetchall()
        for message_id, payload in rows:
            try:
                self.buffer.append(Message.decode(payload.encode("utf-8")))
            except DecodeError:
                archive_undecodable("postgres", self.queue_name, payload, message_id)
                with self.pool.connection() as conn:
                    conn.execute(
                        "DELETE FROM dramatiq.queue WHERE message_id = %s::uuid", (message_id,)
                    )

    @raise_connection_error
    def ack(self, message: Any) -> None:
        """One ``DELETE`` on an autocommit connection (dramatiq-postgres's own ack is a transaction
        that also NOTIFYs the whole message on a channel nobody listens to; a NOTIFY serialises
        every notifying commit in the database)."""
        with self.pool.connection() as conn:
            conn.execute(_ACK_QUIET, (message.message_id, message.queue_name))
        self.in_processing.discard(message.message_id)
        self.wakeup.set()


# Only a message still ``consumed`` is deleted: dramatiq acks a message the Retries
# middleware requeued too (as dramatiq-postgres's ACK).
_ACK_QUIET = QUERIES.ACK.split("WITH acked AS (", 1)[1].split("RETURNING message", 1)[0]
assert _ACK_QUIET.strip().startswith("DELETE FROM") and "'consumed'" in _ACK_QUIET, \
    "dramatiq-postgres ACK query changed; re-check the pin"


# dramatiq-postgres's enqueue, NOTIFYing only when nothing was claimable on the queue before it:
# a consumer woken by the first message of a backlog claims again after each ack, and any other
# looks again within the poll interval; a NOTIFY per message woke every process's listener and
# sent an idle consumer to claim for each one.
_ENQUEUE_WAKING = QUERIES.ENQUEUE.replace("FROM enqueued;", """FROM enqueued
WHERE NOT EXISTS (
    SELECT FROM "dramatiq"."queue" waiting
    WHERE waiting.queue_name = enqueued.queue_name AND waiting."state" = 'queued'
      AND waiting.available_at <= NOW());""")
assert _ENQUEUE_WAKING != QUERIES.ENQUEUE and '"dramatiq"."queue"' in QUERIES.ENQUEUE, \
    "dramatiq-postgres ENQUEUE query changed; re-check the pin"


def _check_if_anything_pending(conn: Connection[Any]) -> None:
    """The pool's check at checkout, only for a connection with something to read: an idle one
    has nothing, while one the server ended holds its error or end of file. The pool's own check
    (an empty query) was a round trip before every ack and enqueue."""
    if not conn.closed:
        pending = select.poll()
        pending.register(conn.pgconn.socket, select.POLLIN)
        if not pending.poll(0):
            return
    ConnectionPool.check_connection(conn)


class LapsePostgresBroker(PostgresBroker):
    """dramatiq-postgres on a pool of autocommit connections: an enqueue, a claim or an ack is one
    statement (dramatiq-postgres opens a transaction around each). The pool is dramatiq-postgres's
    own (its TCP keepalives and 10 s user timeout), only in autocommit, and checks a connection at
    checkout only when the socket holds something (``_check_if_anything_pending``)."""

    def __init__(self, *, url: str, results: bool = False, **options: Any) -> None:
        if results:  # its result waits LISTEN and hand the connection back out of autocommit
            raise ValueError("Lapse keeps no message results: results=True is not supported")
        pool = make_pool(conninfo_to_dict(url) | {"autocommit": True})
        assert pool._check is ConnectionPool.check_connection, "dramatiq-postgres make_pool changed"
        pool._check = _check_if_anything_pending
        super().__init__(pool=pool, results=False, **options)
        self._owns_pool = True  # closed with the broker

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Any:
        return ArchivingPostgresConsumer(
            broker=self, queue_name=queue_name, prefetch=_prefetch(queue_name, prefetch),
            timeout=timeout
        )

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        """dramatiq-postgres's enqueue, its upsert and NOTIFY sent as one autocommit statement."""
        return self.enqueue_all([(message, delay)])[0]

    @retry_pg
    def enqueue_all(self, items: list[tuple[Message[Any], int | None]]) -> list[Message[Any]]:
        """dramatiq-postgres's enqueue of each message; several are one transaction, sent in one
        round trip (psycopg pipelines ``executemany``): one commit instead of one each."""
        prepared = []
        for message, delay in items:
            self.emit_before("enqueue", message, delay)
            if delay:
                message = message.copy(queue_name=dq_name(message.queue_name))
                message.options["eta"] = current_millis() + delay
            prepared.append((message, delay))
        query = _ENQUEUE_WAKING if self.notify else QUERIES.ENQUEUE_QUIET
        rows = [(message.queue_name, message.message_id, Json(tidy4json(message)), delay or 0)
                for message, delay in prepared]
        with self.pool.connection() as conn:
            if len(rows) == 1:
                conn.execute(query, rows[0])
            else:
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(query, rows)
        for message, delay in prepared:
            self.emit_after("enqueue", message, delay)
        return [message for message, _ in prepared]


def _middleware(config: Settings) -> list[dramatiq.Middleware]:
    middleware = [m() for m in default_middleware] + [
        CurrentMessage(),
        PeriodiqMiddleware(skip_delay=TICK_MAX_AGE_SECONDS),
        DeadLetterArchive(config.broker),
    ]
    if config.broker != "stub":  # unit tests add it where they test it
        middleware.append(WorkerHeartbeat(config.broker, config.heartbeat_seconds))
    return middleware + worker_metrics()


def build_broker(config: Settings) -> dramatiq.Broker:
    """A new broker of the configured kind, with Lapse's middleware."""
    middleware = _middleware(config)
    if config.broker == "redis":
        return LapseRedisBroker(url=config.redis_url, namespace=config.redis_namespace,
                                middleware=middleware)
    if config.broker == "postgres":
        # url=, never pool=db.pool(): dramatiq-postgres (and our claim) unpack tuple rows,
        # and Lapse's pool hands out dict_row connections.
        return LapsePostgresBroker(
            url=db.database_url(config), results=False, middleware=middleware
        )
    return StubBroker(middleware=middleware)


broker = build_broker(settings())
dramatiq.set_broker(broker)
