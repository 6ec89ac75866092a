-- The rate-limit key of the caller: the user id, or for anon the first address of
-- x-forwarded-for (the client, as the proxy saw it).
create function smsao.rate_limit_key() returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  uid uuid := smsao.request_uid();   -- smsao.caller_id(), without its auth.uid() call
  forwarded text;
begin
  if uid is not null then
    return 'user:' || uid::text;
  end if;
  if smsao.caller_role() = 'service_role' then
    return 'service:' || session_user;
  end if;
  begin
    forwarded := nullif(pg_catalog.current_setting('request.headers', true), '')::jsonb ->> 'x-forwarded-for';
  exception when invalid_text_representation then
    forwarded := null;
  end;
  return 'ip:' || coalesce(nullif(pg_catalog.btrim(pg_catalog.split_part(forwarded, ',', 1)), ''), 'unknown');
end
$$;
revoke all on function smsao.rate_limit_key() from public;

-- Exact sliding window: admits when fewer than max_attempts attempts were admitted in the
-- last window_minutes. A refusal counts nothing and is recorded in function_call_audit as
-- 'rate_limited'. Two steps, both measured (bench/rate_limit_bench.py):
--   1. A key already full is refused from committed state, with no lock and no write:
--      admitted hits stay admitted, so a key seen full is full now. Refusals on a hot key
--      therefore never queue on its row lock (they used to: 0.3x of the floor, now above it).
--   2. Otherwise one upsert: ON CONFLICT locks the caller's row and recomputes from its latest
--      version, so concurrent calls never admit more than the limit (it may still refuse, if
--      the key filled up meanwhile). Under contention this beats UPDATE ... WHERE <room>,
--      whose EvalPlanQual recheck evaluates the window twice.
create function public.enhanced_security_rate_limit(
  operation_type text,
  max_attempts integer default 5,
  window_minutes integer default 15
) returns boolean
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started  timestamptz := pg_catalog.clock_timestamp();
  win      interval;
  -- PL/pgSQL gives text variables and arguments the caller's collation; the statement guard
  -- calls in with "C" (from tg_table_name, of type name), and a "C" comparison cannot use the
  -- primary key (default collation): every lookup below would scan the whole table.
  key      text collate "default";
  op       text collate "default" := operation_type;
  ok       boolean;
begin
  if operation_type is null or operation_type !~ '^[a-z][a-z0-9_]{0,62}$' then
    raise exception 'operation_type must be a lowercase identifier such as ''admin_access'', got %',
      coalesce(pg_catalog.quote_literal(operation_type), 'NULL') using errcode = '22023';
  end if;
  if max_attempts is null or max_attempts not between 1 and 10000 then
    raise exception 'max_attempts must be between 1 and 10000, got %', coalesce(max_attempts::text, 'NULL')
      using errcode = '22023';
  end if;
  if window_minutes is null or window_minutes not between 1 and 10080 then
    raise exception 'window_minutes must be between 1 and 10080 (one week), got %',
      coalesce(window_minutes::text, 'NULL') using errcode = '22023';
  end if;

  win := pg_catalog.make_interval(mins => window_minutes);
  key := smsao.rate_limit_key();

  if exists (
    select from smsao.rate_limit_windows w
     where w.caller_key = key and w.operation_type = op
       and pg_catalog.cardinality(w.hits) >= max_attempts   -- cheap test first
       and (select pg_catalog.count(*) from pg_catalog.unnest(w.hits) as h where h > started - win) >= max_attempts
  ) then
    ok := false;
  else
    insert into smsao.rate_limit_windows as w
      (caller_key, operation_type, hits, window_ends, retain_window)
    values (key, op, array[started], started + win, win)
    on conflict on constraint rate_limit_windows_pkey do update
      set (hits, admitted) = (
            -- keep the newest 10,000 hits (one fewer when this call takes a place)
            select case when r.in_window < max_attempts
                        then r.sorted[greatest(r.n - 10000 + 2, 1):] || started
                        else r.sorted[greatest(r.n - 10000 + 1, 1):] end,
                   r.in_window < max_attempts
            from (select pg_catalog.count(*) filter (where h > started - win) as in_window,
                         pg_catalog.count(*)::integer as n,
                         coalesce(pg_catalog.array_agg(h order by h), '{}') as sorted
                  from pg_catalog.unnest(w.hits) as h
                  where h > started - greatest(w.retain_window, win)) r),
          window_ends = greatest(w.window_ends, started + greatest(w.retain_window, win)),
          retain_window = greatest(w.retain_window, win)
    returning w.admitted into ok;
  end if;

  if not ok then
    perform smsao.audit_call('enhanced_security_rate_limit',
      pg_catalog.jsonb_build_object('operation_type', operation_type, 'max_attempts', max_attempts,
                                    'window_minutes', window_minutes, 'caller_key', key),
      'rate_limited', started);
  end if;
  return ok;
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer) from public;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- Rate-limit state past its window (run by the daily housekeeping job).
create function smsao.prune_rate_limit_state() returns integer
  language sql
  set search_path = ''
as $$
  with gone as (
    delete from smsao.rate_limit_windows where window_ends < pg_catalog.clock_timestamp() returning 1
  )
  select pg_catalog.count(*)::integer from gone
$$;
revoke all on function smsao.prune_rate_limit_state() from public;
