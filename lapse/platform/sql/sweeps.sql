-- name: claim_tick
insert into sweep_ticks (sweep, minute, claimed_at)
values (%(sweep)s, %(minute)s, %(now)s)
on conflict (sweep, minute) do update set duplicates = sweep_ticks.duplicates + 1
returning (xmax = 0) as claimed

-- name: start_run
insert into sweep_runs (sweep, tick_minute, started_at, clock)
values (%(sweep)s, %(tick_minute)s, %(now)s, %(now)s)
on conflict do nothing
returning id

-- name: finish_run
update sweep_runs set status = %(status)s, finished_at = %(now)s, counts = %(counts)s
where id = %(id)s

-- name: fail_run
update sweep_runs set status = 'failed', finished_at = %(now)s, error = %(error)s
where id = %(id)s

-- name: daily_status
select
    exists (select 1 from sweep_runs
            where sweep = %(sweep)s and status = 'completed' and started_at >= %(slot)s)
        as completed_since_slot,
    exists (select 1 from sweep_runs
            where sweep = %(sweep)s and status = 'running' and started_at >= %(recent)s)
        as started_recently
