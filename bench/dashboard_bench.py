"""Dashboard throughput: requests per second of `smsao-db serve`, side by side in one run.

    .venv/bin/smsao-db up                                  # or DATABASE_URL=<scratch database>
    .venv/bin/python bench/dashboard_bench.py [--requests 4000] [--concurrency 4]

The server runs as `smsao-db serve` in its own process; the load comes from this process
over loopback, `--concurrency` keep-alive connections on threads, each endpoint bounded by
a request count and a time limit. Rows compare `/api/health` (served from the latest stored
snapshot) with the HTTP floor (`/healthz`, no database), the Prometheus scrape, the page,
and the expensive alternative of running the health check per request (`POST /api/refresh`,
which also stores a snapshot: it writes to the database, so use a scratch one).
"""
from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from runner.cli import resolve_url  # noqa: E402
from runner.db import connect  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str) -> None:
    """A stored snapshot and a day of samples, as pg_cron would have left them."""
    with connect(url, autocommit=True) as conn:
        conn.execute("select public.record_health_snapshot()")
        if conn.execute("select count(*) < 1000 from public.performance_samples").fetchone()[0]:
            conn.execute("""insert into public.performance_samples (sampled_at, response_time_ms, error_rate)
                            select now() - make_interval(mins => g), 3 + random() * 4, 0
                              from generate_series(1, 1440) g""")


def load(port: int, method: str, path: str, total: int, concurrency: int, time_limit: float) -> dict:
    """`total` requests over `concurrency` keep-alive connections, stopping at `time_limit` s."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    remaining = [total]
    deadline = time.monotonic() + time_limit

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            t0 = time.perf_counter()
            conn.request(method, path)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                with lock:
                    errors += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"n": len(latencies), "rps": len(latencies) / wall, "errors": errors,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)] * 1000}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000, help="requests per read endpoint")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--time-limit", type=float, default=20.0, help="seconds per endpoint at most")
    args = p.parse_args()

    url = resolve_url(os.environ.get("DATABASE_URL"))
    seed(url)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from runner.cli import main; main()", "serve",
                               "--port", str(port), "--refresh", "0", "--database-url", url],
                              cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the dashboard did not start: {server.stderr.read() if server.poll() else ''}")
        rows = [
            ("GET /healthz  (HTTP floor, no database)", "GET", "/healthz", args.requests),
            ("GET /api/health  (latest snapshot)", "GET", "/api/health", args.requests),
            ("GET /metrics  (Prometheus scrape)", "GET", "/metrics", args.requests // 2),
            ("GET /  (dashboard page)", "GET", "/", args.requests // 4),
            ("POST /api/refresh  (health check + store)", "POST", "/api/refresh", args.requests // 10),
        ]
        for _, method, path, _n in rows:  # warm up the pool and the server's caches
            load(port, method, path, 20, args.concurrency, 5)
        results = [(name, load(port, method, path, n, args.concurrency, args.time_limit))
                   for name, method, path, n in rows]
    finally:
        server.terminate()
        server.wait(10)

    floor = results[0][1]["rps"]
    snapshot = results[1][1]["rps"]
    t = Table(title=f"smsao-db serve over loopback, {args.concurrency} keep-alive connections "
                    f"(server: 1 process; {os.cpu_count()} cores shared with the client)")
    t.add_column("endpoint")
    t.add_column("requests", justify="right")
    t.add_column("req/s", justify="right")
    t.add_column("p50 ms", justify="right")
    t.add_column("p99 ms", justify="right")
    t.add_column("x floor", justify="right")
    t.add_column("x /api/health", justify="right")
    t.add_column("errors", justify="right")
    for name, r in results:
        t.add_row(name, f"{r['n']:,}", f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                  f"{r['rps'] / floor:.2f}", f"{r['rps'] / snapshot:.2f}", str(r["errors"]))
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
