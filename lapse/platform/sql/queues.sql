-- name: postgres_queue_stats
-- dramatiq-postgres keeps delayed messages under '<queue>.DQ' and dead ones as
-- state 'rejected'; the message's own timestamp is its enqueue time.
select regexp_replace(queue_name, '\.(DQ|XQ)$', '') as queue,
       case when state = 'rejected' then 'dead'
            when right(queue_name, 3) = '.DQ' then 'delayed'
            else 'ready' end as kind,
       count(*) as depth,
       min(case when state = 'rejected' then (extract(epoch from mtime) * 1000)::bigint
                else (message ->> 'message_timestamp')::bigint end) as oldest_ms
from dramatiq.queue
group by 1, 2
