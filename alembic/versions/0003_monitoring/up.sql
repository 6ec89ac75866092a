-- Frozen by scripts/freeze_sql.py for revision 0003_monitoring. Do not edit.

-- ==== sql/schema/30_monitoring.sql ====
-- Monitoring state (revision 0003_monitoring): health thresholds, the live counters
-- behind the health check, and the indexes that keep its other metrics cheap.
-- Access control for these tables is in sql/policies/health_*.sql.

-- What decides the health status. A DBA changes a row (no migration needed):
--   update smsao.health_thresholds set warning_at = 200 where metric = 'failed_sms_24h';
-- A metric is 'warning' from warning_at and 'critical' from critical_at (NULL: that level
-- is never reached). No active SMS configuration is always critical and has no row here.
-- min_sample: a rate is judged only once its window holds at least this many events.
create table smsao.health_thresholds (
  metric      text primary key
              check (metric in ('failed_sms_24h', 'sms_failure_rate',
                                'pending_credit_requests', 'orphaned_data')),
  warning_at  numeric check (warning_at >= 0),
  critical_at numeric check (critical_at >= 0),
  min_sample  bigint not null default 0 check (min_sample >= 0),
  description text not null default '',
  check (critical_at >= warning_at)
);
comment on table smsao.health_thresholds is
  'Thresholds of production_system_health_check(): warning from warning_at, critical from critical_at.';

insert into smsao.health_thresholds (metric, warning_at, critical_at, min_sample, description) values
  ('failed_sms_24h', 100, 1000, 0,
   'SMS with status failed created in the last 24 hours'),
  ('sms_failure_rate', 0.10, 0.25, 100,
   'failed / all SMS created since the start of the hour 24 hours ago (judged from min_sample SMS)'),
  ('pending_credit_requests', 50, null, 0,
   'credit requests waiting for an admin; a backlog, never critical by default'),
  ('orphaned_data', 1000, null, 0,
   'sms_logs and otp_codes rows whose user_id has no profile (see production_system_health_check)')
on conflict (metric) do nothing;

-- Live counters, kept by statement-level triggers in the same transaction as the change
-- (sql/functions/health_counters.sql). A metric's value is sum(value) over its rows:
-- a writer adds its delta to any row of the metric that no other transaction holds
-- (FOR UPDATE SKIP LOCKED) or inserts a new one, so concurrent writers never wait on
-- each other; the number of rows per metric stays near the peak number of concurrent
-- writers, and compaction folds them back. `bucket` is the hour (UTC) of created_at for
-- per-hour metrics and -infinity for the others.
create table smsao.health_counters (
  id     bigint generated always as identity primary key,
  metric text not null,
  bucket timestamptz not null default '-infinity',
  value  bigint not null default 0
) with (fillfactor = 50);  -- room on the page for HOT updates of `value`
create index health_counters_metric_idx on smsao.health_counters (metric, bucket);
comment on table smsao.health_counters is
  'Health metrics as sharded deltas: value of a metric = sum(value) of its rows (per bucket).';

-- The user ids that rows of sms_logs / otp_codes refer to but that have no profile (the
-- owners of orphaned rows). Kept in step by the same triggers, so that deleting rows (the
-- retention cleanup deletes millions) asks this small table whether a row was orphaned
-- instead of probing profiles once per owner. An id stays after its last row is gone:
-- the table grows only with deleted accounts that had rows.
create table smsao.missing_owners (
  user_id uuid primary key
);
comment on table smsao.missing_owners is
  'User ids referenced by sms_logs/otp_codes rows that have no profile (kept by triggers).';

-- failed_sms_24h reads the failures of the window's first, partial hour from here;
-- the index holds only failed messages, so its size follows what it counts.
create index sms_logs_failed_created_idx on public.sms_logs (created_at) where status = 'failed';
-- Counting (and locking) a deleted or re-created user's OTPs for the orphaned-data counter.
create index otp_codes_user_idx on public.otp_codes (user_id) where user_id is not null;

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
create function smsao.cron_jobs()
  returns table (jobname text, schedule text, command text, runs_in text)
  language sql immutable
  set search_path = ''
as $$
  values
    ('smsao-health-check', '*/5 * * * *', 'select public.record_health_snapshot()', 'target'),
    ('smsao-performance-check', '* * * * *', 'select public.record_performance_sample()', 'target'),
    ('smsao-data-cleanup', '0 3 * * *', 'call smsao.run_daily_maintenance()', 'target'),
    ('smsao-cron-history-cleanup', '30 3 * * *',
     'delete from cron.job_run_details where end_time < now() - interval ''7 days''', 'cron')
$$;
revoke all on function smsao.cron_jobs() from public;

