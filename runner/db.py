"""Connections with errors a person can act on."""
import os
import re

import psycopg

from runner.errors import UserError


def libpq_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


# Every place a password can sit in a connection string (libpq accepts all of them):
#  - a URL's user info, `postgresql://user:secret@host1:5432,host2/db` (multi-host too); the
#    user info runs to the LAST `@` of the URL, so a stray `@` in a password hides it whole;
#  - a URL's query, `?password=secret` or `&sslpassword=secret`;
#  - a key=value conninfo, `password=secret`, `password = 'se cret'` (quoted, with \' and \\).
_URL_USERINFO = re.compile(r"(\b[a-z][\w+.-]*://)([^\s:@/?'\"]*):[^\s'\"]*@", re.IGNORECASE)
_URL_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#\s'\"]*", re.IGNORECASE)
# Only where a keyword can start (not inside a URL's query, handled above).
# An unquoted value runs to the first space that no backslash escapes.
_CONNINFO_PASSWORD = re.compile(r"(?<![^\s'\"(,;])((?:ssl)?password)\s*=\s*(?:'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])+)",
                                re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """`text` (a URL, a conninfo, or a message quoting one) with every password replaced by
    ***; any of `secrets` found elsewhere in it (libpq echoes bad tokens) is replaced too."""
    text = _URL_USERINFO.sub(r"\1\2:***@", text)
    text = _URL_QUERY_PASSWORD.sub(r"\1***", text)
    text = _CONNINFO_PASSWORD.sub(r"\1=***", text)
    for secret in sorted(secrets, key=lambda x: len(x or ""), reverse=True):  # longest first
        if secret and len(secret) >= 3:  # a 1-2 character password would mask half the line
            text = text.replace(secret, "***")
    return text


def passwords_in(conninfo: str) -> list[str]:
    """The passwords a URL or conninfo carries, as written and as libpq decodes them, so a
    message that echoes one can be cleaned (empty when it cannot be parsed)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(libpq_url(conninfo))
    except Exception:  # unparsable: the patterns of redact() are all there is to go on
        return []
    found = [str(params[k]) for k in ("password", "sslpassword") if params.get(k)]
    escaped = [p.replace("\\", "\\\\").replace("'", "\\'") for p in found]
    return found + [quote(p, safe="") for p in found] + escaped + [p.replace(" ", "\\ ") for p in escaped]


def redact_message(message: str, conninfo: str) -> str:
    """A message about `conninfo` made safe to print: its passwords removed in every form."""
    return redact(message, *passwords_in(conninfo))


def first_line(exc: BaseException) -> str:
    """An error's first line (a database error's detail and hint lines are for logs)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def explain_connection_error(url: str, exc: Exception) -> UserError:
    text = first_line(exc)
    # The connection string by its structure; libpq's own text also by the password's value
    # (it may echo a token), which would also mask a user or database named like the password.
    text = redact_message(text, url)
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
