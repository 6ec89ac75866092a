-- Removes what 0014_large_rings changed: a large key's attempts in the array on its row go
-- to smsao.rate_limit_hits (attempt s in slot s % ring_size), and its array becomes null
-- again, as 0013_scale_speed's limiter reads it (restore.sql brings that limiter back).
drop function smsao.flush_rate_limit_ring(text, text);
alter table smsao.rate_limit_keys alter column ring drop not null, alter column ring drop default,
  drop constraint rate_limit_keys_ring_check;
insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
select k.caller_key, k.operation_type,
       ((k.admitted - pg_catalog.cardinality(k.ring) + i) % k.ring_size)::integer,
       k.admitted - pg_catalog.cardinality(k.ring) + i, coalesce(k.ring[i], '-infinity')
  from smsao.rate_limit_keys k, pg_catalog.generate_series(1, pg_catalog.cardinality(k.ring)) i
 where k.ring_size > 100
on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
update smsao.rate_limit_keys set ring = null where ring_size > 100;
alter table smsao.rate_limit_keys add constraint rate_limit_keys_ring_check
  check (ring is null or (ring_size <= 100 and pg_catalog.array_lower(ring, 1) >= 1
                          and pg_catalog.array_upper(ring, 1) <= ring_size));
