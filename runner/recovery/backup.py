"""`smsao-db backup` and `restore`: pgBackRest with continuous WAL archiving for the
embedded database, a logical `pg_dump` for a server given by URL.

Embedded database (the package runs the server, so it can configure archiving):

* `smsao-db up` calls `configure_embedded()`: a pgBackRest configuration file in the
  cluster's home (`.smsao/pgbackrest.conf`), stanza `smsao`, the repository in
  `.smsao/backup` (or `--backup-repo` / `SMSAO_BACKUP_REPO`), and `archive_mode`,
  `archive_command = pgbackrest archive-push`, a private socket directory (pgBackRest
  reaches PostgreSQL only through a Unix socket) set with ALTER SYSTEM, so the settings
  survive and nothing in postgresql.conf changes. Turning archive_mode on restarts the
  server once.
* `backup` runs `pgbackrest backup --type=incr`: pgBackRest takes a full backup when
  there is none to build on, incremental ones after (`--full` forces one).
* Around each backup the row counts of every package table are recorded in
  `<repo>/smsao/<label>.json` (the drill compares the restored cluster with them), and
  a marker commit + WAL switch (`pgbackrest check`) makes the archive cover the backup's
  end: point-in-time recovery stops at the first commit after the target time, so the
  archive "covers" a time only once a commit after it has been archived. These times are
  kept in `<repo>/smsao/archive-marks` so a restore can tell, even with the live server
  gone, which targets it can honour.

A server given by URL (the package cannot configure its archiving): `pg_dump -Fc` of the
package's schemas (public, smsao, auth, smsao_migrations) into `<repo>/logical/`, with
the row counts taken in the same snapshot (`pg_export_snapshot`), so a drill of a
logical backup compares exactly.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runner.db import connect, libpq_url, redact, redact_message
from runner.errors import UserError
from runner.recovery import pgserver

STANZA = "smsao"
PACKAGE_SCHEMAS = ("public", "smsao", "auth", "smsao_migrations")
REPO_ENV = "SMSAO_BACKUP_REPO"
INSTALL_HINT = "run ./dev setup (installs the Debian package pgbackrest)"
HBA_LINE = "local all postgres peer  # smsao-db: pgBackRest, as the postgres OS user, over the private socket"
# A switched WAL segment is archived at once; without activity nothing is switched, so
# archive_timeout bounds the data at risk (the RPO) under light traffic.
ARCHIVE_TIMEOUT = "300"  # seconds, as pg_settings shows it
# pg_cron runs the jobs stored in its database (cron.database_name); pointed at template1,
# which has no pg_cron, a copy runs none of the live database's jobs.
NO_CRON = {"cron.database_name": "'template1'"}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime | float | None) -> str | None:
    if ts is None:
        return None
    if not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, timezone.utc)
    return ts.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC (the embedded server's time zone)."""
    raw = text.strip().replace(" UTC", "+00:00").replace("Z", "+00:00")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise UserError(f"--target-time '{text}' is not a time: use ISO 8601, e.g. 2026-11-30 21:05:00+00") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def require_pgbackrest() -> str:
    exe = shutil.which("pgbackrest")
    if not exe:
        raise UserError(f"pgbackrest is not installed: {INSTALL_HINT}")
    return exe


def package_table_counts(conn) -> dict[str, int]:
    """Exact row counts of every permanent table of the package's schemas.

    UNLOGGED tables (the rate-limit windows) are left out: a restore or a crash empties
    them by design."""
    tables = [r[0] for r in conn.execute(
        "select format('%%I.%%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind = 'r' and c.relpersistence = 'p' and n.nspname = any(%s) order by 1",
        [list(PACKAGE_SCHEMAS)]).fetchall()]
    if not tables:
        return {}
    query = " union all ".join(f"select '{t}', count(*) from {t}" for t in tables)
    return {name: n for name, n in conn.execute(query).fetchall()}


