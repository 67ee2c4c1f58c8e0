"""Pages and caching for the API's lists and downloads.

- Lists (`GET /v1/requests`, `/v1/requests/{id}/timeline`) answer at most `limit` items; when there
  are more, a `Link: <...>; rel="next"` header (RFC 8288) gives the next page's address: the same
  query with `after` (the last request's id, or the last event's number). The body stays a plain
  list, so a client that reads one page keeps working.
- An evidence bundle's SHA-256 is in the ledger, so it is its entity tag: `ETag`, a 304 to a
  matching `If-None-Match`, and `Repr-Digest` (RFC 9530) for a client to check what it received.
"""

from __future__ import annotations

import base64

from fastapi import Request, Response

REQUESTS_PAGE, REQUESTS_PAGE_MAX = 100, 1_000
EVENTS_PAGE, EVENTS_PAGE_MAX = 1_000, 10_000


def link_next(request: Request, response: Response, position: dict[str, str] | None) -> None:
    """`Link: <this path?...&after=...>; rel="next"` when there is a next page (the other parameters kept)."""
    if position is not None:
        query = request.url.include_query_params(**position).query
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'


LINK_HEADER = {"Link": {"schema": {"type": "string"},
                        "description": 'The next page, when there is one: `<...?after=...>; rel="next"`.'}}


def entity_tag(sha256_hex: str) -> str:
    return f'"{sha256_hex}"'


def repr_digest(sha256_hex: str) -> str:
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def not_modified(request: Request, sha256_hex: str) -> bool:
    """Whether the client's If-None-Match already names this content (weak tags compare equal too)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or entity_tag(sha256_hex) in tags


#: Subject packages hold personal data: never kept by a browser or a proxy, never sniffed into HTML.
PRIVATE_DOWNLOAD = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: Evidence holds none and never changes once sealed, but a download is a ledger event: revalidate.
EVIDENCE_DOWNLOAD = {"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
EVIDENCE_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "The bundle's SHA-256 as sealed in the ledger."},
    "Repr-Digest": {"schema": {"type": "string"}, "description": "RFC 9530: `sha-256=:<base64>:`."},
    "Cache-Control": {"schema": {"type": "string"}, "description": "private, no-cache"},
}
PACKAGE_HEADERS = {"Cache-Control": {"schema": {"type": "string"}, "description": "no-store (personal data)"},
                   "X-Content-Type-Options": {"schema": {"type": "string"}, "description": "nosniff"}}
