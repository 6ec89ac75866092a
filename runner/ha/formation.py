"""A local pg_auto_failover formation: a monitor, a primary and a synchronous secondary,
each in its own directory under `<data home>/ha/`, run as the `postgres` OS user.

Same security as the embedded database (runner/embedded.py):
- we run initdb ourselves (pg_autoctl's own initdb trusts every TCP connection) with
  scram-sha-256 for TCP, and `--skip-pg-hba` keeps pg_autoctl from adding its rules
  (among them `trust` for the monitor's health-check user);
- every password is generated once: the superuser's in `ha/password`, the internal
  users' (autoctl_node, pgautofailover_replicator, pgautofailover_monitor) in `ha/pgpass`,
  both 0600 and owned by the server's OS user; libpq finds them through PGPASSFILE, which
  every pg_autoctl process (and the Postgres servers it starts) inherits;
- the only Unix sockets are in `ha/run` (0700), TCP is 127.0.0.1 only.

pg_autoctl writes `shared_preload_libraries` (and other settings) into
`postgresql-auto-failover.conf`, included at the TOP of postgresql.conf: the settings we
append to postgresql.conf come later and win (pg_cron preloaded, jobs as background
workers so that a node's host and port never matter to a job)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from runner.embedded import default_home, find_bindir
from runner.errors import UserError
from runner.recovery import pgserver

NODES = ("node1", "node2")
DBNAME = "smsao"
HOST = "127.0.0.1"
INTERNAL_USERS = ("autoctl_node", "pgautofailover_replicator", "pgautofailover_monitor")

# The monitor's health checks, tuned down from 5 s periods and a 20 s "unhealthy" timeout so
# that a dead primary is failed over in seconds on one machine (docs/ha.md gives the
# production values and why they differ).
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    "pgautofailover.startup_grace_period": "3000",
    # How long the monitor waits for an unreachable primary to demote itself before it
    # promotes the standby (30 s by default). Safe to shorten with synchronous replication:
    # a primary cut off from its standby cannot acknowledge a commit anyway. Each keeper's
    # own timeout.network_partition_timeout (NODE_KEEPER_SETTINGS) is shortened to match.
    "pgautofailover.primary_demote_timeout": "5000",
}
NODE_KEEPER_SETTINGS = {"timeout.network_partition_timeout": "3"}
# Data nodes: settings that must win over postgresql-auto-failover.conf.
NODE_SETTINGS = {
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": f"'{DBNAME}'",
    # Jobs run as background workers: no libpq connection, so no host/port stored in
    # cron.job matters after a failover to a node on another port.
    "cron.use_background_workers": "on",
    "max_worker_processes": "24",
    "timezone": "'UTC'",
}
COMMON_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_permissions": "0700",
    "password_encryption": "'scram-sha-256'",
    # pg_autoctl's computed tuning asks for a quarter of the machine's memory per node.
    "shared_buffers": "'128MB'",
    "effective_cache_size": "'1GB'",
    "maintenance_work_mem": "'64MB'",
    "work_mem": "'4MB'",
}


@dataclass
class NodeState:
    name: str
    host: str
    port: int
    reported: str
    goal: str
    healthy: bool
    lsn: str | None
    role: str  # primary / standby / unknown

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _is_zombie(pid: int) -> bool:
    """A process killed with -9 answers signal 0 until its parent reaps it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Formation:
    """The local formation under `<home>/ha`."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home else default_home()
        self.root = self.home / "ha"
        self.socket_dir = self.root / "run"
        self.password_file = self.root / "password"
        self.pgpass_file = self.root / "pgpass"
        self.ports_file = self.root / "ports.json"
        self.xdg = self.root / "xdg"

    # -- places -------------------------------------------------------------------------
    def data_dir(self, name: str) -> Path:
        return self.root / name

    def log_file(self, name: str) -> Path:
        return self.root / f"{name}.log"

    @property
    def exists(self) -> bool:
        return (self.data_dir("monitor") / "PG_VERSION").exists()

    @property
    def ports(self) -> dict[str, int]:
        try:
            return json.loads(self.ports_file.read_text())
        except FileNotFoundError:
            raise UserError(f"no formation in {self.root}: run `smsao-db up --ha`") from None

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def env(self) -> dict[str, str]:
        """pg_autoctl's environment: private XDG folders (its config, state and pid files),
        the private socket directory, and the password file."""
        return {
            "XDG_CONFIG_HOME": str(self.xdg / "config"),
            "XDG_DATA_HOME": str(self.xdg / "data"),
            "XDG_RUNTIME_DIR": str(self.xdg / "run"),
            "PGHOST": str(self.socket_dir),
            "PGPASSFILE": str(self.pgpass_file),
            "PATH": f"{find_bindir()}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.root),
        }

    def autoctl(self, *args, check: bool = True, timeout: float | None = 300) -> subprocess.CompletedProcess:
        return pgserver.run(["pg_autoctl", *args], what=f"pg_autoctl {args[0]}", check=check,
                            env=self.env(), timeout=timeout)

    # -- URLs ------------------------------------------------------------------------------
    def url(self, dbname: str = DBNAME) -> str:
        """The multi-host URL: libpq tries each node and keeps the one that takes writes."""
        ports = self.ports
        hosts = ",".join(f"{HOST}:{ports[n]}" for n in NODES)
        return (f"postgresql://postgres:{quote(self.password, safe='')}@{hosts}/{quote(dbname)}"
                "?target_session_attrs=read-write")

    def node_url(self, name: str, dbname: str = DBNAME) -> str:
        return f"postgresql://postgres:{quote(self.password, safe='')}@{HOST}:{self.ports[name]}/{quote(dbname)}"

    def monitor_conninfo(self) -> str:
        """Local superuser connection to the monitor (through the private socket)."""
        return f"host={self.socket_dir} port={self.ports['monitor']} user=postgres dbname=pg_auto_failover"

    # -- creation --------------------------------------------------------------------------
    def _prepare(self) -> None:
        if len(str(self.socket_dir / ".s.PGSQL.65535")) > 107:
            raise UserError(f"the data home's path is too long for a Unix socket ({self.root}): "
                            "set SMSAO_HOME to a shorter path")
        if not shutil.which("pg_autoctl"):
            raise UserError("pg_autoctl is not installed: run ./dev setup "
                            "(Debian pg-auto-failover-cli postgresql-15-auto-failover)")
        self.home.mkdir(parents=True, exist_ok=True)
        pgserver.give_to_owner(self.home, 0o700)
        for d in (self.root, self.socket_dir, self.xdg, self.xdg / "config", self.xdg / "data", self.xdg / "run"):
            pgserver.private_dir(d)
        if pgserver.run(["test", "-w", self.root], check=False).returncode != 0:
            raise UserError(f"the 'postgres' OS user cannot reach {self.root}: "
                            "set SMSAO_HOME to a directory it can traverse")

    def _write_secret(self, path: Path, text: str) -> None:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        pgserver.give_to_owner(path, 0o600)

    def _write_secrets(self) -> dict[str, str]:
        passwords = {u: secrets.token_urlsafe(24) for u in INTERNAL_USERS}
        self._write_secret(self.password_file, secrets.token_urlsafe(24) + "\n")
        self._write_secret(self.pgpass_file, "".join(f"*:*:*:{u}:{p}\n" for u, p in passwords.items()))
        used = set()
        ports = {}
        for name in ("monitor", *NODES):
            port = pgserver.free_port()
            while port in used:
                port = pgserver.free_port()
            used.add(port)
            ports[name] = port
        self.ports_file.write_text(json.dumps(ports))
        return passwords

    def _initdb(self, name: str, settings: dict[str, str]) -> None:
        bindir = find_bindir()
        pgserver.run([bindir / "initdb", "-D", self.data_dir(name), "-U", "postgres",
                      "--pwfile", self.password_file, "--auth-host=scram-sha-256", "--auth-local=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8"], what="initdb")
        conf = {**COMMON_SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'", **settings}
        with open(self.data_dir(name) / "postgresql.conf", "a") as f:
            f.write("\n# smsao-db (after pg_auto_failover's include at the top: these win)\n"
                    + "".join(f"{k} = {v}\n" for k, v in conf.items()))

    def _sql(self, conninfo: str, *statements: str) -> None:
        import psycopg

        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            for s in statements:
                conn.execute(s)

    def _set_password(self, conninfo: str, user: str, password: str) -> None:
        from psycopg import sql

        import psycopg

        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("alter user {} password {}").format(sql.Identifier(user), sql.Literal(password)))

    def create(self, log=print) -> None:
        """Build the formation: monitor, node1 (primary), node2 (synchronous secondary).
        A failure stops whatever was started and says where the half-built formation is."""
        try:
            self._create(log)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, UserError):
                raise UserError(f"{exc}; the half-built formation in {self.root} is stopped: "
                                "remove that folder before `smsao-db up --ha` again") from None
            raise

    def _create(self, log) -> None:
        self._prepare()
        passwords = self._write_secrets()
        bindir = find_bindir()
        ports = self.ports
        ssl = ["--ssl-self-signed", "--skip-pg-hba", "--pgctl", bindir / "pg_ctl"]

        log("creating the monitor")
        self._initdb("monitor", MONITOR_SETTINGS)
        self.autoctl("create", "monitor", "--pgdata", self.data_dir("monitor"), "--pgport", ports["monitor"],
                     "--hostname", HOST, *ssl)
        # pg_autoctl starts each server with `-h <listen_addresses>` from its own config
        # ('*' by default for a monitor): on the command line, that beats postgresql.conf.
        self.autoctl("config", "set", "--pgdata", self.data_dir("monitor"), "postgresql.listen_addresses", HOST)
        self.start_node("monitor")
        self._wait(lambda: self._can_connect(self.monitor_conninfo()), 60, "the monitor to accept connections")
        self._set_password(self.monitor_conninfo(), "autoctl_node", passwords["autoctl_node"])

        monitor_uri = f"postgres://autoctl_node@{HOST}:{ports['monitor']}/pg_auto_failover?sslmode=require"
        for i, name in enumerate(NODES):
            log(f"creating {name} ({'primary' if i == 0 else 'synchronous secondary'})")
            if i == 0:
                self._initdb(name, NODE_SETTINGS)  # the secondary is a pg_basebackup of the primary
            self.autoctl("create", "postgres", "--pgdata", self.data_dir(name), "--pgport", ports[name],
                         "--hostname", HOST, "--listen", HOST, "--name", name, "--dbname", DBNAME,
                         "--monitor", monitor_uri, *ssl, timeout=600)
            for key, value in NODE_KEEPER_SETTINGS.items():
                self.autoctl("config", "set", "--pgdata", self.data_dir(name), key, value)
            self._archive_settings(name)
            self.start_node(name)
            if i == 0:
                local = f"host={self.socket_dir} port={ports[name]} user=postgres dbname={DBNAME}"
                self._wait(lambda: self._primary_ready() and self._can_connect(local), 120,
                           "node1 to become primary")
                # Set on the primary before the secondary copies it; replicated from then on.
                for user in ("pgautofailover_replicator", "pgautofailover_monitor"):
                    self._set_password(local, user, passwords[user])
        self.wait_healthy(timeout=300)

    def _archive_settings(self, name: str) -> None:
        """WAL archiving with pgBackRest (runner/ha/backup.py), each node naming its own data
        directory; appended while the node is stopped (archive_mode needs a restart)."""
        if not shutil.which("pgbackrest"):
            return
        from runner.ha.backup import node_archive_settings

        with open(self.data_dir(name) / "postgresql.conf", "a") as f:
            f.write("\n# smsao-db: WAL archiving (pgBackRest); only the primary archives\n"
                    + "".join(f"{k} = {v}\n" for k, v in node_archive_settings(self, name).items()))

    # -- processes -------------------------------------------------------------------------
    def start_node(self, name: str) -> None:
        """`pg_autoctl run` for one node, detached; it starts (and restarts) its Postgres."""
        if self.node_running(name):
            return
        log = self.log_file(name)
        log.touch()
        pgserver.give_to_owner(log, 0o600)
        with open(log, "a") as out:
            subprocess.Popen(pgserver.as_owner(["pg_autoctl", "run", "--pgdata", self.data_dir(name)]),
                             env={**os.environ, **self.env()}, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)

    def node_running(self, name: str) -> bool:
        """Whether the node's keeper (`pg_autoctl run`) is alive, from its pid file: no
        program to start, nothing that a busy server could slow down."""
        if not (self.data_dir(name) / "PG_VERSION").exists():
            return False
        pid = self.keeper_pid(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's (the server's OS user)
        return not _is_zombie(pid)

    @property
    def running(self) -> bool:
        return self.exists and self.node_running("monitor")

    def start(self) -> None:
        self._prepare()
        for name in ("monitor", *NODES):
            self.start_node(name)
        # The monitor shows the states last reported (possibly from before a stop): wait
        # for a primary that takes writes too.
        self._wait(lambda: self._can_connect(self.url()), 180, "the primary to accept writes")
        self.wait_healthy(timeout=180)

    def stop(self) -> bool:
        """Stop the nodes, then the monitor (each pg_autoctl stops its own Postgres)."""
        stopped = False
        for name in (*NODES, "monitor"):
            if self.node_running(name):
                self.autoctl("stop", "--pgdata", self.data_dir(name), check=False)
                stopped = True
        for name in (*NODES, "monitor"):
            self._wait(lambda n=name: not self.node_running(n) and not self.postmaster_pid(n), 120,
                       f"{name} to stop")
        return stopped

    def postmaster_pid(self, name: str) -> int | None:
        try:
            pid = int((self.data_dir(name) / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return None if _is_zombie(pid) else pid

    def keeper_pid(self, name: str) -> int | None:
        """The pid of the node's `pg_autoctl run` (its pid file in XDG_RUNTIME_DIR)."""
        path = self.xdg / "run" / "pg_autoctl" / str(self.data_dir(name)).lstrip("/") / "pg_autoctl.pid"
        try:
            return int(path.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    # -- state -----------------------------------------------------------------------------
    def _can_connect(self, conninfo: str) -> bool:
        import psycopg

        try:
            psycopg.connect(conninfo, connect_timeout=3).close()
            return True
        except psycopg.Error:
            return False

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise UserError(f"timed out after {timeout:.0f} s waiting for {what} (logs: {self.root}/*.log)")
            time.sleep(0.3)

    def nodes(self) -> list[NodeState]:
        import psycopg

        try:
            with psycopg.connect(self.monitor_conninfo(), connect_timeout=5) as conn:
                rows = conn.execute("""
                    select nodename, nodehost, nodeport, reportedstate::text, goalstate::text,
                           health = 1, reportedlsn::text
                      from pgautofailover.node order by nodeid""").fetchall()
        except psycopg.Error as exc:
            raise UserError(f"the formation's monitor is unreachable: {str(exc).strip().splitlines()[0]}") from None
        out = []
        for name, host, port, reported, goal, healthy, lsn in rows:
            role = ("primary" if reported in ("primary", "wait_primary", "single") else
                    "standby" if reported in ("secondary", "catchingup") else "unknown")
            out.append(NodeState(name, host, port, reported, goal, bool(healthy), lsn, role))
        return out

    def primary(self) -> str | None:
        for n in self.nodes():
            if n.reported == n.goal and n.reported in ("primary", "wait_primary", "single"):
                return n.name
        return None

    def _primary_ready(self) -> bool:
        try:
            return any(n.reported in ("single", "primary", "wait_primary") for n in self.nodes())
        except UserError:
            return False

    def is_healthy(self) -> bool:
        try:
            nodes = self.nodes()
        except UserError:
            return False
        states = sorted((n.reported, n.goal) for n in nodes)
        return states == [("primary", "primary"), ("secondary", "secondary")]

    def wait_healthy(self, timeout: float = 180) -> None:
        self._wait(self.is_healthy, timeout, "a primary and a synchronous secondary")

    def lag(self) -> list[dict]:
        """Per standby, as the primary sees it (pg_stat_replication)."""
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=5) as conn:
                return [dict(zip(("application_name", "state", "sync_state", "lag_bytes", "lag_s"), r))
                        for r in conn.execute("""
                    select application_name, state, sync_state,
                           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
                           extract(epoch from replay_lag)::float8
                      from pg_stat_replication order by application_name""").fetchall()]
        except psycopg.Error:
            return []
