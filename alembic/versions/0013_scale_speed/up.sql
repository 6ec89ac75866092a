-- Frozen by scripts/freeze_sql.py for revision 0013_scale_speed. Do not edit.

-- ==== sql/schema/63_scale_speed.sql ====
-- Revision 0013_scale_speed (issue 19): an admission at a large limit is one row write too.
-- Keys of limits above 100 (up to 10,000) keep their ring in chunks of 100 attempts, one row
-- per chunk, the chunk's attempts as an array (as a small ring lives on its key row):
--   attempt j is at position p(j) = (j - 1) % ring_size of the ring, that is in chunk
--   p(j) / 100, element p(j) % 100 + 1; `last` is the newest attempt written into the chunk.
-- Chunks are filled in order, so exactly one chunk is "open" (the position after its `last`
-- is still inside it): the head chunk, where the next admission goes. An admission inside
-- the head chunk is one conditional UPDATE of that row (sql/functions/rate_limit.sql): the
-- row's lock serialises the key's admissions, and the key row is not written. The key row's
-- `admitted` becomes, for these keys, a hint: an attempt of the head chunk, moved (with
-- window_ends) only when an admission crosses into the next chunk, one call in 100.
-- Why chunks and not one array: an array of 10,000 stamps (80 kB) is TOASTed, and changing
-- one element rewrites all of it; a chunk of 100 (800 bytes) stays on its heap page and is
-- updated in place (HOT). Why not one row per attempt with a head hint probed forward: the
-- calls that queue on the same attempt row all fail their re-check but one, and go round;
-- on a chunk row the re-check takes the next attempt number from the row itself, so a
-- queued call is admitted after its wait, as on the key row of a small ring.
-- The table keeps its name (smsao.rate_limit_hits: the attempts of large rings) and changes
-- shape; the rings of revision 0011 (one row per attempt, slot seq % ring_size) move in.
alter table smsao.rate_limit_hits rename to rate_limit_hits_0011;
alter table smsao.rate_limit_hits_0011 rename constraint rate_limit_hits_pkey to rate_limit_hits_0011_pkey;

create unlogged table smsao.rate_limit_hits (
  caller_key     text not null,
  operation_type text not null,
  chunk          integer not null check (chunk between 0 and 99),
  -- The newest attempt written into this chunk (its number on the key).
  last           bigint not null check (last >= 1),
  -- ring[i]: the attempt at position chunk * 100 + i - 1 (null: none yet, first lap).
  ring           timestamptz[] not null
                 check (pg_catalog.array_lower(ring, 1) = 1 and pg_catalog.array_upper(ring, 1) <= 100),
  constraint rate_limit_hits_pkey primary key (caller_key, operation_type, chunk)
) with (fillfactor = 50);  -- an 850-byte row: room on its page for its HOT updates
-- (RLS on and no privilege: sql/policies/hardening_state.sql, applied by this revision too.)

-- The attempts each large key's ring holds, max(1, admitted - ring_size + 1) .. admitted,
-- grouped by chunk; an attempt the old ring lacks counts as outside every window.
insert into smsao.rate_limit_hits (caller_key, operation_type, chunk, last, ring)
select k.caller_key, k.operation_type, ((j - 1) % k.ring_size / 100)::integer, max(j),
       pg_catalog.array_agg(coalesce(h.at, '-infinity') order by (j - 1) % k.ring_size)
  from smsao.rate_limit_keys k
 cross join lateral pg_catalog.generate_series(greatest(k.admitted - k.ring_size + 1, 1), k.admitted) j
  left join smsao.rate_limit_hits_0011 h
    on h.caller_key = k.caller_key and h.operation_type = k.operation_type
   and h.slot = j % k.ring_size and h.seq = j
 where k.ring is null
 group by k.caller_key, k.operation_type, ((j - 1) % k.ring_size / 100)::integer;
drop table smsao.rate_limit_hits_0011;

