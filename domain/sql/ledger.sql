-- name: post
-- One statement: the balance moves only when it stays >= 0 and this
-- (user, reason, ref) was never posted; the ledger row is written only when
-- the balance moved. A refused entry changes nothing.
with moved as (
    update users set balance = balance + %(amount)s
    where id = %(user_id)s and balance + %(amount)s >= 0
      and not exists (select 1 from balance_ledger
                      where user_id = %(user_id)s and reason = %(reason)s and ref = %(ref)s)
    returning balance
), entry as (
    insert into balance_ledger (user_id, amount, reason, ref, created_at)
    select %(user_id)s, %(amount)s, %(reason)s, %(ref)s, %(now)s from moved
    returning id
)
select (select id from entry) as id, (select balance from moved) as balance

-- name: refusal
select u.balance,
       exists (select 1 from balance_ledger l
               where l.user_id = u.id and l.reason = %(reason)s and l.ref = %(ref)s) as posted
from users u where u.id = %(user_id)s
