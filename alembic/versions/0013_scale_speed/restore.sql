-- Written by scripts/freeze_sql.py --restore for revision 0013_scale_speed. Do not edit.

-- ==== sql/functions/audit_partitions.sql (as frozen by 0011_scale) ====
-- Monthly partitions of the audit trails (revision 0011_scale; docs/scaling.md section 3).
-- Partitions of public.admin_audit_logs, public.pii_access_audit and
-- public.function_call_audit are named <table>_pYYYY_MM (a calendar month in UTC) and
-- <table>_default, as pg_partman 4.7 names them. Rules every partition must keep, because
-- PostgreSQL does not carry them from the parent:
--   * no privilege for any app role: a statement aimed at a partition fires none of the
--     parent's statement triggers, and Supabase's default privileges would grant ALL on
--     every new table in public to anon, authenticated and service_role;
--   * row-level security on, with no policy: a partition is never a way around the
--     parent's policies;
--   * the append-only guard (smsao.forbid_audit_change) as its own statement trigger, so
--     UPDATE, DELETE and TRUNCATE aimed at a partition are refused like on the parent.
-- smsao.secure_audit_partitions() applies them to every partition that lacks them; the
-- event trigger smsao_secure_audit_partitions runs it after each CREATE/ALTER TABLE that
-- touches an audit table (pg_partman's maintenance included), and so do the functions
-- here that create partitions.

-- The audit tables, and each one's partitions with their bounds (null for the default).
create or replace function smsao.audit_partitions()
  returns table (parent text, partition regclass, name text, from_ts timestamptz, to_ts timestamptz)
  language sql stable
  set search_path = ''
as $$
  select p.relname::text, c.oid::regclass, c.relname::text,
         pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)')::timestamptz,
         pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)')::timestamptz
    from pg_catalog.pg_class p
    join pg_catalog.pg_inherits i on i.inhparent = p.oid
    join pg_catalog.pg_class c on c.oid = i.inhrelid
   where p.relnamespace = 'public'::regnamespace
     and p.relname in ('admin_audit_logs', 'pii_access_audit', 'function_call_audit')
$$;
revoke all on function smsao.audit_partitions() from public, anon, authenticated, service_role;

-- The ALTER TABLE comes last: it fires the event trigger again (smsao.secure_new_audit_partitions),
-- which then finds this partition complete.
create or replace function smsao.secure_audit_partition(part regclass) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if not exists (select from pg_catalog.pg_trigger t
                  where t.tgrelid = part and t.tgname = 'audit_partition_append_only') then
    execute pg_catalog.format(
      'create trigger audit_partition_append_only before update or delete or truncate on %s '
      'for each statement execute function smsao.forbid_audit_change()', part);
  end if;
  execute pg_catalog.format('revoke all on table %s from public, anon, authenticated, service_role', part);
  if not (select c.relrowsecurity from pg_catalog.pg_class c where c.oid = part) then
    execute pg_catalog.format('alter table %s enable row level security', part);
  end if;
end
$$;
revoke all on function smsao.secure_audit_partition(regclass) from public, anon, authenticated, service_role;

-- Every audit partition that lacks a rule gets it; returns how many were changed.
-- smsao.securing_audit_partitions tells the event trigger that the ALTER TABLEs it runs are
-- this function's own (else each would secure every partition again, recursively).
create or replace function smsao.secure_audit_partitions() returns integer
  language plpgsql
  set search_path = ''
  set smsao.securing_audit_partitions = 'on'
as $$
declare
  part regclass;
  changed integer := 0;
begin
  for part in
    select a.partition from smsao.audit_partitions() a join pg_catalog.pg_class c on c.oid = a.partition
     where not c.relrowsecurity
        or exists (select from pg_catalog.aclexplode(c.relacl) x where x.grantee <> c.relowner)
        or not exists (select from pg_catalog.pg_trigger t
                        where t.tgrelid = a.partition and t.tgname = 'audit_partition_append_only')
  loop
    perform smsao.secure_audit_partition(part);
    changed := changed + 1;
  end loop;
  return changed;
