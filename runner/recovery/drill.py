"""`smsao-db drill`: prove the latest backup restores.

Embedded database (pgBackRest):
  1. archive continuity: every WAL segment from the latest backup's start to the newest
     archived one is in the repository (a gap breaks every recovery past it);
  2. restore the latest backup into a scratch cluster, recovered to the backup's end
     (`--type=immediate`), on a free port reachable only through a private socket;
  3. start it and wait until it is promoted (RTO = restore + start);
  4. row counts of every package table against those recorded in the live database when
     the backup was taken (`smsao-db backup` counts just before and just after pgBackRest
     runs: a table nobody wrote meanwhile must match exactly, one written during the
     backup must lie between the two);
  5. `verify` (the contract, in a rolled-back transaction) and `integrity` there;
  6. RPO: what the live server would lose if it died now (WAL written since the last
     archived segment, and since when);
  7. the scratch cluster is stopped and removed (unless --keep).

A server given by URL: the same with the latest logical backup (pg_dump), restored into a
fresh scratch cluster, its counts compared exactly (they were taken in the dump's
snapshot); RPO is everything since the dump.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from runner.db import connect
from runner.errors import UserError
from runner.recovery import backup as backups, pgserver

SEGMENT_SIZE = 16 * 1024 * 1024  # initdb's default, which the embedded cluster uses


class Steps:
    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, passed: bool | None, detail: str, seconds: float = 0.0) -> bool:
        """passed None: informational (does not decide the outcome)."""
        self.items.append({"step": name, "passed": passed, "detail": detail, "seconds": round(seconds, 2)})
        return bool(passed) or passed is None

    def run(self, name: str, fn):
        started = time.monotonic()
        try:
            value, detail, passed = fn()
        except UserError as exc:
            self.add(name, False, str(exc), time.monotonic() - started)
            return None
        self.add(name, passed, detail, time.monotonic() - started)
        return value if passed or passed is None else None


def _segno(name: str) -> tuple[int, int]:
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    return tli, log * (0x100000000 // SEGMENT_SIZE) + seg


def archive_gaps(pb: backups.PgBackRest, latest: dict) -> tuple[int, list[str], str | None]:
    """Segments from the latest backup's first WAL to the newest archived one: (count, missing, newest)."""
    root = pb.repo / "archive" / backups.STANZA
    names = set()
    for f in root.glob("*/*/*"):
        m = re.match(r"^([0-9A-F]{24})-[0-9a-f]{40}", f.name)
        if m:
            names.add(m.group(1))
    start = latest["archive"]["start"]
    tli, first = _segno(start)
    present = sorted(s for t, s in (_segno(n) for n in names) if t == tli and s >= first)
    if not present:
        return 0, [start], None
    last = present[-1]
    have = set(present)
    per_log = 0x100000000 // SEGMENT_SIZE
    missing = [f"{tli:08X}{s // per_log:08X}{s % per_log:08X}" for s in range(first, last + 1) if s not in have]
    newest = f"{tli:08X}{last // per_log:08X}{last % per_log:08X}"
    return len(present), missing, newest


# Tables whose row count says nothing about a backup, with the reason, and what checks them
# instead. The same rule is in SQL for the scheduled drill (smsao.table_count_problems).
NOT_COMPARED = {
    "smsao.health_counters": "the jobs merge its rows in place, so it gains and loses rows during one backup "
                             "and its count may leave [before, after]; integrity's counter recounts check its sums",
}


def compare_counts(restored: dict[str, int], before: dict[str, int], after: dict[str, int] | None) -> tuple[bool, str]:
    """A table nobody wrote during the backup must match exactly; one written during it must
    lie between its counts before and after (rows only added, or only removed, meanwhile);
    the tables of NOT_COMPARED are left out, with their reason."""
    after = after or before
    problems, exact, moving = [], 0, 0
    skipped = sorted(t for t in before if t in NOT_COMPARED)
    for table in sorted(before):
        if table in NOT_COMPARED:
            continue
        lo, hi = sorted((before[table], after.get(table, before[table])))
        got = restored.get(table)
        if got is None:
            problems.append(f"{table} is missing")
        elif lo == hi:
            exact += 1
            if got != lo:
                problems.append(f"{table}: {got} rows restored, {lo} in the live database at the backup")
        else:
            moving += 1
            if not lo <= got <= hi:
                problems.append(f"{table}: {got} rows restored, {lo}..{hi} in the live database during the backup")
    if problems:
        return False, f"{len(problems)} table(s) differ: " + "; ".join(problems[:5])
    detail = f"{exact} tables match the live database at the backup exactly"
    if moving:
        detail += f", {moving} written during the backup lie between their counts before and after it"
    if skipped:
        detail += "; not compared: " + "; ".join(f"{t} ({NOT_COMPARED[t]})" for t in skipped)
    return True, detail


