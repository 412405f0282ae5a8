"""finalize_purchase (M2) fed real rows for every branch, and the refund transition."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from domain import ledger, lifecycle, purchases
from domain.purchases import Invoice, Payment
from lapse.platform.after_commit import transaction
from tests.support import factories as make
from tests.support.factories import given

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def finalize(pool, payment, invoice=None, reward=100):
    with pool.connection() as conn, transaction(conn):
        return purchases.finalize_purchase(conn, payment, now=T, referral_reward=reward,
                                           invoice=invoice)


def one(pool, sql, *params):
    with pool.connection() as conn:
        return conn.execute(sql, params).fetchone()


def balance(pool, user):
    return one(pool, "select balance from users where id = %s", user)["balance"]


def notice(pool, user, kind):
    """The id of the user's one notice of ``kind``."""
    [row] = one_all(pool, "select id from notifications where user_id = %s and kind = %s",
                    user, kind)
    return row["id"]


def one_all(pool, sql, *params):
    with pool.connection() as conn:
        return conn.execute(sql, params).fetchall()


def subs(pool, user):
    with pool.connection() as conn:
        return conn.execute("select id, kind, status, expires_at, access_key from subscriptions "
                            "where user_id = %s order by id", (user,)).fetchall()


def test_a_top_up_is_credited_once_however_often_the_message_comes(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, kind="topup", amount=700))
    pay = Payment(p, "telegram", "tg-1", 700, "USD")
    first, again = finalize(pool, pay), finalize(pool, pay)
    assert first.outcome == "paid" and again.outcome == "duplicate"
    assert again.payment_id == first.payment_id and balance(pool, user) == 700
    assert one(pool, "select status from purchases where id = %s", p)["status"] == "paid"


def test_a_plan_for_a_new_user_is_a_pending_row_activated_after_commit(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user))
    done = finalize(pool, Payment(p, "telegram", "tg-2", 500, "USD"))
    [row] = subs(pool, user)
    assert (row["kind"], row["status"], row["expires_at"]) == ("paid", "pending", T + 30 * DAY)
    assert row["access_key"] is not None and done.subscription_id == row["id"]
    assert [(m.actor_name, m.args) for m in sent] == [
        ("activate_subscription", (row["id"],)), ("restore_recordings", (user,)),
        ("send_notification", (notice(pool, user, "payment_credited"),))]


def test_a_plan_converts_an_active_trial_and_moves_its_key(pool, sent):
    user = given(pool, make.user)
    trial = given(pool, lambda c: make.subscription(c, user, kind="trial", started_at=T - DAY,
                                                    expires_at=T + 2 * DAY))
    key = subs(pool, user)[0]["access_key"]
    p = given(pool, lambda c: make.purchase(c, user))
    finalize(pool, Payment(p, "telegram", "tg-3", 500, "USD"))
    old, new = subs(pool, user)
    assert (old["id"], old["status"], old["access_key"]) == (trial, "expired", None)
    assert (new["status"], new["access_key"]) == ("active", key)
    assert one(pool, "select type from subscription_events where subscription_id = %s",
               trial)["type"] == "converted"
    assert "activate_subscription" not in [m.actor_name for m in sent]


@pytest.mark.parametrize("status", ["active", "cancelled", "pending", "grace"])
def test_a_plan_extends_a_current_paid_subscription_from_its_old_end(pool, sent, status):
    user = given(pool, make.user)
    given(pool, lambda c: make.subscription(c, user, status=status, started_at=T - 10 * DAY,
                                            expires_at=T + 20 * DAY))
    p = given(pool, lambda c: make.purchase(c, user))
    finalize(pool, Payment(p, "telegram", f"tg-{status}", 500, "USD"))
    [row] = subs(pool, user)
    assert row["expires_at"] == T + 50 * DAY
    assert row["status"] == ("active" if status == "grace" else status)


def test_a_plan_after_expiry_is_a_new_paid_row(pool, sent):
    user = given(pool, make.user)
    given(pool, lambda c: make.subscription(c, user, status="expired", started_at=T - 40 * DAY,
                                            expires_at=T - 10 * DAY, ended_at=T - 10 * DAY))
    p = given(pool, lambda c: make.purchase(c, user))
    finalize(pool, Payment(p, "telegram", "tg-4", 500, "USD"))
    assert [r["status"] for r in subs(pool, user)] == ["expired", "pending"]


