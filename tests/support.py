"""Test helpers: requests are made exactly as the app makes them (runner.request)."""
from pathlib import Path
from urllib.parse import urlsplit

from runner.request import ANON, SERVICE, Caller, begin_request, request

# The checkout the tests run from (the installed package has no such folder).
PROJECT_DIR = Path(__file__).resolve().parent.parent

__all__ = ["ANON", "PROJECT_DIR", "SERVICE", "Caller", "begin_request", "login_url", "request"]


def login_url(url: str, user: str, password: str) -> str:
    """The same server and database for another login (the embedded cluster asks a password)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()
