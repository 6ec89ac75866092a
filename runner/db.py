"""Connections with errors a person can act on."""
import os
import re

import psycopg

from runner.errors import UserError


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def libpq_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def explain_connection_error(url: str, exc: Exception) -> UserError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = redact(url)
    if "password authentication failed" in text:
        hint = "wrong user or password in the database URL"
    elif "does not exist" in text and "database" in text:
        hint = "the database does not exist: create it or fix the URL"
    elif any(s in text for s in ("Connection refused", "could not translate host", "timeout", "No route")):
        hint = "the server is unreachable: is it running, and are host and port right?"
    else:
        hint = text
    return UserError(f"cannot connect to {where}: {hint} ({text})" if hint != text
                     else f"cannot connect to {where}: {text}")


def connect(url: str, **kwargs) -> psycopg.Connection:
    kwargs.setdefault("connect_timeout", int(os.environ.get("SMSAO_CONNECT_TIMEOUT", "10")))
    try:
        return psycopg.connect(libpq_url(url), **kwargs)
    except psycopg.OperationalError as exc:
        raise explain_connection_error(url, exc) from None
    except psycopg.ProgrammingError:
        # libpq could not parse the URL at all; its message would echo the password.
        raise UserError(f"invalid database URL {redact(url)}: "
                        "expected postgresql://user:password@host:port/dbname") from None
