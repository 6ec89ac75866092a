"""Pin SQL from `sql/` into a migration: writes alembic/versions/<revision>/up.sql.

    python scripts/freeze_sql.py 0001_foundation              # every source file
    python scripts/freeze_sql.py 0002_security sql/functions/x.sql ...

A released migration never changes: run this only for the revision being written.
It works on the checkout (the repository's sql/ and alembic/), never on an installed copy:
the checkout goes first on sys.path."""
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from runner.resources import VERSIONS_DIR  # noqa: E402
from runner.sqlsource import source_files  # noqa: E402


def main(revision: str, files: list[str]) -> None:
    paths = [PROJECT_DIR / f for f in files] if files else source_files()
    out = VERSIONS_DIR / revision / "up.sql"
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"-- Frozen by scripts/freeze_sql.py for revision {revision}. Do not edit.\n"]
    for p in paths:
        parts.append(f"\n-- ==== {p.relative_to(PROJECT_DIR)} ====\n{p.read_text()}")
    out.write_text("".join(parts))
    print(f"wrote {out.relative_to(PROJECT_DIR)} from {len(paths)} files")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
