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
