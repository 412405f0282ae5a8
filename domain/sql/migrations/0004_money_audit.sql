-- Money audit (issue 9).

-- M1: the ledger is append-only. A changed or deleted row would break
-- balance = sum(ledger) without the deferred check noticing (it fires on
-- INSERT), so the database refuses both; a correction is a new row.
create function balance_ledger_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'balance_ledger is append-only: % of entry % refused', tg_op, old.id
        using errcode = '55000', constraint = 'balance_ledger_append_only';
end;
$$;
create trigger balance_ledger_append_only
    before update or delete on balance_ledger
    for each row execute function balance_ledger_append_only();

-- §3a: every plan payment records the period it pays for (a refund credits
-- the periods not yet used). period_start exists since 0001 (renewals);
-- period_end is new. Nullable: rows from before this migration and other
-- writers keep working. Renewal payments get theirs from the plan's period.
alter table payments add column period_end timestamptz;
update payments pay set period_end = pay.period_start + make_interval(days => pl.period_days)
from subscriptions s join plans pl on pl.code = s.plan_code
where pay.kind = 'renewal' and pay.period_end is null and s.id = pay.subscription_id;

-- M4: a crypto purchase stays watched for 3 days after it expired.
alter table purchases add column expired_at timestamptz;
update purchases set expired_at = created_at where status = 'expired' and expired_at is null;
