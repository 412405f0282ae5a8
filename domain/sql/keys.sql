-- name: mark_removing
-- Every panel's row of an ended key: its removal is under way (SPEC §3a).
update panel_clients set state = 'removing', attempts = 0, last_error = null, updated_at = %(now)s
where access_key = %(access_key)s and state <> 'removed'

-- name: current_status
-- The status of the current subscription holding the key, if any.
select status from subscriptions
where access_key = %(access_key)s and status in ('pending', 'active', 'grace', 'cancelled')

-- name: removal_targets
-- In one read: whether the key is a current subscription's (current_status), and where an
-- ended key may be: every enabled panel, and every panel whose row of the key is not
-- `removed` (a disabled panel it was provisioned on). One row with a null panel when none.
select exists (select 1 from subscriptions
               where access_key = %(access_key)s
                 and status in ('pending', 'active', 'grace', 'cancelled')) as key_current,
       p.*
from (select) as one
left join panels p
  on p.enabled
  or exists (select 1 from panel_clients pc
             where pc.panel_id = p.id and pc.access_key = %(access_key)s and pc.state <> 'removed')
order by p.id

-- name: current_keys_page
-- The keys of current subscriptions, keyset by subscription id (reconcile reads them all).
select id, access_key::text as access_key, status from subscriptions
where id > %(after)s and access_key is not null
  and status in ('pending', 'active', 'grace', 'cancelled')
order by id limit %(limit)s

-- name: ended_keys
-- Keys the user's subscriptions held until they expired (newest first), from their events.
select e.access_key, e.type, e.created_at, e.subscription_id from subscription_events e
where e.user_id = %(user_id)s and e.access_key is not null
order by e.id desc limit %(limit)s

-- name: current_key
-- The user's current subscription and its key (none for a pending row without one).
select id, status, access_key from subscriptions
where user_id = %(user_id)s and access_key is not null
  and status in ('pending', 'active', 'grace', 'cancelled')
