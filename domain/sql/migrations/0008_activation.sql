-- Activation (SPEC §6 A1): the lease a worker holds on a pending row while it calls the
-- panels, and when activate_subscription was last sent for it.

-- activation_lease_until (0001) says until when the lease holds; activation_lease_owner
-- says whose it is, so a worker whose lease ran out (and was taken) never marks the
-- row active. activation_sent_at: the last send of activate_subscription (null: the
-- row's started_at, when the purchase or sign-up sent it); sweep_activations re-sends
-- a row still pending once that is older than the whole retry span.
alter table subscriptions
    add column activation_lease_owner uuid,
    add column activation_sent_at timestamptz;

create index subscriptions_pending on subscriptions (id) where status = 'pending';
