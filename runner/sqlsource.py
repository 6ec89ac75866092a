"""The SQL source tree (`sql/`) and the frozen copies that migrations apply."""
from pathlib import Path

from runner.resources import SQL_DIR, VERSIONS_DIR

# Order matters only across folders: types and tables, then the functions that use
# them, then the triggers and policies that call those functions.
SOURCE_FOLDERS = ("schema", "functions", "triggers", "policies")


def source_files() -> list[Path]:
    """Every file of the current schema, in the order that installs it from scratch."""
    return [f for folder in SOURCE_FOLDERS for f in sorted((SQL_DIR / folder).glob("*.sql"))]


def frozen_sql(name: str) -> str:
    """The pinned SQL text a migration applies, e.g. '0001_foundation/up.sql'."""
    return (VERSIONS_DIR / name).read_text()
