"""A local PostgreSQL with pg_cron, started from the Debian binaries in a project-local
data directory. PostgreSQL refuses to run as root, so under root the server runs as
the unprivileged `postgres` OS user (created by the Debian package).

Never open to other local users: TCP (127.0.0.1 only) asks for the superuser's password,
generated once and kept in `<home>/password` (mode 0600); the only Unix socket is in
`<home>/run`, a directory of mode 0700 owned by the server's OS user, and there pg_hba
trusts local connections. Only that OS user (who owns the data files anyway) and root can
enter it.

The server keeps one port for its whole life (chosen at `init`, written into its
configuration), so the URL that `smsao-db url` prints stays valid across restarts. pg_cron
runs its jobs as background workers (`cron.use_background_workers`): a job stores no host
or port to connect to, so it keeps running after a restart, a crash or a change of port."""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from runner.errors import UserError

SUPERUSER = "postgres"
# Written into a data home the package created: only such a home has its mode and owner
# changed (see Cluster._claim_home).
HOME_MARKER = ".smsao-home"
MARKER_TEXT = "This directory is an smsao-db data home (created or adopted by smsao-db).\n"
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


def default_home() -> Path:
    """`.smsao/` in the directory where smsao-db runs (like `.venv`), or SMSAO_HOME."""
    return Path(os.environ.get("SMSAO_HOME") or Path.cwd() / ".smsao").absolute()


def create_home(home: Path) -> None:
    """Make `home` as the package's own data home (0700, marked) when a command other than
    `up` needs it first (a logical backup into its default repository), so that `up` later
    recognises it; an existing directory is left exactly as it is."""
    home = Path(home)
    if home.exists():
        return
    home.parent.mkdir(parents=True, exist_ok=True)
    try:
        home.mkdir(mode=0o700)
    except FileExistsError:
        return
    home.chmod(0o700)
    (home / HOME_MARKER).write_text(MARKER_TEXT)


def _conf_string(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, wait: float = 0) -> bool:
    """Whether a program listens on 127.0.0.1:port, still after `wait` seconds (a server
    that has just stopped may hold it a moment longer). Connections waiting in TIME_WAIT do
    not count: the server binds with SO_REUSEADDR too."""
    deadline = time.monotonic() + wait
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return False
            except OSError:
                if time.monotonic() >= deadline:
                    return True
        time.sleep(0.1)


# Settings every embedded server has, whatever runner version made its data directory:
# `start` adds the ones an older data directory lacks. pg_cron's jobs run as background
# workers (no connection, so no host or port to go stale); each takes a worker slot, so
# max_worker_processes leaves room beyond the jobs that may run at once.
SCHEDULER_SETTINGS = {
    "cron.use_background_workers": "on",
    "cron.max_running_jobs": "5",
    "max_worker_processes": "16",
}


