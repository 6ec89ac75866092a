-- The embedded database's own backup schedule (revision 0007_alive; CONTRACT section 4):
-- a daily backup (full weekly, incremental on the other days) and a weekly restore drill,
-- run by pg_cron with no crontab and no daemon. pg_cron runs them as the superuser that
-- `smsao-db up` scheduled them with, so `COPY ... FROM PROGRAM` runs a program as the
-- server's OS user: the script `up` writes beside pgBackRest's configuration
-- (runner/recovery/backup.py, scheduled_program), named in smsao.recovery_config. The work that
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
-- (runner/recovery/backup.py package_table_counts does the same from Python). UNLOGGED tables (the
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
-- backup (runner/recovery/drill.py compare_counts is the same rule): a table nobody wrote during the
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