# -- pgBackRest -------------------------------------------------------------------------------
@dataclass
class PgBackRest:
    """pgBackRest for one embedded cluster: its configuration file lives in the cluster's home."""

    home: Path
    data_dir: Path
    repo: Path
    repo_overridden: bool = False

    @property
    def conf(self) -> Path:
        return self.home / "pgbackrest.conf"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def meta_dir(self) -> Path:
        """The package's own notes about the backups, beside pgBackRest's."""
        return self.repo / "smsao"

    @classmethod
    def for_cluster(cls, cluster, repo: str | Path | None = None) -> "PgBackRest":
        """The configured pgBackRest of an embedded cluster (`repo` reads another copy)."""
        require_pgbackrest()
        pb = cls(Path(cluster.home), Path(cluster.data_dir), Path("."))
        if not pb.conf.exists():
            raise UserError("backups are not configured for the embedded database: run `smsao-db up` "
                            "(it sets up pgBackRest and WAL archiving)")
        configured = pb.configured_repo()
        pb.repo = Path(repo).resolve() if repo else configured
        pb.repo_overridden = bool(repo) and pb.repo != configured
        return pb

    def configured_repo(self) -> Path:
        for line in self.conf.read_text().splitlines():
            if line.startswith("repo1-path="):
                return Path(line.split("=", 1)[1].strip())
        raise UserError(f"{self.conf} names no repository (repo1-path): run `smsao-db up` again")

    def write_conf(self) -> None:
        work = self.home / "pgbackrest"
        for d in (work, work / "log", work / "lock", work / "spool"):
            pgserver.private_dir(d, 0o750)
        self.conf.write_text("\n".join([
            "# Written by smsao-db (runner/recovery/backup.py); `smsao-db up` rewrites it.",
            "[global]",
            f"repo1-path={self.repo}",
            # Two full backups and everything needed to recover from either.
            "repo1-retention-full=2",
            "compress-type=lz4",
            "process-max=2",
            "start-fast=y",
            "archive-check=y",
            # A local repository: a missing file will not appear by waiting (the default
            # retries every 15 s).
            "job-retry=0",
            f"log-path={work / 'log'}",
            "log-level-file=info",
            "log-level-console=warn",
            f"lock-path={work / 'lock'}",
            f"spool-path={work / 'spool'}",
            "",
            f"[{STANZA}]",
            f"pg1-path={self.data_dir}",
            f"pg1-socket-path={self.socket_dir}",
            f"pg1-user={pgserver.DB_SUPERUSER}",
            "",
        ]))
        pgserver.give_to_owner(self.conf, 0o640)

    def run(self, command: str, *options: str, check: bool = True, timeout: float | None = None,
            what: str | None = None) -> subprocess.CompletedProcess:
        args = [require_pgbackrest(), f"--config={self.conf}", f"--stanza={STANZA}"]
        if self.repo_overridden:
            args.append(f"--repo1-path={self.repo}")
        proc = pgserver.run([*args, *options, command], what=what or f"pgbackrest {command}",
                            check=False, timeout=timeout)
        if check and proc.returncode != 0:
            reason = pgserver.last_line(proc.stderr + "\n" + proc.stdout)
            if command in ("info", "backup", "restore", "verify", "check", "expire") and \
                    any(s in reason for s in ("unable to load info file", "does not exist", "missing",
                                              "unable to open", "invalid", "checksum")):
                raise UserError(f"the backup repository {self.repo} is missing or damaged: {reason}")
            raise UserError(f"{what or 'pgbackrest ' + command} failed: {reason}")
        return proc

    def archive_command(self) -> str:
        return f"{require_pgbackrest()} --config={self.conf} --stanza={STANZA} archive-push %p"

    # -- reading the repository ---------------------------------------------------------
    def info(self) -> dict:
        if not self.repo.exists():
            raise UserError(f"the backup repository {self.repo} does not exist: run `smsao-db backup`, "
                            "or give the right path with --repo")
        out = self.run("info", "--output=json").stdout
        try:
            stanzas = json.loads(out)
        except json.JSONDecodeError:
            raise UserError(f"the backup repository {self.repo} could not be read: pgbackrest info said "
                            f"{out.strip()[:200]!r}") from None
        stanza = next((s for s in stanzas if s.get("name") == STANZA), None)
        if not stanza:
            raise UserError(f"the backup repository {self.repo} has no stanza '{STANZA}': run `smsao-db up`")
        status = stanza.get("status", {})
        if status.get("code") not in (0, 2):  # 2: no backup yet
            raise UserError(f"the backup repository {self.repo} is missing or damaged: {status.get('message')}")
        return stanza

    def backups(self) -> list[dict]:
        return self.info().get("backup", [])

    def latest(self) -> dict:
        backups = self.backups()
        if not backups:
            raise UserError(f"no backup yet in {self.repo}: run `smsao-db backup` first")
        return backups[-1]

    def manifest(self, label: str) -> dict | None:
        path = self.meta_dir / f"{label}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_manifest(self, label: str, data: dict) -> None:
        pgserver.private_dir(self.meta_dir, 0o750)
        path = self.meta_dir / f"{label}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True))
        pgserver.give_to_owner(path, 0o640)

    def marks(self) -> list[datetime]:
        path = self.meta_dir / "archive-marks"
        if not path.exists():
            return []
        return [parse_time(ln) for ln in path.read_text().split() if ln.strip()]

    def mark_archive(self, url: str, pg_port: int) -> datetime:
        """Commit a transaction now, switch WAL and wait until it is archived: afterwards the
        archive covers every point in time up to this moment."""
        with connect(url, autocommit=True) as conn:
            with conn.transaction():
                ts = conn.execute("select clock_timestamp(), pg_current_xact_id()").fetchone()[0]
        # `check` switches to a new WAL segment and waits until the old one is archived.
        self.run("check", f"--pg1-port={pg_port}", what="checking WAL archiving (pgbackrest check)")
        pgserver.private_dir(self.meta_dir, 0o750)
        path = self.meta_dir / "archive-marks"
        marks = sorted(set(self.marks() + [ts]))[-1000:]
        path.write_text("".join(m.isoformat() + "\n" for m in marks))
        pgserver.give_to_owner(path, 0o640)
        return ts