def test_a_balance_purchase_debits_and_a_short_balance_fails_without_taking_money(pool, sent):
    user = given(pool, make.user)
    given(pool, lambda c: make.credit(c, user, 600))
    first = given(pool, lambda c: make.purchase(c, user, provider="balance"))
    second = given(pool, lambda c: make.purchase(c, user, provider="balance"))
    assert finalize(pool, Payment(first, "balance", f"balance:{first}", 500, "USD")).outcome == "paid"
    failed = finalize(pool, Payment(second, "balance", f"balance:{second}", 500, "USD"))
    assert failed.outcome == "failed" and failed.credited == 0 and "cannot debit 500" in failed.reason
    assert balance(pool, user) == 100


@pytest.mark.parametrize("paid, currency, status, expected", [
    (400, "USD", "pending", "paid 400 USD, the purchase costs 500 USD"),
    (500, "EUR", "pending", "paid 500 EUR, the purchase costs 500 USD"),
    (500, "USD", "expired", "the purchase is already expired"),
])
def test_money_that_cannot_buy_the_purchase_fails_it_and_is_credited_with_a_notice(
        pool, sent, paid, currency, status, expected):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, status=status))
    done = finalize(pool, Payment(p, "telegram", "tg-5", paid, currency))
    assert (done.outcome, done.credited, done.reason) == ("failed", paid, expected)
    assert balance(pool, user) == paid and subs(pool, user) == []
    assert one(pool, "select status from purchases where id = %s", p)["status"] == "failed"
    assert one(pool, "select purchase_id from payments where id = %s",
               done.payment_id)["purchase_id"] == p
    note = one(pool, "select kind, payload from notifications where user_id = %s", user)
    assert note["kind"] == "payment_unmatched" and note["payload"]["problem"] == expected


@pytest.mark.parametrize("provider", ["telegram", "balance", "crypto"])
@pytest.mark.parametrize("settled", ["paid", "failed"])
def test_a_settled_purchase_refuses_any_further_payment_id_and_credits_nothing(
        pool, sent, provider, settled):
    user = given(pool, make.user)
    given(pool, lambda c: make.credit(c, user, 500))
    p = given(pool, lambda c: make.purchase(c, user, provider=provider, status=settled,
                                            invoice="inv-s" if provider == "crypto" else None))
    for forged in ("forged-1", "inv-s"):
        with pytest.raises(purchases.PaymentRefused, match=f"already {settled}"):
            finalize(pool, Payment(p, provider, forged, 500, "USD"),
                     Invoice("inv-s", "paid", 500, "USD"))
    assert balance(pool, user) == 500 and subs(pool, user) == []
    assert one(pool, "select count(*) as n from payments")["n"] == 0


@pytest.mark.parametrize("provider", ["telegram", "crypto"])
def test_a_balance_message_for_another_providers_purchase_is_refused_and_changes_nothing(
        pool, sent, provider):
    user = given(pool, make.user)
    given(pool, lambda c: make.credit(c, user, 800))
    p = given(pool, lambda c: make.purchase(c, user, provider=provider,
                                            invoice="inv-b" if provider == "crypto" else None))
    with pytest.raises(purchases.PaymentRefused, match=f"balance payment for a {provider}"):
        finalize(pool, Payment(p, "balance", f"balance:{p}", 500, "USD"))
    assert balance(pool, user) == 800 and subs(pool, user) == []
    assert one(pool, "select status from purchases where id = %s", p)["status"] == "pending"
    real = "inv-b" if provider == "crypto" else "tg-real"
    assert finalize(pool, Payment(p, provider, real, 500, "USD"),
                    Invoice("inv-b", "paid", 500, "USD")).outcome == "paid"


def test_a_paid_crypto_purchase_plus_forged_messages_credits_once(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, kind="topup", provider="crypto",
                                            invoice="inv-7"))
    paid = Invoice("inv-7", "paid", 500, "USD")
    assert finalize(pool, Payment(p, "crypto", "inv-7", 500, "USD"), paid).outcome == "paid"
    assert finalize(pool, Payment(p, "crypto", "inv-7", 500, "USD"), paid).outcome == "duplicate"
    for n in range(3):
        with pytest.raises(purchases.PermanentError):
            finalize(pool, Payment(p, "crypto", f"forged-{n}", 500, "USD"), paid)
    assert balance(pool, user) == 500


