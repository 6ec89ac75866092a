-- Removes what 0011_scale added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the released definitions.

-- The rate limiter: rings kept on the key row go back to smsao.rate_limit_hits (slot
-- s % ring_size), so no admitted attempt is forgotten by the downgrade.
insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
select k.caller_key, k.operation_type, (j % k.ring_size)::integer, j, k.ring[((j - 1) % k.ring_size + 1)::integer]
  from smsao.rate_limit_keys k,
       pg_catalog.generate_series(greatest(k.admitted - k.ring_size + 1, 1), k.admitted) j
 where k.ring is not null and k.ring[((j - 1) % k.ring_size + 1)::integer] is not null
on conflict (caller_key, operation_type, slot) do update set seq = excluded.seq, at = excluded.at;
alter table smsao.rate_limit_keys drop column ring;

-- The audit trails: back to plain tables, with every row. The event triggers go first (the
-- drop guard would refuse to drop the partitioned tables).
drop event trigger if exists smsao_secure_audit_partitions;
drop event trigger if exists smsao_guard_audit_partition_drop;
do $$
declare
  parent text;
  idx text;
begin
  foreach parent in array array['admin_audit_logs', 'pii_access_audit', 'function_call_audit'] loop
    execute format('alter table public.%I rename to %I', parent, parent || '_partitioned');
    execute format('alter sequence %s rename to %I',
                   pg_get_serial_sequence(format('public.%I', parent || '_partitioned'), 'id'), 'old_' || parent || '_id_seq');
    for idx in select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid
                where i.indrelid = format('public.%I', parent || '_partitioned')::regclass loop
      execute format('alter index public.%I rename to %I', idx, 'old_' || idx);
    end loop;
  end loop;
end
$$;
-- As revision 0001_foundation made them (sql/schema/10_tables.sql).
create table public.admin_audit_logs (
  id           bigint generated always as identity primary key,
  admin_id     uuid,
  action       text not null,
  target_table text,
  target_id    text,
  old_values   jsonb,
  new_values   jsonb,
  created_at   timestamptz not null default now()
);
create index admin_audit_logs_created_idx on public.admin_audit_logs (created_at);
create index admin_audit_logs_admin_idx on public.admin_audit_logs (admin_id, created_at desc);

create table public.pii_access_audit (
  id              bigint generated always as identity primary key,
  accessor_id     uuid,
  subject_user_id uuid,
  table_name      text not null,
  record_id       text,
  fields          text[] not null default '{}',
  purpose         text,
  created_at      timestamptz not null default now()
);
create index pii_access_audit_created_idx on public.pii_access_audit (created_at);
create index pii_access_audit_subject_idx on public.pii_access_audit (subject_user_id, created_at desc);

create table public.function_call_audit (
  id            bigint generated always as identity primary key,
  caller_id     uuid,
  caller_role   text,
  function_name text not null,
  arguments     jsonb not null default '{}'::jsonb,
  outcome       text not null check (outcome in ('ok', 'denied', 'rate_limited', 'error')),
  duration_ms   numeric(12, 3),
  created_at    timestamptz not null default now()
);
create index function_call_audit_created_idx on public.function_call_audit (created_at);

do $$
declare
  parent text;
  partman_schema text := (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace
                           where e.extname = 'pg_partman');
  left_over bigint;
begin
  foreach parent in array array['admin_audit_logs', 'pii_access_audit', 'function_call_audit'] loop
    execute format('insert into public.%I overriding system value select * from public.%I',
                   parent, parent || '_partitioned');
    execute format('select setval(pg_get_serial_sequence(%L, ''id''), greatest(max(id), 1), max(id) is not null) '
                   'from public.%I', 'public.' || parent, parent);
    execute format('drop table public.%I cascade', parent || '_partitioned');
    execute format('revoke all on sequence %s from public, anon, authenticated, service_role',
                   pg_get_serial_sequence(format('public.%I', parent), 'id'));
    if partman_schema is not null then
      execute format('delete from %I.part_config where parent_table = %L', partman_schema, 'public.' || parent);
      execute format('drop table if exists %I.%I', partman_schema, 'template_public_' || parent);
    end if;
  end loop;
  -- pg_partman goes too when nothing else uses it (the revision created it).
  if partman_schema is not null then
    execute format('select count(*) from %I.part_config', partman_schema) into left_over;
    if left_over = 0 then
      drop extension pg_partman;
      if partman_schema = 'partman'
         and not exists (select from pg_class where relnamespace = 'partman'::regnamespace)
         and not exists (select from pg_proc where pronamespace = 'partman'::regnamespace) then
        drop schema partman;
      end if;
    end if;
  end if;
end
$$;

drop function if exists smsao.guard_audit_partition_drop();
drop function if exists smsao.secure_new_audit_partitions();
drop function if exists smsao.drop_expired_audit_partitions(text, timestamptz, boolean);
drop function if exists smsao.premake_audit_partitions(integer);
drop function if exists smsao.secure_audit_partitions();
drop function if exists smsao.secure_audit_partition(regclass);
drop function if exists smsao.audit_partitions();
