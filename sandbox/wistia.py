"""A loopback emulator of Wistia's Stats API (visitors and events), speaking its wire formats
(vendor-apis.md section 7; Wistia's published OpenAPI 2026-01).

What it serves, under the modern base path ``/modern`` (header-versioned with ``X-Wistia-Api-Version``;
the version each call asked for is counted in the stats as ``api_version:<value>``, none as ``newest``):

- ``GET /modern/stats/visitors?search=&filter=&per_page=&page=``: a **bare JSON array** of visitors
  ``{visitor_key, created_at, last_active_at, last_event_key, load_count, play_count,
  visitor_identity:{name, email, org:{name, title}}, user_agent_details:{browser, browser_version,
  platform, mobile}}``. ``filter`` is one of ``has_name``, ``has_email``, ``identified_by_email_gate``.
- ``GET /modern/stats/visitors/{visitorKey}``: one visitor; 404 when there is none.
- ``GET /modern/stats/events?visitor_key=&media_id=&start_date=&end_date=&per_page=&page=``: a bare JSON
  array of events ``{received_at, event_key, visitor_key, embed_url, percent_viewed, ip, org, country,
  region, city, lat, lon, email, media_id, media_name, media_url, iframe_heatmap_url, thumbnail,
  conversion_type, conversion_data, user_agent_details}``.
- ``GET /modern/stats/events/{eventKey}``: one event; 404 when there is none.
- The same four under the legacy frozen ``/v1/...json`` paths (``/v1/stats/visitors.json``...).

There is **no delete endpoint** (the Stats paths are GET-only in the 2026-01 spec): any other method on
them is refused. Erasure is a request to Wistia's support; the control action ``delete-visitor`` below is
what Wistia does when it carries one out, so tests can simulate the manual step.

Auth: ``Authorization: Bearer <API token>``; HTTP Basic with the token as password is accepted too
(legacy). A missing or unknown token is a 401 ``{"code":"unauthorized_credentials","error":"Invalid
credentials."}``; a token without the "Read detailed stats" permission a 401 ``unauthorized_scope``; an
inactive account a 401 ``account_inactive``.

Limits: 600 calls per rolling minute per account (`rate_limit`/`rate_window`); past it, a 429 with a
**text/plain** body ``Rate limit exceeded`` and ``Retry-After`` (whole seconds unless
`fractional_retry_after`, which lets fast tests wait 0.05 s). The kit's injected throttling answers the same.

Behaviour chosen where Wistia's documentation is silent (each documented here, most configurable):

- **Search is fuzzy**: ``search`` matches the visitor's name or e-mail as a case-insensitive substring,
  with ``%`` and ``_`` acting as SQL LIKE wildcards (the worst plausible case: a search for
  ``ada.lovelace@example.com`` also returns ``xada.lovelace@example.com`` and
  ``ada.lovelace@example.com.attacker.test``, and one for ``%@example.com`` returns everyone at
  example.com). Clients must compare the e-mail themselves.
- **Paging**: ``page`` from 1, ``per_page`` default 100, silently capped at 100 (as the spec says); a page
  past the end is ``[]``. No total and no link header: a short page is the last. A non-integer or
  non-positive ``page``/``per_page``, an unknown ``filter`` and a malformed date are a 422
  ``{"error": ...}`` (the spec's 422 for events; visitors answer the same way here).
- **Order**: visitors newest-created first, events newest first (ties by key).
- **Dates**: ``start_date``/``end_date`` are ``YYYY-MM-DD``, both inclusive (UTC days); absent means
  unbounded. Only events of the last 730 days (Wistia's 2-year retention, from `today`) are ever served.
- **Errors**: 404 and the kit's 405 carry ``{"error": ...}`` ("most other errors" per section 7); injected
  server errors are a 500 ``{"error":"Internal server error"}``; an injected expired session is the 401
  ``unauthorized_credentials``.
- Events without a conversion have ``conversion_type`` and ``conversion_data`` ``null``.

Control actions (under ``/__sandbox__/``, besides the kit's stats/faults/reset):
``POST seed-demo {"seed": 7}``, ``POST add-visitor {"email", "name", "org_name", "org_title", "events",
"created_at", "last_active_at"}``, ``POST add-events {"visitor_key", "count", "received_at"}``,
``POST delete-visitor {"visitor_key"}`` (the visitor and all its events, as Wistia's support would),
``POST delete-event {"event_key"}``, ``POST account {"active": false}``, ``GET state``.

Sandboxes know vendor wire formats only, never the project's own code.

    python -m sandbox.wistia --port 8767     # seeded with the demo data, token DEMO_TOKEN
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import (
    Refusal,
    Request,
    Response,
    Vendor,
    WindowLimiter,
    bearer_token,
    demo_cli,
    retry_after,
    serve_demo,
)
from sandbox.people import FIRST_NAMES, MARKETING_COMPANIES, decoy_name, new_person

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "DEMO_TOKEN",
    "ERASURE_SUBJECT",
    "EVENT_FIELDS",
    "LIMITED_TOKEN",
    "VISITOR_FIELDS",
    "WistiaSandbox",
    "main",
]

DEMO_TOKEN = "wistia-sandbox-demo-0000000000000000000000000000000000000000000000000007"
"""The API token the demo sandbox accepts (with the "Read detailed stats" permission)."""

LIMITED_TOKEN = "wistia-sandbox-nostats-000000000000000000000000000000000000000000000000"
"""A token the sandbox knows but that lacks "Read detailed stats" (401 ``unauthorized_scope``)."""

ACCOUNT = "precision"
"""The demo account's subdomain (``precision.wistia.com``)."""

