"""The package as users install it: a built wheel in a clean virtualenv, no checkout beside it.

The wheel is built from a copy of the checkout (no stale build/ from earlier builds), its
dependencies come from a wheelhouse kept in the project's .venv (filled from PyPI, or pip's
cache, on the first run only), and it is installed into a new virtualenv without system
site-packages. From a directory that is neither, the installed `smsao-db` migrates,
schedules (creating pg_cron, preloaded but not yet created) and verifies a fresh database."""
from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from support import PROJECT_DIR

WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "test-artifacts",
                                     ".smsao", "__pycache__", ".pytest_cache")


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(PROJECT_DIR, src, ignore=COPY_IGNORE)
    run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", tmp / "dist", src])
    return next((tmp / "dist").glob("smsao_db-*.whl"))


def fill_wheelhouse(wheel: Path, tmp: Path) -> None:
    """The dependencies' wheels, as the wheel's metadata states them: from the wheelhouse
    alone when it has them all, else fetched (once). The package's own wheel never goes
    there: pip would take a stale copy of the same name for the new one."""
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    (tmp / "requirements.txt").write_text("\n".join(requires) + "\n")
    def pip_wheel(*options: str) -> list:
        return [*PIP, "wheel", *options, "--find-links", WHEELHOUSE, "--wheel-dir", WHEELHOUSE,
                "-r", tmp / "requirements.txt"]

    if subprocess.run([str(c) for c in pip_wheel("--no-index")], capture_output=True).returncode != 0:
        run(pip_wheel())


def packaged_names(checkout_glob: str, checkout_dir: str, package_dir: str) -> set[str]:
    """What the wheel must hold for every file the checkout has under `checkout_glob`."""
    return {package_dir + p[len(checkout_dir):] for p in
            (str(Path(f).relative_to(PROJECT_DIR)) for f in glob.glob(str(PROJECT_DIR / checkout_glob)))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, wheel, seconds it took): the wheel built and installed into a clean virtualenv."""
    tmp = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    wheel = build_wheel(tmp)
    WHEELHOUSE.mkdir(exist_ok=True)
    fill_wheelhouse(wheel, tmp)
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    run([*PIP, "--python", venv / "bin" / "python", "install", "--no-index", "--find-links", WHEELHOUSE, wheel])
    return venv, wheel, time.monotonic() - started


def test_the_wheel_carries_the_migrations_the_sql_and_the_templates(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = (packaged_names("alembic/*.py", "alembic", "runner/migrations")
                | packaged_names("alembic/*.mako", "alembic", "runner/migrations")
                | packaged_names("alembic/versions/*.py", "alembic", "runner/migrations")
                | packaged_names("alembic/versions/*/*.sql", "alembic", "runner/migrations")
                | packaged_names("sql/*/*.sql", "sql", "runner/sql")
                | packaged_names("runner/templates/*", "runner", "runner"))
    assert "runner/migrations/versions/0001_foundation/up.sql" in expected
    assert "runner/sql/demo/history.sql" in expected
    assert expected - names == set()


def test_installed_wheel_migrates_schedules_and_verifies_from_elsewhere(installed, cron_not_created, tmp_path):
    venv, _, seconds = installed
    print(f"wheel built and installed in a clean virtualenv in {seconds:.1f} s")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = cron_not_created.url("smsao")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "DATABASE_URL": url, "HOME": str(tmp_path), "COLUMNS": "200"}
    smsao_db = venv / "bin" / "smsao-db"

    # The package is the installed one, and it finds its files inside itself.
    where = run([venv / "bin" / "python", "-c",
                 "import runner.resources as r, runner.embedded as e; "
                 "print(r.SQL_DIR, r.MIGRATIONS_DIR, e.Cluster().home, sep='\\n')"], env=env, cwd=elsewhere)
    sql_dir, migrations_dir, home = where.stdout.split()
    assert sql_dir.startswith(str(venv)) and migrations_dir.startswith(str(venv))
    assert home == str(elsewhere / ".smsao")                   # the data home is where smsao-db runs
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()

    migrated = run([smsao_db, "migrate", "upgrade", "head"], env=env, cwd=elsewhere)
    assert "Running upgrade 0003_monitoring -> 0004_operator" in migrated.stderr
    assert "Context impl" not in migrated.stderr
    scheduled = run([smsao_db, "schedule", "apply"], env=env, cwd=elsewhere)
    # pg_partman's maintenance is a fifth job where the server has pg_partman (0011_scale).
    partman = any(Path("/usr/share/postgresql").glob("*/extension/pg_partman.control"))
    assert scheduled.stdout.count(": created") == 4 + partman, scheduled.stdout
    verified = run([smsao_db, "verify"], env=env, cwd=elsewhere)
    assert "checks passed" in verified.stdout and "FAIL" not in verified.stdout
    assert not (elsewhere / ".smsao").exists()                 # a URL given: no embedded database
