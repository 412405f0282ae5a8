"""Send follow-up messages only after the outermost transaction commits.

psycopg has no on-commit hook, so Lapse code opens its transactions with
``transaction(conn)`` and queues messages with ``send_after_commit(conn, ...)``.
Messages queued inside a nested unit (a savepoint) that rolls back are
dropped with it; on rollback of the outermost transaction, or when COMMIT
itself fails (a deferred constraint, a lost connection), nothing is sent.
This works the same for both brokers, because the message is only handed to
the broker after COMMIT returned.

The rule that makes this safe: a crash between COMMIT and the send loses the
message, so every message sent through this helper must also be recoverable
from database state by a sweep — pending activations (``sweep_activations``),
unapplied tagging batches and lapses past their watermark (``sweep_lapses``,
``sweep_retention``), unsent notifications (``sweep_trial_notifications``,
``sweep_reminders``). Do not send through here a message whose loss no sweep
would repair.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection
from psycopg.pq import TransactionStatus

from lapse.platform.faults import fault_point

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingMessage:
    actor_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    delay_ms: int | None = None


class NoTransaction(Exception):
    """send_after_commit was called outside a ``transaction(conn)`` block."""


class SendAfterCommitFailed(Exception):
    """The transaction committed but handing a follow-up message to the broker failed.

    Retryable: the actor that committed is retried (its work is idempotent),
    and the sweeps named in the module docstring repair the state otherwise.
    """


Sender = Callable[[PendingMessage], None]

_stacks: weakref.WeakKeyDictionary[Connection[Any], list[list[PendingMessage]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _default_sender(message: PendingMessage) -> None:
    from lapse.platform.brokers import broker

    actor = broker.get_actor(message.actor_name)
    actor.send_with_options(args=message.args, kwargs=message.kwargs, delay=message.delay_ms)


_sender: Sender = _default_sender


def install_sender(sender: Sender | None) -> Sender:
    """Route sends elsewhere (tests record them); None restores the broker. Returns the previous sender."""
    global _sender
    previous, _sender = _sender, sender or _default_sender
    return previous


@contextmanager
def transaction(conn: Connection[Any], *, dry_run: bool = False) -> Iterator[Connection[Any]]:
    """``conn.transaction()`` that sends the messages queued inside it after the outermost commit.

    ``dry_run`` rolls the transaction back at the end and drops what it queued.
    """
    with _lock:
        stack = _stacks.setdefault(conn, [])
        if not stack and conn.info.transaction_status != TransactionStatus.IDLE:
            raise NoTransaction(
                "transaction(conn) must be the outermost transaction: the connection is "
                "already inside one, so its end would not be the commit"
            )
        stack.append([])
    outermost = len(stack) == 1
    try:
        with conn.transaction(force_rollback=dry_run):
            yield conn
    except BaseException:
        with _lock:
            stack.pop()
        raise
    if dry_run:
        with _lock:
            stack.pop()
        return
    if outermost:
        fault_point("after_commit.committed")  # committed, follow-up messages not sent yet
    with _lock:
        queued = stack.pop()
        if stack:
            stack[-1].extend(queued)
            return
    if outermost and queued:
        _send_all(queued)


def send_after_commit(
    conn: Connection[Any],
    actor_name: str,
    *args: Any,
    delay_ms: int | None = None,
    **kwargs: Any,
) -> None:
    """Queue ``actor_name(*args, **kwargs)`` to be sent once ``conn``'s transaction commits."""
    with _lock:
        stack = _stacks.get(conn)
        if not stack:
            raise NoTransaction(f"send_after_commit({actor_name}) outside transaction(conn)")
        stack[-1].append(PendingMessage(actor_name, args, kwargs, delay_ms))


def _send_together(messages: list[PendingMessage]) -> None:
    """The broker's messages of one commit in one round trip (a Redis pipeline, one Postgres
    transaction), where the broker can; one by one otherwise (the stub broker)."""
    from lapse.platform.brokers import broker

    items = [(broker.get_actor(m.actor_name).message_with_options(args=m.args, kwargs=m.kwargs),
              m.delay_ms) for m in messages]
    enqueue_all = getattr(broker, "enqueue_all", None)
    if enqueue_all is not None:
        enqueue_all(items)
        return
    for message, delay in items:
        broker.enqueue(message, delay=delay)


def _send_all(messages: list[PendingMessage]) -> None:
    failed: list[tuple[PendingMessage, BaseException]] = []
    if len(messages) > 1 and _sender is _default_sender:
        try:
            _send_together(messages)
        except Exception as error:  # noqa: BLE001  one round trip: none of them is known sent
            logger.error("after-commit send of %s failed: %s",
                         ", ".join(m.actor_name for m in messages), error)
            failed = [(message, error) for message in messages]
    else:
        for message in messages:
            try:
                _sender(message)
            except Exception as error:  # noqa: BLE001  any broker failure: keep sending the others, raise below
                logger.error("after-commit send of %s failed: %s", message.actor_name, error)
                failed.append((message, error))
    if failed:
        names = ", ".join(m.actor_name for m, _ in failed)
        raise SendAfterCommitFailed(f"committed, but could not send: {names}") from failed[0][1]
