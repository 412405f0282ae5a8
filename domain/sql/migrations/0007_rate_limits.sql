-- Rate limits and pauses shared by every worker of the Postgres-broker variant (SPEC §6 N2).
-- A bucket's row holds its GCRA theoretical arrival time (the next send is due then); a
-- pause's row holds its end. Times come from the application clock, never SQL now().
create table rate_limits (
    key text primary key,
    not_before timestamptz
);
