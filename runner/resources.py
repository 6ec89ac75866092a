"""Where the package's SQL, migrations, templates and static files are, whatever the working directory.

A wheel (and `pip install .`) carries the repository's `sql/` and `alembic/` inside the
package as `runner/sql` and `runner/migrations` (pyproject maps them), and they are found
there with importlib.resources. From a checkout (an editable install, or PYTHONPATH) they
are the repository's own folders beside `runner/`."""
from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(str(files("runner")))


def _packaged(name: str, checkout_name: str) -> Path:
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / checkout_name


SQL_DIR = _packaged("sql", "sql")
MIGRATIONS_DIR = _packaged("migrations", "alembic")
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
TEMPLATES_DIR = PACKAGE_DIR / "web" / "templates"
# What the dashboard's pages load (Chart.js and its license, the pages' scripts): one folder, one route.
STATIC_DIR = PACKAGE_DIR / "web" / "static"
# The pgTAP test files of `smsao-db verify` (and of a user's pg_prove / `supabase test db`).
TESTS_DIR = SQL_DIR / "tests"