# -- configuring the embedded cluster -----------------------------------------------------------
def configure_embedded(cluster, repo: str | Path | None = None) -> str:
    """Stanza, repository and continuous archiving for the (running) embedded cluster.

    Idempotent; restarts the server once when archiving was off. Returns one line for `up`."""
    require_pgbackrest()
    pb = PgBackRest(Path(cluster.home), Path(cluster.data_dir), Path("."))
    if repo or os.environ.get(REPO_ENV):
        pb.repo = Path(repo or os.environ[REPO_ENV]).expanduser().resolve()
    elif pb.conf.exists():
        pb.repo = pb.configured_repo()
    else:
        pb.repo = Path(cluster.home).resolve() / "backup"
    if pb.repo == Path(cluster.data_dir).resolve() or Path(cluster.data_dir).resolve() in pb.repo.parents:
        raise UserError(f"the backup repository {pb.repo} may not be inside the data directory")
    pgserver.repository_dir(pb.repo)
    pgserver.private_dir(pb.socket_dir, 0o700)
    pb.write_conf()
    _allow_peer_for_pgbackrest(Path(cluster.data_dir))

    wanted = {
        "archive_mode": "on",
        "archive_command": pb.archive_command(),
        "archive_timeout": ARCHIVE_TIMEOUT,
        "unix_socket_directories": str(pb.socket_dir),
        "unix_socket_permissions": "0700",
    }
    restart = False
    with connect(cluster.url("postgres"), autocommit=True) as conn:
        # pg_settings quotes list entries ("/path"): compare without the quotes.
        current = dict(conn.execute("select name, replace(setting, '\"', '') from pg_settings where name = any(%s)",
                                    [list(wanted)]).fetchall())
        if conn.execute("show wal_level").fetchone()[0] == "minimal":
            conn.execute("alter system set wal_level = 'replica'")
            restart = True
        for name, value in wanted.items():
            if current.get(name) != value:
                conn.execute(f"alter system set {name} = %s".replace("%s", "'" + value.replace("'", "''") + "'"))
                restart = restart or name in ("archive_mode", "unix_socket_directories", "unix_socket_permissions")
        conn.execute("select pg_reload_conf()")
    if restart:
        cluster.stop()
        cluster.start()
    # stanza-create is idempotent: an existing, matching stanza is left as it is.
    pb.run("stanza-create", f"--pg1-port={cluster.port}", what="creating the backup stanza (pgbackrest stanza-create)")
    pb.run("check", f"--pg1-port={cluster.port}", what="checking WAL archiving (pgbackrest check)")
    return (f"backups: pgBackRest stanza '{STANZA}' in {pb.repo}, WAL archived continuously"
            + (" (server restarted to turn archiving on)" if restart else ""))


