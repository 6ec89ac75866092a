-- Removes what 0013_scale_speed added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the definitions of 0011_scale.
drop function smsao.rate_limit_enter_chunk(text, text, bigint, integer, bigint, integer, interval);
drop function smsao.rate_limit_stamp(text, text, integer, bigint);

-- Rings in chunks go back to one row per attempt (slot seq % ring_size), and each key row
-- gets its exact newest attempt number back (a hint in chunks): no admitted attempt is
-- forgotten by the downgrade.
alter table smsao.rate_limit_hits rename to rate_limit_hits_0013;
alter table smsao.rate_limit_hits_0013 rename constraint rate_limit_hits_pkey to rate_limit_hits_0013_pkey;
create unlogged table smsao.rate_limit_hits (
  caller_key     text not null,
  operation_type text not null,
  slot           integer not null,        -- seq % ring_size of the key
  seq            bigint not null,         -- the attempt's number on its key
  at             timestamptz not null,    -- when it was admitted (after the key's lock)
  primary key (caller_key, operation_type, slot)
) with (fillfactor = 70);  -- an admission overwrites its slot: a HOT update
insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
select c.caller_key, c.operation_type, (a.seq % k.ring_size)::integer, a.seq, c.ring[a.i]
  from smsao.rate_limit_hits_0013 c
  join smsao.rate_limit_keys k on k.caller_key = c.caller_key and k.operation_type = c.operation_type
 cross join lateral (
   select i, c.last - (c.last - 1) % k.ring_size + (c.chunk * 100 + i - 1)
             - case when c.chunk * 100 + i - 1 > (c.last - 1) % k.ring_size then k.ring_size else 0 end as seq
     from pg_catalog.generate_series(1, pg_catalog.cardinality(c.ring)) i) a
 where k.ring is null and a.seq >= 1 and c.ring[a.i] is not null;
update smsao.rate_limit_keys k
   set admitted = h.newest
  from (select caller_key, operation_type, max(last) as newest
          from smsao.rate_limit_hits_0013 group by caller_key, operation_type) h
 where k.caller_key = h.caller_key and k.operation_type = h.operation_type and k.ring is null;
drop table smsao.rate_limit_hits_0013;

-- The audit trails' keys as 0011_scale made them: (id, created_at), and the index on
-- created_at (each partition's index takes the name it had).
alter table public.admin_audit_logs drop constraint admin_audit_logs_pkey,
  add constraint admin_audit_logs_pkey primary key (id, created_at);
create index admin_audit_logs_created_idx on public.admin_audit_logs (created_at);
alter table public.pii_access_audit drop constraint pii_access_audit_pkey,
  add constraint pii_access_audit_pkey primary key (id, created_at);
create index pii_access_audit_created_idx on public.pii_access_audit (created_at);
alter table public.function_call_audit drop constraint function_call_audit_pkey,
  add constraint function_call_audit_pkey primary key (id, created_at);
create index function_call_audit_created_idx on public.function_call_audit (created_at);
