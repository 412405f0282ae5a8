-- name: sweep_runs
-- Per sweep: its last successful run (completed, or continued with a cursor)
-- and its last finished run, whatever the outcome.
select s.sweep,
       (select max(r.finished_at) from sweep_runs r
        where r.sweep = s.sweep and r.status in ('completed', 'continued') and not r.dry_run
          and r.finished_at <= %(now)s) as last_success,
       last.status as last_status, last.error as last_error, last.finished_at as last_finished_at
from unnest(%(sweeps)s::text[]) as s (sweep)
left join lateral (
    select r.status, r.error, r.finished_at from sweep_runs r
    where r.sweep = s.sweep and r.status <> 'running' and not r.dry_run
      and r.finished_at <= %(now)s
    order by r.finished_at desc, r.id desc limit 1
) last on true
order by s.sweep

-- name: dead_letter_counts
select count(*) filter (where requeued_at is null) as open,
       count(*) filter (where requeued_at is null and last_failed_at >= %(since)s
                        and last_failed_at <= %(now)s) as new
from dead_letters

-- name: new_dead_letters_by_actor
select coalesce(actor_name, '(undecodable)') as actor, queue_name as queue, reason,
       count(*) as count, max(last_failed_at) as last_failed_at
from dead_letters
where requeued_at is null and last_failed_at >= %(since)s and last_failed_at <= %(now)s
group by 1, 2, 3
order by count(*) desc, 1
limit 20

-- name: workers
-- Running workers, and those that stopped within the last day.
select worker, hostname, pid, broker, queues, started_at, beat_at, stopped_at
from worker_heartbeats
where stopped_at is null or stopped_at >= %(now)s - interval '1 day'
order by worker

-- name: breakers_not_closed
select b.port, b.worker, b.state, b.failures, b.changed_at, h.beat_at, h.stopped_at
from breaker_states b
left join worker_heartbeats h on h.worker = b.worker
where b.state <> 'closed'
order by b.port, b.worker

-- name: broadcasts_exist
select to_regclass('broadcasts') is not null as present

-- name: recent_broadcasts
-- The broadcasts table belongs to the broadcast feature; read it as JSON so
-- that this query does not depend on its column names.
select to_jsonb(b) as row from broadcasts b order by 1 desc limit 200
