-- name: no_flush_wait
-- Losing this state in a crash is harmless: the commit does not wait for the WAL flush.
set local synchronous_commit = off;

-- name: lock_buckets
-- Creates missing rows and locks them in the given order (the overall bucket first, so
-- every sender queues on one row and two senders never lock a chat's row in reverse order);
-- reads the pause in the same round trip.
insert into rate_limits (key)
select key from unnest(%(keys)s::text[]) with ordinality as bucket(key, position)
order by position
on conflict (key) do update set not_before = rate_limits.not_before
returning key, not_before,
          (select pause.not_before from rate_limits as pause where pause.key = %(pause_key)s)
          as pause_until;

-- name: advance_buckets
update rate_limits as limits set not_before = bucket.not_before
from unnest(%(keys)s::text[], %(not_befores)s::timestamptz[]) as bucket(key, not_before)
where limits.key = bucket.key;

-- name: pause_until
select not_before from rate_limits where key = %(key)s;

-- name: extend_pause
insert into rate_limits (key, not_before) values (%(key)s, %(until)s)
on conflict (key) do update
set not_before = greatest(rate_limits.not_before, excluded.not_before);
