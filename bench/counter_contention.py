"""What the live health counters cost the app's SMS inserts, and that they never
serialise concurrent writers.

    .venv/bin/python bench/counter_contention.py

N sessions each run transactions that insert one SMS log and then do ~5 ms of other
work before committing (as an app request does), for a few seconds:
  no counters (floor)    session_replication_role = replica: no triggers at all
  project counters       the real triggers (sharded counter rows, SKIP LOCKED)
  one counter row        the naive design: a statement trigger adding to a single row
The naive row is held from the insert to the commit, so its writers queue behind each
other; the project's writers each take a free shard."""
from __future__ import annotations

import threading
import time

import psycopg

from common import percentile_ms, print_table, quiet_alembic, scratch_cluster

SESSIONS = 8
SECONDS = 4.0
NAIVE = """
create table public.naive_counter (id int primary key, value bigint not null);
insert into public.naive_counter values (1, 0);
create function public.naive_count() returns trigger language plpgsql as $$
begin
  update public.naive_counter set value = value + (select count(*) from new_rows) where id = 1;
  return null;
end $$;
"""


def run(url: str, setup: str | None) -> tuple[int, list[float]]:
    stop = time.perf_counter() + SECONDS
    latencies: list[float] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        mine = []
        with psycopg.connect(url) as conn:
            if setup:
                conn.execute(setup)
                conn.commit()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                conn.execute("insert into public.sms_logs (user_id, recipient, status) values "
                             "(md5('u' || %s)::uuid, '+244900000000', 'sent')", [1 + k])
                conn.execute("select pg_sleep(0.005)")
                conn.commit()
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), latencies


def main() -> None:
    quiet_alembic()
    rows = []
    with scratch_cluster() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("set session_replication_role = replica")
            conn.execute("insert into auth.users (id, email) select md5('u' || i)::uuid, i || '@b.ao' "
                         "from generate_series(1, 100) i")
            conn.execute("insert into public.profiles (user_id) select md5('u' || i)::uuid from generate_series(1, 100) i")
            conn.execute("set session_replication_role = origin")
            conn.execute("select smsao.recount_health_counters()")
            conn.execute(NAIVE)
        check = ("select (select count(*) from smsao.health_counters where metric = 'sms'), "
                 "(select sum(value) from smsao.health_counters where metric = 'sms') = (select count(*) "
                 "from public.sms_logs where created_at >= smsao.hour_bucket(now() - interval '48 hours'))")
        for name, setup, naive in [("no counters (floor)", "set session_replication_role = replica", False),
                                   ("project counters", None, False),
                                   ("one counter row", None, True)]:
            with psycopg.connect(url, autocommit=True) as conn:
                if naive:
                    conn.execute("create trigger naive after insert on public.sms_logs referencing new table as "
                                 "new_rows for each statement execute function public.naive_count()")
                    conn.execute("alter table public.sms_logs disable trigger sms_logs_count_insert")
                else:
                    conn.execute("select smsao.recount_health_counters()")
            n, lat = run(url, setup)
            rows.append([name, n, f"{n / SECONDS:,.0f}", f"{percentile_ms(lat, 50):.2f}", f"{percentile_ms(lat, 99):.2f}"])
            if name == "project counters":
                with psycopg.connect(url, autocommit=True) as conn:
                    shards, exact = conn.execute(check).fetchone()
    floor = float(rows[0][2].replace(",", ""))
    for r in rows:
        r.append(f"{float(r[2].replace(',', '')) / floor:.2f}x")
    print_table(["counters", "transactions", "per second", "p50 ms", "p99 ms", "vs floor"], rows,
                title=f"{SESSIONS} sessions inserting SMS logs, ~5 ms of work per transaction, {SECONDS:.0f} s each")
    print(f"\nafter the project run: {shards} counter rows hold the 'sms' metric (one per concurrent "
          f"writer at most); their sum equals count(*): {'yes' if exact else 'NO'}")


if __name__ == "__main__":
    main()