DECOY_EMAILS: tuple[str, ...] = (
    "ada.lovelace@example.com.attacker.test",  # the subject's address as a prefix
    "xada.lovelace@example.com",  # ... as a suffix
    "%@example.com",  # LIKE's any-string wildcard: as a subject it must match only itself
    "ada_lovelace@example.com",  # `_` is LIKE's single-character wildcard
    "ada.lovelace@example.co",  # a neighbouring top-level domain
)
"""Visitors (each with events) that no exact match on the demo subjects may ever touch. A visitor named
"Ada Lovelace" with another address (``ada@lovelace-family.example``) is seeded too: the name search finds her."""

VISITOR_FIELDS: tuple[str, ...] = ("visitor_key", "created_at", "last_active_at", "last_event_key", "load_count",
                                   "play_count", "visitor_identity", "user_agent_details")
EVENT_FIELDS: tuple[str, ...] = (
    "received_at", "event_key", "visitor_key", "embed_url", "percent_viewed", "ip", "org", "country", "region",
    "city", "lat", "lon", "email", "media_id", "media_name", "media_url", "iframe_heatmap_url", "thumbnail",
    "conversion_type", "conversion_data", "user_agent_details",
)  # fmt: skip

PERMISSION = "read_detailed_stats"
PAGE_MAX = 100
RETENTION_DAYS = 730
VISITOR_FILTERS = frozenset({"has_name", "has_email", "identified_by_email_gate"})
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_KEY = r"(?P<key>[^/]+?)"
_FIRST_NAMES = FIRST_NAMES[:22]  # the names Wistia's demo draws from (another list would seed other people)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- state ------------------------------------------------------------------------------------------


@dataclass
class _Visitor:
    key: str
    created_at: datetime
    name: str
    email: str | None
    org_name: str | None
    org_title: str | None
    browser: str
    browser_version: str
    platform: str
    mobile: bool
    extra_loads: int = 0
    last_active_at: datetime | None = None  # set explicitly, else from the newest event
    email_gate: bool = False

    def to_json(self, events: Sequence[_Event]) -> dict[str, Any]:
        newest = max(events, key=lambda e: (e.received_at, e.key)) if events else None
        active = self.last_active_at or (newest.received_at if newest else None)
        return {
            "visitor_key": self.key,
            "created_at": _iso(self.created_at),
            "last_active_at": _iso(active) if active else None,
            "last_event_key": newest.key if newest else None,
            "load_count": len(events) + self.extra_loads,
            "play_count": len(events),
            "visitor_identity": {"name": self.name, "email": self.email,
                                 "org": {"name": self.org_name, "title": self.org_title}},
            "user_agent_details": {"browser": self.browser, "browser_version": self.browser_version,
                                   "platform": self.platform, "mobile": self.mobile},
        }


