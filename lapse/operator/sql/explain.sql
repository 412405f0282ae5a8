-- name: timeline
-- The user's timeline for `lapse explain` and the console's user page: subscriptions,
-- events, payments, ledger, notices, tag and restore batches, panel clients (of every
-- key the user held), family and sponsorships; the newest `limit` entries, newest first.
with user_keys as (
    select access_key from subscriptions where user_id = %(user_id)s and access_key is not null
    union
    select access_key from subscription_events where user_id = %(user_id)s and access_key is not null
)
select * from (
    select created_at as at, 'subscription' as kind, 'subscription #' || id as ref,
           format('%%s %%s created: %%s, %%s .. %%s%%s', kind, coalesce(plan_code, ''), status,
                  started_at, expires_at, case when auto_renew then ', auto-renew' else '' end)
               as detail
    from subscriptions where user_id = %(user_id)s
    union all
    select created_at, 'event', 'subscription #' || subscription_id, type
    from subscription_events where user_id = %(user_id)s
    union all
    select created_at, 'payment', 'payment #' || id,
           format('%%s %%s %%s by %%s (%%s)', kind, amount, currency, provider, provider_payment_id)
    from payments where user_id = %(user_id)s
    union all
    select created_at, 'ledger', 'ledger #' || id, format('%%s %%s (%%s)', amount, reason, ref)
    from balance_ledger where user_id = %(user_id)s
    union all
    select created_at, 'notice', 'notification #' || id,
           format('%%s: %%s%%s', kind, status,
                  case when sent_at is null then '' else ', sent ' || sent_at end)
    from notifications where user_id = %(user_id)s
    union all
    select created_at, case action when 'untag' then 'restore' else action end, 'batch #' || id,
           format('%%s key(s), %%s%%s', cardinality(keys), state,
                  case when applied_at is null then '' else ', applied ' || applied_at end)
    from tagging_batches where user_id = %(user_id)s
    union all
    select pc.updated_at, 'panel client', p.name,
           format('key %%s %%s%%s', pc.access_key, pc.state,
                  case when pc.last_error is null then ''
                       else format(' (%%s attempts, last: %%s)', pc.attempts, pc.last_error) end)
    from panel_clients pc join panels p on p.id = pc.panel_id
    where pc.access_key in (select access_key from user_keys)
    union all
    select added_at, 'family', 'family #' || id,
           format('member %%s of owner %%s%%s', member_id, owner_id,
                  case when removed_at is null then '' else ', removed ' || removed_at end)
    from family_members where owner_id = %(user_id)s or member_id = %(user_id)s
    union all
    select granted_at, 'sponsorship', 'sponsorship #' || id,
           format('by %%s%%s', sponsor,
                  case when revoked_at is null then '' else ', revoked ' || revoked_at end)
    from sponsorships where user_id = %(user_id)s
) timeline
order by at desc, kind, ref
limit %(limit)s
