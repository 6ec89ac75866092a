"""`smsao-db failover-drill`: lose the primary under write load and measure what it costs.

Clients act as the app (runner.request: `set local role` + JWT claims, as PostgREST does):
each loop calls `request_credits` as a user, then `approve_credit_request` as an admin,
through the formation's multi-host URL, and records every commit the server acknowledged.
The drill then
- kills the primary as a machine dies: SIGKILL to its whole process group (pg_autoctl's
  keeper, the postmaster and every backend), so that nothing restarts it; or, with
  `--switchover`, asks the monitor for a planned switchover (`pg_autoctl perform switchover`);
- reports the time from the kill to the first acknowledged write on the new primary, the
  acknowledged commits missing afterwards (synchronous replication: must be 0), integrity
  on the new primary, the scheduler's gap (pg_cron stores a performance sample on the new
  primary) and the time for the old primary to rejoin as a standby.

The load is bounded in count (operations per client) and in time."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

import psycopg

from runner.errors import UserError
from runner.ha.formation import Formation
from runner.request import Caller, request

REQUESTS_PER_USER = 5      # request_credits: financial_transaction, 5 per 60 min per user
APPROVALS_PER_ADMIN = 50   # approve_credit_request: admin_access, 60 per minute per admin
SCHEDULER_DEADLINE_S = 90  # CONTRACT: the new primary stores a performance sample within 90 s


@dataclass
class Ack:
    kind: str        # "request" or "approval"
    request_id: str
    at: float        # time.monotonic() when the commit returned
    port: int        # the node that acknowledged it


@dataclass
class Client:
    """One app client: its own users and admins (their rate limits are per caller)."""
    url: str
    users: list[uuid.UUID]
    admins: list[uuid.UUID]
    max_ops: int
    deadline: float
    stop: threading.Event
    acks: list[Ack] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0

    def _connect(self) -> psycopg.Connection | None:
        try:
            return psycopg.connect(self.url, connect_timeout=2)
        except psycopg.Error:
            return None

    def _count(self, exc: psycopg.Error) -> None:
        key = getattr(exc, "sqlstate", None) or type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1

    def run(self) -> None:
        conn = None
        ops = 0
        while ops < self.max_ops and time.monotonic() < self.deadline and not self.stop.is_set():
            if conn is None or conn.closed:
                conn = self._connect()
                if conn is None:
                    self.reconnects += 1
                    time.sleep(0.05)
                    continue
            user = Caller.user(self.users[ops // REQUESTS_PER_USER])
            admin = Caller.user(self.admins[ops // APPROVALS_PER_ADMIN])
            ops += 1
            try:
                rid = request(conn, user, "select public.request_credits(%s)", [1])[0][0]
                self.acks.append(Ack("request", str(rid), time.monotonic(), conn.info.port))
                request(conn, admin, "select public.approve_credit_request(%s)", [rid])
                self.acks.append(Ack("approval", str(rid), time.monotonic(), conn.info.port))
            except psycopg.OperationalError as exc:  # the server went away: outcome unknown
                self._count(exc)
                conn.close()
            except psycopg.Error as exc:
                self._count(exc)
        if conn is not None:
            conn.close()


@dataclass
class DrillReport:
    mode: str
    old_primary: str
    new_primary: str | None
    clients: int
    acknowledged_commits: int
    acknowledged_before_kill: int
    acknowledged_on_new_primary: int
    lost_acknowledged_commits: int
    first_write_after_kill_s: float | None
    integrity_ok: bool | None
    integrity_failed: list[str]
    scheduler_gap_s: float | None
    scheduler_resumed_after_s: float | None
    rejoin_s: float | None
    standbys_after_failover: int | None
    standbys_after_rejoin: int | None
    standbys_check_after_failover: str | None
    standbys_check_after_rejoin: str | None
    client_errors: dict[str, int]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _prepare_callers(url: str, clients: int, ops: int) -> list[tuple[list, list]]:
    """Active users and admins for each client, as the auth service would create them."""
    per_users = -(-ops // REQUESTS_PER_USER)
    per_admins = -(-ops // APPROVALS_PER_ADMIN)
    out = []
    with psycopg.connect(url, connect_timeout=10) as conn:
        for _ in range(clients):
            users = [uuid.uuid4() for _ in range(per_users)]
            admins = [uuid.uuid4() for _ in range(per_admins)]
            everyone = users + admins
            conn.execute("insert into auth.users (id, email) select u, u::text || '@drill.invalid' "
                         "from unnest(%s::uuid[]) u", [everyone])
            conn.execute("update public.profiles set status = 'active' where user_id = any(%s)", [everyone])
            conn.execute("insert into public.user_roles (user_id, role) select u, 'admin' "
                         "from unnest(%s::uuid[]) u", [admins])
            out.append((users, admins))
        conn.commit()
    return out


def _newest_sample(url: str) -> float | None:
    """Epoch seconds of the newest performance sample (pg_cron's every-minute job)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("select extract(epoch from max(sampled_at))::float8 "
                            "from public.performance_samples").fetchone()[0]