def test_a_crypto_payment_id_other_than_the_invoice_id_is_refused_while_pending(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, kind="topup", provider="crypto",
                                            invoice="inv-6"))
    with pytest.raises(purchases.UnverifiedPayment, match="is not this purchase's invoice"):
        finalize(pool, Payment(p, "crypto", "other-6", 500, "USD"),
                 Invoice("inv-6", "paid", 500, "USD"))
    assert balance(pool, user) == 0
    assert one(pool, "select status from purchases where id = %s", p)["status"] == "pending"


@pytest.mark.parametrize("purchase_provider, paid_through", [
    ("balance", "balance"), ("telegram", "balance"), ("balance", "telegram")])
def test_a_top_up_from_the_balance_is_refused(pool, sent, purchase_provider, paid_through):
    user = given(pool, make.user)
    given(pool, lambda c: make.credit(c, user, 800))
    p = given(pool, lambda c: make.purchase(c, user, kind="topup", provider=purchase_provider))
    with pytest.raises(purchases.PaymentRefused, match="top-up cannot be paid from the balance"):
        finalize(pool, Payment(p, paid_through, f"balance:{p}", 500, "USD"))
    assert balance(pool, user) == 800
    assert one(pool, "select status from purchases where id = %s", p)["status"] == "pending"


def test_a_plan_payment_records_the_period_it_pays_for(pool, sent):
    user = given(pool, make.user)
    first = given(pool, lambda c: make.purchase(c, user))
    second = given(pool, lambda c: make.purchase(c, user))
    finalize(pool, Payment(first, "telegram", "tg-p1", 500, "USD"))
    finalize(pool, Payment(second, "telegram", "tg-p2", 500, "USD"))
    topup = given(pool, lambda c: make.purchase(c, user, kind="topup"))
    finalize(pool, Payment(topup, "telegram", "tg-p3", 500, "USD"))
    with pool.connection() as conn:
        periods = conn.execute("select period_start, period_end from payments order by id"
                               ).fetchall()
    assert [tuple(r.values()) for r in periods] == [
        (T, T + 30 * DAY), (T + 30 * DAY, T + 60 * DAY), (None, None)]


def test_a_payment_through_another_provider_is_credited(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, provider="crypto", invoice="inv-1"))
    done = finalize(pool, Payment(p, "telegram", "tg-8", 500, "USD"))
    assert done.outcome == "failed" and "purchase is for crypto" in done.reason


def test_a_promo_code_is_consumed_and_an_exhausted_one_fails_the_purchase(pool, sent):
    user = given(pool, make.user)
    given(pool, lambda c: make.promo(c, "LAST", max_uses=1))
    first = given(pool, lambda c: make.purchase(c, user, amount=250, promo_code="LAST"))
    second = given(pool, lambda c: make.purchase(c, user, amount=250, promo_code="LAST"))
    assert finalize(pool, Payment(first, "telegram", "tg-9", 250, "USD")).outcome == "paid"
    done = finalize(pool, Payment(second, "telegram", "tg-10", 250, "USD"))
    assert done.outcome == "failed" and done.reason == "promo code LAST is exhausted"
    assert one(pool, "select used_count from promo_codes")["used_count"] == 1


def test_the_referrer_is_rewarded_once_on_the_first_paid_plan(pool, sent):
    referrer = given(pool, make.user)
    user = given(pool, make.user)
    given(pool, lambda c: c.execute("update users set referred_by = %s where id = %s",
                                    (referrer, user)))
    for n in range(2):
        p = given(pool, lambda c: make.purchase(c, user))
        finalize(pool, Payment(p, "telegram", f"tg-ref-{n}", 500, "USD"))
    topup = given(pool, lambda c: make.purchase(c, referrer, kind="topup"))
    finalize(pool, Payment(topup, "telegram", "tg-ref-topup", 500, "USD"))
    assert balance(pool, referrer) == 600


def test_an_unknown_purchase_is_a_permanent_error(pool, sent):
    with pytest.raises(purchases.UnknownPurchase, match="no purchase with id 424242"):
        finalize(pool, Payment(424242, "telegram", "tg-11", 500, "USD"))


