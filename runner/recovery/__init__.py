"""Recovery: pgBackRest and logical backups, point-in-time restore (backup.py), the restore
drill (drill.py), the integrity checks (integrity.py), the major-version upgrade rehearsal
(upgrade_check.py), the short-lived scratch servers they all start (pgserver.py), the
embedded database's scheduled backups and drills (scheduled.py), and the commands' glue
that runner/cli.py calls (commands.py)."""
