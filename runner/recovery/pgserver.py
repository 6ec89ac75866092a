"""PostgreSQL programs run as the cluster's OS user, and short-lived servers on a data
directory (a restored copy, a drill's scratch cluster, an upgrade rehearsal).

PostgreSQL, pgBackRest and pg_upgrade refuse to run as root or need to own the data
directory, so under root every such program runs as the `postgres` OS user, exactly as
runner/embedded.py runs the embedded server.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

from runner.errors import UserError

OS_USER = "postgres"
DB_SUPERUSER = "postgres"


def as_owner(args) -> list[str]:
    cmd = [str(a) for a in args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", OS_USER, "--", *cmd]
    return cmd


def last_line(text: str) -> str:
    """The line of a program's output that says what went wrong."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    for ln in lines:  # pgBackRest: "ERROR: [055]: unable to load info file ..."
        m = re.match(r"^(?:\S+ \S+ )?(?:P\d+ +)?ERROR: \[\d+\]: (.*)$", ln)
        if m:
            return m.group(1)
    for ln in reversed(lines):
        if re.search(r"\b(FATAL|ERROR|error|failed|fatal)\b", ln):
            return ln
    return lines[-1] if lines else ""


def run(args, *, what: str | None = None, check: bool = True, cwd: Path | None = None,
        env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a program as the cluster's OS user; a failure is one UserError line."""
    name = what or Path(str(args[0])).name
    try:
        proc = subprocess.run(as_owner(args), capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, **(env or {})}, timeout=timeout)
    except FileNotFoundError:
        raise UserError(f"{name}: program not found ({args[0]})") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{name} did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise UserError(f"{name} failed: {last_line(proc.stderr + chr(10) + proc.stdout) or proc.returncode}")
    return proc


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and the environment that carries it
    instead: a program's arguments are visible to every local user (ps), its environment is
    not. Every form libpq accepts is handled (a URL's user info or `?password=`, multi-host,
    a key=value conninfo); with no password it is returned unchanged."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception:
        from runner.db import redact

        raise UserError(f"invalid database URL {redact(url)}: expected postgresql://user:password@host:port/dbname"
                        ) from None
    if params.get("sslpassword"):
        raise UserError("a database URL with sslpassword cannot be handed to PostgreSQL's programs without "
                        "showing it to every local user: use a key without a passphrase, or a service file")
    password = params.pop("password", None)
    if password is None:
        return url, {}
    return make_conninfo(**params), {"PGPASSWORD": str(password)}


def owner_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(OS_USER)
    except KeyError:
        raise UserError(f"running as root needs the '{OS_USER}' OS user: run ./dev setup") from None
    return pw.pw_uid, pw.pw_gid


