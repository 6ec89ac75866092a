"""`smsao-db verify`: run the package's pgTAP test files (sql/tests) against a database.

The checks themselves are SQL: one pgTAP file per area, each `begin; select plan(n); ...
select * from finish(); rollback;`, plain SQL that `pg_prove` and `supabase test db` run
too. Each file creates what it needs inside its transaction (pgTAP when the database has
none, the helper schema `smsao_test`, its users and rows) and the rollback removes it all.
This module only executes the files, one after the other on one connection, and reads the
TAP lines their selects return; the assertions are pgTAP's.

Needs a login that may `set role` to anon, authenticated and service_role (a superuser,
Supabase's `postgres`, or the schema owner with those memberships), and pgTAP installed in
the database or available to `create extension` (Debian `postgresql-15-pgtap`).
"""
from __future__ import annotations

import glob
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import generators, pq

from runner.db import connect
from runner.errors import UserError
from runner.resources import TESTS_DIR

APP_ROLES = ("anon", "authenticated", "service_role")
TAP_LINE = re.compile(r"^(?P<not>not )?ok (?P<number>\d+)(?: - (?P<description>.*?))?"
                      r"(?:\s+# (?P<directive>SKIP|TODO)\b.*)?$", re.I)
PLAN_LINE = re.compile(r"^1\.\.(?P<count>\d+)")
# pgTAP's install script as Debian ships it (pure SQL: no shared library), for servers
# that have no pgTAP of their own, such as the PostgreSQL 18 binaries of an upgrade rehearsal.
PGTAP_SCRIPTS = "/usr/share/postgresql/*/extension/pgtap--*.sql"
PGTAP_SCRIPT_NAME = re.compile(r"pgtap--(\d+(?:\.\d+)*)\.sql$")


@dataclass
class Assertion:
    number: int
    passed: bool
    description: str
    skipped: bool = False
    diagnostics: list[str] = field(default_factory=list)


@dataclass
class FileResult:
    """One test file's run: its TAP lines, and what they say."""
    name: str
    planned: int | None = None
    assertions: list[Assertion] = field(default_factory=list)
    tap: list[str] = field(default_factory=list)
    died: str | None = None  # the error that stopped the file before its end
    seconds: float = 0.0

    @property
    def failures(self) -> list[Assertion]:
        return [a for a in self.assertions if not a.passed]

    @property
    def passed(self) -> bool:
        return (self.died is None and not self.failures
                and self.planned is not None and self.planned == len(self.assertions))

    @property
    def detail(self) -> str:
        """One line: what went wrong, or how many passed."""
        problems = [f"#{a.number} {a.description}" for a in self.failures]
        if self.died:
            problems.append(f"died: {self.died}")
        elif self.planned is None:
            problems.append("no plan")
        elif self.planned != len(self.assertions):
            problems.append(f"planned {self.planned} tests but ran {len(self.assertions)}")
        return "; ".join(problems) if problems else f"{len(self.assertions)} tests pass"


