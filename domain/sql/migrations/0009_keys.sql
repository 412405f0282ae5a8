-- Key removal (SPEC §3a, §6 A2/A3): the event of a move to `expired` names the key
-- that ended, since the subscription row itself no longer holds it (expired ⇒
-- access_key is null). `lapse explain` reads it to show where that key still is
-- on each panel (`panel_clients`). Nullable: every other event has no key.
alter table subscription_events add column if not exists access_key uuid;

create index if not exists subscription_events_key on subscription_events (user_id, id)
    where access_key is not null;

-- panel_clients by key alone (the removal marks every panel's row of a key).
create index if not exists panel_clients_key on panel_clients (access_key);
