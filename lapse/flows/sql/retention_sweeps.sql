-- name: lapsed_between
-- Users for whom some entitlement source ended in (start, end], or whose
-- subscription changed in that range, and the members of such users'
-- families. Over-inclusive on purpose: the tagging actor decides (R2).
with ended as (
    select user_id from subscriptions
    where expires_at > %(start)s and expires_at <= %(end)s
      and status in ('pending', 'active', 'cancelled')
    union all
    -- billing grace ends: a grace row, or an auto-renewing active one never moved to grace
    select user_id from subscriptions
    where (status = 'grace' or (status = 'active' and auto_renew))
      and expires_at > %(start)s - %(grace)s and expires_at <= %(end)s - %(grace)s
    union all
    select user_id from subscriptions
    where kind = 'paid' and ended_at > %(start)s - interval '7 days'
      and ended_at <= %(end)s - interval '7 days'
    union all
    select user_id from subscription_events where created_at > %(start)s and created_at <= %(end)s
    union all
    select user_id from subscription_events
    where type in ('expired', 'cancelled') and created_at > %(start)s - interval '7 days'
      and created_at <= %(end)s - interval '7 days'
    union all
    select member_id from family_members where removed_at > %(start)s and removed_at <= %(end)s
    union all
    select user_id from sponsorships where revoked_at > %(start)s and revoked_at <= %(end)s
), affected as (
    select user_id from ended
    union all
    select m.member_id from family_members m where m.owner_id in (select user_id from ended)
)
select distinct user_id from affected
where user_id > %(after)s
order by user_id limit %(limit)s

-- name: users_with_audio
select distinct user_id from recordings
where has_audio and not is_deleted and user_id > %(after)s
order by user_id limit %(limit)s

-- name: users_tagged
select distinct user_id from recordings
where deletion_tagged_at is not null and audio_purged_at is null and user_id > %(after)s
order by user_id limit %(limit)s

-- name: users_with_pending_batches
select distinct user_id from tagging_batches
where state = 'pending' and user_id > %(after)s
order by user_id limit %(limit)s

-- name: users_to_purge
select distinct user_id from recordings
where deletion_tagged_at is not null and audio_purged_at is null
  and deletion_tagged_at <= %(cutoff)s and user_id > %(after)s
order by user_id limit %(limit)s

-- name: lapsed_and_settled
-- Of the given users, those without retention at now whose retention ended
-- before the settle cut-off.
select u.user_id from unnest(%(users)s::bigint[]) as u(user_id)
where not retention_holds(u.user_id, %(now)s, %(grace)s)
  and retention_end(u.user_id, %(now)s, %(grace)s) <= %(settled)s

-- name: entitled
select u.user_id from unnest(%(users)s::bigint[]) as u(user_id)
where retention_holds(u.user_id, %(now)s, %(grace)s)

-- name: watermark
select watermark from sweep_state where sweep = %(sweep)s

-- name: save_watermark
insert into sweep_state (sweep, watermark, updated_at) values (%(sweep)s, %(watermark)s, %(now)s)
on conflict (sweep) do update set watermark = excluded.watermark, updated_at = excluded.updated_at
