-- Recovery as vital signs (revision 0007_alive): WAL archiving, the newest successful backup
-- and the newest successful restore drill. Each NULL where nothing is configured (archiving
-- off, no backup or drill ever recorded), never 0; its check is then 'ok'.

-- Records one run of `smsao-db backup` / `drill` (runner/recovery/commands.py) or of the scheduled
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