def _allow_peer_for_pgbackrest(data_dir: Path) -> None:
    """pgBackRest connects as the postgres OS user through the private socket: let that
    user in by peer authentication, ahead of whatever the other lines require."""
    hba = data_dir / "pg_hba.conf"
    text = hba.read_text()
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and lines[0][:2] == ["local", "all"] and lines[0][-1] == "trust" and lines[0][2] in ("all", "postgres"):
        return  # the private socket is trusted already (it is reachable only by its owner)
    if HBA_LINE not in text:
        hba.write_text(HBA_LINE + "\n" + text)
        pgserver.give_to_owner(hba, 0o600)


def archive_before_stop(cluster) -> str | None:
    """Before `down`: archive the WAL written since the last switch, which a clean shutdown
    leaves unarchived, so the repository alone covers everything up to the stop."""
    pb = PgBackRest(Path(cluster.home), Path(cluster.data_dir), Path("."))
    if not cluster.running or not pb.conf.exists() or not shutil.which("pgbackrest"):
        return None
    pb.repo = pb.configured_repo()
    covered = pb.mark_archive(cluster.url(), cluster.port)
    return f"WAL archived up to {iso(covered)}"


# -- backup ---------------------------------------------------------------------------------------
def backup_embedded(cluster, repo: str | Path | None = None, full: bool = False) -> dict:
    require_pgbackrest()
    if not cluster.running:
        raise UserError("the embedded database is not running: run `smsao-db up` first")
    pb = PgBackRest.for_cluster(cluster, repo)
    url = cluster.url()
    with connect(url, autocommit=True) as conn:
        if conn.execute("show archive_mode").fetchone()[0] == "off":
            raise UserError("WAL archiving is off for the embedded database: run `smsao-db up` to turn it on")
        before = package_table_counts(conn)
    started = time.monotonic()
    proc = pb.run("backup", f"--type={'full' if full else 'incr'}", f"--pg1-port={cluster.port}",
                  what="pgbackrest backup")
    duration = time.monotonic() - started
    with connect(url, autocommit=True) as conn:
        after = package_table_counts(conn)
    covered = pb.mark_archive(url, cluster.port)
    stanza = pb.info()
    latest = stanza["backup"][-1]
    report = describe_backup(latest, pb.repo)
    report.update(duration_s=round(duration, 2), archive_covers_until=iso(covered),
                  archive_range={"min": stanza.get("archive", [{}])[0].get("min"),
                                 "max": stanza.get("archive", [{}])[0].get("max")},
                  backups_in_repository=len(stanza["backup"]),
                  note="no prior full backup, so pgBackRest took a full one"
                  if "changed to full" in proc.stderr + proc.stdout else None)
    pb.write_manifest(latest["label"], {
        "label": latest["label"], "counts_before": before, "counts_after": after,
        "taken_at": iso(now_utc()),
    })
    # pgBackRest expires old backups (retention: two full ones); their notes go with them.
    labels = {b["label"] for b in stanza["backup"]}
    for note in pb.meta_dir.glob("*.json"):
        if note.stem not in labels:
            note.unlink()
    return report


def describe_backup(b: dict, repo: Path) -> dict:
    start, stop = b["timestamp"]["start"], b["timestamp"]["stop"]
    return {
        "kind": "pgbackrest",
        "repository": str(repo),
        "stanza": STANZA,
        "type": b["type"],
        "label": b["label"],
        "prior": b.get("prior"),
        "size_bytes": b["info"]["size"],
        "delta_bytes": b["info"]["delta"],
        "repository_bytes": b["info"]["repository"]["delta"],
        "start": iso(start),
        "stop": iso(stop),
        "backup_duration_s": stop - start,
        "wal_start": b["archive"]["start"],
        "wal_stop": b["archive"]["stop"],
        "lsn_start": (b.get("lsn") or {}).get("start"),
        "lsn_stop": (b.get("lsn") or {}).get("stop"),
    }


def logical_dir(repo: Path) -> Path:
    return Path(repo) / "logical"


def embedded_home() -> Path:
    """The embedded database's home (`.smsao/` or SMSAO_HOME), however runner.embedded names it."""
    from runner import embedded

    home = getattr(embedded, "default_home", None)
    return Path(home() if callable(home) else embedded.DEFAULT_HOME).resolve()


