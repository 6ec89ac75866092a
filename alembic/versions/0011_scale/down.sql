-- Removes what 0011_scale added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the released definitions.

-- The rate limiter: rings kept on the key row go back to smsao.rate_limit_hits (slot
-- s % ring_size), so no admitted attempt is forgotten by the downgrade.
insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
select k.caller_key, k.operation_type, (j % k.ring_size)::integer, j, k.ring[((j - 1) % k.ring_size + 1)::integer]
  from smsao.rate_limit_keys k,
       pg_catalog.generate_series(greatest(k.admitted - k.ring_size + 1, 1), k.admitted) j
 where k.ring is not null and k.ring[((j - 1) % k.ring_size + 1)::integer] is not null
on conflict (caller_key, operation_type, slot) do update set seq = excluded.seq, at = excluded.at;
alter table smsao.rate_limit_keys drop column ring;
