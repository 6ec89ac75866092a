"""The package as users install it: its wheel, built from a copy of the checkout and
installed into a clean virtualenv (tests/test_package.py, tests/test_faults.py)."""
from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

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

    # Test workers running side by side (pytest -n) share the wheelhouse: one fills it at a time.
    with open(WHEELHOUSE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run([str(c) for c in pip_wheel("--no-index")], capture_output=True).returncode != 0:
            run(pip_wheel())


def install_wheel(tmp: Path) -> tuple[Path, Path, float]:
    """(venv, wheel, seconds it took): the wheel built and installed into a clean virtualenv."""
    started = time.monotonic()
    wheel = build_wheel(tmp)
    WHEELHOUSE.mkdir(exist_ok=True)
    fill_wheelhouse(wheel, tmp)
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    run([*PIP, "--python", venv / "bin" / "python", "install", "--no-index", "--find-links", WHEELHOUSE, wheel])
    return venv, wheel, time.monotonic() - started