def sql_dir() -> Path:
    """The package's SQL: inside the installed package (runner.resources) or the checkout."""
    try:
        from runner.resources import SQL_DIR
    except ImportError:
        from runner import SQL_DIR
    return Path(SQL_DIR)


def default_repo(repo: str | Path | None) -> Path:
    if repo:
        return Path(repo).expanduser().resolve()
    if os.environ.get(REPO_ENV):
        return Path(os.environ[REPO_ENV]).expanduser().resolve()
    return embedded_home() / "backup"


def pg_tool(name: str, server_major: int | None = None) -> Path:
    """pg_dump / pg_restore at least as new as the server."""
    from runner.embedded import find_bindir

    candidates = []
    if server_major:
        for major in range(server_major, server_major + 5):
            if pgserver.debian_bindir(major):
                candidates.append(pgserver.debian_bindir(major))
    try:
        candidates.append(find_bindir())
    except UserError:
        pass
    for bindir in candidates:
        if (bindir / name).exists() and (not server_major or pgserver.bin_major(bindir) >= server_major):
            return bindir / name
    raise UserError(f"no {name} for PostgreSQL {server_major or ''} here: install postgresql-client-{server_major or 15}")


def private_folders(path: Path) -> Path:
    """`path` and every folder created on the way to it: 0700, whatever the umask. A dump holds
    every user's PII; folders that existed already keep their mode (only `path` is made 0700)."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, text: str | None = None) -> Path:
    """A new file of mode 0600 (whatever the umask), with `text` if given: a program that
    then writes to it (pg_dump --file) keeps the mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        if text:
            f.write(text)
    return path


def backup_logical(url: str, repo: str | Path | None = None) -> dict:
    """pg_dump -Fc of the package's schemas, with exact row counts from the same snapshot.
    The dump and its notes are 0600 in 0700 folders: they hold every user's PII."""
    out_dir = logical_dir(default_repo(repo))
    if embedded_home() in out_dir.parents:  # the default repository: the home is made as `up` makes it
        from runner.embedded import create_home

        create_home(embedded_home())
    out_dir = private_folders(out_dir)
    started_at = now_utc()
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    target = out_dir / f"smsao-{stamp}.dump"
    started = time.monotonic()
    with connect(url, autocommit=False) as conn:
        conn.execute("set transaction isolation level repeatable read, read only")
        snapshot = conn.execute("select pg_export_snapshot()").fetchone()[0]
        present = [s for (s,) in conn.execute("select nspname from pg_namespace where nspname = any(%s)",
                                              [list(PACKAGE_SCHEMAS)]).fetchall()]
        if "smsao" not in present:
            raise UserError(f"{redact(url)} is not an SMS AO database (no schema smsao): nothing to back up")
        counts = package_table_counts(conn)
        roles = granted_roles(conn)
        major = conn.info.server_version // 10000
        schema_args = [f"--schema={s}" for s in PACKAGE_SCHEMAS if s in present]
        dump_url, env = pgserver.without_password(libpq_url(url))
        private_file(target)
        proc = subprocess.run([str(pg_tool("pg_dump", major)), "--format=custom", f"--snapshot={snapshot}",
                               "--no-owner", *schema_args, f"--file={target}", f"--dbname={dump_url}"],
                              capture_output=True, text=True, env={**os.environ, **env})
        conn.rollback()
    if proc.returncode != 0:
        target.unlink(missing_ok=True)
        raise UserError(f"pg_dump failed: {redact_message(pgserver.last_line(proc.stderr), url)}")
    duration = time.monotonic() - started
    meta = {"label": target.stem, "file": str(target), "counts": counts, "server_major": major,
            "start": iso(started_at), "stop": iso(now_utc()), "schemas": present, "roles": roles}
    private_file(target.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True))
    return {
        "kind": "logical",
        "note": "the server is given by URL, so the package cannot configure its WAL archiving: this is a "
                "logical backup (pg_dump, custom format) of schemas " + ", ".join(present) +
                "; it restores the state at its start, with no point-in-time recovery",
        "type": "logical", "label": target.stem, "file": str(target),
        "size_bytes": target.stat().st_size, "start": meta["start"], "stop": meta["stop"],
        "duration_s": round(duration, 2), "wal_start": None, "wal_stop": None,
    }