def rpo_embedded(cluster) -> dict:
    """What the live server would lose if it died now: the WAL not yet archived."""
    if not cluster.running:
        return {"known": False, "detail": "the live database is not running: its unarchived WAL, if any, "
                                          "is in its data directory"}
    with connect(cluster.url(), autocommit=True) as conn:
        row = conn.execute("""
            select a.last_archived_wal, a.last_archived_time, a.last_failed_wal, a.last_failed_time,
                   pg_current_wal_lsn()::text, now(), current_setting('archive_timeout')
            from pg_stat_archiver a""").fetchone()
    wal, archived_at, failed_wal, failed_at, lsn, now, timeout = row
    hi, lo = (int(x, 16) for x in lsn.split("/"))
    current = (hi << 32) + lo
    if not wal or not re.match(r"^[0-9A-F]{24}$", wal):
        return {"known": False, "detail": "nothing archived yet: everything since the last backup is at risk"}
    _, segno = _segno(wal)
    archived_upto = (segno + 1) * SEGMENT_SIZE
    at_risk = max(0, current - archived_upto)
    age = (now - archived_at).total_seconds() if at_risk else 0.0
    out = {"known": True, "wal_bytes_at_risk": at_risk, "seconds_at_risk": round(age, 1),
           "last_archived_wal": wal, "last_archived_at": backups.iso(archived_at), "archive_timeout": timeout}
    if failed_at and (not archived_at or failed_at > archived_at):
        out["archiving_failing_since"] = backups.iso(failed_at)
        out["detail"] = f"archiving is FAILING (last failure {backups.iso(failed_at)} on {failed_wal})"
    elif at_risk == 0:
        out["detail"] = "nothing: every WAL record written is archived"
    else:
        out["detail"] = (f"{at_risk / 1024:.0f} kB of WAL not yet archived, written over the last {age:.0f} s "
                         f"(archive_timeout {timeout} bounds it under light traffic)")
    return out


def _check_scratch(steps: Steps, server: pgserver.Server, before: dict, after: dict | None) -> None:
    from runner import verify
    from runner.recovery import integrity

    url = server.url()

    def counts():
        with connect(url, autocommit=True) as conn:
            restored = backups.package_table_counts(conn)
        ok, detail = compare_counts(restored, before, after)
        return restored, detail, ok
    if before:
        steps.run("row counts", counts)
    else:
        steps.add("row counts", False, "no row counts were recorded with this backup (taken outside "
                                       "`smsao-db backup`): nothing proves that no row is missing")

    def contract():
        results = verify.run(url)
        failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
        tests = sum(len(r.assertions) for r in results)
        return results, (f"{len(results)} pgTAP files pass ({tests} tests)" if not failed else
                         f"{len(failed)} of {len(results)} pgTAP files fail: " + "; ".join(failed[:3])), not failed
    steps.run("verify", contract)

    def invariants():
        results = integrity.run(url)
        failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
        return results, (f"{len(results)} invariants hold" if not failed else
                         f"{len(failed)} broken: " + "; ".join(failed[:3])), not failed
    steps.run("integrity", invariants)


def run(database_url: str | None, repo: str | None, keep: bool, embedded=None) -> dict:
    if database_url:
        return _run_logical(database_url, repo, keep)
    return _run_embedded(embedded, repo, keep)


def _scratch_parent(home: Path | None) -> Path | None:
    return home if home and home.exists() else None