def test_a_crypto_payment_is_credited_only_as_the_provider_confirms_it(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, kind="topup", provider="crypto",
                                            invoice="inv-9"))
    pay = Payment(p, "crypto", "inv-9", 500, "USD")
    with pytest.raises(purchases.UnverifiedPayment, match="needs the provider's invoice"):
        finalize(pool, pay)
    with pytest.raises(purchases.UnverifiedPayment, match="not this purchase's"):
        finalize(pool, pay, Invoice("inv-8", "paid", 500, "USD"))
    with pytest.raises(purchases.UnverifiedPayment, match="reports active"):
        finalize(pool, pay, Invoice("inv-9", "active", 500, "USD"))
    assert balance(pool, user) == 0
    assert finalize(pool, pay, Invoice("inv-9", "paid", 500, "USD")).outcome == "paid"
    assert balance(pool, user) == 500


def test_the_same_payment_finalized_by_8_threads_credits_once(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user, kind="topup"))
    barrier, outcomes = threading.Barrier(8), []

    def race():
        barrier.wait()
        outcomes.append(finalize(pool, Payment(p, "telegram", "tg-race", 500, "USD")).outcome)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["paid"] and balance(pool, user) == 500


def test_a_promo_with_10_uses_claimed_by_50_concurrent_purchases_pays_exactly_10(pool, sent):
    given(pool, lambda c: make.promo(c, "TEN", max_uses=10))
    users = [given(pool, make.user) for _ in range(50)]
    bought = [given(pool, lambda c, u=u: make.purchase(c, u, kind="topup", promo_code="TEN"))
              for u in users]
    barrier, outcomes = threading.Barrier(10), []

    def race(chunk):
        barrier.wait()
        outcomes.extend(finalize(pool, Payment(p, "telegram", f"tg-promo-{p}", 500, "USD")).outcome
                        for p in chunk)

    threads = [threading.Thread(target=race, args=(bought[i::10],)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("paid") == 10 and outcomes.count("failed") == 40
    assert one(pool, "select used_count from promo_codes")["used_count"] == 10


def test_a_refund_ends_the_subscription_and_credits_its_payments_once(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user))
    sub = finalize(pool, Payment(p, "telegram", "tg-12", 500, "USD")).subscription_id
    given(pool, lambda c: c.execute("update subscriptions set status = 'active' where id = %s",
                                    (sub,)))
    with pool.connection() as conn, transaction(conn):
        assert lifecycle.refund(conn, sub, now=T + DAY) == 500
    [row] = subs(pool, user)
    assert row["status"] == "expired" and row["access_key"] is None and balance(pool, user) == 500
    assert ("tag_recordings", (user,)) in [(m.actor_name, m.args) for m in sent]
    with pytest.raises(lifecycle.TransitionRefused), pool.connection() as conn, transaction(conn):
        lifecycle.refund(conn, sub, now=T + DAY)
    assert balance(pool, user) == 500


def bought_twice_then_renewed(pool):
    """A plan bought at T, bought again at T (extended), renewed at the end: 3 periods of 30 days."""
    from domain import renewals

    user = given(pool, make.user)
    for n in range(2):
        p = given(pool, lambda c: make.purchase(c, user))
        sub = finalize(pool, Payment(p, "telegram", f"tg-period-{n}", 500, "USD")).subscription_id
    given(pool, lambda c: c.execute("update subscriptions set status = 'active' where id = %s",
                                    (sub,)))
    given(pool, lambda c: make.credit(c, user, 500))
    with pool.connection() as conn, transaction(conn):
        renewals.renew_due_batch(conn, now=T + 60 * DAY, window=timedelta(hours=12),
                                 billing_grace=3 * DAY)
    return user, sub


def refund(pool, sub, at, amount=None):
    with pool.connection() as conn, transaction(conn):
        return lifecycle.refund(conn, sub, now=at, amount=amount)


@pytest.mark.parametrize("at, credited", [
    (T + DAY, 1500),        # inside the first period: it and the two after it
    (T + 31 * DAY, 1000),   # the first period is used up
    (T + 75 * DAY, 500),    # only the renewed period, which contains t
])
def test_a_refund_credits_the_period_containing_now_and_every_later_one(pool, sent, at, credited):
    user, sub = bought_twice_then_renewed(pool)
    with pool.connection() as conn:
        periods = conn.execute("select kind, period_start, period_end from payments "
                               "where subscription_id = %s order by id", (sub,)).fetchall()
    assert [tuple(r.values()) for r in periods] == [
        ("purchase", T, T + 30 * DAY), ("purchase", T + 30 * DAY, T + 60 * DAY),
        ("renewal", T + 60 * DAY, T + 90 * DAY)]
    assert refund(pool, sub, at) == credited and balance(pool, user) == credited
    assert one(pool, "select count(*) as n from balance_ledger where reason = 'refund'")["n"] == 1


def test_a_refund_in_grace_credits_nothing(pool, sent):
    user, sub = bought_twice_then_renewed(pool)
    given(pool, lambda c: c.execute("update subscriptions set status = 'grace' where id = %s",
                                    (sub,)))
    assert refund(pool, sub, T + DAY) == 0 and balance(pool, user) == 0
    assert subs(pool, user)[0]["status"] == "expired"


def test_a_refund_amount_replaces_the_sum_and_may_not_exceed_it(pool, sent):
    user, sub = bought_twice_then_renewed(pool)
    with pytest.raises(lifecycle.RefundTooLarge, match="cannot refund 501, at most 500"):
        refund(pool, sub, T + 75 * DAY, amount=501)
    assert subs(pool, user)[0]["status"] == "active" and balance(pool, user) == 0
    assert refund(pool, sub, T + 75 * DAY, amount=200) == 200 and balance(pool, user) == 200


def test_a_second_plan_pays_no_referral_reward_even_when_the_first_was_posted_under_another_ref(
        pool, sent):
    # the first plan was paid and rewarded before the reward's reference was per user (another
    # ref): the ledger's (user, reason, ref) key cannot stop a second reward, the first-plan check must
    referrer = given(pool, make.user)
    user = given(pool, make.user)

    def earlier_paid_plan(c):
        c.execute("update users set referred_by = %s where id = %s", (referrer, user))
        first = make.purchase(c, user, status="paid")
        ledger.post(c, referrer, 100, reason="referral", ref=f"purchase:{first}", now=T - DAY)
    given(pool, earlier_paid_plan)
    second = given(pool, lambda c: make.purchase(c, user))
    assert finalize(pool, Payment(second, "telegram", "tg-r3", 500, "USD")).outcome == "paid"
    assert balance(pool, referrer) == 100


def test_a_referral_reward_already_posted_is_not_posted_again(pool, sent):
    referrer = given(pool, make.user)
    user = given(pool, make.user)
    given(pool, lambda c: c.execute("update users set referred_by = %s where id = %s",
                                    (referrer, user)))
    first = given(pool, lambda c: make.purchase(c, user))
    finalize(pool, Payment(first, "telegram", "tg-r1", 500, "USD"))
    # an operator marked the first plan purchase otherwise: the next one looks like the first
    given(pool, lambda c: c.execute("update purchases set status = 'expired' where id = %s",
                                    (first,)))
    second = given(pool, lambda c: make.purchase(c, user))
    assert finalize(pool, Payment(second, "telegram", "tg-r2", 500, "USD")).outcome == "paid"
    assert balance(pool, referrer) == 100


def test_a_paid_row_still_pending_after_the_activation_deadline_expires_and_is_refunded(pool, sent):
    user = given(pool, make.user)
    p = given(pool, lambda c: make.purchase(c, user))
    sub = finalize(pool, Payment(p, "telegram", "tg-act", 500, "USD")).subscription_id
    with pool.connection() as conn:
        assert lifecycle.due_expiries(conn, now=T + 23 * timedelta(hours=1),
                                      billing_grace=timedelta(hours=72)) == []
        due = lifecycle.due_expiries(conn, now=T + DAY, billing_grace=timedelta(hours=72))
        conn.rollback()
    assert due == [(sub, user)]
    with pool.connection() as conn, transaction(conn):
        ended = lifecycle.expire_if_due(conn, sub, user, now=T + DAY,
                                        billing_grace=timedelta(hours=72))
    assert ended.rule == "activation_deadline"
    [row] = subs(pool, user)
    assert row["status"] == "expired" and row["access_key"] is None and balance(pool, user) == 500
    assert notice(pool, user, "activation_failed")
    assert ("tag_recordings", (user,)) in [(m.actor_name, m.args) for m in sent]
