-- Frozen by scripts/freeze_sql.py for revision 0007_alive. Do not edit.

-- ==== sql/schema/60_alive.sql ====
-- Revision 0007_alive: the scheduler seen as it runs over time.
-- Which login scheduled the jobs (smsao.record_schedule_state): pg_cron shows a job only
-- to its owner, so the health check can say why it cannot see them.
alter table smsao.scheduler_state add column scheduled_by text;

-- ==== sql/schema/61_recovery.sql ====
-- Revision 0007_alive: backups and restore drills as vital signs (CONTRACT section 3), and
-- the embedded database's own backup schedule (section 4).

-- Every `smsao-db backup` and `drill` run, and every run of the scheduled backup and drill
-- jobs, on any server: the health check reads the newest successful one of each kind
-- (backup_age_s, restore_drill_age_s). Written only through smsao.record_recovery_run().
-- A few rows a day; kept (a year of them is a few hundred kilobytes).
create table smsao.recovery_runs (
  id          bigint generated always as identity primary key,
  kind        text not null check (kind in ('backup', 'drill')),
  started_at  timestamptz not null,
  finished_at timestamptz not null,
  ok          boolean not null,
  error       text,
  -- 'runner' (smsao-db backup / drill) or 'pg_cron' (the scheduled jobs of the embedded database)
  run_by      text not null check (run_by in ('runner', 'pg_cron')),
  -- what the run did: the backup's label and type, the row counts around it, the drill's steps
  detail      jsonb not null default '{}'::jsonb,
  check (finished_at >= started_at),
  check (ok = (error is null))
);
create index recovery_runs_newest_ok_idx on smsao.recovery_runs (kind, finished_at desc) where ok;

-- Where the embedded database keeps its scheduled backups: the program pg_cron runs as the
-- server's OS user (a script `smsao-db up` writes beside pgBackRest's configuration), and
-- the cluster it belongs to. Only `smsao-db up` writes this row (smsao.configure_scheduled_recovery);
-- on a server given by URL there is none, so its backups are not scheduled by the package.
-- system_identifier: a copy of the cluster made another way (pg_basebackup to a new server,
-- a logical dump restored elsewhere) keeps the row but not the identifier, and schedules nothing.
create table smsao.recovery_config (
  singleton         boolean primary key default true check (singleton),
  system_identifier numeric not null,
  program           text not null check (program <> ''),
  configured_at     timestamptz not null default now()
);

alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data',
                    'longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions',
                    'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h',
                    'security_refusals_1h', 'wal_archive_failing', 'backup_age_s', 'restore_drill_age_s'));

insert into smsao.health_thresholds (metric, warning_at, critical_at, grace_s, recommendation, description) values
  ('wal_archive_failing', 1, 1, null, 'check_wal_archiving',
   'WAL segments that failed to archive since the last success (pg_stat_archiver); pg_wal grows until they do'),
  ('backup_age_s', 93600, 180000, null, 'take_backup',
   'seconds since the newest successful backup (26 h: one daily backup missed; 50 h: two)'),
  ('restore_drill_age_s', 691200, 7948800, null, 'run_restore_drill',
   'seconds since the newest successful restore drill (8 days: one weekly drill missed; 92 days: a quarter)')
on conflict (metric) do nothing;

