-- name: user_subscriptions
-- start_trial's check: the user's Telegram id, an earlier trial (any status) or a current
-- subscription.
select (select telegram_id from users where id = %(user_id)s) as telegram_id,
       bool_or(kind = 'trial') as had_trial,
       bool_or(status in ('pending', 'active', 'grace', 'cancelled')) as has_current
from subscriptions where user_id = %(user_id)s

-- name: new_trial
insert into subscriptions (user_id, kind, status, started_at, expires_at, access_key,
                           activation_sent_at)
values (%(user_id)s, 'trial', 'pending', %(now)s, %(expires_at)s, %(key)s, %(now)s)
returning id

-- name: event
insert into subscription_events (subscription_id, user_id, type, created_at)
values (%(subscription_id)s, %(user_id)s, %(type)s, %(now)s)

-- name: lock_for_activation
-- A row another worker holds is skipped, never waited for (the caller retries later).
select id, user_id, kind, status, access_key, activation_lease_until, activation_lease_owner
from subscriptions where id = %(id)s
for update skip locked

-- name: subscription_exists
select status from subscriptions where id = %(id)s

-- name: take_lease
update subscriptions
set access_key = %(key)s, activation_lease_until = %(until)s, activation_lease_owner = %(owner)s
where id = %(id)s

-- name: lock_subscription
select id, user_id, kind, status, access_key, activation_lease_owner
from subscriptions where id = %(id)s
for update

-- name: mark_active
-- Only from pending, and only for the lease holder: a row that expired meanwhile, or
-- whose lease ran out and was taken by another worker, is left alone.
update subscriptions
set status = 'active', activation_lease_until = null, activation_lease_owner = null
where id = %(id)s and status = 'pending' and activation_lease_owner = %(owner)s
returning id

-- name: release_lease
update subscriptions set activation_lease_until = null, activation_lease_owner = null
where id = %(id)s and activation_lease_owner = %(owner)s

-- name: key_is_current
select id, status from subscriptions
where access_key = %(key)s and status in ('pending', 'active', 'grace', 'cancelled')

-- name: lost_activations
-- Pending rows whose last send of activate_subscription is older than the whole retry
-- span (no message for them can still be retrying) and not yet past the activation
-- deadline (fast expiry ends those), keyset by id.
select id from subscriptions
where status = 'pending' and id > %(after)s
  and coalesce(activation_sent_at, started_at) <= %(sent_before)s
  and (kind = 'trial' or started_at + %(activation_deadline)s > %(now)s)
  and (kind = 'paid' or expires_at > %(now)s)
  and (activation_lease_until is null or activation_lease_until <= %(now)s)
order by id limit %(limit)s

-- name: mark_sent
update subscriptions set activation_sent_at = %(now)s
where id = %(id)s and status = 'pending'
returning id
