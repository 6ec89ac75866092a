"""Pin SQL from `sql/` into a migration.

    python scripts/freeze_sql.py 0001_foundation              # every source file -> up.sql
    python scripts/freeze_sql.py 0005_hardening sql/functions/x.sql ...
    python scripts/freeze_sql.py --restore 0005_hardening sql/functions/x.sql ...

The first two forms write alembic/versions/<revision>/up.sql from the current source
files (source files replace cleanly when re-applied: `create or replace`, `drop policy if
exists`). `--restore` writes <revision>/restore.sql for the downgrade: the definitions the
named files had before <revision>, taken from the newest older revision that froze each
file, rewritten to replace what is there (`create or replace`, `drop policy if exists`).
A released migration never changes: run this only for the revision being written.
It works on the checkout (the repository's sql/ and alembic/), never on an installed copy:
the checkout goes first on sys.path."""
import re
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from runner.resources import VERSIONS_DIR  # noqa: E402
from runner.sqlsource import SOURCE_FOLDERS, source_files  # noqa: E402

SECTION = re.compile(r"^-- ==== (?P<path>\S+) ====\n", re.M)


def in_install_order(files: list[str]) -> list[str]:
    rank = {folder: i for i, folder in enumerate(SOURCE_FOLDERS)}
    return sorted(files, key=lambda f: (rank[Path(f).parts[1]], f))


def frozen_sections(revision: str) -> dict[str, str]:
    """The source files a revision froze, by path, with the text it froze."""
    up = VERSIONS_DIR / revision / "up.sql"
    if not up.exists():
        return {}
    text = up.read_text()
    marks = list(SECTION.finditer(text))
    return {m["path"]: text[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            for i, m in enumerate(marks)}


def replacing(sql: str) -> str:
    """An older frozen text made to replace the newer definitions when re-applied."""
    sql = re.sub(r"^create (function|procedure|trigger) ", r"create or replace \1 ", sql, flags=re.M)
    return re.sub(r"^create policy (\S+) on (\S+)",
                  r"drop policy if exists \1 on \2;\ncreate policy \1 on \2", sql, flags=re.M)


def previous_text(revision: str, path: str) -> str:
    older = sorted(d.name for d in VERSIONS_DIR.iterdir() if d.is_dir() and d.name < revision)
    for name in reversed(older):
        sections = frozen_sections(name)
        if path in sections:
            return f"\n-- ==== {path} (as frozen by {name}) ====\n{replacing(sections[path])}"
    raise SystemExit(f"{path} was not frozen by any revision before {revision}: nothing to restore")


def write(out: Path, header: str, parts: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + "".join(parts))
    print(f"wrote {out.relative_to(PROJECT_DIR)} from {len(parts)} files")


def main(args: list[str]) -> None:
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not args:
        raise SystemExit(__doc__)
    restore = args[:1] == ["--restore"]
    revision, files = (args[1], args[2:]) if restore else (args[0], args[1:])
    if not (VERSIONS_DIR / f"{revision}.py").exists():
        raise SystemExit(f"no migration alembic/versions/{revision}.py: write it first, then freeze its SQL")
    if restore:
        parts = [previous_text(revision, f) for f in in_install_order(files)]
        write(VERSIONS_DIR / revision / "restore.sql",
              f"-- Written by scripts/freeze_sql.py --restore for revision {revision}. Do not edit.\n", parts)
        return
    paths = [PROJECT_DIR / f for f in in_install_order(files)] if files else source_files()
    parts = [f"\n-- ==== {p.relative_to(PROJECT_DIR)} ====\n{p.read_text()}" for p in paths]
    write(VERSIONS_DIR / revision / "up.sql",
          f"-- Frozen by scripts/freeze_sql.py for revision {revision}. Do not edit.\n", parts)


if __name__ == "__main__":
    main(sys.argv[1:])
