"""Sending one notice (SPEC §6 N1): rate token, short claim, Telegram with no connection held, outcome.

``deliver`` never sleeps a worker thread: a shared pause or an empty rate
bucket raises ``WaitForRate`` (the actor turns it into ``dramatiq.Retry``
with that delay) before anything is claimed. The claim is a short
transaction (fresh re-check, template, ``sending``); the outcome another.
The sweep bodies are here too: ``sweep_outbox`` (stale claims by delivery
class, overdue unclaimed rows), ``sweep_trial_notifications`` (A4) and
``sweep_reminders`` (A6), keyset-paginated.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from prometheus_client import Counter
from psycopg_pool import ConnectionPool

from domain import notifications
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.platform.config import settings
from lapse.platform.faults import fault_point
from lapse.platform.sweeps import SweepContext
from lapse.ports import telegram

logger = logging.getLogger(__name__)
OUTCOMES = Counter("lapse_notifications", "Notices by kind and outcome", ["kind", "outcome"])
PAGE = 500
OVERDUE = timedelta(minutes=10)  # an unclaimed row due this long ago lost its message
EARLY = 1.0  # seconds a message may arrive before its row's next attempt (clocks differ)
TOKEN_REFUSED_PAUSE = 300.0


class WaitForRate(Exception):  # noqa: N818  (not an error: the message waits its turn)
    """No rate token now (a 429 pause, or the overall or per-chat limit): try again in ``delay``."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"rate limit: wait {delay:.3f}s")
        self.delay = delay

    @property
    def delay_ms(self) -> int:
        return max(int(self.delay * 1000) + 1, 1)


def deliver(pool: ConnectionPool, notification_id: int) -> str:
    """Send one notice at most once per claim; return its outcome (sent, skipped, failed, …)."""
    if not settings().telegram_token:
        logger.warning("send_notification %s: LAPSE_TELEGRAM_TOKEN is not set; the notice "
                       "stays pending (sweep_outbox sends it again later)", notification_id)
        return "telegram_not_configured"
    with pool.connection() as conn:
        seen = notifications.peek(conn, notification_id)
    if seen.status != "pending":
        return f"already {seen.status}"
    if seen.next_attempt_at is not None:
        early = (seen.next_attempt_at - clock.now()).total_seconds()
        if early > EARLY:
            raise WaitForRate(early)
    if seen.telegram_id is not None and not seen.unreachable:  # else the claim skips it
        wait = telegram.rate_limiter().try_acquire(seen.telegram_id)
        if wait > 0:  # its place in the line: due then, not a lost message before
            with pool.connection() as conn, transaction(conn):
                notifications.wait_in_line(conn, notification_id,
                                           until=clock.now() + timedelta(seconds=wait))
            raise WaitForRate(wait)
    with pool.connection() as conn, transaction(conn):
        claimed = notifications.claim(conn, notification_id, now=clock.now())
    if isinstance(claimed, str):
        return _count(seen.kind, claimed)
    fault_point("notification.claimed")  # claimed, nothing sent yet
    return _count(claimed.kind, _send(pool, claimed))


def _send(pool: ConnectionPool, claimed: notifications.Claimed) -> str:
    paused = telegram.rate_limiter().pause.remaining()
    if paused > 0:  # a 429 reached another sender after this one took its token: nothing sent
        with pool.connection() as conn, transaction(conn):
            return notifications.release(conn, claimed, paused, now=clock.now())
    try:
        result = telegram.port().send_message(claimed.chat_id, claimed.text,
                                              attempt=claimed.attempt - 1)
    except telegram.TelegramTokenRefused:
        with pool.connection() as conn, transaction(conn):  # nothing was delivered
            notifications.retry_later(conn, claimed, TOKEN_REFUSED_PAUSE, "bot token refused",
                                      now=clock.now(), resend=False)
        raise
    fault_point("notification.sent")  # Telegram answered, the outcome not recorded yet
    now = clock.now()
    with pool.connection() as conn, transaction(conn):
        if isinstance(result, telegram.Sent):
            notifications.finish(conn, claimed, "sent", now=now, message_id=result.message_id)
            return "sent"
        if isinstance(result, telegram.Undeliverable):
            notifications.finish(conn, claimed, "failed", now=now, error=result.description,
                                 unreachable_reason=result.reason if result.user_unreachable
                                 else None)
            return "failed"
        if isinstance(result, telegram.TryLater):
            return notifications.retry_later(conn, claimed, result.delay, result.problem,
                                             now=now)
        return notifications.delivery_unknown(conn, claimed, result.problem, now=now)


