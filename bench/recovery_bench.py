"""Backup and restore throughput of the package's recovery path against the plain tools,
on the demo data scaled to ~1 GB, in one run on one cluster; and the drill's wall time.

    .venv/bin/python bench/recovery_bench.py             # ~1 GB, several minutes on 2 cores
    .venv/bin/python bench/recovery_bench.py --gb 0.2    # a quick look

Compared, all against the same database size (sum of pg_database_size):
  backup:   `smsao-db backup` (pgBackRest full, lz4, 2 processes; then an incremental after
            a small change) vs plain `pg_basebackup` (uncompressed, WAL streamed: the
            physical floor) vs `pg_dump -Fc` of the package's schemas (the logical path);
  restore:  pgBackRest restore + start until promoted vs copying the pg_basebackup back
            + start vs `pg_restore` into a fresh cluster (the logical path);
  drill:    `smsao-db drill` end to end (restore, start, row counts, verify, integrity).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import SETTINGS, print_table, quiet_alembic  # noqa: E402

from runner import demo, migrate  # noqa: E402
from runner.embedded import Cluster  # noqa: E402
from runner.recovery import backup as backups, drill, pgserver  # noqa: E402

PG15 = Path("/usr/lib/postgresql/15/bin")


def scale_up(url: str, gb: float) -> None:
    """SMS logs (the table that grows) until the database reaches `gb`; loaded with the
    triggers off, as a DBA bulk-loads, then the counters are recounted."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        while conn.execute("select pg_database_size(current_database())").fetchone()[0] < gb * 1024 ** 3:
            conn.execute("""
                insert into public.sms_logs (user_id, campaign_id, recipient, message, status, error_message, created_at)
                select p.user_id, null, p.phone, 'Promoção de fim de semana: 20% de desconto! Responda STOP para sair.',
                       (array['sent', 'delivered', 'delivered', 'failed'])[1 + (g % 4)],
                       case when g % 4 = 0 then 'gateway timeout' end,
                       now() - interval '3 days' - (g % 5000) * interval '17 minutes'
                from public.profiles p, generate_series(1, 2500) g""")
        conn.execute("reset session_replication_role")
        conn.execute("select smsao.recount_health_counters()")
        conn.execute("vacuum analyze")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="database size to reach (default 1.0)")
    args = parser.parse_args()
    quiet_alembic()
    base = Path(tempfile.mkdtemp(prefix="smsao-recovery-bench-"))
    pgserver.give_to_owner(base, 0o711)
    cluster = Cluster(home=base / "home", cron_database="smsao", settings=SETTINGS)
    try:
        cluster.start()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("create database smsao")
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("create extension pg_cron")
        migrate.run("upgrade", cluster.url(), "head")
        demo.load(cluster.url())
        t_load = timed(lambda: scale_up(cluster.url(), args.gb))
        backups.configure_embedded(cluster)
        url = cluster.url()
        with psycopg.connect(url, autocommit=True) as conn:
            size = int(conn.execute("select sum(pg_database_size(oid)) from pg_database").fetchone()[0])
            rows = conn.execute("select count(*) from public.sms_logs").fetchone()[0]
        mb = size / 1024 ** 2
        print(f"cluster: {mb:.0f} MB in all databases, {rows:,} sms_logs rows (loaded in {t_load:.0f} s)")

        results = []

        def row(what: str, seconds: float, stored: int | None = None, note: str = "") -> None:
            results.append([what, f"{seconds:.1f}", f"{mb / seconds:.0f}",
                            f"{stored / 1024 ** 2:.0f}" if stored is not None else "-", note])

        # -- backups ------------------------------------------------------------------------
        report = {}
        t = timed(lambda: report.update(backups.backup_embedded(cluster)))
        row("smsao-db backup (pgBackRest full)", t, report["repository_bytes"],
            f"pgbackrest itself {report['backup_duration_s']} s; + counts, archive mark")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("update public.profiles set full_name = full_name where random() < 0.1")
        incr = {}
        t = timed(lambda: incr.update(backups.backup_embedded(cluster)))
        row("smsao-db backup (pgBackRest incremental)", t, incr["repository_bytes"], "after a small change")

        # Passwords go through the environment, not argv (which every local user can read).
        bare_url, pw_env = pgserver.without_password(url)
        bare_postgres, _ = pgserver.without_password(cluster.url("postgres"))
        env = {**os.environ, **pw_env}
        basebackup = base / "basebackup"
        t = timed(lambda: pgserver.run([PG15 / "pg_basebackup", "-D", basebackup, "-X", "stream", "-c", "fast",
                                        "-d", bare_postgres], env=pw_env))
        row("pg_basebackup (plain, uncompressed)", t, _du(basebackup), "the physical floor")

        dump = base / "smsao.dump"
        t = timed(lambda: subprocess.run([PG15 / "pg_dump", "-Fc", *[f"--schema={s}" for s in backups.PACKAGE_SCHEMAS],
                                          f"--file={dump}", bare_url], check=True, env=env))
        row("pg_dump -Fc (package schemas)", t, dump.stat().st_size, "the logical path (server by URL)")
        t = timed(lambda: subprocess.run([PG15 / "pg_dump", "-Fc", "-Z0", *[f"--schema={s}" for s in backups.PACKAGE_SCHEMAS],
                                          f"--file={base / 'smsao-z0.dump'}", bare_url], check=True, env=env))
        row("pg_dump -Fc -Z0 (no compression)", t, (base / "smsao-z0.dump").stat().st_size, "")
        print_table(["backup", "s", "MB/s", "stored MB", "note"], results,
                    title=f"Backup of {mb:.0f} MB (MB/s = database size / wall time)")

        # -- restores -----------------------------------------------------------------------
        results.clear()
        restored = base / "restored"
        server = None

        def pgbackrest_restore():
            nonlocal server
            r = backups.restore_embedded(cluster, restored, immediate=True)
            server = pgserver.Server(r.data_dir, r.bindir, base / "restored.log").private(
                {"cron.database_name": "'template1'"})
            server.start()
            server.wait_until_writable()
        t = timed(pgbackrest_restore)
        server.stop()
        row("pgBackRest restore + start (smsao-db restore)", t, None, "to the backup's end, promoted")
        shutil.rmtree(restored, ignore_errors=True)

        copied = base / "copied"

        def copy_back():
            subprocess.run(["cp", "-a", str(basebackup), str(copied)], check=True)
            s = pgserver.Server(copied, PG15, base / "copied.log").private({"archive_mode": "off",
                                                                            "cron.database_name": "'template1'"})
            s.start()
            s.wait_until_writable()
            s.stop()
        t = timed(copy_back)
        row("copy pg_basebackup back + start", t, None, "the physical floor")
        shutil.rmtree(copied, ignore_errors=True)

        logical = base / "logical"

        def logical_restore():
            pgserver.private_dir(logical)
            s = backups.init_scratch(logical / "pgdata", PG15)
            s.start()
            backups.load_logical(s, str(dump))
            s.stop()
        t = timed(logical_restore)
        row("initdb + pg_restore (logical restore)", t, None, "rebuilds every index")
        shutil.rmtree(logical, ignore_errors=True)
        print_table(["restore", "s", "MB/s", "-", "note"], results, title=f"Restore of {mb:.0f} MB")

        # -- the drill ------------------------------------------------------------------------
        report = {}
        t = timed(lambda: report.update(drill.run(None, None, False, embedded=cluster)))
        steps = ", ".join(f"{s['step']} {s['seconds']:.1f}" for s in report["steps"])
        print(f"\nsmsao-db drill: {t:.1f} s wall, passed={report['passed']}, RTO {report.get('rto_s')} s "
              f"({steps})")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


if __name__ == "__main__":
    main()