-- The audit trails' primary key leads with the partition key: (created_at, id) instead of
-- (id, created_at), and the separate index on created_at goes. One index fewer to write per
-- audit row (a single-row INSERT into a partitioned table pays for routing it and opening
-- the partition, about what the second index cost: docs/scaling.md, section 2c), and the
-- key serves what that index served (the retention's batches by created_at) and the
-- dashboard's pages (order by created_at desc, id desc) by itself. Its uniqueness is the
-- same: the same two columns. No query looks a row up by id alone. The partitions' keys are
-- rebuilt with it (the migration holds the tables for that time).
alter table public.admin_audit_logs drop constraint admin_audit_logs_pkey,
  add constraint admin_audit_logs_pkey primary key (created_at, id);
drop index public.admin_audit_logs_created_idx;
alter table public.pii_access_audit drop constraint pii_access_audit_pkey,
  add constraint pii_access_audit_pkey primary key (created_at, id);
drop index public.pii_access_audit_created_idx;
alter table public.function_call_audit drop constraint function_call_audit_pkey,
  add constraint function_call_audit_pkey primary key (created_at, id);
drop index public.function_call_audit_created_idx;

-- ==== sql/functions/rate_limit.sql ====
-- The rate-limit key of the caller: the user id, the login of a trusted backend session,
-- or for anon the first address of x-forwarded-for (the client, as the proxy saw it).
create or replace function smsao.rate_limit_key() returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  uid uuid := smsao.request_uid();   -- smsao.caller_id(), without its auth.uid() call
  forwarded text;
begin
  if uid is not null then
    return 'user:' || uid::text;
  end if;
  if smsao.caller_role() = 'service_role' then
    return 'service:' || session_user;
  end if;
  begin
    forwarded := nullif(pg_catalog.current_setting('request.headers', true), '')::jsonb ->> 'x-forwarded-for';
  exception when invalid_text_representation then
    forwarded := null;
  end;
  return 'ip:' || coalesce(nullif(pg_catalog.btrim(pg_catalog.split_part(forwarded, ',', 1)), ''), 'unknown');
end
$$;
revoke all on function smsao.rate_limit_key() from public, anon, authenticated, service_role;

-- Exact sliding window: admits when fewer than max_attempts attempts were admitted in the
-- last window_minutes. State: smsao.rate_limit_keys, one row per (caller, operation), and a
-- ring of the key's newest attempts, numbered 1, 2, 3... (sql/schema/40_hardening.sql,
-- 60_scale.sql, 63_scale_speed.sql). The max_attempts-th newest attempt decides: the call
-- is refused when it was admitted inside the window.
--   1. An admission is one conditional UPDATE of one row, which both decides and records:
--      it writes the attempt's slot, and when the limit is the ring's size the slot it
--      overwrites holds the very attempt that decides it. The row's lock serialises the
--      key's admissions: a call that waited re-checks its WHERE against the newest version
--      of the row (READ COMMITTED's re-check) and takes the next slot from it, so no more
--      than max_attempts are ever admitted in a window, and the stamp is taken after the
--      wait. Which row:
--      - limits up to 100: the ring is an array on the key row, and the key row is written;
--      - larger limits (up to 10,000): the ring is in chunks of 100 (smsao.rate_limit_hits),
--        and the head chunk is written, the one the key row's hint names; the key row is
--        not written. One admission in 100 enters the next chunk: it takes the key row's
--        lock, writes the chunk and moves the hint (smsao.rate_limit_enter_chunk).
--   2. Refusals write nothing: the admitting statement also reads the key as its snapshot
--      saw it, and a key seen full is full now. A refusal records at most one
--      function_call_audit row per key, operation and window (smsao.record_rate_limit_denial).
-- No advisory lock. Every lookup is by full primary key, so no plan depends on the tables'
-- statistics (they are stale after a crash empties the UNLOGGED tables, or after pruning).
-- A key keeps the attempts of its largest limit and longest window: a later call with a
-- larger limit or a longer window than ever before cannot see attempts already dropped
-- (limits are per operation in practice, smsao.operation_limits).
-- anon callers are keyed by a header anyone can forge, so they may use windows of at most
-- 60 minutes and at most 100 attempts: their state never outlives an hour.
create or replace function public.enhanced_security_rate_limit(
  operation_type text,
  max_attempts integer default 5,
  window_minutes integer default 15
) returns boolean
  language plpgsql security definer
  set search_path = ''
as $$
declare
  win      interval;
  -- PL/pgSQL gives text variables and arguments the caller's collation; the statement guard
  -- calls in with "C" (from tg_table_name, of type name), and a "C" comparison cannot use the
  -- primary key (default collation): every lookup below would scan the whole table.
  key      text collate "default";
  op       text collate "default" := operation_type;
  inline   boolean := max_attempts <= 100;   -- try the ring on the key row first
  seen     bigint;                           -- the key's attempt number (on the row) or hint (chunks)
  kept     integer;                          -- the key's ring size
  on_row   boolean;
  retained interval;                         -- the key's longest window
  head     bigint;                           -- chunks: the newest attempt of the hint's chunk
  head_open boolean;                         -- chunks: the next attempt goes into that chunk
  admitted_now boolean;
  denied   timestamptz;
  deciding timestamptz;
begin
  if operation_type is null or operation_type !~ '^[a-z][a-z0-9_]{0,62}$' then
    raise exception 'operation_type must be a lowercase identifier such as ''admin_access'', got %',
      coalesce(pg_catalog.quote_literal(operation_type), 'NULL') using errcode = '22023';
  end if;
  if max_attempts is null or max_attempts not between 1 and 10000 then
    raise exception 'max_attempts must be between 1 and 10000, got %', coalesce(max_attempts::text, 'NULL')
      using errcode = '22023';
  end if;
  if window_minutes is null or window_minutes not between 1 and 10080 then
    raise exception 'window_minutes must be between 1 and 10080 (one week), got %',
      coalesce(window_minutes::text, 'NULL') using errcode = '22023';
  end if;

  win := pg_catalog.make_interval(mins => window_minutes);
  key := smsao.rate_limit_key();
  if key like 'ip:%' and (max_attempts > 100 or window_minutes > 60) then
    raise exception 'max_attempts must be at most 100 and window_minutes at most 60 for anonymous callers, got % and %',
      max_attempts, window_minutes using errcode = '22023';
  end if;

  -- (A round ends without an answer only when the key changed shape under the call, or
  -- another call entered the next chunk first. A few rounds always suffice.)
  for round in 1..10 loop
    -- 1. Admit: one row write. clock_timestamp() is read when the row lock is held.
    if inline then
      with admit as (
        update smsao.rate_limit_keys k
           set ring[k.admitted % k.ring_size + 1] = pg_catalog.clock_timestamp(),
               admitted = k.admitted + 1,
               retain_window = greatest(k.retain_window, win),
               window_ends = greatest(k.window_ends,
                                      pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
         where k.caller_key = key and k.operation_type = op
           and k.ring is not null and k.ring_size >= max_attempts
           and (k.admitted < max_attempts
                or coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                   <= pg_catalog.clock_timestamp() - win)
        returning 1
      )
      select exists (select from admit), k.admitted, k.ring_size, k.ring is not null, k.retain_window, k.denied_at,
             case when k.admitted < max_attempts or k.ring_size < max_attempts or k.ring is null then null
                  else coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity') end
        into admitted_now, seen, kept, on_row, retained, denied, deciding
        from (select) as one
        left join smsao.rate_limit_keys k on k.caller_key = key and k.operation_type = op;
      if admitted_now then
        return true;
      end if;
      if on_row is false then
        inline := false;   -- a key with its ring in chunks: look there
        continue;
      end if;
    else
      -- The deciding attempt is in the written chunk when the limit is the ring's size (or
      -- the attempt is in the same chunk); otherwise it is read with the statement's
      -- snapshot, and smsao.rate_limit_stamp() answers only for the very attempt asked
      -- (null, not admitted, when the snapshot predates it: the look below sends the call
      -- round again).
      with admit as (
        update smsao.rate_limit_hits c
           set ring[(c.last % k.ring_size % 100 + 1)::integer] = pg_catalog.clock_timestamp(),
               last = c.last + 1
          from smsao.rate_limit_keys k
         where k.caller_key = key and k.operation_type = op
           and k.ring is null and k.ring_size >= max_attempts
           and c.caller_key = key and c.operation_type = op
           and c.chunk = ((k.admitted - 1) % k.ring_size / 100)::integer
           and c.last % k.ring_size / 100 = c.chunk            -- the next attempt's slot is in this chunk
           and (c.last < max_attempts
                or case when (c.last - max_attempts) % k.ring_size / 100 = c.chunk
                        then coalesce(c.ring[((c.last - max_attempts) % k.ring_size % 100 + 1)::integer], '-infinity')
                        else smsao.rate_limit_stamp(key, op, k.ring_size, c.last + 1 - max_attempts) end
                   <= pg_catalog.clock_timestamp() - win)
        returning 1
      )
      -- (The look reads the deciding attempt's chunk d by a join when it is not the head
      -- chunk, as smsao.rate_limit_stamp does: a refusal at a full chunk's end is one
      -- statement too.)
      select exists (select from admit), k.admitted, k.ring_size, k.ring is not null, k.retain_window, k.denied_at,
             c.last, c.last % k.ring_size / 100 = c.chunk,
             case when c.last < max_attempts or k.ring_size < max_attempts then null
                  when (c.last - max_attempts) % k.ring_size / 100 = c.chunk
                  then coalesce(c.ring[((c.last - max_attempts) % k.ring_size % 100 + 1)::integer], '-infinity')
                  when d.last - (d.last - 1) % k.ring_size + (c.last - max_attempts) % k.ring_size
                       - case when (c.last - max_attempts) % k.ring_size > (d.last - 1) % k.ring_size
                              then k.ring_size else 0 end = c.last + 1 - max_attempts
                  then coalesce(d.ring[((c.last - max_attempts) % k.ring_size % 100 + 1)::integer], '-infinity') end
        into admitted_now, seen, kept, on_row, retained, denied, head, head_open, deciding
        from (select) as one
        left join smsao.rate_limit_keys k on k.caller_key = key and k.operation_type = op
        left join smsao.rate_limit_hits c on c.caller_key = key and c.operation_type = op
                                         and c.chunk = ((k.admitted - 1) % k.ring_size / 100)::integer
        left join smsao.rate_limit_hits d on d.caller_key = key and d.operation_type = op
                                         and c.last >= max_attempts and k.ring_size >= max_attempts
                                         and d.chunk = ((c.last - max_attempts) % k.ring_size / 100)::integer
                                         and d.chunk <> c.chunk;
      if admitted_now then
        if retained < win then
          -- A longer window than the key ever had: kept (in the admitting transaction) so
          -- that pruning keeps the attempts this window still sees. After the chunk's lock,
          -- never before it: see smsao.rate_limit_enter_chunk on the order of locks.
          update smsao.rate_limit_keys k
             set retain_window = greatest(k.retain_window, win),
                 window_ends = greatest(k.window_ends, pg_catalog.clock_timestamp() + win)
           where k.caller_key = key and k.operation_type = op;
        end if;
        return true;
      end if;
      if on_row then
        inline := true;
        continue;
      end if;
    end if;

    -- 2. Not admitted: why? The key as the statement's snapshot saw it.
    if seen is null then
      -- A new key: its first attempt.
      insert into smsao.rate_limit_keys as k
        (caller_key, operation_type, admitted, ring_size, retain_window, window_ends, ring)
      values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win,
              case when max_attempts <= 100 then array[pg_catalog.clock_timestamp()] end)
      on conflict on constraint rate_limit_keys_pkey do nothing;
      if found then
        if max_attempts > 100 then
          insert into smsao.rate_limit_hits (caller_key, operation_type, chunk, last, ring)
          values (key, op, 0, 1, array[pg_catalog.clock_timestamp()]);
        end if;
        return true;
      end if;
      continue;
    end if;
    if max_attempts > kept or (on_row and max_attempts > 100) then
      perform smsao.grow_rate_limit_ring(key, op, max_attempts);
      inline := on_row and max_attempts <= 100;
      continue;
    end if;
    if deciding > pg_catalog.clock_timestamp() - win then
      if denied is null or denied <= pg_catalog.clock_timestamp() - win then
        perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
      end if;
      return false;
    end if;
    if not on_row and head_open is false then
      -- The head chunk is full: this admission enters the next one.
      admitted_now := smsao.rate_limit_enter_chunk(key, op, seen, kept, head, max_attempts, win);
      if admitted_now then
        return true;
      elsif admitted_now is false then
        if denied is null or denied <= pg_catalog.clock_timestamp() - win then
          perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
        end if;
        return false;
      end if;
    end if;
    -- Admissible now (the window slid, or the key changed under the call): again.
  end loop;
  raise exception 'rate limit state of % changed under the call ten times: retry', op
    using errcode = '40001';
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- The stamp of attempt `seq` of a key whose ring (of `size`) is in chunks, or null when the
-- chunk does not hold that very attempt (yet, as the calling statement's snapshot sees it).
-- The attempt in the chunk's slot follows from the chunk's newest attempt: slots up to its
-- own hold attempts of its lap, the later ones attempts of the lap before.
create or replace function smsao.rate_limit_stamp(key text, op text, size integer, seq bigint)
  returns timestamptz
  language sql stable
  set search_path = ''
as $$
  select coalesce(c.ring[((seq - 1) % size % 100 + 1)::integer], '-infinity')
    from smsao.rate_limit_hits c
   where c.caller_key = key and c.operation_type = op and c.chunk = ((seq - 1) % size / 100)::integer
     and seq >= 1
     and c.last - (c.last - 1) % size + (seq - 1) % size
         - case when (seq - 1) % size > (c.last - 1) % size then size else 0 end = seq
$$;
revoke all on function smsao.rate_limit_stamp(text, text, integer, bigint) from public, anon, authenticated, service_role;

-- An admission into the next chunk of a ring in chunks (one in 100 of a key's admissions):
-- `head` (the newest attempt) filled the chunk the key row's hint names. The key row's lock
-- orders chunk entries, growth and pruning: taken with the hint unchanged, nobody else can
-- admit (the head chunk is full, and the next chunk is entered only under that lock), so the
-- deciding attempt is read as committed. Then the next chunk's first slot (or a new chunk on
-- the ring's first lap) and the hint move. Returns true (admitted), false (refused: the
-- deciding attempt is inside the window) or null (the key changed: look again).
-- The order of locks: a call may hold chunk rows while it waits for the key row (an UPDATE
-- whose re-check failed after a wait keeps the row locked to the end of the transaction),
-- so whoever holds the key row never waits for a chunk: it takes the next chunk with NOWAIT,
-- in a subtransaction that gives the key row back when that chunk is busy (a boundary call
-- in 100 pays for the subtransaction).
create or replace function smsao.rate_limit_enter_chunk(key text, op text, hint bigint, size integer,
                                                       head bigint, max_attempts integer, win interval)
  returns boolean
  language plpgsql
  set search_path = ''
as $$
declare
  next_chunk integer := (head % size / 100)::integer;
  -- The next chunk's newest attempt one lap ago (< 1 on the first lap: no row yet).
  lap_before bigint := head + least(100, size - next_chunk * 100) - size;
  deciding timestamptz;
begin
  -- Any way out but an admission or a refusal raises, which rolls the subtransaction back
  -- and gives back every row it locked.
  begin
    perform from smsao.rate_limit_keys k
     where k.caller_key = key and k.operation_type = op and k.ring is null
       and k.admitted = hint and k.ring_size = size
    for update;
    if not found then
      raise exception 'the key moved on' using errcode = 'SMRL1';
    end if;
    perform from smsao.rate_limit_hits c
     where c.caller_key = key and c.operation_type = op
       and c.chunk = ((hint - 1) % size / 100)::integer and c.last = head;
    if not found then
      raise exception 'the key was pruned and made anew' using errcode = 'SMRL1';
    end if;
    if head >= max_attempts then
      deciding := smsao.rate_limit_stamp(key, op, size, head + 1 - max_attempts);
      if deciding is null then
        raise exception 'the deciding attempt is not in its chunk' using errcode = 'SMRL1';
      elsif deciding > pg_catalog.clock_timestamp() - win then
        return false;
      end if;
    end if;
    if lap_before >= 1 then
      perform from smsao.rate_limit_hits c
       where c.caller_key = key and c.operation_type = op and c.chunk = next_chunk and c.last = lap_before
      for update nowait;
      if not found then
        raise exception 'the next chunk moved on' using errcode = 'SMRL1';
      end if;
      update smsao.rate_limit_hits c set ring[1] = pg_catalog.clock_timestamp(), last = head + 1
       where c.caller_key = key and c.operation_type = op and c.chunk = next_chunk;
    else
      -- (No one else inserts it: entering a chunk takes the key row first.)
      insert into smsao.rate_limit_hits (caller_key, operation_type, chunk, last, ring)
      values (key, op, next_chunk, head + 1, array[pg_catalog.clock_timestamp()]);
    end if;
    update smsao.rate_limit_keys k
       set admitted = head + 1,
           retain_window = greatest(k.retain_window, win),
           window_ends = greatest(k.window_ends, pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
     where k.caller_key = key and k.operation_type = op;
    return true;
  exception when sqlstate 'SMRL1' or lock_not_available or unique_violation then
    return null;
  end;
end
$$;
revoke all on function smsao.rate_limit_enter_chunk(text, text, bigint, integer, bigint, integer, interval)
  from public, anon, authenticated, service_role;

-- A call with a larger limit than the key's ring: the ring grows to it, under the key row's
-- lock (which every admission on the key row, every chunk entry and pruning take too) and
-- every chunk's (which an admission inside a chunk takes). Up to 100 attempts the ring stays
-- on the key row; past that it is in chunks of 100 (sql/schema/63_scale_speed.sql), made anew
-- (a call waiting on an old chunk finds it gone and looks again). Attempts the old ring had
-- already dropped are kept as '-infinity' (outside every window), so that every attempt
-- number in the new ring has its entry: the deciding look of a large ring never finds a gap.
-- Holding the key row, it never waits for a chunk (see smsao.rate_limit_enter_chunk): a busy
-- chunk rolls the attempt back, locks included, and the caller's next round tries again.
create or replace function smsao.grow_rate_limit_ring(key text, op text, new_size integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  n      bigint;
  size   integer;
  stamps timestamptz[];
  grown  timestamptz[];
  seqs   bigint[];
  ats    timestamptz[];
begin
  select k.admitted, k.ring_size, k.ring into n, size, stamps
    from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
  if not found or size >= new_size then
    return;   -- pruned, or grown by another call meanwhile
  end if;
  begin
    select k.admitted, k.ring_size, k.ring into n, size, stamps
      from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op
    for update;
    if not found or size >= new_size then
      raise exception 'pruned, or grown by another call meanwhile' using errcode = 'SMRL1';
    end if;
    if stamps is not null and new_size <= 100 then
      -- On the row: attempt j moves from slot (j - 1) % size + 1 to (j - 1) % new_size + 1.
      select pg_catalog.array_agg(case when j > n - size then stamps[((j - 1) % size + 1)::integer]
                                       else '-infinity'::timestamptz end order by (j - 1) % new_size)
        into grown
        from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j;
      update smsao.rate_limit_keys k set ring = grown, ring_size = new_size
       where k.caller_key = key and k.operation_type = op;
      return;
    end if;
    if stamps is not null then
      seqs := array(select j from pg_catalog.generate_series(greatest(n - size + 1, 1), n) j);
      ats := array(select stamps[((j - 1) % size + 1)::integer] from pg_catalog.unnest(seqs) j);
    else
      perform from smsao.rate_limit_hits c where c.caller_key = key and c.operation_type = op
       order by c.chunk for update nowait;
      -- Each chunk's slots with the attempt numbers they hold (see smsao.rate_limit_stamp).
      with moved as (
        delete from smsao.rate_limit_hits c where c.caller_key = key and c.operation_type = op
        returning c.chunk, c.last, c.ring
      ), attempts as (
        select m.last - (m.last - 1) % size + (m.chunk * 100 + i - 1)
               - case when m.chunk * 100 + i - 1 > (m.last - 1) % size then size else 0 end as seq,
               m.ring[i] as at
          from moved m, pg_catalog.generate_series(1, pg_catalog.cardinality(m.ring)) i
      )
      select pg_catalog.array_agg(a.seq), pg_catalog.array_agg(a.at) into seqs, ats
        from attempts a where a.seq >= 1 and a.at is not null;
      -- The hint names an attempt of the head chunk; the newest attempt of all is the head.
      n := coalesce((select max(s) from pg_catalog.unnest(seqs) s), n);
    end if;
    -- (A multi-argument unnest is FROM-clause syntax, not a pg_catalog function.)
    insert into smsao.rate_limit_hits (caller_key, operation_type, chunk, last, ring)
    select key, op, ((j - 1) % new_size / 100)::integer, max(j),
           pg_catalog.array_agg(coalesce(m.at, '-infinity') order by (j - 1) % new_size)
      from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j
      left join unnest(seqs, ats) as m(seq, at) on m.seq = j
     group by ((j - 1) % new_size / 100)::integer;
    update smsao.rate_limit_keys k set ring = null, ring_size = new_size, admitted = n
     where k.caller_key = key and k.operation_type = op;
  exception when sqlstate 'SMRL1' then
    return;
  when lock_not_available then
    perform pg_catalog.pg_sleep(0.01);   -- a chunk is being written: let it finish
  end;
end
$$;
revoke all on function smsao.grow_rate_limit_ring(text, text, integer) from public, anon, authenticated, service_role;

-- A refusal: counted nowhere in the key's state, and written to function_call_audit only
-- when it is the key's first refusal within its window, so a flood of refused calls
-- writes one row per key, operation and window, not one per call.
create or replace function smsao.record_rate_limit_denial(key text, op text, max_attempts integer,
                                                         window_minutes integer)
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  now_ timestamptz := pg_catalog.clock_timestamp();
begin
  update smsao.rate_limit_keys k set denied_at = now_
  where k.caller_key = key and k.operation_type = op
    and (k.denied_at is null or k.denied_at <= now_ - pg_catalog.make_interval(mins => window_minutes));
  if found then
    perform smsao.audit_call('enhanced_security_rate_limit',
      pg_catalog.jsonb_build_object('operation_type', op, 'max_attempts', max_attempts,
                                    'window_minutes', window_minutes, 'caller_key', key,
                                    'first_refusal_in_window', true),
      'rate_limited', now_);
  end if;
end
$$;
revoke all on function smsao.record_rate_limit_denial(text, text, integer, integer)
  from public, anon, authenticated, service_role;

-- Rate-limit state past its window, at most `max_keys` keys per call (each with its
-- attempts). Run every minute by the performance job and daily by the housekeeping job.
create or replace function smsao.prune_rate_limit_state(max_keys integer default 50000) returns integer
  language plpgsql
  set search_path = ''
as $$
declare
  on_row  integer;
  chunked integer;
begin
  -- Rings on the key row: every admission writes window_ends, and the DELETE re-checks it on
  -- the newest version of the row, so a key admitted meanwhile stays.
  with gone as (
    delete from smsao.rate_limit_keys k
    where k.ctid = any (array(select x.ctid from smsao.rate_limit_keys x
                              where x.window_ends < pg_catalog.clock_timestamp() and x.ring is not null
                              limit max_keys))
      and k.window_ends < pg_catalog.clock_timestamp() and k.ring is not null
    returning 1
  )
  select pg_catalog.count(*)::integer into on_row from gone;
  -- Rings in chunks: an admission inside a chunk writes only that chunk, so the key row's
  -- window_ends (moved when a chunk is entered) is a lower bound, and the newest attempt,
  -- in the head chunk, decides. The key row and the head chunk are locked, and re-checked
  -- if changed meanwhile: a call waiting on the chunk then finds it gone and makes the key
  -- anew, and one entering the next chunk (under the key row's lock) moved the hint, which
  -- no longer names this chunk. A key busy right now is skipped, not waited for.
  with heads as (
    select k.caller_key, k.operation_type
      from smsao.rate_limit_keys k
      join smsao.rate_limit_hits c
        on c.caller_key = k.caller_key and c.operation_type = k.operation_type
       and c.chunk = ((k.admitted - 1) % k.ring_size / 100)::integer
     where k.ring is null and k.window_ends < pg_catalog.clock_timestamp()
       and coalesce(c.ring[((c.last - 1) % k.ring_size % 100 + 1)::integer], '-infinity')
           < pg_catalog.clock_timestamp() - k.retain_window
     limit greatest(max_keys - on_row, 0)
       for update of k, c skip locked
  ), gone as (
    delete from smsao.rate_limit_keys k using heads h
     where k.caller_key = h.caller_key and k.operation_type = h.operation_type
    returning k.caller_key, k.operation_type
  ), chunks as (
    delete from smsao.rate_limit_hits c using gone g
     where c.caller_key = g.caller_key and c.operation_type = g.operation_type
  )
  select pg_catalog.count(*)::integer into chunked from gone;
  return on_row + chunked;
end
$$;
revoke all on function smsao.prune_rate_limit_state(integer) from public, anon, authenticated, service_role;

-- ==== sql/policies/hardening_state.sql ====
-- Internal state of revision 0005_hardening (schema smsao, not exposed by PostgREST): only
-- the owner's SECURITY DEFINER functions and a DBA touch it. RLS without policies denies
-- anyone else who might be granted access by mistake.
alter table smsao.rate_limit_keys enable row level security;
revoke all on table smsao.rate_limit_keys from public, anon, authenticated, service_role;
alter table smsao.rate_limit_hits enable row level security;
revoke all on table smsao.rate_limit_hits from public, anon, authenticated, service_role;
alter table smsao.upsert_marks enable row level security;
revoke all on table smsao.upsert_marks from public, anon, authenticated, service_role;
alter table smsao.critical_operations enable row level security;
revoke all on table smsao.critical_operations from public, anon, authenticated, service_role;

-- Sequences, including the identity sequences of public tables: Supabase's default
-- privileges grant them to the app roles; identity columns need no sequence privilege.
do $$
declare
  seq regclass;
begin
  for seq in select c.oid from pg_catalog.pg_class c
             where c.relkind = 'S' and c.relnamespace in ('public'::regnamespace, 'smsao'::regnamespace) loop
    execute pg_catalog.format('revoke all on sequence %s from public, anon, authenticated, service_role', seq);
  end loop;
end
$$;
