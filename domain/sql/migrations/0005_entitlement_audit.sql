-- Issue 9, the entitlement audit: SPEC §3 as amended, and §3a's guard on `expired`.
--
-- access: an auto-renewing `active` paid row is in billing grace from its end,
--   before the renewal sweep moves it to `grace` (a failed renewal costs no access).
-- retention 4: an event counts from its own time on (created_at <= t), not before.
-- retention 7: loyalty only for a paid subscription that reached `active` and did
--   not end by a refund or revoke before its first period was over.
-- retention_end: a subscription that never reached `active` (a trial converted
--   while still `pending`, a paid row whose activation failed) gave no access,
--   so its end is not an end of retention.

-- Whether the row ever reached `active` (SPEC §3, loyalty; retention_end). Set
-- by the database whenever a row is written in a status that gives access, so
-- every writer (activation, conversion, the factories) keeps it without code.
alter table subscriptions add column reached_active boolean not null default false;

-- Existing rows: every row in a status that gives access, and every expired
-- row except the paid ones whose activation failed.
update subscriptions s set reached_active = true
where s.status in ('active', 'grace', 'cancelled')
   or (s.status = 'expired'
       and not exists (select 1 from subscription_events e
                       where e.subscription_id = s.id and e.type = 'activation_failed'));

create function subscriptions_mark_reached_active() returns trigger
language plpgsql as $$
begin
    if new.status in ('active', 'grace', 'cancelled') then
        new.reached_active := true;
    end if;
    return new;
end
$$;

create trigger subscriptions_reached_active
    before insert or update of status on subscriptions
    for each row execute function subscriptions_mark_reached_active();

-- §3a: nothing moves out of `expired`; a purchase after it makes a new row.
create function subscriptions_refuse_leaving_expired() returns trigger
language plpgsql as $$
begin
    raise exception 'subscription %: a move out of expired (to %) is refused (SPEC §3a)',
        old.id, new.status
        using errcode = 'check_violation', constraint = 'subscriptions_expired_is_final';
end
$$;

create trigger subscriptions_expired_is_final
    before update of status on subscriptions
    for each row when (old.status = 'expired' and new.status is distinct from 'expired')
    execute function subscriptions_refuse_leaving_expired();

create or replace function access_windows(p_grace interval)
returns table (user_id bigint, subscription_id bigint, kind text, valid_from timestamptz,
               valid_until timestamptz)
language sql stable parallel safe as $$
    select s.user_id, s.id, s.kind, s.started_at,
           case when s.kind = 'paid'
                     and (s.status = 'grace' or (s.status = 'active' and s.auto_renew))
                then s.expires_at + p_grace
                else s.expires_at end
    from subscriptions s
    where s.status in ('active', 'cancelled', 'grace')
$$;

-- Refunded or revoked before the first plan period was over: such a row never
-- earns loyalty (a later goodwill refund does not take it away).
create function ended_within_first_period(p_subscription bigint)
returns boolean language sql stable parallel safe as $$
    select exists (
        select 1 from subscription_events e
        join subscriptions s on s.id = e.subscription_id
        join plans p on p.code = s.plan_code
        where e.subscription_id = p_subscription and e.type in ('refunded', 'revoked')
          and e.created_at < s.started_at + p.period_days * interval '1 day')
$$;

create or replace function entitlement_windows(p_grace interval)
returns table (user_id bigint, policy text, source text, ref_id bigint,
               valid_from timestamptz, valid_until timestamptz)
language sql stable parallel safe as $$
    -- 1. access (trial or paid)
    select a.user_id, 'access', a.kind || '_subscription', a.subscription_id,
           a.valid_from, a.valid_until
    from access_windows(p_grace) a
    union all
    -- 2. paid, awaiting activation
    select s.user_id, 'retention', 'pending_paid', s.id, s.started_at, s.expires_at
    from subscriptions s
    where s.kind = 'paid' and s.status = 'pending'
    union all
    -- 3. retention grace: a paid subscription that ended less than 7 days before t
    select s.user_id, 'retention', 'paid_ended', s.id, '-infinity'::timestamptz,
           s.ended_at + interval '7 days'
    from subscriptions s
    where s.kind = 'paid' and s.ended_at is not null
    union all
    -- 4. an expired/cancelled event on a paid subscription, at or before t, less than 7 days before t
    select e.user_id, 'retention', 'paid_' || e.type || '_event', e.id, e.created_at,
           e.created_at + interval '7 days'
    from subscription_events e
    join subscriptions s on s.id = e.subscription_id
    where e.type in ('expired', 'cancelled') and s.kind = 'paid'
    union all
    -- 5. family member of an owner with paid access
    select m.member_id, 'retention', 'family', m.id,
           greatest(m.added_at, a.valid_from),
           least(coalesce(m.removed_at, 'infinity'::timestamptz), a.valid_until)
    from family_members m
    join access_windows(p_grace) a on a.user_id = m.owner_id and a.kind = 'paid'
    union all
    -- 6. sponsorship
    select g.user_id, 'retention', 'sponsorship', g.id, g.granted_at,
           coalesce(g.revoked_at, 'infinity'::timestamptz)
    from sponsorships g
    union all
    -- 7. loyalty: a paid subscription that reached active, started at least 2 years
    --    before t, not refunded or revoked within its first period (permanent)
    select s.user_id, 'retention', 'loyalty', s.id, s.started_at + interval '2 years',
           'infinity'::timestamptz
    from subscriptions s
    where s.kind = 'paid' and s.reached_active and not ended_within_first_period(s.id)
$$;

-- As in 0003, counting only the expired subscriptions that reached `active`:
-- a trial converted while `pending` (or a paid row whose activation failed)
-- gave no access, so its end is not where retention ended.
create or replace function retention_end(p_user bigint, p_at timestamptz, p_grace interval)
returns timestamptz language sql stable parallel safe as $$
    select case
        when retention_holds(p_user, p_at, p_grace) then p_at
        else coalesce(
            greatest(
                (select max(w.valid_until) from entitlement_windows(p_grace) w
                 where w.user_id = p_user and w.valid_from < w.valid_until
                   and w.valid_until <= p_at),
                (select max(s.ended_at) from subscriptions s
                 where s.user_id = p_user and s.status = 'expired' and s.reached_active
                   and s.ended_at > s.started_at and s.ended_at <= p_at),
                (select max(least(coalesce(m.removed_at, 'infinity'), s.ended_at))
                 from family_members m
                 join subscriptions s on s.user_id = m.owner_id and s.kind = 'paid'
                                     and s.status = 'expired' and s.reached_active
                 where m.member_id = p_user
                   and greatest(m.added_at, s.started_at) < least(coalesce(m.removed_at, 'infinity'), s.ended_at)
                   and least(coalesce(m.removed_at, 'infinity'), s.ended_at) <= p_at)),
            (select min(r.created_at) from recordings r where r.user_id = p_user))
    end
$$;
