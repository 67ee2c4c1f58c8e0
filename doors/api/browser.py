"""What every page served to a browser shares (the auditor page, the officer console, the privacy
center): the security headers, the same-site check on POST forms, and reading a small form body."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException, Request


def security_headers(csp: str) -> dict[str, str]:
    """A page's headers: its Content-Security-Policy, no type sniffing, no framing, the referrer kept
    on this site, and never cached."""
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def under(path: str, *prefixes: str) -> bool:
    """Whether `path` is one of `prefixes` or below one of them."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).netloc.lower() or None
    except ValueError:
        return None


def same_origin(request: Request) -> bool:
    """The CSRF check for POSTs: Origin (else Referer) must name this request's Host."""
    host = (request.headers.get("host") or "").lower()
    if not host:
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and _host(origin) == host
    referer = request.headers.get("referer")
    return referer is not None and _host(referer) == host


async def read_form(request: Request, *, max_bytes: int = 8192, max_fields: int = 30) -> dict[str, str]:
    """An urlencoded form body, first value per field (no multipart parser needed for these forms); too
    big or too many fields is a clear 4xx."""
    body = await request.body()
    if len(body) > max_bytes:
        raise HTTPException(413, "form: too large")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:  # more fields than max_num_fields: a hostile form, not a server error
        raise HTTPException(400, "form: too many fields") from None
    return {key: values[0] for key, values in fields.items() if values}
