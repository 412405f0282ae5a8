-- name: purchase_and_user_for_update
-- The purchase and its user's row (SPEC §3's per-user lock), locked together.
select p.id, p.user_id, p.kind, p.plan_code, p.amount, p.currency, p.promo_code, p.provider,
       p.provider_invoice_id, p.status
from purchases p join users u on u.id = p.user_id
where p.id = %(id)s
for update of p, u

-- name: payment_by_provider_id
select id, purchase_id, subscription_id, kind, amount from payments
where provider = %(provider)s and provider_payment_id = %(provider_payment_id)s

-- name: consume_promo
update promo_codes set used_count = used_count + 1
where code = %(code)s and used_count < max_uses
returning used_count

-- name: set_status
update purchases set status = %(status)s,
    paid_at = case when %(status)s = 'paid' then %(now)s else paid_at end
where id = %(id)s

-- name: insert_payment
insert into payments (user_id, purchase_id, subscription_id, provider, provider_payment_id,
                      amount, currency, kind, created_at)
values (%(user_id)s, %(purchase_id)s, %(subscription_id)s, %(provider)s,
        %(provider_payment_id)s, %(amount)s, %(currency)s, %(kind)s, %(now)s)
returning id

-- name: referrer_if_first_plan
select u.referred_by from users u
where u.id = %(user_id)s and u.referred_by is not null
  and not exists (select 1 from purchases p
                  where p.user_id = u.id and p.kind = 'plan' and p.status = 'paid'
                    and p.id <> %(purchase_id)s)

-- name: settle
-- The purchase becomes paid and gets its one payment (with the period a
-- plan payment pays for, §3a): one statement.
with settled as (
    update purchases set status = 'paid', paid_at = %(now)s where id = %(purchase_id)s
    returning id
)
insert into payments (user_id, purchase_id, subscription_id, provider, provider_payment_id,
                      amount, currency, kind, period_start, period_end, created_at)
select %(user_id)s, id, %(subscription_id)s, %(provider)s, %(provider_payment_id)s, %(amount)s,
       %(currency)s, 'purchase', %(period_start)s, %(period_end)s, %(now)s
from settled
returning id
