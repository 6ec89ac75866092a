"""Shared pieces of the benchmarks: a throwaway PostgreSQL cluster in a temp dir (the
project's own embedded Cluster, as tests/conftest.py uses it), a migrated scratch
database, timing helpers and plain-text tables."""
from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner import migrate  # noqa: E402
from runner.embedded import Cluster  # noqa: E402

# Sized for a 2-core machine with a few GB of RAM to spare. Durability stays on unless a
# benchmark says otherwise: its figures include real commits.
SETTINGS = {
    "shared_buffers": "'2GB'",
    "maintenance_work_mem": "'1GB'",
    "work_mem": "'64MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
    "max_connections": "50",
    "jit": "off",
}


def new_home(prefix: str = "smsao-bench-") -> Path:
    """A path for a new data home (smsao-db owns only a home it created) in a fresh directory
    the server's OS user may traverse. Remove `home.parent` afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)
    return base / "home"


@contextlib.contextmanager
def scratch_cluster(extra: dict[str, str] | None = None, dbname: str = "bench", revision: str = "head"):
    """Yields the URL of a database migrated to `revision` (head by default) in a fresh
    cluster; removes it all after."""
    home = new_home()
    cluster = Cluster(home=home, cron_database="postgres", settings={**SETTINGS, **(extra or {})})
    try:
        cluster.start()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f"create database {dbname}")
        url = cluster.url(dbname)
        migrate.run("upgrade", url, revision)
        yield url
    finally:
        cluster.stop()
        shutil.rmtree(home.parent, ignore_errors=True)


def quiet_alembic() -> None:
    import logging
    logging.getLogger("alembic").setLevel(logging.WARNING)


def timed(conn: psycopg.Connection, sql: str, params=None) -> float:
    """Seconds one statement takes, round trip included."""
    t0 = time.perf_counter()
    conn.execute(sql, params).fetchall()
    return time.perf_counter() - t0


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def percentile_ms(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k] * 1000


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace(",", "").replace("x", "").replace("%", "").strip().isdigit()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
