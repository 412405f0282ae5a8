-- name: domain_counts
-- Lapse's domain counters, read from the database at scrape time: they count
-- the work of every worker and of `lapse sweep`, and survive restarts (the
-- rows are never deleted).
select
    (select count(*) from subscription_events where type = 'renewed') as renewals,
    (select count(*) from subscription_events where type = 'grace') as renewal_failures,
    (select count(*) from subscription_events where type = 'expired') as expiries,
    (select count(*) from subscription_events where type = 'activated') as activations,
    (select coalesce(sum(cardinality(keys)), 0) from tagging_batches
     where action = 'tag' and state = 'applied') as tagged_recordings,
    (select coalesce(sum(cardinality(keys)), 0) from tagging_batches
     where action = 'untag' and state = 'applied') as restored_recordings

-- name: notification_outcomes
select status as outcome, count(*) as count from notifications group by status order by status
