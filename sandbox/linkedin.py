"""A loopback emulator of LinkedIn Matched Audiences: DMP segment users (vendor-apis.md section 5).

What it serves (``https://api.linkedin.com``; plain `requests`, no SDK):

- ``POST /rest/dmpSegments/{segmentId}/users`` with ``X-RestLi-Method: BATCH_CREATE`` and
  ``{"elements": [{"action": "ADD"|"REMOVE", "userIds": [{"idType": "SHA256_EMAIL", "idValue": "<64 hex>"}]}]}``.
  Answers **200** ``{"elements": [{"status": 201}, ...]}``: one status per element, in order. Re-adding an
  id or removing one that is not there is still 201, "by design" (section 5). A bad element gets its own
  4xx status (``{"status": 400, "error": {"message": ..., "status": 400}}``) while the others go through.
- Headers, checked in this order: ``LinkedIn-Version`` (missing: **400** ``VERSION_MISSING`` with
  ``X-Restli-Gateway-Error: true``; not an active version: **426** ``NONEXISTENT_VERSION`` "Requested
  version 20240101 is not active", the version rendered as YYYYMM01 as LinkedIn does), then
  ``Authorization: Bearer`` (401 bodies ``{"status", "serviceErrorCode", "code", "message"}``:
  ``INVALID_ACCESS_TOKEN`` 65600, ``EXPIRED_ACCESS_TOKEN`` 65601, ``REVOKED_ACCESS_TOKEN`` 65602; a missing
  one is LinkedIn's documented ``{"message": "Empty oauth2_access_token", "serviceErrorCode": 401,
  "status": 401}``), then ``X-Restli-Protocol-Version: 2.0.0`` (section 5 lists it with the versioned
  headers; this sandbox requires it on ``/rest/`` and answers 400 without it: emulator choice, LinkedIn's
  exact answer is not documented), then ``X-RestLi-Method: BATCH_CREATE`` on ``/users`` (without it the
  body would be read as a single CREATE: 400).
- **Rate limits**: a per-member window of `per_minute_limit` ``/users`` calls per `window_seconds` (500 per
  minute by default; section 5 says 500-600 depending on the doc version, section 9 leaves it open), and
  an optional daily quota. Throttling is **429** ``{"status": 429, "serviceErrorCode": 101, "code":
  "TOO_MANY_REQUESTS", "message": "Resource level throttle MEMBER MINUTE limit ..."}`` (``APPLICATION
  DAY`` for the daily quota, section 5's example, which does not clear until UTC midnight). LinkedIn sends
  no ``Retry-After``.
- ``GET /rest/dmpSegments/{segmentId}``: the segment (``id``, ``name``, ``account``, ``type``,
  ``sourcePlatform``, ``accessPolicy``, ``created``/``lastModified`` in epoch ms, ``inputCount``) with one
  ``destinations`` entry ``{"destination": "LINKEDIN", "status", "destinationSegmentId": "urn:li:adSegment:..",
  "matchedCount", "audienceSize", "created", "lastModified"}`` (the DMP segment destination status LinkedIn
  documents: BUILDING, UPDATING, READY, FAILED, ARCHIVED, EXPIRED). After a ``/users`` batch changes
  members the destination is ``UPDATING`` for `update_polls` reads of the segment, then ``READY`` (or
  ``FAILED`` when `fail_next_update` armed it, the members then unchanged); the changes take effect at
  ``READY``. With ``update_polls=0`` (the default) they take effect at once and the segment stays ``READY``.
- ``GET /rest/dmpSegments?q=account&account=<urn:li:sponsoredAccount:..>`` (optional ``sourcePlatform``,
  ``start``, ``count``): the account's segments by id, each as the GET above shows it (and each such read
  moves an update on as that GET does), in ``{"paging": {"start", "count", "total", "links": []},
  "elements": [...]}`` (LinkedIn's "Find DMP Segments by Account", paged by ``start``/``count``; the body as
  in LinkedIn's Postman collection). ``count`` defaults to 10; more than `FINDER_COUNT_MAX` (100) is a 400:
  an emulator choice, LinkedIn does not document the cap. An account without segments (or not the demo's
  `DEMO_AD_ACCOUNT`) has none.
- Other errors: unknown segment **404**, malformed body or more than `MAX_ELEMENTS` elements **400**
  (the element limit is an assumption: LinkedIn documents batch sizes per product, not here).

Control API (tests and the demo): ``GET /__sandbox__/members/<segment id>``, ``GET /__sandbox__/removals``,
``POST /__sandbox__/seed-demo``, ``add-members``, ``fail-next-element`` (``{"segment", "status",
"message"}``: the next element sent to that segment gets that status), ``fail-next-update``
(``{"segment"}``: its next update ends ``FAILED``), ``expire-token``, ``revoke-token``,
``exhaust-daily``; and the matching Python methods.

    python -m sandbox.linkedin --port 8767     # seeded with the demo segments
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sandbox.audiences import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT, demo_members, hash_email
from sandbox.kit import DailyCounter, Request, Response, Vendor, WindowLimiter, bearer_token, demo_cli, serve_demo

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "DEMO_SEGMENTS",
    "DEMO_TOKEN",
    "DEMO_VERSION",
    "ERASURE_SUBJECT",
    "LinkedInSandbox",
    "hash_email",
    "main",
]

DEMO_TOKEN = "AQXsandboxDemoLinkedInAccessToken-dmp-segments-0001"
"""The 3-legged OAuth access token (scope ``rw_dmp_segments``) the demo sandbox accepts."""

DEMO_AD_ACCOUNT = "urn:li:sponsoredAccount:507404993"
DEMO_SEGMENTS: dict[str, str] = {
    "8001": "Newsletter subscribers (matched)",
    "8002": "Website visitors (matched)",
    "8003": "Event attendees (matched)",
}
"""DMP segment id -> name (URNs ``urn:li:dmpSegment:<id>``)."""


def _months(first: tuple[int, int], last: tuple[int, int]) -> tuple[str, ...]:
    year, month = first
    out = []
    while (year, month) <= last:
        out.append(f"{year}{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(out)


ACTIVE_VERSIONS: tuple[str, ...] = _months((2025, 8), (2026, 7))
"""Marketing API versions the sandbox serves (LinkedIn keeps each about a year, then answers 426)."""
LATEST_VERSION = ACTIVE_VERSIONS[-1]
DEMO_VERSION = "202604"
MAX_ELEMENTS = 5_000
ID_TYPES = {"SHA256_EMAIL": 64, "SHA512_EMAIL": 128, "GOOGLE_AID": 0}

_USERS_PATH = re.compile(r"^/rest/dmpSegments/(?P<id>\d+)/users$")
_SEGMENT_PATH = re.compile(r"^/rest/dmpSegments/(?P<id>\d+)$")
_ACCOUNT_URN = re.compile(r"urn:li:sponsoredAccount:\d{1,20}")
FINDER_COUNT_MAX = 100
_VERSION = re.compile(r"^(?P<month>\d{6})(?:\.(?P<rev>\d{2}))?$")


class LinkedInSandbox(Vendor):
    """LinkedIn's DMP segment users API on loopback.

    Args:
        tokens: access tokens accepted.
        active_versions: ``LinkedIn-Version`` values served (YYYYMM; ``YYYYMM.RR`` revisions of them too).
        segments: segment id -> name.
        per_minute_limit, window_seconds: the per-member ``/users`` window (500 per 60 s by default).
        daily_limit: the application's daily quota of calls; None for none.
        update_polls: reads of a segment that see it UPDATING after a change, before READY.
        seed_demo_data: start with `seed_demo()` applied.
    """

    name = "linkedin"

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEMO_TOKEN,),
        active_versions: Iterable[str] = ACTIVE_VERSIONS,
        segments: Mapping[str, str] = DEMO_SEGMENTS,
        per_minute_limit: int = 500,
        window_seconds: float = 60.0,
        daily_limit: int | None = None,
        update_polls: int = 0,
        seed_demo_data: bool = False,
    ) -> None:
        super().__init__()
        self.tokens = set(tokens)
        self.expired_tokens: set[str] = set()
        self.revoked_tokens: set[str] = set()
        self.active_versions = set(active_versions)
        self.segment_names = dict(segments)
        self.per_minute_limit, self.window_seconds = per_minute_limit, window_seconds
        self.daily_limit = daily_limit
        self._daily = DailyCounter()
        self._window = WindowLimiter(per_minute_limit, window_seconds)
        self._lock = threading.RLock()
        self._members: dict[str, set[str]] = {sid: set() for sid in self.segment_names}
        self._removals: list[dict[str, str]] = []
        self._fail_next: dict[str, list[tuple[int, str]]] = {}
        self.update_polls = update_polls
        self._updates: dict[str, _Update] = {}  # segment id -> its change not yet READY
        self._fail_update: set[str] = set()
        self._status: dict[str, str] = dict.fromkeys(self.segment_names, "READY")
        self._modified: dict[str, int] = dict.fromkeys(self.segment_names, _now_ms())
        self.install(seed_demo_data)

    def routes(self) -> None:
        self.router.add("POST", _USERS_PATH.pattern[1:-1], self._users)
        self.router.add("GET", _SEGMENT_PATH.pattern[1:-1], self._segment)
        self.router.add("GET", "/rest/dmpSegments", self._find_by_account)
        self._controls()

    # --- kit hooks ------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        if not request.path.startswith("/rest/"):
            return None
        version = request.header("linkedin-version")
        if not version:
            return self.error(400, "A version must be present. Please specify a version by adding the "
                                   "LinkedIn-Version header.", code="VERSION_MISSING",
                              headers={"X-Restli-Gateway-Error": "true"})
        match = _VERSION.match(version.strip())
        if match is None or match.group("month") not in self.active_versions:
            shown = f"{match.group('month')}{match.group('rev') or '01'}" if match else version.strip()
            return self.error(426, f"Requested version {shown} is not active", code="NONEXISTENT_VERSION")
        header = request.header("authorization") or ""
        token = bearer_token(request)
        if not header.strip():
            return Response.json({"message": "Empty oauth2_access_token", "serviceErrorCode": 401, "status": 401}, 401)
        if not header.lower().startswith("bearer "):
            return Response.json({"message": "Unknown authentication scheme", "serviceErrorCode": 401, "status": 401},
                                 401)
        if token in self.revoked_tokens:
            return self.error(401, "The token used in the request has been revoked by the user",
                              code="REVOKED_ACCESS_TOKEN", service_code=65602)
        if token in self.expired_tokens:
            return self.error(401, "The token used in the request has expired", code="EXPIRED_ACCESS_TOKEN",
                              service_code=65601)
        if token not in self.tokens:
            return self.error(401, "Invalid access token", code="INVALID_ACCESS_TOKEN", service_code=65600)
        if (request.header("x-restli-protocol-version") or "").strip() != "2.0.0":
            return self.error(400, "This resource requires Rest.li protocol 2.0.0: set the "
                                   "X-Restli-Protocol-Version header to 2.0.0")
        return None

    def limit(self, request: Request) -> Response | None:
        if not request.path.startswith("/rest/"):
            return None
        if not self._daily.take(self.daily_limit):
            return self._throttle("APPLICATION", "DAY")
        if _USERS_PATH.match(request.path):
            ok, _wait, _remaining = self._window.acquire()
            if not ok:
                return self._throttle("MEMBER", "MINUTE")
        return None

    def decorate(self, request: Request, response: Response) -> None:
        response.headers.setdefault("X-RestLi-Protocol-Version", "2.0.0")
        response.headers.setdefault("X-LI-UUID", uuid.uuid4().hex)

    def throttled(self, request: Request) -> Response:
        return self._throttle("MEMBER", "MINUTE")

    def expired(self, request: Request) -> Response:
        return self.error(401, "The token used in the request has expired", code="EXPIRED_ACCESS_TOKEN",
                          service_code=65601)

    def server_error(self, request: Request) -> Response:
        return self.error(500, "Internal Server Error", code="INTERNAL_SERVER_ERROR")

    def not_found(self, request: Request) -> Response:
        return self.error(404, "Not Found", code="NOT_FOUND")

    def reset_state(self) -> None:
        self._window.reset()
        self._daily.reset()

    def _controls(self) -> None:
        def add_members(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.add_members(str(body["segment"]), [str(h) for h in body["hashes"]])
            return {"added": len(body["hashes"])}

        def fail_next_element(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.fail_next_element(str(body["segment"]), int(body.get("status", 500)),
                                   str(body.get("message", "Internal error while processing the element")))
            return {"armed": True}

        def fail_next_update(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.fail_next_update(str(body["segment"]))
            return {"armed": True}

        def mark(tokens: str, answer: str) -> Callable[[dict[str, Any], object], dict[str, Any]]:
            def marked(body: dict[str, Any], _: object) -> dict[str, Any]:
                getattr(self, tokens).add(str(body.get("token", DEMO_TOKEN)))  # tests may replace the set
                return {answer: True}
            return marked

        def exhaust_daily(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.exhaust_daily()
            return {"exhausted": True}

        on = self.on_control
        on("GET", "members/(?P<segment>.+)", lambda _, p: {"segment": f"urn:li:dmpSegment:{p['segment']}",
                                                           "members": self.members(p["segment"])})
        on("GET", "removals", lambda body, _: {"removals": self.removals()})
        on("POST", "seed-demo", lambda body, _: self.seed_demo(int(body.get("seed", 7))))
        on("POST", "add-members", add_members)
        on("POST", "fail-next-element", fail_next_element)
        on("POST", "fail-next-update", fail_next_update)
        on("POST", "expire-token", mark("expired_tokens", "expired"))
        on("POST", "revoke-token", mark("revoked_tokens", "revoked"))
        on("POST", "exhaust-daily", exhaust_daily)

    # --- Python control -------------------------------------------------------------------------

    def members(self, segment: str) -> list[str]:
        with self._lock:
            return sorted(self._members[segment])

    def add_members(self, segment: str, hashes: Iterable[str]) -> None:
        with self._lock:
            self._members[segment].update(hashes)

    def removals(self) -> list[dict[str, str]]:
        """Every REMOVE element accepted, in order: segment, idType, idValue."""
        with self._lock:
            return [dict(r) for r in self._removals]

    def fail_next_element(self, segment: str, status: int = 500,
                          message: str = "Internal error while processing the element") -> None:
        """The next element sent to `segment` gets `status` (the other elements of its batch go through)."""
        with self._lock:
            if segment not in self._members:
                raise KeyError(segment)
            self._fail_next.setdefault(segment, []).append((status, message))

    def fail_next_update(self, segment: str) -> None:
        """The next change of `segment` ends with the destination FAILED, its members unchanged."""
        with self._lock:
            if segment not in self._members:
                raise KeyError(segment)
            self._fail_update.add(segment)

    def segment_status(self, segment: str) -> str:
        with self._lock:
            return self._status[segment]

    def exhaust_daily(self) -> None:
        self.daily_limit = self._daily.exhaust(self.daily_limit)

    def seed_demo(self, seed: int = 7) -> dict[str, Any]:
        """Forget every member, then fill each segment: the two subjects, the decoys, ~40 others."""
        rng = random.Random(seed)
        with self._lock:
            self._members = {sid: set() for sid in self.segment_names}
            self._removals = []
            self._fail_next = {}
            self._updates, self._fail_update = {}, set()
            self._status = dict.fromkeys(self.segment_names, "READY")
            for members in self._members.values():
                members.update(demo_members(rng))
            return {"segments": {sid: len(m) for sid, m in self._members.items()}}

    # --- answers --------------------------------------------------------------------------------

    def error(self, status: int, message: str, *, code: str | None = None, service_code: int | None = None,
              headers: Mapping[str, str] | None = None) -> Response:
        """LinkedIn's error body: status, message, and serviceErrorCode / code where LinkedIn gives them."""
        body: dict[str, Any] = {"status": status}
        if service_code is not None:
            body["serviceErrorCode"] = service_code
        if code is not None:
            body["code"] = code
        body["message"] = message
        return Response.json(body, status, {"X-LI-UUID": uuid.uuid4().hex, **(headers or {})})

    def _throttle(self, scope: str, period: str) -> Response:
        return self.error(429, f"Resource level throttle {scope} {period} limit for calls to this resource is reached.",
                          code="TOO_MANY_REQUESTS", service_code=101)

    # --- the resource -----------------------------------------------------------------------------

    def _users(self, request: Request) -> Response:
        method = (request.header("x-restli-method") or "").strip().upper()
        if method != "BATCH_CREATE":
            return self.error(400, "Unable to read the request body as a single entity: a batch of elements needs "
                                   "the X-RestLi-Method: BATCH_CREATE header")
        segment = request.params["id"]
        with self._lock:
            if segment not in self._members:
                return self.error(404, f"Could not find entity urn:li:dmpSegment:{segment}", code="NOT_FOUND")
            try:
                body = request.json()
            except ValueError:
                return self.error(400, "Malformed JSON in the request body")
            elements = body.get("elements") if isinstance(body, dict) else None
            if not isinstance(elements, list) or not elements:
                return self.error(400, "The request body must hold a non-empty 'elements' array")
            if len(elements) > MAX_ELEMENTS:
                return self.error(400, f"A batch may hold at most {MAX_ELEMENTS} elements")
            changes: list[tuple[str, str]] = []
            statuses = [self._element(segment, element, changes) for element in elements]
            if changes:
                self._change(segment, changes)
        return Response.json({"elements": statuses})

    def _change(self, segment: str, changes: list[tuple[str, str]]) -> None:
        """Start (or join) the segment's update; at once when `update_polls` is 0."""
        update = self._updates.setdefault(segment, _Update())
        update.changes.extend(changes)
        update.reads_left = self.update_polls
        self._status[segment], self._modified[segment] = "UPDATING", _now_ms()
        if self.update_polls <= 0:
            self._finish_update(segment)

    def _finish_update(self, segment: str) -> None:
        update = self._updates.pop(segment)
        self._modified[segment] = _now_ms()
        if segment in self._fail_update:
            self._fail_update.discard(segment)
            self._status[segment] = "FAILED"
            return
        members = self._members[segment]
        for action, value in update.changes:
            if action == "ADD":
                members.add(value)
            else:
                members.discard(value)
                self._removals.append({"segment": f"urn:li:dmpSegment:{segment}", "idType": "SHA256_EMAIL",
                                       "idValue": value})
        self._status[segment] = "READY"

    def _segment(self, request: Request) -> Response:
        segment = request.params["id"]
        with self._lock:
            if segment not in self._members:
                return self.error(404, f"Could not find entity urn:li:dmpSegment:{segment}", code="NOT_FOUND")
            return Response.json(self._read(segment))

    def _find_by_account(self, request: Request) -> Response:
        """``GET /rest/dmpSegments?q=account&account=<sponsoredAccount URN>[&sourcePlatform=][&start=&count=]``:
        the account's segments by id, each read as ``GET /rest/dmpSegments/{id}`` reads it."""
        if request.arg("q") != "account":
            return self.error(400, "Query parameter q must name a finder of dmpSegments (account)",
                              code="ILLEGAL_ARGUMENT")
        account = request.arg("account") or ""
        if not _ACCOUNT_URN.fullmatch(account):
            return self.error(400, "account must be a sponsoredAccount URN", code="ILLEGAL_ARGUMENT")
        start, count = request.arg("start", "0") or "0", request.arg("count", "10") or "10"
        if not (start.isdigit() and count.isdigit() and 1 <= int(count) <= FINDER_COUNT_MAX):
            return self.error(400, f"start must be >= 0 and count between 1 and {FINDER_COUNT_MAX}",
                              code="ILLEGAL_ARGUMENT")
        platform = request.arg("sourcePlatform")
        with self._lock:
            ids = sorted((s for s in self._members if account == DEMO_AD_ACCOUNT), key=int)
            if platform is not None and platform != "LIST_UPLOAD":
                ids = []
            page = ids[int(start): int(start) + int(count)]
            elements = [self._read(segment) for segment in page]
        return Response.json({"paging": {"start": int(start), "count": int(count), "total": len(ids), "links": []},
                              "elements": elements})

    def _read(self, segment: str) -> dict[str, Any]:
        """The segment as LinkedIn shows it; a read moves an update on (UPDATING for `update_polls` reads)."""
        with self._lock:
            update = self._updates.get(segment)
            if update is not None:
                if update.reads_left <= 0:
                    self._finish_update(segment)
                else:
                    update.reads_left -= 1
            status, modified, size = self._status[segment], self._modified[segment], len(self._members[segment])
        created = 1_700_000_000_000 + int(segment)
        return {
            "id": int(segment), "name": self.segment_names[segment], "account": DEMO_AD_ACCOUNT,
            "type": "USER", "sourcePlatform": "LIST_UPLOAD", "accessPolicy": "PRIVATE",
            "created": created, "lastModified": modified, "inputCount": size,
            "destinations": [{"destination": "LINKEDIN", "status": status,
                              "destinationSegmentId": f"urn:li:adSegment:{int(segment) + 90_000}",
                              "matchedCount": size, "audienceSize": size, "created": created,
                              "lastModified": modified}],
        }

    def _element(self, segment: str, element: Any, changes: list[tuple[str, str]]) -> dict[str, Any]:
        queued = self._fail_next.get(segment)
        if queued:
            status, message = queued.pop(0)
            return {"status": status, "error": {"message": message, "status": status}}
        if not isinstance(element, dict) or element.get("action") not in ("ADD", "REMOVE"):
            return _element_error(400, "action must be ADD or REMOVE")
        ids = element.get("userIds")
        if not isinstance(ids, list) or not ids:
            return _element_error(400, "userIds must hold at least one id")
        values = []
        for user_id in ids:
            id_type = user_id.get("idType") if isinstance(user_id, dict) else None
            value = str(user_id.get("idValue") or "") if isinstance(user_id, dict) else ""
            if id_type not in ID_TYPES:
                return _element_error(400, "idType is not a supported identifier type")
            width = ID_TYPES[id_type]
            if width and not re.fullmatch(rf"[0-9a-fA-F]{{{width}}}", value):
                return _element_error(400, f"idValue is not a valid {id_type} ({width} hexadecimal characters)")
            values.append((id_type, value.lower()))
        # The sandbox keeps SHA-256 e-mail members only; the change takes effect when the segment is READY.
        changes.extend((element["action"], value) for id_type, value in values if id_type == "SHA256_EMAIL")
        return {"status": 201}


class _Update:
    """A segment's accepted changes, applied when its destination turns READY."""

    __slots__ = ("changes", "reads_left")

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self.reads_left = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _element_error(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "error": {"message": message, "status": status}}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.linkedin --port N`: serve the demo segments until interrupted."""
    parser = demo_cli("linkedin", main.__doc__)
    parser.add_argument("--per-minute", type=int, default=500, help="/users calls per minute per member")
    args = parser.parse_args(argv)
    return serve_demo(LinkedInSandbox(per_minute_limit=args.per_minute), args.port, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
