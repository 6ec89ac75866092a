-- Written by scripts/freeze_sql.py --restore for revision 0011_scale. Do not edit.

-- ==== sql/functions/credit_ledger.sql (as frozen by 0005_hardening) ====
-- profiles.credits is the running sum of credit_transactions, whoever writes first:
--  * ledger rows move the balances (apply_credit_transaction);
--  * a trusted writer (service_role, DBA, loader) that sets profiles.credits directly
--    gets the difference recorded as an 'adjustment' ledger row (record_credit_adjustment).
-- Both are statement-level with transition tables: a statement of 100,000 ledger rows is
-- one UPDATE of the balances it moves, not 100,000 (each of which would run the profiles'
-- statement triggers again).
-- A transaction-local marker tells each trigger that the other one is the writer, so
-- the amount is applied once. It counts only inside a nested trigger (depth > 1): any
-- session may set a custom setting, and a marker set by hand before a plain statement
-- would otherwise skip a balance change or its ledger row.
-- App users hold no privilege on credits or the ledger.

create or replace function smsao.apply_credit_transaction() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'profile' then
    return null;  -- the profile rows already carry these amounts
  end if;
  -- Lock the balances in user order first, so two multi-user statements never deadlock.
  perform from public.profiles p
  where p.user_id in (select n.user_id from new_entries n)
  order by p.user_id for no key update;
  perform pg_catalog.set_config('smsao.credit_writer', 'ledger', true);
  update public.profiles p set credits = p.credits + d.delta
  from (select n.user_id, sum(n.amount) as delta from new_entries n group by n.user_id) d
  where p.user_id = d.user_id and d.delta <> 0;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.apply_credit_transaction() from public, anon, authenticated, service_role;

-- Balances set directly: one ledger row per changed balance. One function per event, as
-- each sees only its own transition tables.
create or replace function smsao.record_credit_adjustment() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger' then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  select n.user_id, n.credits - o.credits, 'adjustment'
  from old_profiles o join new_profiles n on n.user_id = o.user_id
  where n.credits <> o.credits;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_credit_adjustment() from public, anon, authenticated, service_role;

create or replace function smsao.record_initial_credits() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger' then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  select n.user_id, n.credits, 'adjustment' from new_profiles n where n.credits <> 0;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_initial_credits() from public, anon, authenticated, service_role;


-- ==== sql/functions/cron_jobs.sql (as frozen by 0007_alive) ====
-- The pg_cron jobs of CONTRACT section 4, defined once, here. `smsao-db schedule apply`
-- (runner/schedule.py) reads this and applies it by job name, with
-- cron.schedule_in_database, into whichever database of the cluster holds pg_cron.
-- The definitions live in the database because the commands call functions of this
-- schema version: a migration that changes a job's function changes its definition in
-- the same revision, and every tool (runner, verify, a DBA in psql) reads the same list.
-- Migrations never schedule anything, so they apply where pg_cron is absent.
--   runs_in: 'target' = the database this function lives in; 'cron' = pg_cron's own
--   database (cron.job_run_details lives there).
-- The embedded database adds its own backup and restore drill (smsao.recovery_cron_jobs(),
-- sql/functions/backup_jobs.sql); a server given by URL has none. SECURITY DEFINER: whoever
-- may list the jobs (EXECUTE on this function) lists those too.
create or replace function smsao.cron_jobs()
  returns table (jobname text, schedule text, command text, runs_in text)
  language sql stable security definer
  set search_path = ''
as $$
  select * from (values
    ('smsao-health-check', '*/5 * * * *', 'select public.record_health_snapshot()', 'target'),
    ('smsao-performance-check', '* * * * *', 'select public.record_performance_sample()', 'target'),
    ('smsao-data-cleanup', '0 3 * * *', 'call smsao.run_daily_maintenance()', 'target'),
    ('smsao-cron-history-cleanup', '30 3 * * *',
     -- A run that never ended (server restarted mid-run) has no end_time: its start dates it.
     'delete from cron.job_run_details where coalesce(end_time, start_time) < now() - interval ''7 days''', 'cron')
  ) as jobs (jobname, schedule, command, runs_in)
  union all
  select r.jobname, r.schedule, r.command, r.runs_in from smsao.recovery_cron_jobs() r
