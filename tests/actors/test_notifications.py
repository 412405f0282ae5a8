"""send_notification and the outbox sweeps against the fake Bot API on loopback (N1, N2, A4, A6).

Each test drives the real flow (``lapse.flows.notifications.deliver``, the
actor's body) on a fresh database; follow-up messages are recorded by the
``sent`` fixture and delivered by hand where a test needs them, so nothing
is left on a shared queue.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dramatiq
import pytest

import actors
from domain import notifications, purchases
from domain.errors import UnknownNotification
from domain.purchases import Payment
from lapse.flows import notifications as flows
from lapse.flows import sweeps
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.ports.fakes import telegram as fake
from tests.support import factories as make
from tests.support.factories import given
from tests.support.outbox import notice_rows

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def now() -> datetime:
    return clock.now()


def user_with_chat(pool, chat=5001, language="en"):
    user = given(pool, lambda c: make.user(c, telegram_id=chat))
    given(pool, lambda c: c.execute("update users set language = %s where id = %s",
                                    (language, user)))
    return user


def receipt(pool, user, key="renewed:x", kind="renewed", payload=None):
    with pool.connection() as conn, transaction(conn):
        return notifications.queue(conn, user, kind, key, payload or {
            "subscription_id": 1, "price": 500, "currency": "USD"}, now=now())


def deliver(pool, notification_id):
    return flows.deliver(pool, notification_id)


def run_sweep(pool, name, at=None):
    return sweeps.run_sweep(pool, name, now=at or now(), budget_seconds=60)


def test_a_receipt_is_sent_once_in_the_users_language(pool, sent, bot):
    user = user_with_chat(pool, language="ru")
    notice = receipt(pool, user)
    assert deliver(pool, notice) == "sent"
    assert deliver(pool, notice) == "already sent"  # a duplicate message sends nothing
    [got] = bot.delivered()
    assert (got.chat_id, got.text) == (5001, "Подписка продлена: с баланса списано 5.00 USD. "
                                              "Спасибо!")
    [row] = notice_rows(pool, user)
    assert (row["status"], row["attempts"]) == ("sent", 1)


def test_the_actor_turns_a_wait_for_a_rate_token_into_a_retry_with_that_delay(pool, sent, bot):
    from lapse.ports import telegram

    user = user_with_chat(pool)
    notice = receipt(pool, user)
    telegram.rate_limiter().pause.set(30)  # a 429 elsewhere: every sender waits
    with pytest.raises(dramatiq.Retry) as retry:
        actors.notifications.send_notification.fn(notice)
    assert 29_000 < retry.value.delay <= 30_001
    assert notice_rows(pool, user)[0]["status"] == "pending" and bot.received == []
    assert actors.notifications.retry_when(10_000, retry.value) is True  # waits never exhaust
    assert actors.notifications.retry_when(3, RuntimeError()) is True
    assert actors.notifications.retry_when(actors.notifications.ATTEMPTS, RuntimeError()) is False


def test_a_pause_that_began_after_the_token_was_taken_holds_the_claimed_notice_back(
        pool, sent, bot, monkeypatch):
    from lapse.ports import telegram

    user = user_with_chat(pool)
    notice = receipt(pool, user)
    claim = notifications.claim

    def claim_then_a_429_elsewhere(conn, notification_id, *, now):
        claimed = claim(conn, notification_id, now=now)
        telegram.rate_limiter().pause.set(30)
        return claimed

    monkeypatch.setattr(notifications, "claim", claim_then_a_429_elsewhere)
    sent.clear()
    assert deliver(pool, notice) == "paused"
    assert bot.received == []
    [row] = notice_rows(pool, user)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    [again] = sent
    assert again.args == (notice,) and again.delay_ms > 29_000


def test_a_user_who_pays_one_second_before_the_6h_notice_is_sent_gets_no_notice(pool, sent, bot):
    start = now()
    paying, waiting = user_with_chat(pool, 6001), user_with_chat(pool, 6002)
    for user in (paying, waiting):
        given(pool, lambda c, u=user: make.subscription(
            c, u, kind="trial", started_at=start - 2 * DAY, expires_at=start + 5 * HOUR))
    counts = run_sweep(pool, "trial_notifications", start)
    assert counts["written"] == 2
    [paying_notice] = [r["id"] for r in notice_rows(pool, paying)]
    [waiting_notice] = [r["id"] for r in notice_rows(pool, waiting)]
    purchase = given(pool, lambda c: make.purchase(c, paying))
    with pool.connection() as conn, transaction(conn):  # the payment, a second before the send
        purchases.finalize_purchase(conn, Payment(purchase, "telegram", "tg-1", 500, "USD"),
                                    now=now(), referral_reward=0)
    assert deliver(pool, paying_notice) == "skipped"
    assert deliver(pool, waiting_notice) == "sent"
    assert [r.chat_id for r in bot.delivered()] == [6002]
    assert notice_rows(pool, paying)[0]["last_error"] == "the user has paid"
    later = start + timedelta(minutes=5)  # the next tick: one notice per (trial, offset)
    assert run_sweep(pool, "trial_notifications", later)["written"] == 0


def test_a_reminder_for_a_subscription_that_renewed_meanwhile_is_skipped(pool, sent, bot):
    start = now()
    user = user_with_chat(pool)
    sub = given(pool, lambda c: make.subscription(c, user, started_at=start - 28 * DAY,
                                                  expires_at=start + 2 * DAY, auto_renew=True))
    assert run_sweep(pool, "reminders", start)["written"] == 1  # auto-renew but no balance
    [notice] = [r["id"] for r in notice_rows(pool, user)]
    given(pool, lambda c: c.execute(  # renewed: the period moved on
        "update subscriptions set expires_at = expires_at + interval '30 days' where id = %s",
        (sub,)))
    assert deliver(pool, notice) == "skipped"
    assert bot.received == []
    assert notice_rows(pool, user)[0]["last_error"] == "the subscription renewed, was extended or ended"


def test_a_reminder_is_skipped_once_the_balance_covers_the_renewal(pool, sent, bot):
    start = now()
    user = user_with_chat(pool)
    given(pool, lambda c: make.subscription(c, user, started_at=start - 28 * DAY,
                                            expires_at=start + 2 * DAY, auto_renew=True))
    run_sweep(pool, "reminders", start)
    given(pool, lambda c: make.credit(c, user, 500))
    [notice] = [r["id"] for r in notice_rows(pool, user)]
    assert deliver(pool, notice) == "skipped" and bot.received == []


def test_bad_input_gets_a_clear_outcome_and_nothing_is_sent_twice(pool, sent, bot):
    with pytest.raises(UnknownNotification):
        deliver(pool, 424242)
    nobody = given(pool, make.user)
    assert deliver(pool, receipt(pool, nobody, key="a")) == "skipped"
    german = user_with_chat(pool, 7001, language="de")
    assert deliver(pool, receipt(pool, german, key="b")) == "sent"
    assert bot.delivered()[-1].text.startswith("Your subscription was renewed")
    assert deliver(pool, receipt(pool, german, key="c", kind="mystery", payload={})) == "failed"
    bot.faults.append(fake.garbage())
    trial = receipt(pool, german, key="d", kind="broadcast", payload={"text": "hi"})
    assert deliver(pool, trial) == "unknown"  # at most once: never sent again
    assert deliver(pool, trial) == "already unknown"
    bot.faults.append(fake.garbage())
    money = receipt(pool, german, key="e")
    assert deliver(pool, money) == "pending"  # at least once: sent again
    assert [m.args for m in sent if m.actor_name == "send_notification"][-1] == (money,)
    assert deliver(pool, money) == "sent"
    statuses = [(r["idempotency_key"], r["status"]) for r in notice_rows(pool)]
    assert statuses == [("a", "skipped"), ("b", "sent"), ("c", "failed"), ("d", "unknown"),
                        ("e", "sent")]
    assert [r.text for r in bot.received].count("hi") == 1  # garbage answered, never re-sent


def test_a_blocked_user_is_marked_unreachable_and_later_notices_are_skipped(pool, sent, bot):
    user = user_with_chat(pool, 8001)
    bot.blocked.add(8001)
    assert deliver(pool, receipt(pool, user, key="a")) == "failed"
    assert deliver(pool, receipt(pool, user, key="b")) == "skipped"
    assert len(bot.received) == 1
    with pool.connection() as conn, transaction(conn):
        notifications.clear_unreachable(conn, user, now=now())
    bot.blocked.clear()
    assert deliver(pool, receipt(pool, user, key="c")) == "sent"


def test_a_server_error_leaves_the_notice_pending_with_its_next_attempt(pool, sent, bot):
    user = user_with_chat(pool)
    notice = receipt(pool, user)
    bot.faults.append(fake.server_error(502))
    sent.clear()
    assert deliver(pool, notice) == "pending"
    [row] = notice_rows(pool, user)
    assert row["next_attempt_at"] > now() and "HTTP 502" in row["last_error"]
    [retry] = sent
    assert (retry.actor_name, retry.args) == ("send_notification", (notice,))
    assert retry.delay_ms and retry.delay_ms >= 1000
    given(pool, lambda c: c.execute("update notifications set next_attempt_at = %s where id = %s",
                                    (now() + timedelta(minutes=1), notice)))
    with pytest.raises(flows.WaitForRate):  # a message early for its attempt waits, unclaimed
        deliver(pool, notice)
    assert notice_rows(pool, user)[0]["attempts"] == 1


def test_a_notice_waiting_for_its_rate_slot_is_no_lost_message_for_sweep_outbox(pool, sent, bot):
    """A notice told to wait (its place in the line) is due at that slot: sweep_outbox sends no
    second message for it (which would take a second place) until the overdue margin after it."""
    from lapse.platform.rate_limits import MemoryStore, RateLimiter
    from lapse.ports import telegram

    user = user_with_chat(pool)
    first, waiting = receipt(pool, user, key="a"), receipt(pool, user, key="b")
    slow = RateLimiter(MemoryStore(), "telegram", rate=1 / 1200, per_key_rate=1000)  # 20 min
    previous = telegram.install(telegram.port(), slow)
    try:
        assert deliver(pool, first) == "sent"
        with pytest.raises(flows.WaitForRate) as told:
            deliver(pool, waiting)
    finally:
        telegram.install(*previous)
    slot = now() + timedelta(seconds=told.value.delay)
    assert told.value.delay > flows.OVERDUE.total_seconds()  # it will wait past the margin
    sent.clear()
    assert run_sweep(pool, "outbox", now() + flows.OVERDUE + timedelta(minutes=1))["resent"] == 0
    assert run_sweep(pool, "outbox", slot + flows.OVERDUE + timedelta(minutes=1))["resent"] == 1
    assert [m.args for m in sent] == [(waiting,)]


def test_sweep_outbox_sends_overdue_unclaimed_rows_again_once(pool, sent, bot):
    user = user_with_chat(pool)
    notice = receipt(pool, user)
    sent.clear()
    assert run_sweep(pool, "outbox")["resent"] == 0  # not overdue yet
    later = now() + flows.OVERDUE + timedelta(minutes=1)
    assert run_sweep(pool, "outbox", later)["resent"] == 1
    assert run_sweep(pool, "outbox", later + timedelta(minutes=1))["resent"] == 0
    assert [m.args for m in sent if m.actor_name == "send_notification"] == [(notice,)]


def test_telegram_not_configured_leaves_the_notice_pending(pool, sent, monkeypatch):
    from lapse.platform.config import reset_settings

    monkeypatch.delenv("LAPSE_TELEGRAM_TOKEN", raising=False)
    reset_settings()
    try:
        user = user_with_chat(pool)
        notice = receipt(pool, user)
        assert deliver(pool, notice) == "telegram_not_configured"
        assert notice_rows(pool, user)[0]["status"] == "pending"
    finally:
        reset_settings()


def test_receipts_are_written_with_the_payment_and_the_refund(pool, sent, bot):
    from domain import lifecycle

    user = user_with_chat(pool)
    purchase = given(pool, lambda c: make.purchase(c, user))
    with pool.connection() as conn, transaction(conn):
        done = purchases.finalize_purchase(conn, Payment(purchase, "telegram", "tg-9", 500,
                                                         "USD"), now=now(), referral_reward=0)
    given(pool, lambda c: c.execute("update subscriptions set status = 'active' where id = %s",
                                    (done.subscription_id,)))
    with pool.connection() as conn, transaction(conn):
        lifecycle.refund(conn, done.subscription_id, now=now())
    rows = notice_rows(pool, user)
    assert [(r["kind"], r["idempotency_key"]) for r in rows] == [
        ("payment_credited", "payment_credited:telegram:tg-9"),
        ("refunded", f"refunded:{done.subscription_id}")]
    for row in rows:
        assert deliver(pool, row["id"]) == "sent"
    assert [r.text for r in bot.delivered()] == [
        "Payment received: 5.00 USD. Thank you!",
        "Your subscription was refunded: 5.00 USD was credited to your balance."]


def test_a_stale_at_most_once_claim_ends_unknown_through_the_sweep(pool, sent, bot):
    user = user_with_chat(pool)
    notice = receipt(pool, user, kind="broadcast", key="bc", payload={"text": "x"})
    with pool.connection() as conn, transaction(conn):
        notifications.claim(conn, notice, now=now())
    assert run_sweep(pool, "outbox", now() + timedelta(seconds=1))["unknown"] == 0
    assert run_sweep(pool, "outbox", now() + timedelta(seconds=5))["unknown"] == 1  # 2 × 2 s
    assert notice_rows(pool, user)[0]["status"] == "unknown" and bot.received == []


def test_offsets_are_configurable(monkeypatch):
    from lapse.platform.config import load_settings

    config = load_settings({"LAPSE_TRIAL_NOTICE_HOURS": "1, 12", "LAPSE_REMINDER_DAYS": "2"})
    assert config.trial_notice_offsets == (12 * HOUR, HOUR)
    assert config.reminder_offsets == (2 * DAY,)


def test_the_trial_notice_sweep_takes_a_trial_ending_inside_the_smaller_offset_once(
        pool, sent, bot):
    start = now()
    user = user_with_chat(pool)
    given(pool, lambda c: make.subscription(c, user, kind="trial", started_at=start - DAY,
                                            expires_at=start + 30 * timedelta(minutes=1)))
    run_sweep(pool, "trial_notifications", start)
    [row] = notice_rows(pool, user)
    assert deliver(pool, row["id"]) == "sent"
    assert bot.delivered()[0].text == "Your free trial ends in 1 h. Buy a plan to keep your access."