-- ==== sql/functions/data_cleanup.sql ====
-- Retention cleanup (CONTRACT section 3). Exactly three rules, nothing else is deleted:
--   otp_codes            expires_at more than 2 hours ago
--   admin_audit_logs, pii_access_audit, function_call_audit
--                        created_at more than 2 years ago
--   contact_import_jobs  status completed or failed, completed_at more than 30 days ago
--
-- Rows go in batches of a few thousand, each one index range of the rule's column, so no
-- statement runs long or locks much. Two entry points share the same steps:
--   public.production_data_cleanup()  the contract's function: one transaction (a function
--                                     cannot commit), batches bound each statement;
--   call smsao.run_data_cleanup()     the procedure pg_cron and `smsao-db cleanup` use:
--                                     commits after every batch, so row locks, the
--                                     transaction's snapshot and an interruption all
--                                     cover one batch at most.
-- This is the only code that can delete audit rows: cleanup_batch runs as the owner with
-- smsao.audit_retention = on for its own duration (see smsao.forbid_audit_change).

-- The retention rules' categories, in cleanup order, with their cutoffs at time `at`.
create function smsao.retention_cutoffs(at timestamptz) returns table (category text, cutoff timestamptz, rule text)
  language sql stable
  set search_path = ''
as $$
  select v.category, v.cutoff, v.rule
  from (values
    (1, 'otp_codes', at - interval '2 hours', 'expires_at more than 2 hours ago'),
    (2, 'contact_import_jobs', at - interval '30 days',
        'completed or failed, completed_at more than 30 days ago'),
    (3, 'admin_audit_logs', at - interval '2 years', 'created_at more than 2 years ago'),
    (4, 'pii_access_audit', at - interval '2 years', 'created_at more than 2 years ago'),
    (5, 'function_call_audit', at - interval '2 years', 'created_at more than 2 years ago')
  ) as v(ord, category, cutoff, rule)
  order by v.ord
$$;
revoke all on function smsao.retention_cutoffs(timestamptz) from public;