$$;
revoke all on function smsao.cron_jobs() from public, anon, authenticated, service_role;


-- ==== sql/functions/data_cleanup.sql (as frozen by 0005_hardening) ====
-- Retention cleanup (CONTRACT section 3). Exactly three rules, nothing else is deleted:
--   otp_codes            expires_at more than 2 hours ago
--   admin_audit_logs, pii_access_audit, function_call_audit
--                        created_at more than 2 years ago
--   contact_import_jobs  status completed or failed, completed_at more than 30 days ago
--
-- Rows go in batches of a few thousand, each one index range of the rule's column, so no
-- statement runs long or locks much. Two entry points share the same steps:
--   public.production_data_cleanup()  the contract's function: one transaction (a function
--                                     cannot commit), batches bound each statement;
--   call smsao.run_data_cleanup()     the procedure pg_cron and `smsao-db cleanup` use:
--                                     commits after every batch, so row locks, the
--                                     transaction's snapshot and an interruption all
--                                     cover one batch at most.
-- This is the only code that can delete audit rows: cleanup_batch runs as the owner with
-- smsao.audit_retention = on for its own duration (see smsao.forbid_audit_change).

-- The retention rules' categories, in cleanup order, with their cutoffs at time `at`.
create or replace function smsao.retention_cutoffs(at timestamptz) returns table (category text, cutoff timestamptz, rule text)
  language sql stable
  set search_path = ''
as $$
  select v.category, v.cutoff, v.rule
  from (values
    (1, 'otp_codes', at - interval '2 hours', 'expires_at more than 2 hours ago'),
    (2, 'contact_import_jobs', at - interval '30 days',
        'completed or failed, completed_at more than 30 days ago'),
    (3, 'admin_audit_logs', at - interval '2 years', 'created_at more than 2 years ago'),
    (4, 'pii_access_audit', at - interval '2 years', 'created_at more than 2 years ago'),
    (5, 'function_call_audit', at - interval '2 years', 'created_at more than 2 years ago')
  ) as v(ord, category, cutoff, rule)
  order by v.ord
$$;
revoke all on function smsao.retention_cutoffs(timestamptz) from public, anon, authenticated, service_role;