@dataclass
class _Event:
    key: str
    visitor_key: str
    received_at: datetime
    fields: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"received_at": _iso(self.received_at), "event_key": self.key, "visitor_key": self.visitor_key,
                **self.fields}


@dataclass
class _State:
    visitors: dict[str, _Visitor] = field(default_factory=dict)
    events: dict[str, _Event] = field(default_factory=dict)
    by_visitor: dict[str, list[str]] = field(default_factory=dict)


# --- media, places, agents (seed material) ------------------------------------------------------------

_MEDIAS = (
    ("k3x9q2m7ta", "QSFP28 100G-LR4: installation walkthrough"),
    ("p8d4w1z6nc", "MPO-12 trunk cables explained"),
    ("r2v7h5j9sb", "Reading DOM values on SFP28 optics"),
    ("t6n1c8f3lq", "400G-DR4 in Arista switches"),
    ("w9b2y4g7ke", "Precision Optical: company overview"),
)
_PAGES = ("https://www.precision-optical.example/products/qsfp28-lr4",
          "https://www.precision-optical.example/learn/mpo-trunks",
          "https://www.precision-optical.example/learn/dom",
          "https://www.precision-optical.example/blog/400g-dr4-arista",
          "https://www.precision-optical.example/about")
_PLACES = (("GB", "England", "London", 51.5072, -0.1276), ("GB", "England", "Leeds", 53.8008, -1.5491),
           ("US", "TX", "Austin", 30.2672, -97.7431), ("NL", "North Holland", "Amsterdam", 52.3676, 4.9041),
           ("DE", "Berlin", "Berlin", 52.52, 13.405), ("CA", "ON", "Toronto", 43.6532, -79.3832))
_AGENTS = (("Chrome", "131.0", "Windows", False), ("Firefox", "133.0", "Linux", False),
           ("Safari", "18.1", "Mac", False), ("Mobile Safari", "18.1", "iOS", True),
           ("Edge", "131.0", "Windows", False), ("Chrome Mobile", "131.0", "Android", True))