-- One batch of one category: the rows whose key (the rule's column) is in
-- [resume_at, upper), where upper is the key of the (batch_size + 1)-th eligible row from
-- resume_at, found by an index-only scan; or all remaining rows up to the cutoff, and then
-- `finished`. The DELETE is one index range scan: each row is visited once, and the
-- next batch starts at upper, so no batch wades through rows an earlier one deleted.
-- When more than batch_size rows share the key resume_at, the batch is exactly those.
-- The DELETE repeats the rule, so a row changed meanwhile is judged by its new values.
create function smsao.cleanup_batch(category text, cutoff timestamptz, resume_at timestamptz,
                                    batch_size integer,
                                    out deleted integer, out next_key timestamptz, out finished boolean)
  language plpgsql security definer
  set search_path = ''
  set smsao.audit_retention = 'on'
as $$
declare
  upper timestamptz;
  last_included timestamptz;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer' using errcode = '22023';
  end if;
  if cutoff is null or resume_at is null then
    raise exception 'cutoff and resume_at must not be null' using errcode = '22023';
  end if;
  -- Where this batch ends: the key of the first row after it (index-only scan).
  case category
  when 'otp_codes' then
    select o.expires_at into upper from public.otp_codes o
    where o.expires_at >= resume_at and o.expires_at < cutoff
    order by o.expires_at offset batch_size limit 1;
  when 'contact_import_jobs' then
    select j.completed_at into upper from public.contact_import_jobs j
    where j.status in ('completed', 'failed') and j.completed_at >= resume_at and j.completed_at < cutoff
    order by j.completed_at offset batch_size limit 1;
  when 'admin_audit_logs' then
    select a.created_at into upper from public.admin_audit_logs a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  when 'pii_access_audit' then
    select a.created_at into upper from public.pii_access_audit a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  when 'function_call_audit' then
    select a.created_at into upper from public.function_call_audit a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  else
    raise exception 'category must be one of the retention categories, got %', category
      using errcode = '22023';
  end case;
  finished := upper is null;
  upper := coalesce(upper, cutoff);
  -- Timestamps step by one microsecond, so "< upper" is "<= upper - 1 us": a bound the
  -- index uses even in a cached generic plan. upper = resume_at means more than a batch
  -- of rows share that key: the batch is exactly those rows.
  last_included := case when upper = resume_at then resume_at else upper - interval '1 microsecond' end;
  case category
  when 'otp_codes' then
    delete from public.otp_codes o
    where o.expires_at >= resume_at and o.expires_at <= last_included and o.expires_at < cutoff;
  when 'contact_import_jobs' then
    delete from public.contact_import_jobs j
    where j.status in ('completed', 'failed')
      and j.completed_at >= resume_at and j.completed_at <= last_included and j.completed_at < cutoff;
  when 'admin_audit_logs' then
    delete from public.admin_audit_logs a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  when 'pii_access_audit' then
    delete from public.pii_access_audit a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  when 'function_call_audit' then
    delete from public.function_call_audit a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  end case;
  get diagnostics deleted = row_count;
  -- After a run of equal keys the next batch starts at that same key: its rows are gone.
  next_key := upper;
end
$$;
revoke all on function smsao.cleanup_batch(text, timestamptz, timestamptz, integer) from public;

-- One step of a cleanup run: the next batch of the current category. `progress` is NULL
-- to start and then what the previous step returned; it carries the cutoffs (fixed when
-- the run starts), the position and the counts, and is the final report once done:
--   {"started_at", "cutoffs": {category: ts}, "categories": {category: deleted},
--    "total", "batches", "dry_run": false, "position": {"index", "resume_at"}}
-- Kept apart from the procedure so that the procedure body holds no expression at all
-- (it cannot pin search_path, see smsao.run_data_cleanup).
create function smsao.data_cleanup_step(progress jsonb, batch_size integer,
                                        out next_progress jsonb, out done boolean)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  cats text[];
  idx integer;
  cat text;
  resume timestamptz;
  b record;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer' using errcode = '22023';
  end if;
  if progress is null then
    select pg_catalog.jsonb_build_object(
             'started_at', pg_catalog.now(),
             'cutoffs', pg_catalog.jsonb_object_agg(c.category, c.cutoff),
             'categories', pg_catalog.jsonb_object_agg(c.category, 0),
             'rules', pg_catalog.jsonb_object_agg(c.category, c.rule),
             'total', 0, 'batches', 0, 'dry_run', false,
             'position', pg_catalog.jsonb_build_object('index', 1, 'resume_at', '-infinity'::timestamptz))
      into progress
      from smsao.retention_cutoffs(pg_catalog.now()) c;
  end if;
  cats := array(select c.category from smsao.retention_cutoffs(pg_catalog.now()) c);
  idx := (progress #>> '{position,index}')::integer;
  if idx > cardinality(cats) then
    next_progress := progress - 'position';
    done := true;
    return;
  end if;
  cat := cats[idx];
  resume := (progress #>> '{position,resume_at}')::timestamptz;

  select * into b
  from smsao.cleanup_batch(cat, (progress #>> array['cutoffs', cat])::timestamptz, resume, batch_size);

  progress := pg_catalog.jsonb_set(progress, array['categories', cat],
                pg_catalog.to_jsonb((progress #>> array['categories', cat])::bigint + b.deleted));
  progress := progress || pg_catalog.jsonb_build_object(
                'total', (progress ->> 'total')::bigint + b.deleted,
                'batches', (progress ->> 'batches')::bigint + 1);
  if b.finished then
    idx := idx + 1;
    resume := '-infinity';
  else
    resume := b.next_key;
  end if;
  progress := progress || pg_catalog.jsonb_build_object('position',
                pg_catalog.jsonb_build_object('index', idx, 'resume_at', resume));
  done := idx > cardinality(cats);
  next_progress := case when done then progress - 'position' else progress end;
end
$$;
revoke all on function smsao.data_cleanup_step(jsonb, integer) from public;

-- The committing path: pg_cron's daily job and `smsao-db cleanup` call this. Each batch
-- is its own transaction, committed asynchronously (see the loop).
-- PostgreSQL lets a procedure COMMIT only when it is neither SECURITY DEFINER nor has a
-- SET clause, so this one cannot pin search_path. Its body therefore evaluates no
-- expression of its own (no operator or unqualified name a search_path could redirect):
-- it calls the schema-qualified, search_path-pinned step function and commits. EXECUTE
-- is revoked from PUBLIC: the owner (pg_cron, a DBA) runs it; the app uses
-- public.production_data_cleanup().
create procedure smsao.run_data_cleanup(batch_size integer default 5000, inout report jsonb default null)
  language plpgsql
as $$
declare
  progress jsonb;
  finished boolean;
begin
  loop
    -- A lost batch (crash before its WAL reached disk) only means those rows are
    -- deleted again by the next run, so each batch commits without waiting for the
    -- disk: the flushes would otherwise dominate and slow the app's own commits.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    select s.next_progress, s.done into progress, finished
    from smsao.data_cleanup_step(progress, batch_size) s;
    commit;
    exit when finished;
  end loop;
  report := progress;
end
$$;
revoke all on procedure smsao.run_data_cleanup(integer, jsonb) from public;

create function public.production_data_cleanup() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  progress jsonb;
  finished boolean := false;
begin
  perform smsao.require_operator('production_data_cleanup');
  while not finished loop
    select s.next_progress, s.done into progress, finished
    from smsao.data_cleanup_step(progress, 5000) s;
  end loop;
  return (progress ->> 'total')::integer;
end
$$;
comment on function public.production_data_cleanup() is
  'Retention: deletes OTPs expired more than 2 hours ago, audit rows older than 2 years and '
  'completed/failed import jobs finished more than 30 days ago, in batches; returns the total.';
revoke all on function public.production_data_cleanup() from public;
grant execute on function public.production_data_cleanup() to authenticated, service_role;

-- What a cleanup would delete now, per category; deletes nothing. Same shape as the
-- procedure's report, with "dry_run": true.
create function public.production_data_cleanup_report() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  c record;
  n bigint;
  counts jsonb := '{}'::jsonb;
  cutoffs jsonb := '{}'::jsonb;
  rules jsonb := '{}'::jsonb;
  total bigint := 0::bigint;
begin
  perform smsao.require_operator('production_data_cleanup_report');
  for c in select * from smsao.retention_cutoffs(pg_catalog.now()) loop
    n := case c.category
      when 'otp_codes' then
        (select count(*) from public.otp_codes o where o.expires_at < c.cutoff)
      when 'contact_import_jobs' then
        (select count(*) from public.contact_import_jobs j
         where j.status in ('completed', 'failed') and j.completed_at < c.cutoff)
      when 'admin_audit_logs' then
        (select count(*) from public.admin_audit_logs a where a.created_at < c.cutoff)
      when 'pii_access_audit' then
        (select count(*) from public.pii_access_audit a where a.created_at < c.cutoff)
      when 'function_call_audit' then
        (select count(*) from public.function_call_audit a where a.created_at < c.cutoff)
    end;
    counts := counts || pg_catalog.jsonb_build_object(c.category, n);
    cutoffs := cutoffs || pg_catalog.jsonb_build_object(c.category, c.cutoff);
    rules := rules || pg_catalog.jsonb_build_object(c.category, c.rule);
    total := total + n;
  end loop;
  return pg_catalog.jsonb_build_object('started_at', pg_catalog.now(), 'cutoffs', cutoffs,
    'categories', counts, 'rules', rules, 'total', total, 'dry_run', true);
end
$$;
revoke all on function public.production_data_cleanup_report() from public;
grant execute on function public.production_data_cleanup_report() to authenticated, service_role;

-- ==== sql/functions/health_counters.sql ====
-- The live counters behind production_system_health_check() (table smsao.health_counters,
-- triggers in sql/triggers/health_counters.sql). Every change to a counted table adjusts
-- the counters in the same transaction, so a health check sees exactly what its snapshot
-- sees, at the cost of a few small-table reads however big the data grows.
--
-- Metrics kept here:
--   total_users              rows of public.profiles
--   pending_credit_requests  credit_requests with status 'pending'
--   orphaned_sms_logs        sms_logs rows whose user_id has no profile
--   orphaned_otp_codes       otp_codes rows with a user_id that has no profile
--   sms, sms_failed          sms_logs rows (all / status 'failed') per hour of created_at (UTC),
--                            kept for the last 48 hours of created_at
--
-- Advisory lock keys used by the monitoring code (two-int form, first key 7411220..7411229):
--   (7411220, 1)       one record_health_snapshot() at a time
--   (7411221, bucket)  owner-id buckets of the orphan counters (smsao.entering_orphans)

-- Add `delta` to a metric without waiting for any other writer: take any row of the
-- metric that no other transaction holds, or start a new row. Row count per metric stays
-- near the peak number of concurrent writers; smsao.compact_health_counters folds them.
create function smsao.bump_counter(metric_name text, at_bucket timestamptz, delta bigint) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if delta = 0 then
    return;
  end if;
  update smsao.health_counters c set value = c.value + delta
  where c.id = (select h.id from smsao.health_counters h
                where h.metric = metric_name and h.bucket = at_bucket
                limit 1 for update skip locked);
  if not found then
    insert into smsao.health_counters (metric, bucket, value) values (metric_name, at_bucket, delta);
  end if;
end
$$;
revoke all on function smsao.bump_counter(text, timestamptz, bigint) from public;

-- The hour bucket of a timestamp, the same in every session time zone.
create function smsao.hour_bucket(ts timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = ''
as $$
  select pg_catalog.date_bin('1 hour', ts, '2000-01-01 00:00:00+00'::timestamptz)
$$;
revoke all on function smsao.hour_bucket(timestamptz) from public;

-- Orphan accounting. A row of sms_logs / otp_codes is orphaned when its user_id has no
-- profile; smsao.missing_owners holds exactly those user ids that rows refer to. Four
-- kinds of change move the count, and each is made exact under concurrency by a lock:
--
--  * rows entering (insert, new side of an update), smsao.entering_orphans: owners found
--    are locked FOR KEY SHARE, as a foreign key check does, so a concurrent deletion of
--    the profile waits and then counts these rows itself. For owners not found we take
--    the exclusive advisory lock of their id bucket, look again, and record them in
--    missing_owners; a transaction creating such a profile holds that bucket shared.
--  * rows leaving (delete, old side of an update): a row was orphaned iff its owner is in
--    missing_owners. No lock: a concurrent profile insert/delete locks the rows it counts
--    (FOR KEY SHARE), so either it waited for our deletion or our deletion waits for its
--    commit and then sees its change of missing_owners; each row is counted once.
--  * a profile deleted, smsao.count_profiles_delete: its rows become orphans.
--  * a profile created, smsao.count_profiles_insert: an id in missing_owners (an account
--    re-created with an old id) adopts its rows.
-- Advisory buckets: (7411221, hashtext(user_id) & 1023).

-- How many of some entering rows are orphaned. owner_ids/row_counts: the distinct
-- non-null user_ids of the rows and how many rows each has.
create function smsao.entering_orphans(owner_ids uuid[], row_counts bigint[]) returns bigint
  language plpgsql
  set search_path = ''
as $$
declare
  missing uuid[];
begin
  if coalesce(cardinality(owner_ids), 0) = 0 then
    return 0::bigint;
  end if;
  -- Which owners exist is what this statement locked: the lock and the look are one,
  -- so a profile committed or deleted in between cannot slip past both.
  missing := array(select u from unnest(owner_ids) u
                   except
                   select k.user_id from (select p.user_id from public.profiles p
                                          where p.user_id = any (owner_ids) for key share) k);
  if cardinality(missing) = 0 then
    return 0::bigint;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(u::text) & 1023) as bucket
        from unnest(missing) u order by 1) s;
  -- A profile for one of these may have committed while we waited.
  missing := array(select u from unnest(missing) u
                   except
                   select k.user_id from (select p.user_id from public.profiles p
                                          where p.user_id = any (missing) for key share) k);
  if cardinality(missing) = 0 then
    return 0::bigint;
  end if;
  insert into smsao.missing_owners (user_id) select u from unnest(missing) u on conflict do nothing;
  return (select coalesce(sum(t.n), 0)::bigint
          from unnest(owner_ids, row_counts) as t(u, n)
          join unnest(missing) as m(u) on m.u = t.u);
end
$$;
revoke all on function smsao.entering_orphans(uuid[], bigint[]) from public;

-- The trigger functions below run once per statement, one per table and event (a
-- trigger with transition tables serves one event). SECURITY DEFINER: whoever writes
-- the counted table needs no right on the smsao tables.

-- profiles: total_users, and the orphan counters when an owner comes or goes.
create function smsao.count_profiles_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  adopted uuid[];
  sms_rows bigint := 0::bigint;
  otp_rows bigint := 0::bigint;
begin
  select count(*) into users from new_rows;
  -- Wait for in-flight writers of ownerless rows of these ids (they hold the bucket
  -- exclusively), then take over the ids' rows if any were left by an old account.
  perform pg_catalog.pg_advisory_xact_lock_shared(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(n.user_id::text) & 1023) as bucket
        from new_rows n order by 1) s;
  with gone as (
    delete from smsao.missing_owners m where m.user_id in (select n.user_id from new_rows n)
    returning m.user_id)
  select pg_catalog.array_agg(g.user_id) into adopted from gone g;
  if adopted is not null then
    select count(*) into sms_rows from (
      select from public.sms_logs l where l.user_id = any (adopted) for key share of l) x;
    select count(*) into otp_rows from (
      select from public.otp_codes o where o.user_id = any (adopted) for key share of o) x;
  end if;
  perform smsao.bump_counter('total_users', '-infinity', users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_insert() from public;

create function smsao.count_profiles_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  sms_rows bigint;
  otp_rows bigint;
  sms_owners uuid[];
  otp_owners uuid[];
begin
  select count(*) into users from old_rows;
  -- The deleted users' rows become orphans. Locking them makes a concurrent deletion of
  -- one of them either finish first (not counted here) or wait for our commit.
  -- Cost: proportional to the deleted users' rows; deleting a user is rare.
  with locked as (
    select l.user_id from public.sms_logs l
    where l.user_id in (select o.user_id from old_rows o) for key share of l)
  select count(*), pg_catalog.array_agg(distinct k.user_id) into sms_rows, sms_owners from locked k;
  with locked as (
    select c.user_id from public.otp_codes c
    where c.user_id in (select o.user_id from old_rows o) for key share of c)
  select count(*), pg_catalog.array_agg(distinct k.user_id) into otp_rows, otp_owners from locked k;
  insert into smsao.missing_owners (user_id)
  select u from unnest(sms_owners || otp_owners) u on conflict do nothing;
  perform smsao.bump_counter('total_users', '-infinity', -users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_delete() from public;

-- credit_requests: pending_credit_requests.
create function smsao.count_credit_requests_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_insert() from public;

create function smsao.count_credit_requests_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending')
    - (select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_update() from public;

create function smsao.count_credit_requests_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    -(select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_delete() from public;

-- sms_logs: per-hour totals and failures (`sms`, `sms_failed`), and orphaned_sms_logs.
-- Hours older than 48 h are not kept: the health check reads the last 25.
create function smsao.count_sms_logs_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
begin
  for r in select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where n.status = 'failed') as failed
           from new_rows n where n.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n group by 1) g;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', smsao.entering_orphans(ids, counts));
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_insert() from public;

create function smsao.count_sms_logs_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  orphans bigint := 0::bigint;
begin
  for r in select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where o.status = 'failed') as failed
           from old_rows o where o.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, -r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, -r.failed);
  end loop;
  if exists (select from smsao.missing_owners) then
    select count(*) into orphans from old_rows o join smsao.missing_owners m on m.user_id = o.user_id;
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_delete() from public;

-- Status updates (delivery reports) are the common case: they move a row in or out of
-- `sms_failed` and leave the rest alone; a changed user_id is a leaving old row plus an
-- entering new one.
create function smsao.count_sms_logs_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  for r in select d.bucket, sum(d.total) as total, sum(d.failed) as failed
           from (select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, 1 as total,
                        (n.status = 'failed')::int as failed
                 from new_rows n where n.created_at >= oldest
                 union all
                 select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin), -1, -((o.status = 'failed')::int)
                 from old_rows o where o.created_at >= oldest) d
           group by d.bucket loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  if exists (select from old_rows o join new_rows n on n.id = o.id where n.user_id <> o.user_id) then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id <> o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id <> o.user_id group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_update() from public;

-- otp_codes: orphaned_otp_codes (OTPs without user_id are for phones, never orphaned).
create function smsao.count_otp_codes_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n where n.user_id is not null group by 1) g;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', smsao.entering_orphans(ids, counts));
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_insert() from public;

-- The retention cleanup deletes OTPs by the million: with no orphaned owners at all (the
-- usual case) this costs one look at an empty table per statement.
create function smsao.count_otp_codes_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  orphans bigint := 0::bigint;
begin
  if exists (select from smsao.missing_owners) then
    select count(*) into orphans from old_rows o join smsao.missing_owners m on m.user_id = o.user_id;
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_delete() from public;

create function smsao.count_otp_codes_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  if exists (select from old_rows o join new_rows n on n.id = o.id
             where n.user_id is distinct from o.user_id) then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id is distinct from o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id is distinct from o.user_id and n.user_id is not null group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_update() from public;

-- Recompute every counter from the tables. Run by the migration that introduces the
-- counters, after a TRUNCATE or a change of profiles.user_id (both rare), and by a DBA
-- after loading data with triggers disabled (session_replication_role = replica).
-- Cost: one pass over each counted table. Writers of those tables wait meanwhile
-- (SHARE lock), which is what makes the result exact.
create function smsao.recount_health_counters() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
begin
  lock table public.profiles, public.credit_requests, public.sms_logs, public.otp_codes in share mode;
  delete from smsao.health_counters;
  delete from smsao.missing_owners;
  with orphan_owners as (
    select l.user_id, count(*) as sms_rows, 0::bigint as otp_rows from public.sms_logs l
    where not exists (select from public.profiles p where p.user_id = l.user_id) group by 1
    union all
    select o.user_id, 0, count(*) from public.otp_codes o
    where o.user_id is not null and not exists (select from public.profiles p where p.user_id = o.user_id)
    group by 1
  ), recorded as (
    insert into smsao.missing_owners (user_id) select distinct x.user_id from orphan_owners x
  )
  insert into smsao.health_counters (metric, value)
  select 'total_users', count(*) from public.profiles
  union all
  select 'pending_credit_requests', count(*) from public.credit_requests where status = 'pending'
  union all
  select 'orphaned_sms_logs', coalesce(sum(x.sms_rows), 0) from orphan_owners x
  union all
  select 'orphaned_otp_codes', coalesce(sum(x.otp_rows), 0) from orphan_owners x;
  insert into smsao.health_counters (metric, bucket, value)
  select m.metric, b.bucket, m.value
  from (select smsao.hour_bucket(l.created_at) as bucket, count(*) as total,
               count(*) filter (where l.status = 'failed') as failed
        from public.sms_logs l where l.created_at >= oldest group by 1) b
  cross join lateral (values ('sms', b.total), ('sms_failed', b.failed)) as m(metric, value)
  where m.value <> 0;
  return (select pg_catalog.jsonb_object_agg(t.metric, t.total)
          from (select c.metric, sum(c.value) as total from smsao.health_counters c
                where c.bucket = '-infinity' group by c.metric) t);
end
$$;
revoke all on function smsao.recount_health_counters() from public;

create function smsao.recount_health_counters_trigger() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.recount_health_counters();
  return null;
end
$$;
revoke all on function smsao.recount_health_counters_trigger() from public;

-- Fold each metric's rows into one and drop hours no reader needs, skipping rows that a
-- writer holds right now (they are folded next time). Returns the rows removed.
-- Run by record_health_snapshot() and the daily housekeeping; correctness never depends
-- on it, only the size of smsao.health_counters does.
create function smsao.compact_health_counters() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  removed integer;
  folded integer := 0;
  r record;
begin
  delete from smsao.health_counters c
  where c.id in (select h.id from smsao.health_counters h
                 where h.bucket > '-infinity' and h.bucket < oldest
                 for update skip locked);
  get diagnostics removed = row_count;
  for r in select l.metric, l.bucket, pg_catalog.array_agg(l.id order by l.id) as ids, sum(l.value) as total
           from (select h.id, h.metric, h.bucket, h.value from smsao.health_counters h
                 for update skip locked) l
           group by l.metric, l.bucket having count(*) > 1 loop
    update smsao.health_counters c set value = r.total where c.id = r.ids[1];
    delete from smsao.health_counters c where c.id = any (r.ids[2:]);
    folded := folded + cardinality(r.ids) - 1;
  end loop;
  return removed + folded;
end
$$;
revoke all on function smsao.compact_health_counters() from public;

-- ==== sql/functions/housekeeping.sql ====
-- Housekeeping, separate from the retention rules: monitoring history older than 30 days,
-- counter rows no reader needs, and rate-limit state past its window.
-- Run by the daily job (smsao.run_daily_maintenance).
create function smsao.prune_housekeeping() returns jsonb
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
revoke all on function smsao.prune_housekeeping() from public;

-- The daily pg_cron job: the retention cleanup (committing per batch), then housekeeping.
-- Like smsao.run_data_cleanup it cannot pin search_path (it commits), so it only calls
-- schema-qualified routines.
create procedure smsao.run_daily_maintenance()
  language plpgsql
as $$
declare
  report jsonb;
begin
  call smsao.run_data_cleanup(5000, report);
  perform smsao.prune_housekeeping();
end
$$;
revoke all on procedure smsao.run_daily_maintenance() from public;

-- ==== sql/functions/monitoring.sql ====
-- Monitoring history, run by pg_cron (sql/functions/cron_jobs.sql) and callable by
-- service_role.

-- Store a health snapshot; on a change of status (the first snapshot counts as a change
-- from 'healthy') insert one system_alerts row and NOTIFY system_alerts with
--   {"alert_id", "severity", "status", "previous_status", "snapshot_id", "at"}.
-- Returns the health report plus "snapshot_id" and "alert" (the alert row, or null).
create function public.record_health_snapshot() returns jsonb
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
revoke all on function public.record_health_snapshot() from public;
grant execute on function public.record_health_snapshot() to service_role;

-- Store a performance sample: response time of the health check and of representative
-- app reads (the latest sender's profile, their newest SMS page and contacts page), and
-- the error rate of audited calls in the last minute (outcome 'error' / all; 0 when none).
create function public.record_performance_sample() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz;
  health_ms numeric;
  app_ms numeric;
  sender uuid;
  calls bigint;
  errors bigint;
  rate numeric;
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

  select count(*), count(*) filter (where f.outcome = 'error') into calls, errors
  from public.function_call_audit f where f.created_at > pg_catalog.now() - interval '1 minute';
  rate := case when calls > 0 then round(errors::numeric / calls, 6) else 0 end;

  insert into public.performance_samples (sampled_at, response_time_ms, error_rate, details)
  values (pg_catalog.now(), round(health_ms + app_ms, 3), rate,
          pg_catalog.jsonb_build_object(
            'health_check_ms', round(health_ms, 3),
            'app_queries_ms', round(app_ms, 3),
            'calls_last_minute', calls,
            'errors_last_minute', errors))
  returning * into sample;
  return pg_catalog.to_jsonb(sample);
end
$$;
revoke all on function public.record_performance_sample() from public;
grant execute on function public.record_performance_sample() to service_role;

-- ==== sql/functions/monitoring_access.sql ====
-- Monitoring and retention are for operators: service_role (the backend, pg_cron, a DBA)
-- and active admins. Everyone else gets 42501 naming the function.
create function smsao.require_operator(function_name text) returns void
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
revoke all on function smsao.require_operator(text) from public;

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
-- Status: the worst level among the checks. Each threshold in smsao.health_thresholds
-- gives 'warning' from warning_at and 'critical' from critical_at; no active SMS
-- configuration is always critical (nothing can be sent).
-- Recommendations: configure_sms_gateway (no active configuration),
-- investigate_failed_sms (failed_sms_24h or sms_failure_rate at warning or worse),
-- review_pending_credit_requests, cleanup_orphaned_data (their metric at warning or worse).
create function smsao.health_report() returns jsonb
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
  recommendations text[] := '{}'::text[];
  status text := 'healthy';
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

  for t in select * from smsao.health_thresholds h order by h.metric loop
    val := case t.metric
             when 'failed_sms_24h' then failed_24h
             when 'sms_failure_rate' then rate
             when 'pending_credit_requests' then pending
             when 'orphaned_data' then orphan_sms + orphan_otp
           end;
    sample := case t.metric when 'sms_failure_rate' then window_total else val end;
    lvl := case when sample < t.min_sample then 'ok'
                when val >= t.critical_at then 'critical'
                when val >= t.warning_at then 'warning'
                else 'ok' end;
    checks := checks || pg_catalog.jsonb_build_object(t.metric, lvl);
    thresholds := thresholds || pg_catalog.jsonb_build_object(t.metric, pg_catalog.jsonb_build_object(
      'warning_at', t.warning_at, 'critical_at', t.critical_at, 'min_sample', t.min_sample));
  end loop;
  checks := checks || pg_catalog.jsonb_build_object(
    'active_sms_configs', case when configs = 0 then 'critical' else 'ok' end);

  if checks @> '{"active_sms_configs": "critical"}' then
    recommendations := recommendations || 'configure_sms_gateway'::text;
  end if;
  if coalesce(checks ->> 'failed_sms_24h', 'ok') <> 'ok' or coalesce(checks ->> 'sms_failure_rate', 'ok') <> 'ok' then
    recommendations := recommendations || 'investigate_failed_sms'::text;
  end if;
  if coalesce(checks ->> 'pending_credit_requests', 'ok') <> 'ok' then
    recommendations := recommendations || 'review_pending_credit_requests'::text;
  end if;
  if coalesce(checks ->> 'orphaned_data', 'ok') <> 'ok' then
    recommendations := recommendations || 'cleanup_orphaned_data'::text;
  end if;

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
      'sms_failure_rate', rate),
    'recommendations', pg_catalog.to_jsonb(recommendations),
    'checks', checks,
    'thresholds', thresholds,
    'details', pg_catalog.jsonb_build_object(
      'orphaned_data', pg_catalog.jsonb_build_object('sms_logs', orphan_sms, 'otp_codes', orphan_otp),
      'sms_window', pg_catalog.jsonb_build_object(
        'since', window_start, 'total', window_total, 'failed', window_failed)));
end
$$;
revoke all on function smsao.health_report() from public;

create function public.production_system_health_check() returns jsonb
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
revoke all on function public.production_system_health_check() from public;
grant execute on function public.production_system_health_check() to authenticated, service_role;

-- ==== sql/triggers/health_counters.sql ====
-- Keep smsao.health_counters in step with the counted tables (sql/functions/health_counters.sql).
-- Statement-level with transition tables: one trigger call per statement, whatever its
-- row count. A trigger with transition tables takes one event, hence one per event.

create trigger profiles_count_insert
  after insert on public.profiles referencing new table as new_rows
  for each statement execute function smsao.count_profiles_insert();
create trigger profiles_count_delete
  after delete on public.profiles referencing old table as old_rows
  for each statement execute function smsao.count_profiles_delete();

create trigger credit_requests_count_insert
  after insert on public.credit_requests referencing new table as new_rows
  for each statement execute function smsao.count_credit_requests_insert();
create trigger credit_requests_count_update
  after update on public.credit_requests referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.count_credit_requests_update();
create trigger credit_requests_count_delete
  after delete on public.credit_requests referencing old table as old_rows
  for each statement execute function smsao.count_credit_requests_delete();

create trigger sms_logs_count_insert
  after insert on public.sms_logs referencing new table as new_rows
  for each statement execute function smsao.count_sms_logs_insert();
create trigger sms_logs_count_update
  after update on public.sms_logs referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.count_sms_logs_update();
create trigger sms_logs_count_delete
  after delete on public.sms_logs referencing old table as old_rows
  for each statement execute function smsao.count_sms_logs_delete();

create trigger otp_codes_count_insert
  after insert on public.otp_codes referencing new table as new_rows
  for each statement execute function smsao.count_otp_codes_insert();
create trigger otp_codes_count_update
  after update on public.otp_codes referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.count_otp_codes_update();
create trigger otp_codes_count_delete
  after delete on public.otp_codes referencing old table as old_rows
  for each statement execute function smsao.count_otp_codes_delete();

-- Rare whole-table events: recount from scratch.
create trigger profiles_recount_on_truncate
  after truncate on public.profiles
  for each statement execute function smsao.recount_health_counters_trigger();
create trigger credit_requests_recount_on_truncate
  after truncate on public.credit_requests
  for each statement execute function smsao.recount_health_counters_trigger();
create trigger sms_logs_recount_on_truncate
  after truncate on public.sms_logs
  for each statement execute function smsao.recount_health_counters_trigger();
create trigger otp_codes_recount_on_truncate
  after truncate on public.otp_codes
  for each statement execute function smsao.recount_health_counters_trigger();
-- A profile whose user_id changes moves the ownership of rows in both directions.
create trigger profiles_recount_on_rekey
  after update of user_id on public.profiles
  for each row when (old.user_id is distinct from new.user_id)
  execute function smsao.recount_health_counters_trigger();

-- Counters start from the data already there (the triggers above hold their tables'
-- locks until the migration commits, so nothing changes in between).
select smsao.recount_health_counters();

-- ==== sql/policies/health_counters.sql ====
-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.health_counters enable row level security;
revoke all on table smsao.health_counters from public, anon, authenticated, service_role;

-- ==== sql/policies/health_thresholds.sql ====
-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.health_thresholds enable row level security;
revoke all on table smsao.health_thresholds from public, anon, authenticated, service_role;

-- ==== sql/policies/missing_owners.sql ====
-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.missing_owners enable row level security;
revoke all on table smsao.missing_owners from public, anon, authenticated, service_role;
