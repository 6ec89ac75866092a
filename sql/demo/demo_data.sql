-- Demo data for a newcomer: a few hundred users with contacts, campaigns, SMS logs
-- (some failed), pending credit requests and expired OTPs. Run by `smsao-db up --demo`
-- as the database owner, once (users are recognised by their @demo.smsao.ao address).
select setseed(0.42);

insert into auth.users (id, email, raw_user_meta_data, created_at)
select gen_random_uuid(),
       format('user%s@demo.smsao.ao', i),
       jsonb_build_object('full_name', format('Demo User %s', i)),
       now() - (random() * interval '365 days')
from generate_series(1, 300) i;

-- Profiles came from the trigger; give them phones and a few other statuses.
update public.profiles p
set phone = '+2449' || lpad((abs(hashtext(p.user_id::text)) % 100000000)::text, 8, '0'),
    status = case when random() < 0.03 then 'suspended' when random() < 0.03 then 'pending' else 'active' end
where p.email like '%@demo.smsao.ao';

insert into public.user_roles (user_id, role)
select user_id, 'admin' from public.profiles
where email in ('user1@demo.smsao.ao', 'user2@demo.smsao.ao')
on conflict do nothing;
update public.profiles set status = 'active' where email in ('user1@demo.smsao.ao', 'user2@demo.smsao.ao');

insert into public.sms_configurations (gateway_name, sender_id, is_active, credentials_secret_name)
values ('ombala', 'SMSAO', true, 'vault:ombala_api_key'),
       ('twilio', 'SMSAO', false, 'vault:twilio_api_key');

-- Approved purchases, through the ledger (which keeps profiles.credits).
with approved as (
  insert into public.credit_requests (user_id, amount, status, created_at, processed_at)
  select user_id, (1 + floor(random() * 20))::int * 100, 'approved',
         now() - interval '20 days', now() - interval '19 days'
  from public.profiles where email like '%@demo.smsao.ao'
  returning id, user_id, amount
)
insert into public.credit_transactions (user_id, amount, kind, credit_request_id)
select user_id, amount, 'credit_request', id from approved;

insert into public.credit_requests (user_id, amount, created_at)
select user_id, (1 + floor(random() * 10))::int * 500, now() - random() * interval '3 days'
from public.profiles where email like '%@demo.smsao.ao' and random() < 0.1;

insert into public.contacts (user_id, name, phone, email)
select p.user_id, format('Contacto %s', c),
       '+2449' || lpad((abs(hashtext(p.user_id::text || c)) % 100000000)::text, 8, '0'),
       case when random() < 0.5 then format('contacto%s@example.ao', c) end
from public.profiles p, generate_series(1, 8) c
where p.email like '%@demo.smsao.ao'
on conflict (user_id, phone) do nothing;

insert into public.campaigns (user_id, name, message, status, created_at)
select p.user_id, format('Campanha %s', k), 'Promoção de fim de semana: 20% de desconto!',
       (array['draft', 'completed', 'completed', 'sending'])[1 + floor(random() * 4)::int],
       now() - random() * interval '60 days'
from public.profiles p, generate_series(1, 2) k
where p.email like '%@demo.smsao.ao';

insert into public.sms_logs (user_id, campaign_id, recipient, message, status, error_message, created_at)
select c.user_id, c.id, ct.phone, c.message, s.status,
       case when s.status = 'failed' then 'gateway timeout' end,
       now() - random() * interval '7 days'
from public.campaigns c
join public.contacts ct on ct.user_id = c.user_id
cross join lateral (
  -- Refers to the outer row so it is drawn once per message, not once per query.
  select case when random() < 0.06 then 'failed' when random() < 0.8 then 'delivered' else 'sent' end as status
  where ct.id is not null
) s
where c.status <> 'draft';

insert into public.otp_codes (user_id, phone, code_hash, purpose, expires_at, created_at)
select p.user_id, p.phone, encode(sha256(gen_random_uuid()::text::bytea), 'hex'), 'login',
       now() - random() * interval '2 days', now() - interval '2 days'
from public.profiles p
where p.email like '%@demo.smsao.ao' and p.phone is not null and random() < 0.2;

insert into public.contact_import_jobs (user_id, status, file_name, total_rows, processed_rows, created_at, completed_at)
select user_id, 'completed', 'contactos.csv', 120, 120, now() - interval '45 days', now() - interval '45 days'
from public.profiles where email like '%@demo.smsao.ao' and random() < 0.1;
