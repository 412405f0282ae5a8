-- name: plans
insert into plans (code, period_days, price, currency) values
    ('month', 30, 500, 'USD'), ('year', 365, 5000, 'USD')
on conflict do nothing

-- name: user
insert into users (telegram_id, created_at) values (%(telegram_id)s, %(created)s) returning id

-- name: subscription
insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, ended_at,
                           auto_renew, access_key)
values (%(user_id)s, %(kind)s, %(status)s, %(plan)s, %(start)s, %(end)s, %(ended)s, %(renew)s,
        %(key)s)

-- name: family
insert into family_members (owner_id, member_id, added_at) values (%(owner)s, %(member)s, %(added)s)

-- name: sponsorship
insert into sponsorships (user_id, sponsor, granted_at) values (%(user_id)s, 'demo', %(granted)s)

-- name: recording
insert into recordings (user_id, kind, has_audio, audio_key, created_at)
select %(user_id)s, 'recite', kept, case when kept then %(key)s end, %(created)s
from (select retention_holds(%(user_id)s, %(created)s, interval '72 hours') as kept) gate

-- name: stored_audio
select audio_key from recordings where has_audio

-- name: summary
select count(*) filter (where has_audio) as kept,
       count(*) filter (where deletion_tagged_at is not null and audio_purged_at is null) as tagged,
       count(*) filter (where audio_purged_at is not null) as purged,
       count(*) filter (where audio_key is null) as refused,
       (select count(*) from payments where kind = 'renewal') as renewals,
       (select count(*) from subscriptions where status = 'grace') as grace,
       (select count(*) from subscriptions where status = 'expired') as expired
from recordings
