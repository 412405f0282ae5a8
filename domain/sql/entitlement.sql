-- name: access
select access_holds(%(user_id)s, %(now)s, %(grace)s) as holds

-- name: retention
select retention_holds(%(user_id)s, %(now)s, %(grace)s) as holds

-- name: retention_end
select retention_end(%(user_id)s, %(now)s, %(grace)s) as retention_end

-- name: windows
select policy, source, ref_id, valid_from, valid_until
from entitlement_windows(%(grace)s)
where user_id = %(user_id)s
order by policy, valid_from, source, ref_id
