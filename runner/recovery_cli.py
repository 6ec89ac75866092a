"""The `backup`, `restore` and `drill` commands: which database, which kind of backup, and
how the result is printed. The work is in runner/backup.py and runner/drill.py."""
from __future__ import annotations

import json

from runner.errors import UserError


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


def backup(database_url: str | None, repo: str | None, full: bool, as_json: bool, console) -> None:
    from runner import backup as backups

    if database_url:
        if full:
            raise UserError("--full applies to pgBackRest backups of the embedded database; "
                            "a logical backup is always complete")
        report = backups.backup_logical(database_url, repo)
    else:
        report = backups.backup_embedded(_embedded(), repo, full)
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
            dump: str | None, console) -> None:
    from runner import backup as backups

    if database_url or dump:
        restored = backups.restore_logical(to, repo, dump, target_time)
    else:
        restored = backups.restore_embedded(_embedded(), to, target_time, repo)
    console.print(f"restored {restored.target} into {restored.data_dir} in {restored.seconds:.1f} s "
                  "(the live database was not touched)", highlight=False)
    console.print("start it with:", highlight=False)
    console.print(f"  {restored.how_to_start}", highlight=False, soft_wrap=True)
    if restored.kind == "pgbackrest":
        console.print("it replays the archived WAL up to the target and then opens for writes; archiving is off "
                      "in the copy (turn it on only once it replaces the live database)", highlight=False)


def drill(database_url: str | None, repo: str | None, keep: bool, as_json: bool, console) -> int:
    from runner import drill as drills

    report = drills.run(database_url, repo, keep, embedded=None if database_url else _embedded())
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        drills.render(report, console)
    return 0 if report["passed"] else 1
