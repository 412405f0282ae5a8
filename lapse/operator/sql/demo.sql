-- name: plans
insert into plans (code, period_days, price, currency) values
    ('week', 7, 150, 'USD'), ('month', 30, 500, 'USD')
on conflict do nothing

-- name: user
insert into users (telegram_id, language, referred_by, created_at)
values (%(telegram_id)s, %(language)s, %(referred_by)s, %(now)s)
returning id

-- name: purchase
-- The bot's side of a sale: a pending purchase that a provider's payment finalizes (M2).
insert into purchases (user_id, kind, plan_code, amount, currency, provider, status, created_at)
values (%(user_id)s, %(kind)s, %(plan_code)s, %(amount)s, %(currency)s, %(provider)s, 'pending',
        %(now)s)
returning id

-- name: set_invoice
update purchases set provider_invoice_id = %(invoice_id)s where id = %(id)s

-- name: invoice_not_created
update purchases set status = 'failed' where id = %(id)s and status = 'pending'

-- name: current_subscription
select id, kind, status, expires_at from subscriptions
where user_id = %(user_id)s and status in ('pending', 'active', 'grace', 'cancelled')

-- name: current_membership
select owner_id from family_members
where member_id = %(member_id)s and removed_at is null

-- name: is_owner_or_member
select exists (select 1 from family_members
               where removed_at is null
                 and (member_id = %(user_id)s or owner_id = %(user_id)s)) as busy

-- name: active_sponsorship
select id from sponsorships where user_id = %(user_id)s and revoked_at is null
order by id desc limit 1

-- name: summary
-- The numbers of the demo's summary table (and --json): all from the database.
select
  (select count(*) from users) as users,
  (select count(*) from subscriptions where kind = 'trial') as trials,
  (select count(*) from subscription_events where type = 'converted') as trials_converted,
  (select count(*) from subscriptions where kind = 'trial' and status = 'expired'
     and not exists (select 1 from subscription_events e
                     where e.subscription_id = subscriptions.id and e.type = 'converted'))
     as trials_expired,
  (select count(*) from subscriptions where kind = 'paid') as paid_subscriptions,
  (select count(*) from purchases where kind = 'plan' and status = 'paid') as plans_bought,
  (select count(*) from purchases where kind = 'plan' and status = 'paid' and provider = 'balance')
     as plans_by_balance,
  (select count(*) from purchases where kind = 'plan' and status = 'paid' and provider = 'crypto')
     as plans_by_crypto,
  (select count(*) from purchases where kind = 'plan' and status = 'paid' and provider = 'telegram')
     as plans_in_app,
  (select count(*) from purchases where kind = 'topup' and status = 'paid') as topups,
  (select count(*) from purchases where provider = 'crypto' and status = 'expired')
     as crypto_invoices_expired,
  (select count(*) from purchases where status = 'failed') as purchases_failed,
  (select count(*) from payments where kind = 'renewal') as renewals,
  (select count(*) from notifications where kind = 'renewal_failed') as renewals_failed,
  (select count(*) from subscription_events where type = 'cancelled') as cancellations,
  (select count(*) from subscription_events where type = 'refunded') as refunds,
  (select coalesce(sum(amount), 0) from balance_ledger where reason = 'refund') as refunded_amount,
  (select count(*) from balance_ledger where reason = 'referral') as referral_rewards,
  (select count(*) from subscriptions where status = 'active') as active_now,
  (select count(*) from subscriptions where status = 'grace') as in_grace_now,
  (select count(*) from subscriptions where status = 'cancelled') as cancelled_now,
  (select count(*) from subscriptions where status = 'pending') as pending_now,
  (select count(*) from subscriptions where status = 'expired') as expired,
  (select count(*) from family_members) as family_members_added,
  (select count(*) from family_members where removed_at is not null) as family_members_removed,
  (select count(*) from sponsorships) as sponsorships_granted,
  (select count(*) from sponsorships where revoked_at is not null) as sponsorships_revoked,
  (select count(*) from recordings) as sessions,
  (select count(*) from recordings where audio_key is null) as sessions_refused_by_gate,
  (select count(*) from recordings where has_audio) as recordings_kept,
  (select count(*) from recordings where deletion_tagged_at is not null
     and audio_purged_at is null and not has_audio) as recordings_tagged,
  (select count(*) from recordings where audio_purged_at is not null) as recordings_purged,
  (select coalesce(sum(balance), 0) from users) as balances_total,
  (select count(*) from users where balance = 0
     and exists (select 1 from payments p where p.user_id = users.id and p.kind = 'renewal'))
     as renewers_run_dry,
  (select count(*) from dead_letters) as dead_letters

-- name: panel_clients_by_state
select state, count(*) as n from panel_clients group by state order by state

-- name: notifications_by_kind
select kind, status, count(*) as n from notifications group by kind, status order by kind, status
