"""Health check cost as the data grows 10x, on data loaded through the product's write path.

    .venv/bin/python bench/health_bench.py            # 100k users / 1M logs, then 1M / 10M
    .venv/bin/python bench/health_bench.py --scale 0.1
    .venv/bin/python bench/health_bench.py --budget 1200   # more time for the 10M load

Builds realistic data in a scratch cluster (logged tables, the real schema and indexes):
users (signups into auth.users: profiles and roles by the signup trigger), pending and
processed credit requests, SMS logs spread over a year (6% failed, 0.1% of them left by
owners that have no profile), OTPs. Everything is loaded with plain bulk INSERT statements
with every trigger on, as a DBA importing data would: the health counters and the orphan
accounting follow each statement, no recount. Load times are printed: they are the
single-node bulk rates of signups and SMS logs. A burst of concurrent single-row inserts
through the triggers then leaves the counter shards live traffic leaves.
When the 10M SMS logs would not load within --budget seconds (default 600), the big size
stops at the last whole 1M-row statement that fits, and the output says so.
The server runs with fsync off while it loads (durability is not what is measured here).

Prints, per size: the load times, the health check's server-side and round-trip medians,
the floor (a bare SELECT 1 round trip), the simplest alternative (the same metrics as
plain count(*) queries), and whether every metric equals those counts in one snapshot."""
from __future__ import annotations

import argparse
import threading
import time

import psycopg

from common import log, median_ms, percentile_ms, print_table, quiet_alembic, scratch_cluster, timed

PLAIN = """
select
  (select count(*) from public.profiles),
  (select count(*) from public.sms_configurations where is_active),
  (select count(*) from public.credit_requests where status = 'pending'),
  (select count(*) from public.sms_logs where status = 'failed' and created_at > now() - interval '24 hours'),
  (select count(*) from public.sms_logs l where not exists (select from public.profiles p where p.user_id = l.user_id))
  + (select count(*) from public.otp_codes o where o.user_id is not null
       and not exists (select from public.profiles p where p.user_id = o.user_id)),
  (select count(*) from public.sms_logs where created_at >= smsao.hour_bucket(now() - interval '24 hours')),
  (select count(*) from public.sms_logs where status = 'failed'
     and created_at >= smsao.hour_bucket(now() - interval '24 hours'))
"""
KEYS = ("total_users", "active_sms_configs", "pending_credit_requests", "failed_sms_24h", "orphaned_data")


