-- name: insert
-- A notice written by the transaction that causes it; the key makes a repeat a no-op.
insert into notifications (user_id, kind, idempotency_key, payload, created_at)
values (%(user_id)s, %(kind)s, %(key)s, %(payload)s, %(now)s)
on conflict (idempotency_key) do nothing
returning id

-- name: peek
-- What send_notification needs before it takes a rate token (no lock held).
select n.id, n.kind, n.status, n.next_attempt_at, u.telegram_id, u.unreachable_at
from notifications n join users u on u.id = n.user_id
where n.id = %(id)s

-- name: lock_for_claim
-- A row another worker is claiming is skipped, never waited for.
select n.id, n.user_id, n.kind, n.status, n.attempts, n.payload, n.created_at,
       u.telegram_id, u.language, u.unreachable_at, u.unreachable_reason
from notifications n join users u on u.id = n.user_id
where n.id = %(id)s
for update of n skip locked

-- name: exists
select status from notifications where id = %(id)s

-- name: claim
-- The row is locked (lock_for_claim) and was read `pending` by this transaction.
update notifications
set status = 'sending', claimed_at = %(now)s, attempts = attempts + 1, next_attempt_at = null
where id = %(id)s
returning attempts

-- name: finish
-- The outcome of one claim, only while that claim is the row's latest (attempts);
-- a late `sent` also replaces the `unknown` sweep_outbox gave the claim meanwhile.
update notifications
set status = %(status)s, finished_at = %(now)s, last_error = %(error)s,
    sent_at = case when %(status)s = 'sent' then %(now)s else sent_at end,
    telegram_message_id = coalesce(%(message_id)s, telegram_message_id)
where id = %(id)s and attempts = %(attempt)s
  and (status = 'sending' or (status = 'unknown' and %(status)s = 'sent'))
returning id

-- name: decide_unclaimed
-- A row the re-check closes before any claim (skipped, or failed: no template).
update notifications
set status = %(status)s, finished_at = %(now)s, last_error = %(error)s
where id = %(id)s and status = 'pending'

-- name: retry_later
update notifications
set status = 'pending', next_attempt_at = %(next_attempt_at)s, last_error = %(error)s
where id = %(id)s and attempts = %(attempt)s and status = 'sending'
returning id

-- name: release
update notifications
set status = 'pending', attempts = attempts - 1, next_attempt_at = %(next_attempt_at)s
where id = %(id)s and attempts = %(attempt)s and status = 'sending'
returning id

-- name: mark_unreachable
update users set unreachable_at = %(now)s, unreachable_reason = %(reason)s
where id = %(user_id)s and unreachable_at is null

-- name: clear_unreachable
update users set unreachable_at = null, unreachable_reason = null
where id = %(user_id)s and unreachable_at is not null
returning id

-- name: trial_has_ended_or_user_paid
-- A4's fresh check: the trial is no longer current, or ended, or the user has paid.
select s.kind <> 'trial' or s.status not in ('pending', 'active') or s.expires_at <= %(now)s
       or s.expires_at <> %(expires_at)s as trial_over,
       exists (select 1 from purchases p
               where p.user_id = s.user_id and p.kind = 'plan' and p.status = 'paid')
       or exists (select 1 from subscriptions o
                  where o.user_id = s.user_id and o.kind = 'paid'
                    and o.status in ('pending', 'active', 'grace', 'cancelled')) as has_paid
from subscriptions s where s.id = %(subscription_id)s

-- name: reminder_still_applies
-- A6's fresh check: the same period of a current paid row, still ending, and it will
-- not renew by itself (auto-renew off, cancelled, or a balance below the price).
select s.status in ('active', 'cancelled') and s.expires_at = %(expires_at)s
       and s.expires_at > %(now)s as same_period,
       (not s.auto_renew or s.status = 'cancelled' or u.balance < p.price) as will_not_renew
from subscriptions s join users u on u.id = s.user_id join plans p on p.code = s.plan_code
where s.id = %(subscription_id)s and s.kind = 'paid'

-- name: ending_trials
-- Trials (pending or active) ending within the longest notice offset, keyset by id.
select s.id, s.user_id, s.expires_at from subscriptions s
where s.kind = 'trial' and s.status in ('pending', 'active')
  and s.expires_at > %(now)s and s.expires_at <= %(now)s + %(within)s
  and s.id > %(after)s
order by s.id
limit %(limit)s

-- name: ending_without_renewal
-- Paid subscriptions ending within the longest reminder offset that will not renew by
-- themselves, keyset by id.
select s.id, s.user_id, s.expires_at, s.plan_code, p.price, p.currency
from subscriptions s join users u on u.id = s.user_id join plans p on p.code = s.plan_code
where s.kind = 'paid' and s.status in ('active', 'cancelled')
  and s.expires_at > %(now)s and s.expires_at <= %(now)s + %(within)s
  and (not s.auto_renew or s.status = 'cancelled' or u.balance < p.price)
  and s.id > %(after)s
order by s.id
limit %(limit)s

-- name: stale_claims
-- Claims older than twice the HTTP timeout with no outcome (the sender died or hung).
select id, kind from notifications
where status = 'sending' and claimed_at <= %(claimed_before)s and id > %(after)s
order by id
limit %(limit)s

-- name: lock_stale_claim
select id, kind, attempts from notifications
where id = %(id)s and status = 'sending' and claimed_at <= %(claimed_before)s
for update skip locked

-- name: reopen
update notifications
set status = 'pending', next_attempt_at = %(now)s,
    last_error = 'claim of attempt ' || attempts || ' ended with no outcome; sent again'
where id = %(id)s

-- name: close_claim
update notifications set status = %(status)s, finished_at = %(now)s, last_error = %(error)s
where id = %(id)s and status = 'sending'

-- name: give_up_unknown
update notifications
set status = 'unknown', finished_at = %(now)s,
    last_error = 'claim of attempt ' || attempts || ' ended with no outcome; never sent again'
where id = %(id)s

-- name: wait_in_line
-- Told to wait for its rate-limit slot: the row is due then, so sweep_outbox does not take it
-- for a lost message (a second message would take a second place in the line) before
-- the overdue margin past that slot.
update notifications set next_attempt_at = %(until)s
where id = %(id)s and status = 'pending'

-- name: overdue
-- Unclaimed rows whose message was lost: due for a while and still pending.
select id from notifications
where status = 'pending' and coalesce(next_attempt_at, created_at) <= %(due_before)s
  and id > %(after)s
order by id
limit %(limit)s

-- name: touch_overdue
-- Sent again now: the next re-send of this row is at least the overdue margin away.
update notifications set next_attempt_at = %(now)s
where id = %(id)s and status = 'pending' and coalesce(next_attempt_at, created_at) <= %(due_before)s
returning id

-- name: progress
select kind, status, count(*) as count from notifications group by kind, status order by 1, 2
