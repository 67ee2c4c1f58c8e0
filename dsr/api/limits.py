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

import ipaddress
import json
from typing import Any

from fastapi import HTTPException, status
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
