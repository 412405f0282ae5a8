-- SPEC §3, written once. Every entitlement source is a window
-- [valid_from, valid_until) that does not depend on the evaluation time, so
-- a policy holds at t exactly when one of its windows contains t. Workers,
-- the session-create gate, the audits and `lapse explain` all read these.
--
-- access(u, t): a subscription (trial or paid) with started_at <= t and
--   active/cancelled with t < expires_at, or grace with t < expires_at + grace.
-- retention(u, t): access, or one of the retention-only sources below.

create function access_windows(p_grace interval)
returns table (user_id bigint, subscription_id bigint, kind text, valid_from timestamptz,
               valid_until timestamptz)
language sql stable parallel safe as $$
    select s.user_id, s.id, s.kind, s.started_at,
           case when s.status = 'grace' then s.expires_at + p_grace else s.expires_at end
    from subscriptions s
    where s.status in ('active', 'cancelled', 'grace')
$$;

create function entitlement_windows(p_grace interval)
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
    -- 4. an expired/cancelled event on a paid subscription less than 7 days before t
    select e.user_id, 'retention', 'paid_' || e.type || '_event', e.id, '-infinity'::timestamptz,
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
    -- 7. loyalty: a paid subscription started at least 2 years before t (permanent)
    select s.user_id, 'retention', 'loyalty', s.id, s.started_at + interval '2 years',
           'infinity'::timestamptz
    from subscriptions s
    where s.kind = 'paid'
$$;

create function access_holds(p_user bigint, p_at timestamptz, p_grace interval)
returns boolean language sql stable parallel safe as $$
    select exists (
        select 1 from access_windows(p_grace) a
        where a.user_id = p_user and a.valid_from <= p_at and p_at < a.valid_until)
$$;

create function retention_holds(p_user bigint, p_at timestamptz, p_grace interval)
returns boolean language sql stable parallel safe as $$
    select exists (
        select 1 from entitlement_windows(p_grace) w
        where w.user_id = p_user and w.valid_from <= p_at and p_at < w.valid_until)
$$;

-- The last moment retention held before p_at (p_at itself while it holds);
-- for a user never entitled, the creation of their first recording.
create function retention_end(p_user bigint, p_at timestamptz, p_grace interval)
returns timestamptz language sql stable parallel safe as $$
    select case
        when retention_holds(p_user, p_at, p_grace) then p_at
        else coalesce(
            (select max(w.valid_until) from entitlement_windows(p_grace) w
             where w.user_id = p_user and w.valid_from < w.valid_until
               and w.valid_until <= p_at),
            (select min(r.created_at) from recordings r where r.user_id = p_user))
    end
$$;
