-- name: claim_due
-- M3: due paid subscriptions with auto-renew, one batch, rows another
-- sweep holds are skipped; the renewal payment for the current period start
-- (the unique key of payments_one_renewal_per_period) must not exist yet.
-- The user row is locked with it (SPEC §3's per-user lock): a subscription
-- whose user another transaction holds is skipped and found by the next sweep.
-- Locking re-checks this WHERE on a row changed since the snapshot (read
-- committed), so the balance tested below is the one the debit will see.
select s.id, s.user_id, s.status, s.expires_at,
       p.price, p.currency, p.period_days
from subscriptions s
join users u on u.id = s.user_id
join plans p on p.code = s.plan_code
where s.kind = 'paid' and s.auto_renew and s.status in ('active', 'grace')
  and s.expires_at <= %(now)s + %(window)s
  -- past its billing grace a subscription expires (§3a), it is never charged
  and s.expires_at + %(grace)s > %(now)s
  and s.id > %(after)s
  and not exists (select 1 from payments r
                  where r.subscription_id = s.id and r.kind = 'renewal'
                    and r.period_start = s.expires_at)
  -- a grace row already notified for this period whose user still cannot pay
  -- the price would change nothing (the ledger refuses a debit below zero):
  -- not claimed; the sweep after a top-up claims and renews it
  and (s.status <> 'grace' or s.renewal_failed_notified_for is distinct from s.expires_at
       or u.balance >= p.price)
order by s.id
limit %(limit)s
for update of s, u skip locked

-- name: renew
-- Extend from the old end, record the payment (unique per period start),
-- and the event: one statement (the "renewed" notice follows in the same savepoint).
with renewed as (
    update subscriptions
    set expires_at = expires_at + %(period)s, status = 'active', last_auto_renewal_at = %(now)s
    where id = %(id)s
    returning id
), paid as (
    insert into payments (user_id, subscription_id, provider, provider_payment_id, amount,
                          currency, kind, period_start, period_end, created_at)
    select %(user_id)s, id, 'balance', %(payment_id)s, %(amount)s, %(currency)s, 'renewal',
           %(period_start)s, %(period_start)s + %(period)s, %(now)s
    from renewed
)
insert into subscription_events (subscription_id, user_id, type, created_at)
select id, %(user_id)s, 'renewed', %(now)s from renewed

-- name: to_grace
update subscriptions set status = 'grace' where id = %(id)s and status = 'active'

-- name: mark_notified
update subscriptions set renewal_failed_notified_for = %(period_start)s where id = %(id)s

-- name: event
insert into subscription_events (subscription_id, user_id, type, created_at)
values (%(id)s, %(user_id)s, %(type)s, %(now)s)
