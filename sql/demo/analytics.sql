-- 18 months of business history for `smsao-db up --demo` (issue 18), so that the Business
-- page and `smsao-db analytics report` show something real on a first look: a user base
-- that grows month after month and churns, purchases at a price that changed once (25 AOA
-- a credit, 30 AOA for the last 7 months), a few refunds, acquisition spend per channel,
-- SMS sent by the users who stay, and custom events for the funnel. Run once, as the
-- database owner, after demo_data.sql (runner/demo.py skips it when spend exists already).
-- Everything goes through the product's triggers (milestones, day counts, month marks),
-- except the auth.users rows: their profiles are written here with their signup time.
select setseed(0.18);

do $$
declare
  first_month constant timestamptz := date_trunc('month', now(), 'UTC') - interval '17 months';
begin
  insert into public.credit_prices (valid_from, price_per_credit)
  values (first_month - interval '1 month', 25), (date_trunc('month', now(), 'UTC') - interval '6 months', 30);

  insert into public.acquisition_spend (month, channel, amount)
  select (first_month + make_interval(months => m))::date, c,
         round((300 + m * 60) * w * (0.8 + random() * 0.4))::numeric
  from generate_series(0, 17) m, (values ('facebook', 3.0), ('google', 2.0), ('radio', 1.0)) ch(c, w);

  -- Signups: 30 in the first month, growing ~12% a month.
  create temporary table demo_users on commit drop as
  select gen_random_uuid() as id, m as month,
         first_month + make_interval(months => m) + random() * interval '27 days' as signed_up
  from generate_series(0, 17) m, generate_series(1, (30 * power(1.12, m))::int) i;

  set local session_replication_role = replica;   -- the auth rows alone: their profiles follow
  insert into auth.users (id, email, created_at)
  select id, 'grow' || row_number() over (order by signed_up) || '@history.demo.smsao.ao', signed_up from demo_users;
  set local session_replication_role = origin;
  insert into public.profiles (user_id, email, created_at, phone)
  select id, 'grow' || row_number() over (order by signed_up) || '@history.demo.smsao.ao', signed_up,
         '+2449' || lpad((abs(hashtext(id::text)) % 100000000)::text, 8, '0')
  from demo_users;
  insert into public.user_roles (user_id, role) select id, 'user' from demo_users;

  -- Each user stays active for a while (70% stay each month), buying most months.
  create temporary table demo_active on commit drop as
  select u.id, u.signed_up, k,
         greatest(u.signed_up, first_month + make_interval(months => u.month + k)) + random() * interval '20 days' as at
  from demo_users u
  cross join lateral generate_series(0, 17 - u.month) k
  where k < 1 + floor(ln(1 - random()) / ln(0.7));

  insert into public.credit_requests (user_id, amount, status, created_at, processed_at)
  select a.id, (1 + floor(random() * 15))::int * 100, 'approved', a.at, a.at + interval '2 hours'
  from demo_active a where a.at + interval '2 hours' < now() and random() < 0.75;
  insert into public.credit_transactions (user_id, amount, kind, credit_request_id, created_at)
  select r.user_id, r.amount, 'credit_request', r.id, r.processed_at
  from public.credit_requests r join demo_users u on u.id = r.user_id;
  insert into public.credit_transactions (user_id, amount, kind, created_at)
  select r.user_id, -least(r.amount, 100), 'refund', r.processed_at + interval '3 days'
  from public.credit_requests r join demo_users u on u.id = r.user_id
  where random() < 0.03 and r.processed_at + interval '3 days' < now();

  insert into public.sms_logs (user_id, recipient, message, status, created_at)
  select a.id, '+2449' || lpad((abs(hashtext(a.id::text || n)) % 100000000)::text, 8, '0'), 'Olá!',
         case when random() < 0.05 then 'failed' else 'delivered' end, a.at + n * interval '1 day'
  from demo_active a, generate_series(1, 3) n where a.at + n * interval '1 day' < now();

  insert into public.campaigns (user_id, name, status, created_at)
  select a.id, 'Campanha ' || a.k, 'completed', a.at + interval '1 hour'
  from demo_active a where random() < 0.3 and a.at + interval '1 hour' < now();

  insert into public.business_events (user_id, event_name, properties, occurred_at)
  select u.id, e.name, jsonb_build_object('source', 'demo'), u.signed_up + e.after
  from demo_users u,
       (values ('opened_app', interval '10 minutes', 0.9), ('viewed_pricing', interval '1 day', 0.6),
               ('clicked_buy', interval '2 days', 0.4)) e(name, after, share)
  where random() < e.share and u.signed_up + e.after < now();
end
$$;
