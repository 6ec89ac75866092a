"""The HA commands' glue (`up --ha`, `down`, `url`, `ha status`): runner/cli.py keeps one
thin function per command and calls these when the command runs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from runner.errors import UserError
from runner.ha.formation import Formation

if TYPE_CHECKING:
    from rich.console import Console


def up(out: "Console", err: "Console", backup_repo: str | None = None) -> str:
    """Create (first time) or start the local formation, migrate through its multi-host URL,
    record a first health look and schedule the jobs on the primary. Returns the URL."""
    from runner import migrate, schedule

    formation = Formation()
    if formation.exists:
        out.print(f"starting the formation in {formation.root}", highlight=False)
        formation.start()
    else:
        out.print(f"creating a pg_auto_failover formation in {formation.root}", highlight=False)
        formation.create(log=lambda msg: out.print(f"  {msg}", highlight=False))
    url = formation.url()
    migrate.run("upgrade", url, "head")
    from runner.ha import backup

    try:
        out.print(backup.configure(formation, backup_repo), highlight=False)
    except UserError as exc:
        err.print(f"[yellow]warning:[/yellow] no backups: {exc}", highlight=False)
    try:
        applied = schedule.apply(url)  # also stores the first snapshot and sample
    except UserError as exc:
        raise UserError(f"the pg_cron jobs could not be scheduled: {exc}") from None
    out.print(f"pg_cron: {len(applied)} jobs scheduled on the primary "
              "(background workers: they run on whichever node is primary)")
    return url


def running_url() -> str | None:
    """The running local formation's multi-host URL, or None."""
    formation = Formation()
    return formation.url() if formation.running else None


def down() -> bool:
    formation = Formation()
    return formation.exists and formation.stop()


def status(as_json: bool, out: "Console") -> int:
    """Nodes, their states and the replication lag; exit 1 unless a primary and a
    synchronous secondary are both as assigned."""
    import json

    formation = Formation()
    if not formation.running:
        raise UserError(f"no formation is running in {formation.root}: run `smsao-db up --ha`")
    nodes = formation.nodes()
    lag = formation.lag()
    healthy = formation.is_healthy()
    if as_json:
        print(json.dumps({"healthy": healthy, "nodes": [n.as_dict() for n in nodes], "replication": lag},
                         indent=2, default=str))
        return 0 if healthy else 1
    from rich.table import Table

    table = Table(title="pg_auto_failover formation")
    for col in ("node", "address", "role", "reported state", "assigned state", "healthy", "LSN"):
        table.add_column(col)
    for n in nodes:
        table.add_row(n.name, f"{n.host}:{n.port}", n.role, n.reported, n.goal,
                      "yes" if n.healthy else "[red]no[/red]", n.lsn or "")
    out.print(table)
    for r in lag:
        lag_s = "unknown" if r["lag_s"] is None else f"{r['lag_s']:.3f} s"
        out.print(f"standby {r['application_name']}: {r['state']} ({r['sync_state']}), "
                  f"replay lag {r['lag_bytes']} bytes, {lag_s}", highlight=False)
    if not lag:
        out.print("[yellow]no standby is streaming from the primary[/yellow]")
    return 0 if healthy else 1