end
$$;
revoke all on function smsao.secure_audit_partitions() from public, anon, authenticated, service_role;

-- Where pg_partman does not manage an audit table (not installed), the package makes its
-- months itself: the current month and `months_ahead` more, and the default partition.
-- Run by the daily job; returns how many partitions it made.
create or replace function smsao.premake_audit_partitions(months_ahead integer default 3) returns integer
  language plpgsql
  set search_path = ''
as $$
declare
  parent text;
  m timestamptz;
  made integer := 0;
  managed text[] := '{}'::text[];
  partman_schema text;
begin
  if months_ahead is null or months_ahead not between 0 and 24 then
    raise exception 'months_ahead must be between 0 and 24, got %', coalesce(months_ahead::text, 'NULL')
      using errcode = '22023';
  end if;
  -- The tables pg_partman manages (its schema is wherever it was installed).
  select n.nspname::text into partman_schema from pg_catalog.pg_extension e
    join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'pg_partman';
  if partman_schema is not null then
    execute pg_catalog.format('select array(select c.parent_table::text from %I.part_config c)', partman_schema)
      into managed;
  end if;
  foreach parent in array array['admin_audit_logs', 'pii_access_audit', 'function_call_audit'] loop
    continue when 'public.' || parent = any (managed);
    m := pg_catalog.date_trunc('month', pg_catalog.now(), 'UTC');
    for i in 0..months_ahead loop
      if pg_catalog.to_regclass('public.' || parent || '_p' || pg_catalog.to_char(m at time zone 'UTC', 'YYYY_MM')) is null then
        execute pg_catalog.format('create table public.%I partition of public.%I for values from (%L) to (%L)',
          parent || '_p' || pg_catalog.to_char(m at time zone 'UTC', 'YYYY_MM'), parent,
          m, ((m at time zone 'UTC') + interval '1 month') at time zone 'UTC');
        made := made + 1;
      end if;
      m := ((m at time zone 'UTC') + interval '1 month') at time zone 'UTC';
    end loop;
    if pg_catalog.to_regclass('public.' || parent || '_default') is null then
      execute pg_catalog.format('create table public.%I partition of public.%I default', parent || '_default', parent);
      made := made + 1;
    end if;
  end loop;
  perform smsao.secure_audit_partitions();
  return made;
end
$$;
revoke all on function smsao.premake_audit_partitions(integer) from public, anon, authenticated, service_role;

-- Retention by partition: every month of `category` that ends at or before `cutoff` (so
-- every row in it is older than the cutoff) is counted, detached and dropped; a month that
-- straddles the cutoff stays, for the batched delete. Returns the partitions dropped (or,
-- with dry_run, that would be) and their rows.
-- DETACH and DROP take an ACCESS EXCLUSIVE lock on the parent for a moment; lock_timeout
-- bounds the wait, and a month that could not be locked stays for the next run (its rows
-- are then deleted in batches by this run, as before partitioning: the rule holds either
-- way). DETACH ... CONCURRENTLY cannot run inside a function or procedure.
create or replace function smsao.drop_expired_audit_partitions(category text, cutoff timestamptz,
                                                                dry_run boolean default false)
  returns table (partition_name text, row_count bigint)
  language plpgsql security definer
  set search_path = ''
  set smsao.audit_retention = 'on'
  set lock_timeout = '2s'
as $$
declare
  p record;
  n bigint;
