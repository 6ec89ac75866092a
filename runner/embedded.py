"""A local PostgreSQL with pg_cron, started from the Debian binaries in a project-local
data directory. PostgreSQL refuses to run as root, so under root the server runs as
the unprivileged `postgres` OS user (created by the Debian package)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

from runner import PROJECT_DIR
from runner.errors import UserError

SUPERUSER = "postgres"
DEFAULT_HOME = Path(os.environ.get("SMSAO_HOME", PROJECT_DIR / ".smsao"))
INSTALL_HINT = "run ./dev setup (installs postgresql-15 and postgresql-15-cron) or set PG_BINDIR"


def find_bindir() -> Path:
    """PG_BINDIR, or the newest Debian PostgreSQL >= 15; it must have pg_cron."""
    if os.environ.get("PG_BINDIR"):
        candidates = [Path(os.environ["PG_BINDIR"])]
    else:
        versions = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p).parent.name.isdigit()]
        candidates = [Path(p) for p in sorted(versions, key=lambda p: int(Path(p).parent.name), reverse=True)
                      if int(Path(p).parent.name) >= 15]
    for bindir in candidates:
        if not (bindir / "postgres").exists():
            continue
        try:
            libdir = subprocess.run([bindir / "pg_config", "--pkglibdir"], capture_output=True, text=True).stdout.strip()
        except OSError as exc:
            raise UserError(f"cannot run {bindir / 'pg_config'} ({exc.strerror}): {INSTALL_HINT}") from None
        if not (Path(libdir) / "pg_cron.so").exists():
            raise UserError(f"pg_cron is not installed for {bindir}: {INSTALL_HINT}")
        return bindir
    if os.environ.get("PG_BINDIR"):
        raise UserError(f"no PostgreSQL server in PG_BINDIR={os.environ['PG_BINDIR']}: "
                        "point it at a bin directory holding `postgres`, or unset it")
    raise UserError(f"PostgreSQL 15 binaries not found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL cluster in `data_dir`, reachable on 127.0.0.1 only."""

    def __init__(self, home: Path = DEFAULT_HOME, cron_database: str = "smsao",
                 settings: dict[str, str] | None = None):
        self.home = Path(home)
        self.data_dir = self.home / "pgdata"
        self.log_file = self.home / "postgres.log"
        self.cron_database = cron_database
        self.settings = settings or {}
        self.as_root = os.geteuid() == 0

    # -- running commands as the right OS user -------------------------------------
    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise UserError(f"{Path(cmd[-len(args)]).name} failed: {detail[-1] if detail else proc.returncode}"
                            f" (server log: {self.log_file})")
        return proc

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            try:
                owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise UserError(f"running as root needs the '{SUPERUSER}' OS user: {INSTALL_HINT}") from None
            os.chown(self.home, owner.pw_uid, owner.pw_gid)
            if self._run("test", "-w", self.home, check=False).returncode != 0:
                raise UserError(f"the '{SUPERUSER}' OS user cannot reach {self.home}: "
                                "set SMSAO_HOME to a directory it can write")

    # -- lifecycle -----------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        bindir = find_bindir()
        self._prepare_home()
        self._run(bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{self.cron_database}'",
            # pg_cron runs jobs over libpq; the server listens on TCP only.
            "cron.host": "'127.0.0.1'",
            "timezone": "'UTC'",
            **self.settings,
        }
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# smsao-db\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))

    @property
    def running(self) -> bool:
        if not self.initialized:
            return False
        return self._run(find_bindir() / "pg_ctl", "-D", self.data_dir, "status", check=False).returncode == 0

    @property
    def port(self) -> int:
        # Line 4 of postmaster.pid is the port the running server listens on.
        return int((self.data_dir / "postmaster.pid").read_text().splitlines()[3])

    def url(self, dbname: str = "smsao") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        if self.running:
            return
        if not self.initialized:
            self.init()
        self._run(find_bindir() / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w",
                  "-t", "60", "-o", f"-p {free_port()}", "start")

    def stop(self) -> bool:
        if not self.running:
            return False
        self._run(find_bindir() / "pg_ctl", "-D", self.data_dir, "-w", "-m", "fast", "stop")
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