-- One batch of one category: the rows whose key (the rule's column) is in
-- [resume_at, upper), where upper is the key of the (batch_size + 1)-th eligible row from
-- resume_at, found by an index-only scan; or all remaining rows up to the cutoff, and then
-- `finished`. The DELETE is one index range scan: each row is visited once, and the
-- next batch starts at upper, so no batch wades through rows an earlier one deleted.
-- When more than batch_size rows share the key resume_at, the batch is batch_size of them.
-- The DELETE repeats the rule, so a row changed meanwhile is judged by its new values.
create or replace function smsao.cleanup_batch(category text, cutoff timestamptz, resume_at timestamptz,
                                    batch_size integer,
                                    out deleted integer, out next_key timestamptz, out finished boolean)
  language plpgsql security definer
  set search_path = ''
  set smsao.audit_retention = 'on'
as $$
declare
  upper timestamptz;
  last_included timestamptz;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer' using errcode = '22023';
  end if;
  if cutoff is null or resume_at is null then
    raise exception 'cutoff and resume_at must not be null' using errcode = '22023';
  end if;
  -- Where this batch ends: the key of the first row after it (index-only scan).
  case category
  when 'otp_codes' then
    select o.expires_at into upper from public.otp_codes o
    where o.expires_at >= resume_at and o.expires_at < cutoff
    order by o.expires_at offset batch_size limit 1;
  when 'contact_import_jobs' then
    select j.completed_at into upper from public.contact_import_jobs j
    where j.status in ('completed', 'failed') and j.completed_at >= resume_at and j.completed_at < cutoff
    order by j.completed_at offset batch_size limit 1;
  when 'admin_audit_logs' then
    select a.created_at into upper from public.admin_audit_logs a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  when 'pii_access_audit' then
    select a.created_at into upper from public.pii_access_audit a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  when 'function_call_audit' then
    select a.created_at into upper from public.function_call_audit a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  else
    raise exception 'category must be one of the retention categories, got %', category
      using errcode = '22023';
  end case;
  finished := upper is null;
  upper := coalesce(upper, cutoff);
  if upper = resume_at then
    -- More than batch_size rows share the key resume_at: this batch is batch_size of
    -- them, found by the same index, so a batch stays bounded by rows, not by key values.
    case category
    when 'otp_codes' then
      delete from public.otp_codes o where o.ctid = any (array(
        select x.ctid from public.otp_codes x where x.expires_at = resume_at limit batch_size));
    when 'contact_import_jobs' then
      delete from public.contact_import_jobs j where j.ctid = any (array(
        select x.ctid from public.contact_import_jobs x
        where x.status in ('completed', 'failed') and x.completed_at = resume_at limit batch_size));
    when 'admin_audit_logs' then
      delete from public.admin_audit_logs a where a.ctid = any (array(
        select x.ctid from public.admin_audit_logs x where x.created_at = resume_at limit batch_size));
    when 'pii_access_audit' then
      delete from public.pii_access_audit a where a.ctid = any (array(
        select x.ctid from public.pii_access_audit x where x.created_at = resume_at limit batch_size));
    when 'function_call_audit' then
      delete from public.function_call_audit a where a.ctid = any (array(
        select x.ctid from public.function_call_audit x where x.created_at = resume_at limit batch_size));
    end case;
    get diagnostics deleted = row_count;
    next_key := resume_at;  -- the rest of that key's rows, then onwards
    return;
  end if;
  -- Timestamps step by one microsecond, so "< upper" is "<= upper - 1 us": a bound the
  -- index uses even in a cached generic plan.
  last_included := upper - interval '1 microsecond';
  case category
  when 'otp_codes' then
    delete from public.otp_codes o
    where o.expires_at >= resume_at and o.expires_at <= last_included and o.expires_at < cutoff;
  when 'contact_import_jobs' then
    delete from public.contact_import_jobs j
    where j.status in ('completed', 'failed')
      and j.completed_at >= resume_at and j.completed_at <= last_included and j.completed_at < cutoff;
  when 'admin_audit_logs' then
    delete from public.admin_audit_logs a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  when 'pii_access_audit' then
    delete from public.pii_access_audit a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  when 'function_call_audit' then
    delete from public.function_call_audit a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  end case;
  get diagnostics deleted = row_count;
  next_key := upper;
end
$$;
revoke all on function smsao.cleanup_batch(text, timestamptz, timestamptz, integer) from public, anon, authenticated, service_role;

-- One step of a cleanup run: the next batch of the current category. `progress` is NULL
-- to start and then what the previous step returned; it carries the cutoffs (fixed when
-- the run starts), the position and the counts, and is the final report once done:
--   {"started_at", "cutoffs": {category: ts}, "categories": {category: deleted},
--    "total", "batches", "dry_run": false, "position": {"index", "resume_at"}}
-- Kept apart from the procedure so that the procedure body holds no expression at all
-- (it cannot pin search_path, see smsao.run_data_cleanup).
create or replace function smsao.data_cleanup_step(progress jsonb, batch_size integer,
                                        out next_progress jsonb, out done boolean)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  cats text[];
  idx integer;
  cat text;
  resume timestamptz;
  b record;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer' using errcode = '22023';
  end if;
  if progress is null then
    select pg_catalog.jsonb_build_object(
             'started_at', pg_catalog.now(),
             'cutoffs', pg_catalog.jsonb_object_agg(c.category, c.cutoff),
             'categories', pg_catalog.jsonb_object_agg(c.category, 0),
             'rules', pg_catalog.jsonb_object_agg(c.category, c.rule),
             'total', 0, 'batches', 0, 'dry_run', false,
             'position', pg_catalog.jsonb_build_object('index', 1, 'resume_at', '-infinity'::timestamptz))
      into progress
      from smsao.retention_cutoffs(pg_catalog.now()) c;
  end if;
  cats := array(select c.category from smsao.retention_cutoffs(pg_catalog.now()) c);
  idx := (progress #>> '{position,index}')::integer;
  if idx > cardinality(cats) then
    next_progress := progress - 'position';
    done := true;
    return;
  end if;
  cat := cats[idx];
  resume := (progress #>> '{position,resume_at}')::timestamptz;

  select * into b
  from smsao.cleanup_batch(cat, (progress #>> array['cutoffs', cat])::timestamptz, resume, batch_size);

  progress := pg_catalog.jsonb_set(progress, array['categories', cat],
                pg_catalog.to_jsonb((progress #>> array['categories', cat])::bigint + b.deleted));
  progress := progress || pg_catalog.jsonb_build_object(
                'total', (progress ->> 'total')::bigint + b.deleted,
                'batches', (progress ->> 'batches')::bigint + 1);
  if b.finished then
    idx := idx + 1;
    resume := '-infinity';
  else
    resume := b.next_key;
  end if;
  progress := progress || pg_catalog.jsonb_build_object('position',
                pg_catalog.jsonb_build_object('index', idx, 'resume_at', resume));
  done := idx > cardinality(cats);
  next_progress := case when done then progress - 'position' else progress end;
end
$$;
revoke all on function smsao.data_cleanup_step(jsonb, integer) from public, anon, authenticated, service_role;

-- The committing path: pg_cron's daily job and `smsao-db cleanup` call this. Each batch
-- is its own transaction, committed asynchronously (see the loop).
-- PostgreSQL lets a procedure COMMIT only when it is neither SECURITY DEFINER nor has a
-- SET clause, so this one cannot pin search_path. Its body therefore evaluates no
-- expression of its own (no operator or unqualified name a search_path could redirect):
-- it calls the schema-qualified, search_path-pinned step function and commits. EXECUTE
-- is revoked from PUBLIC: the owner (pg_cron, a DBA) runs it; the app uses
-- public.production_data_cleanup().
create or replace procedure smsao.run_data_cleanup(batch_size integer default 5000, inout report jsonb default null)
  language plpgsql
as $$
declare
  progress jsonb;
  finished boolean;
begin
  loop
    -- A lost batch (crash before its WAL reached disk) only means those rows are
    -- deleted again by the next run, so each batch commits without waiting for the
    -- disk: the flushes would otherwise dominate and slow the app's own commits.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    select s.next_progress, s.done into progress, finished
    from smsao.data_cleanup_step(progress, batch_size) s;
    commit;
    exit when finished;
  end loop;
  report := progress;
end
$$;
revoke all on procedure smsao.run_data_cleanup(integer, jsonb) from public, anon, authenticated, service_role;

create or replace function public.production_data_cleanup() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  progress jsonb;
  finished boolean := false;
begin
  perform smsao.require_operator('production_data_cleanup');
  while not finished loop
    select s.next_progress, s.done into progress, finished
    from smsao.data_cleanup_step(progress, 5000) s;
  end loop;
  return (progress ->> 'total')::integer;
end
$$;
comment on function public.production_data_cleanup() is
  'Retention: deletes OTPs expired more than 2 hours ago, audit rows older than 2 years and '
  'completed/failed import jobs finished more than 30 days ago, in batches; returns the total.';
revoke all on function public.production_data_cleanup() from public, anon, authenticated, service_role;
grant execute on function public.production_data_cleanup() to authenticated, service_role;

-- What a cleanup would delete now, per category; deletes nothing. Same shape as the
-- procedure's report, with "dry_run": true.
create or replace function public.production_data_cleanup_report() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  c record;
  n bigint;
  counts jsonb := '{}'::jsonb;
  cutoffs jsonb := '{}'::jsonb;
  rules jsonb := '{}'::jsonb;
  total bigint := 0::bigint;
begin
  perform smsao.require_operator('production_data_cleanup_report');
  for c in select * from smsao.retention_cutoffs(pg_catalog.now()) loop
    n := case c.category
      when 'otp_codes' then
        (select count(*) from public.otp_codes o where o.expires_at < c.cutoff)
      when 'contact_import_jobs' then
        (select count(*) from public.contact_import_jobs j
         where j.status in ('completed', 'failed') and j.completed_at < c.cutoff)
      when 'admin_audit_logs' then
        (select count(*) from public.admin_audit_logs a where a.created_at < c.cutoff)
      when 'pii_access_audit' then
        (select count(*) from public.pii_access_audit a where a.created_at < c.cutoff)
      when 'function_call_audit' then
        (select count(*) from public.function_call_audit a where a.created_at < c.cutoff)
    end;
    counts := counts || pg_catalog.jsonb_build_object(c.category, n);
    cutoffs := cutoffs || pg_catalog.jsonb_build_object(c.category, c.cutoff);
    rules := rules || pg_catalog.jsonb_build_object(c.category, c.rule);
    total := total + n;
  end loop;
  return pg_catalog.jsonb_build_object('started_at', pg_catalog.now(), 'cutoffs', cutoffs,
    'categories', counts, 'rules', rules, 'total', total, 'dry_run', true);
end
$$;
revoke all on function public.production_data_cleanup_report() from public, anon, authenticated, service_role;
grant execute on function public.production_data_cleanup_report() to authenticated, service_role;


-- ==== sql/functions/housekeeping.sql (as frozen by 0005_hardening) ====
-- Housekeeping, separate from the retention rules: monitoring history older than 30 days,
-- counter rows no reader needs, and rate-limit state past its window.
-- Run by the daily job (smsao.run_daily_maintenance).
create or replace function smsao.prune_housekeeping() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  snapshots integer;
  samples integer;
  counters integer;
  rate_limit integer;
begin
  perform smsao.require_operator('prune_housekeeping');
  delete from public.system_health_snapshots s where s.checked_at < pg_catalog.now() - interval '30 days';
  get diagnostics snapshots = row_count;
  delete from public.performance_samples p where p.sampled_at < pg_catalog.now() - interval '30 days';
  get diagnostics samples = row_count;
  counters := smsao.compact_health_counters();
  rate_limit := smsao.prune_rate_limit_state();
  return pg_catalog.jsonb_build_object(
    'system_health_snapshots', snapshots,
    'performance_samples', samples,
    'health_counters', counters,
    'rate_limit_state', rate_limit);
end
$$;
revoke all on function smsao.prune_housekeeping() from public, anon, authenticated, service_role;

-- The daily pg_cron job: the retention cleanup (committing per batch), then housekeeping.
-- Like smsao.run_data_cleanup it cannot pin search_path (it commits), so it only calls
-- schema-qualified routines.
create or replace procedure smsao.run_daily_maintenance()
  language plpgsql
as $$
declare
  report jsonb;
begin
  call smsao.run_data_cleanup(5000, report);
  perform smsao.prune_housekeeping();
end
$$;
revoke all on procedure smsao.run_daily_maintenance() from public, anon, authenticated, service_role;


-- ==== sql/functions/rate_limit.sql (as frozen by 0005_hardening) ====
-- The rate-limit key of the caller: the user id, the login of a trusted backend session,
-- or for anon the first address of x-forwarded-for (the client, as the proxy saw it).
create or replace function smsao.rate_limit_key() returns text
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
revoke all on function smsao.rate_limit_key() from public, anon, authenticated, service_role;

-- Exact sliding window: admits when fewer than max_attempts attempts were admitted in the
-- last window_minutes. State: smsao.rate_limit_keys and the ring of each key's newest
-- attempts in smsao.rate_limit_hits (sql/schema/40_hardening.sql). The max_attempts-th
-- newest attempt decides: the call is refused when it was admitted inside the window.
--   1. Refusals are decided from committed state, with no lock and no write: admitted
--      attempts stay admitted, so a key seen full is full now. A refusal records at most one
--      function_call_audit row per key, operation and window (smsao.record_rate_limit_denial).
--   2. Admissions take the key's transaction-level advisory lock and record the attempt only
--      if no other call was admitted since step 1 (else they look again, under the lock):
--      concurrent calls never admit more than the limit, and an attempt is stamped when it is
--      admitted, not when the call started (a call that queued records when it got through).
-- Every lookup is by full primary key, so no plan depends on the tables' statistics (they
-- are stale after a crash empties the UNLOGGED tables, or after a night's pruning).
-- A key keeps the attempts of its largest limit and longest window: a later call with a
-- larger limit or a longer window than ever before cannot see attempts already dropped
-- (limits are per operation in practice, smsao.operation_limits).
-- anon callers are keyed by a header anyone can forge, so they may use windows of at most
-- 60 minutes and at most 100 attempts: their state never outlives an hour.
create or replace function public.enhanced_security_rate_limit(
  operation_type text,
  max_attempts integer default 5,
  window_minutes integer default 15
) returns boolean
  language plpgsql security definer
  set search_path = ''
as $$
declare
  win      interval;
  -- PL/pgSQL gives text variables and arguments the caller's collation; the statement guard
  -- calls in with "C" (from tg_table_name, of type name), and a "C" comparison cannot use the
  -- primary key (default collation): every lookup below would scan the whole table.
  key      text collate "default";
  op       text collate "default" := operation_type;
  seen     bigint;
  ring     integer;
  denied   timestamptz;
  deciding timestamptz;
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
  if key like 'ip:%' and (max_attempts > 100 or window_minutes > 60) then
    raise exception 'max_attempts must be at most 100 and window_minutes at most 60 for anonymous callers, got % and %',
      max_attempts, window_minutes using errcode = '22023';
  end if;

  -- 1. Full already? Committed state, no lock: admitted attempts stay admitted, so a key
  --    seen full is full now. Every lookup is by full primary key.
  -- (A second round runs under the lock and settles it, but for a concurrent prune of the
  -- key or the growth of its ring: a few rounds always suffice.)
  for round in 1..5 loop
    select k.admitted, k.ring_size, k.denied_at into seen, ring, denied
      from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
    deciding := null;
    if seen >= max_attempts and ring >= max_attempts then
      select h.at into deciding from smsao.rate_limit_hits h
       where h.caller_key = key and h.operation_type = op
         and h.slot = ((seen - max_attempts + 1) % ring)::integer and h.seq = seen - max_attempts + 1;
    end if;
    if deciding > pg_catalog.clock_timestamp() - win then
      if denied is null or denied <= pg_catalog.clock_timestamp() - win then
        perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
      end if;
      return false;
    end if;

    -- 2. Admit under the key's lock, unless another call was admitted since step 1 (then
    --    look again: the lock is held now, so the next look is final). The attempt is
    --    stamped here, after the lock was granted.
    perform pg_catalog.pg_advisory_xact_lock(7411222, pg_catalog.hashtext(key || '|' || op));
    if seen is null then
      insert into smsao.rate_limit_keys as k
        (caller_key, operation_type, admitted, ring_size, retain_window, window_ends)
      values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win)
      on conflict on constraint rate_limit_keys_pkey do nothing;
      if found then
        insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
        values (key, op, (1 % max_attempts)::integer, 1, pg_catalog.clock_timestamp())
        on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
        return true;
      end if;
    elsif max_attempts > ring then
      perform smsao.grow_rate_limit_ring(key, op, max_attempts);
    else
      with k as (
        update smsao.rate_limit_keys k
           set admitted = k.admitted + 1,
               retain_window = greatest(k.retain_window, win),
               window_ends = greatest(k.window_ends, pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
         where k.caller_key = key and k.operation_type = op and k.admitted = seen
        returning k.admitted
      )
      insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
      select key, op, (k.admitted % ring)::integer, k.admitted, pg_catalog.clock_timestamp() from k
      on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
      if found then
        return true;
      end if;
    end if;
  end loop;
  raise exception 'rate limit state of % changed under its lock five times: retry', op
    using errcode = '40001';
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- A call with a larger limit than the key's ring: the ring grows to it, for a caller that
-- holds the key's advisory lock. The attempts kept move to their slot in the larger ring.
create or replace function smsao.grow_rate_limit_ring(key text, op text, new_size integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  seqs bigint[];
  stamps timestamptz[];
begin
  with moved as (
    delete from smsao.rate_limit_hits h where h.caller_key = key and h.operation_type = op
    returning h.seq, h.at
  )
  select pg_catalog.array_agg(m.seq), pg_catalog.array_agg(m.at) into seqs, stamps from moved m;
  insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
  select key, op, (m.seq % new_size)::integer, m.seq, m.at from unnest(seqs, stamps) as m(seq, at);
  update smsao.rate_limit_keys k set ring_size = new_size
  where k.caller_key = key and k.operation_type = op;
end
$$;
revoke all on function smsao.grow_rate_limit_ring(text, text, integer) from public, anon, authenticated, service_role;

-- A refusal: counted nowhere in the key's state, and written to function_call_audit only
-- when it is the key's first refusal within its window, so a flood of refused calls
-- writes one row per key, operation and window, not one per call.
create or replace function smsao.record_rate_limit_denial(key text, op text, max_attempts integer,
                                                         window_minutes integer)
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  now_ timestamptz := pg_catalog.clock_timestamp();
begin
  update smsao.rate_limit_keys k set denied_at = now_
  where k.caller_key = key and k.operation_type = op
    and (k.denied_at is null or k.denied_at <= now_ - pg_catalog.make_interval(mins => window_minutes));
  if found then
    perform smsao.audit_call('enhanced_security_rate_limit',
      pg_catalog.jsonb_build_object('operation_type', op, 'max_attempts', max_attempts,
                                    'window_minutes', window_minutes, 'caller_key', key,
                                    'first_refusal_in_window', true),
      'rate_limited', now_);
  end if;
end
$$;
revoke all on function smsao.record_rate_limit_denial(text, text, integer, integer)
  from public, anon, authenticated, service_role;

-- Rate-limit state past its window, at most `max_keys` keys per call (each with its
-- attempts). Run every minute by the performance job and daily by the housekeeping job.
create or replace function smsao.prune_rate_limit_state(max_keys integer default 50000) returns integer
  language plpgsql
  set search_path = ''
as $$
declare
  pruned integer;
begin
  with gone as (
    delete from smsao.rate_limit_keys k
    where k.ctid = any (array(select x.ctid from smsao.rate_limit_keys x
                              where x.window_ends < pg_catalog.clock_timestamp()
                              limit max_keys))
      and k.window_ends < pg_catalog.clock_timestamp()
    returning k.caller_key, k.operation_type
  ), hits as (
    delete from smsao.rate_limit_hits h using gone g
    where h.caller_key = g.caller_key and h.operation_type = g.operation_type
  )
  select pg_catalog.count(*)::integer into pruned from gone;
  return pruned;
end
$$;
revoke all on function smsao.prune_rate_limit_state(integer) from public, anon, authenticated, service_role;


-- ==== sql/triggers/audit.sql (as frozen by 0001_foundation) ====
-- Statement-level, so the guard costs nothing per inserted row.
create or replace trigger admin_audit_logs_append_only
  before update or delete or truncate on public.admin_audit_logs
  for each statement execute function smsao.forbid_audit_change();

create or replace trigger pii_access_audit_append_only
  before update or delete or truncate on public.pii_access_audit
  for each statement execute function smsao.forbid_audit_change();

create or replace trigger function_call_audit_append_only
  before update or delete or truncate on public.function_call_audit
  for each statement execute function smsao.forbid_audit_change();


-- ==== sql/triggers/identity.sql (as frozen by 0005_hardening) ====
create or replace trigger smsao_on_auth_user_created
  after insert on auth.users referencing new table as new_users
  for each statement execute function smsao.handle_new_user();

create or replace trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function smsao.touch_updated_at();


-- ==== sql/policies/admin_audit_logs.sql (as frozen by 0001_foundation) ====
alter table public.admin_audit_logs enable row level security;
revoke all on table public.admin_audit_logs from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.admin_audit_logs to service_role;
grant select on table public.admin_audit_logs to authenticated;

drop policy if exists admin_audit_logs_admin_select on public.admin_audit_logs;
create policy admin_audit_logs_admin_select on public.admin_audit_logs for select to authenticated
  using ((select smsao.is_admin()));


-- ==== sql/policies/function_call_audit.sql (as frozen by 0001_foundation) ====
alter table public.function_call_audit enable row level security;
revoke all on table public.function_call_audit from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.function_call_audit to service_role;
grant select on table public.function_call_audit to authenticated;

drop policy if exists function_call_audit_admin_select on public.function_call_audit;
create policy function_call_audit_admin_select on public.function_call_audit for select to authenticated
  using ((select smsao.is_admin()));


-- ==== sql/policies/pii_access_audit.sql (as frozen by 0001_foundation) ====
alter table public.pii_access_audit enable row level security;
revoke all on table public.pii_access_audit from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.pii_access_audit to service_role;
grant select on table public.pii_access_audit to authenticated;

drop policy if exists pii_access_audit_admin_select on public.pii_access_audit;
create policy pii_access_audit_admin_select on public.pii_access_audit for select to authenticated
  using ((select smsao.is_admin()));

