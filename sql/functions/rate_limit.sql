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
-- 60_scale.sql, 64_large_rings.sql). The max_attempts-th newest attempt decides: the call is
-- refused when it was admitted inside the window.
--   1. An admission is one conditional UPDATE of the key row, which both decides and
--      records, and whose row lock serialises concurrent admissions: a call that waited
--      re-checks its WHERE against the newest version of the row (READ COMMITTED's
--      re-check), so no more than max_attempts are ever admitted in a window, and the stamp
--      is taken after the wait.
--      For limits up to 100 the whole ring is an array on that row: the UPDATE overwrites
--      the slot of the attempt that decides it (the max_attempts-th newest).
--      Larger limits (up to 10,000) keep their older attempts in smsao.rate_limit_hits, in
--      chunks of 100 (one row each), and their newest ones, up to 100, appended to the array
--      on the key row; the deciding attempt is read from whichever holds it. The key row
--      also keeps a copy of the chunk that holds the deciding attempt (due), so that the
--      hits table is read once per 100 admissions, when the deciding attempt moves on to
--      the next chunk. One admission in 100 finds the array full and first moves it to the
--      hits table as one chunk row (smsao.prepare_rate_limit_row, under the key row's lock,
--      which also copies the next deciding chunk), instead of every call writing a row there.
--   2. Refusals write nothing: when the UPDATE matched no row, one look at the committed
--      state says why (no key yet, a ring smaller than this limit, a full array, or full).
--      A refusal records at most one function_call_audit row per key, operation and window
--      (smsao.record_rate_limit_denial).
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
  inline   boolean := max_attempts <= 100;   -- try the small ring's UPDATE first
  uid      uuid;
  seen     bigint;                           -- the key's newest attempt number
  kept     integer;                          -- the key's ring size
  on_row   boolean;                          -- the whole ring is on the key row (limits up to 100)
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
  -- smsao.request_uid() inline: its call (settings pinned, exception block) costs as much
  -- as the admission's own statement. Callers without a user id: smsao.rate_limit_key().
  begin
    uid := coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                    nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid;
  exception when invalid_text_representation then
    uid := null;
  end;
  key := case when uid is not null then 'user:' || uid::text else smsao.rate_limit_key() end;
  if key like 'ip:%' and (max_attempts > 100 or window_minutes > 60) then
    raise exception 'max_attempts must be at most 100 and window_minutes at most 60 for anonymous callers, got % and %',
      max_attempts, window_minutes using errcode = '22023';
  end if;

  -- (A round ends without an answer only when the key changed shape under the call: it was
  -- created, pruned, its ring grew or its array was moved. A few rounds always suffice.)
  for round in 1..5 loop
    -- 1. Admit: one row write. clock_timestamp() is read when the row lock is held.
    if inline then
      update smsao.rate_limit_keys k
         set ring[k.admitted % k.ring_size + 1] = pg_catalog.clock_timestamp(),
             admitted = k.admitted + 1,
             retain_window = greatest(k.retain_window, win),
             window_ends = greatest(k.window_ends,
                                    pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
       where k.caller_key = key and k.operation_type = op
         and k.ring_size <= 100 and k.ring_size >= max_attempts
         and (k.admitted < max_attempts
              or coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                 <= pg_catalog.clock_timestamp() - win);
    else
      -- The array holds attempts admitted - cardinality(ring) + 1 .. admitted, in order; the
      -- hits table the older ones the ring spans, in chunks of 100 (attempt s in chunk
      -- (s - 1) / 100, at (s - 1) % 100 + 1; chunk c in slot c % (ring_size / 100 + 2),
      -- rounded up), and the row a copy of the chunk of the deciding attempt (due). The
      -- UPDATE decides from the row alone (below the limit, or the deciding attempt in the
      -- array or in the copy): a statement without subqueries, cheap to start and to re-check
      -- after a wait. When the array is full or the copy is not the deciding chunk (one
      -- admission in 100 of a steady key), it matches nothing, and the look below has
      -- smsao.prepare_rate_limit_row put the row right first.
      update smsao.rate_limit_keys k
         set ring = k.ring || pg_catalog.clock_timestamp(),
             admitted = k.admitted + 1,
             retain_window = greatest(k.retain_window, win),
             window_ends = greatest(k.window_ends,
                                    pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
       where k.caller_key = key and k.operation_type = op
         and k.ring_size > 100 and k.ring_size >= max_attempts
         and pg_catalog.cardinality(k.ring) < 100
         and (k.admitted < max_attempts
              or case when pg_catalog.cardinality(k.ring) >= max_attempts
                      then coalesce(k.ring[pg_catalog.cardinality(k.ring) - max_attempts + 1], '-infinity')
                      when k.due_chunk = (k.admitted - max_attempts) / 100
                      then k.due[((k.admitted - max_attempts) % 100 + 1)::integer] end
                 <= pg_catalog.clock_timestamp() - win);
    end if;
    if found then
      return true;
    end if;

    -- 2. Not admitted: why? Committed state, no lock.
    select k.admitted, k.ring_size, k.ring_size <= 100, k.denied_at,
           case when k.admitted < max_attempts or k.ring_size < max_attempts then null
                when k.ring_size <= 100
                then coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                when pg_catalog.cardinality(k.ring) >= max_attempts
                then coalesce(k.ring[pg_catalog.cardinality(k.ring) - max_attempts + 1], '-infinity')
                when k.due_chunk = (k.admitted - max_attempts) / 100
                then k.due[((k.admitted - max_attempts) % 100 + 1)::integer]
                else (select h.stamps[((k.admitted - max_attempts) % 100 + 1)::integer]
                        from smsao.rate_limit_hits h
                       where h.caller_key = key and h.operation_type = op
                         and h.slot = (((k.admitted - max_attempts) / 100)
                                       % ((k.ring_size + 99) / 100 + 1))::integer
                         and h.chunk = (k.admitted - max_attempts) / 100) end
      into seen, kept, on_row, denied, deciding
      from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
    if seen is null then
      -- A new key: its first attempt, in the array on the row whatever the limit.
      insert into smsao.rate_limit_keys as k
        (caller_key, operation_type, admitted, ring_size, retain_window, window_ends, ring)
      values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win,
              array[pg_catalog.clock_timestamp()])
      on conflict on constraint rate_limit_keys_pkey do nothing;
      if found then
        return true;
      end if;
      continue;
    end if;
    if max_attempts > kept then
      perform smsao.grow_rate_limit_ring(key, op, max_attempts);
      inline := max_attempts <= 100;
      continue;
    end if;
    if deciding > pg_catalog.clock_timestamp() - win then
      if denied is null or denied <= pg_catalog.clock_timestamp() - win then
        perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
      end if;
      return false;
    end if;
    if not on_row then
      -- Admissible, but the array may be full or the copy on the row not the deciding chunk.
      perform smsao.prepare_rate_limit_row(key, op, max_attempts);
    end if;
    inline := on_row;   -- admissible now (the window slid, or the key changed): again
  end loop;
  raise exception 'rate limit state of % changed under the call five times: retry', op
    using errcode = '40001';
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- A call with a larger limit than the key's ring: the ring grows to it, under the key row's
-- lock (which every admission of the key takes too). Up to 100 attempts the ring stays on
-- the key row; past that its attempts up to the last multiple of 100 move to
-- smsao.rate_limit_hits in chunks of 100 (chunk c holds attempts 100c + 1 .. 100c + 100,
-- in slot c % (ring_size / 100 + 2), rounded up) and the newer ones stay in the array. A
-- large ring growing keeps its array and re-slots its chunks. Attempts the old ring had
-- already dropped are kept as '-infinity' (outside every window), so that every attempt the
-- new ring spans has its entry: the deciding look of a large ring never finds a gap.
create or replace function smsao.grow_rate_limit_ring(key text, op text, new_size integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  n      bigint;
  size   integer;
  stamps timestamptz[];
  grown  timestamptz[];
  slots  integer := (new_size + 99) / 100 + 1;   -- chunk slots of the new ring
  oldest bigint;                                 -- the first chunk the new ring spans
  moved  bigint;                                 -- attempts up to this one are in chunks
begin
  select k.admitted, k.ring_size, k.ring into n, size, stamps
    from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op
  for update;
  if not found or size >= new_size then
    return;   -- pruned, or grown by another call meanwhile
  end if;
  if new_size <= 100 then
    -- On the row: attempt j moves from slot (j - 1) % size + 1 to (j - 1) % new_size + 1.
    select pg_catalog.array_agg(case when j > n - size then stamps[((j - 1) % size + 1)::integer]
                                     else '-infinity'::timestamptz end order by (j - 1) % new_size)
      into grown
      from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j;
    update smsao.rate_limit_keys k set ring = grown, ring_size = new_size
     where k.caller_key = key and k.operation_type = op;
    return;
  end if;
  oldest := (greatest(n - new_size + 1, 1) - 1) / 100;
  if size <= 100 then
    -- From the row: attempt j (kept when j > n - size) is at stamps[(j - 1) % size + 1].
    moved := n / 100 * 100;
    insert into smsao.rate_limit_hits (caller_key, operation_type, slot, chunk, stamps)
    select key, op, (c % slots)::integer, c,
           array(select coalesce(case when j > n - size then stamps[((j - 1) % size + 1)::integer] end,
                                 '-infinity')
                   from pg_catalog.generate_series(c * 100 + 1, c * 100 + 100) j order by j)
      from pg_catalog.generate_series(oldest, moved / 100 - 1) c;
    grown := array(select coalesce(case when j > n - size then stamps[((j - 1) % size + 1)::integer] end,
                                   '-infinity')
                     from pg_catalog.generate_series(moved + 1, n) j order by j);
  else
    -- A large ring: its chunks move to the new ring's slots (through negative ones: a chunk
    -- may land where another still is), and the chunks it had dropped come back empty.
    moved := n - pg_catalog.cardinality(stamps);
    delete from smsao.rate_limit_hits h where h.caller_key = key and h.operation_type = op and h.chunk < oldest;
    update smsao.rate_limit_hits h set slot = -1 - h.slot where h.caller_key = key and h.operation_type = op;
    update smsao.rate_limit_hits h set slot = (h.chunk % slots)::integer
     where h.caller_key = key and h.operation_type = op;
    insert into smsao.rate_limit_hits (caller_key, operation_type, slot, chunk, stamps)
    select key, op, (c % slots)::integer, c, pg_catalog.array_fill('-infinity'::timestamptz, array[100])
      from pg_catalog.generate_series(oldest, moved / 100 - 1) c
     where not exists (select from smsao.rate_limit_hits h
                        where h.caller_key = key and h.operation_type = op and h.chunk = c);
    grown := stamps;
  end if;
  update smsao.rate_limit_keys k set ring = grown, ring_size = new_size
   where k.caller_key = key and k.operation_type = op;
end
$$;
revoke all on function smsao.grow_rate_limit_ring(text, text, integer) from public, anon, authenticated, service_role;

-- A large ring's key row made ready for an admission at max_attempts, under its lock: a full
-- array (100 attempts, the last one a multiple of 100) moves to the hits table as one chunk
-- row and starts again empty (chunk c goes to slot c % (ring_size / 100 + 2), rounded up,
-- over the chunk that many older, which the ring no longer spans), and the row gets a copy
-- of the chunk that holds the attempt deciding the next call. Read here, after the lock,
-- the hits table is as the row says: nothing is moved by another call meanwhile.
create or replace function smsao.prepare_rate_limit_row(key text, op text, max_attempts integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  n      bigint;
  size   integer;
  stamps timestamptz[];
  copied bigint;
  copy   timestamptz[];
  decide bigint;                           -- the chunk of the next call's deciding attempt
begin
  select k.admitted, k.ring_size, k.ring, k.due_chunk, k.due into n, size, stamps, copied, copy
    from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op
  for update;
  if not found or size <= 100 then
    return;   -- pruned meanwhile
  end if;
  if pg_catalog.cardinality(stamps) >= 100 then
    insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, chunk, stamps)
    values (key, op, ((n / 100 - 1) % ((size + 99) / 100 + 1))::integer, n / 100 - 1, stamps)
    on conflict on constraint rate_limit_hits_pkey do update set chunk = excluded.chunk, stamps = excluded.stamps;
    stamps := '{}';
  end if;
  decide := (n - max_attempts) / 100;
  if n >= max_attempts and pg_catalog.cardinality(stamps) < max_attempts and copied is distinct from decide then
    select h.stamps into copy from smsao.rate_limit_hits h
     where h.caller_key = key and h.operation_type = op
       and h.slot = (decide % ((size + 99) / 100 + 1))::integer and h.chunk = decide;
    copied := decide;
  end if;
  update smsao.rate_limit_keys k set ring = stamps, due_chunk = copied, due = copy
   where k.caller_key = key and k.operation_type = op;
end
$$;
revoke all on function smsao.prepare_rate_limit_row(text, text, integer) from public, anon, authenticated, service_role;

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
  pruned integer;
begin
  with gone as (
    delete from smsao.rate_limit_keys k
    where k.ctid = any (array(select x.ctid from smsao.rate_limit_keys x
                              where x.window_ends < pg_catalog.clock_timestamp()
                              limit max_keys))
      and k.window_ends < pg_catalog.clock_timestamp()
    returning k.caller_key, k.operation_type
  ), hits as (
    delete from smsao.rate_limit_hits h using gone g
    where h.caller_key = g.caller_key and h.operation_type = g.operation_type
  )
  select pg_catalog.count(*)::integer into pruned from gone;
  return pruned;
end
$$;
revoke all on function smsao.prune_rate_limit_state(integer) from public, anon, authenticated, service_role;
