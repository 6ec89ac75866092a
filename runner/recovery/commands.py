"""The recovery commands' glue: which database, which kind of backup, and how the result is
printed. The work is in backup.py, drill.py, integrity.py and upgrade_check.py beside this.

runner/cli.py keeps only thin command functions that call these (and one call each in
`up` and `down`), importing this module when they run; it passes the database URL it was
given (after the command, else before it), so nothing here imports the CLI. Output goes
through this module's own consoles, so the CLI's way of making consoles does not matter here."""
from __future__ import annotations

import json
import os

from runner.errors import UserError

_consoles: dict = {}


def out(stderr: bool = False):
    key = "err" if stderr else "out"
    if key not in _consoles:
        from rich.console import Console

        # soft_wrap: one line stays one line when piped (Rich wraps at 80 columns otherwise).
        _consoles[key] = Console(stderr=stderr, soft_wrap=True)
    return _consoles[key]


def given_url(database_url: str | None) -> str | None:
    """The database URL the CLI was given (after or before the command), else DATABASE_URL,
    or None for the embedded database."""
    return database_url or os.environ.get("DATABASE_URL") or None


def after_up(cluster, backup_repo: str | None) -> str:
    """`up`: set up pgBackRest and archiving (a warning, not a failure, when impossible).
    Returns the cluster's URL, which changes when turning archiving on restarts it."""
    from runner.recovery import backup as backups

    try:
        out().print(backups.configure_embedded(cluster, backup_repo), highlight=False)
    except UserError as exc:
        out(True).print(f"[yellow]warning:[/yellow] no backups: {exc}", highlight=False)
        return cluster.url()
    schedule_backups(cluster)
    return cluster.url()


def schedule_backups(cluster) -> None:
    """`up`: the daily backup and weekly drill as pg_cron jobs of the embedded database, and
    one line for what cannot be scheduled."""
    import sys

    from runner import schedule
    from runner.recovery import backup as backups, pgserver, scheduled

    try:
        scheduled.install(cluster, backups.PgBackRest.for_cluster(cluster))
        applied = {name for name, _, _ in schedule.apply(cluster.url())}
    except UserError as exc:
        out(True).print(f"[yellow]warning:[/yellow] backups are not scheduled: {exc}", highlight=False)
        return
    if not {"smsao-backup", "smsao-restore-drill"} <= applied:
        out(True).print("[yellow]warning:[/yellow] backups are not scheduled: the database did not list "
                        "the backup jobs (smsao.recovery_cron_jobs)", highlight=False)
        return
    out().print("pg_cron: backup daily at 02:15 UTC (full weekly, incremental otherwise), restore drill "
                "Sundays at 03:45 UTC, run as the server's OS user", highlight=False)
    runs_python = pgserver.run(["test", "-x", sys.executable], check=False).returncode == 0
    out().print("not scheduled: the drill's verify step (pgTAP), which needs the Python runner"
                + ("" if runs_python else f" ({sys.executable}), out of reach of the server's OS user")
                + "; `smsao-db drill` runs the full drill weekly from cron (docs/runbooks/backup-schedule.md)",
                highlight=False)


def before_down() -> None:
    """`down`: archive the newest WAL first, so the repository alone covers up to the stop."""
    from runner.embedded import Cluster
    from runner.recovery import backup as backups

    try:
        archived = backups.archive_before_stop(Cluster())
        if archived:
            out().print(archived, highlight=False)
    except UserError as exc:
        out(True).print(f"[yellow]warning:[/yellow] the newest WAL was not archived: {exc}", highlight=False)


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _embedded():
    from runner.embedded import Cluster

    return Cluster()


def _formation_or_embedded(database_url: str | None):
    """(formation, the cluster the recovery code works on): the local formation seen as a
    cluster (runner/ha/backup.py) when it runs, else the embedded database; None for a URL."""
    if database_url:
        return None, None
    formation = _formation()
    if formation:
        from runner.ha.backup import FormationTarget

        return formation, FormationTarget(formation)
    return None, _embedded()


def _formation():
    """The local pg_auto_failover formation (`up --ha`) when it runs and the embedded server
    does not: backups and drills then use its pgBackRest stanza (runner/ha/backup.py)."""
    from runner.ha.formation import Formation

    formation = Formation()
    return formation if formation.running and not _embedded().running else None


