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

-- The daily pg_cron job: the audit months ahead, the retention cleanup (committing per
-- batch), then housekeeping.
-- Like smsao.run_data_cleanup it cannot pin search_path (it commits), so it only calls
-- schema-qualified routines.
create or replace procedure smsao.run_daily_maintenance()
  language plpgsql
as $$
declare
  report jsonb;
begin
  -- The months ahead of the audit partitions where pg_partman does not make them, and the
  -- rules of every partition (a backstop where event triggers could not be created).
  perform smsao.premake_audit_partitions(3);
  call smsao.run_data_cleanup(5000, report);
  perform smsao.prune_housekeeping();
end
$$;
revoke all on procedure smsao.run_daily_maintenance() from public, anon, authenticated, service_role;
