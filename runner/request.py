"""Acting as the app: a request the way PostgREST makes it (CONTRACT section 1).

One transaction with `set local role` and the JWT claims (and headers) as settings.
`smsao-db verify` and the tests make every app call through this."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the role PostgREST switches to and the JWT it verified."""
    role: str = "anon"
    sub: uuid.UUID | None = None
    exp: int | None = None
    session_id: uuid.UUID | None = None
    headers: dict | None = None
    extra_claims: dict = field(default_factory=dict)

    @classmethod
    def user(cls, sub, **kw) -> "Caller":
        kw.setdefault("exp", int(time.time()) + 3600)
        return cls(role="authenticated", sub=sub, **kw)

    @classmethod
    def anon(cls, ip: str | None = None) -> "Caller":
        return cls(role="anon", headers={"x-forwarded-for": ip} if ip else None)

    @classmethod
    def service(cls) -> "Caller":
        return cls(role="service_role")

    def claims(self) -> dict | None:
        if self.sub is None and self.role != "service_role" and not self.extra_claims:
            return None
        c = {"role": self.role, **self.extra_claims}
        if self.sub is not None:
            c["sub"] = str(self.sub)
        if self.exp is not None:
            c["exp"] = self.exp
        if self.session_id is not None:
            c["session_id"] = str(self.session_id)
        return c


ANON = Caller.anon()
SERVICE = Caller.service()


def begin_request(conn: psycopg.Connection, caller: Caller) -> None:
    """Inside an open transaction: become `caller` for the rest of it."""
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(caller.role)))
    claims = caller.claims()
    conn.execute("select set_config('request.jwt.claims', %s, true), set_config('request.headers', %s, true)",
                 [json.dumps(claims) if claims else "", json.dumps(caller.headers) if caller.headers else ""])


def request(conn: psycopg.Connection, caller: Caller, query: str, params=None) -> list[tuple]:
    """One PostgREST request: a transaction that runs `query` as `caller`, committed."""
    with conn.transaction():
        begin_request(conn, caller)
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []
