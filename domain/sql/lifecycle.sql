-- name: subscription_for_update
select id, user_id, kind, status, started_at, expires_at, auto_renew, access_key
from subscriptions where id = %(id)s for update

-- name: due_expiries
-- Current subscriptions whose §3a expiry is due at now, keyset by id in (after, until]
-- (until null: no upper bound).
select s.id, s.user_id from subscriptions s
where s.id > %(after)s and (%(until)s::bigint is null or s.id <= %(until)s::bigint)
  and ((s.status in ('active', 'cancelled', 'grace')
        and s.expires_at <= %(now)s
        and (s.kind = 'trial'
             or s.status = 'cancelled'
             or (s.status = 'active' and not s.auto_renew)
             or (s.status in ('active', 'grace') and s.expires_at + %(grace)s <= %(now)s)))
       or (s.status = 'pending' and s.kind = 'paid'
           and s.started_at + %(activation_deadline)s <= %(now)s)
       or (s.status = 'pending' and s.kind = 'trial' and s.expires_at <= %(now)s))
order by s.id limit %(limit)s

-- name: due_expiry_bounds
-- The upper ids of the first shards - 1 of shards near-equal tiles of the due set after
-- ``after`` (the same predicate as due_expiries), ascending. Fewer when the set is small.
with due as (
    select s.id from subscriptions s
    where s.id > %(after)s
      and ((s.status in ('active', 'cancelled', 'grace')
            and s.expires_at <= %(now)s
            and (s.kind = 'trial'
                 or s.status = 'cancelled'
                 or (s.status = 'active' and not s.auto_renew)
                 or (s.status in ('active', 'grace') and s.expires_at + %(grace)s <= %(now)s)))
           or (s.status = 'pending' and s.kind = 'paid'
               and s.started_at + %(activation_deadline)s <= %(now)s)
           or (s.status = 'pending' and s.kind = 'trial' and s.expires_at <= %(now)s))
), tiles as (
    select id, ntile(%(shards)s) over (order by id) as tile from due
)
select max(id) as until from tiles group by tile
having tile < %(shards)s
order by until

-- name: expire
-- The move to expired and its event (naming the key the row had), one statement.
with expired as (
    update subscriptions set status = 'expired', access_key = null, ended_at = %(ended_at)s
    where id = %(id)s
    returning id, user_id)
insert into subscription_events (subscription_id, user_id, type, created_at, access_key)
select id, user_id, %(type)s, %(now)s, %(access_key)s from expired

-- name: set_status
update subscriptions set status = %(status)s, auto_renew = %(auto_renew)s where id = %(id)s

-- name: event
insert into subscription_events (subscription_id, user_id, type, created_at, access_key)
values (%(subscription_id)s, %(user_id)s, %(type)s, %(now)s, %(access_key)s)

-- name: current_members
select member_id from family_members
where owner_id = %(owner_id)s and added_at <= %(now)s and (removed_at is null or removed_at > %(now)s)
order by member_id

-- name: add_member
insert into family_members (owner_id, member_id, added_at) values (%(owner_id)s, %(member_id)s, %(now)s)

-- name: remove_member
update family_members set removed_at = %(now)s
where owner_id = %(owner_id)s and member_id = %(member_id)s and removed_at is null
returning member_id

-- name: grant_sponsorship
insert into sponsorships (user_id, sponsor, granted_at) values (%(user_id)s, %(sponsor)s, %(now)s)
returning id

-- name: revoke_sponsorship
update sponsorships set revoked_at = %(now)s
where id = %(id)s and revoked_at is null
returning user_id

-- name: subscription_owner
select user_id from subscriptions where id = %(id)s

-- name: current_for_update
select id, user_id, kind, status, started_at, expires_at, access_key
from subscriptions
where user_id = %(user_id)s and status in ('pending', 'active', 'grace', 'cancelled')
for update

-- name: plan
select code, period_days, price, currency from plans where code = %(code)s

-- name: convert_trial
update subscriptions set status = 'expired', ended_at = %(now)s, access_key = null
where id = %(id)s

-- name: new_paid
insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, auto_renew,
                           access_key)
values (%(user_id)s, 'paid', %(status)s, %(plan)s, %(now)s, %(expires_at)s, true, %(key)s)
returning id

-- name: extend
update subscriptions
set expires_at = expires_at + %(period)s,
    status = case when status = 'grace' then 'active' else status end
where id = %(id)s
returning status, expires_at

-- name: refundable
-- §3a's refund: every plan payment whose period starts after now, plus the one
-- whose period contains now. A purchase payment from before migration 0004
-- has no recorded period and is not counted (0004 gave renewals theirs).
select coalesce(sum(amount), 0) as refundable from payments
where subscription_id = %(id)s and kind in ('purchase', 'renewal')
  and (period_start > %(now)s or (period_start <= %(now)s and %(now)s < period_end))

-- name: paid_for
select coalesce(sum(amount), 0) as paid from payments
where subscription_id = %(id)s and kind in ('purchase', 'renewal')

-- name: plan_currency
select p.currency from subscriptions s join plans p on p.code = s.plan_code where s.id = %(id)s