@contextmanager
def _scratch(report: dict, keep: bool, parent: Path | None = None):
    """A private directory for the scratch cluster, removed afterwards unless kept."""
    scratch = Path(tempfile.mkdtemp(prefix="drill-", dir=parent))
    pgserver.give_to_owner(scratch, 0o700)
    try:
        yield scratch
    finally:
        if keep:
            report["scratch"] = str(scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_embedded(cluster, repo: str | None, keep: bool) -> dict:
    pb = backups.PgBackRest.for_cluster(cluster, repo)
    latest = pb.latest()  # "no backup yet" / "repository missing or damaged": one line, exit 1
    manifest = pb.manifest(latest["label"]) or {}
    steps = Steps()
    report = {"kind": "pgbackrest", "repository": str(pb.repo), "backup": latest["label"],
              "backup_type": latest["type"], "backup_end": backups.iso(latest["timestamp"]["stop"])}

    def continuity():
        count, missing, newest = archive_gaps(pb, latest)
        if missing:
            return None, (f"{len(missing)} WAL segment(s) missing from the archive after the backup's start: "
                          + ", ".join(missing[:3])), False
        return None, f"{count} segments from {latest['archive']['start']} to {newest}, no gap", True
    steps.run("archive continuity", continuity)

    server = None
    started = time.monotonic()
    with _scratch(report, keep, _scratch_parent(Path(cluster.home))) as scratch:
        try:
            restored = steps.run("restore", lambda: (lambda r: (r, f"{r.target} in {r.seconds:.1f} s", True))(
                backups.restore_embedded(cluster, scratch / "pgdata", repo=repo, immediate=True,
                                         label=latest["label"])))
            if restored:
                # pg_cron keeps its jobs in the cluster's cron database: a scratch copy must not run them
                # (restore_embedded turns it off already; said again here, next to the copy's other settings).
                # A formation's copy still asks for a synchronous standby: commits would wait forever.
                server = pgserver.Server(restored.data_dir, restored.bindir, scratch / "server.log").private(
                    {**backups.NO_CRON, "synchronous_standby_names": "''"})

                def start():
                    server.start()
                    server.wait_until_writable()
                    return server, f"promoted and accepting writes on port {server.port}", True
                if steps.run("start", start):
                    report["rto_s"] = round(time.monotonic() - started, 2)
                    _check_scratch(steps, server, manifest.get("counts_before") or {}, manifest.get("counts_after"))
        finally:
            if server:
                server.stop()
    report["rpo"] = rpo_embedded(cluster)
    report["steps"] = steps.items
    report["passed"] = all(s["passed"] is not False for s in steps.items) and \
        any(s["step"] == "integrity" for s in steps.items)
    return report


def _run_logical(url: str, repo: str | None, keep: bool) -> dict:
    meta = backups.latest_logical(repo)
    steps = Steps()
    report = {"kind": "logical", "backup": meta["label"], "file": meta["file"], "backup_end": meta.get("stop")}
    server = None
    started = time.monotonic()
    with _scratch(report, keep) as scratch:
        try:
            from runner.embedded import find_bindir

            bindir = pgserver.debian_bindir(meta.get("server_major") or 0) or find_bindir()

            def restore():
                s = backups.init_scratch(scratch / "pgdata", bindir)
                try:
                    s.start()
                    backups.load_logical(s, meta["file"], meta.get("roles"))
                except BaseException:
                    s.stop()  # the server and its private socket directory
                    raise
                return s, f"pg_restore of {Path(meta['file']).name} into a new cluster", True
            server = steps.run("restore", restore)
            if server:
                report["rto_s"] = round(time.monotonic() - started, 2)
                _check_scratch(steps, server, meta.get("counts") or {}, None)
        finally:
            if server:
                server.stop()
    dumped = backups.parse_time(meta["start"]) if meta.get("start") else None
    report["rpo"] = {"known": bool(dumped), "seconds_at_risk": round((datetime.now(timezone.utc) - dumped)
                                                                     .total_seconds(), 1) if dumped else None,
                     "detail": "every change since the dump started" + (f" ({meta['start']})" if dumped else "")
                     + ": a server given by URL has no WAL archive the package can use"}
    report["steps"] = steps.items
    report["passed"] = all(s["passed"] is not False for s in steps.items) and \
        any(s["step"] == "integrity" for s in steps.items)
    return report


def render(report: dict, console) -> None:
    console.print(f"restore drill of {report['kind']} backup {report['backup']} (ended {report.get('backup_end')})",
                  highlight=False)
    for s in report["steps"]:
        mark = "[green]ok[/green]  " if s["passed"] else ("[red]FAIL[/red]" if s["passed"] is False else "info")
        console.print(f"{mark} {s['step']}: {s['detail']} ({s['seconds']:.1f} s)", highlight=False)
    if "rto_s" in report:
        console.print(f"RTO: {report['rto_s']:.1f} s from nothing to a writable restored database", highlight=False)
    console.print(f"RPO: if the live server died now, lost: {report['rpo']['detail']}", highlight=False)
    console.print("[bold green]drill passed[/]: everything committed before the backup's end is there"
                  if report["passed"] else "[bold red]drill FAILED[/]: this backup cannot be trusted as it is",
                  highlight=False)
