-- name: insert_panel
insert into panels (name, url, inbound_id, credentials_env, enabled, created_at)
values (%(name)s, %(url)s, %(inbound_id)s, %(credentials_env)s, true, %(now)s)
returning *

-- name: upsert_default_panel
-- The panel of LAPSE_PANEL_*: created on first use, its URL and inbound follow the
-- environment; enabled and the login-refused mark stay the operator's.
insert into panels (name, url, inbound_id, credentials_env, enabled, created_at)
values (%(name)s, %(url)s, %(inbound_id)s, %(credentials_env)s, true, %(now)s)
on conflict (name) do update
    set url = excluded.url, inbound_id = excluded.inbound_id,
        credentials_env = excluded.credentials_env, updated_at = %(now)s
    where (panels.url, panels.inbound_id, panels.credentials_env)
        is distinct from (excluded.url, excluded.inbound_id, excluded.credentials_env)
returning *

-- name: panel_by_name
select * from panels where name = %(name)s

-- name: panel_by_id
select * from panels where id = %(panel_id)s

-- name: list_panels
select * from panels
where enabled or not %(enabled_only)s
order by id

-- name: usable_panels
-- The panels to provision on: enabled, and not refusing Lapse's login.
select * from panels where enabled and login_refused_at is null order by id

-- name: set_enabled
update panels set enabled = %(enabled)s, updated_at = %(now)s
where name = %(name)s
returning *

-- name: claim_boot_check
-- One worker process per deployment checks a panel at start: the first to claim it within the
-- interval, and only while it is enabled and not marked as refusing the login.
update panels set boot_checked_at = %(now)s
where id = %(panel_id)s and enabled and login_refused_at is null
  and (boot_checked_at is null or boot_checked_at <= %(now)s - %(every)s)
returning id

-- name: mark_login_refused
-- First refusal time is kept: it says since when the panel has been refusing.
update panels
set login_refused_at = coalesce(login_refused_at, %(now)s), last_error = %(error)s,
    updated_at = %(now)s
where id = %(panel_id)s
returning *

-- name: clear_login_refused
update panels set login_refused_at = null, last_error = null, updated_at = %(now)s
where id = %(panel_id)s
returning *

-- name: record_client_state
-- attempts counts the failed tries since the state last changed.
insert into panel_clients (access_key, panel_id, state, attempts, last_error, updated_at)
values (%(access_key)s, %(panel_id)s, %(state)s,
        case when %(error)s::text is null then 0 else 1 end, %(error)s, %(now)s)
on conflict (access_key, panel_id) do update
    set state = excluded.state,
        attempts = case when %(error)s::text is null then 0
                        when panel_clients.state = excluded.state then panel_clients.attempts + 1
                        else 1 end,
        last_error = excluded.last_error,
        updated_at = excluded.updated_at
returning *

-- name: client_states
select pc.access_key, pc.panel_id, p.name as panel, pc.state, pc.attempts, pc.last_error,
       pc.updated_at
from panel_clients pc join panels p on p.id = pc.panel_id
where pc.access_key = %(access_key)s
order by pc.panel_id

-- name: client_counts
select panel_id, state, count(*) as clients from panel_clients group by panel_id, state
