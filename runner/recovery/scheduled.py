"""The embedded database's own backup schedule (issue 15, item 6): the program its pg_cron
jobs run, and the record of every backup and drill.

pg_cron runs `call smsao.run_scheduled_backup()` daily and `call smsao.run_scheduled_drill()`
weekly (sql/functions/backup_jobs.sql) as the superuser that scheduled them; those run
`COPY ... FROM PROGRAM` of the script written here, which runs as the server's OS user.
That user cannot be assumed to run this Python (under root the interpreter lives in /root,
which `postgres` cannot enter), so the script uses only pgBackRest, pg_ctl and psql:
  backup full|incr PORT   pgBackRest backup + check; prints the repository's info (JSON)
  manifest LABEL          stdin -> <repo>/smsao/LABEL.json (the row counts around the backup)
  drill LABEL             restore LABEL into a scratch cluster under the home, recovered to
                          the backup's end, started on a private socket with pg_cron off;
                          prints its row counts and the integrity checks' results
Each prints `key<TAB>value` lines (status ok|error, error, ...) and exits 0: the SQL side
reads the outcome and records it. The scheduled drill leaves out `verify` (the pgTAP
contract runs from Python): `smsao-db drill` is the full one.
"""
from __future__ import annotations

import shlex
import shutil
from datetime import datetime
from pathlib import Path

from runner.db import connect
from runner.errors import UserError
from runner.recovery import pgserver

SCRIPT_NAME = "scheduled-recovery.sh"
INTEGRITY_NAME = "scheduled-integrity.sql"
DRILL_SCOPE_NOTE = ("the weekly restore drill runs restore, start, row counts and integrity; its verify "
                    "step needs the Python runner, which the server's OS user cannot run here: "
                    "run `smsao-db drill` for the full drill (docs/runbooks/backup-schedule.md)")


def integrity_sql() -> str:
    """The integrity checks of runner/recovery/integrity.py as one psql script: a row per check
    (name, violations, first violation), amcheck last."""
    from runner.recovery import integrity

    parts = ["-- Written by smsao-db up (runner/recovery/scheduled.py) from runner/recovery/integrity.py.",
             "\\set ON_ERROR_STOP off"]
    for check in integrity.CHECKS:
        parts.append(f"select '{check.name}', count(*), min(v) from ({check.query.strip()}) as violations(v);")
    parts.append("create schema if not exists smsao_amcheck;")
    parts.append("create extension if not exists amcheck with schema smsao_amcheck;")
    schemas = ", ".join(f"'{s}'" for s in integrity.SCHEMAS)
    parts.append(f"""select 'btree_indexes_amcheck', 0, count(smsao_amcheck.bt_index_check(ic.oid)::text)::text
from pg_index i join pg_class ic on ic.oid = i.indexrelid join pg_namespace n on n.oid = ic.relnamespace
join pg_am am on am.oid = ic.relam
where am.amname = 'btree' and n.nspname in ({schemas}) and i.indisvalid and i.indisready and ic.relpersistence <> 't'
  and ic.relkind = 'i';""")  # a partitioned table's index has no pages (its partitions' do)
    return "\n".join(parts) + "\n"


