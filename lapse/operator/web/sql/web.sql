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
select count(*) as count, max(id) as max_id,
       encode(sha256(convert_to(coalesce(string_agg(id::text, ',' order by id), ''), 'UTF8')),
              'hex') as digest
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
-- Per sweep of the table: its last run, whatever its outcome, and its last success
-- (completed, or continued with a cursor), as lapse status counts it.
select s.sweep, last.id, last.status, last.started_at, last.finished_at, last.error,
       last.counts, last.finished_at - last.started_at as duration,
       (select max(r.finished_at) from sweep_runs r
        where r.sweep = s.sweep and r.status in ('completed', 'continued') and not r.dry_run
          and r.finished_at <= %(now)s) as last_success
from unnest(%(sweeps)s::text[]) as s (sweep)
left join lateral (
    select * from sweep_runs r
    where r.sweep = s.sweep and not r.dry_run and r.started_at <= %(now)s
    order by r.started_at desc, r.id desc limit 1
) last on true

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

-- name: lock_open_dead_letter
-- Taken before each row of a bulk action, re-checked under the lock: two
-- confirmations of the same dry run never requeue (send) or purge a row twice.
select id from dead_letters where id = %(id)s and requeued_at is null for update