def backup(database_url: str | None, repo: str | None, full: bool, as_json: bool) -> None:
    from runner.recovery import backup as backups

    console = out()
    database_url = given_url(database_url)
    if database_url and full:
        raise UserError("--full applies to pgBackRest backups of the embedded database; "
                        "a logical backup is always complete")
    formation, cluster = _formation_or_embedded(database_url)
    started = backups.now_utc()
    try:
        if database_url:
            report = backups.backup_logical(database_url, repo)
        elif formation:
            from runner.ha import backup as ha_backup

            report = ha_backup.backup(formation, repo, full)
        else:
            report = backups.backup_embedded(cluster, repo, full)
    except UserError as exc:
        _record(database_url, cluster, "backup", started, False, str(exc))
        raise
    _record(database_url, cluster, "backup", started, True, None, _backup_detail(report, cluster, repo))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    if report["kind"] == "logical":
        console.print(f"[yellow]{report['note']}[/yellow]", highlight=False)
        console.print(f"logical backup {report['file']}: {_human(report['size_bytes'])} in "
                      f"{report['duration_s']:.1f} s ({report['start']} .. {report['stop']})", highlight=False)
        return
    console.print(f"{report['type']} backup {report['label']}: {_human(report['size_bytes'])} of data, "
                  f"{_human(report['repository_bytes'])} stored, {report['backup_duration_s']} s "
                  f"({report['start']} .. {report['stop']}), WAL {report['wal_start']} .. {report['wal_stop']}; "
                  f"repository {report['repository']}", highlight=False)
    if report.get("note"):
        console.print(report["note"], highlight=False)
    console.print(f"the archive covers every point in time up to {report['archive_covers_until']}", highlight=False)


def restore(database_url: str | None, to: str, target_time: str | None, repo: str | None,
            dump: str | None) -> None:
    from runner.recovery import backup as backups

    console = out()
    database_url = given_url(database_url)
    if database_url or dump:
        restored = backups.restore_logical(to, repo, dump, target_time)
    else:
        restored = backups.restore_embedded(_embedded(), to, target_time, repo)
    console.print(f"restored {restored.target} into {restored.data_dir} in {restored.seconds:.1f} s "
                  "(the live database was not touched)", highlight=False)
    console.print("start it with:", highlight=False)
    console.print(f"  {restored.how_to_start}", highlight=False, soft_wrap=True)
    if restored.kind == "pgbackrest":
        console.print("it replays the archived WAL up to the target and then opens for writes; archiving and "
                      "pg_cron are off in the copy (turn them on only once it replaces the live database: "
                      "the last lines of its postgresql.auto.conf)", highlight=False)
    else:
        console.print("it listens on no TCP address, only on the private socket named above", highlight=False)


def drill(database_url: str | None, repo: str | None, keep: bool, as_json: bool) -> int:
    from runner.recovery import backup as backups, drill as drills

    console = out()
    database_url = given_url(database_url)
    formation, cluster = _formation_or_embedded(database_url)
    started = backups.now_utc()
    try:
        if formation:
            from runner.ha import backup as ha_backup

            report = ha_backup.drill(formation, repo, keep)
        else:
            report = drills.run(database_url, repo, keep, embedded=cluster)
    except UserError as exc:
        _record(database_url, cluster, "drill", started, False, str(exc))
        raise
    failed = [f"{s['step']}: {s['detail']}" for s in report["steps"] if s["passed"] is False]
    _record(database_url, cluster, "drill", started, report["passed"],
            "; ".join(failed) or "the drill did not reach its integrity step",
            {"backup": report.get("backup"), "kind": report.get("kind"), "rto_s": report.get("rto_s"),
             "steps": {s["step"]: s["passed"] for s in report["steps"]}})
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        drills.render(report, console)
    return 0 if report["passed"] else 1


def _backup_detail(report: dict, cluster, repo: str | None) -> dict:
    """What a backup's record keeps: its label and type, and for pgBackRest the row counts
    around it (the scheduled drill compares a restored copy with them)."""
    from runner.recovery import backup as backups

    detail = {"label": report.get("label"), "type": report.get("type"), "kind": report.get("kind")}
    if cluster is not None and report.get("kind") == "pgbackrest":
        manifest = backups.PgBackRest.for_cluster(cluster, repo).manifest(report["label"]) or {}
        detail.update(counts_before=manifest.get("counts_before"), counts_after=manifest.get("counts_after"))
    return detail


def _record(database_url: str | None, cluster, kind: str, started, ok: bool, error: str | None,
            detail: dict | None = None) -> None:
    """Every backup and drill, on any server, records its outcome where the health check reads it."""
    from runner.recovery import backup as backups, scheduled

    url = database_url
    if url is None and cluster is not None:
        try:
            url = cluster.url() if cluster.running else None
        except (UserError, OSError):  # not even pg_ctl to ask (the run failed for that, and says so)
            url = None
    warning = scheduled.record(url, kind, started, backups.now_utc(), ok, error, detail)
    if warning and ok:  # a failure already prints its one line
        out(True).print(f"[yellow]warning:[/yellow] the {kind} ran, but {warning}", highlight=False)


def integrity(url: str, as_json: bool) -> int:
    from runner.recovery import integrity as checks

    return checks.main(url, as_json, out())


def upgrade_check(url: str, to_bin: str, keep: bool, as_json: bool) -> int:
    from runner.recovery import upgrade_check as rehearsal

    return rehearsal.main(url, to_bin, keep, as_json, out())
