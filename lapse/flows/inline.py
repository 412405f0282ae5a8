"""Run follow-up messages in this process, one attempt each (``lapse sweep``, the demo, simulations).

Installed as the after-commit sender, it collects what a sweep fans out
(tagging, restores, continuations) and ``drain`` runs each message's actor
function once, here. Work that must be retried later (a ``dramatiq.Retry``
with its delay, or a failure) is handed to the broker as a normal retry, so
the effects of an inline sweep are complete when ``drain`` returns.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq

from lapse.platform import after_commit
from lapse.platform.after_commit import PendingMessage

logger = logging.getLogger(__name__)
RETRY_AFTER_FAILURE_MS = 10_000


class InlineWork:
    def __init__(self, broker: Any, on_retry: Callable[[PendingMessage, int | None], None] | None = None
                 ) -> None:
        self.broker = broker
        self.queue: deque[PendingMessage] = deque()
        self.counts: Counter[str] = Counter()
        self.on_retry = on_retry or self._send_to_broker

    def __call__(self, message: PendingMessage) -> None:
        self.queue.append(message)

    def drain(self) -> Counter[str]:
        """Run every queued message (and what they queue in turn) once; return counts by outcome."""
        while self.queue:
            message = self.queue.popleft()
            actor = self.broker.get_actor(message.actor_name)
            try:
                actor.fn(*message.args, **message.kwargs)
                self.counts["ran"] += 1
            except dramatiq.Retry as retry:
                self.counts["retry_scheduled"] += 1
                self.on_retry(message, retry.delay)
            except Exception as error:  # noqa: BLE001  handed to the broker's retry policy, not dropped
                logger.warning("inline %s%s failed (%s); handed to the broker for retry",
                               message.actor_name, message.args, error)
                self.counts["failed_handed_to_broker"] += 1
                self.on_retry(message, RETRY_AFTER_FAILURE_MS)
        return self.counts

    def _send_to_broker(self, message: PendingMessage, delay: int | None) -> None:
        actor = self.broker.get_actor(message.actor_name)
        actor.send_with_options(args=message.args, kwargs=message.kwargs, delay=delay)


@contextmanager
def inline(broker: Any, **options: Any) -> Iterator[InlineWork]:
    """Route after-commit sends to an ``InlineWork`` for the duration of the block."""
    work = InlineWork(broker, **options)
    previous = after_commit.install_sender(work)
    try:
        yield work
    finally:
        after_commit.install_sender(previous)
