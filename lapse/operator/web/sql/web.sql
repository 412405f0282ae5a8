-- The web console's reads (SPEC §7 Operator console) and its audit table.
-- Dead letters are filtered the same way everywhere: open ones only (not
-- requeued), by actor, queue (its dead queue too), user and error, where the
-- error is the exception's class: its text up to the first '(' or ':'.

-- name: dead_groups
with open as (
    select *, regexp_replace(coalesce(exception, reason), '[(:].*$', '', 's') as error
    from dead_letters where requeued_at is null
)
select error, count(*) as count, min(id) as first_id, max(id) as last_id,
       array_agg(distinct actor_name) filter (where actor_name is not null) as actors,
       min(first_failed_at) as first_failed_at, max(last_failed_at) as last_failed_at,
       (array_agg(exception order by id desc))[1] as sample
from open
where (%(actor)s::text is null or actor_name = %(actor)s)
  and (%(queue)s::text is null or queue_name = %(queue)s or queue_name = %(queue)s || '.DQ')
  and (%(user_id)s::bigint is null or user_id = %(user_id)s)
  and (%(error)s::text is null or error = %(error)s)
group by error
order by count(*) desc, error

-- name: dead_rows
with open as (
    select *, regexp_replace(coalesce(exception, reason), '[(:].*$', '', 's') as error
    from dead_letters where requeued_at is null
)
select id, message_id, broker, queue_name, actor_name, args, kwargs, user_id, subscription_id,
       purchase_id, reason, error, exception, failures, first_failed_at, last_failed_at
from open
where (%(actor)s::text is null or actor_name = %(actor)s)
  and (%(queue)s::text is null or queue_name = %(queue)s or queue_name = %(queue)s || '.DQ')
  and (%(user_id)s::bigint is null or user_id = %(user_id)s)
  and (%(error)s::text is null or error = %(error)s)
order by id desc
limit %(limit)s

-- name: dead_count
with open as (
    select *, regexp_replace(coalesce(exception, reason), '[(:].*$', '', 's') as error
    from dead_letters where requeued_at is null
)
select count(*) as count, max(id) as max_id
from open
where (%(actor)s::text is null or actor_name = %(actor)s)
  and (%(queue)s::text is null or queue_name = %(queue)s or queue_name = %(queue)s || '.DQ')
  and (%(user_id)s::bigint is null or user_id = %(user_id)s)
  and (%(error)s::text is null or error = %(error)s)

-- name: dead_ids_counted
with open as (
    select *, regexp_replace(coalesce(exception, reason), '[(:].*$', '', 's') as error
    from dead_letters where requeued_at is null
)
select id
from open
where (%(actor)s::text is null or actor_name = %(actor)s)
  and (%(queue)s::text is null or queue_name = %(queue)s or queue_name = %(queue)s || '.DQ')
  and (%(user_id)s::bigint is null or user_id = %(user_id)s)
  and (%(error)s::text is null or error = %(error)s)
  and id <= %(max_id)s
order by id

-- name: dead_facets
select array_agg(distinct actor_name) filter (where actor_name is not null) as actors,
       array_agg(distinct queue_name) filter (where queue_name is not null) as queues,
       count(*) as open,
       count(*) filter (where last_failed_at >= %(since)s) as new
from dead_letters where requeued_at is null

-- name: sweep_last_runs
select distinct on (sweep) sweep, id, status, started_at, finished_at, error, counts,
       finished_at - started_at as duration
from sweep_runs
order by sweep, started_at desc, id desc

-- name: sweep_last_success
select sweep, max(finished_at) as last_success
from sweep_runs where status in ('completed', 'continued')
group by sweep

-- name: sweep_history
select id, status, tick_minute, started_at, finished_at, finished_at - started_at as duration,
       counts, error
from sweep_runs
where sweep = %(sweep)s
order by started_at desc, id desc
limit %(limit)s

-- name: audit_insert
insert into web_audit (action, filter, counted, counted_max_id, acted_ids, outcome, detail, client,
                       created_at)
values (%(action)s, %(filter)s, %(counted)s, %(counted_max_id)s, %(acted_ids)s, %(outcome)s,
        %(detail)s, %(client)s, %(now)s)
returning id

-- name: audit_list
select id, action, filter, counted, counted_max_id, acted_ids, outcome, detail, client, created_at
from web_audit
order by id desc
limit %(limit)s

-- name: user_row
select id, telegram_id, language, balance, referred_by, created_at from users where id = %(user_id)s

-- name: user_timeline
with user_keys as (
    select access_key from subscriptions where user_id = %(user_id)s and access_key is not null
    union
    select access_key from subscription_events where user_id = %(user_id)s and access_key is not null
)
select * from (
    select created_at as at, 'subscription' as kind, 'subscription #' || id as ref,
           format('%%s %%s created: %%s, %%s .. %%s%%s', kind, coalesce(plan_code, ''), status,
                  started_at, expires_at, case when auto_renew then ', auto-renew' else '' end)
               as detail
    from subscriptions where user_id = %(user_id)s
    union all
    select created_at, 'event', 'subscription #' || subscription_id, type
    from subscription_events where user_id = %(user_id)s
    union all
    select created_at, 'payment', 'payment #' || id,
           format('%%s %%s %%s by %%s (%%s)', kind, amount, currency, provider, provider_payment_id)
    from payments where user_id = %(user_id)s
    union all
    select created_at, 'ledger', 'ledger #' || id, format('%%s %%s (%%s)', amount, reason, ref)
    from balance_ledger where user_id = %(user_id)s
    union all
    select created_at, 'notice', 'notification #' || id,
           format('%%s: %%s%%s', kind, status,
                  case when sent_at is null then '' else ', sent ' || sent_at end)
    from notifications where user_id = %(user_id)s
    union all
    select created_at, case action when 'untag' then 'restore' else action end, 'batch #' || id,
           format('%%s key(s), %%s%%s', cardinality(keys), state,
                  case when applied_at is null then '' else ', applied ' || applied_at end)
    from tagging_batches where user_id = %(user_id)s
    union all
    select pc.updated_at, 'panel client', p.name,
           format('key %%s %%s%%s', pc.access_key, pc.state,
                  case when pc.last_error is null then ''
                       else format(' (%%s attempts, last: %%s)', pc.attempts, pc.last_error) end)
    from panel_clients pc join panels p on p.id = pc.panel_id
    where pc.access_key in (select access_key from user_keys)
    union all
    select added_at, 'family', 'family #' || id,
           format('member %%s of owner %%s%%s', member_id, owner_id,
                  case when removed_at is null then '' else ', removed ' || removed_at end)
    from family_members where owner_id = %(user_id)s or member_id = %(user_id)s
    union all
    select granted_at, 'sponsorship', 'sponsorship #' || id,
           format('by %%s%%s', sponsor,
                  case when revoked_at is null then '' else ', revoked ' || revoked_at end)
    from sponsorships where user_id = %(user_id)s
) timeline
order by at desc, kind, ref
limit %(limit)s

-- name: daily_events
select (d at time zone 'UTC')::date as day,
       count(e.id) filter (where e.type = 'renewed') as renewals,
       count(e.id) filter (where e.type = 'grace') as renewal_failures,
       count(e.id) filter (where e.type = 'expired') as expiries,
       count(e.id) filter (where e.type = 'activated') as activations
from generate_series(%(first_day)s::date::timestamp at time zone 'UTC',
                     %(last_day)s::date::timestamp at time zone 'UTC', interval '1 day') d
left join subscription_events e
    on e.created_at >= d and e.created_at < d + interval '1 day'
   and e.type in ('renewed', 'grace', 'expired', 'activated')
group by d
order by d

-- name: daily_batches
select (d at time zone 'UTC')::date as day,
       count(b.id) filter (where b.action = 'tag') as tags,
       count(b.id) filter (where b.action = 'untag') as restores
from generate_series(%(first_day)s::date::timestamp at time zone 'UTC',
                     %(last_day)s::date::timestamp at time zone 'UTC', interval '1 day') d
left join tagging_batches b on b.created_at >= d and b.created_at < d + interval '1 day'
group by d
order by d

-- name: daily_dead_letters
select (d at time zone 'UTC')::date as day, count(x.id) as dead_letters
from generate_series(%(first_day)s::date::timestamp at time zone 'UTC',
                     %(last_day)s::date::timestamp at time zone 'UTC', interval '1 day') d
left join dead_letters x on x.first_failed_at >= d and x.first_failed_at < d + interval '1 day'
group by d
order by d
