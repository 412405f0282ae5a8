-- name: record_transition
insert into breaker_transitions (port, worker, from_state, to_state, failures, at)
values (%(port)s, %(worker)s, %(from_state)s, %(to_state)s, %(failures)s, %(now)s)

-- name: upsert_state
insert into breaker_states (port, worker, state, failures, changed_at)
values (%(port)s, %(worker)s, %(to_state)s, %(failures)s, %(now)s)
on conflict (port, worker) do update
set state = excluded.state, failures = excluded.failures, changed_at = excluded.changed_at
where breaker_states.changed_at <= excluded.changed_at
