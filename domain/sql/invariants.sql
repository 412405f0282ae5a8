-- name: expired_has_no_key
select id as subscription_id, user_id, access_key::text
from subscriptions where status = 'expired' and access_key is not null

-- name: current_has_key
select id as subscription_id, user_id, status
from subscriptions where status in ('active', 'grace', 'cancelled') and access_key is null

-- name: one_current_subscription
select user_id, count(*) as current_subscriptions
from subscriptions where status in ('pending', 'active', 'grace', 'cancelled')
group by user_id having count(*) > 1

-- name: balance_matches_ledger
select u.id as user_id, u.balance, coalesce(l.total, 0) as ledger_sum
from users u
left join (select user_id, sum(amount) as total from balance_ledger group by user_id) l
    on l.user_id = u.id
where u.balance <> coalesce(l.total, 0)

-- name: balance_not_negative
select id as user_id, balance from users where balance < 0

-- name: paid_purchase_has_one_payment
select p.id as purchase_id, p.user_id, count(pay.id) as payments
from purchases p left join payments pay on pay.purchase_id = p.id
where p.status = 'paid'
group by p.id, p.user_id having count(pay.id) <> 1

-- name: payment_recorded_once
select provider, provider_payment_id, count(*) as payments
from payments group by provider, provider_payment_id having count(*) > 1

-- name: renewal_within_period
select id as subscription_id, user_id, last_auto_renewal_at, expires_at
from subscriptions where last_auto_renewal_at > expires_at

-- name: no_old_leaks
select r.user_id, count(*) as leaked_recordings,
       retention_end(r.user_id, %(now)s, %(grace)s) as retention_end
from recordings r
where r.has_audio and r.kind = 'recite' and not r.is_deleted
group by r.user_id
having not retention_holds(r.user_id, %(now)s, %(grace)s)
   and retention_end(r.user_id, %(now)s, %(grace)s) < %(now)s - %(alert_age)s

-- name: unapplied_tagging_batches
select id as batch_id, user_id, action, cardinality(keys) as keys, created_at, last_error
from tagging_batches
where state = 'pending' and action in ('tag', 'purge') and created_at < %(now)s - %(alert_age)s