class Cluster:
    """One PostgreSQL cluster in `<home>/pgdata`: 127.0.0.1 with a password, and a private socket."""

    def __init__(self, home: Path | None = None, cron_database: str = "smsao",
                 settings: dict[str, str] | None = None):
        self.home = Path(home) if home else default_home()
        self.data_dir = self.home / "pgdata"
        self.log_file = self.home / "postgres.log"
        self.password_file = self.home / "password"
        self.socket_dir = self.home / "run"
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
        if len(str(self.socket_dir / ".s.PGSQL.65535")) > 107:  # the kernel's limit for a socket path
            raise UserError(f"the data directory's path is too long for a Unix socket ({self.home}): "
                            "set SMSAO_HOME to a shorter path")
        owner = self._server_os_user()
        self._claim_home(owner)
        self.home.chmod(0o700)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if owner:
            for path in (self.home, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            if self._run("test", "-w", self.home, check=False).returncode != 0:
                raise UserError(f"the '{SUPERUSER}' OS user cannot reach {self.home}: every directory above it "
                                "must be searchable by that user (mode o+x), or set SMSAO_HOME elsewhere")

    def _server_os_user(self) -> pwd.struct_passwd | None:
        """The OS user the server runs as when we are root (None: the server runs as us)."""
        if not self.as_root:
            return None
        try:
            return pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise UserError(f"running as root needs the '{SUPERUSER}' OS user: {INSTALL_HINT}") from None

    def _claim_home(self, owner: pwd.struct_passwd | None) -> None:
        """Create the home, or accept an existing one only when it is the package's own: the
        home's mode and owner are then made private, which must never happen to a directory
        somebody else made (SMSAO_HOME=/tmp would close /tmp to every user of the machine).

        Ours: it holds HOME_MARKER (written when the package created it), or it is a data
        home made by a runner older than the marker (it holds a cluster; adopted, marked).
        An empty directory that is already private (mode 0700 or stricter, owned by the
        server's OS user) needs no change, so it is accepted and marked. Anything else is
        refused with one line, untouched."""
        try:
            self.home.parent.mkdir(parents=True, exist_ok=True)
            self.home.mkdir(mode=0o700)
        except FileExistsError:
            if not self._home_is_ours(owner):
                raise UserError(self._not_ours_reason(owner)) from None
        except OSError as exc:
            raise UserError(f"cannot create the data home {self.home}: {exc.strerror}") from None
        marker = self.home / HOME_MARKER
        if not marker.exists():
            marker.write_text(MARKER_TEXT)

    def _home_is_ours(self, owner: pwd.struct_passwd | None) -> bool:
        """The evidence counts only if nobody else could have planted it: the home and the
        file that proves it ours belong to us (or the server's OS user), and the home is
        writable by nobody else (a shared directory such as /tmp never qualifies)."""
        if not self.home.is_dir():
            return False
        trusted = {os.geteuid()} | ({owner.pw_uid} if owner else set())
        st = self.home.stat()
        if st.st_uid not in trusted or st.st_mode & 0o022:
            return False
        for evidence in (self.home / HOME_MARKER, self.data_dir / "PG_VERSION"):
            if evidence.is_file() and not evidence.is_symlink() and evidence.stat().st_uid in trusted:
                return True
        uid = owner.pw_uid if owner else os.geteuid()
        return not any(self.home.iterdir()) and st.st_mode & 0o077 == 0 and st.st_uid == uid

    def _not_ours_reason(self, owner: pwd.struct_passwd | None) -> str:
        what = "is not a directory" if not self.home.is_dir() else "already exists and was not created by smsao-db"
        user = owner.pw_name if owner else pwd.getpwuid(os.geteuid()).pw_name
        return (f"the data home {self.home} {what}: its mode and owner are left alone. Set SMSAO_HOME to a "
                f"path that does not exist yet (smsao-db creates it), or to an empty directory of mode 0700 "
                f"owned by '{user}'")

    def _write_password(self) -> None:
        """A new random superuser password in a file only its owner reads (the server's OS user)."""
        self.password_file.unlink(missing_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        if self.as_root:
            owner = pwd.getpwnam(SUPERUSER)
            os.chown(self.password_file, owner.pw_uid, owner.pw_gid)

    @property
    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            raise UserError(f"the embedded database in {self.home} has no password file ({self.password_file}): "
                            "it predates password authentication; `smsao-db down`, move the folder away "
                            "and run `smsao-db up` to create a new one") from None

    # -- lifecycle -----------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        bindir = find_bindir()
        self._prepare_home()
        self._write_password()
        # TCP asks for the password; `local` (the private socket directory only) is trusted.
        self._run(bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "--pwfile", self.password_file,
                  "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8", "--locale=C.UTF-8")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": _conf_string(self.socket_dir),
            "unix_socket_permissions": "0700",
            "password_encryption": "'scram-sha-256'",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": _conf_string(self.cron_database),
            # Only used should background workers be turned off: jobs would then connect
            # through the private socket, where no password is asked.
            "cron.host": _conf_string(self.socket_dir),
            "timezone": "'UTC'",
            # One port for the server's life: apps, `serve` and `monitor` keep their URL.
            "port": str(free_port()),
            **SCHEDULER_SETTINGS,
            **self.settings,
        }
        self._append_conf("smsao-db", conf)

    def _append_conf(self, why: str, settings: dict[str, str]) -> None:
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(f"\n# {why}\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    def _configured(self) -> dict[str, str]:
        """The settings postgresql.conf gives (the last line of each name wins, as for the server)."""
        found = {}
        for line in (self.data_dir / "postgresql.conf").read_text().splitlines():
            name, sep, value = line.split("#", 1)[0].partition("=")
            if sep:
                found[name.strip()] = value.strip()
        return found

    def _upgrade_conf(self) -> None:
        """A data directory made by an older runner: give it a fixed port and background
        workers for pg_cron (its jobs stored a host and port that each restart changed)."""
        configured = self._configured()
        missing = {k: v for k, v in SCHEDULER_SETTINGS.items() if k not in configured}
        if "port" not in configured:
            missing["port"] = str(free_port())
        if missing:
            self._append_conf("smsao-db: a fixed port, and pg_cron jobs as background workers", missing)

    @property
    def configured_port(self) -> int:
        return int(self._configured().get("port", "5432").strip("'"))

    @property
    def running(self) -> bool:
        if not self.initialized:
            return False
        if self._postmaster_is_dead_but_not_reaped(wait=10):
            return False
        return self._run(find_bindir() / "pg_ctl", "-D", self.data_dir, "status", check=False).returncode == 0

    def _postmaster_is_dead_but_not_reaped(self, wait: float) -> bool:
        """A postmaster killed with -9 stays a zombie until its parent (init) reaps it: its
        PID still answers, so pg_ctl would call it running, and a new postmaster would
        refuse the lock file it names. Wait a little for the reaping; True if it never came."""
        deadline = time.monotonic() + wait
        while True:
            try:
                pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, ValueError, IndexError):
                return False  # no pid file, or no such process: pg_ctl tells the rest
            if state != "Z":
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.2)

    @property
    def port(self) -> int:
        return self.configured_port

    def url(self, dbname: str = "smsao") -> str:
        """The superuser's URL over TCP, password included (for the runner, psql and apps)."""
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{quote(dbname)}"

    def start(self) -> None:
        if self.running:
            return
        if self.initialized:
            self._prepare_home()  # the socket directory, should it have been removed
            self._upgrade_conf()
        else:
            self.init()
        port = self.configured_port
        if port_in_use(port, wait=3):
            raise UserError(f"port {port} of the embedded database ({self.home}) is taken by another program: "
                            f"stop that program, or change `port` in {self.data_dir / 'postgresql.conf'}")
        self._run(find_bindir() / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", "60", "start")

    def stop(self) -> bool:
        if not self.running:
            return False
        self._run(find_bindir() / "pg_ctl", "-D", self.data_dir, "-w", "-m", "fast", "stop")
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
