"""Reading LinkedIn DMP segments, for confirming removals (vendor-apis.md section 5).

A segment is read by ``GET /rest/dmpSegments/{id}``, which tells its ad account; once a process knows the
account of several segments a request waits on, it reads them together through "Find DMP Segments by
Account" (``GET /rest/dmpSegments?q=account&account=...``, paged by ``start``/``count``), never in more
calls than reading each would take. Only token-like values (statuses, codes) are taken from the answers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.http import VendorApiError
from connectors.pacing import register_cache

FINDER_PAGE = 100  # segments per page of "Find DMP Segments by Account"
_ACCOUNT_URN = re.compile(r"^urn:li:sponsoredAccount:\d{1,20}$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,79}$")

#: The connector's paced, retried call: ``request(step, record, method, path, params=...)``.
Request = Callable[..., Any]


class SegmentAccounts:
    """The ad account of each segment seen, by LinkedIn origin and segment id, shared by the connectors of a
    process (a connector is built per request): what lets a request read its segments through one finder."""

    def __init__(self) -> None:
        self._accounts: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, origin: str, segment_id: str) -> str | None:
        with self._lock:
            return self._accounts.get((origin, segment_id))

    def put(self, origin: str, segment_id: str, account: str) -> None:
        with self._lock:
            self._accounts[(origin, segment_id)] = account

    def clear(self) -> None:
        with self._lock:
            self._accounts.clear()


ACCOUNTS = SegmentAccounts()
register_cache(ACCOUNTS.clear)


def read_segments(request: Request, origin: str, segments: Mapping[str, str],
                  segment_ids: Sequence[str]) -> dict[str, Any]:
    """Each segment (id -> URN in `segments`) as LinkedIn shows it, or the not-fatal error that kept it from
    being read; a fatal error is raised. Segments of an account already seen are read through the finder;
    the rest, and any the finder did not show, one by one (which teaches `ACCOUNTS` their account)."""
    read: dict[str, Any] = {}
    by_account: dict[str, list[str]] = {}
    for segment_id in segment_ids:
        account = ACCOUNTS.get(origin, segment_id)
        if account is not None:
            by_account.setdefault(account, []).append(segment_id)
    for account, wanted in by_account.items():
        if len(wanted) > 1:
            read.update(_find_by_account(request, account, wanted))
    for segment_id in (s for s in segment_ids if s not in read):
        try:
            answer = request("erase", segments[segment_id], "GET", f"/rest/dmpSegments/{segment_id}")
        except VendorApiError as exc:
            if exc.fatal:
                raise
            read[segment_id] = exc
            continue
        account = answer.get("account") if isinstance(answer, dict) else None
        if isinstance(account, str) and _ACCOUNT_URN.match(account):
            ACCOUNTS.put(origin, segment_id, account)
        read[segment_id] = answer
    return read


def _find_by_account(request: Request, account: str, wanted: Sequence[str]) -> dict[str, Any]:
    """`wanted` segments of `account` through the finder, at most ``len(wanted) - 1`` pages (never more
    calls than reading each); those not shown are left to the caller. A failure is each one's error."""
    found: dict[str, Any] = {}
    start = 0
    for _ in range(len(wanted) - 1):
        try:
            page = request("erase", account, "GET", "/rest/dmpSegments",
                           params={"q": "account", "account": account, "start": str(start),
                                   "count": str(FINDER_PAGE)})
        except VendorApiError as exc:
            if exc.fatal:
                raise
            return {segment_id: exc for segment_id in wanted}
        elements = page.get("elements") if isinstance(page, dict) else None
        elements = [e for e in elements if isinstance(e, dict)] if isinstance(elements, list) else []
        for element in elements:
            if str(element.get("id")) in wanted:
                found[str(element["id"])] = element
        total = (page.get("paging") or {}).get("total") if isinstance(page, dict) else None
        start += len(elements)
        if len(found) == len(wanted) or not elements or not isinstance(total, int) or start >= total:
            break
    return found


def token(data: Any, key: str) -> str | None:
    """`data[key]` if it is a token-like code (LinkedIn's codes and statuses), never free text."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and _CODE.match(value) else None


def destination_status(segment: Any) -> str | None:
    """The status of a DMP segment's LINKEDIN destination (token-like only), or None."""
    destinations = segment.get("destinations") if isinstance(segment, dict) else None
    found = [d for d in destinations if isinstance(d, dict) and d.get("destination") == "LINKEDIN"] if isinstance(
        destinations, list) else []
    return token(found[0], "status") if found else None