def granted_roles(conn) -> dict[str, dict]:
    """The roles of this server with their attributes (a dump carries grants to roles, not the
    roles, which are cluster-wide): a restore creates those its target lacks."""
    rows = conn.execute("select rolname, rolinherit, rolbypassrls from pg_roles "
                        "where rolname !~ '^pg_' and not rolsuper order by 1").fetchall()
    return {name: {"inherit": inherit, "bypassrls": bypassrls} for name, inherit, bypassrls in rows}


ROLE_REFERENCE = re.compile(r"^(?:GRANT|REVOKE|ALTER DEFAULT PRIVILEGES)\b.*?\b(?:TO|FROM)\s+(.+?)"
                            r"(?:\s+WITH GRANT OPTION|\s+GRANTED BY\s+\S+|\s+CASCADE)*;$")
FOR_ROLE = re.compile(r"^ALTER DEFAULT PRIVILEGES FOR ROLE\s+(\S+)")


def roles_in_dump(dump_file: str) -> set[str]:
    """Every role a dump's GRANT, REVOKE and ALTER DEFAULT PRIVILEGES statements name."""
    proc = subprocess.run([str(pg_tool("pg_restore")), "--schema-only", "--file=-", dump_file],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"the logical backup {dump_file} cannot be read: {pgserver.last_line(proc.stderr)}")
    names: set[str] = set()
    for line in proc.stdout.splitlines():
        for pattern in (ROLE_REFERENCE, FOR_ROLE):
            m = pattern.match(line)
            if m:
                names.update(_role_names(m.group(1)))
    return names - {"PUBLIC"}


def _role_names(text: str) -> list[str]:
    """`anon, "Odd Role", service_role` -> the names (pg_dump quotes only where needed)."""
    return [m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
            for m in re.finditer(r'"((?:[^"]|"")*)"|([^\s,]+)', text)]


def create_missing_roles(conn, dump_file: str, known: dict[str, dict] | None) -> list[str]:
    """Roles the dump grants to that this server lacks (a Supabase project's supabase_admin,
    dashboard_user, ...): created NOLOGIN, with the attributes the source had when known, so
    that every grant restores as it was. Returns their names."""
    from psycopg import sql

    existing = {r[0] for r in conn.execute("select rolname from pg_roles").fetchall()}
    created = []
    for name in sorted(roles_in_dump(dump_file) - existing):
        attrs = (known or {}).get(name) or {}
        conn.execute(sql.SQL("create role {} nologin {} {}").format(
            sql.Identifier(name), sql.SQL("inherit" if attrs.get("inherit", True) else "noinherit"),
            sql.SQL("bypassrls" if attrs.get("bypassrls") else "nobypassrls")))
        created.append(name)
    return created


