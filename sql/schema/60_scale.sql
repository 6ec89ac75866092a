-- Revision 0011_scale (issue 19): the rate limiter at one row write per admission.
-- A key whose largest limit is at most 100 attempts keeps its ring on the key row, as an
-- array: attempt j in ring[(j - 1) % ring_size + 1]. An admission is then one UPDATE of
-- that row (sql/functions/rate_limit.sql); its row lock serialises the key's admissions.
-- Keys of larger limits (up to 10,000) keep the ring in smsao.rate_limit_hits, as before,
-- and have ring = null.
alter table smsao.rate_limit_keys add column ring timestamptz[];
alter table smsao.rate_limit_keys add constraint rate_limit_keys_ring_check
  check (ring is null or (ring_size <= 100 and pg_catalog.array_lower(ring, 1) >= 1
                          and pg_catalog.array_upper(ring, 1) <= ring_size));

-- Keys of small limits move their ring from the hits table onto the key row: slot s of the
-- array holds the attempt the old ring kept in slot s % ring_size.
update smsao.rate_limit_keys k
   set ring = array(select h.at
                      from pg_catalog.generate_series(1, k.ring_size) s
                      left join smsao.rate_limit_hits h
                        on h.caller_key = k.caller_key and h.operation_type = k.operation_type
                       and h.slot = s % k.ring_size
                     order by s)
 where k.ring_size <= 100;
delete from smsao.rate_limit_hits h
 using smsao.rate_limit_keys k
 where h.caller_key = k.caller_key and h.operation_type = k.operation_type and k.ring is not null;

-- The audit trails (admin_audit_logs, pii_access_audit, function_call_audit) become monthly
-- range partitions on created_at, converted in place with their rows (docs/scaling.md,
-- section 3). Months wholly past the 2-year retention then go as a partition DROP
-- (smsao.drop_expired_audit_partitions), and only the month that straddles the cutoff
-- keeps the batched delete. The primary key becomes (id, created_at): a unique key of a
-- partitioned table must contain the partition key. id stays an identity, continuing from
-- the old table's (setval after the copy).
-- Partitions are named <table>_pYYYY_MM (months in UTC), with <table>_default for rows
-- outside every month made so far, the names pg_partman 4.7 gives; where pg_partman is
-- installed it manages them (sql/functions/audit_partitions.sql), else the package does.
-- Each partition is secured when created (smsao.secure_audit_partition: no privilege for
-- any app role, RLS on, the append-only guard), by an event trigger
-- (sql/triggers/audit_partitions.sql) and by the functions that create them.
create function smsao.audit_partition_conversion(parent text, columns text, indexes text[])
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  old_name text := parent || '_unpartitioned';
  idx text;
begin
  execute pg_catalog.format('alter table public.%I rename to %I', parent, old_name);
  -- The old indexes keep their names: move them aside so the new table can take them.
  for idx in select c.relname from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid
              where i.indrelid = pg_catalog.format('public.%I', old_name)::regclass loop
    execute pg_catalog.format('alter index public.%I rename to %I', idx, 'old_' || idx);
  end loop;
  -- And so does its identity sequence.
  execute pg_catalog.format('alter sequence %s rename to %I',
    pg_catalog.pg_get_serial_sequence(pg_catalog.format('public.%I', old_name), 'id'), 'old_' || parent || '_id_seq');
  execute pg_catalog.format(
    'create table public.%I (id bigint generated always as identity, %s, '
    'constraint %I primary key (id, created_at)) partition by range (created_at)',
    parent, columns, parent || '_pkey');
  -- Supabase's default privileges grant every new sequence to the app roles; an identity
  -- needs none (as sql/policies/hardening_state.sql does for the others).
  execute pg_catalog.format('revoke all on sequence %s from public, anon, authenticated, service_role',
    pg_catalog.pg_get_serial_sequence(pg_catalog.format('public.%I', parent), 'id'));
  foreach idx in array indexes loop
    execute idx;
  end loop;
end
$$;

select smsao.audit_partition_conversion('admin_audit_logs',
  'admin_id uuid, action text not null, target_table text, target_id text, old_values jsonb, '
  'new_values jsonb, created_at timestamptz not null default now()',
  array['create index admin_audit_logs_created_idx on public.admin_audit_logs (created_at)',
        'create index admin_audit_logs_admin_idx on public.admin_audit_logs (admin_id, created_at desc)']);