def load(conn: psycopg.Connection, users_from: int, users_to: int, users_total: int,
         logs_from: int, logs_to: int, deadline: float) -> dict:
    """Loads through the product's normal write path: plain bulk INSERT statements with every
    trigger on (signups write profiles and roles, the health counters and orphan accounting
    follow each statement), as a DBA importing data does. Returns the seconds each part took
    and the last sms_logs id loaded, which is below logs_to when the next 1M-row statement
    would have ended past `deadline` (time.monotonic())."""
    times = {}
    log(f"users {users_from:,}..{users_to:,} (one statement)")
    t0 = time.monotonic()
    conn.execute("""
      insert into auth.users (id, email, created_at)
      select md5('u' || i)::uuid, 'u' || i || '@bench.ao', now() - random() * interval '365 days'
      from generate_series(%s::int, %s::int) i""", [users_from, users_to])
    times["users"] = time.monotonic() - t0
    t0 = time.monotonic()
    conn.execute("""
      insert into public.credit_requests (user_id, amount, status, created_at, processed_at)
      select md5('u' || i)::uuid, 500, case when i %% 50 = 0 then 'pending' else 'approved' end,
             now() - interval '3 days', case when i %% 50 = 0 then null else now() - interval '2 days' end
      from generate_series(%s::int, %s::int) i where i %% 10 = 0""", [users_from, users_to])
    conn.execute("""
      insert into public.otp_codes (user_id, phone, code_hash, expires_at, created_at)
      select case when i %% 200 = 0 then md5('ghost' || i)::uuid when i %% 5 = 0 then null
                  else md5('u' || i)::uuid end,
             '+2449' || lpad(i::text, 8, '0'), md5(i::text),
             now() - random() * interval '30 days', now() - interval '31 days'
      from generate_series(%s::int, %s::int) i where i %% 10 = 0""", [users_from, users_to])
    times["requests+otps"] = time.monotonic() - t0
    step = 1_000_000
    t0 = time.monotonic()
    loaded_to = logs_from - 1
    per_row = None
    for start in range(logs_from, logs_to + 1, step):
        end = min(logs_to, start + step - 1)
        if per_row is not None and time.monotonic() + per_row * (end - start + 1) > deadline:
            log(f"sms_logs: stopping at {loaded_to:,}: the next statement would end past the time budget")
            break
        log(f"sms_logs {start:,}..{end:,}")
        s0 = time.monotonic()
        # Spread over the last year at random: every statement touches the last 48 hours'
        # counter buckets, and a load stopped early still covers the whole year.
        conn.execute("""
          insert into public.sms_logs (user_id, recipient, message, status, error_message, created_at)
          select case when g %% 1000 = 0 then md5('ghost' || g)::uuid
                      else md5('u' || (1 + floor(random() * %(users)s))::int)::uuid end,
                 '+2449' || lpad((g %% 100000000)::text, 8, '0'),
                 'Promoção de fim de semana: 20%% de desconto em todas as lojas!',
                 s.status, case when s.status = 'failed' then 'gateway timeout' end,
                 now() - random() * interval '365 days'
          from generate_series(%(start)s::bigint, %(end)s::bigint) g
          cross join lateral (select case when random() < 0.06 then 'failed'
                                          when random() < 0.85 then 'delivered' else 'sent' end as status
                              where g is not null) s""",
                     {"users": users_total, "start": start, "end": end})
        per_row = (time.monotonic() - s0) / (end - start + 1)
        loaded_to = end
    times["sms_logs"] = time.monotonic() - t0
    log("vacuum analyze")
    t0 = time.monotonic()
    conn.execute("vacuum analyze")
    times["vacuum"] = time.monotonic() - t0
    times["logs_loaded_to"] = loaded_to
    return times


