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
-- Where pg_partman is installed, its maintenance (making the audit tables' months ahead)
-- is a job of its own: CALL partman.run_maintenance_proc() commits between tables, and
-- fails with "invalid transaction termination" when anything else shares its job.
create or replace function smsao.cron_jobs()
  returns table (jobname text, schedule text, command text, runs_in text)
  language sql stable security definer
  set search_path = ''
as $$
  select v.jobname, v.schedule, v.command, v.runs_in from (values
    ('smsao-health-check', '*/5 * * * *', 'select public.record_health_snapshot()', 'target'),
    ('smsao-performance-check', '* * * * *', 'select public.record_performance_sample()', 'target'),
    ('smsao-data-cleanup', '0 3 * * *', 'call smsao.run_daily_maintenance()', 'target'),
    ('smsao-cron-history-cleanup', '30 3 * * *',
     -- A run that never ended (server restarted mid-run) has no end_time: its start dates it.
     'delete from cron.job_run_details where coalesce(end_time, start_time) < now() - interval ''7 days''', 'cron')
  ) as v(jobname, schedule, command, runs_in)
  union all
  select r.jobname, r.schedule, r.command, r.runs_in from smsao.recovery_cron_jobs() r
  union all
  select 'smsao-partman-maintenance', '45 2 * * *',
         'call ' || pg_catalog.quote_ident(n.nspname) || '.run_maintenance_proc()', 'target'
    from pg_catalog.pg_extension e join pg_catalog.pg_namespace n on n.oid = e.extnamespace
   where e.extname = 'pg_partman'
$$;
revoke all on function smsao.cron_jobs() from public, anon, authenticated, service_role;
