-- name: beat
insert into worker_heartbeats (worker, hostname, pid, broker, queues, started_at, beat_at)
values (%(worker)s, %(hostname)s, %(pid)s, %(broker)s, %(queues)s, %(started_at)s, %(now)s)
on conflict (worker) do update
set beat_at = excluded.beat_at, queues = excluded.queues, broker = excluded.broker,
    started_at = excluded.started_at, stopped_at = null

-- name: stop_heartbeat
update worker_heartbeats set stopped_at = %(now)s, beat_at = %(now)s where worker = %(worker)s