def live_traffic(url: str, users_total: int, threads: int = 4, per_thread: int = 200) -> None:
    """Concurrent single-row inserts through the triggers, as the app makes them."""
    def work(k: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for i in range(per_thread):
                conn.execute("insert into public.sms_logs (user_id, recipient, status) values "
                             "(md5('u' || %s)::uuid, '+244900000000', %s)",
                             [1 + (k * per_thread + i) % users_total, "failed" if i % 15 == 0 else "delivered"])
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def measure(url: str, users: int, logs: int) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        health = "select public.production_system_health_check()"
        for _ in range(30):
            conn.execute(health, prepare=True).fetchone()
        trips = [timed(conn, health) for _ in range(300)]
        floor = [timed(conn, "select 1") for _ in range(300)]
        conn.execute("create temp table t (ms float8)")
        conn.execute("""
          do $$
          declare t0 timestamptz;
          begin
            for i in 1..300 loop
              t0 := clock_timestamp();
              perform public.production_system_health_check();
              insert into t values (extract(epoch from clock_timestamp() - t0) * 1000);
            end loop;
          end $$""")
        server_median, server_p95 = conn.execute(
            "select percentile_cont(0.5) within group (order by ms), "
            "percentile_cont(0.95) within group (order by ms) from t").fetchone()
        plain_times = [timed(conn, PLAIN) for _ in range(3)]
        with conn.transaction():
            conn.execute("set transaction isolation level repeatable read")
            report = conn.execute(health).fetchone()[0]
            plain = conn.execute(PLAIN).fetchone()
        m = report["metrics"]
        window = report["details"]["sms_window"]
        equal = all(m[k] == v for k, v in zip(KEYS, plain[:5])) and (window["total"], window["failed"]) == plain[5:]
        counter_rows = conn.execute("select count(*) from smsao.health_counters").fetchone()[0]
    return {
        "users": users, "logs": logs, "server_median": server_median, "server_p95": server_p95,
        "trip_median": median_ms(trips), "trip_p99": percentile_ms(trips, 99), "floor": median_ms(floor),
        "plain": median_ms(plain_times), "equal": equal, "metrics": m, "plain_values": plain,
        "counter_rows": counter_rows, "status": report["system_status"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1M users / 10M logs")
    parser.add_argument("--budget", type=int, default=600,
                        help="seconds the whole run may take (default 600): the big load stops "
                             "adding 1M-row SMS statements that would end past it")
    args = parser.parse_args()
    quiet_alembic()
    small_users, small_logs = int(100_000 * args.scale), int(1_000_000 * args.scale)
    big_users, big_logs = int(1_000_000 * args.scale), int(10_000_000 * args.scale)
    started = time.monotonic()
    results, loads = [], []
    with scratch_cluster({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into public.sms_configurations (gateway_name, sender_id, is_active) "
                         "values ('ombala', 'SMSAO', true), ('twilio', 'SMSAO', false)")
            loads.append(load(conn, 1, small_users, small_users, 1, small_logs, float("inf")))
        live_traffic(url, small_users)
        log("measure small")
        results.append(measure(url, small_users, small_logs))
        # Leave ~90 s after the big load for its vacuum, the live traffic and the measurements.
        deadline = started + args.budget - 90
        with psycopg.connect(url, autocommit=True) as conn:
            loads.append(load(conn, small_users + 1, big_users, big_users, small_logs + 1, big_logs, deadline))
        loaded_logs = loads[-1]["logs_loaded_to"]
        live_traffic(url, big_users)
        log("measure big")
        results.append(measure(url, big_users, loaded_logs))

    print_table(
        ["load", "users", "sms_logs", "signups s", "signups/s", "requests+OTPs s", "sms_logs s", "SMS logs/s",
         "vacuum analyze s"],
        [[name, f"{u_from:,}..{u_to:,}", f"{l_from:,}..{ld['logs_loaded_to']:,}", f"{ld['users']:.1f}",
          f"{(u_to - u_from + 1) / ld['users']:,.0f}", f"{ld['requests+otps']:.1f}", f"{ld['sms_logs']:.1f}",
          f"{(ld['logs_loaded_to'] - l_from + 1) / ld['sms_logs']:,.0f}" if ld["sms_logs"] else "-",
          f"{ld['vacuum']:.1f}"]
         for name, u_from, u_to, l_from, ld in [("small", 1, small_users, 1, loads[0]),
                                               ("big", small_users + 1, big_users, small_logs + 1, loads[1])]],
        title="Load through the product's write path: bulk INSERT statements, every trigger on "
              "(signups in one statement; SMS logs 1M rows per statement); fsync off")
    if loaded_logs < big_logs:
        print(f"\nNOTE: loading {big_logs:,} SMS logs through the triggers does not fit the {args.budget} s budget "
              f"on this machine: the big size has {loaded_logs:,} (the big load would take about "
              f"{(big_logs - small_logs) / max(1, loaded_logs - small_logs) * loads[1]['sms_logs']:.0f} s "
              f"for all of them at the measured rate). --budget raises it.")
    print_table(
        ["users", "sms_logs", "health median ms (server)", "p95 ms (server)", "round trip median ms",
         "round trip p99 ms", "SELECT 1 round trip ms", "plain count(*) ms", "counter rows", "metrics == count(*)"],
        [[f"{r['users']:,}", f"{r['logs']:,}", f"{r['server_median']:.3f}", f"{r['server_p95']:.3f}",
          f"{r['trip_median']:.3f}", f"{r['trip_p99']:.3f}", f"{r['floor']:.3f}", f"{r['plain']:.1f}",
          r["counter_rows"], "yes" if r["equal"] else "NO"] for r in results],
        title="production_system_health_check() vs data size (reads only)")
    small, big = results
    print_table(
        ["ratio (big / small)", "health check (server)", "health check (round trip)", "plain count(*)"],
        [[f"{big['users'] // small['users']}x users, {big['logs'] / small['logs']:.1f}x logs", f"{big['server_median'] / small['server_median']:.2f}x",
          f"{big['trip_median'] / small['trip_median']:.2f}x", f"{big['plain'] / small['plain']:.1f}x"]])
    if loaded_logs < big_logs:
        print(f"(the big size holds {loaded_logs / small_logs:.1f}x the small size's SMS logs, not 10x)")
    print_table(["size", *KEYS, "sms_failure_rate", "status"],
                [[f"{r['users']:,}/{r['logs']:,}", *(f"{r['metrics'][k]:,}" for k in KEYS),
                  r["metrics"]["sms_failure_rate"], r["status"]] for r in results],
                title="metrics (each equal to its plain count(*) in the same snapshot)")
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
