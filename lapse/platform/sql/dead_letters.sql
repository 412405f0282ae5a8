-- name: archive
insert into dead_letters (message_id, broker, queue_name, actor_name, args, kwargs, options,
                          user_id, subscription_id, purchase_id, reason, exception, traceback,
                          raw_body, first_failed_at, last_failed_at)
values (%(message_id)s, %(broker)s, %(queue_name)s, %(actor_name)s, %(args)s, %(kwargs)s,
        %(options)s, %(user_id)s, %(subscription_id)s, %(purchase_id)s, %(reason)s,
        %(exception)s, %(traceback)s, %(raw_body)s, %(now)s, %(now)s)
on conflict (message_id) do update
set failures = dead_letters.failures + 1,
    last_failed_at = excluded.last_failed_at,
    reason = excluded.reason,
    exception = excluded.exception,
    traceback = excluded.traceback,
    options = excluded.options,
    broker = excluded.broker,
    queue_name = excluded.queue_name,
    requeued_at = null

-- name: list
select id, message_id, broker, queue_name, actor_name, args, kwargs, user_id, subscription_id,
       purchase_id, reason, exception, failures, first_failed_at, last_failed_at, requeued_at
from dead_letters
where (%(queue)s::text is null or queue_name = %(queue)s or queue_name = %(queue)s || '.DQ')
  and (%(actor)s::text is null or actor_name = %(actor)s)
  and (%(user_id)s::bigint is null or user_id = %(user_id)s)
  and (%(include_requeued)s or requeued_at is null)
order by id
limit %(limit)s

-- name: get
select * from dead_letters where id = %(id)s

-- name: mark_requeued
update dead_letters set requeued_at = %(now)s where id = %(id)s

-- name: delete
delete from dead_letters where id = %(id)s

-- name: delete_postgres_copy
delete from dramatiq.queue where message_id = %(message_id)s::uuid and state = 'rejected'
