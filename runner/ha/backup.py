"""Backups of the local formation: pgBackRest, as for the embedded server (runner/recovery/backup.py),
with both nodes in one stanza and `backup-standby=y`, so the files are copied from the
standby while it is healthy (the primary only serves the start/stop calls and the WAL).

Each node archives its own WAL with `pgbackrest archive-push`, its own data directory named
on its archive_command (a relative `%p` is resolved against pg1-path); `archive_mode = on`
archives only on the primary, so after a failover the new primary takes over archiving.

runner/recovery/backup.py and drill.py work on "a cluster" (home, data_dir, port, url(),
running); FormationTarget is the formation seen that way: its home is the formation's
folder (pgbackrest.conf, run/), its data directory and port the current primary's."""
from __future__ import annotations

from pathlib import Path

from runner.errors import UserError
from runner.ha.formation import NODES, Formation
from runner.recovery import backup as backups, pgserver


class FormationTarget:
    def __init__(self, formation: Formation):
        self.formation = formation
        self.home = formation.root

    def _primary(self) -> str:
        name = self.formation.primary()
        if not name:
            raise UserError("the formation has no primary right now: see `smsao-db ha status`")
        return name

    @property
    def data_dir(self) -> Path:
        return self.formation.data_dir(self._primary())

    @property
    def port(self) -> int:
        return self.formation.ports[self._primary()]

    @property
    def running(self) -> bool:
        return self.formation.running

    def url(self, dbname: str = "smsao") -> str:
        return self.formation.url(dbname)


class FormationPgBackRest(backups.PgBackRest):
    """One stanza for both nodes: pg1 is the current primary, pg2 the standby."""

    formation: Formation | None = None

    def write_conf(self) -> None:
        super().write_conf()
        f = self.formation
        primary = f.primary()
        standby = next(n for n in NODES if n != primary)
        with open(self.conf, "a") as out:
            out.write("\n".join([
                f"pg1-port={f.ports[primary]}",
                f"pg2-path={f.data_dir(standby)}",
                f"pg2-socket-path={f.socket_dir}",
                f"pg2-port={f.ports[standby]}",
                f"pg2-user={pgserver.DB_SUPERUSER}",
                # Copy the files from the standby while it is healthy; pgBackRest falls back
                # to an error, not to the primary, when none is: `backup` then says so.
                "backup-standby=y",
                "",
            ]))

    def archive_command_for(self, data_dir: Path) -> str:
        return (f"{backups.require_pgbackrest()} --config={self.conf} --stanza={backups.STANZA} "
                f"--pg1-path={data_dir} archive-push %p")


def _pgbackrest(formation: Formation, repo: str | Path | None = None) -> FormationPgBackRest:
    pb = FormationPgBackRest(formation.root, formation.data_dir(formation.primary() or NODES[0]),
                             Path(repo).resolve() if repo else formation.root / "backup-repo")
    pb.formation = formation
    return pb


def node_archive_settings(formation: Formation, name: str) -> dict[str, str]:
    """postgresql.conf lines for one node (appended before its keeper starts it)."""
    pb = _pgbackrest(formation)
    command = pb.archive_command_for(formation.data_dir(name)).replace("'", "''")
    return {"archive_mode": "on", "archive_command": f"'{command}'",
            "archive_timeout": backups.ARCHIVE_TIMEOUT}


def configure(formation: Formation, repo: str | Path | None = None) -> str:
    """Stanza and repository for the (healthy) formation; idempotent. Rewrites the
    configuration for the current roles (pg1 = primary) before every use."""
    backups.require_pgbackrest()
    pb = _pgbackrest(formation, repo)
    if repo is None and pb.conf.exists():
        pb.repo = pb.configured_repo()
    pgserver.repository_dir(pb.repo)
    pb.write_conf()
    target = FormationTarget(formation)
    pb.run("stanza-create", f"--pg1-port={target.port}", what="creating the backup stanza (pgbackrest stanza-create)")
    pb.run("check", f"--pg1-port={target.port}", what="checking WAL archiving (pgbackrest check)")
    return f"backups: pgBackRest stanza '{backups.STANZA}' in {pb.repo}, from the standby, WAL archived continuously"


def backup(formation: Formation, repo: str | Path | None = None, full: bool = False) -> dict:
    if not formation.running:
        raise UserError(f"no formation is running in {formation.root}: run `smsao-db up --ha`")
    pb = _pgbackrest(formation)
    if not pb.conf.exists():
        raise UserError("backups are not configured for the formation: run `smsao-db up --ha`")
    pb.repo = pb.configured_repo()
    pb.write_conf()  # the roles may have changed since: pg1 is the primary now
    report = backups.backup_embedded(FormationTarget(formation), repo, full)
    report["from_standby"] = True
    return report


def drill(formation: Formation, repo: str | None, keep: bool) -> dict:
    from runner.recovery import drill as drills

    pb = _pgbackrest(formation)
    if pb.conf.exists():
        pb.repo = pb.configured_repo()
        pb.write_conf()
    return drills.run(None, repo, keep, embedded=FormationTarget(formation))