def _standbys(url: str) -> tuple[int | None, str | None]:
    """The health check's replication_standbys and its check, as the primary sees them."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            report = conn.execute("select public.production_system_health_check()").fetchone()[0]
    except psycopg.Error:
        return None, None
    return report["metrics"].get("replication_standbys"), report["checks"].get("replication_standbys")


def _missing(url: str, acks: list[Ack]) -> int:
    requested = sorted({a.request_id for a in acks if a.kind == "request"})
    approved = sorted({a.request_id for a in acks if a.kind == "approval"})
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute("""
            select (select count(*) from unnest(%(req)s::uuid[]) r
                     where not exists (select from public.credit_requests c where c.id = r))
                 + (select count(*) from unnest(%(appr)s::uuid[]) r
                     where not exists (select from public.credit_requests c
                                        where c.id = r and c.status = 'approved'))""",
                            {"req": requested, "appr": approved}).fetchone()[0]


def kill_node(formation: Formation, name: str) -> None:
    """The machine dies: SIGKILL to the node's process group (keeper, postmaster, backends).
    Only processes this runner started (`start_node` gives each keeper its own session)."""
    pid = formation.keeper_pid(name)
    try:
        group = os.getpgid(pid) if pid else None
    except ProcessLookupError:
        group = None
    if group is None:
        raise UserError(f"{name}'s pg_autoctl is not running (see {formation.log_file(name)}): nothing to kill")
    os.killpg(group, signal.SIGKILL)
    postmaster = formation.postmaster_pid(name)
    if postmaster:  # started by an earlier runner, in another group: kill it too
        os.kill(postmaster, signal.SIGKILL)


def run(*, switchover: bool = False, clients: int = 4, ops_per_client: int = 400,
        max_seconds: float = 60, log=lambda msg: None, formation: Formation | None = None) -> DrillReport:
    from runner.recovery import integrity

    formation = formation or Formation()
    if not formation.running:
        raise UserError(f"no formation is running in {formation.root}: run `smsao-db up --ha`")
    if not formation.is_healthy():
        raise UserError("the formation is not healthy (a primary and a synchronous secondary, as assigned): "
                        "see `smsao-db ha status`")
    url = formation.url()
    old = formation.primary()
    old_port = formation.ports[old]
    problems: list[str] = []

    callers = _prepare_callers(url, clients, ops_per_client)
    sample_before = _newest_sample(url)
    stop = threading.Event()
    started = time.monotonic()
    workers = [Client(url, users, admins, ops_per_client, started + max_seconds, stop) for users, admins in callers]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    _wait_for(lambda: sum(len(w.acks) for w in workers) >= 10 * clients, 20)

    log(f"{'switching over from' if switchover else 'killing'} {old} under load from {clients} clients")
    kill_at, kill_epoch = time.monotonic(), time.time()
    switch_thread = None
    if switchover:
        switch_thread = threading.Thread(target=lambda: formation.autoctl(
            "perform", "switchover", "--pgdata", formation.data_dir("monitor"), check=False, timeout=120),
            daemon=True)
        switch_thread.start()
    else:
        kill_node(formation, old)

    def first_new_write() -> float | None:
        after = [a.at for w in workers for a in list(w.acks) if a.at > kill_at and a.port != old_port]
        return min(after) if after else None

    _wait_for(lambda: first_new_write() is not None or not any(t.is_alive() for t in threads), max_seconds)
    first = first_new_write()
    if first is not None:  # keep writing a little on the new primary
        _wait_for(lambda: not any(t.is_alive() for t in threads), 2)
    stop.set()
    for t in threads:
        t.join(30)
    if switch_thread:
        switch_thread.join(120)
    acks = [a for w in workers for a in w.acks]
    new = formation.primary() if first is not None else None
    log(f"new primary: {new or 'none'}; checking every acknowledged commit")

    lost = _missing(url, acks) if first is not None else None
    if first is None:
        problems.append("no write succeeded on a new primary")
    elif lost:
        problems.append(f"{lost} acknowledged commits are missing")

    standbys_after_failover, check_after_failover = _standbys(url) if not switchover else (None, None)
    integrity_ok, integrity_failed = None, []
    if first is not None:
        results = integrity.run(url)
        integrity_failed = [r.name for r in results if not r.passed]
        integrity_ok = not integrity_failed
        if integrity_failed:
            problems.append("integrity broken on the new primary: " + ", ".join(integrity_failed))

    rejoin_s = None
    if first is not None:
        if not switchover:
            log(f"restarting {old}: it must rejoin as a standby")
            formation.start_node(old)
        try:
            formation.wait_healthy(timeout=180)
            rejoin_s = round(time.monotonic() - kill_at, 2)
        except UserError as exc:
            problems.append(f"{old} did not rejoin as a standby: {exc}")
    standbys_after_rejoin, check_after_rejoin = _standbys(url)

    gap = resumed = None
    if first is not None:
        log("waiting for pg_cron to store a performance sample on the new primary")
        deadline = kill_at + SCHEDULER_DEADLINE_S + 15
        while time.monotonic() < deadline:
            newest = _newest_sample(url)
            if newest is not None and newest > kill_epoch:
                resumed = round(newest - kill_epoch, 2)
                gap = round(newest - sample_before, 2) if sample_before else None
                break
            time.sleep(1)
        if resumed is None or resumed > SCHEDULER_DEADLINE_S:
            problems.append(f"pg_cron stored no performance sample on the new primary within {SCHEDULER_DEADLINE_S} s")

    errors: dict[str, int] = {}
    for w in workers:
        for k, v in w.errors.items():
            errors[k] = errors.get(k, 0) + v
    return DrillReport(
        mode="switchover" if switchover else "kill -9",
        old_primary=old, new_primary=new, clients=clients,
        acknowledged_commits=len(acks),
        acknowledged_before_kill=sum(1 for a in acks if a.at <= kill_at),
        acknowledged_on_new_primary=sum(1 for a in acks if a.port != old_port),
        lost_acknowledged_commits=lost if lost is not None else -1,
        first_write_after_kill_s=round(first - kill_at, 3) if first is not None else None,
        integrity_ok=integrity_ok, integrity_failed=integrity_failed,
        scheduler_gap_s=gap, scheduler_resumed_after_s=resumed, rejoin_s=rejoin_s,
        standbys_after_failover=standbys_after_failover, standbys_after_rejoin=standbys_after_rejoin,
        standbys_check_after_failover=check_after_failover, standbys_check_after_rejoin=check_after_rejoin,
        client_errors=errors, problems=problems)


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def render(report: DrillReport, out) -> None:
    def s(v, unit=" s"):
        return "n/a" if v is None else f"{v}{unit}"

    out.print(f"failover drill ({report.mode}): {report.old_primary} -> {report.new_primary or 'none'}", highlight=False)
    out.print(f"  first write on the new primary: {s(report.first_write_after_kill_s)} after the "
              f"{'switchover began' if report.mode == 'switchover' else 'kill'}", highlight=False)
    out.print(f"  acknowledged commits: {report.acknowledged_commits} ({report.acknowledged_on_new_primary} "
              f"on the new primary), lost: {report.lost_acknowledged_commits}", highlight=False)
    out.print(f"  integrity on the new primary: "
              f"{'ok' if report.integrity_ok else 'n/a' if report.integrity_ok is None else 'BROKEN'}",
              highlight=False)
    out.print(f"  scheduler: first sample on the new primary {s(report.scheduler_resumed_after_s)} after the kill "
              f"(gap between samples {s(report.scheduler_gap_s)})", highlight=False)
    out.print(f"  old primary back as a standby: {s(report.rejoin_s)} after the kill; the health check's "
              f"replication_standbys right after the failover: {s(report.standbys_after_failover, '')} "
              f"({report.standbys_check_after_failover or 'n/a'}), after the rejoin: "
              f"{s(report.standbys_after_rejoin, '')} ({report.standbys_check_after_rejoin or 'n/a'})",
              highlight=False)
    if report.client_errors:
        out.print(f"  client errors (by SQLSTATE, outcome unknown, never counted as acknowledged): "
                  f"{report.client_errors}", highlight=False)
    for p in report.problems:
        out.print(f"[red]FAIL[/red] {p}", highlight=False)
    if report.passed:
        out.print("[green]drill passed[/green]: nothing acknowledged was lost")
