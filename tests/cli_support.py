"""Running the `smsao-db` console command as a user would."""
import os
import subprocess
import sys
from pathlib import Path

SMSAO_DB = Path(sys.executable).parent / "smsao-db"


def smsao_db(*args: str, url: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "SMSAO_CONNECT_TIMEOUT": "3"}
    env.pop("DATABASE_URL", None)
    if url:
        env["DATABASE_URL"] = url
    return subprocess.run([str(SMSAO_DB), *args], capture_output=True, text=True, env=env, timeout=timeout)
