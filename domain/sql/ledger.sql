-- name: insert_entry
insert into balance_ledger (user_id, amount, reason, ref, created_at)
values (%(user_id)s, %(amount)s, %(reason)s, %(ref)s, %(now)s)
on conflict (user_id, reason, ref) do nothing
returning id

-- name: apply_to_balance
update users set balance = balance + %(amount)s
where id = %(user_id)s and balance + %(amount)s >= 0
returning balance

-- name: balance
select balance from users where id = %(user_id)s
