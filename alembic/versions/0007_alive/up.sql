-- Frozen by scripts/freeze_sql.py for revision 0007_alive. Do not edit.

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
--   (NULL where not measurable; details.critical_operations has the last hour per operation);
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
  vitals jsonb;
  last_hour jsonb;
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
  select coalesce(pg_catalog.jsonb_object_agg(c.operation, pg_catalog.jsonb_build_object(
           'calls', c.calls, 'errors', c.errors, 'refusals', c.refusals)), '{}'::jsonb)
    into last_hour from smsao.critical_calls_since(at - interval '1 hour') c;
  vitals := smsao.engine_vitals(coalesce(grace, interval '30 seconds')) || smsao.scheduler_vitals()
            || smsao.recovery_vitals()
            || pg_catalog.jsonb_build_object('security_refusals_1h',
                 (select coalesce(sum((o.value ->> 'refusals')::bigint), 0) from pg_catalog.jsonb_each(last_hour) o));

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
      'critical_operations', last_hour));
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