begin
  if category is null or category not in ('admin_audit_logs', 'pii_access_audit', 'function_call_audit') then
    raise exception 'category must be an audit table, got %', coalesce(category, 'NULL') using errcode = '22023';
  end if;
  if cutoff is null or cutoff > pg_catalog.now() - interval '2 years' then
    raise exception 'cutoff must be at most now() - 2 years, got %', coalesce(cutoff::text, 'NULL')
      using errcode = '22023';
  end if;
  for p in select a.partition, a.name from smsao.audit_partitions() a
            where a.parent = category and a.to_ts <= cutoff order by a.to_ts loop
    begin
      execute pg_catalog.format('select count(*) from %s', p.partition) into n;
      if not dry_run then
        execute pg_catalog.format('alter table public.%I detach partition %s', category, p.partition);
        execute pg_catalog.format('drop table %s', p.partition);
      end if;
      partition_name := p.name;
      row_count := n;
      return next;
    exception when lock_not_available then
      raise log 'retention: % is busy, its rows go in batches this time', p.name;
    end;
  end loop;
end
$$;
revoke all on function smsao.drop_expired_audit_partitions(text, timestamptz, boolean)
  from public, anon, authenticated, service_role;

-- Event trigger: after a CREATE TABLE or ALTER TABLE that made or attached a partition of
-- an audit table (by the package, by pg_partman, by hand), secure it at once, in the same
-- transaction: no moment exists in which an app role could write it.
create or replace function smsao.secure_new_audit_partitions() returns event_trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if pg_catalog.current_setting('smsao.securing_audit_partitions', true) = 'on' then
    return;   -- smsao.secure_audit_partitions() at work
  end if;
  if exists (select from pg_catalog.pg_event_trigger_ddl_commands() c
              where c.object_type = 'table' and c.schema_name = 'public'
                and c.object_identity ~ '^public\.(admin_audit_logs|pii_access_audit|function_call_audit)(_|$)') then
    perform smsao.secure_audit_partitions();
  end if;
end
$$;
revoke all on function smsao.secure_new_audit_partitions() from public, anon, authenticated, service_role;

-- Event trigger: a DROP of an audit table or partition is refused (42501) unless it is the
-- retention's own: smsao.audit_retention = on (set only by the retention functions, which
-- run as the owner) and a month that ends at least 2 years ago, told from its name. The
-- parents and the default partitions are never dropped this way.
create or replace function smsao.guard_audit_partition_drop() returns event_trigger
  language plpgsql
  set search_path = ''
as $$
declare
  d record;
  month_end timestamptz;
begin
  for d in select o.object_name from pg_catalog.pg_event_trigger_dropped_objects() o
            where o.object_type = 'table' and o.schema_name = 'public'
              and o.object_name ~ '^(admin_audit_logs|pii_access_audit|function_call_audit)(_p\d{4}_\d{2}|_default)?$' loop
    month_end := case when d.object_name ~ '_p\d{4}_\d{2}$'
                      then (pg_catalog.to_date(pg_catalog.right(d.object_name, 7), 'YYYY_MM')::timestamp
                            + interval '1 month') at time zone 'UTC' end;
    if pg_catalog.current_setting('smsao.audit_retention', true) is distinct from 'on'
       or month_end is null or month_end > pg_catalog.now() - interval '2 years' then
      raise exception 'dropping %.% is not allowed: audit trails are kept 2 years, and only the retention cleanup drops a month past them',
        'public', d.object_name using errcode = '42501';
    end if;
  end loop;
end
$$;
revoke all on function smsao.guard_audit_partition_drop() from public, anon, authenticated, service_role;


-- ==== sql/functions/data_cleanup.sql (as frozen by 0011_scale) ====
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