def give_to_owner(path: Path, mode: int | None = None) -> None:
    ids = owner_ids()
    if ids:
        os.chown(path, *ids)
    if mode is not None:
        os.chmod(path, mode)


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """A directory owned by the cluster's OS user (parents created as needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    give_to_owner(path, mode)
    return path


def repository_dir(path: Path) -> Path:
    """A folder the server's OS user writes backups into. A new one is made private to that
    user; one that already exists was made by somebody: its mode and owner are left alone,
    and the server's OS user must already be able to write it (pgBackRest keeps its own
    files inside private)."""
    path = Path(path)
    if not path.exists():
        return private_dir(path, 0o750)
    if not path.is_dir():
        raise UserError(f"the backup repository {path} is not a directory")
    if run(["test", "-w", path, "-a", "-x", path], check=False).returncode != 0:
        user = OS_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        raise UserError(f"the backup repository {path} exists but the '{user}' OS user cannot write it: its mode "
                        f"and owner are left alone; give it to that user (chown {user}) or name a new folder")
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def dir_is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def bin_major(bindir: Path) -> int:
    """The major version of the PostgreSQL binaries in `bindir`."""
    postgres = Path(bindir) / "postgres"
    if not postgres.exists():
        raise UserError(f"no PostgreSQL server binary in {bindir}: give the `bin` directory of an installation")
    try:
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True).stdout
    except OSError as exc:  # not executable, wrong architecture, ...
        raise UserError(f"cannot run {postgres}: {exc.strerror or exc}") from None
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    if not m:
        raise UserError(f"cannot tell the version of {postgres}: {out.strip() or 'no output'}")
    return int(m.group(1))


def data_major(data_dir: Path) -> int:
    return int((Path(data_dir) / "PG_VERSION").read_text().strip())


def debian_bindir(major: int) -> Path | None:
    p = Path(f"/usr/lib/postgresql/{major}/bin")
    return p if (p / "postgres").exists() else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def append_settings(data_dir: Path, settings: dict[str, str], why: str) -> None:
    """Settings that win over postgresql.conf and earlier lines of postgresql.auto.conf."""
    auto = Path(data_dir) / "postgresql.auto.conf"
    with open(auto, "a") as f:
        f.write(f"\n# {why}\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    give_to_owner(auto)


class Server:
    """A PostgreSQL server on `data_dir`, started with the binaries in `bindir`.

    `private()` makes it reachable only through a Unix socket in a 0700 directory owned
    by the cluster's OS user (so only that user and root reach it): what a drill or an
    upgrade rehearsal wants for a copy of production data."""

    def __init__(self, data_dir: Path, bindir: Path, log_file: Path | None = None):
        self.data_dir = Path(data_dir)
        self.bindir = Path(bindir)
        self.log_file = Path(log_file) if log_file else self.data_dir / "server.log"
        self.port: int | None = None
        self.socket_dir: Path | None = None

    def private(self, extra: dict[str, str] | None = None) -> "Server":
        import tempfile

        # A short path of its own: a socket's path may not exceed 107 bytes.
        self.socket_dir = private_dir(Path(tempfile.mkdtemp(prefix="smsao-sock-")))
        append_settings(self.data_dir, {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            **(extra or {}),
        }, "smsao-db: a private scratch copy, reachable only through its own socket directory")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text("# smsao-db scratch copy: the socket directory is private (0700)\n"
                       "local all all trust\n")
        give_to_owner(hba, 0o600)
        return self

    def start(self, port: int | None = None, timeout: int = 300) -> None:
        self.port = port or free_port()
        if self.log_file.parent != self.data_dir:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        give_to_owner(self.log_file)
        proc = run([self.bindir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", str(timeout),
                    "-o", f"-p {self.port}", "start"], check=False)
        if proc.returncode != 0:
            raise UserError(f"the server on {self.data_dir} did not start: {self.log_reason()}")

    def log_reason(self) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "no server log"
        lines = [ln for ln in text.splitlines() if re.search(r"\b(FATAL|PANIC|ERROR)\b", ln)]
        line = lines[-1] if lines else (text.strip().splitlines() or ["no server log"])[-1]
        return re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", line).strip() + f" (log: {self.log_file})"

    def url(self, dbname: str = "smsao") -> str:
        if self.socket_dir:
            return f"postgresql://{DB_SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"
        return f"postgresql://{DB_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def wait_until_writable(self, timeout: float = 600) -> None:
        """Archive recovery accepts read-only connections before it reaches its target;
        what was restored is known only once the server has been promoted."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=5, autocommit=True) as conn:
                    if not conn.execute("select pg_is_in_recovery()").fetchone()[0]:
                        return
            except psycopg.OperationalError:
                if not self.running:
                    raise UserError(f"the restored server stopped during recovery: {self.log_reason()}") from None
            if time.monotonic() > deadline:
                raise UserError(f"the restored server was still recovering after {timeout:.0f} s "
                                f"(log: {self.log_file})")
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return run([self.bindir / "pg_ctl", "-D", self.data_dir, "status"], check=False).returncode == 0

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            run([self.bindir / "pg_ctl", "-D", self.data_dir, "-w", "-t", "120", "-m", "fast", "stop"], check=False)
        if self.socket_dir:
            remove_tree(self.socket_dir)
