-- Monitoring history, run by pg_cron (sql/functions/cron_jobs.sql) and callable by
-- service_role.

-- Store a health snapshot; on a change of status (the first snapshot counts as a change
-- from 'healthy') insert one system_alerts row and NOTIFY system_alerts with
--   {"alert_id", "severity", "status", "previous_status", "snapshot_id", "at"}.
-- Returns the health report plus "snapshot_id" and "alert" (the alert row, or null).
create or replace function public.record_health_snapshot() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  report jsonb;
  current_status text;
  previous_status text;
  snapshot_id bigint;
  alert jsonb;
  severity text;
  alert_id bigint;
  message text;
begin
  if smsao.caller_role() <> 'service_role' then
    raise exception 'record_health_snapshot: only service_role may call this' using errcode = '42501';
  end if;
  -- One recorder at a time: two concurrent runs would both compare against the same
  -- previous snapshot and raise the same alert twice.
  perform pg_catalog.pg_advisory_xact_lock(7411220, 1);
  perform smsao.compact_health_counters();

  report := smsao.health_report();
  current_status := report ->> 'system_status';
  select s.system_status into previous_status
  from public.system_health_snapshots s order by s.checked_at desc, s.id desc limit 1;
  previous_status := coalesce(previous_status, 'healthy');

  insert into public.system_health_snapshots (checked_at, system_status, report)
  values (pg_catalog.now(), current_status, report)
  returning id into snapshot_id;

  if current_status <> previous_status then
    severity := case current_status when 'healthy' then 'recovered' else current_status end;
    message := pg_catalog.format('system status changed from %s to %s', previous_status, current_status);
    if pg_catalog.jsonb_array_length(report -> 'recommendations') > 0 then
      message := message || pg_catalog.format(' (%s)', (
        select pg_catalog.string_agg(r, ', ') from pg_catalog.jsonb_array_elements_text(report -> 'recommendations') r));
    end if;
    insert into public.system_alerts (severity, message, report)
    values (severity, message, report)
    returning id into alert_id;
    alert := pg_catalog.jsonb_build_object('alert_id', alert_id, 'severity', severity,
      'status', current_status, 'previous_status', previous_status,
      'snapshot_id', snapshot_id, 'at', pg_catalog.now());
    perform pg_catalog.pg_notify('system_alerts', alert::text);
  end if;
  return report || pg_catalog.jsonb_build_object('snapshot_id', snapshot_id, 'alert', alert);
end
$$;
revoke all on function public.record_health_snapshot() from public, anon, authenticated, service_role;
grant execute on function public.record_health_snapshot() to service_role;

-- Store a performance sample: response time of the health check and of representative
-- app reads (the latest sender's profile, their newest SMS page and contacts page), and the
-- error rate of the critical operations since the previous sample: calls that ended in an
-- error other than a refusal, over all their calls (0 when there were none). The figures
-- come from the counters of smsao.critical_call_totals(), which count calls whose
-- transaction rolled back too; each sample keeps the totals it saw in details.counters.
-- Run every minute by pg_cron, it also prunes all rate-limit state past its window.
create or replace function public.record_performance_sample() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz;
  health_ms numeric;
  app_ms numeric;
  sender uuid;
  totals jsonb;
  previous jsonb;
  calls bigint;
  errors bigint;
  refusals bigint;
  rate numeric;
  pruned integer;
  batch integer;
  sample public.performance_samples;
begin
  if smsao.caller_role() <> 'service_role' then
    raise exception 'record_performance_sample: only service_role may call this' using errcode = '42501';
  end if;

  started := pg_catalog.clock_timestamp();
  perform smsao.health_report();
  health_ms := extract(epoch from pg_catalog.clock_timestamp() - started) * 1000;

  started := pg_catalog.clock_timestamp();
  select l.user_id into sender from public.sms_logs l order by l.id desc limit 1;
  perform from public.profiles p where p.user_id = sender;
  perform from public.sms_logs l where l.user_id = sender order by l.created_at desc limit 50;
  perform from public.contacts c where c.user_id = sender order by c.phone limit 50;
  app_ms := extract(epoch from pg_catalog.clock_timestamp() - started) * 1000;

  totals := smsao.critical_counters_now();
  previous := smsao.critical_counters_at('infinity');
  calls := smsao.counters_delta(totals, previous, 'calls');
  errors := smsao.counters_delta(totals, previous, 'errors');
  refusals := smsao.counters_delta(totals, previous, 'refusals');
  rate := case when calls > 0 then least(round(errors::numeric / calls, 6), 1) else 0 end;
  -- Every key past its window goes, in batches: anon callers can mint a key per call, and
  -- a fixed number a minute would fall behind a flood of new keys. The state is then bounded
  -- by the keys used within their windows (for anon at most an hour, plus this minute).
  pruned := 0;
  loop
    batch := smsao.prune_rate_limit_state(10000);
    pruned := pruned + batch;
    exit when batch < 10000;
  end loop;

  insert into public.performance_samples (sampled_at, response_time_ms, error_rate, details)
  values (pg_catalog.now(), round(health_ms + app_ms, 3), rate,
          pg_catalog.jsonb_build_object(
            'health_check_ms', round(health_ms, 3),
            'app_queries_ms', round(app_ms, 3),
            'calls_since_previous', calls,
            'errors_since_previous', errors,
            'refusals_since_previous', refusals,
            'rate_limit_keys_pruned', pruned,
            'counters', totals))
  returning * into sample;
  return pg_catalog.to_jsonb(sample);
end
$$;
revoke all on function public.record_performance_sample() from public, anon, authenticated, service_role;
grant execute on function public.record_performance_sample() to service_role;