def _count(kind: str, outcome: str) -> str:
    OUTCOMES.labels(kind, outcome.split(" ")[0]).inc()
    return outcome


def sweep_outbox(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """N1, every minute: settle claims older than twice the HTTP timeout with no outcome (a
    receipt is sent again, any other notice becomes ``unknown``), then send overdue rows again."""
    counts = {"stale_claims": 0, "resent": 0, "unknown": 0, "failed": 0, "overdue": 0}
    claimed_before = context.now - 2 * timedelta(seconds=settings().telegram_timeout)
    phase = (context.cursor or {}).get("phase", "stale")
    after = int((context.cursor or {}).get("after", 0))
    if phase == "stale":
        after = _walk(pool, context, counts, claimed_before, after)
        if context.resume is not None:
            return counts
        after = 0
    _walk_overdue(pool, context, counts, context.now - OVERDUE, after)
    return counts


def _walk(pool: ConnectionPool, context: SweepContext, counts: dict[str, int],
          claimed_before: datetime, after: int) -> int:
    while True:
        with pool.connection() as conn:
            ids = notifications.stale_claims(conn, claimed_before=claimed_before,
                                             after=after, limit=PAGE)
        if not ids:
            return after
        counts["stale_claims"] += len(ids)
        for notification_id in ids if not context.dry_run else ():
            with pool.connection() as conn, transaction(conn):
                done = notifications.settle_stale_claim(
                    conn, notification_id, now=context.now,
                    claimed_before=claimed_before)
            if done:
                counts[done] += 1
        after = ids[-1]
        if context.out_of_time():
            context.resume = {"phase": "stale", "after": after}
            return after


def _walk_overdue(pool: ConnectionPool, context: SweepContext, counts: dict[str, int],
                  due_before: datetime, after: int) -> None:
    while True:
        with pool.connection() as conn:
            ids = notifications.overdue(conn, due_before=due_before,
                                        after=after, limit=PAGE)
        if not ids:
            return
        counts["overdue"] += len(ids)
        for notification_id in ids if not context.dry_run else ():
            with pool.connection() as conn, transaction(conn):
                counts["resent"] += notifications.resend_overdue(
                    conn, notification_id, now=context.now,
                    due_before=due_before)
        after = ids[-1]
        if context.out_of_time():
            context.resume = {"phase": "overdue", "after": after}
            return


def sweep_trial_notifications(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """A4, every 5 min: a trial-ending notice per (trial, offset), LAPSE_TRIAL_NOTICE_HOURS."""
    return _write_pages(pool, context, notifications.write_trial_notices,
                        list(settings().trial_notice_offsets))


def sweep_reminders(pool: ConnectionPool, context: SweepContext) -> dict[str, int]:
    """A6, daily: a reminder per (subscription, period, offset) for paid subscriptions that will
    not renew by themselves, LAPSE_REMINDER_DAYS."""
    return _write_pages(pool, context, notifications.write_reminders,
                        list(settings().reminder_offsets))


def _write_pages(pool: ConnectionPool, context: SweepContext, write: notifications.PageWriter,
                 offsets: list[timedelta]) -> dict[str, int]:
    counts = {"read": 0, "written": 0}
    after = int((context.cursor or {}).get("after", 0))
    while True:
        with pool.connection() as conn, transaction(conn, dry_run=context.dry_run):
            read, written, after = write(conn, now=context.now, offsets=offsets, after=after,
                                         limit=PAGE)
        counts["read"] += read
        counts["written"] += written
        if read < PAGE:
            return counts
        if context.out_of_time():
            context.resume = {"after": after}
            return counts
