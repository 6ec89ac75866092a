-- Credits are money: requests are created and decided only here, each call gated
-- (session, rate limit), audited, and counted (smsao.count_call / count_failure: the
-- counters survive the rollback of a refused or failed call).

create or replace function public.request_credits(amount integer) returns uuid
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('amount', amount);
  uid     uuid := smsao.caller_id();
  new_id  uuid;
begin
  perform smsao.count_call('request_credits');
  -- Arguments first: a malformed call writes nothing, not even a rate-limit attempt.
  if amount is null or amount not between 1 and 1000000 then
    raise exception 'amount must be between 1 and 1000000 credits, got %', coalesce(amount::text, 'NULL')
      using errcode = '22023';
  end if;
  if uid is null then
    perform smsao.refuse('request_credits', args, 'denied', '42501',
      'request_credits is for signed-in users: call it with a user''s token');
  end if;
  perform smsao.guard_critical('request_credits', 'financial_transaction', args);

  insert into public.credit_requests (user_id, amount) values (uid, amount) returning id into new_id;
  perform smsao.audit_call('request_credits', args || pg_catalog.jsonb_build_object('request_id', new_id), 'ok', started);
  return new_id;
exception when others then
  perform smsao.count_failure('request_credits', sqlstate);
  raise;
end
$$;
revoke all on function public.request_credits(integer) from public, anon, authenticated, service_role;
grant execute on function public.request_credits(integer) to authenticated;

-- Moves a pending request to `decision`, or raises: 22023 unknown request, 42501 the
-- caller's own request (an admin never decides their own), 55000 already decided. The row
-- lock taken by the UPDATE serialises concurrent deciders; the loser finds the request no
-- longer pending.
create or replace function smsao.decide_credit_request(request_id uuid, decision text, reason text)
  returns public.credit_requests
  language plpgsql
  set search_path = ''
as $$
declare
  decider uuid := smsao.caller_id();
  decided public.credit_requests;
  found_request public.credit_requests;
begin
  update public.credit_requests r
  set status = decision, reason = coalesce(decide_credit_request.reason, r.reason),
      processed_at = pg_catalog.now(), processed_by = decider
  where r.id = request_id and r.status = 'pending' and r.user_id is distinct from decider
  returning r.* into decided;
  if found then
    return decided;
  end if;
  select r.* into found_request from public.credit_requests r where r.id = request_id;
  if found_request.id is null then
    raise exception 'request_id: no credit request %', request_id using errcode = '22023';
  end if;
  if found_request.user_id = decider then
    perform smsao.refuse(case decision when 'approved' then 'approve_credit_request' else 'reject_credit_request' end,
      pg_catalog.jsonb_build_object('request_id', request_id), 'denied', '42501',
      'an admin cannot approve or reject their own credit request: another admin must decide it');
  end if;
  raise exception 'credit request % is already %', request_id, found_request.status
    using errcode = '55000', hint = 'only pending requests can be approved or rejected';
end
$$;
revoke all on function smsao.decide_credit_request(uuid, text, text) from public, anon, authenticated, service_role;

-- The admin gate: a valid session as an active admin (or the trusted backend), then
-- the admin_access rate limit.
create or replace function smsao.guard_admin(function_name text, arguments jsonb) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.guard_critical(function_name, 'admin_access', arguments);
  if smsao.caller_role() <> 'service_role' and not smsao.is_admin() then
    perform smsao.refuse(function_name, arguments, 'denied', '42501',
      function_name || ' is for admins only');
  end if;
end
$$;
revoke all on function smsao.guard_admin(text, jsonb) from public, anon, authenticated, service_role;

create or replace function public.approve_credit_request(request_id uuid) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id);
  req     public.credit_requests;
  credits_after integer;
begin
  perform smsao.count_call('approve_credit_request');
  if request_id is null then
    raise exception 'request_id must not be NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('approve_credit_request', args);

  req := smsao.decide_credit_request(request_id, 'approved', null);
  -- credit_request_id is unique: the credits of one request enter the ledger once.
  insert into public.credit_transactions (user_id, amount, kind, credit_request_id)
  values (req.user_id, req.amount, 'credit_request', req.id);
  -- The ledger's trigger updated the balance and holds the profile's row lock until commit:
  -- the balance read now is the one this approval produced.
  select p.credits into credits_after from public.profiles p where p.user_id = req.user_id;

  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'approve_credit_request', 'credit_requests', req.id::text,
          pg_catalog.jsonb_build_object('status', 'pending', 'credits', credits_after - req.amount),
          pg_catalog.jsonb_build_object('status', 'approved', 'credits', credits_after,
                                        'user_id', req.user_id, 'amount', req.amount));
  perform smsao.audit_call('approve_credit_request', args, 'ok', started);
exception when others then
  perform smsao.count_failure('approve_credit_request', sqlstate);
  raise;
end
$$;
revoke all on function public.approve_credit_request(uuid) from public, anon, authenticated, service_role;
grant execute on function public.approve_credit_request(uuid) to authenticated, service_role;

create or replace function public.reject_credit_request(request_id uuid, reason text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id, 'reason', reason);
  req     public.credit_requests;
begin
  perform smsao.count_call('reject_credit_request');
  if request_id is null then
    raise exception 'request_id must not be NULL' using errcode = '22023';
  end if;
  if reason is null or pg_catalog.btrim(reason) = '' or pg_catalog.length(reason) > 500 then
    raise exception 'reason must be a non-empty text of at most 500 characters' using errcode = '22023';
  end if;
  perform smsao.guard_admin('reject_credit_request', args);

  req := smsao.decide_credit_request(request_id, 'rejected', pg_catalog.btrim(reason));
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'reject_credit_request', 'credit_requests', req.id::text,
          pg_catalog.jsonb_build_object('status', 'pending'),
          pg_catalog.jsonb_build_object('status', 'rejected', 'reason', req.reason));
  perform smsao.audit_call('reject_credit_request', args, 'ok', started);
exception when others then
  perform smsao.count_failure('reject_credit_request', sqlstate);
  raise;
end
$$;
revoke all on function public.reject_credit_request(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.reject_credit_request(uuid, text) to authenticated, service_role;
