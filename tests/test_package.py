"""The package as users install it: a built wheel in a clean virtualenv, no checkout beside it.

The wheel is built from a copy of the checkout (no stale build/ from earlier builds), its
dependencies come from a wheelhouse kept in the project's .venv (filled from PyPI, or pip's
cache, on the first run only), and it is installed into a new virtualenv without system
site-packages. From a directory that is neither, the installed `smsao-db` migrates,
schedules (creating pg_cron, preloaded but not yet created) and verifies a fresh database."""
from __future__ import annotations

import glob
import http.client
import zipfile
from pathlib import Path

from runner.embedded import free_port
from support import PROJECT_DIR, serving
from wheel_support import run


def packaged_names(checkout_glob: str, checkout_dir: str, package_dir: str) -> set[str]:
    """What the wheel must hold for every file the checkout has under `checkout_glob`."""
    return {package_dir + p[len(checkout_dir):] for p in
            (str(Path(f).relative_to(PROJECT_DIR)) for f in glob.glob(str(PROJECT_DIR / checkout_glob)))}


def test_the_wheel_carries_every_module_the_migrations_the_sql_the_templates_and_the_static_files(installed_wheel):
    _, wheel, _ = installed_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = (packaged_names("alembic/*.py", "alembic", "runner/migrations")
                | packaged_names("alembic/*.mako", "alembic", "runner/migrations")
                | packaged_names("alembic/versions/*.py", "alembic", "runner/migrations")
                | packaged_names("alembic/versions/*/*.sql", "alembic", "runner/migrations")
                | packaged_names("sql/*/*.sql", "sql", "runner/sql")
                | packaged_names("runner/web/templates/*", "runner", "runner")
                | packaged_names("runner/web/static/*", "runner", "runner")
                | packaged_names("runner/analytics/templates/*", "runner", "runner")
                # every module of every subpackage: pyproject lists the packages by name
                | packaged_names("runner/*.py", "runner", "runner")
                | packaged_names("runner/*/*.py", "runner", "runner"))
    assert "runner/migrations/versions/0001_foundation/up.sql" in expected
    assert {"runner/web/static/chart.umd.min.js", "runner/web/static/chart.js-LICENSE.md"} <= expected
    assert "runner/sql/demo/history.sql" in expected
    assert {"runner/recovery/backup.py", "runner/web/app.py", "runner/monitoring/health.py"} <= expected
    assert expected - names == set()


def test_installed_wheel_migrates_schedules_and_verifies_from_elsewhere(installed_wheel, cron_not_created, tmp_path):
    venv, _, seconds = installed_wheel
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
    assert "test files passed" in verified.stdout and "FAIL" not in verified.stdout
    # The same files under pg_prove, from where the installed package keeps them.
    tests_dir = run([smsao_db, "verify", "--path"], env=env, cwd=elsewhere).stdout.strip()
    assert tests_dir.startswith(str(venv))
    proved = run(["pg_prove", "-d", url, *sorted(str(f) for f in Path(tests_dir).glob("*.sql"))], env=env, cwd=elsewhere)
    assert "All tests successful." in proved.stdout
    assert not (elsewhere / ".smsao").exists()                 # a URL given: no embedded database


def test_the_installed_wheel_serves_the_dashboard_with_its_charts(installed_wheel, db, tmp_path):
    """`smsao-db serve` from the wheel, run elsewhere: the page loads Chart.js and its own script
    from the installed package (the same bytes as the checkout's), and in Chromium it draws."""
    venv, _, _ = installed_wheel
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms) "
           "select now() - make_interval(mins => g), 3 + g % 5 from generate_series(1, 30) g")
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "DATABASE_URL": db.url, "HOME": str(tmp_path)}
    with serving(venv / "bin" / "smsao-db", port, env, "--refresh", "0", cwd=elsewhere):
        status, page = http_get(port, "/")
        assert status == 200 and b'<script src="/static/dashboard.js"></script>' in page
        for name in ("chart.umd.min.js", "chart.js-LICENSE.md", "dashboard.js", "business.js"):
            assert http_get(port, f"/static/{name}") == (200, (PROJECT_DIR / "runner" / "web" / "static" / name).read_bytes())
        drawn = chromium_datasets(f"http://127.0.0.1:{port}/", "response-chart")
        if drawn is not None:
            assert drawn == ["average", "worst"]


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def chromium_datasets(url: str, canvas_id: str) -> list | None:
    """The dataset labels of the chart Chart.js drew on the page, with no page error; None when
    Chromium or Playwright is missing here."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path("/usr/bin/chromium").exists():
        return None
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url)
            labels = page.evaluate(f"() => Chart.getChart('{canvas_id}').data.datasets.map(d => d.label)")
        finally:
            browser.close()
    assert errors == []
    return labels