def script(pb, bindir: Path, home: Path, integrity_file: Path) -> str:
    """The program the jobs run (see the module's docstring)."""
    q = shlex.quote
    return f"""#!/bin/sh
# Written by smsao-db up (runner/recovery/scheduled.py); rewritten by every `up`.
# Run by the embedded database's scheduled jobs (pg_cron, COPY ... FROM PROGRAM) as the
# server's OS user. Prints key<TAB>value lines and exits 0; the SQL side records the outcome.
PGBACKREST={q(shutil.which("pgbackrest") or "pgbackrest")}
CONF={q(str(pb.conf))}
STANZA={q("smsao")}
BINDIR={q(str(bindir))}
HOME_DIR={q(str(home))}
META_DIR={q(str(pb.meta_dir))}
INTEGRITY_SQL={q(str(integrity_file))}
TAB=$(printf '\\t')
umask 077

say() {{ printf '%s\\t%s\\n' "$1" "$(printf '%s' "$2" | tr -d '\\001\\002' | tr '\\n\\t' '  ')"; }}
fail() {{ say status error; say error "$1"; exit 0; }}
reason() {{ grep -E 'ERROR|FATAL|PANIC' "$1" 2>/dev/null | tail -n 1 | sed -e 's/^.*ERROR: \\[[0-9]*\\]: //'; }}
pgbr() {{ "$PGBACKREST" --config="$CONF" --stanza="$STANZA" "$@"; }}
label_ok() {{ printf '%s' "$1" | grep -Eq '^[0-9]{{8}}-[0-9]{{6}}F(_[0-9]{{8}}-[0-9]{{6}}[DI])?$'; }}

case "$1" in
backup)
  case "$2" in full|incr) ;; *) fail "backup: the type must be full or incr" ;; esac
  case "$3" in ''|*[!0-9]*) fail "backup: the port must be a number" ;; esac
  log=$(mktemp "$HOME_DIR/pgbackrest/backup-XXXXXX.log") || fail "cannot create a log file in $HOME_DIR/pgbackrest"
  if ! pgbr --pg1-port="$3" --type="$2" backup >"$log" 2>&1; then
    why=$(reason "$log"); rm -f "$log"; fail "pgbackrest backup failed: ${{why:-see $HOME_DIR/pgbackrest/log}}"
  fi
  # Switch WAL and wait until it is archived: the archive then covers the backup's end.
  pgbr --pg1-port="$3" check >"$log" 2>&1 || {{ why=$(reason "$log"); rm -f "$log"; fail "pgbackrest check failed: $why"; }}
  info=$(pgbr --output=json info 2>"$log") || {{ why=$(reason "$log"); rm -f "$log"; fail "pgbackrest info failed: $why"; }}
  rm -f "$log"
  say status ok
  say info "$info"
  ;;
manifest)
  label_ok "$2" || fail "manifest: bad label"
  mkdir -p "$META_DIR" && chmod 750 "$META_DIR" || fail "cannot create $META_DIR"
  (umask 027; cat > "$META_DIR/$2.json") || fail "cannot write $META_DIR/$2.json"
  say status ok
  ;;
drill)
  label_ok "$2" || fail "drill: bad label"
  sock=$(mktemp -d /tmp/smsao-sock-XXXXXX) || fail "mktemp failed"
  scratch=$(mktemp -d "$HOME_DIR/drill-XXXXXX") || {{ rmdir "$sock"; fail "cannot create a scratch directory in $HOME_DIR"; }}
  trap '"$BINDIR/pg_ctl" -D "$scratch/pgdata" -m immediate -w stop >/dev/null 2>&1; rm -rf "$scratch" "$sock"' EXIT
  started=$(date +%s)
  if ! pgbr --pg1-path="$scratch/pgdata" --set="$2" --type=immediate --target-action=promote \\
       --archive-mode=off restore >"$scratch/restore.log" 2>&1; then
    fail "restore: $(reason "$scratch/restore.log")"
  fi
  cat >> "$scratch/pgdata/postgresql.auto.conf" <<SETTINGS
# smsao-db scheduled drill: a private scratch copy; pg_cron must not run the live jobs here
listen_addresses = ''
unix_socket_directories = '$sock'
unix_socket_permissions = 0700
cron.database_name = 'template1'
SETTINGS
  printf 'local all all trust\\n' > "$scratch/pgdata/pg_hba.conf"
  if ! "$BINDIR/pg_ctl" -D "$scratch/pgdata" -l "$scratch/server.log" -w -t 600 -o "-p 5432" start >/dev/null 2>&1; then
    fail "start: $(reason "$scratch/server.log")"
  fi
  sql() {{ "$BINDIR/psql" -X -q -A -t -F "$TAB" -h "$sock" -p 5432 -U postgres -d smsao "$@"; }}
  tries=0
  until [ "$(sql -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    tries=$((tries + 1)); [ $tries -gt 3000 ] && fail "the restored copy was still recovering after 600 s"
    sleep 0.2
  done
  say rto_s $(( $(date +%s) - started ))
  counts=$(sql -v ON_ERROR_STOP=1 -c 'select smsao.package_table_counts()' 2>&1) || fail "counting rows: $counts"
  say counts "$counts"
  results=$(sql -f "$INTEGRITY_SQL" 2>"$scratch/integrity.err")
  errors=$(grep -E 'ERROR' "$scratch/integrity.err" | head -n 3)
  say integrity_checks "$(printf '%s\\n' "$results" | grep -c .)"
  failed=$(printf '%s\\n' "$results" | awk -F "$TAB" 'NF >= 2 && $2 != 0 {{ n++ }} END {{ print n + 0 }}')
  detail=$(printf '%s\\n' "$results" | awk -F "$TAB" 'NF >= 2 && $2 != 0 {{ printf "%s: %s; ", $1, $3 }}')
  if [ -n "$errors" ]; then failed=$((failed + 1)); detail="$detail$errors"; fi
  say integrity_failed "$failed"
  say integrity_detail "$detail"
  say status ok
  ;;
*)
  fail "unknown command: $1"
  ;;
esac
exit 0
"""


def install(cluster, pb) -> Path:
    """Write the program and its integrity checks beside pgBackRest's configuration, name it
    in the database, and say what pg_cron will run (one line for `up`)."""
    from runner.embedded import find_bindir

    work = Path(cluster.home) / "pgbackrest"
    pgserver.private_dir(work, 0o750)
    program = work / SCRIPT_NAME
    checks = work / INTEGRITY_NAME
    checks.write_text(integrity_sql())
    pgserver.give_to_owner(checks, 0o640)
    program.write_text(script(pb, find_bindir(), Path(cluster.home).resolve(), checks))
    pgserver.give_to_owner(program, 0o750)
    with connect(cluster.url(), autocommit=True) as conn:
        if not conn.execute("select to_regprocedure('smsao.configure_scheduled_recovery(text)')").fetchone()[0]:
            raise UserError("the database predates scheduled backups: run `smsao-db migrate upgrade`")
        conn.execute("select smsao.configure_scheduled_recovery(%s)", [str(program)])
    return program


# -- the record of every backup and drill --------------------------------------------------
def record(url: str | None, kind: str, started: datetime, finished: datetime, ok: bool,
           error: str | None, detail: dict | None = None) -> str | None:
    """Record one run in smsao.recovery_runs (the health check's backup_age_s and
    restore_drill_age_s). Returns a warning line when it could not be recorded."""
    import json

    import psycopg

    if not url:
        return "its outcome was not recorded: the database is not running"
    try:
        with connect(url, autocommit=True) as conn:
            if not conn.execute("select to_regprocedure('smsao.record_recovery_run(text, timestamptz, "
                                "timestamptz, boolean, text, jsonb, text)')").fetchone()[0]:
                return "its outcome was not recorded: the database predates it (run `smsao-db migrate upgrade`)"
            conn.execute("select smsao.record_recovery_run(%s, %s, %s, %s, %s, %s::jsonb, 'runner')",
                         [kind, started, finished, ok, None if ok else (error or "failed"),
                          json.dumps(detail or {}, default=str)])
    except (UserError, OSError) as exc:
        return f"its outcome was not recorded: {exc}"
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"its outcome was not recorded: {first}"
    return None
