"""Limits at the door: a cap on request bodies, and whose word sets the client address.

Client address (what the public intake's rate limits count): the socket peer's, unless the peer is
a proxy named in `DSR_TRUSTED_PROXIES` (IPs or networks, comma-separated; none by default), whose
`X-Forwarded-For` is then believed. uvicorn's own default believes any loopback peer, so anything
on the machine (or a proxy that passes the header through unchanged) could name a new client on
every call and never be limited: `uvicorn_proxy_options` gives uvicorn the configured list instead
(`dsr serve` uses it).

Body cap: enforced before anything reads or parses the body.

A pure ASGI middleware (not `@app.middleware("http")`): it must see the body as it streams in, so a
body that declares no length (chunked) is cut off the moment it passes the cap, never buffered whole.

- A declared ``Content-Length`` over the cap: 413 at once, nothing read.
- A ``Content-Length`` that is not a number: 400 naming the header.
- No declared length (chunked): the bytes are counted as they arrive; past the cap the read fails (an
  `HTTPException`, so that FastAPI stops parsing) and the answer is a 413, whatever the layers in between
  made of the failure (Starlette's `BaseHTTPMiddleware` turns it into a 400 "error parsing the body").
"""

import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 64 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(text: str, *, field: str = "trusted_proxies") -> tuple[Network, ...]:
    """`10.0.0.5, 192.168.0.0/24, ::1` as networks; ValueError naming the field and the bad entry's position."""
    networks: list[Network] = []
    for index, item in enumerate(part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{field}: entry {index + 1} is not an IP address or network") from None
    return tuple(networks)


def uvicorn_proxy_options(trusted_proxies: str) -> dict[str, Any]:
    """uvicorn.Config keywords that believe forwarded headers from the configured proxies only.

    No proxies configured: uvicorn ignores X-Forwarded-* altogether (its default would believe loopback).
    """
    networks = parse_trusted_proxies(trusted_proxies)
    if not networks:
        return {"proxy_headers": False, "forwarded_allow_ips": ""}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(str(n) for n in networks)}


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` (413) before they are parsed or held in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes: must be at least 1")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(send, status.HTTP_400_BAD_REQUEST, "Content-Length: not a number of bytes")
                return
            if int(declared) > self.max_bytes:
                await _answer(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
                return
        seen, over, started, answered = 0, False, False, False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
            return message

        async def guarded(message: Message) -> None:
            # Whatever the app makes of the failed read (FastAPI says 413; a middleware in between may
            # turn it into a 400 or a 500), the caller is told the body was too large.
            nonlocal started, answered
            if over and not started:
                if not answered:
                    answered = True
                    await _answer(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over or started:
                raise
        if over and not started and not answered:
            await _answer(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())

    def _too_large(self) -> str:
        return f"body: larger than {self.max_bytes} bytes"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


async def _answer(send: Send, code: int, detail: Any) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# -- per-client call limits, shared by every API process -------------------------------------------
#
# The public doors (OpenDSR intake, privacy center) allow each client address so many calls a
# minute. Counted in one process's memory, N API processes behind a balancer would allow N times
# that; so the count lives where the vendors' budgets live (connectors.shared_pacing: the
# DSR_RATE_LIMIT_URL database, else the ledger's), as a GCRA with a burst: each client's row holds
# its "theoretical arrival time" (TAT); a call is allowed when it moves the TAT at most `per_seconds`
# past now, in one atomic upsert, so racing processes cannot both take the last call. A refused call
# changes nothing. Client addresses are stored as keyed hashes (an IP address is personal data).

_TAKE = {
    "postgresql": """
        INSERT INTO dsr_rate_slots AS s (budget, next_free)
        VALUES (:budget, extract(epoch FROM clock_timestamp()) + :interval)
        ON CONFLICT (budget) DO UPDATE
           SET next_free = GREATEST(s.next_free, extract(epoch FROM clock_timestamp())) + :interval
         WHERE GREATEST(s.next_free, extract(epoch FROM clock_timestamp())) + :interval
               - extract(epoch FROM clock_timestamp()) <= :window
        RETURNING next_free
    """,
    "sqlite": """
        INSERT INTO dsr_rate_slots (budget, next_free) VALUES (:budget, :now + :interval)
        ON CONFLICT (budget) DO UPDATE SET next_free = max(next_free, :now) + :interval
         WHERE max(next_free, :now) + :interval - :now <= :window
        RETURNING next_free
    """,
}
_WAIT = {
    "postgresql": """SELECT GREATEST(next_free, extract(epoch FROM clock_timestamp())) + :interval
                            - extract(epoch FROM clock_timestamp()) - :window
                       FROM dsr_rate_slots WHERE budget = :budget""",
    "sqlite": "SELECT max(next_free, :now) + :interval - :now - :window FROM dsr_rate_slots WHERE budget = :budget",
}
_FORGET = {  # clients whose every call has aged out: their rows say nothing any more
    "postgresql": "DELETE FROM dsr_rate_slots WHERE budget LIKE 'client:%' "
                  "AND next_free < extract(epoch FROM clock_timestamp()) - 60",
    "sqlite": "DELETE FROM dsr_rate_slots WHERE budget LIKE 'client:%' AND next_free < :now - 60",
}
#: Calls between two sweeps of aged-out client rows (per process).
FORGET_EVERY = 1_000


class SharedClientLimit:
    """At most `limit` calls per client in any `per_seconds` (a burst of `limit`, then one every
    per_seconds/limit), counted in a database every API process shares. Same use as the in-memory
    `doors.api.intake.RateLimiter`: `retry_after(client)` is None (and counts the call) or seconds to wait."""

    def __init__(self, store: Any, name: str, limit: int, per_seconds: float, *, key: bytes) -> None:
        if limit < 1 or per_seconds <= 0:
            raise ValueError("limit: calls must be >= 1 and per_seconds > 0")
        self.store, self.name, self.limit, self.per_seconds = store, name, limit, per_seconds
        self._interval = per_seconds / limit
        self._key = key
        self._calls = 0
        self._lock = threading.Lock()

    def _budget(self, client: str) -> str:
        digest = hmac.new(self._key, client.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        return f"client:{self.name}:{digest}"

    def retry_after(self, client: str) -> float | None:
        # SQLite means one machine: its monotonic clock (one for all processes on Linux) cannot be set back.
        params = {"budget": self._budget(client), "interval": self._interval, "window": self.per_seconds,
                  "now": time.monotonic()}
        dialect = self.store.dialect
        with self.store.engine.begin() as conn:
            taken = conn.execute(text(_TAKE[dialect]), params).first()
            wait = None if taken is not None else conn.execute(text(_WAIT[dialect]), params).scalar()
        self._forget_now_and_then()
        return None if taken is not None else max(float(wait or 0.0), 0.001)

    def _forget_now_and_then(self) -> None:
        with self._lock:
            self._calls += 1
            if self._calls % FORGET_EVERY:
                return
        with self.store.engine.begin() as conn:
            conn.execute(text(_FORGET[self.store.dialect]), {"now": time.monotonic()})


_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def shared_client_limit(service: Any, name: str, limit: int, per_seconds: float) -> SharedClientLimit:
    """A per-client limit on the shared rate-limit database: DSR_RATE_LIMIT_URL (as the vendors'
    budgets), else the service's ledger database. One engine per database per process."""
    from connectors.shared_pacing import SlotStore

    url = os.environ.get("DSR_RATE_LIMIT_URL", "").strip() or service.ledger.url
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = SlotStore(url)
    return SharedClientLimit(store, name, limit, per_seconds, key=service.settings.identity_hmac_key)
