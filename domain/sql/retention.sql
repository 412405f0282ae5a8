-- name: lock_user
select id from users where id = %(user_id)s for update

-- name: retention_state
select retention_holds(%(user_id)s, %(now)s, %(grace)s) as holds,
       retention_until(%(user_id)s, %(now)s, %(grace)s) as holds_until,
       retention_end(%(user_id)s, %(now)s, %(grace)s) as ended_at

-- name: insert_recording
insert into recordings (user_id, kind, has_audio, audio_key, created_at)
values (%(user_id)s, %(kind)s, %(has_audio)s, %(audio_key)s, %(now)s)
returning id

-- name: open_request
insert into tagging_requests (user_id, reason, requested_at)
values (%(user_id)s, %(reason)s, %(now)s)
on conflict (user_id) do nothing
returning user_id

-- name: close_request
delete from tagging_requests where user_id = %(user_id)s

-- name: tag_recordings
update recordings set has_audio = false, deletion_tagged_at = %(now)s
where user_id = %(user_id)s and has_audio and not is_deleted
returning audio_key

-- name: restore_recordings
update recordings set has_audio = true, deletion_tagged_at = null
where user_id = %(user_id)s and deletion_tagged_at is not null and audio_purged_at is null
  and not is_deleted and audio_key is not null
returning audio_key

-- name: purge_recordings
update recordings set audio_purged_at = %(now)s
where user_id = %(user_id)s and deletion_tagged_at is not null
  and deletion_tagged_at <= %(cutoff)s and audio_purged_at is null and audio_key is not null
returning audio_key

-- name: supersede_pending
update tagging_batches set state = 'superseded'
where user_id = %(user_id)s and state = 'pending' and action in ('tag', 'untag')

-- name: insert_batch
insert into tagging_batches (user_id, action, keys, created_at)
values (%(user_id)s, %(action)s, %(keys)s, %(now)s)
returning id

-- name: next_pending_batch
select id, user_id, action, keys, s3_job_id from tagging_batches
where user_id = %(user_id)s and state = 'pending'
order by id limit 1

-- name: latest_batch
select id, user_id, action, keys, s3_job_id from tagging_batches
where user_id = %(user_id)s and state <> 'superseded' and action in ('tag', 'untag')
order by id desc limit 1

-- name: batch_state
select state from tagging_batches where id = %(id)s

-- name: mark_applied
update tagging_batches
set state = 'applied', applied_at = %(now)s, missing_keys = %(missing)s,
    attempts = attempts + 1, last_error = null
where id = %(id)s and state = 'pending'
returning id

-- name: record_failure
update tagging_batches set attempts = attempts + 1, last_error = %(error)s
where id = %(id)s

-- name: record_job
update tagging_batches set s3_job_id = %(job_id)s where id = %(id)s and s3_job_id is null

-- name: clear_job
update tagging_batches set s3_job_id = null where id = %(id)s

-- name: recording_counts
select count(*) filter (where has_audio) as audio,
       count(*) filter (where deletion_tagged_at is not null and audio_purged_at is null) as tagged
from recordings where user_id = %(user_id)s