select smsao.audit_partition_conversion('pii_access_audit',
  'accessor_id uuid, subject_user_id uuid, table_name text not null, record_id text, '
  'fields text[] not null default ''{}'', purpose text, created_at timestamptz not null default now()',
  array['create index pii_access_audit_created_idx on public.pii_access_audit (created_at)',
        'create index pii_access_audit_subject_idx on public.pii_access_audit (subject_user_id, created_at desc)']);
select smsao.audit_partition_conversion('function_call_audit',
  'caller_id uuid, caller_role text, function_name text not null, '
  'arguments jsonb not null default ''{}''::jsonb, '
  'outcome text not null check (outcome in (''ok'', ''denied'', ''rate_limited'', ''error'')), '
  'duration_ms numeric(12, 3), created_at timestamptz not null default now()',
  array['create index function_call_audit_created_idx on public.function_call_audit (created_at)']);
drop function smsao.audit_partition_conversion(text, text, text[]);

-- pg_partman, where the server has it (Debian postgresql-15-partman, Supabase): it makes
-- the months ahead (CALL partman.run_maintenance_proc(), its own pg_cron job). Its
-- retention stays off: the contract's rule is exact to the microsecond, which a partition
-- boundary is not, so the package drops whole months itself and deletes the rest in
-- batches. Where pg_partman is absent, the package makes the months ahead itself
-- (smsao.premake_audit_partitions, run by the daily job): the migration applies on a plain
-- PostgreSQL 15 with pg_cron either way.
do $$
begin
  if exists (select from pg_catalog.pg_available_extensions where name = 'pg_partman')
     and not exists (select from pg_catalog.pg_extension where extname = 'pg_partman') then
    create schema if not exists partman;
    create extension pg_partman schema partman;
  end if;
end
$$;

-- The months from the oldest row's to three ahead, and the default partition; then the
-- rows, and the old table goes (with its triggers and policies: sql/triggers/audit.sql
-- and sql/policies/ put them on the new parent, and smsao.secure_audit_partitions() on
-- every partition).
do $$
declare
  parent text;
  first_month timestamptz;
  partman_schema text := (select n.nspname from pg_catalog.pg_extension e
                            join pg_catalog.pg_namespace n on n.oid = e.extnamespace
                           where e.extname = 'pg_partman');
  m timestamptz;
begin
  -- pg_partman cuts months in the session's time zone; the package's months are UTC's.
  perform pg_catalog.set_config('TimeZone', 'UTC', true);
  foreach parent in array array['admin_audit_logs', 'pii_access_audit', 'function_call_audit'] loop
    execute pg_catalog.format('select pg_catalog.date_trunc(''month'', coalesce(min(created_at), now()), ''UTC'') '
                              'from public.%I', parent || '_unpartitioned') into first_month;
    if partman_schema is not null then
      execute pg_catalog.format(
        'select %I.create_parent(p_parent_table => %L, p_control => ''created_at'', p_type => ''native'', '
        'p_interval => ''monthly'', p_premake => 3, p_start_partition => %L)',
        partman_schema, 'public.' || parent, pg_catalog.to_char(first_month at time zone 'UTC', 'YYYY-MM-DD'));
      execute pg_catalog.format('update %I.part_config set infinite_time_partitions = true, retention = null '
                                'where parent_table = %L', partman_schema, 'public.' || parent);
    else
      m := first_month;
      while m < pg_catalog.date_trunc('month', now(), 'UTC') + interval '4 months' loop
        execute pg_catalog.format('create table public.%I partition of public.%I for values from (%L) to (%L)',
          parent || '_p' || pg_catalog.to_char(m at time zone 'UTC', 'YYYY_MM'), parent,
          m, ((m at time zone 'UTC') + interval '1 month') at time zone 'UTC');
        m := ((m at time zone 'UTC') + interval '1 month') at time zone 'UTC';
      end loop;
      execute pg_catalog.format('create table public.%I partition of public.%I default', parent || '_default', parent);
    end if;
    execute pg_catalog.format('insert into public.%I overriding system value select * from public.%I',
                              parent, parent || '_unpartitioned');
    -- New ids continue from the old table's.
    execute pg_catalog.format('select pg_catalog.setval(pg_catalog.pg_get_serial_sequence(%L, ''id''), '
                              'greatest(max(id), 1), max(id) is not null) from public.%I',
                              'public.' || parent, parent);
    execute pg_catalog.format('drop table public.%I', parent || '_unpartitioned');
  end loop;
end
$$;
