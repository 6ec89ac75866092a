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
create or replace function smsao.bump_counter(metric_name text, at_bucket timestamptz, delta bigint) returns void
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
revoke all on function smsao.bump_counter(text, timestamptz, bigint) from public, anon, authenticated, service_role;

-- The hour bucket of a timestamp, the same in every session time zone.
create or replace function smsao.hour_bucket(ts timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = ''
as $$
  select pg_catalog.date_bin('1 hour', ts, '2000-01-01 00:00:00+00'::timestamptz)
$$;
revoke all on function smsao.hour_bucket(timestamptz) from public, anon, authenticated, service_role;

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
create or replace function smsao.entering_orphans(owner_ids uuid[], row_counts bigint[]) returns bigint
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
revoke all on function smsao.entering_orphans(uuid[], bigint[]) from public, anon, authenticated, service_role;

-- The trigger functions below run once per statement, one per table and event (a
-- trigger with transition tables serves one event). SECURITY DEFINER: whoever writes
-- the counted table needs no right on the smsao tables.

-- profiles: total_users, and the orphan counters when an owner comes or goes.
create or replace function smsao.count_profiles_insert() returns trigger
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
revoke all on function smsao.count_profiles_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_profiles_delete() returns trigger
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
revoke all on function smsao.count_profiles_delete() from public, anon, authenticated, service_role;

-- credit_requests: pending_credit_requests.
create or replace function smsao.count_credit_requests_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_credit_requests_update() returns trigger
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
revoke all on function smsao.count_credit_requests_update() from public, anon, authenticated, service_role;

create or replace function smsao.count_credit_requests_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    -(select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_delete() from public, anon, authenticated, service_role;

-- sms_logs: per-hour totals and failures (`sms`, `sms_failed`), and orphaned_sms_logs.
-- Hours older than 48 h are not kept: the health check reads the last 25. The same grouping
-- of the rows by user also feeds the analytics' sent_sms milestone (smsao.record_first_sms,
-- sql/functions/analytics_triggers.sql): one pass over a bulk statement's rows for both.
create or replace function smsao.count_sms_logs_insert() returns trigger
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
  firsts timestamptz[];
  earliest timestamptz;
begin
  for r in select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where n.status = 'failed') as failed
           from new_rows n where n.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n), pg_catalog.array_agg(g.first_at),
         pg_catalog.min(g.first_at)
    into ids, counts, firsts, earliest
  from (select n.user_id, count(*) as n, pg_catalog.min(n.created_at) as first_at from new_rows n group by 1) g;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', smsao.entering_orphans(ids, counts));
  perform smsao.record_first_sms(ids, firsts, earliest);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_sms_logs_delete() returns trigger
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
revoke all on function smsao.count_sms_logs_delete() from public, anon, authenticated, service_role;

-- Status updates (delivery reports) are the common case: they move a row in or out of
-- `sms_failed` and leave the rest alone; a changed user_id is a leaving old row plus an
-- entering new one.
create or replace function smsao.count_sms_logs_update() returns trigger
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
  -- A count, not EXISTS: under EXISTS the planner optimises for the first row and joins the
  -- transition tables by nested loop, comparing every pair when no row changed its owner
  -- (a status update, the usual case): quadratic in the statement's rows.
  if (select count(*) from old_rows o join new_rows n on n.id = o.id where n.user_id <> o.user_id) > 0 then
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
revoke all on function smsao.count_sms_logs_update() from public, anon, authenticated, service_role;

-- otp_codes: orphaned_otp_codes (OTPs without user_id are for phones, never orphaned).
create or replace function smsao.count_otp_codes_insert() returns trigger
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
revoke all on function smsao.count_otp_codes_insert() from public, anon, authenticated, service_role;

-- The retention cleanup deletes OTPs by the million: with no orphaned owners at all (the
-- usual case) this costs one look at an empty table per statement.
create or replace function smsao.count_otp_codes_delete() returns trigger
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
revoke all on function smsao.count_otp_codes_delete() from public, anon, authenticated, service_role;

create or replace function smsao.count_otp_codes_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  -- A count, not EXISTS: see smsao.count_sms_logs_update.
  if (select count(*) from old_rows o join new_rows n on n.id = o.id
      where n.user_id is distinct from o.user_id) > 0 then
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
revoke all on function smsao.count_otp_codes_update() from public, anon, authenticated, service_role;

-- Recompute every counter from the tables. Run by the migration that introduces the
-- counters, after a TRUNCATE or a change of profiles.user_id (both rare), and by a DBA
-- after loading data with triggers disabled (session_replication_role = replica).
-- Cost: one pass over each counted table. Writers of those tables wait meanwhile
-- (SHARE lock), which is what makes the result exact.
create or replace function smsao.recount_health_counters() returns jsonb
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
revoke all on function smsao.recount_health_counters() from public, anon, authenticated, service_role;

create or replace function smsao.recount_health_counters_trigger() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.recount_health_counters();
  return null;
end
$$;
revoke all on function smsao.recount_health_counters_trigger() from public, anon, authenticated, service_role;

-- Fold each metric's rows into one and drop hours no reader needs, skipping rows that a
-- writer holds right now (they are folded next time). Returns the rows removed.
-- Run by record_health_snapshot() and the daily housekeeping; correctness never depends
-- on it, only the size of smsao.health_counters does.
create or replace function smsao.compact_health_counters() returns integer
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
revoke all on function smsao.compact_health_counters() from public, anon, authenticated, service_role;
