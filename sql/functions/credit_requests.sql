-- Credits are money: requests are created and decided only here, each call gated
-- (session, rate limit) and audited.

create function public.request_credits(amount integer) returns uuid
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('amount', amount);
  uid     uuid := smsao.caller_id();
  new_id  uuid;
begin
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
end
$$;
revoke all on function public.request_credits(integer) from public;
grant execute on function public.request_credits(integer) to authenticated;

-- Moves a pending request to `decision`, or raises: 22023 unknown request, 55000 already
-- decided. The row lock taken by the UPDATE serialises concurrent deciders; the loser
-- finds the request no longer pending.
create function smsao.decide_credit_request(request_id uuid, decision text, reason text)
  returns public.credit_requests
  language plpgsql
  set search_path = ''
as $$
declare
  decided public.credit_requests;
  current_status text;
begin
  update public.credit_requests r
  set status = decision, reason = coalesce(decide_credit_request.reason, r.reason),
      processed_at = pg_catalog.now(), processed_by = smsao.caller_id()
  where r.id = request_id and r.status = 'pending'
  returning r.* into decided;
  if found then
    return decided;
  end if;
  select r.status into current_status from public.credit_requests r where r.id = request_id;
  if current_status is null then
    raise exception 'request_id: no credit request %', request_id using errcode = '22023';
  end if;
  raise exception 'credit request % is already %', request_id, current_status
    using errcode = '55000', hint = 'only pending requests can be approved or rejected';
end
$$;
revoke all on function smsao.decide_credit_request(uuid, text, text) from public;

-- The admin gate: a valid session as an active admin (or the trusted backend), then
-- the admin_access rate limit.
create function smsao.guard_admin(function_name text, arguments jsonb) returns void
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
revoke all on function smsao.guard_admin(text, jsonb) from public;

create function public.approve_credit_request(request_id uuid) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id);
  req     public.credit_requests;
  credits_before integer;
begin
  if request_id is null then
    raise exception 'request_id must not be NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('approve_credit_request', args);

  req := smsao.decide_credit_request(request_id, 'approved', null);
  select p.credits into credits_before from public.profiles p where p.user_id = req.user_id;
  -- credit_request_id is unique: the credits of one request enter the ledger once.
  insert into public.credit_transactions (user_id, amount, kind, credit_request_id)
  values (req.user_id, req.amount, 'credit_request', req.id);

  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'approve_credit_request', 'credit_requests', req.id::text,
          pg_catalog.jsonb_build_object('status', 'pending', 'credits', credits_before),
          pg_catalog.jsonb_build_object('status', 'approved', 'credits', credits_before + req.amount,
                                        'user_id', req.user_id, 'amount', req.amount));
  perform smsao.audit_call('approve_credit_request', args, 'ok', started);
end
$$;
revoke all on function public.approve_credit_request(uuid) from public;
grant execute on function public.approve_credit_request(uuid) to authenticated, service_role;

create function public.reject_credit_request(request_id uuid, reason text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id, 'reason', reason);
  req     public.credit_requests;
begin
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
end
$$;
revoke all on function public.reject_credit_request(uuid, text) from public;
grant execute on function public.reject_credit_request(uuid, text) to authenticated, service_role;