def test_files(extra: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The package's test files in order (or those named in `only`), then the user's own
    (`--extra DIR`)."""
    files = [f for f in sorted(TESTS_DIR.glob("*.sql")) if only is None or f.name in only]
    if extra is not None:
        if not extra.is_dir():
            raise UserError(f"--extra {extra}: not a directory")
        mine = sorted(extra.glob("*.sql"))
        if not mine:
            raise UserError(f"--extra {extra}: no *.sql test files there")
        files += mine
    return files


def parse_tap(result: FileResult, line: str) -> None:
    result.tap.append(line)
    if m := PLAN_LINE.match(line):
        result.planned = int(m["count"])
    elif m := TAP_LINE.match(line):
        skipped = (m["directive"] or "").upper() in ("SKIP", "TODO")
        result.assertions.append(Assertion(int(m["number"]), m["not"] is None or skipped,
                                           (m["description"] or "").strip(), skipped))
    elif line.startswith("#") and result.assertions:
        result.assertions[-1].diagnostics.append(line.lstrip("# ").rstrip())


def _error_line(res: pq.PGresult) -> str:
    message = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(errors="replace")
    state = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    return f"{message} (SQLSTATE {state})" if state else message


def local_pgtap_script() -> Path | None:
    """The newest full pgTAP install script on this machine, if any."""
    found = [(tuple(int(n) for n in m[1].split(".")), Path(p)) for p in glob.glob(PGTAP_SCRIPTS)
             if (m := PGTAP_SCRIPT_NAME.search(p))]
    return max(found)[1] if found else None


def _results(conn: psycopg.Connection, text: bytes) -> list[pq.PGresult]:
    """Send `text` as one simple query (several statements, as psql sends a file) and
    return every statement's result; an error stops the rest, as in psql."""
    conn.pgconn.send_query(text)
    return conn.wait(generators.execute(conn.pgconn))


def run_file(conn: psycopg.Connection, path: Path, pgtap_script: Path | None = None) -> FileResult:
    """Run one test file and read its TAP lines: the rows of its selects. An error stops the
    file there; its transaction is then rolled back. With `pgtap_script`, pgTAP is loaded
    from it into the file's own transaction first (schema smsao_test_pgtap), for a server
    that cannot `create extension pgtap`."""
    result = FileResult(path.name)
    started = time.perf_counter()
    results = []
    if pgtap_script is not None:
        loaded = _results(conn, b"begin; create schema smsao_test_pgtap; set local search_path = smsao_test_pgtap;\n"
                          + pgtap_script.read_bytes())
        failed = [res for res in loaded if res.status == pq.ExecStatus.FATAL_ERROR]
        if failed:
            result.died = f"loading pgTAP from {pgtap_script}: {_error_line(failed[0])}"
    if result.died is None:
        results = _results(conn, path.read_bytes())
    for res in results:
        if res.status == pq.ExecStatus.TUPLES_OK:
            for row in range(res.ntuples):
                value = res.get_value(row, 0)
                for line in (value or b"").decode().splitlines():
                    if line.strip():
                        parse_tap(result, line)
        elif res.status == pq.ExecStatus.FATAL_ERROR:
            result.died = _error_line(res)
    if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        conn.execute("rollback")  # a file that died, or one that forgot its rollback
    result.seconds = time.perf_counter() - started
    return result


def pgtap_on_server(conn: psycopg.Connection) -> bool:
    """Whether pgTAP is installed in the database, or ready for `create extension`."""
    return conn.execute("select exists (select from pg_extension where extname = 'pgtap') "
                        "or exists (select from pg_available_extensions where name = 'pgtap')").fetchone()[0]


def preflight(conn: psycopg.Connection) -> Path | None:
    """Refuse, in one line, a database or login the files cannot run on. Returns the local
    pgTAP script to load when the server has no pgTAP to create."""
    missing = [r for (r,) in conn.execute(
        "select r from unnest(%s::text[]) r where not exists (select from pg_roles where rolname = r)",
        [list(APP_ROLES)]).fetchall()]
    if missing:
        raise UserError(f"this is not an SMS AO database: roles missing: {', '.join(missing)}")
    cannot = [r for (r,) in conn.execute(
        "select r from unnest(%s::text[]) r where not pg_has_role(current_user, r, 'MEMBER')",
        [list(APP_ROLES)]).fetchall()]
    if cannot:
        user = conn.execute("select current_user").fetchone()[0]
        raise UserError(f"verify acts as the app's roles, but {user} may not `set role` to "
                        f"{', '.join(cannot)}: connect as a superuser or the schema owner")
    if pgtap_on_server(conn):
        return None
    script = local_pgtap_script()
    if script is None:
        raise UserError("pgTAP is not installed on the database server: install it there "
                        "(Debian/Ubuntu: apt-get install postgresql-15-pgtap) and run verify again")
    return script


def run(url: str, extra: Path | None = None, only: list[str] | None = None) -> list[FileResult]:
    """Every test file against `url`, each in its own transaction, all rolled back."""
    files = test_files(extra, only)
    with connect(url, autocommit=True) as conn:
        pgtap_script = preflight(conn)
        return [run_file(conn, path, pgtap_script) for path in files]


# The name drill.py and upgrade_check.py call: a list of results with name, passed, detail.
verify = run


def tap_stream(results: list[FileResult]) -> str:
    """One TAP document: each file a subtest (TAP 14, as Test::More prints them)."""
    lines = [f"1..{len(results)}"]
    for i, r in enumerate(results, 1):
        lines.append(f"    # Subtest: {r.name}")
        lines += [f"    {line}" for line in r.tap]
        if r.died:
            lines.append(f"    # died: {r.died}")
        lines.append(f"{'ok' if r.passed else 'not ok'} {i} - {r.name}")
    return "\n".join(lines)


def render(results: list[FileResult], console) -> None:
    """The summary: per file, passed and failed counts and the failing tests' descriptions."""
    from rich.markup import escape

    for r in results:
        passed = sum(a.passed for a in r.assertions)
        mark = "[bold green]PASS[/]" if r.passed else "[bold red]FAIL[/]"
        console.print(f"{mark} {escape(r.name):<34} {passed:>3} passed, {len(r.failures):>2} failed"
                      f"  [dim]{r.seconds:.2f} s[/]")
        for a in r.failures:
            console.print(f"       [red]not ok {a.number}[/] - {escape(a.description)}")
            for d in a.diagnostics[:6]:
                console.print(f"           [dim]{escape(d)}[/]")
        if r.died:
            console.print(f"       [red]died[/]: {escape(r.died)}")
        elif r.planned is not None and r.planned != len(r.assertions):
            console.print(f"       [red]planned {r.planned} tests but ran {len(r.assertions)}[/]")
    failed = [r for r in results if not r.passed]
    total = sum(len(r.assertions) for r in results)
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(results)} test files failed[/] ({total} tests); "
                      "everything was rolled back")
    else:
        console.print(f"[bold green]all {len(results)} test files passed[/] ({total} tests); "
                      "everything was rolled back")
