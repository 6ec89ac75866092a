"""Test helpers: requests are made exactly as the app makes them (runner.request)."""
import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from runner.request import ANON, SERVICE, Caller, begin_request, request

# The checkout the tests run from (the installed package has no such folder).
PROJECT_DIR = Path(__file__).resolve().parent.parent

__all__ = ["ANON", "PROJECT_DIR", "SERVICE", "Caller", "begin_request", "login_url", "new_home", "remove_new_home",
           "request", "serving"]


def login_url(url: str, user: str, password: str) -> str:
    """The same server and database for another login (the embedded cluster asks a password)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


def new_home(prefix: str) -> Path:
    """A path where a new embedded data home can be made: smsao-db creates it, and changes
    the mode and owner only of a home it created (issue 15, item 20), so a test gives it a
    path that does not exist yet, in a fresh directory that the server's OS user may
    traverse (mkdtemp makes 0700). Remove `home.parent` afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)
    return base / "home"


def remove_new_home(home: Path) -> None:
    """Removes what new_home() made, and refuses anything else: a home given by mkdtemp
    directly has the machine's /tmp as its parent, which must never be removed."""
    import shutil

    base = home.parent
    if home.name != "home" or base.parent != Path(tempfile.gettempdir()) or base == Path(tempfile.gettempdir()):
        raise AssertionError(f"remove_new_home: {home} was not made by new_home(); not removing {base}")
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def serving(smsao_db, port: int, env: dict, *options: str, cwd=None):
    """`smsao-db serve --port <port> <options>` running until the block ends; it must then stop
    on SIGTERM without a traceback. Waits (30 s at most) until the port accepts connections."""
    server = subprocess.Popen([str(smsao_db), "serve", "--port", str(port), *options], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.1)
        yield server
    finally:
        server.terminate()
        assert server.wait(15) is not None
        assert "Traceback" not in server.stderr.read()
        server.stdout.close()
        server.stderr.close()