-- ==== sql/functions/backup_jobs.sql ====
-- The embedded database's own backup schedule (revision 0007_alive; CONTRACT section 4):
-- a daily backup (full weekly, incremental on the other days) and a weekly restore drill,
-- run by pg_cron with no crontab and no daemon. pg_cron runs them as the superuser that
-- `smsao-db up` scheduled them with, so `COPY ... FROM PROGRAM` runs a program as the
-- server's OS user: the script `up` writes beside pgBackRest's configuration
-- (runner/backup.py, scheduled_program), named in smsao.recovery_config. The work that
-- needs the database (row counts, the comparison, the record) is here; the program only
-- runs pgBackRest, pg_ctl and psql and prints `key<TAB>value` lines.
-- On a server given by URL there is no smsao.recovery_config row: nothing is scheduled
-- (its runbook's crontab runs `smsao-db backup` and `drill`, which record their runs too).

-- Called by `smsao-db up` once pgBackRest is configured (NULL: unconfigure).
create or replace function smsao.configure_scheduled_recovery(program text) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if program is null then
    delete from smsao.recovery_config;
    return;
  end if;
  if program !~ '^/' then
    raise exception 'configure_scheduled_recovery: program must be an absolute path, not %', program
      using errcode = '22023';
  end if;
  insert into smsao.recovery_config (singleton, system_identifier, program, configured_at)
  values (true, (select c.system_identifier from pg_catalog.pg_control_system() c), program, pg_catalog.now())
  on conflict (singleton) do update
    set system_identifier = excluded.system_identifier, program = excluded.program,
        configured_at = excluded.configured_at;
end
$$;
revoke all on function smsao.configure_scheduled_recovery(text) from public, anon, authenticated, service_role;

-- The scheduled jobs, for smsao.cron_jobs(): none unless `up` configured this very cluster.
create or replace function smsao.recovery_cron_jobs()
  returns table (jobname text, schedule text, command text, runs_in text)
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  configured numeric;
begin
  select c.system_identifier into configured from smsao.recovery_config c;
  if configured is null or configured <> (select s.system_identifier from pg_catalog.pg_control_system() s) then
    return;
  end if;
  return query values
    ('smsao-backup'::text, '15 2 * * *'::text, 'call smsao.run_scheduled_backup()'::text, 'target'::text),
    -- Sunday, after that day's backup (full) and the 03:00 cleanup.
    ('smsao-restore-drill', '45 3 * * 0', 'call smsao.run_scheduled_drill()', 'target');
end
$$;
revoke all on function smsao.recovery_cron_jobs() from public, anon, authenticated, service_role;

-- Exact row counts of every permanent table of the package's schemas, as {"schema.table": n}
-- (runner/backup.py package_table_counts does the same from Python). UNLOGGED tables (the
-- rate-limit windows) are left out: a restore or a crash empties them by design.
create or replace function smsao.package_table_counts() returns jsonb
  language plpgsql stable
  set search_path = ''
as $$
declare
  t record;
  n bigint;
  counts jsonb := '{}'::jsonb;
begin
  for t in
    select ns.nspname, c.relname
    from pg_catalog.pg_class c join pg_catalog.pg_namespace ns on ns.oid = c.relnamespace
    where c.relkind = 'r' and c.relpersistence = 'p'
      and ns.nspname in ('public', 'smsao', 'auth', 'smsao_migrations')
  loop
    execute pg_catalog.format('select count(*) from %I.%I', t.nspname, t.relname) into n;
    counts := counts || pg_catalog.jsonb_build_object(pg_catalog.format('%I.%I', t.nspname, t.relname), n);
  end loop;
  return counts;
end
$$;
revoke all on function smsao.package_table_counts() from public, anon, authenticated, service_role;

-- What differs between a restored copy's row counts and the live database's around the
-- backup (runner/drill.py compare_counts is the same rule): a table nobody wrote during the
-- backup matches exactly, one written during it lies between its counts before and after.
-- smsao.health_counters is not compared: the jobs merge its rows in place (it gains and loses
-- rows within one backup), and the drill's integrity recounts check its sums instead.
create or replace function smsao.table_count_problems(restored jsonb, before jsonb, after jsonb) returns text[]
  language plpgsql immutable
  set search_path = ''
as $$
declare
  t record;
  lo bigint;
  hi bigint;
  got bigint;
  problems text[] := '{}'::text[];
begin
  for t in select e.key, e.value from pg_catalog.jsonb_each(coalesce(before, '{}'::jsonb)) e order by e.key loop
    continue when t.key = 'smsao.health_counters';
    lo := least(t.value::bigint, coalesce((after ->> t.key)::bigint, t.value::bigint));
    hi := greatest(t.value::bigint, coalesce((after ->> t.key)::bigint, t.value::bigint));
    got := (restored ->> t.key)::bigint;
    if got is null then
      problems := problems || pg_catalog.format('%s is missing', t.key);
    elsif got < lo or got > hi then
      problems := problems || case when lo = hi
        then pg_catalog.format('%s: %s rows restored, %s in the live database at the backup', t.key, got, lo)
        else pg_catalog.format('%s: %s rows restored, %s..%s in the live database during the backup', t.key, got, lo, hi) end;
    end if;
  end loop;
  return problems;
end
$$;
revoke all on function smsao.table_count_problems(jsonb, jsonb, jsonb) from public, anon, authenticated, service_role;

-- Runs the configured program with `args` as the server's OS user and returns its
-- `key<TAB>value` lines as one object (a later line wins). Superusers only (COPY PROGRAM).
create or replace function smsao.run_recovery_program(args text) returns jsonb
  language plpgsql
  set search_path = ''
as $$
declare
  program text;
  result jsonb;
  output_table text := 'smsao_program_output';
begin
  select c.program into program from smsao.recovery_config c;
  if program is null then
    raise exception 'no scheduled backups are configured in this database (`smsao-db up` configures them)'
      using errcode = '55000';
  end if;
  if args !~ '^[a-z]+( [A-Za-z0-9_-]+)*$' then
    raise exception 'run_recovery_program: bad arguments %', args using errcode = '22023';
  end if;
  -- Dynamic SQL: the temporary table exists only while this runs. CSV with control
  -- characters as delimiter and quote: every line is taken as it is, backslashes included.
  execute pg_catalog.format('create temporary table if not exists %I (n bigint generated always as identity, line text) '
                            'on commit drop', output_table);
  execute pg_catalog.format('truncate pg_temp.%I', output_table);
  execute pg_catalog.format('copy pg_temp.%I (line) from program %L with (format csv, delimiter %L, quote %L)', output_table,
                            '''' || pg_catalog.replace(program, '''', '''\''''') || ''' ' || args, e'\x01', e'\x02');
  execute pg_catalog.format($q$select coalesce(pg_catalog.jsonb_object_agg(pg_catalog.split_part(o.line, e'\t', 1),
                                 pg_catalog.substr(o.line, pg_catalog.strpos(o.line, e'\t') + 1) order by o.n), '{}')
                               from pg_temp.%I o where pg_catalog.strpos(o.line, e'\t') > 1$q$, output_table) into result;
  return result;
end
$$;
revoke all on function smsao.run_recovery_program(text) from public, anon, authenticated, service_role;

-- One scheduled backup: full when no full backup succeeded in the last 6.5 days (weekly),
-- incremental otherwise; the row counts around it (for the drill) in its manifest and its
-- record. Records the outcome and returns it; never raises (run_scheduled_backup does, after
-- the record is committed).
create or replace function smsao.scheduled_backup() returns jsonb
  language plpgsql
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  want_full boolean;
  before jsonb;
  after jsonb;
  output jsonb := '{}'::jsonb;
  detail jsonb;
  failure text;
begin
  want_full := not exists (select from smsao.recovery_runs r
                           where r.kind = 'backup' and r.ok and r.detail ->> 'type' = 'full'
                             and r.finished_at > pg_catalog.now() - interval '6 days 12 hours');
  begin
    before := smsao.package_table_counts();
    -- pgBackRest reaches the server through its socket, named by the port.
    output := smsao.run_recovery_program('backup ' || case when want_full then 'full' else 'incr' end
                                         || ' ' || pg_catalog.current_setting('port'));
    -- pgBackRest's info: the newest backup of the stanza is the one just taken.
    output := output || coalesce((select pg_catalog.jsonb_build_object('label', b.value ->> 'label', 'type', b.value ->> 'type')
                                  from pg_catalog.jsonb_array_elements((output ->> 'info')::jsonb -> 0 -> 'backup') b
                                  order by (b.value #>> '{timestamp,stop}')::bigint desc limit 1), '{}'::jsonb);
    if output ->> 'status' is distinct from 'ok' then
      failure := coalesce(output ->> 'error', 'the backup program printed no outcome');
    elsif coalesce(output ->> 'label', '') !~ '^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$' then
      failure := pg_catalog.format('the backup program named no backup label (%s)', output ->> 'label');
    else
      after := smsao.package_table_counts();
      detail := pg_catalog.jsonb_build_object('label', output ->> 'label', 'counts_before', before,
                                              'counts_after', after, 'taken_at', pg_catalog.clock_timestamp());
      -- The manifest the drills read (runner/backup.py PgBackRest.manifest).
      execute pg_catalog.format(
        'copy (select %L::text) to program %L with (format csv, delimiter %L, quote %L)', detail::text,
        (select '''' || pg_catalog.replace(c.program, '''', '''\''''') || ''' manifest ' || (output ->> 'label')
         from smsao.recovery_config c), e'\x01', e'\x02');
    end if;
  exception when others then
    failure := sqlerrm;
  end;
  detail := pg_catalog.jsonb_build_object('label', output ->> 'label', 'type', output ->> 'type',
                                          'requested', case when want_full then 'full' else 'incr' end,
                                          'counts_before', before, 'counts_after', after);
  perform smsao.record_recovery_run('backup', started, pg_catalog.clock_timestamp(), failure is null, failure,
                                    pg_catalog.jsonb_strip_nulls(detail), 'pg_cron');
  return detail || pg_catalog.jsonb_build_object('ok', failure is null, 'error', failure);
end
$$;
revoke all on function smsao.scheduled_backup() from public, anon, authenticated, service_role;

-- One scheduled restore drill of the newest recorded backup: restore it into a scratch
-- cluster (the program: pgBackRest restore, recovered to the backup's end, started on a
-- private socket with pg_cron off), its row counts against those recorded around the backup,
-- and the integrity checks `up` wrote beside the program. `smsao-db drill` also runs the
-- pgTAP contract (verify), which needs the Python runner.
create or replace function smsao.scheduled_drill() returns jsonb
  language plpgsql
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  backup_detail jsonb;
  output jsonb := '{}'::jsonb;
  problems text[];
  failure text;
begin
  begin
    select r.detail into backup_detail from smsao.recovery_runs r
    where r.kind = 'backup' and r.ok and r.detail ? 'label' and r.detail ? 'counts_before'
    order by r.finished_at desc limit 1;
    if backup_detail is null then
      failure := 'no successful backup with its row counts is recorded: nothing to drill';
    elsif (backup_detail ->> 'label') !~ '^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$' then
      failure := pg_catalog.format('bad backup label %s', backup_detail ->> 'label');
    else
      output := smsao.run_recovery_program('drill ' || (backup_detail ->> 'label'));
      if output ->> 'status' is distinct from 'ok' then
        failure := coalesce(output ->> 'error', 'the drill program printed no outcome');
      else
        problems := smsao.table_count_problems((output ->> 'counts')::jsonb, backup_detail -> 'counts_before',
                                               backup_detail -> 'counts_after');
        if coalesce(output ->> 'integrity_failed', '0') <> '0' then
          problems := problems || pg_catalog.format('integrity: %s check(s) fail: %s',
                                                    output ->> 'integrity_failed', output ->> 'integrity_detail');
        end if;
        if pg_catalog.cardinality(problems) > 0 then
          failure := pg_catalog.array_to_string(problems[1:5], '; ');
        end if;
      end if;
    end if;
  exception when others then
    failure := sqlerrm;
  end;
  output := pg_catalog.jsonb_build_object(
    'backup', backup_detail ->> 'label', 'rto_s', (output ->> 'rto_s')::numeric,
    'integrity_checks', (output ->> 'integrity_checks')::integer,
    'scope', 'restore, start, row counts, integrity (verify needs `smsao-db drill`)');
  perform smsao.record_recovery_run('drill', started, pg_catalog.clock_timestamp(), failure is null, failure,
                                    pg_catalog.jsonb_strip_nulls(output), 'pg_cron');
  return output || pg_catalog.jsonb_build_object('ok', failure is null, 'error', failure);
end
$$;
revoke all on function smsao.scheduled_drill() from public, anon, authenticated, service_role;

-- What the jobs call. Procedures without a pinned search_path (every name is qualified) so
-- that they can commit the record before raising: a failed backup or drill is then both
-- recorded (backup_age_s, restore_drill_age_s) and a failed run (cron_failures_1h).
create or replace procedure smsao.run_scheduled_backup()
  language plpgsql
as $$
declare
  outcome jsonb := smsao.scheduled_backup();
begin
  commit;
  if not (outcome ->> 'ok')::boolean then
    raise exception 'scheduled backup failed: %', outcome ->> 'error';
  end if;
end
$$;
revoke all on procedure smsao.run_scheduled_backup() from public, anon, authenticated, service_role;

create or replace procedure smsao.run_scheduled_drill()
  language plpgsql
as $$
declare
  outcome jsonb := smsao.scheduled_drill();
begin
  commit;
  if not (outcome ->> 'ok')::boolean then
    raise exception 'scheduled restore drill failed: %', outcome ->> 'error';
  end if;
end
$$;
revoke all on procedure smsao.run_scheduled_drill() from public, anon, authenticated, service_role;

-- ==== sql/functions/cron_jobs.sql ====
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

-- ==== sql/functions/monitoring.sql ====
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

-- ==== sql/functions/monitoring_access.sql ====
-- Monitoring and retention are for operators: service_role (the backend, pg_cron, a DBA)
-- and active admins. Everyone else gets 42501 naming the function.
create or replace function smsao.require_operator(function_name text) returns void
  language plpgsql stable
  set search_path = ''
as $$
begin
  if smsao.caller_role() = 'service_role' or smsao.is_admin() then
    return;
  end if;
  raise exception '%: only admins and service_role may call this', function_name
    using errcode = '42501';
end
$$;
revoke all on function smsao.require_operator(text) from public, anon, authenticated, service_role;

-- The critical operations' figures for the dashboard, `/metrics` and `monitor`, which may run
-- as a login granted only service_role. The figures come from sequences and samples that
-- service_role cannot read itself (and need not): these three readers are SECURITY DEFINER,
-- executable by service_role alone, and return exactly what smsao.critical_call_totals(),
-- smsao.critical_calls_since() and smsao.critical_calls_per_hour() return to the owner.
create or replace function smsao.dashboard_call_totals()
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('smsao.dashboard_call_totals');
  return query select t.operation, t.calls, t.errors, t.refusals from smsao.critical_call_totals() t;
end
$$;
revoke all on function smsao.dashboard_call_totals() from public, anon, authenticated, service_role;
grant execute on function smsao.dashboard_call_totals() to service_role;

create or replace function smsao.dashboard_calls_since(since timestamptz)
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('smsao.dashboard_calls_since');
  return query select c.operation, c.calls, c.errors, c.refusals
               from smsao.critical_calls_since(dashboard_calls_since.since) c;
end
$$;
revoke all on function smsao.dashboard_calls_since(timestamptz) from public, anon, authenticated, service_role;
grant execute on function smsao.dashboard_calls_since(timestamptz) to service_role;

create or replace function smsao.dashboard_calls_per_hour(hours integer)
  returns table (hour timestamptz, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('smsao.dashboard_calls_per_hour');
  return query select h.hour, h.calls, h.errors, h.refusals
               from smsao.critical_calls_per_hour(dashboard_calls_per_hour.hours) h;
end
$$;
revoke all on function smsao.dashboard_calls_per_hour(integer) from public, anon, authenticated, service_role;
grant execute on function smsao.dashboard_calls_per_hour(integer) to service_role;

-- ==== sql/functions/production_system_health_check.sql ====
-- The health report (CONTRACT section 3):
--   {"timestamp", "system_status": "healthy"|"warning"|"critical",
--    "metrics": {"total_users", "active_sms_configs", "pending_credit_requests",
--                "failed_sms_24h", "orphaned_data", "sms_failure_rate"},
--    "recommendations": [code, ...],
--    "checks": {metric: "ok"|"warning"|"critical"}, "thresholds": {...},
--    "details": {"orphaned_data": {...}, "sms_window": {...}}}
--
-- Metrics, all live (same snapshot as the caller), none scanning a big table:
--   total_users              = count(*) from profiles                      [counter]
--   active_sms_configs       = count(*) from sms_configurations where is_active  [small table]
--   pending_credit_requests  = count(*) from credit_requests where status = 'pending'  [counter]
--   failed_sms_24h           = count(*) from sms_logs where status = 'failed'
--                              and created_at > now() - 24 hours
--                              [per-hour counters, plus the window's first, partial hour
--                               from the partial index sms_logs_failed_created_idx]
--   orphaned_data            = rows whose owner is gone in the two relations that no
--                              foreign key protects (see sql/schema/10_tables.sql):
--                              sms_logs whose user_id has no profile, plus otp_codes
--                              whose (non-null) user_id has no profile   [counters]
--                              A profile exists exactly while its auth.users row does.
--   sms_failure_rate         = failed / all sms_logs created since the start of the hour
--                              24 hours ago (details.sms_window)        [per-hour counters]
--
-- Vital signs of the engine and the scheduler (sql/functions/vitals.sql), also in metrics:
--   longest_transaction_s, connection_usage, xid_age_ratio, blocked_sessions,
--   database_size_bytes, health_snapshot_age_s, cron_failures_1h, security_refusals_1h
--   (NULL where not measurable, and details.unknown says why; details.critical_operations
--   has the last hour per operation, NULL when security_refusals_1h is).
--   and of recovery (sql/functions/recovery_vitals.sql): wal_archive_failing, backup_age_s,
--   restore_drill_age_s.
--
-- Status: the worst level among the checks. Each threshold in smsao.health_thresholds
-- gives 'warning' from warning_at and 'critical' from critical_at (a NULL value is 'ok');
-- no active SMS configuration is always critical (nothing can be sent).
-- Recommendations: configure_sms_gateway (no active configuration), and the code of each
-- threshold row whose check is at warning or worse (smsao.health_thresholds.recommendation),
-- once each, in a fixed order.
create or replace function smsao.health_report() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  at timestamptz := pg_catalog.now();
  window_start timestamptz := smsao.hour_bucket(at - interval '24 hours');
  users bigint;
  pending bigint;
  orphan_sms bigint;
  orphan_otp bigint;
  window_total bigint;
  window_failed bigint;
  failed_later bigint;
  failed_edge bigint;
  configs bigint;
  failed_24h bigint;
  rate numeric;
  t record;
  val numeric;
  sample numeric;
  lvl text;
  checks jsonb := '{}'::jsonb;
  thresholds jsonb := '{}'::jsonb;
  codes text[] := '{}'::text[];
  recommendations text[];
  status text := 'healthy';
  grace interval;
  engine jsonb;
  scheduler jsonb;
  vitals jsonb;
  last_hour jsonb;
  unknown jsonb := '{}'::jsonb;
begin
  select coalesce(sum(c.value) filter (where c.metric = 'total_users' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'pending_credit_requests' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'orphaned_sms_logs' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'orphaned_otp_codes' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms' and c.bucket >= window_start), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms_failed' and c.bucket >= window_start), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms_failed'
                                         and c.bucket >= window_start + interval '1 hour'), 0)::bigint
    into users, pending, orphan_sms, orphan_otp, window_total, window_failed, failed_later
    from smsao.health_counters c;

  select count(*) into failed_edge from public.sms_logs l
  where l.status = 'failed' and l.created_at > at - interval '24 hours'
    and l.created_at < window_start + interval '1 hour';
  failed_24h := failed_edge + failed_later;

  select count(*) into configs from public.sms_configurations s where s.is_active;
  rate := case when window_total > 0 then round(window_failed::numeric / window_total, 4) else 0 end;

  select pg_catalog.make_interval(secs => coalesce(h.grace_s, 30)) into grace
  from smsao.health_thresholds h where h.metric = 'blocked_sessions';
  -- The last hour of the counters that survive rollback, from the per-minute sample taken
  -- at its start (at most 2 minutes earlier). Without such a sample (the scheduler not
  -- running an hour ago) the last hour cannot be told apart from what came before: NULL.
  if exists (select from public.performance_samples p
             where p.sampled_at <= at - interval '1 hour' and p.sampled_at >= at - interval '62 minutes'
               and p.details ? 'counters') then
    select coalesce(pg_catalog.jsonb_object_agg(c.operation, pg_catalog.jsonb_build_object(
             'calls', c.calls, 'errors', c.errors, 'refusals', c.refusals)), '{}'::jsonb)
      into last_hour from smsao.critical_calls_since(at - interval '1 hour') c;
  else
    unknown := unknown || pg_catalog.jsonb_build_object('security_refusals_1h',
      'no performance sample from an hour ago (they are taken every minute by smsao-performance-check)');
  end if;
  -- Each vitals function names the metrics it could not measure, and why, under 'unknown'.
  engine := smsao.engine_vitals(coalesce(grace, interval '30 seconds'));
  scheduler := smsao.scheduler_vitals();
  unknown := unknown || coalesce(engine -> 'unknown', '{}'::jsonb) || coalesce(scheduler -> 'unknown', '{}'::jsonb);
  vitals := (engine - 'unknown') || (scheduler - 'unknown') || smsao.recovery_vitals()
            || pg_catalog.jsonb_build_object('security_refusals_1h',
                 (select sum((o.value ->> 'refusals')::bigint) from pg_catalog.jsonb_each(last_hour) o));

  for t in select * from smsao.health_thresholds h order by h.metric loop
    val := case t.metric
             when 'failed_sms_24h' then failed_24h
             when 'sms_failure_rate' then rate
             when 'pending_credit_requests' then pending
             when 'orphaned_data' then orphan_sms + orphan_otp
             else (vitals ->> t.metric)::numeric
           end;
    sample := case t.metric when 'sms_failure_rate' then window_total else val end;
    lvl := case when val is null or sample < t.min_sample then 'ok'
                when val >= t.critical_at then 'critical'
                when val >= t.warning_at then 'warning'
                else 'ok' end;
    checks := checks || pg_catalog.jsonb_build_object(t.metric, lvl);
    thresholds := thresholds || pg_catalog.jsonb_build_object(t.metric, pg_catalog.jsonb_build_object(
      'warning_at', t.warning_at, 'critical_at', t.critical_at, 'min_sample', t.min_sample, 'grace_s', t.grace_s));
    if lvl <> 'ok' and t.recommendation is not null then
      codes := codes || t.recommendation;
    end if;
  end loop;
  checks := checks || pg_catalog.jsonb_build_object(
    'active_sms_configs', case when configs = 0 then 'critical' else 'ok' end);
  if configs = 0 then
    codes := codes || 'configure_sms_gateway'::text;
  end if;
  -- Each code once, in the order of this list (codes not in it last, by name).
  recommendations := array(
    select c from (select distinct u as c from pg_catalog.unnest(codes) u) d
    order by pg_catalog.array_position(array['configure_sms_gateway', 'investigate_failed_sms',
               'review_pending_credit_requests', 'cleanup_orphaned_data', 'check_scheduler',
               'investigate_long_transactions', 'investigate_lock_waits', 'review_connection_pooling',
               'vacuum_freeze', 'investigate_refusals', 'check_wal_archiving', 'take_backup',
               'run_restore_drill']::text[], c) nulls last, c);

  if exists (select from pg_catalog.jsonb_each_text(checks) e where e.value = 'critical') then
    status := 'critical';
  elsif exists (select from pg_catalog.jsonb_each_text(checks) e where e.value = 'warning') then
    status := 'warning';
  end if;

  return pg_catalog.jsonb_build_object(
    'timestamp', at,
    'system_status', status,
    'metrics', pg_catalog.jsonb_build_object(
      'total_users', users,
      'active_sms_configs', configs,
      'pending_credit_requests', pending,
      'failed_sms_24h', failed_24h,
      'orphaned_data', orphan_sms + orphan_otp,
      'sms_failure_rate', rate) || vitals,
    'recommendations', pg_catalog.to_jsonb(recommendations),
    'checks', checks,
    'thresholds', thresholds,
    'details', pg_catalog.jsonb_build_object(
      'orphaned_data', pg_catalog.jsonb_build_object('sms_logs', orphan_sms, 'otp_codes', orphan_otp),
      'sms_window', pg_catalog.jsonb_build_object(
        'since', window_start, 'total', window_total, 'failed', window_failed),
      'critical_operations', last_hour,
      'unknown', unknown));
end
$$;
revoke all on function smsao.health_report() from public, anon, authenticated, service_role;

create or replace function public.production_system_health_check() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('production_system_health_check');
  return smsao.health_report();
end
$$;
comment on function public.production_system_health_check() is
  'System health for admins and service_role. orphaned_data = sms_logs rows whose user_id has '
  'no profile + otp_codes rows whose non-null user_id has no profile (the relations without a '
  'foreign key). Thresholds: smsao.health_thresholds. See sql/functions/production_system_health_check.sql.';
revoke all on function public.production_system_health_check() from public, anon, authenticated, service_role;
grant execute on function public.production_system_health_check() to authenticated, service_role;

-- ==== sql/functions/recovery_vitals.sql ====
-- Recovery as vital signs (revision 0007_alive): WAL archiving, the newest successful backup
-- and the newest successful restore drill. Each NULL where nothing is configured (archiving
-- off, no backup or drill ever recorded), never 0; its check is then 'ok'.

-- Records one run of `smsao-db backup` / `drill` (runner/recovery_cli.py) or of the scheduled
-- jobs (smsao.scheduled_backup / scheduled_drill). The owner and superusers only: a row here
-- silences the backup alerts.
create or replace function smsao.record_recovery_run(kind text, started_at timestamptz, finished_at timestamptz,
                                                      ok boolean, error text, detail jsonb default '{}'::jsonb,
                                                      run_by text default 'runner') returns bigint
  language plpgsql
  set search_path = ''
as $$
declare
  id bigint;
begin
  if kind is null or kind not in ('backup', 'drill') then
    raise exception 'record_recovery_run: kind must be backup or drill, not %', coalesce(kind, 'NULL') using errcode = '22023';
  end if;
  if run_by is null or run_by not in ('runner', 'pg_cron') then
    raise exception 'record_recovery_run: run_by must be runner or pg_cron, not %', coalesce(run_by, 'NULL') using errcode = '22023';
  end if;
  if started_at is null or finished_at is null or finished_at < started_at then
    raise exception 'record_recovery_run: started_at and finished_at are required, finished_at not before started_at'
      using errcode = '22023';
  end if;
  if ok is null then
    raise exception 'record_recovery_run: ok is required' using errcode = '22023';
  end if;
  insert into smsao.recovery_runs (kind, started_at, finished_at, ok, error, run_by, detail)
  values (kind, started_at, finished_at, ok,
          case when ok then null else coalesce(nullif(error, ''), 'failed (no reason given)') end,
          run_by, coalesce(detail, '{}'::jsonb))
  returning recovery_runs.id into id;
  return id;
end
$$;
revoke all on function smsao.record_recovery_run(text, timestamptz, timestamptz, boolean, text, jsonb, text)
  from public, anon, authenticated, service_role;

-- SECURITY DEFINER: the health check's callers (admins, service_role) cannot read
-- smsao.recovery_runs, nor list pg_wal/archive_status (superusers and pg_monitor).
create or replace function smsao.recovery_vitals() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  archive_mode text := pg_catalog.current_setting('archive_mode');
  archiver record;
  failing bigint;
  backup_at timestamptz;
  drill_at timestamptz;
begin
  -- A standby archives only with archive_mode = always; archiving off: nothing can fail.
  if archive_mode = 'off' or (pg_catalog.pg_is_in_recovery() and archive_mode <> 'always') then
    failing := null;
  else
    select a.last_archived_time, a.last_failed_time into archiver from pg_catalog.pg_stat_archiver a;
    if (archiver.last_failed_time is not null
        and (archiver.last_archived_time is null or archiver.last_failed_time > archiver.last_archived_time))
       or (pg_catalog.current_setting('archive_command') = '' and coalesce(pg_catalog.current_setting('archive_library', true), '') = '') then
      -- Failing now (or nothing to archive with): the segments waiting for the archive (their
      -- .ready files in pg_wal/archive_status), at least the one that failed.
      begin
        select count(*) into failing from pg_catalog.pg_ls_archive_statusdir() f where f.name like '%.ready';
      exception when insufficient_privilege then
        failing := null;
      end;
      if archiver.last_failed_time is not null then
        failing := greatest(coalesce(failing, 1), 1);
      end if;
    else
      failing := 0;
    end if;
  end if;
  select max(r.finished_at) into backup_at from smsao.recovery_runs r where r.kind = 'backup' and r.ok;
  select max(r.finished_at) into drill_at from smsao.recovery_runs r where r.kind = 'drill' and r.ok;
  return pg_catalog.jsonb_build_object(
    'wal_archive_failing', failing,
    -- greatest() would turn "never" (NULL) into 0: only a recorded run has an age.
    'backup_age_s', case when backup_at is not null
                         then round(greatest(extract(epoch from pg_catalog.now() - backup_at), 0)::numeric, 3) end,
    'restore_drill_age_s', case when drill_at is not null
                                then round(greatest(extract(epoch from pg_catalog.now() - drill_at), 0)::numeric, 3) end);
end
$$;
revoke all on function smsao.recovery_vitals() from public, anon, authenticated, service_role;

-- ==== sql/functions/vitals.sql ====
-- Vital signs of the engine and of the scheduler, and the critical operations' call
-- figures over time (revision 0006_vitals). production_system_health_check() reports them
-- next to the application's metrics; the dashboard and /metrics show them.
-- A value is NULL where it cannot be measured from here (no pg_cron, no statistics
-- privilege): its check is then 'ok'.

-- From PostgreSQL's statistics views. SECURITY DEFINER, so the figures do not depend on who
-- asks: pg_stat_activity shows another role's sessions (their state, backend type and
-- transaction start) only to superusers and members of pg_read_all_stats, and runs here
-- as this function's owner. An owner without that privilege (a managed service's admin
-- role that is not superuser) sees its own sessions only: the longest transaction and the
-- connections in use cannot be told then, so both are NULL (never a reassuring 0) and
-- 'unknown' says why. pg_locks, pg_database and the database size are readable by all.
create or replace function smsao.engine_vitals(blocked_grace interval) returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  this_db oid := (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database());
  -- True for a superuser too.
  sees_all boolean := pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE');
  longest numeric;
  in_use bigint;
  blocked bigint;
  xid_ratio numeric;
  why text;
  unknown jsonb := '{}'::jsonb;
begin
  if sees_all then
    -- Connections are the cluster's (max_connections is); transactions this database's.
    select count(*) into in_use from pg_catalog.pg_stat_activity a where a.backend_type = 'client backend';
    select coalesce(round(extract(epoch from max(pg_catalog.clock_timestamp() - a.xact_start))::numeric, 3), 0)
      into longest
      from pg_catalog.pg_stat_activity a
     where a.backend_type = 'client backend' and a.datid = this_db
       and a.pid <> pg_catalog.pg_backend_pid() and a.xact_start is not null;
  else
    why := pg_catalog.format('role %I, which runs the health check, cannot see other sessions: '
                             'grant it pg_read_all_stats (or pg_monitor)', current_user);
    unknown := pg_catalog.jsonb_build_object('longest_transaction_s', why, 'connection_usage', why);
  end if;
  select count(distinct l.pid) into blocked
    from pg_catalog.pg_locks l
   where not l.granted and l.waitstart < pg_catalog.clock_timestamp() - blocked_grace
     and l.pid in (select a.pid from pg_catalog.pg_stat_activity a where a.datid = this_db);
  select round(max(pg_catalog.age(d.datfrozenxid))::numeric / 2147483648, 6) into xid_ratio
    from pg_catalog.pg_database d;
  return pg_catalog.jsonb_build_object(
    'longest_transaction_s', longest,
    'connection_usage', round(in_use::numeric / pg_catalog.current_setting('max_connections')::numeric, 4),
    'xid_age_ratio', xid_ratio,
    'blocked_sessions', blocked,
    'database_size_bytes', pg_catalog.pg_database_size(this_db),
    'unknown', unknown);
end
$$;
revoke all on function smsao.engine_vitals(interval) from public, anon, authenticated, service_role;

-- The scheduler as a dead man's switch: once this database's jobs are scheduled, the age
-- of the newest health snapshot (they store one every 5 minutes) and the failed runs of
-- the last hour. NULL when it cannot be told, with the reason under 'unknown':
--   * pg_cron is not loaded, or the jobs are not scheduled: both NULL;
--   * pg_cron keeps its run history in another database (`smsao-db schedule status` reads
--     it there), or the jobs belong to a login this function's owner cannot see (cron.job
--     shows a job only to its owner, unless superuser): cron_failures_1h NULL.
-- The age counts from the newest snapshot, or from when the jobs were scheduled or the
-- server started if later: a server that was down, or jobs just applied again, are not a
-- scheduler that stopped.
-- A run that never connected (a job pointed at a stale host or port) has neither a start
-- nor an end time. It counts when it came after the newest run known to be older than an
-- hour (run ids grow with time): a job that has failed since long ago keeps counting.
create or replace function smsao.scheduler_vitals() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  state smsao.scheduler_state;
  scheduled boolean;
  visible boolean := false;
  failures bigint;
  why_failures text;
  since timestamptz;
begin
  -- pg_cron works here when its tables are in this database, or else when its launcher runs
  -- (it does once the extension exists in pg_cron's database; a cron.* line in
  -- postgresql.conf alone loads nothing). Not pg_settings: building that view costs half a
  -- millisecond, a quarter of the health check.
  if pg_catalog.to_regclass('cron.job') is null
     and not exists (select from pg_catalog.pg_stat_activity a where a.backend_type = 'pg_cron launcher') then
    return smsao.scheduler_unknown('pg_cron is not loaded on this server');
  end if;
  select * into state from smsao.scheduler_state;
  scheduled := coalesce(state.jobs_scheduled, false);
  if pg_catalog.to_regclass('cron.job') is null then
    why_failures := pg_catalog.format('pg_cron keeps its run history in database %L (smsao-db schedule status)',
                                      state.cron_database);
  else
    begin
      -- pg_cron lives in this database: its own tables say what is scheduled and how it ran.
      -- Dynamic: the statement names cron's tables, which other databases do not have.
      execute pg_catalog.format(
        $q$select exists (select from %1$I.job j where j.jobname = 'smsao-health-check'
                           and j.database = pg_catalog.current_database() and j.active),
                  (select count(*) from %1$I.job_run_details d join %1$I.job j on j.jobid = d.jobid
                    where j.jobname like 'smsao-%%' and j.database = pg_catalog.current_database()
                      and d.status = 'failed'
                      and (coalesce(d.end_time, d.start_time) > pg_catalog.now() - interval '1 hour'
                           or (d.start_time is null and d.end_time is null
                               and d.runid > coalesce((select max(o.runid) from %1$I.job_run_details o
                                                        where coalesce(o.end_time, o.start_time)
                                                              <= pg_catalog.now() - interval '1 hour'), 0))))$q$,
        'cron')
        into visible, failures;
    exception when insufficient_privilege then
      visible := false;
    end;
    if not visible and scheduled
       and not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
      -- `schedule apply` said they are scheduled, yet cron.job does not show them to us.
      failures := null;
      why_failures := pg_catalog.format('the jobs belong to login %L, and cron.job shows a job only to its '
                                        'owner: run the health check as that login, or a superuser', state.scheduled_by);
    end if;
    scheduled := scheduled or visible;
  end if;
  if not scheduled then
    return smsao.scheduler_unknown('the jobs are not scheduled (smsao-db schedule apply)');
  end if;
  select greatest(max(s.checked_at), state.changed_at, smsao.server_started_at())
    into since from public.system_health_snapshots s;
  return pg_catalog.jsonb_build_object(
    'health_snapshot_age_s', round(extract(epoch from pg_catalog.now() - since)::numeric, 3),
    'cron_failures_1h', failures,
    'unknown', case when why_failures is null then '{}'::jsonb
                    else pg_catalog.jsonb_build_object('cron_failures_1h', why_failures) end);
end
$$;
revoke all on function smsao.scheduler_vitals() from public, anon, authenticated, service_role;

-- When this server last started: its downtime is not the scheduler failing. A function of
-- its own so that a test can play a server that started long ago.
create or replace function smsao.server_started_at() returns timestamptz
  language plpgsql stable
  set search_path = ''
as $$
begin
  return pg_catalog.pg_postmaster_start_time();
end
$$;
revoke all on function smsao.server_started_at() from public, anon, authenticated, service_role;

create or replace function smsao.scheduler_unknown(why text) returns jsonb
  language plpgsql immutable
  set search_path = ''
as $$
begin
  return pg_catalog.jsonb_build_object('health_snapshot_age_s', null, 'cron_failures_1h', null,
    'unknown', pg_catalog.jsonb_build_object('health_snapshot_age_s', why, 'cron_failures_1h', why));
end
$$;
revoke all on function smsao.scheduler_unknown(text) from public, anon, authenticated, service_role;

-- Called by `smsao-db schedule apply` / `remove` (runner/schedule.py), as the login that
-- owns the jobs (pg_cron names each job's owner).
create or replace function smsao.record_schedule_state(jobs_scheduled boolean, cron_database text) returns void
  language sql
  set search_path = ''
as $$
  insert into smsao.scheduler_state (singleton, jobs_scheduled, cron_database, changed_at, scheduled_by)
  values (true, jobs_scheduled, cron_database, pg_catalog.now(), current_user)
  on conflict (singleton) do update
    set jobs_scheduled = excluded.jobs_scheduled, cron_database = excluded.cron_database,
        scheduled_by = excluded.scheduled_by,
        changed_at = case when smsao.scheduler_state.jobs_scheduled = excluded.jobs_scheduled
                          then smsao.scheduler_state.changed_at else excluded.changed_at end
$$;
revoke all on function smsao.record_schedule_state(boolean, text) from public, anon, authenticated, service_role;

-- The helpers below are PL/pgSQL, not SQL: on PostgreSQL 15 an SQL function that pins
-- search_path cannot be inlined and is planned again on every call (a third of a
-- millisecond each), where PL/pgSQL keeps its plans for the session.

-- Sum over the operations of `field` in a counters object ({op: {calls, errors, refusals}}),
-- newer minus older, each operation at least 0 (a counter never goes back).
create or replace function smsao.counters_delta(newer jsonb, older jsonb, field text) returns bigint
  language plpgsql immutable
  set search_path = ''
as $$
begin
  return (select coalesce(sum(greatest((n.value ->> field)::bigint
                                       - coalesce((older #>> array[n.key, field])::bigint, 0), 0)), 0)::bigint
          from pg_catalog.jsonb_each(newer) n);
end
$$;
revoke all on function smsao.counters_delta(jsonb, jsonb, text) from public, anon, authenticated, service_role;

-- The counters now, in the shape performance samples store them (details.counters).
create or replace function smsao.critical_counters_now() returns jsonb
  language plpgsql stable
  set search_path = ''
as $$
begin
  return (select coalesce(pg_catalog.jsonb_object_agg(t.operation, pg_catalog.jsonb_build_object(
                   'calls', t.calls, 'errors', t.errors, 'refusals', t.refusals)), '{}'::jsonb)
          from smsao.critical_call_totals() t);
end
$$;
revoke all on function smsao.critical_counters_now() from public, anon, authenticated, service_role;

-- The counters as the newest performance sample at or before `at` stored them; NULL when
-- no sample is that old.
create or replace function smsao.critical_counters_at(at timestamptz) returns jsonb
  language plpgsql stable
  set search_path = ''
as $$
begin
  return (select p.details -> 'counters' from public.performance_samples p
          where p.sampled_at <= critical_counters_at.at and p.details ? 'counters'
          order by p.sampled_at desc limit 1);
end
$$;
revoke all on function smsao.critical_counters_at(timestamptz) from public, anon, authenticated, service_role;

-- Calls, errors and refusals of each critical operation since `since`, rolled-back calls
-- included: the counters now minus those of the newest sample at or before `since`. With
-- no sample that old (pg_cron not running yet), everything counted so far.
create or replace function smsao.critical_calls_since(since timestamptz)
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable
  set search_path = ''
as $$
declare
  base jsonb := coalesce(smsao.critical_counters_at(since), '{}'::jsonb);
begin
  return query
  select t.operation,
         greatest(t.calls - coalesce((base #>> array[t.operation, 'calls'])::bigint, 0), 0),
         greatest(t.errors - coalesce((base #>> array[t.operation, 'errors'])::bigint, 0), 0),
         greatest(t.refusals - coalesce((base #>> array[t.operation, 'refusals'])::bigint, 0), 0)
  from smsao.critical_call_totals() t
  order by t.operation;
end
$$;
revoke all on function smsao.critical_calls_since(timestamptz) from public, anon, authenticated, service_role;

-- Per hour (UTC) for the last `hours` hours, the critical operations' calls, errors and
-- refusals, from the counters stored by the performance samples around each hour's edges
-- (the current hour ends now). NULL for an hour that began before any sample.
create or replace function smsao.critical_calls_per_hour(hours integer default 24)
  returns table (hour timestamptz, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable
  set search_path = ''
as $$
begin
  return query
  with edges as (
    select h.at as hour,
           smsao.critical_counters_at(h.at) as at_start,
           case when h.at + interval '1 hour' > pg_catalog.now() then smsao.critical_counters_now()
                else smsao.critical_counters_at(h.at + interval '1 hour') end as at_end
    from pg_catalog.generate_series(pg_catalog.date_trunc('hour', pg_catalog.now())
                                      - pg_catalog.make_interval(hours => greatest(critical_calls_per_hour.hours, 1) - 1),
                                    pg_catalog.date_trunc('hour', pg_catalog.now()), interval '1 hour') h(at)
  )
  select e.hour,
         case when e.at_start is not null then smsao.counters_delta(e.at_end, e.at_start, 'calls') end,
         case when e.at_start is not null then smsao.counters_delta(e.at_end, e.at_start, 'errors') end,
         case when e.at_start is not null then smsao.counters_delta(e.at_end, e.at_start, 'refusals') end
  from edges e
  order by e.hour;
end
$$;
revoke all on function smsao.critical_calls_per_hour(integer) from public, anon, authenticated, service_role;

-- ==== sql/policies/recovery_config.sql ====
-- Internal state (schema smsao): written by `smsao-db up` as the owner; read when the jobs
-- are listed. It names a program that pg_cron runs as the server's OS user: nobody else.
alter table smsao.recovery_config enable row level security;
revoke all on table smsao.recovery_config from public, anon, authenticated, service_role;

-- ==== sql/policies/recovery_runs.sql ====
-- Internal state (schema smsao): written by smsao.record_recovery_run(), read by the health
-- check (SECURITY DEFINER) and a DBA. RLS without policies denies anyone granted by mistake.
alter table smsao.recovery_runs enable row level security;
revoke all on table smsao.recovery_runs from public, anon, authenticated, service_role;