def latest_logical(repo: str | Path | None, dump: str | Path | None = None) -> dict:
    if dump:
        path = Path(dump).expanduser().resolve()
        if not path.exists():
            raise UserError(f"no such dump: {path}")
    else:
        d = logical_dir(default_repo(repo))
        dumps = sorted(d.glob("smsao-*.dump")) if d.exists() else []
        if not dumps:
            raise UserError(f"no logical backup yet in {d}: run `smsao-db backup` with DATABASE_URL set first")
        path = dumps[-1]
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"counts": None, "start": None}
    check = subprocess.run([str(pg_tool("pg_restore")), "--list", str(path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise UserError(f"the logical backup {path} is damaged: {pgserver.last_line(check.stderr)}")
    return {**meta, "file": str(path), "label": path.stem}


# -- restore --------------------------------------------------------------------------------------
@dataclass
class Restored:
    data_dir: Path
    bindir: Path
    label: str
    target: str
    how_to_start: str
    seconds: float
    kind: str = "pgbackrest"


def check_new_dir(target: Path, live_data_dir: Path | None = None) -> Path:
    target = Path(target).expanduser().resolve()
    if live_data_dir is not None:
        live = Path(live_data_dir).resolve()
        if target == live or live in target.parents or target in live.parents:
            raise UserError(f"{target} is the live database's directory: restore only into a new directory")
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a directory: restore into a new, empty directory")
    if not pgserver.dir_is_empty(target):
        raise UserError(f"{target} is not empty: restore never writes over existing files; "
                        "give a new or empty directory")
    return target


def start_command(data_dir: Path, bindir: Path, password_file: Path | None = None,
                  socket_dir: Path | None = None) -> str:
    prefix = f"runuser -u {pgserver.OS_USER} -- " if os.geteuid() == 0 else ""
    login = f" (the live database's password, in {password_file})" if password_file else ""
    start = f"{prefix}{bindir}/pg_ctl -D {data_dir} -l {data_dir}/server.log -o '-p 5433' start"
    if socket_dir:
        return (f"{start}  # then, as root or the {pgserver.OS_USER} OS user: "
                f"psql 'host={socket_dir} port=5433 user={pgserver.DB_SUPERUSER} dbname=smsao'")
    return f"{start}  # then: psql postgresql://{pgserver.DB_SUPERUSER}@127.0.0.1:5433/smsao{login}"


def restore_embedded(cluster, target_dir: str | Path, target_time: str | None = None,
                     repo: str | Path | None = None, immediate: bool = False,
                     label: str | None = None) -> Restored:
    """pgBackRest restore of the latest backup (replaying all archived WAL), of the
    state at `target_time`, or (`immediate`, for the drill) of the backup's end."""
    from runner.embedded import find_bindir

    pb = PgBackRest.for_cluster(cluster, repo)
    target = check_new_dir(Path(target_dir), cluster.data_dir)
    backups = pb.backups()
    if not backups:
        raise UserError(f"no backup yet in {pb.repo}: run `smsao-db backup` first")
    options = ["--archive-mode=off"]
    chosen = backups[-1]
    if label:
        chosen = next((b for b in backups if b["label"] == label), None)
        if not chosen:
            raise UserError(f"no backup labelled {label} in {pb.repo}")
    description = f"the latest backup ({chosen['label']}) and all archived WAL after it"
    if target_time:
        ts = parse_time(target_time)
        # pgBackRest keeps whole seconds; a backup is consistent only from its true end.
        first_stop = datetime.fromtimestamp(backups[0]["timestamp"]["stop"] + 1, timezone.utc)
        if ts > now_utc():
            raise UserError(f"--target-time {iso(ts)} is in the future (now {iso(now_utc())})")
        if ts < first_stop:
            raise UserError(f"--target-time {iso(ts)} is before the first backup, which ended at "
                            f"{iso(first_stop)}: nothing to restore that time from")
        covered = max(pb.marks(), default=first_stop)
        if cluster.running and not pb.repo_overridden:
            covered = max(covered, pb.mark_archive(cluster.url(), cluster.port))
        if ts > covered:
            raise UserError(f"--target-time {iso(ts)} is beyond what the archive covers (up to {iso(covered)}): "
                            "start the database so its newest WAL can be archived, or choose an earlier time")
        chosen = [b for b in backups if b["timestamp"]["stop"] + 1 <= ts.timestamp()][-1]
        options += ["--type=time", f"--target={ts.isoformat(sep=' ')}", "--target-action=promote"]
        description = f"the state at {ts.isoformat()} (backup {chosen['label']} plus archived WAL)"
    elif immediate:
        options += ["--type=immediate", "--target-action=promote"]
        description = f"backup {chosen['label']} as of its end"
    elif cluster.running and not pb.repo_overridden:
        # Archive what the live server wrote up to now, so "latest" means now.
        covered = pb.mark_archive(cluster.url(), cluster.port)
        description += f" (archived up to {iso(covered)})"
    pgserver.private_dir(target)
    started = time.monotonic()
    try:
        pb.run("restore", f"--pg1-path={target}", f"--set={chosen['label']}", *options,
               what="pgbackrest restore")
    except UserError:
        pgserver.remove_tree(target)
        target.mkdir(exist_ok=True)  # leave DIR as the user gave it: existing and empty
        raise
    # The restored settings still name the live cluster's socket directory; the copy
    # listens on 127.0.0.1 only (a port is given when it starts), like the live one.
    # A formation's copy (runner/ha/backup.py) still asks for a synchronous standby it does not have.
    pgserver.append_settings(target, {"unix_socket_directories": "''", "synchronous_standby_names": "''"},
                             "smsao-db restore: the live cluster's socket directory is not this copy's")
    pgserver.append_settings(target, NO_CRON,
                             "smsao-db restore: pg_cron off in the copy (its jobs, backups included, belong to the "
                             "live database); remove this line only when the copy replaces the live one")
    bindir = pgserver.debian_bindir(pgserver.data_major(target)) or find_bindir()
    # The copy has the live cluster's roles and pg_hba.conf: the same password, if any.
    password_file = getattr(cluster, "password_file", None)
    password_file = password_file if password_file and Path(password_file).exists() else None
    return Restored(target, bindir, chosen["label"], description, start_command(target, bindir, password_file),
                    time.monotonic() - started)


def restore_logical(target_dir: str | Path, repo: str | Path | None = None,
                    dump: str | Path | None = None, target_time: str | None = None) -> Restored:
    """A new cluster in `target_dir` holding the latest logical backup."""
    from runner.embedded import find_bindir

    if target_time:
        raise UserError("a logical backup (pg_dump) restores only the state at its start: point-in-time "
                        "recovery needs the embedded database's pgBackRest archive")
    target = check_new_dir(Path(target_dir))
    meta = latest_logical(repo, dump)
    bindir = pgserver.debian_bindir(meta.get("server_major") or 0) or find_bindir()
    started = time.monotonic()
    pgserver.private_dir(target)
    server = None
    try:
        server = init_scratch(target, bindir)
        server.start()
        load_logical(server, meta["file"], meta.get("roles"))
        server.stop()
        socket_dir = serve_privately(target)
    except BaseException:
        if server:
            server.stop()  # the server, if it started, and its private socket directory
        pgserver.remove_tree(target)
        target.mkdir(exist_ok=True)
        raise
    return Restored(target, bindir, meta["label"], f"the logical backup {meta['file']} (state at {meta['start']})",
                    start_command(target, bindir, socket_dir=socket_dir), time.monotonic() - started, kind="logical")


def serve_privately(data_dir: Path) -> Path:
    """A logically restored copy trusts its superuser (it was made with --auth=trust and has
    no password), so it listens on no TCP address, only on a Unix socket in a 0700 folder of
    the server's OS user: only that user and root reach it. The folder is `run/` inside the
    data directory, or one under /tmp where that path is too long for a socket."""
    socket_dir = data_dir / "run"
    if len(str(socket_dir / ".s.PGSQL.65535")) > 107:
        import tempfile

        socket_dir = Path(tempfile.mkdtemp(prefix="smsao-restored-sock-"))
    pgserver.private_dir(socket_dir, 0o700)
    hba = data_dir / "pg_hba.conf"
    hba.write_text("# smsao-db restore: only through the private socket directory (0700)\nlocal all all trust\n")
    pgserver.give_to_owner(hba, 0o600)
    pgserver.append_settings(data_dir, {"listen_addresses": "''",
                                        "unix_socket_directories": f"'{socket_dir}'",
                                        "unix_socket_permissions": "0700"},
                             "smsao-db restore: no TCP; a private socket directory, as the embedded database has")
    return socket_dir


def init_scratch(data_dir: Path, bindir: Path) -> pgserver.Server:
    pgserver.run([bindir / "initdb", "-D", data_dir, "-U", pgserver.DB_SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8"], what="initdb")
    pgserver.append_settings(data_dir, {"timezone": "'UTC'"}, "smsao-db")
    return pgserver.Server(data_dir, bindir).private()


def load_logical(server: pgserver.Server, dump_file: str, roles: dict[str, dict] | None = None) -> list[str]:
    """Roles first (a dump carries grants to them, not the roles, which are cluster-wide):
    the package's own role definitions, attributes included (service_role bypasses RLS), and
    every other role the dump grants to (a Supabase project has many); then pg_restore.
    Returns the roles created besides the package's."""
    with connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute((sql_dir() / "schema" / "00_roles.sql").read_text())
        created = create_missing_roles(conn, dump_file, roles)
        conn.execute("create database smsao")
    with connect(server.url("smsao"), autocommit=True) as conn:
        # The dump names schema public explicitly, so it carries its own CREATE SCHEMA.
        conn.execute("drop schema public")
    proc = subprocess.run([str(pg_tool("pg_restore")), "--exit-on-error", "--no-owner",
                           f"--dbname={server.url('smsao')}", dump_file], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"pg_restore failed: {pgserver.last_line(proc.stderr)}")
    return created
