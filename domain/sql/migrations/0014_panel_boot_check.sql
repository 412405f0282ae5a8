-- Each worker checks the enabled panels when it starts (SPEC §6 panel facts). With many worker
-- processes starting together, one of them per deployment checks a panel: the others would each
-- send a login, and five refused logins lock the address out for 15 minutes.
alter table panels add column if not exists boot_checked_at timestamptz;
