-- Vital signs of replication (revision 0009_replication): how many standbys stream from
-- this primary and how far behind the slowest one is. production_system_health_check()
-- reports them beside the engine's; the dashboard's Replication group and /metrics show them.
--
--   replication_standbys          standbys streaming from this server (pg_stat_replication)
--   replication_lag_bytes         the largest replay lag of a connected standby, in bytes of WAL
--   replication_lag_s             the same in seconds (replay_lag; PostgreSQL shows NULL once a
--                                 standby has caught up and nothing is written: that is 0)
--   replication_standbys_missing  the standbys this primary expects minus those streaming, at
--                                 least 0; the health check judges replication_standbys by it.
--                                 Expected: the synchronous standbys synchronous_standby_names
--                                 asks for (ANY/FIRST n, or 1 for a plain list), or the physical
--                                 replication slots if more (pg_auto_failover keeps a slot per
--                                 other node and empties synchronous_standby_names while its
--                                 standby is gone, so that writes go on: the slot still says a
--                                 standby is missing, and it holds WAL back until it returns).
--
-- NULL, with the reason under 'unknown', on a server that is not part of a replicated
-- formation (no standby connected, none asked for, no physical slot), on a standby (the
-- figures are its primary's), and where this function's owner cannot read the replication
-- statistics (superuser or pg_read_all_stats): never a made-up 0.
create or replace function smsao.replication_vitals() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  sync_names text := pg_catalog.current_setting('synchronous_standby_names');
  wanted bigint := 0::bigint;
  slots bigint;
  streaming bigint;
  lag_bytes numeric;
  lag_s numeric;
  m text[];
  why text;
begin
  if pg_catalog.pg_is_in_recovery() then
    why := 'this server is a standby: ask the primary';
  elsif not exists (select from pg_catalog.pg_roles r where r.rolname = current_user and r.rolsuper)
        and not pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'member') then
    why := 'reading pg_stat_replication needs superuser or pg_read_all_stats for the owner of smsao.replication_vitals()';
  end if;
  if why is not null then
    return smsao.replication_unknown(why);
  end if;

  -- 'ANY 2 (a, b, c)', 'FIRST 1 (a, b)', '2 (a, b)', or a plain list 'a, b' (FIRST 1).
  if pg_catalog.btrim(sync_names) <> '' then
    m := pg_catalog.regexp_match(sync_names, '^\s*(?:(?:ANY|FIRST)\s+)?(\d+)\s*\(', 'i');
    wanted := coalesce(m[1]::bigint, 1);
  end if;
  select count(*) into slots from pg_catalog.pg_replication_slots s where s.slot_type = 'physical';
  select count(*) filter (where r.state = 'streaming'),
         max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.replay_lsn))
           filter (where r.state = 'streaming'),
         max(coalesce(extract(epoch from r.replay_lag),
                      case when r.replay_lsn >= pg_catalog.pg_current_wal_lsn() then 0 end))
           filter (where r.state = 'streaming')
    into streaming, lag_bytes, lag_s
    from pg_catalog.pg_stat_replication r;

  if streaming = 0 and wanted = 0 and slots = 0
     and not exists (select from pg_catalog.pg_stat_replication) then
    return smsao.replication_unknown('this server is not part of a replicated formation');
  end if;
  return pg_catalog.jsonb_build_object(
    'replication_standbys', streaming,
    'replication_standbys_missing', greatest(greatest(wanted, slots) - streaming, 0),
    'replication_lag_bytes', lag_bytes,
    'replication_lag_s', round(lag_s, 3),
    'unknown', case when streaming > 0 then '{}'::jsonb else pg_catalog.jsonb_build_object(
      'replication_lag_bytes', 'no standby is streaming', 'replication_lag_s', 'no standby is streaming') end);
end
$$;
revoke all on function smsao.replication_vitals() from public, anon, authenticated, service_role;

create or replace function smsao.replication_unknown(why text) returns jsonb
  language plpgsql immutable
  set search_path = ''
as $$
begin
  return pg_catalog.jsonb_build_object('replication_standbys', null, 'replication_standbys_missing', null,
    'replication_lag_bytes', null, 'replication_lag_s', null,
    'unknown', pg_catalog.jsonb_build_object('replication_standbys', why,
                                             'replication_lag_bytes', why, 'replication_lag_s', why));
end
$$;
revoke all on function smsao.replication_unknown(text) from public, anon, authenticated, service_role;
