-- Removes what 0005_hardening added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the definitions 0001-0004 had.
drop trigger if exists contacts_clear_upsert_mark on public.contacts;
drop trigger if exists profiles_record_initial_credits on public.profiles;
-- Policies that call smsao.is_active_user(); restore.sql re-creates the earlier ones.
drop policy if exists campaigns_insert_own on public.campaigns;
drop policy if exists campaigns_update_own on public.campaigns;
drop policy if exists campaigns_delete_own on public.campaigns;
drop policy if exists contact_import_jobs_insert_own on public.contact_import_jobs;

drop function if exists public.admin_list_users(integer, integer);
drop function if exists smsao.is_active_user();
drop function if exists smsao.clear_upsert_mark();
drop function if exists smsao.guard_app_statement(text, text, text);
drop function if exists smsao.record_initial_credits();
drop function if exists smsao.record_rate_limit_denial(text, text, integer, integer);
drop function if exists smsao.prune_rate_limit_state(integer);
drop function if exists smsao.grow_rate_limit_ring(text, text, integer);
drop function if exists smsao.critical_call_totals();
drop function if exists smsao.count_call(text);
drop function if exists smsao.count_failure(text, text);
drop function if exists smsao.redact_arguments(jsonb);

do $$
declare
  seq regclass;
begin
  for seq in select c.oid from pg_catalog.pg_class c
             where c.relkind = 'S' and c.relnamespace = 'smsao'::regnamespace
               and c.relname ~ '^rpc_.*_(calls|errors|refusals)$' loop
    execute pg_catalog.format('drop sequence %s', seq);
  end loop;
end
$$;
drop table if exists smsao.critical_operations;
drop table if exists smsao.upsert_marks;
drop table if exists smsao.rate_limit_hits;
drop table if exists smsao.rate_limit_keys;

-- The rate limiter's earlier state, as 0002_security created it.
create unlogged table smsao.rate_limit_windows (
  caller_key     text not null,
  operation_type text not null,
  hits           timestamptz[] not null,
  admitted       boolean not null default true,
  window_ends    timestamptz not null,
  retain_window  interval not null,
  primary key (caller_key, operation_type)
) with (fillfactor = 70);
alter table smsao.rate_limit_windows alter column hits set storage external;
