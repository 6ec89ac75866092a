-- Removes what 0014_large_rings changed: a large key's attempts, in chunks and in the array
-- on its row, become one smsao.rate_limit_hits row each again (attempt s in slot
-- s % ring_size, as far back as the ring spans), and its array null, as 0013_scale_speed's
-- limiter reads them (restore.sql brings that limiter back). The attempt rows go in under
-- negative slots, with an empty stamps array, while the chunk rows still hold theirs.
drop function smsao.prepare_rate_limit_row(text, text, integer);
alter table smsao.rate_limit_keys alter column ring drop not null, alter column ring drop default,
  drop constraint rate_limit_keys_ring_check, drop column due_chunk, drop column due;
alter table smsao.rate_limit_hits rename column chunk to seq;
alter table smsao.rate_limit_hits add column at timestamptz;
insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at, stamps)
select k.caller_key, k.operation_type, -1 - (j % k.ring_size)::integer, j,
       coalesce(case when j > k.admitted - pg_catalog.cardinality(k.ring)
                     then k.ring[(j - (k.admitted - pg_catalog.cardinality(k.ring)))::integer]
                     else (select h.stamps[((j - 1) % 100 + 1)::integer] from smsao.rate_limit_hits h
                            where h.caller_key = k.caller_key and h.operation_type = k.operation_type
                              and h.seq = (j - 1) / 100) end,
                '-infinity'),
       '{}'
  from smsao.rate_limit_keys k, pg_catalog.generate_series(greatest(k.admitted - k.ring_size + 1, 1), k.admitted) j
 where k.ring_size > 100;
delete from smsao.rate_limit_hits where stamps <> '{}';
update smsao.rate_limit_hits set slot = -1 - slot;
alter table smsao.rate_limit_hits drop column stamps, alter column at set not null;
update smsao.rate_limit_keys set ring = null where ring_size > 100;
alter table smsao.rate_limit_keys add constraint rate_limit_keys_ring_check
  check (ring is null or (ring_size <= 100 and pg_catalog.array_lower(ring, 1) >= 1
                          and pg_catalog.array_upper(ring, 1) <= ring_size));