class WistiaSandbox(Vendor):
    """Wistia's Stats API on loopback: visitors, events, fuzzy search, paging, 600/min, no delete.

    Args:
        tokens: API tokens accepted with the "Read detailed stats" permission.
        limited_tokens: tokens accepted but without it (401 ``unauthorized_scope`` on stats calls).
        rate_limit, rate_window: calls per rolling window per account (Wistia: 600 per 60 s).
        throttle_retry_after: Retry-After of injected throttling (faults), in seconds.
        fractional_retry_after: send Retry-After with decimals (fast tests) instead of whole seconds.
        today: the sandbox's date (events older than 730 days before it are not served); None: the real date.
        seed_demo_data: start with `seed_demo()` applied.
    """

    name = "wistia"

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEMO_TOKEN,),
        limited_tokens: Iterable[str] = (LIMITED_TOKEN,),
        rate_limit: int = 600,
        rate_window: float = 60.0,
        throttle_retry_after: float = 1.0,
        fractional_retry_after: bool = False,
        today: date | None = None,
        seed_demo_data: bool = False,
    ) -> None:
        super().__init__()
        self.tokens = set(tokens)
        self.limited_tokens = set(limited_tokens)
        self.account_active = True
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.throttle_retry_after = throttle_retry_after
        self.fractional_retry_after = fractional_retry_after
        self._today = today
        self._window = WindowLimiter(rate_limit, rate_window)
        self._lock = threading.RLock()
        self._state = _State()
        self._rng = random.Random(0)
        self.install(seed_demo_data)

    def today(self) -> date:
        return self._today or datetime.now(UTC).date()

    # --- routes ---------------------------------------------------------------------------------------

    def routes(self) -> None:
        add = self.router.add
        for prefix, suffix in (("/modern", ""), ("/v1", r"\.json")):
            add("GET", rf"{prefix}/stats/visitors{suffix}", self._list_visitors)
            add("GET", rf"{prefix}/stats/visitors/{_KEY}{suffix}", self._show_visitor)
            add("GET", rf"{prefix}/stats/events{suffix}", self._list_events)
            add("GET", rf"{prefix}/stats/events/{_KEY}{suffix}", self._show_event)
        self._controls()

    # --- kit hooks ------------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        token = _token_of(request)
        if token in self.tokens or token in self.limited_tokens:
            if not self.account_active:
                return _unauthorized("account_inactive", "This account is not active.")
            if token in self.limited_tokens:
                return _unauthorized("unauthorized_scope",
                                     "This API token does not have the permission required: Read detailed stats.")
            version = request.header("x-wistia-api-version")
            self.count(f"api_version:{version}" if version else "api_version:newest")
            return None
        return _unauthorized("unauthorized_credentials", "Invalid credentials.")

    def limit(self, request: Request) -> Response | None:
        ok, wait, _remaining = self._window.acquire()
        return None if ok else self._rate_limited(wait)

    def throttled(self, request: Request) -> Response:
        return self._rate_limited(self.throttle_retry_after)

    def expired(self, request: Request) -> Response:
        return _unauthorized("unauthorized_credentials", "Invalid credentials.")

    def server_error(self, request: Request) -> Response:
        return Response.json({"error": "Internal server error"}, 500)

    def not_found(self, request: Request) -> Response:
        return Response.json({"error": "Not found"}, 404)

    def reset_state(self) -> None:
        self._window.reset()
        self.account_active = True

    def _controls(self) -> None:
        def add_visitor(body: dict[str, Any], _: object) -> dict[str, Any]:
            key = self.add_visitor(body.get("email"), name=body.get("name"), org_name=body.get("org_name"),
                                   org_title=body.get("org_title"), created_at=body.get("created_at"),
                                   last_active_at=body.get("last_active_at"))
            return {"visitor_key": key, "event_keys": self.add_events(key, int(body.get("events", 0)))}

        def add_events(body: dict[str, Any], _: object) -> dict[str, Any]:
            keys = self.add_events(str(body["visitor_key"]), int(body["count"]), received_at=body.get("received_at"))
            return {"count": len(keys), "event_keys": keys}

        def delete_visitor(body: dict[str, Any], _: object) -> dict[str, Any]:
            deleted, count = self.delete_visitor(str(body["visitor_key"]))
            return {"deleted": deleted, "events_deleted": count}

        def account(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.account_active = bool(body.get("active", True))
            return {"active": self.account_active}

        on = self.on_control
        on("POST", "seed-demo", lambda body, _: self.seed_demo(int(body.get("seed", 7))))
        on("POST", "add-visitor", add_visitor)
        on("POST", "add-events", add_events)
        on("POST", "delete-visitor", delete_visitor)
        on("POST", "delete-event", lambda body, _: {"deleted": self.delete_event(str(body["event_key"]))})
        on("POST", "account", account)
        on("GET", "state", lambda body, _: self.summary())

    # --- answers --------------------------------------------------------------------------------------

    def _rate_limited(self, wait: float) -> Response:
        response = Response.text("Rate limit exceeded", 429)
        response.headers["Retry-After"] = retry_after(wait, self.fractional_retry_after)
        return response

    def _list_visitors(self, request: Request) -> Response:
        self.count("list_visitors")
        page, per_page = _paging(request)
        wanted = request.arg("filter")
        if wanted not in (None, "") and wanted not in VISITOR_FILTERS:
            raise Refusal(_unprocessable(f"filter must be one of: {', '.join(sorted(VISITOR_FILTERS))}"))
        search = request.arg("search")
        matcher = _like(search) if search else None
        with self._lock:
            chosen = []
            for visitor in self._state.visitors.values():
                if wanted == "has_email" and not visitor.email:
                    continue
                if wanted == "has_name" and not visitor.name:
                    continue
                if wanted == "identified_by_email_gate" and not visitor.email_gate:
                    continue
                if matcher is not None and not any(matcher.search(v or "") for v in (visitor.name, visitor.email)):
                    continue
                chosen.append(visitor)
            chosen.sort(key=lambda v: (v.created_at, v.key), reverse=True)
            window = chosen[(page - 1) * per_page: page * per_page]
            return Response.json([v.to_json(self._events_of(v.key)) for v in window])

    def _show_visitor(self, request: Request) -> Response:
        self.count("show_visitor")
        with self._lock:
            visitor = self._state.visitors.get(request.params["key"])
            if visitor is None:
                return self.not_found(request)
            return Response.json(visitor.to_json(self._events_of(visitor.key)))

    def _list_events(self, request: Request) -> Response:
        self.count("list_events")
        page, per_page = _paging(request)
        start = _date_arg(request, "start_date")
        end = _date_arg(request, "end_date")
        if start and end and start > end:
            raise Refusal(_unprocessable("start_date must not be after end_date"))
        visitor_key, media_id = request.arg("visitor_key"), request.arg("media_id")
        with self._lock:
            events = (self._events_of(visitor_key) if visitor_key not in (None, "")
                      else [e for e in self._state.events.values() if self._retained(e)])
            chosen = [e for e in events
                      if (not media_id or e.fields["media_id"] == media_id)
                      and (start is None or e.received_at.date() >= start)
                      and (end is None or e.received_at.date() <= end)]
            chosen.sort(key=lambda e: (e.received_at, e.key), reverse=True)
            window = chosen[(page - 1) * per_page: page * per_page]
            return Response.json([e.to_json() for e in window])

    def _show_event(self, request: Request) -> Response:
        self.count("show_event")
        with self._lock:
            event = self._state.events.get(request.params["key"])
            if event is None or not self._retained(event):
                return self.not_found(request)
            return Response.json(event.to_json())

    # --- state helpers --------------------------------------------------------------------------------

    def _retained(self, event: _Event) -> bool:
        return event.received_at.date() >= self.today() - timedelta(days=RETENTION_DAYS)

    def _events_of(self, visitor_key: str | None) -> list[_Event]:
        keys = self._state.by_visitor.get(visitor_key or "", [])
        return [e for e in (self._state.events[k] for k in keys) if self._retained(e)]

    def _key(self, moment: datetime) -> str:
        return f"v{moment:%Y%m%d}_{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    def _moment(self, days_back: int, days_span: int) -> datetime:
        """A moment between `days_back` and `days_back - days_span` days before today."""
        base = datetime.combine(self.today(), time(12), UTC) - timedelta(days=days_back)
        return base + timedelta(seconds=self._rng.randrange(max(days_span, 1) * 86_400))

    # --- the Python side (tests, demo, control API) ---------------------------------------------------

    def add_visitor(self, email: str | None, *, name: str | None = None, org_name: str | None = None,
                    org_title: str | None = None, created_at: Any = None, last_active_at: Any = None,
                    email_gate: bool = False) -> str:
        """A visitor (no events yet); returns its key."""
        with self._lock:
            created = _parse_moment(created_at) if created_at else self._moment(900, 200)
            agent = self._rng.choice(_AGENTS)
            key = self._key(created)
            self._state.visitors[key] = _Visitor(
                key=key, created_at=created, name=name or "", email=email, org_name=org_name, org_title=org_title,
                browser=agent[0], browser_version=agent[1], platform=agent[2], mobile=agent[3],
                extra_loads=self._rng.randint(0, 3), email_gate=email_gate,
                last_active_at=_parse_moment(last_active_at) if last_active_at else None,
            )
            self._state.by_visitor[key] = []
            return key

    def add_events(self, visitor_key: str, count: int, *, received_at: Any = None,
                   conversion_every: int = 0) -> list[str]:
        """`count` play events of a visitor, within the last 700 days unless `received_at` is given."""
        with self._lock:
            visitor = self._state.visitors[visitor_key]
            keys = []
            for number in range(count):
                when = _parse_moment(received_at) if received_at else self._moment(700, 700)
                key = self._key(when)
                media_id, media_name = self._rng.choice(_MEDIAS)
                country, region, city, lat, lon = self._rng.choice(_PLACES)
                converted = bool(conversion_every) and number % conversion_every == 0 and bool(visitor.email)
                first, _, last = (visitor.name or "").partition(" ")
                self._state.events[key] = _Event(key, visitor_key, when, {
                    "embed_url": self._rng.choice(_PAGES),
                    "percent_viewed": round(self._rng.random(), 3),
                    "ip": f"203.0.113.{self._rng.randint(1, 254)}",
                    "org": visitor.org_name or "Unknown ISP",
                    "country": country, "region": region, "city": city, "lat": lat, "lon": lon,
                    "email": visitor.email,
                    "media_id": media_id, "media_name": media_name,
                    "media_url": f"https://{ACCOUNT}.wistia.com/medias/{media_id}",
                    "iframe_heatmap_url": f"https://{ACCOUNT}.wistia.com/stats/heatmap/{quote(key)}",
                    "thumbnail": {"url": f"https://embed-ssl.wistia.com/deliveries/{media_id}.jpg?image_crop_resized=200x120",
                                  "width": 200, "height": 120, "fileSize": 9_876, "contentType": "image/jpeg",
                                  "type": "StillImageFile"},
                    "conversion_type": "pre-roll-email" if converted else None,
                    "conversion_data": ({"email": visitor.email, "first_name": first, "last_name": last,
                                         "is_new_lead": number == 0} if converted else None),
                    "user_agent_details": {"browser": visitor.browser, "browser_version": visitor.browser_version,
                                           "platform": visitor.platform, "mobile": visitor.mobile},
                })
                self._state.by_visitor[visitor_key].append(key)
                if converted:
                    visitor.email_gate = True
                keys.append(key)
            return keys

    def delete_visitor(self, visitor_key: str) -> tuple[bool, int]:
        """What Wistia's support does for a deletion request: the visitor and every event of it go."""
        with self._lock:
            visitor = self._state.visitors.pop(visitor_key, None)
            keys = self._state.by_visitor.pop(visitor_key, [])
            for key in keys:
                self._state.events.pop(key, None)
            return visitor is not None, len(keys)

    def delete_event(self, event_key: str) -> bool:
        with self._lock:
            event = self._state.events.pop(event_key, None)
            if event is None:
                return False
            self._state.by_visitor.get(event.visitor_key, []).remove(event_key)
            return True

    def visitor_keys_with_email(self, email: str) -> list[str]:
        """Keys of the visitors whose e-mail is `email` (trimmed, ignoring case), sorted."""
        wanted = email.strip().lower()
        with self._lock:
            return sorted(v.key for v in self._state.visitors.values()
                          if (v.email or "").strip().lower() == wanted)

    def event_keys_of(self, visitor_key: str) -> list[str]:
        """The visitor's served events, newest first (the order the API lists them)."""
        with self._lock:
            events = sorted(self._events_of(visitor_key), key=lambda e: (e.received_at, e.key), reverse=True)
            return [e.key for e in events]

    def has_visitor(self, visitor_key: str) -> bool:
        with self._lock:
            return visitor_key in self._state.visitors

    def has_event(self, event_key: str) -> bool:
        with self._lock:
            return event_key in self._state.events

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {"visitors": len(self._state.visitors), "events": len(self._state.events)}

    def seed_demo(self, seed: int = 7) -> dict[str, int]:
        """Forget everything, then load the demo account: the two subjects, the decoys, ~40 others."""
        with self._lock:
            self._state = _State()
            self._rng = random.Random(seed)
            _seed(self)
            return self.summary()


def _seed(sandbox: WistiaSandbox) -> None:
    rng = sandbox._rng
    # Ada, the erasure subject: two browsers, so two visitor keys, her address stored with capitals.
    ada_desk = sandbox.add_visitor("Ada.Lovelace@Example.com", name="Ada Lovelace", org_name="Analytical Engines Ltd",
                                   org_title="Mathematician")
    sandbox.add_events(ada_desk, 6, conversion_every=6)
    ada_phone = sandbox.add_visitor("ADA.LOVELACE@EXAMPLE.COM ", name="Ada Lovelace")
    sandbox.add_events(ada_phone, 3)
    # Grace, the access subject.
    grace = sandbox.add_visitor("Grace.Hopper@Example.org", name="Grace Hopper", org_name="Harvard Computation Lab",
                                org_title="Rear Admiral")
    sandbox.add_events(grace, 12, conversion_every=12)
    # Decoys: near matches of the subjects' addresses, and a namesake with another address.
    for number, email in enumerate(DECOY_EMAILS):
        decoy = sandbox.add_visitor(email, name=" ".join(decoy_name(number)), org_name="Decoy Systems")
        sandbox.add_events(decoy, 2)
    namesake = sandbox.add_visitor("ada@lovelace-family.example", name="Ada Lovelace")
    sandbox.add_events(namesake, 1)
    # Everyone else: most identified (an e-mail gate or a tracked campaign link), some anonymous.
    used: set[str] = set()
    for _ in range(40):
        if rng.random() < 0.3:
            anonymous = sandbox.add_visitor(None)
            sandbox.add_events(anonymous, rng.randint(1, 4))
            continue
        first, last, company, email = new_person(rng, used, first_names=_FIRST_NAMES, companies=MARKETING_COMPANIES)
        person = sandbox.add_visitor(email, name=f"{first} {last}", org_name=company,
                                     org_title=rng.choice(("Network Engineer", "IT Director", "CTO", None)))
        sandbox.add_events(person, rng.randint(0, 5), conversion_every=rng.choice((0, 3)))


# --- request helpers -------------------------------------------------------------------------------------


def _token_of(request: Request) -> str:
    header = request.header("authorization") or ""
    if header.lower().startswith("bearer "):
        return bearer_token(request)
    if header.lower().startswith("basic "):  # legacy: any user name, the token as password
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _unauthorized(code: str, message: str) -> Response:
    return Response.json({"code": code, "error": message}, 401)


def _unprocessable(message: str) -> Response:
    return Response.json({"error": message}, 422)


def _paging(request: Request) -> tuple[int, int]:
    values = []
    for name, default in (("page", 1), ("per_page", PAGE_MAX)):
        raw = request.arg(name)
        if raw in (None, ""):
            values.append(default)
            continue
        if not raw.isdigit() or int(raw) < 1:  # type: ignore[union-attr]
            raise Refusal(_unprocessable(f"{name} must be a positive integer"))
        values.append(int(raw))  # type: ignore[arg-type]
    return values[0], min(values[1], PAGE_MAX)


def _date_arg(request: Request, name: str) -> date | None:
    raw = request.arg(name)
    if raw in (None, ""):
        return None
    try:
        if not _DATE.match(raw):  # type: ignore[arg-type]
            raise ValueError(raw)
        return date.fromisoformat(raw)  # type: ignore[arg-type]
    except ValueError:
        raise Refusal(_unprocessable(f"Invalid {name}: use the format YYYY-MM-DD")) from None


def _like(term: str) -> re.Pattern[str]:
    """The search term as Wistia's (emulated) fuzzy search reads it: a substring, `%` and `_` wildcards."""
    pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in term)
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.wistia --port N`: serve the demo account until interrupted."""
    parser = demo_cli("wistia", main.__doc__)
    parser.add_argument("--token", action="append", help=f"accepted API token (default {DEMO_TOKEN})")
    parser.add_argument("--rate-limit", type=int, default=600, help="calls per rolling window (600)")
    parser.add_argument("--rate-window", type=float, default=60.0)
    args = parser.parse_args(argv)
    sandbox = WistiaSandbox(tokens=args.token or (DEMO_TOKEN,), rate_limit=args.rate_limit,
                            rate_window=args.rate_window)
    return serve_demo(sandbox, args.port, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
