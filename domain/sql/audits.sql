-- name: leaked_users
-- Users with a has_audio recite recording and no retention at now (a leak, SPEC §3).
select u.user_id, u.recordings, retention_end(u.user_id, %(now)s, %(grace)s) as retention_end,
       exists (select 1 from subscriptions s where s.user_id = u.user_id and s.kind = 'trial')
           as ever_trial,
       exists (select 1 from subscriptions s where s.user_id = u.user_id and s.kind = 'paid')
           as ever_paid,
       (select max(s.ended_at) from subscriptions s where s.user_id = u.user_id and s.kind = 'paid')
           as paid_ended_at,
       exists (select 1 from family_members f where f.member_id = u.user_id) as family,
       exists (select 1 from sponsorships g where g.user_id = u.user_id) as sponsorship
from (select user_id, count(*) as recordings from recordings
      where has_audio and kind = 'recite' and not is_deleted
      group by user_id) u
where not retention_holds(u.user_id, %(now)s, %(grace)s)
order by u.user_id

-- name: by_day
select (r.created_at at time zone 'UTC')::date as day,
       count(*) filter (where r.audio_key is not null) as new_with_audio,
       count(*) filter (where r.has_audio and not r.is_deleted
                        and r.user_id = any(%(leaked)s::bigint[])) as leaked
from recordings r
where r.kind = 'recite' and r.created_at >= %(since)s and r.created_at <= %(now)s
group by 1 order by 1

-- name: unapplied_batches
select id, user_id, action, cardinality(keys) as keys, created_at, attempts, last_error
from tagging_batches
where state = 'pending' and action in ('tag', 'purge')
order by created_at, id

-- name: pending_keys
select unnest(keys) as key, action from tagging_batches where state = 'pending'

-- name: recordings_sample
select id, user_id, audio_key, has_audio, deletion_tagged_at, audio_purged_at
from recordings where audio_key is not null and not is_deleted
order by random() limit %(sample)s

-- name: recordings_page
select id, user_id, audio_key, has_audio, deletion_tagged_at, audio_purged_at
from recordings where audio_key is not null and not is_deleted and id > %(after)s
order by id limit %(limit)s
