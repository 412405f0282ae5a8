"""The outbox's domain (N1, A4, A6): writing notices once, the claim's fresh re-check, templates,
the delivery classes of stale claims, the unreachable mark, the trial-notice and reminder writers."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, timedelta

import pytest

from domain import notifications
from domain.errors import UnknownNotification
from lapse.platform.after_commit import transaction
from tests.support import factories as make
from tests.support.factories import given
from tests.support.outbox import notice_rows

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
TRIAL_OFFSETS = [6 * HOUR, HOUR]
REMINDER_OFFSETS = [3 * DAY, DAY]

pytestmark = pytest.mark.usefixtures("sent")


def queue(pool, user, kind="renewed", key=None, payload=None, now=T):
    with pool.connection() as conn, transaction(conn):
        return notifications.queue(conn, user, kind, key or f"{kind}:{user}:{now}",
                                   payload if payload is not None else
                                   {"subscription_id": 1, "price": 500, "currency": "USD"},
                                   now=now)


def claim(pool, notification_id, now=T):
    with pool.connection() as conn, transaction(conn):
        return notifications.claim(conn, notification_id, now=now)


def reachable_user(pool, telegram_id=1001, language="en"):
    user = given(pool, lambda c: make.user(c, telegram_id=telegram_id))
    given(pool, lambda c: c.execute("update users set language = %s where id = %s",
                                    (language, user)))
    return user


def test_a_notice_is_written_once_per_key_and_its_message_goes_out_after_commit(pool, sent):
    user = reachable_user(pool)
    first = queue(pool, user, key="renewed:1:p1")
    assert queue(pool, user, key="renewed:1:p1") is None  # the idempotency key
    assert [(m.actor_name, m.args) for m in sent] == [("send_notification", (first,))]
    assert [r["status"] for r in notice_rows(pool, user)] == ["pending"]


def test_the_claim_renders_the_users_language_and_marks_the_row_sending(pool):
    user = reachable_user(pool, language="ru")
    claimed = claim(pool, queue(pool, user))
    assert isinstance(claimed, notifications.Claimed)
    assert claimed.text == "Подписка продлена: с баланса списано 5.00 USD. Спасибо!"
    assert (claimed.chat_id, claimed.attempt, claimed.delivery) == (1001, 1, "at_least_once")
    [row] = notice_rows(pool, user)
    assert (row["status"], row["attempts"]) == ("sending", 1)
    assert claim(pool, claimed.notification_id) == "already sending"


def test_a_language_without_the_template_falls_back_to_english(pool):
    user = reachable_user(pool, language="de")
    claimed = claim(pool, queue(pool, user))
    assert claimed.text.startswith("Your subscription was renewed: 5.00 USD")


def test_a_template_missing_in_every_language_fails_the_notice_permanently(pool):
    user = reachable_user(pool, language="ru")
    notice = queue(pool, user, kind="no_such_kind", payload={})
    assert claim(pool, notice) == "failed"
    [row] = notice_rows(pool, user)
    assert row["status"] == "failed" and row["attempts"] == 0
    assert row["last_error"] == "no template 'no_such_kind' in 'ru' or 'en'"


def test_a_payload_missing_a_value_the_template_needs_fails_clearly(pool):
    user = reachable_user(pool)
    assert claim(pool, queue(pool, user, payload={"subscription_id": 1})) == "failed"
    assert "price_text" in notice_rows(pool, user)[0]["last_error"]


def test_every_kind_has_a_template_in_english_and_russian():
    for kind in notifications.AT_LEAST_ONCE | notifications.AT_MOST_ONCE:
        for language in ("en", "ru"):
            assert (notifications.TEMPLATES / language / f"{kind}.txt").is_file(), (kind, language)


SAMPLE_PAYLOAD = {"price": 500, "amount": 500, "credited": 500, "currency": "USD",
                  "expires_at": "2026-12-01T12:00:00+00:00", "hours": 6, "problem": "x",
                  "text": "Hello all"}


@pytest.mark.parametrize("name", sorted(p.stem for p in (notifications.TEMPLATES / "en").glob(
    "*.txt")))
def test_each_template_renders_in_russian_with_the_fields_of_its_english_twin(name):
    fields = {language: {f for _, f, _, _ in string.Formatter().parse(
        (notifications.TEMPLATES / language / f"{name}.txt").read_text()) if f}
        for language in ("en", "ru")}
    assert fields["ru"] == fields["en"], name
    english, russian = (notifications.render(name, language, SAMPLE_PAYLOAD)
                        for language in ("en", "ru"))
    assert "{" not in russian and "}" not in russian
    assert name == "broadcast" or (russian != english
                                   and re.search("[а-яА-Я]", russian)), russian


def test_a_broadcast_names_its_template_or_carries_its_text(pool):
    user = reachable_user(pool)
    claimed = claim(pool, queue(pool, user, kind="broadcast", payload={"text": "Hello all"}))
    assert claimed.text == "Hello all" and claimed.delivery == "at_most_once"


def test_an_unknown_id_is_a_permanent_error_and_a_user_without_telegram_is_skipped(pool):
    with pytest.raises(UnknownNotification):
        claim(pool, 987654)
    user = given(pool, make.user)  # no telegram_id
    assert claim(pool, queue(pool, user)) == "skipped"
    assert notice_rows(pool, user)[0]["last_error"] == "the user has no Telegram id"


def test_an_unreachable_user_is_skipped_until_the_mark_is_cleared(pool):
    user = reachable_user(pool)
    claimed = claim(pool, queue(pool, user, key="a"))
    with pool.connection() as conn, transaction(conn):
        notifications.finish(conn, claimed, "failed", now=T, error="Forbidden: bot was blocked",
                             unreachable_reason="blocked")
    assert claim(pool, queue(pool, user, key="b")) == "skipped"
    with pool.connection() as conn, transaction(conn):
        assert notifications.clear_unreachable(conn, user, now=T) is True
        assert notifications.clear_unreachable(conn, user, now=T) is False
    assert isinstance(claim(pool, queue(pool, user, key="c")), notifications.Claimed)
    assert [r["status"] for r in notice_rows(pool, user)] == ["failed", "skipped", "sending"]


def test_a_late_outcome_of_an_older_claim_changes_nothing(pool):
    user = reachable_user(pool)
    first = claim(pool, queue(pool, user))
    with pool.connection() as conn, transaction(conn):
        assert notifications.retry_later(conn, first, 0, "HTTP 502", now=T) == "pending"
    second = claim(pool, first.notification_id)
    assert second.attempt == 2
    with pool.connection() as conn, transaction(conn):
        assert notifications.finish(conn, first, "sent", now=T, message_id=1) is False
        assert notifications.finish(conn, second, "sent", now=T, message_id=2) is True
    assert notice_rows(pool, user)[0]["status"] == "sent"


def test_temporary_failures_end_failed_after_max_attempts(pool):
    user = reachable_user(pool)
    notice = queue(pool, user)
    for attempt in range(1, notifications.MAX_ATTEMPTS + 1):
        claimed = claim(pool, notice)
        assert claimed.attempt == attempt
        with pool.connection() as conn, transaction(conn):
            outcome = notifications.retry_later(conn, claimed, 1, "HTTP 502", now=T)
    assert outcome == "failed"
    assert notice_rows(pool, user)[0]["last_error"].startswith("gave up after 10 attempts")


def settle(pool, notice, now):
    with pool.connection() as conn, transaction(conn):
        return notifications.settle_stale_claim(conn, notice, now=now,
                                                claimed_before=now - 20 * timedelta(seconds=1))


def test_a_stale_claim_of_a_receipt_is_sent_again_and_of_a_notice_becomes_unknown(pool, sent):
    user = reachable_user(pool)
    receipt = claim(pool, queue(pool, user, kind="renewed", key="r")).notification_id
    trial = given(pool, lambda c: make.subscription(c, user, kind="trial", started_at=T,
                                                    expires_at=T + 5 * HOUR))
    notice = queue(pool, user, kind="trial_ending", key="t",
                   payload={"subscription_id": trial, "hours": 6,
                            "expires_at": (T + 5 * HOUR).isoformat()})
    claim(pool, notice)
    assert settle(pool, receipt, T + 10 * timedelta(seconds=1)) is None  # not stale yet
    sent.clear()
    assert settle(pool, receipt, T + HOUR) == "resent"
    assert settle(pool, notice, T + HOUR) == "unknown"
    assert [(m.actor_name, m.args) for m in sent] == [("send_notification", (receipt,))]
    assert [r["status"] for r in notice_rows(pool, user)] == ["pending", "unknown"]


def test_trial_notices_one_per_trial_and_offset_for_the_nearest_threshold(pool):
    users = [reachable_user(pool, telegram_id=2000 + n) for n in range(3)]
    ends = [T + 5 * HOUR, T + 30 * timedelta(minutes=1), T + 7 * HOUR]
    for user, end in zip(users, ends, strict=True):
        given(pool, lambda c, u=user, e=end: make.subscription(c, u, kind="trial",
                                                               started_at=T - DAY, expires_at=e))
    for _ in range(2):  # a second run writes nothing new
        with pool.connection() as conn, transaction(conn):
            notifications.write_trial_notices(conn, now=T, offsets=TRIAL_OFFSETS, after=0,
                                              limit=100)
    keys = [r["idempotency_key"].split(":")[2] for r in notice_rows(pool)]
    assert keys == ["6h", "1h"]  # the 7-hour trial gets nothing yet


def test_reminders_only_for_subscriptions_that_will_not_renew_by_themselves(pool):
    def subscription(telegram_id, balance, auto_renew, status="active", ends=T + 2 * DAY):
        user = reachable_user(pool, telegram_id=telegram_id)
        if balance:
            given(pool, lambda c: make.credit(c, user, balance))
        return given(pool, lambda c: make.subscription(
            c, user, status=status, started_at=T - 28 * DAY, expires_at=ends,
            auto_renew=auto_renew))
    will_renew = subscription(1, 500, True)
    off = subscription(2, 500, False)
    poor = subscription(3, 100, True)
    cancelled = subscription(4, 500, False, status="cancelled")
    far = subscription(5, 0, False, ends=T + 10 * DAY)
    for after in (0, off):  # keyset pages of one after the other
        with pool.connection() as conn, transaction(conn):
            notifications.write_reminders(conn, now=T, offsets=REMINDER_OFFSETS, after=after,
                                          limit=2)
    with pool.connection() as conn:
        reminded = [r["payload"]["subscription_id"] for r in conn.execute(
            "select payload from notifications where kind = 'reminder' order by id")]
    assert reminded == [off, poor, cancelled]
    assert will_renew not in reminded and far not in reminded


def test_a_receipt_whose_claims_keep_dying_fails_after_max_attempts(pool, sent):
    user = reachable_user(pool)
    receipt = queue(pool, user)
    for _ in range(notifications.MAX_ATTEMPTS):  # every sender dies after its claim
        claim(pool, receipt)
        outcome = settle(pool, receipt, T + HOUR)
    assert outcome == "failed"
    [row] = notice_rows(pool, user)
    assert (row["status"], row["last_error"]) == (
        "failed", "gave up after 10 claims ended with no outcome")
