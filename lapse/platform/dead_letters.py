"""The dead-letter archive: every message that ends dead, kept in Postgres.

Both brokers keep their own dead letters only for a while (Redis 7 days,
dramatiq-postgres 30), so ``DeadLetterArchive`` copies every message that
reaches ``after_nack`` — retries exhausted, a permanent error, invalid
arguments, an unknown actor, an age limit — into ``dead_letters`` with its
actor, arguments, the user/subscription/purchase it concerns, the last
exception and traceback, and first/last failure times. Messages that cannot
even be decoded are archived by the brokers' consumers with their raw body.
``lapse dlq`` works on that table.

A layer above may ask to be told, in the archive's transaction, when a
message of one of its actors ends dead (``when_dead``): the tagging request
of a dead ``tag_recordings`` must close (R2), and the platform knows nothing
of tagging requests.
"""

from __future__ import annotations

import inspect
import json
import logging
import traceback as tb
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg
from dramatiq import Middleware
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import SkipMessage
from psycopg import Connection
from psycopg.types.json import Jsonb

from lapse.platform import clock, db
from lapse.platform.errors import InvalidArguments, PermanentError
from lapse.platform.sql import queries

logger = logging.getLogger(__name__)
SQL = queries(__file__, "dead_letters")
CONCERNS = ("user_id", "subscription_id", "purchase_id")

#: ``hook(conn, concerns)``: concerns maps each name of CONCERNS to the id the
#: dead message was about (None when its arguments did not say).
DeadHook = Callable[[Connection[Any], dict[str, Any]], None]
_hooks: dict[str, list[DeadHook]] = {}


def when_dead(actor_name: str, hook: DeadHook) -> None:
    """Run ``hook`` in the archive's transaction whenever a message of ``actor_name`` ends dead."""
    _hooks.setdefault(actor_name, []).append(hook)


def ended_dead(conn: Connection[Any], broker: dramatiq.Broker, actor_name: str, args: Any,
               kwargs: Any) -> None:
    """Run the hooks of a dead message of ``actor_name`` (the archive, and simulations, call this)."""
    hooks = _hooks.get(actor_name, [])
    if hooks:
        concerns = _concerns(broker, actor_name, args, kwargs)
        for hook in hooks:
            hook(conn, concerns)


def _reason(message: Any, exception: BaseException | None) -> str:
    if isinstance(exception, InvalidArguments):
        return "invalid_arguments"
    if isinstance(exception, PermanentError):
        return "permanent_error"
    if isinstance(exception, ActorNotFound):
        return "unknown_actor"
    if isinstance(exception, SkipMessage):
        return "age_limit"
    if "traceback" in message.options:
        return "retries_exhausted"
    return "failed"


def _concerns(broker: dramatiq.Broker, actor_name: str, args: Any, kwargs: Any) -> dict[str, Any]:
    found: dict[str, Any] = dict.fromkeys(CONCERNS)
    try:
        fn = broker.get_actor(actor_name).fn
        bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
    except (ActorNotFound, TypeError):
        return found
    for name in CONCERNS:
        value = bound.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    return found


def _json(value: Any) -> Jsonb:
    return Jsonb(json.loads(json.dumps(value, default=str)))


def archive(conn: Connection[Any], broker: dramatiq.Broker, message: Any,
            exception: BaseException | None, broker_name: str) -> None:
    """Insert (or refresh, when it died before) the archive row of one dead message."""
    options = {k: v for k, v in message.options.items() if k != "traceback"}
    trace = message.options.get("traceback")
    if trace is None and exception is not None:
        trace = "".join(tb.format_exception(exception))
    conn.execute(SQL["archive"], {
        "message_id": str(message.message_id), "broker": broker_name,
        "queue_name": message.queue_name, "actor_name": message.actor_name,
        "args": _json(list(message.args)), "kwargs": _json(message.kwargs),
        "options": _json(options), **_concerns(broker, message.actor_name, message.args, message.kwargs),
        "reason": _reason(message, exception),
        "exception": repr(exception) if exception is not None else _last_line(trace),
        "traceback": trace, "raw_body": None, "now": clock.now(),
    })
    ended_dead(conn, broker, message.actor_name, message.args, message.kwargs)


def archive_undecodable(broker_name: str, queue_name: str, raw: bytes | str,
                        message_id: str | None = None) -> None:
    """Archive a message that could not be decoded, with its raw body.

    Never raises: the consumer must go on with the messages behind this one.
    If the archive itself is unreachable, the raw body goes to the error log.
    """
    body = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    body = body.replace("\x00", "\\x00")  # text columns cannot hold NUL
    try:
        _insert_undecodable(broker_name, queue_name, body, message_id)
    except psycopg.Error as error:
        logger.error("could not archive an undecodable message from queue %s (%s); raw body: %.2000s",
                     queue_name, error, body)


def _insert_undecodable(broker_name: str, queue_name: str, body: str,
                        message_id: str | None) -> None:
    with db.pool().connection() as conn:
        conn.execute(SQL["archive"], {
            "message_id": message_id or f"undecodable-{uuid.uuid4()}", "broker": broker_name,
            "queue_name": queue_name, "actor_name": None, "args": None, "kwargs": None,
            "options": None, "user_id": None, "subscription_id": None, "purchase_id": None,
            "reason": "undecodable", "exception": "message could not be decoded",
            "traceback": None, "raw_body": body, "now": clock.now(),
        })
    logger.error("archived an undecodable message from queue %s", queue_name)


def _last_line(trace: str | None) -> str | None:
    lines = [line for line in (trace or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


class DeadLetterArchive(Middleware):
    """Copies every nacked (dead) message into the ``dead_letters`` table."""

    def __init__(self, broker_name: str) -> None:
        self.broker_name = broker_name

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        exception = getattr(message, "_exception", None)
        with db.pool().connection() as conn, conn.transaction():  # the row and its hooks, at once
            archive(conn, broker, message, exception, self.broker_name)
        logger.error("dead letter: %s(%s) %s archived (%s)", message.actor_name,
                     message.message_id, self.broker_name, _reason(message, exception))
