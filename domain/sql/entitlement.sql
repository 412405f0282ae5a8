-- name: access
select access_holds(%(user_id)s, %(now)s, %(grace)s) as holds

-- name: retention
select retention_holds(%(user_id)s, %(now)s, %(grace)s) as holds

-- name: retention_end
select retention_end(%(user_id)s, %(now)s, %(grace)s) as retention_end

-- name: windows
select policy, source, ref_id,
       nullif(valid_from, '-infinity') as valid_from,
       nullif(valid_until, 'infinity') as valid_until
from entitlement_windows(%(grace)s)
where user_id = %(user_id)s
order by policy, valid_from, source, ref_id