-- ==== sql/functions/rate_limit.sql (as frozen by 0011_scale) ====
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
-- last window_minutes. State: smsao.rate_limit_keys, one row per (caller, operation), and a
-- ring of the key's newest attempts, numbered 1, 2, 3... (sql/schema/40_hardening.sql,
-- 60_scale.sql). The max_attempts-th newest attempt decides: the call is refused when it
-- was admitted inside the window.
--   1. An admission is one conditional UPDATE of the key row. For limits up to 100 the ring
--      is an array on that row, so the UPDATE both decides and records: it overwrites the
--      slot of the attempt that decides it (the max_attempts-th newest), and the row lock
--      serialises concurrent admissions: a call that waited re-checks its WHERE against the
--      newest version of the row (READ COMMITTED's re-check), so no more than max_attempts
--      are ever admitted in a window, and the stamp is taken after the wait.
--      Larger limits (up to 10,000) keep their ring in smsao.rate_limit_hits: the UPDATE of
--      the key row decides (reading the deciding attempt) and the same statement overwrites
--      one ring row; the key row's lock serialises them the same way.
--   2. Refusals write nothing: when the UPDATE matched no row, one look at the committed
--      state says why (no key yet, a ring smaller than this limit, or full). A refusal
--      records at most one function_call_audit row per key, operation and window
--      (smsao.record_rate_limit_denial).
-- No advisory lock. Every lookup is by full primary key, so no plan depends on the tables'
-- statistics (they are stale after a crash empties the UNLOGGED tables, or after pruning).
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
  inline   boolean := max_attempts <= 100;   -- try the ring on the key row first
  seen     bigint;
  kept     integer;                          -- the key's ring size
  on_row   boolean;
  admitted_now boolean;
  looked   boolean := false;                 -- the key's state was read by the admitting statement
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

  -- (A round ends without an answer only when the key changed shape under the call: it was
  -- created, pruned or its ring grew. A few rounds always suffice.)
  for round in 1..5 loop
    -- 1. Admit: one row write. clock_timestamp() is read when the row lock is held.
    --    For a ring on the key row, the same statement also reads the key as its snapshot
    --    saw it, so a refusal needs no second statement (a key seen full is full now).
    if inline then
      with admit as (
        update smsao.rate_limit_keys k
           set ring[k.admitted % k.ring_size + 1] = pg_catalog.clock_timestamp(),
               admitted = k.admitted + 1,
               retain_window = greatest(k.retain_window, win),
               window_ends = greatest(k.window_ends,
                                      pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
         where k.caller_key = key and k.operation_type = op
           and k.ring is not null and k.ring_size >= max_attempts
           and (k.admitted < max_attempts
                or coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                   <= pg_catalog.clock_timestamp() - win)
        returning 1
      )
      select exists (select from admit), k.admitted, k.ring_size, k.ring is not null, k.denied_at,
             case when k.admitted < max_attempts or k.ring_size < max_attempts or k.ring is null then null
                  else coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity') end
        into admitted_now, seen, kept, on_row, denied, deciding
        from (select) as one
        left join smsao.rate_limit_keys k on k.caller_key = key and k.operation_type = op;
      if admitted_now then
        return true;
      end if;
      looked := on_row is not false;   -- a key with its ring elsewhere is looked at below
    else
      -- The deciding attempt is read with the statement's snapshot: after a wait for the row
      -- lock it may not see an attempt committed meanwhile, and then it does not admit (the
      -- look below, with a new snapshot, sends the call round again).
      with k as (
        update smsao.rate_limit_keys k
           set admitted = k.admitted + 1,
               retain_window = greatest(k.retain_window, win),
               window_ends = greatest(k.window_ends,
                                      pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
         where k.caller_key = key and k.operation_type = op
           and k.ring is null and k.ring_size >= max_attempts
           and (k.admitted < max_attempts
                or (select h.at from smsao.rate_limit_hits h
                     where h.caller_key = key and h.operation_type = op
                       and h.slot = ((k.admitted - max_attempts + 1) % k.ring_size)::integer
                       and h.seq = k.admitted - max_attempts + 1) <= pg_catalog.clock_timestamp() - win)
        returning k.admitted, k.ring_size
      )
      insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
      select key, op, (k.admitted % k.ring_size)::integer, k.admitted, pg_catalog.clock_timestamp() from k
      on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
      if found then
        return true;
      end if;
    end if;

    -- 2. Not admitted: why? Committed state, no lock.
    if not looked then
      select k.admitted, k.ring_size, k.ring is not null, k.denied_at,
             case when k.admitted < max_attempts or k.ring_size < max_attempts then null
                  when k.ring is not null
                  then coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                  else (select h.at from smsao.rate_limit_hits h
                         where h.caller_key = key and h.operation_type = op
                           and h.slot = ((k.admitted - max_attempts + 1) % k.ring_size)::integer
                           and h.seq = k.admitted - max_attempts + 1) end
        into seen, kept, on_row, denied, deciding
        from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
    end if;
    looked := false;
    if seen is null then
      -- A new key: its first attempt.
      insert into smsao.rate_limit_keys as k
        (caller_key, operation_type, admitted, ring_size, retain_window, window_ends, ring)
      values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win,
              case when max_attempts <= 100 then array[pg_catalog.clock_timestamp()] end)
      on conflict on constraint rate_limit_keys_pkey do nothing;
      if found then
        if max_attempts > 100 then
          insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
          values (key, op, (1 % max_attempts)::integer, 1, pg_catalog.clock_timestamp())
          on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
        end if;
        return true;
      end if;
      continue;
    end if;
    if max_attempts > kept or (on_row and max_attempts > 100) then
      perform smsao.grow_rate_limit_ring(key, op, max_attempts);
      inline := max_attempts <= 100;
      continue;
    end if;
    if deciding > pg_catalog.clock_timestamp() - win then
      if denied is null or denied <= pg_catalog.clock_timestamp() - win then
        perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
      end if;
      return false;
    end if;
    inline := on_row;   -- admissible now (the window slid, or the key changed): again
  end loop;
  raise exception 'rate limit state of % changed under the call five times: retry', op
    using errcode = '40001';
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- A call with a larger limit than the key's ring: the ring grows to it, under the key row's
-- lock (which every admission of the key takes too). Up to 100 attempts the ring stays on
-- the key row; past that it moves to smsao.rate_limit_hits (slot seq % size). Attempts the
-- old ring had already dropped are kept as '-infinity' (outside every window), so that every
-- attempt number in the new ring has its entry: the deciding look of a large ring never
-- finds a gap.
create or replace function smsao.grow_rate_limit_ring(key text, op text, new_size integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  n      bigint;
  size   integer;
  stamps timestamptz[];
  grown  timestamptz[];
  seqs   bigint[];
  ats    timestamptz[];
begin
  select k.admitted, k.ring_size, k.ring into n, size, stamps
    from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op
  for update;
  if not found or size >= new_size then
    return;   -- pruned, or grown by another call meanwhile
  end if;
  if stamps is not null and new_size <= 100 then
    -- On the row: attempt j moves from slot (j - 1) % size + 1 to (j - 1) % new_size + 1.
    select pg_catalog.array_agg(case when j > n - size then stamps[((j - 1) % size + 1)::integer]
                                     else '-infinity'::timestamptz end order by (j - 1) % new_size)
      into grown
      from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j;
    update smsao.rate_limit_keys k set ring = grown, ring_size = new_size
     where k.caller_key = key and k.operation_type = op;
    return;
  end if;
  if stamps is not null then
    seqs := array(select j from pg_catalog.generate_series(greatest(n - size + 1, 1), n) j);
    ats := array(select stamps[((j - 1) % size + 1)::integer] from pg_catalog.unnest(seqs) j);
  else
    with moved as (
      delete from smsao.rate_limit_hits h where h.caller_key = key and h.operation_type = op
      returning h.seq, h.at
    )
    select pg_catalog.array_agg(m.seq), pg_catalog.array_agg(m.at) into seqs, ats from moved m;
  end if;
  -- (A multi-argument unnest is FROM-clause syntax, not a pg_catalog function.)
  insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
  select key, op, (j % new_size)::integer, j, coalesce(m.at, '-infinity')
    from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j
    left join unnest(seqs, ats) as m(seq, at) on m.seq = j;
  update smsao.rate_limit_keys k set ring = null, ring_size = new_size
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

