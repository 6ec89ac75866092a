"""Start-up cost of the `smsao-db` console command, side by side in one run.

    .venv/bin/smsao-db up                                   # or DATABASE_URL=<a migrated database>
    .venv/bin/python bench/startup_bench.py [--runs 11] [--smsao-db PATH]

Each row runs the real console script as a user would, `--runs` times, and prints the
median and best wall time of the whole process, next to the floor: a bare `python -c pass`
with the same interpreter. The last column is Python's own import time for the command's
modules (`python -X importtime`, the cumulative time of the top-level imports), the part
lazy imports can remove; the rest is the interpreter's start and, for `health`, the
database round trip.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))


def wall_times(cmd: list[str], runs: int, env: dict) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def top_level_imports(python: str, code: str, env: dict) -> dict[str, int]:
    """Cumulative import time (us) of each top-level import (-X importtime) while running `code`."""
    # From a neutral directory: with -c the working directory comes first on sys.path, and a
    # checkout there would shadow the installed package being measured.
    proc = subprocess.run([python, "-X", "importtime", "-c", code], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=60)
    found = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and not m.group(2):  # no indent after the bar: a top-level import
            found[m.group(3)] = int(m.group(1))
    return found


def import_ms(python: str, script: Path, args: list[str], env: dict) -> float:
    """Import time of the command's own modules, in ms (median of 5): the interpreter's
    start-up imports (site, encodings, an editable install's finder) are left out."""
    code = (f"import sys; sys.argv = ['smsao-db', *{args!r}]; "
            f"exec(compile(open({str(script)!r}).read(), {str(script)!r}, 'exec'))")
    startup = top_level_imports(python, "pass", env)
    runs = [sum(us for name, us in top_level_imports(python, code, env).items() if name not in startup) / 1000
            for _ in range(5)]
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--smsao-db", default=str(Path(sys.executable).parent / "smsao-db"))
    args = p.parse_args()

    script = Path(args.smsao_db)
    python = script.read_text().splitlines()[0].removeprefix("#!").strip()
    env = {**os.environ, "COLUMNS": "120"}
    if not env.get("DATABASE_URL"):
        from runner.cli import resolve_url

        env["DATABASE_URL"] = resolve_url(None)
    rows = [
        ("python -c pass  (interpreter floor)", [python, "-c", "pass"], None),
        ("smsao-db --help", [str(script), "--help"], ["--help"]),
        ("smsao-db health --json  (one health check)", [str(script), "health", "--json"], ["health", "--json"]),
    ]
    print(f"{'command':<44} {'median ms':>10} {'best ms':>9} {'imports ms':>11}   ({args.runs} runs each)")
    for name, cmd, cli_args in rows:
        times = wall_times(cmd, args.runs, env)
        imports = f"{import_ms(python, script, cli_args, env):.0f}" if cli_args else "-"
        print(f"{name:<44} {statistics.median(times):>10.0f} {min(times):>9.0f} {imports:>11}")


if __name__ == "__main__":
    main()
