-- name: crypto_to_watch
-- Pending crypto purchases, and those expired within the late window whose
-- invoice has no payment yet (a late payment is still credited, M2/M4).
select p.id, p.provider_invoice_id, p.created_at, p.status from purchases p
where p.provider = 'crypto' and p.id > %(after)s and p.provider_invoice_id is not null
  and (p.status = 'pending'
       or (p.status = 'expired'
           and coalesce(p.expired_at, p.created_at) > %(now)s - %(late_window)s
           and not exists (select 1 from payments pay
                           where pay.provider = 'crypto'
                             and pay.provider_payment_id = p.provider_invoice_id)))
order by p.id limit %(limit)s

-- name: expire_purchase
update purchases set status = 'expired', expired_at = %(now)s
where id = %(id)s and status = 'pending'

-- name: invoice_of
select provider_invoice_id from purchases where id = %(id)s
