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
-- The audit tables are partitioned by month (revision 0011_scale): before a category's
-- batches, every month that ends before its cutoff is dropped whole
-- (smsao.drop_expired_audit_partitions: no WAL per row, no dead tuples), so the batches walk
-- only the month that straddles the cutoff, and the rule stays exact to the microsecond.
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
    -- A ctid names a row only within one partition: the audit tables' DELETE repeats the
    -- key, which prunes it to the one partition holding every row of that key.
    case category
    when 'otp_codes' then
      delete from public.otp_codes o where o.ctid = any (array(
        select x.ctid from public.otp_codes x where x.expires_at = resume_at limit batch_size));
    when 'contact_import_jobs' then
      delete from public.contact_import_jobs j where j.ctid = any (array(
        select x.ctid from public.contact_import_jobs x
        where x.status in ('completed', 'failed') and x.completed_at = resume_at limit batch_size));
    when 'admin_audit_logs' then
      delete from public.admin_audit_logs a where a.created_at = resume_at and a.ctid = any (array(
        select x.ctid from public.admin_audit_logs x where x.created_at = resume_at limit batch_size));
    when 'pii_access_audit' then
      delete from public.pii_access_audit a where a.created_at = resume_at and a.ctid = any (array(
        select x.ctid from public.pii_access_audit x where x.created_at = resume_at limit batch_size));
    when 'function_call_audit' then
      delete from public.function_call_audit a where a.created_at = resume_at and a.ctid = any (array(
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
  dropped jsonb;
  dropped_rows bigint;
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

  -- An audit category starts with its whole months past the cutoff: one step of its own,
  -- so the procedure commits the drops before the batches.
  if cat in ('admin_audit_logs', 'pii_access_audit', 'function_call_audit')
     and not coalesce((progress #>> '{position,partitions_done}')::boolean, false) then
    select coalesce(pg_catalog.jsonb_agg(d.partition_name order by d.partition_name), '[]'::jsonb),
           coalesce(sum(d.row_count), 0)::bigint
      into dropped, dropped_rows
      from smsao.drop_expired_audit_partitions(cat, (progress #>> array['cutoffs', cat])::timestamptz) d;
    progress := pg_catalog.jsonb_set(progress, array['categories', cat],
                  pg_catalog.to_jsonb((progress #>> array['categories', cat])::bigint + dropped_rows));
    progress := progress || pg_catalog.jsonb_build_object(
                  'total', (progress ->> 'total')::bigint + dropped_rows,
                  'partitions_dropped', coalesce(progress -> 'partitions_dropped', '{}'::jsonb)
                                        || pg_catalog.jsonb_build_object(cat, dropped),
                  'position', pg_catalog.jsonb_build_object('index', idx, 'resume_at', resume,
                                                            'partitions_done', true));
    next_progress := progress;
    done := false;
    return;
  end if;

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
                pg_catalog.jsonb_build_object('index', idx, 'resume_at', resume,
                  'partitions_done', not b.finished));
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
-- procedure's report, with "dry_run": true, and "partitions_to_drop": the audit months a
-- cleanup would drop whole (their rows are in the counts).
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
  partitions jsonb := '{}'::jsonb;
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
    if c.category in ('admin_audit_logs', 'pii_access_audit', 'function_call_audit') then
      partitions := partitions || pg_catalog.jsonb_build_object(c.category,
        (select coalesce(pg_catalog.jsonb_agg(d.partition_name order by d.partition_name), '[]'::jsonb)
           from smsao.drop_expired_audit_partitions(c.category, c.cutoff, true) d));
    end if;
    counts := counts || pg_catalog.jsonb_build_object(c.category, n);
    cutoffs := cutoffs || pg_catalog.jsonb_build_object(c.category, c.cutoff);
    rules := rules || pg_catalog.jsonb_build_object(c.category, c.rule);
    total := total + n;
  end loop;
  return pg_catalog.jsonb_build_object('started_at', pg_catalog.now(), 'cutoffs', cutoffs,
    'categories', counts, 'rules', rules, 'total', total, 'dry_run', true,
    'partitions_to_drop', partitions);
end
$$;
revoke all on function public.production_data_cleanup_report() from public, anon, authenticated, service_role;
grant execute on function public.production_data_cleanup_report() to authenticated, service_role;
