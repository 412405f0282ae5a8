-- name: create
insert into broadcasts (template, texts, created_at)
values (%(template)s, %(texts)s, %(now)s)
returning id

-- name: lock
-- Serialises every change of one broadcast: start, cancel and each batch of the walk.
select * from broadcasts where id = %(id)s for update

-- name: get
select * from broadcasts where id = %(id)s

-- name: start
update broadcasts set status = 'running', started_at = %(now)s where id = %(id)s

-- name: cancel
update broadcasts set status = 'cancelled', cancelled_at = %(now)s where id = %(id)s

-- name: skip_unclaimed
-- Cancel stops every send not yet claimed; a claimed row finishes (its send may be under way).
update notifications
set status = 'skipped', last_error = 'broadcast cancelled', finished_at = %(now)s
where broadcast_id = %(id)s and status = 'pending'

-- name: queue_batch
-- The next users of the audience after the cursor, by keyset on users.id (never OFFSET):
-- no current subscription, a Telegram chat, not marked unreachable. One row each; the
-- payload names the broadcast (its text is read when the notice is sent) or its template.
with audience as (
    select u.id
    from users u
    where u.id > %(after)s
      and u.telegram_id is not null
      and u.unreachable_at is null
      and not exists (
          select 1 from subscriptions s
          where s.user_id = u.id and s.status in ('pending', 'active', 'grace', 'cancelled'))
    order by u.id
    limit %(limit)s
), queued as (
    insert into notifications (user_id, kind, idempotency_key, created_at, payload, broadcast_id)
    select a.id, 'broadcast', 'broadcast:' || %(id)s::bigint || ':user:' || a.id, %(now)s,
           jsonb_strip_nulls(jsonb_build_object('broadcast_id', %(id)s::bigint,
                                                'template', %(template)s::text)), %(id)s
    from audience a
    order by a.id
    on conflict do nothing
    returning id, user_id
)
select (select max(id) from audience) as last_user_id,
       (select count(*) from audience) as walked,
       coalesce((select array_agg(id order by user_id) from queued), '{}') as notification_ids

-- name: advance
update broadcasts
set cursor_user_id = %(cursor)s, queued = queued + %(queued)s,
    walked_at = case when %(walked)s then %(now)s else walked_at end
where id = %(id)s

-- name: outstanding
-- Rows of the broadcast still without an outcome (queued, claimed or waiting to retry).
select count(*) as n from notifications
where broadcast_id = %(id)s and status not in ('sent', 'failed', 'skipped', 'unknown')

-- name: finish
update broadcasts set status = 'done', finished_at = %(now)s where id = %(id)s

-- name: counts
select status, count(*) as n from notifications where broadcast_id = %(id)s group by status

-- name: audience_after
-- Audience users not yet walked (progress): the same filter as queue_batch.
select count(*) as n
from users u
where u.id > %(after)s
  and u.telegram_id is not null
  and u.unreachable_at is null
  and not exists (
      select 1 from subscriptions s
      where s.user_id = u.id and s.status in ('pending', 'active', 'grace', 'cancelled'))

-- name: list
select id, status, template, created_at, started_at, finished_at, queued
from broadcasts order by id desc limit %(limit)s

-- name: still_applies
-- The send-time re-check of one broadcast notice: the broadcast and the user, fresh.
select b.status,
       exists (select 1 from subscriptions s
               where s.user_id = %(user_id)s
                 and s.status in ('pending', 'active', 'grace', 'cancelled')) as has_current
from broadcasts b where b.id = %(id)s
