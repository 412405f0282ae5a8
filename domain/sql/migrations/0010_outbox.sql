-- The outbox (SPEC §6 N1, N2): a notification is claimed (`sending`, claimed_at)
-- before it is sent, and ends `sent`, `failed` (permanent), `skipped` (no longer
-- applies, or the user cannot be reached) or `unknown` (an at-most-once notice
-- whose claim ended with no outcome: never sent again). A temporary failure
-- puts it back to `pending` with its next attempt. `claimed` (0001's name for
-- the claim) stays allowed so that older rows remain valid.
alter table notifications drop constraint notifications_status;
alter table notifications add constraint notifications_status check (
    status in ('pending', 'claimed', 'sending', 'sent', 'failed', 'skipped', 'unknown'));

alter table notifications add column if not exists next_attempt_at timestamptz;
alter table notifications add column if not exists telegram_message_id bigint;
alter table notifications add column if not exists finished_at timestamptz;

drop index if exists notifications_unsent;
-- sweep_outbox: overdue unclaimed rows and stale claims, keyset by id.
create index notifications_unsent on notifications (id)
    where status in ('pending', 'claimed', 'sending');
-- the trial-notice and reminder sweeps look a key up; progress by kind and status.
create index if not exists notifications_kind_status on notifications (kind, status);

-- N2: a user Telegram refused for good (blocked the bot, deactivated, chat not
-- found). Later notices to them are skipped until the mark is cleared
-- (domain.notifications.clear_unreachable, e.g. when they write to the bot).
alter table users add column if not exists unreachable_at timestamptz;
alter table users add column if not exists unreachable_reason text;
