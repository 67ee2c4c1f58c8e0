"""A loopback emulator of HubSpot's CRM v3 API, speaking its wire formats (vendor-apis.md section 2).

The real `hubspot-api-client` (12.0.0), unchanged, talks to it once pointed at it::

    hubspot.Client.create(access_token=DEMO_TOKEN, host=server.url, base_url=server.url)

What it serves (paths, methods, status codes and JSON bodies as HubSpot's):

- Objects ``contacts`` and the engagements ``notes``, ``emails``, ``calls``, ``meetings``, ``tasks``
  (also by their singular names and ``0-1``/``0-46``... type ids):
  ``POST /crm/v3/objects/{type}`` (201, with v3 ``associations`` in the body), ``GET|PATCH|DELETE
  /crm/v3/objects/{type}/{id}`` (``idProperty``, ``properties``, ``associations``: the first 100 ids per type,
  then ``paging.next`` with ``after`` and a ``link``, as HubSpot's changelog "Announcing a change to how v3 CRM
  APIs return association data" says; the link's v3 listing is not served), ``POST .../batch/read``
  (200, or 207 with ``errors`` for ids not found), ``.../batch/create``, ``.../batch/archive`` (204; more
  than 100 inputs is a 400 ``VALIDATION_ERROR``), ``.../search``.
- ``POST /crm/v3/objects/contacts/gdpr-delete``: permanent delete plus blocklist (see below).
- ``GET /crm/v3/properties/{type}``: property metadata.
- ``GET /crm/v4/objects/{type}/{id}/associations/{toType}``: v4 associations, paged (what SDK 12's
  ``crm.associations.v4.basic_api.get_page`` calls).
- ``GET /communication-preferences/v3/definitions``, ``GET .../v3/status/email/{email}``,
  ``POST .../v3/unsubscribe`` and ``.../v3/subscribe`` (``{emailAddress, subscriptionId, legalBasis?,
  legalBasisExplanation?}``, the legal basis one of HubSpot's seven and shown back in the status; what SDK
  12's ``communication_preferences`` exposes; HubSpot's newer v4 ``unsubscribe-all`` is not in SDK 12 and not emulated).

Behaviour chosen where HubSpot's documentation is thin (each configurable or documented here):

- **Search**: ``limit`` 1..200 (else 400), default 10; ``after`` is an offset cursor; ``paging`` is absent
  on the last page; a query may page through at most `search_cap` (10,000) results: ``paging.next`` is
  still given at the cap, as HubSpot does, and asking for ``after >= cap`` is a 400 ``VALIDATION_ERROR``.
  ``EQ``/``NEQ``/``IN``/``NOT_IN`` on ``email`` ignore case (as HubSpot's); on other properties they are
  exact. No operator ever does substring matching; ``CONTAINS_TOKEN`` matches whole tokens (``*``
  wildcard allowed). Search answers carry only ``X-HubSpot-Correlation-Id``, as HubSpot's do. Results
  are consistent at once (HubSpot's search index lags a few seconds behind writes).
- **Rate limits**: a rolling window (`window_limit` per `window_seconds`, 100/10 s by default; 110 or 190
  for other tiers) over every call except search; search has its own per-second limit
  (`search_per_second`, 4); a daily cap (`daily_limit`, None for OAuth apps: no daily headers). A 429 body
  names ``policyName`` ``TEN_SECONDLY_ROLLING``, ``SECONDLY`` or ``DAILY`` and the answer carries
  ``Retry-After`` (whole seconds unless `fractional_retry_after`, which lets fast tests use 0.2 s).
- **GDPR delete**: removes the contact for good (also from the archive), and the engagements per
  `gdpr_cascade`: ``"sole"`` (default; HubSpot's documented behaviour as best known: engagements
  associated only with that contact are deleted, shared ones lose the association), ``"all"`` or
  ``"none"``. The contact's e-mail (and, with ``idProperty=email``, the given address even when no
  contact has it) goes on a blocklist; its subscription statuses are dropped. Deleting by an id that does
  not exist is a 404.
- **Blocklist**: creating a contact with a blocklisted address, or setting one on a contact, is refused
  with **400** ``VALIDATION_ERROR`` (error ``INVALID_EMAIL``, message "... blocklisted ..."). HubSpot's
  exact answer here is not documented; 400 was chosen because HubSpot reports other e-mail refusals the
  same way, whereas its 409 means "a contact already has this address".
- **Validation**: unknown properties (``PROPERTY_DOESNT_EXIST``), read-only ones (``READ_ONLY_VALUE``),
  malformed e-mail addresses (``INVALID_EMAIL``) and unknown options (``INVALID_OPTION``) are a 400 with
  HubSpot's "Property values were not valid: [...]" message; a duplicate e-mail is a 409 ``CONFLICT``.
  ``""`` or ``null`` clears a property.
- **Form submissions** are not emulated: HubSpot exposes them per form (``/form-integrations/v1``), not
  per contact, through no SDK 12 API; what a submission stores about a person lands in contact
  properties (``recent_conversion_*``, ``num_conversion_events``), which are emulated.

Tests and the demo add data through the vendor's own create endpoints, or in bulk through the control
API (``POST /__sandbox__/seed-demo``, ``add-contacts``, ``add-engagements``, ``expire-token``,
``GET /__sandbox__/state``) or the matching Python methods.

    python -m sandbox.hubspot --port 8765     # seeded with the demo data, token DEMO_TOKEN
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from sandbox.hubspot_model import (
    CASE_INSENSITIVE,
    LEGAL_BASES,
    PROPERTY_DEFINITIONS,
    PROPERTY_INDEX,
    SUBSCRIPTION_DEFINITIONS,
    CrmObject,
    date_properties,
    default_properties,
    epoch_millis,
    iso_millis,
    now_iso,
)
from sandbox.hubspot_search import (
    id_order,
    int_arg,
    is_search,
    matches_groups,
    matches_query,
    multi_arg,
    sorted_objects,
)
from sandbox.hubspot_seed import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT, DemoSeeder
from sandbox.kit import (
    DailyCounter,
    Refusal,
    Request,
    Response,
    Vendor,
    WindowLimiter,
    bearer_token,
    demo_cli,
    retry_after,
    seconds_to_midnight,
    serve_demo,
)

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "DEMO_TOKEN",
    "ERASURE_SUBJECT",
    "LEGAL_BASES",
    "PROPERTY_DEFINITIONS",
    "SUBSCRIPTION_DEFINITIONS",
    "HubSpotSandbox",
    "is_valid_email",
    "main",
]

DEMO_TOKEN = "pat-na1-5a4db0c3-0000-4000-8000-sandboxdemo01"
"""The private-app access token the demo sandbox accepts."""

PORTAL_ID = 6748263

ENGAGEMENT_TYPES: tuple[str, ...] = ("notes", "emails", "calls", "meetings", "tasks")
OBJECT_TYPES: tuple[str, ...] = ("contacts", *ENGAGEMENT_TYPES)

_TYPE_ALIASES: dict[str, str] = {
    "contacts": "contacts", "contact": "contacts", "0-1": "contacts",
    "notes": "notes", "note": "notes", "0-46": "notes",
    "emails": "emails", "email": "emails", "0-49": "emails",
    "calls": "calls", "call": "calls", "0-48": "calls",
    "meetings": "meetings", "meeting": "meetings", "0-47": "meetings",
    "tasks": "tasks", "task": "tasks", "0-27": "tasks",
}  # fmt: skip
_SINGULAR = {"contacts": "contact", "notes": "note", "emails": "email", "calls": "call",
             "meetings": "meeting", "tasks": "task"}  # fmt: skip

# HUBSPOT_DEFINED association type ids, (from, to) -> id, as HubSpot's documented table.
ASSOCIATION_TYPE_IDS: dict[tuple[str, str], int] = {
    ("contacts", "calls"): 193, ("calls", "contacts"): 194,
    ("contacts", "emails"): 197, ("emails", "contacts"): 198,
    ("contacts", "meetings"): 199, ("meetings", "contacts"): 200,
    ("contacts", "notes"): 201, ("notes", "contacts"): 202,
    ("contacts", "tasks"): 203, ("tasks", "contacts"): 204,
}  # fmt: skip
_TYPE_ID_PAIRS = {type_id: pair for pair, type_id in ASSOCIATION_TYPE_IDS.items()}

SEARCH_OPERATORS = frozenset({
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
})  # fmt: skip
_EMAIL_PROPERTIES = frozenset({"email", "work_email"})
_EMAIL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")  # noqa: E501
_MAX_FILTER_GROUPS, _MAX_FILTERS_PER_GROUP, _MAX_FILTERS = 5, 10, 25
_BATCH_LIMIT = 100
_V4_PAGE_MAX = 500
_V3_ASSOCIATIONS_PAGE = 100  # associated ids per type in a v3 object read, then `paging.next`


def is_valid_email(value: str) -> bool:
    """HubSpot-like e-mail syntax check: no spaces, one @, a dotted domain."""
    return bool(_EMAIL_RE.match(value)) and ".." not in value and len(value) <= 254


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class _State:
    objects: dict[str, dict[str, CrmObject]] = field(default_factory=lambda: {k: {} for k in OBJECT_TYPES})
    archived: dict[str, dict[str, CrmObject]] = field(default_factory=lambda: {k: {} for k in OBJECT_TYPES})
    links: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)  # both directions
    blocklist: set[str] = field(default_factory=set)
    subscriptions: dict[str, dict[str, str]] = field(default_factory=dict)  # email -> id -> SUBSCRIBED|UNSUB..
    legal_bases: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)  # (email, id) -> basis
    next_id: int = 101


class HubSpotSandbox(Vendor):
    """HubSpot's CRM v3 on loopback: contacts, engagements, associations, search, GDPR delete, limits.

    Args:
        tokens: access tokens accepted (``Authorization: Bearer``).
        window_limit, window_seconds: the rolling window (HubSpot: 100 per 10 s; 110, 190 other tiers).
        search_per_second: the separate search limit (HubSpot: 4 per second per token).
        daily_limit: the daily cap; None for an OAuth app (no cap, no daily headers).
        search_cap: how far one search query may page (HubSpot: 10,000).
        gdpr_cascade: which engagements a GDPR delete takes along: "sole", "all" or "none".
        search_counts_toward_window: whether search calls also use the rolling window.
        throttle_retry_after: Retry-After of injected throttling (faults), in seconds.
        fractional_retry_after: send Retry-After with decimals (fast tests) instead of whole seconds.
        seed_demo_data: start with `seed_demo()` applied.
    """

    name = "hubspot"

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEMO_TOKEN,),
        window_limit: int = 100,
        window_seconds: float = 10.0,
        search_per_second: int = 4,
        daily_limit: int | None = 250_000,
        search_cap: int = 10_000,
        gdpr_cascade: str = "sole",
        search_counts_toward_window: bool = False,
        throttle_retry_after: float = 1.0,
        fractional_retry_after: bool = False,
        seed_demo_data: bool = False,
    ) -> None:
        super().__init__()
        if gdpr_cascade not in ("sole", "all", "none"):
            raise ValueError("gdpr_cascade must be 'sole', 'all' or 'none'")
        self.tokens = set(tokens)
        self.expired_tokens: set[str] = set()
        self.window_limit, self.window_seconds = window_limit, window_seconds
        self.search_per_second = search_per_second
        self.daily_limit = daily_limit
        self.search_cap = search_cap
        self.gdpr_cascade = gdpr_cascade
        self.search_counts_toward_window = search_counts_toward_window
        self.throttle_retry_after = throttle_retry_after
        self.fractional_retry_after = fractional_retry_after
        self._window = WindowLimiter(window_limit, window_seconds)
        self._search_window = WindowLimiter(search_per_second, 1.0)
        self._daily = DailyCounter()
        self._lock = threading.RLock()
        self.store_lock = self._lock
        self._state = _State()
        self.install(seed_demo_data)

    # --- routes -------------------------------------------------------------------------------------

    def routes(self) -> None:
        add = self.router.add
        t = r"(?P<type>[\w-]+)"
        add("GET", rf"/crm/v3/properties/{t}", self._properties)
        add("POST", r"/crm/v3/objects/contacts/gdpr-delete", self._gdpr_delete)
        add("POST", rf"/crm/v3/objects/{t}/search", self._search)
        add("POST", rf"/crm/v3/objects/{t}/batch/read", self._batch_read)
        add("POST", rf"/crm/v3/objects/{t}/batch/create", self._batch_create)
        add("POST", rf"/crm/v3/objects/{t}/batch/archive", self._batch_archive)
        add("POST", rf"/crm/v3/objects/{t}", self._create)
        add("GET", rf"/crm/v3/objects/{t}/(?P<id>[^/]+)", self._read)
        add("PATCH", rf"/crm/v3/objects/{t}/(?P<id>[^/]+)", self._update)
        add("DELETE", rf"/crm/v3/objects/{t}/(?P<id>[^/]+)", self._archive)
        add("GET", rf"/crm/v4/objects/{t}/(?P<id>[^/]+)/associations/(?P<to>[\w-]+)", self._associations)
        add("GET", r"/communication-preferences/v3/definitions", self._definitions)
        add("GET", r"/communication-preferences/v3/status/email/(?P<email>[^/]+)", self._status)
        add("POST", r"/communication-preferences/v3/unsubscribe", lambda r: self._change_subscription(r, False))
        add("POST", r"/communication-preferences/v3/subscribe", lambda r: self._change_subscription(r, True))
        self._controls()

    # --- kit hooks ----------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        token = bearer_token(request)
        if token and token in self.expired_tokens:
            return self._expired_answer()
        if token in self.tokens:
            return None
        return self.error(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
            "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "INVALID_AUTHENTICATION",
        )

    def limit(self, request: Request) -> Response | None:
        search = is_search(request.path)
        if not self._daily.take(self.daily_limit):
            return self._rate_limited("DAILY", "daily", "api-calls-daily", seconds_to_midnight(), remaining=0)
        if search:
            ok, wait, _ = self._search_window.acquire()
            if not ok:
                return self._rate_limited("SECONDLY", "secondly", "api-calls-search-secondly", wait, search=True)
            if not self.search_counts_toward_window:
                return None
        ok, wait, remaining = self._window.acquire()
        if not ok:
            return self._rate_limited("TEN_SECONDLY_ROLLING", "ten_secondly_rolling",
                                      "api-calls-ten-secondly", wait, remaining=0)
        request._hs_remaining = remaining  # type: ignore[attr-defined]
        return None

    def decorate(self, request: Request, response: Response) -> None:
        response.headers.setdefault("X-HubSpot-Correlation-Id", str(uuid.uuid4()))
        if is_search(request.path):
            return  # search answers carry only the correlation id, as HubSpot's
        remaining = getattr(request, "_hs_remaining", None)
        if remaining is not None:
            response.headers.update(self._limit_headers(remaining))

    def throttled(self, request: Request) -> Response:
        if is_search(request.path):
            return self._rate_limited("SECONDLY", "secondly", "api-calls-search-secondly",
                                      self.throttle_retry_after, search=True)
        return self._rate_limited("TEN_SECONDLY_ROLLING", "ten_secondly_rolling", "api-calls-ten-secondly",
                                  self.throttle_retry_after, remaining=0)

    def expired(self, request: Request) -> Response:
        return self._expired_answer()

    def server_error(self, request: Request) -> Response:
        return self.error(502, "Bad Gateway: the service is temporarily unavailable, please retry.",
                          "INTERNAL_ERROR")

    def not_found(self, request: Request) -> Response:
        return Response.empty(404, {"X-HubSpot-Correlation-Id": str(uuid.uuid4())})

    def reset_state(self) -> None:
        self._window.reset()
        self._search_window.reset()
        self._daily.reset()

    def _controls(self) -> None:
        def add_contacts(body: dict[str, Any], _: object) -> dict[str, Any]:
            ids = self.add_contacts(int(body["count"]), prefix=str(body.get("prefix", "bulk")),
                                    domain=str(body.get("domain", "bulk.example")),
                                    last_modified=body.get("lastmodifieddate"), properties=body.get("properties") or {})
            return {"count": len(ids), "ids": ids}

        def add_engagements(body: dict[str, Any], _: object) -> dict[str, Any]:
            ids = self.add_engagements(str(body["type"]), int(body["count"]),
                                       contact_ids=[str(c) for c in body.get("contactIds", [])],
                                       timestamp=body.get("timestamp"))
            return {"count": len(ids), "ids": ids}

        def expire_token(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.expire_token(str(body["token"]))
            return {"expired": True}

        on = self.on_control
        on("POST", "seed-demo", lambda body, _: self.seed_demo(int(body.get("seed", 7))))
        on("POST", "add-contacts", add_contacts)
        on("POST", "add-engagements", add_engagements)
        on("POST", "expire-token", expire_token)
        on("GET", "state", lambda body, _: self.summary())

    # --- answers ------------------------------------------------------------------------------------

    def error(self, status: int, message: str, category: str | None, *, context: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
        """HubSpot's error body: status, message, correlationId, category (and context if any)."""
        correlation = str(uuid.uuid4())
        body: dict[str, Any] = {"status": "error", "message": message, "correlationId": correlation}
        if context:
            body["context"] = dict(context)
        if category is not None:
            body["category"] = category
        body.update(extra)
        return Response.json(body, status, {"X-HubSpot-Correlation-Id": correlation, **(headers or {})})

    def _expired_answer(self) -> Response:
        expired_at = datetime.now(UTC) - timedelta(seconds=75)
        return self.error(
            401, "The OAuth token used to make this call expired 75 second(s) ago.", "EXPIRED_AUTHENTICATION",
            context={"expire time": [iso_millis(expired_at)]},
        )

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Max": str(self.window_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window_seconds * 1000)),
        }
        if self.daily_limit is not None:
            used = self._daily.used
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(self.daily_limit - used, 0))
        return headers

    def _rate_limited(self, policy: str, words: str, group: str, wait: float, *, search: bool = False,
                      remaining: int | None = None) -> Response:
        """HubSpot's 429: no `category`, but `errorType`, `policyName` and `groupName` (vendor-apis.md)."""
        headers = {"Retry-After": retry_after(wait, self.fractional_retry_after)}
        if not search and remaining is not None:
            headers.update(self._limit_headers(remaining))
        return self.error(429, f"You have reached your {words} limit.", None, headers=headers,
                          errorType="RATE_LIMIT", policyName=policy,
                          groupName=f"publicapi:private-app-{group}:{PORTAL_ID}")

    def _not_found(self, object_id: str) -> Response:
        return self.error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
                          context={"id": [object_id]})

    def _validation(self, message: str, **extra: Any) -> Response:
        return self.error(400, message, "VALIDATION_ERROR", **extra)

    def _property_errors(self, errors: list[dict[str, Any]]) -> Refusal:
        detail = json.dumps([{**e, "localizedErrorMessage": e["message"]} for e in errors], separators=(",", ":"))
        return Refusal(self._validation(f"Property values were not valid: {detail}"))

    # --- helpers ------------------------------------------------------------------------------------

    def _kind(self, name: str) -> str:
        kind = _TYPE_ALIASES.get(name.lower())
        if kind is None:
            raise Refusal(self.error(400, f"Unable to infer object type from: {name}", "VALIDATION_ERROR"))
        return kind

    def _new_id(self) -> str:
        self._state.next_id += 1
        return str(self._state.next_id)

    def _find(self, kind: str, object_id: str, id_property: str | None = None) -> CrmObject | None:
        objects = self._state.objects[kind]
        if id_property in (None, "", "hs_object_id"):
            return objects.get(object_id)
        wanted = object_id.lower() if id_property in CASE_INSENSITIVE else object_id
        for obj in objects.values():
            value = obj.value(id_property)  # type: ignore[arg-type]
            if value is not None and (value.lower() if id_property in CASE_INSENSITIVE else value) == wanted:
                return obj
        return None

    def _contact_by_email(self, email: str) -> CrmObject | None:
        return self._find("contacts", email, "email")

    def _check_properties(self, kind: str, values: Mapping[str, Any], *, creating: bool,
                          current: CrmObject | None = None) -> dict[str, str | None]:
        """Validate property values as HubSpot does; return them as stored (strings, None for cleared)."""
        if not isinstance(values, Mapping):
            raise Refusal(self._validation("Invalid input JSON: properties must be an object"))
        index = PROPERTY_INDEX[kind]
        errors: list[dict[str, Any]] = []
        clean: dict[str, str | None] = {}
        for name, raw in values.items():
            meta = index.get(name)
            if meta is None:
                errors.append({"isValid": False, "message": f'Property "{name}" does not exist',
                               "error": "PROPERTY_DOESNT_EXIST", "name": name})
                continue
            if meta["modificationMetadata"]["readOnlyValue"]:
                errors.append({"isValid": False, "message": f'"{name}" is a read only property; its value cannot be set.',
                               "error": "READ_ONLY_VALUE", "name": name})
                continue
            if raw is None or raw == "":
                clean[name] = None
                continue
            text = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if name in _EMAIL_PROPERTIES and not is_valid_email(text):
                errors.append({"isValid": False, "message": f"Email address {text} is invalid",
                               "error": "INVALID_EMAIL", "name": name})
                continue
            if name in _EMAIL_PROPERTIES and text.lower() in self._state.blocklist:
                errors.append({"isValid": False, "message": f"Email address {text} is blocklisted (GDPR delete)",
                               "error": "INVALID_EMAIL", "name": name})
                continue
            options = [o["value"] for o in meta["options"]]
            if meta["type"] == "enumeration" and options and meta["fieldType"] != "checkbox" and text not in options:
                errors.append({"isValid": False, "message": f"{text} was not one of the allowed options: {options}",
                               "error": "INVALID_OPTION", "name": name})
                continue
            if meta["type"] == "number":
                try:
                    float(text)
                except ValueError:
                    errors.append({"isValid": False, "message": f"{text} is not a valid number",
                                   "error": "INVALID_NUMBER", "name": name})
                    continue
            if meta["type"] == "datetime":
                moment = epoch_millis(text)
                if moment is None:
                    errors.append({"isValid": False, "message": f"{text} is not a valid datetime",
                                   "error": "INVALID_DATE", "name": name})
                    continue
                text = iso_millis(datetime.fromtimestamp(moment / 1000, UTC))
            clean[name] = text
        if errors:
            raise self._property_errors(errors)
        if kind == "contacts" and clean.get("email"):
            other = self._contact_by_email(clean["email"])  # type: ignore[arg-type]
            if other is not None and (current is None or other.id != current.id):
                raise Refusal(self.error(409, f"Contact already exists. Existing ID: {other.id}", "CONFLICT"))
        return clean

    def _insert(self, kind: str, properties: Mapping[str, str | None], *, created: str | None = None,
                modified: str | None = None) -> CrmObject:
        created = created or now_iso()
        create_prop, modified_prop = date_properties(kind)
        obj = CrmObject(self._new_id(), kind, {}, created, modified or created)
        obj.properties.update({k: v for k, v in properties.items() if v is not None})
        obj.properties[create_prop] = created
        obj.properties[modified_prop] = obj.updated_at
        obj.properties["hs_object_id"] = obj.id
        self._state.objects[kind][obj.id] = obj
        return obj

    def _touch(self, obj: CrmObject) -> None:
        obj.updated_at = now_iso()
        obj.properties[date_properties(obj.kind)[1]] = obj.updated_at

    def _link(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        self._state.links.setdefault(a, set()).add(b)
        self._state.links.setdefault(b, set()).add(a)

    def _unlink_all(self, node: tuple[str, str]) -> set[tuple[str, str]]:
        others = self._state.links.pop(node, set())
        for other in others:
            peers = self._state.links.get(other)
            if peers is not None:
                peers.discard(node)
                if not peers:
                    del self._state.links[other]
        return others

    def _linked(self, kind: str, object_id: str, to_kind: str) -> list[str]:
        found = [oid for k, oid in self._state.links.get((kind, object_id), ()) if k == to_kind]
        return sorted(found, key=id_order)

    def _apply_associations(self, obj: CrmObject, associations: Any) -> list[tuple[str, str]]:
        """Check v3 `associations` of a create body; return the links to make."""
        if associations in (None, []):
            return []
        if not isinstance(associations, list):
            raise Refusal(self._validation("Invalid input JSON: associations must be a list"))
        links = []
        for assoc in associations:
            try:
                to_id = str(assoc["to"]["id"])
                types = assoc["types"]
            except (KeyError, TypeError):
                raise Refusal(self._validation("Invalid input JSON: association needs to.id and types")) from None
            for spec in types:
                type_id = spec.get("associationTypeId") if isinstance(spec, dict) else None
                pair = _TYPE_ID_PAIRS.get(type_id) if isinstance(type_id, int) else None
                if pair is None or spec.get("associationCategory") != "HUBSPOT_DEFINED":
                    raise Refusal(self._validation(f"{type_id} is not a valid association type id"))
                if pair[0] != obj.kind:
                    raise Refusal(self._validation(
                        f"association type id {type_id} does not apply to {_SINGULAR[obj.kind]} objects"))
                if to_id not in self._state.objects[pair[1]]:
                    raise Refusal(self.error(
                        400, f"One or more associations are invalid: {_SINGULAR[pair[1]]} {to_id} does not exist",
                        "VALIDATION_ERROR", subCategory="crm.associations.INVALID_OBJECT_IDS"))
                links.append((pair[1], to_id))
        return links

    def _public(self, obj: CrmObject, properties: Iterable[str] | None = None) -> dict[str, Any]:
        """SimplePublicObject: requested properties (null when unset) plus the always-sent ones."""
        create_prop, modified_prop = date_properties(obj.kind)
        names = list(properties) if properties is not None else list(default_properties(obj.kind))
        out: dict[str, Any] = {name: obj.value(name) for name in names if name in PROPERTY_INDEX[obj.kind]}
        for name in (create_prop, "hs_object_id", modified_prop):
            out[name] = obj.value(name)
        body: dict[str, Any] = {"id": obj.id, "properties": out, "createdAt": obj.created_at,
                                "updatedAt": obj.updated_at, "archived": obj.archived_at is not None}
        if obj.archived_at is not None:
            body["archivedAt"] = obj.archived_at
        return body

    # --- handlers: objects --------------------------------------------------------------------------

    def _properties(self, request: Request) -> Response:
        return Response.json({"results": PROPERTY_DEFINITIONS[self._kind(request.params["type"])]})

    def _create(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        return Response.json(self._create_one(kind, request.json() or {}), 201)

    def _create_one(self, kind: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Refusal(self._validation("Invalid input JSON: expected an object"))
        properties = self._check_properties(kind, body.get("properties") or {}, creating=True)
        if kind in ENGAGEMENT_TYPES and not properties.get("hs_timestamp"):
            properties["hs_timestamp"] = now_iso()
        probe = CrmObject("0", kind, {}, "", "")
        links = self._apply_associations(probe, body.get("associations"))
        obj = self._insert(kind, properties)
        for to in links:
            self._link((kind, obj.id), to)
        return self._public(obj, [*properties, *default_properties(kind)])

    def _batch_create(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        inputs = self._inputs(request.json())
        started = now_iso()
        # All-or-nothing: validate everything before creating anything.
        for item in inputs:
            if not isinstance(item, dict):
                raise Refusal(self._validation("Invalid input JSON: inputs must be objects"))
            self._check_properties(kind, item.get("properties") or {}, creating=True)
            self._apply_associations(CrmObject("0", kind, {}, "", ""), item.get("associations"))
        results = [self._create_one(kind, item) for item in inputs]
        return Response.json({"status": "COMPLETE", "results": results, "startedAt": started,
                              "completedAt": now_iso()}, 201)

    def _inputs(self, body: Any) -> list[Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise Refusal(self._validation("Invalid input JSON: inputs is required"))
        if len(inputs) > _BATCH_LIMIT:
            raise Refusal(self.error(
                400, f"Too many inputs: {len(inputs)}. The maximum number of inputs per batch is {_BATCH_LIMIT}.",
                "VALIDATION_ERROR", context={"maxInputs": [str(_BATCH_LIMIT)]}))
        return inputs

    def _read(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        object_id = unquote(request.params["id"])
        id_property = request.arg("idProperty")
        obj = self._find(kind, object_id, id_property)
        if obj is None and request.arg("archived") == "true":
            obj = self._state.archived[kind].get(object_id)
        if obj is None:
            return self._not_found(object_id)
        names = multi_arg(request.query.get("properties"))
        body = self._public(obj, names or None)
        wanted = [self._kind(a) for a in multi_arg(request.query.get("associations"))]
        if wanted:
            body["associations"] = {}
            for to_kind in wanted:
                ids = self._linked(kind, obj.id, to_kind)
                if ids:
                    label = f"{_SINGULAR[kind]}_to_{_SINGULAR[to_kind]}"
                    page: dict[str, Any] = {
                        "results": [{"id": i, "type": label} for i in ids[:_V3_ASSOCIATIONS_PAGE]]}
                    if len(ids) > _V3_ASSOCIATIONS_PAGE:
                        after = str(_V3_ASSOCIATIONS_PAGE)
                        page["paging"] = {"next": {"after": after, "link": (
                            f"/crm/v3/objects/{kind}/{obj.id}/associations/{to_kind}?after={after}")}}
                    body["associations"][to_kind] = page
        return Response.json(body)

    def _update(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        object_id = unquote(request.params["id"])
        obj = self._find(kind, object_id, request.arg("idProperty"))
        if obj is None:
            return self._not_found(object_id)
        body = request.json() or {}
        properties = self._check_properties(kind, body.get("properties") or {}, creating=False, current=obj)
        for name, value in properties.items():
            if value is None:
                obj.properties.pop(name, None)
            else:
                obj.properties[name] = value
        self._touch(obj)
        return Response.json(self._public(obj, [*properties, *default_properties(kind)]))

    def _archive_object(self, kind: str, object_id: str) -> bool:
        obj = self._state.objects[kind].pop(object_id, None)
        if obj is None:
            return False
        obj.archived_at = now_iso()
        self._state.archived[kind][obj.id] = obj
        self._unlink_all((kind, obj.id))
        return True

    def _archive(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        object_id = unquote(request.params["id"])
        if not self._archive_object(kind, object_id):
            return self._not_found(object_id)
        return Response.empty(204)

    def _batch_read(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        body = request.json() or {}
        inputs = self._inputs(body)
        names = body.get("properties") or None
        id_property = body.get("idProperty")
        started = now_iso()
        results, missing = [], []
        for item in inputs:
            wanted = str(item.get("id")) if isinstance(item, dict) else ""
            obj = self._find(kind, wanted, id_property)
            if obj is None:
                missing.append(wanted)
            else:
                results.append(self._public(obj, names))
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": now_iso()}
        if not missing:
            return Response.json(answer)
        answer["numErrors"] = 1
        answer["errors"] = [{
            "status": "error", "category": "OBJECT_NOT_FOUND",
            "message": f"Could not get some {_SINGULAR[kind].upper()} objects, they may be deleted or not exist. "
                       "Check that ids are valid.",
            "context": {"ids": missing},
        }]
        return Response.json(answer, 207)

    def _batch_archive(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        inputs = self._inputs(request.json())
        for item in inputs:
            if isinstance(item, dict) and "id" in item:
                self._archive_object(kind, str(item["id"]))  # ids that do not exist are ignored, as HubSpot
        return Response.empty(204)

    def _gdpr_delete(self, request: Request) -> Response:
        body = request.json() or {}
        object_id = body.get("objectId") if isinstance(body, dict) else None
        if not isinstance(object_id, str) or not object_id:
            return self._validation("Invalid input JSON: objectId is required")
        id_property = body.get("idProperty")
        if id_property not in (None, "email", "hs_object_id"):
            return self._validation(f"{id_property} is not a valid idProperty for a GDPR delete")
        by_email = id_property == "email"
        contact = self._find("contacts", object_id, "email" if by_email else None)
        if contact is None and not by_email:
            contact = self._state.archived["contacts"].get(object_id)
        if contact is None:
            if by_email:
                self._blocklist(object_id)  # "If the email is not found, it is added to a blocklist"
                return Response.empty(204)
            return self._not_found(object_id)
        self.purge_contact(contact.id)
        if by_email:
            self._blocklist(object_id)
        return Response.empty(204)

    def _blocklist(self, email: str) -> None:
        address = email.strip().lower()
        self._state.blocklist.add(address)
        self._state.subscriptions.pop(address, None)

    def purge_contact(self, contact_id: str) -> None:
        """The GDPR delete of one contact: gone for good, engagements per `gdpr_cascade`, e-mail blocklisted."""
        with self._lock:
            contact = self._state.objects["contacts"].pop(contact_id, None)
            contact = contact or self._state.archived["contacts"].pop(contact_id, None)
            if contact is None:
                return
            self._state.archived["contacts"].pop(contact_id, None)
            for kind, eng_id in self._unlink_all(("contacts", contact_id)):
                if kind not in ENGAGEMENT_TYPES or self.gdpr_cascade == "none":
                    continue
                still_linked = any(k == "contacts" for k, _ in self._state.links.get((kind, eng_id), ()))
                if self.gdpr_cascade == "all" or not still_linked:
                    self._state.objects[kind].pop(eng_id, None)
                    self._state.archived[kind].pop(eng_id, None)
                    self._unlink_all((kind, eng_id))
            for name in ("email", "work_email"):
                if contact.properties.get(name):
                    self._blocklist(contact.properties[name])  # type: ignore[arg-type]

    def _associations(self, request: Request) -> Response:
        kind, to_kind = self._kind(request.params["type"]), self._kind(request.params["to"])
        object_id = unquote(request.params["id"])
        limit = int_arg(request.arg("limit"), _V4_PAGE_MAX)
        after = int_arg(request.arg("after"), 0)
        if limit is None or after is None or not 1 <= limit <= _V4_PAGE_MAX or after < 0:
            return self._validation(f"limit must be between 1 and {_V4_PAGE_MAX}; after must be a cursor")
        ids = self._linked(kind, object_id, to_kind)
        page = ids[after: after + limit]
        type_id = ASSOCIATION_TYPE_IDS.get((kind, to_kind))
        results = [{"toObjectId": int(i), "associationTypes": [
            {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]} for i in page]
        answer: dict[str, Any] = {"results": results}
        if after + limit < len(ids):
            nxt = str(after + limit)
            answer["paging"] = {"next": {"after": nxt, "link": f"{request.path}?after={nxt}"}}
        return Response.json(answer)

    # --- search ---------------------------------------------------------------------------------------

    def _search(self, request: Request) -> Response:
        kind = self._kind(request.params["type"])
        try:
            body = request.json() or {}
        except ValueError:
            return self._validation("Invalid input JSON")
        if not isinstance(body, dict):
            return self._validation("Invalid input JSON: expected an object")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 200:
            return self._validation("limit must be between 0 and 200", context={"limit": [str(limit)]})
        after_raw = body.get("after", "0") or "0"
        if not str(after_raw).isdigit():
            return self._validation(f"{after_raw} is not a valid paging cursor")
        after = int(after_raw)
        if after >= self.search_cap:
            return self._validation(
                f"The maximum number of results per query is {self.search_cap}: after={after} is past it.",
                context={"after": [str(after)]})
        groups = body.get("filterGroups") or []
        problem = self._check_groups(kind, groups)
        if problem is not None:
            return self._validation(problem)
        names = body.get("properties") or list(default_properties(kind))
        query = body.get("query")
        matched = [obj for obj in self._state.objects[kind].values()
                   if matches_groups(obj, groups) and matches_query(obj, query)]
        matched = sorted_objects(matched, body.get("sorts") or [])
        page = matched[after: min(after + limit, self.search_cap)]
        answer: dict[str, Any] = {"total": len(matched), "results": [self._public(o, names) for o in page]}
        next_after = after + len(page)
        if page and next_after < len(matched):
            answer["paging"] = {"next": {"after": str(next_after), "link": f"?after={next_after}"}}
        return Response.json(answer)

    def _check_groups(self, kind: str, groups: Any) -> str | None:
        if not isinstance(groups, list):
            return "filterGroups must be a list"
        if len(groups) > _MAX_FILTER_GROUPS:
            return f"Too many filter groups: {len(groups)} (max {_MAX_FILTER_GROUPS})"
        total = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                return "each filter group needs a list of filters"
            if len(filters) > _MAX_FILTERS_PER_GROUP:
                return f"Too many filters in a group: {len(filters)} (max {_MAX_FILTERS_PER_GROUP})"
            total += len(filters)
            for flt in filters:
                if not isinstance(flt, dict) or flt.get("operator") not in SEARCH_OPERATORS:
                    return f"{flt.get('operator') if isinstance(flt, dict) else flt} is not a valid operator"
                if flt.get("propertyName") not in PROPERTY_INDEX[kind]:
                    return f"{flt.get('propertyName')} is not a valid property for {_SINGULAR[kind]} search"
                op = flt["operator"]
                if op in ("IN", "NOT_IN") and not isinstance(flt.get("values"), list):
                    return f"operator {op} needs values"
                if op == "BETWEEN" and ("value" not in flt or "highValue" not in flt):
                    return "operator BETWEEN needs value and highValue"
                if op not in ("IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY") and "value" not in flt:
                    return f"operator {op} needs a value"
        if total > _MAX_FILTERS:
            return f"Too many filters: {total} (max {_MAX_FILTERS})"
        return None

    # --- communication preferences ------------------------------------------------------------------

    def _definitions(self, request: Request) -> Response:
        return Response.json({"subscriptionDefinitions": list(SUBSCRIPTION_DEFINITIONS)})

    def _status_of(self, email: str, sub_id: str) -> dict[str, Any]:
        definition = next(d for d in SUBSCRIPTION_DEFINITIONS if d["id"] == sub_id)
        state = self._state.subscriptions.get(email.lower(), {}).get(sub_id)
        basis = self._state.legal_bases.get((email.lower(), sub_id), ("LEGITIMATE_INTEREST_CLIENT", None))
        return {
            "id": sub_id, "name": definition["name"], "description": definition["description"],
            "status": "SUBSCRIBED" if state == "SUBSCRIBED" else "NOT_SUBSCRIBED",
            "sourceOfStatus": "SUBSCRIPTION_STATUS", "brandId": None, "preferenceGroupName": None,
            "legalBasis": basis[0] if state == "SUBSCRIBED" else None,
            "legalBasisExplanation": basis[1] if state == "SUBSCRIBED" else None,
        }

    def _status(self, request: Request) -> Response:
        email = unquote(request.params["email"])
        if not is_valid_email(email):
            return self._validation(f"Invalid email address: {email}")
        statuses = [self._status_of(email, d["id"]) for d in SUBSCRIPTION_DEFINITIONS]
        return Response.json({"recipient": email, "subscriptionStatuses": statuses})

    def _change_subscription(self, request: Request, subscribe: bool) -> Response:
        body = request.json() or {}
        email = body.get("emailAddress") if isinstance(body, dict) else None
        sub_id = str(body.get("subscriptionId", "")) if isinstance(body, dict) else ""
        if not isinstance(email, str) or not is_valid_email(email):
            return self._validation(f"Invalid email address: {email}")
        if sub_id not in {d["id"] for d in SUBSCRIPTION_DEFINITIONS}:
            return self._validation(f"{sub_id} is not a valid subscription id")
        unknown = sorted(set(body) - {"emailAddress", "subscriptionId", "legalBasis", "legalBasisExplanation"})
        if unknown:
            return self._validation(f"Unrecognized field(s): {', '.join(unknown)}")
        basis = body.get("legalBasis")
        if basis is not None and basis not in LEGAL_BASES:
            return self._validation(f"{basis} is not a valid legal basis")
        explanation = body.get("legalBasisExplanation")
        if explanation is not None and not isinstance(explanation, str):
            return self._validation("legalBasisExplanation must be a string")
        address = email.strip().lower()
        current = self._state.subscriptions.get(address, {}).get(sub_id)
        if subscribe:
            if address in self._state.blocklist:
                return self._validation(f"{email} is blocklisted and cannot be subscribed")
            if current == "SUBSCRIBED":
                return self._validation(f"{email} is already subscribed to subscription {sub_id}")
            self._state.subscriptions.setdefault(address, {})[sub_id] = "SUBSCRIBED"
            if basis is not None:
                self._state.legal_bases[(address, sub_id)] = (basis, explanation)
        else:
            if current == "UNSUBSCRIBED":
                return self._validation(f"{email} is already unsubscribed from subscription {sub_id}")
            self._state.subscriptions.setdefault(address, {})[sub_id] = "UNSUBSCRIBED"
        return Response.json(self._status_of(address, sub_id))

    # --- Python API for tests and the demo ----------------------------------------------------------

    def expire_token(self, token: str) -> None:
        """From now on this token is answered 401 EXPIRED_AUTHENTICATION."""
        self.expired_tokens.add(token)

    def is_blocklisted(self, email: str) -> bool:
        with self._lock:
            return email.strip().lower() in self._state.blocklist

    def subscription_states(self, email: str) -> dict[str, str]:
        """subscription id -> SUBSCRIBED | UNSUBSCRIBED (only explicit states)."""
        with self._lock:
            return dict(self._state.subscriptions.get(email.strip().lower(), {}))

    def object_count(self, kind: str) -> int:
        with self._lock:
            return len(self._state.objects[self._kind(kind)])

    def get(self, kind: str, object_id: str) -> dict[str, str | None] | None:
        """An object's stored properties, or None if it is gone (archived objects count as gone)."""
        with self._lock:
            obj = self._state.objects[self._kind(kind)].get(object_id)
            return dict(obj.properties) if obj else None

    def contacts_with_email(self, email: str) -> list[str]:
        """Ids of live contacts whose e-mail equals this one, ignoring case."""
        with self._lock:
            wanted = email.strip().lower()
            return sorted((o.id for o in self._state.objects["contacts"].values()
                           if (o.properties.get("email") or "").lower() == wanted), key=id_order)

    def linked(self, kind: str, object_id: str, to_kind: str) -> list[str]:
        with self._lock:
            return self._linked(self._kind(kind), object_id, self._kind(to_kind))

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"objects": {k: len(v) for k, v in self._state.objects.items()},
                    "archived": {k: len(v) for k, v in self._state.archived.items()},
                    "blocklisted": len(self._state.blocklist)}

    def add_contact(self, properties: Mapping[str, Any], *, created: str | None = None,
                    modified: str | None = None) -> str:
        """Insert one contact directly (no validation of read-only properties); return its id."""
        with self._lock:
            clean = {k: (None if v is None else str(v)) for k, v in properties.items()}
            return self._insert("contacts", clean, created=created, modified=modified).id

    def add_engagement(self, kind: str, properties: Mapping[str, Any], contact_ids: Sequence[str] = (),
                       *, created: str | None = None) -> str:
        with self._lock:
            kind = self._kind(kind)
            clean = {k: (None if v is None else str(v)) for k, v in properties.items()}
            clean.setdefault("hs_timestamp", created or now_iso())
            obj = self._insert(kind, clean, created=created)
            for contact_id in contact_ids:
                if contact_id not in self._state.objects["contacts"]:
                    raise ValueError(f"no contact {contact_id}")
                self._link((kind, obj.id), ("contacts", contact_id))
            return obj.id

    def add_contacts(self, count: int, *, prefix: str = "bulk", domain: str = "bulk.example",
                     last_modified: str | None = None, properties: Mapping[str, Any] | None = None) -> list[str]:
        """Bulk contacts `prefix.N@domain` (for paging tests); `last_modified` backdates them."""
        if count < 0:
            raise ValueError("count must be zero or more")
        with self._lock:
            start = sum(1 for o in self._state.objects["contacts"].values()
                        if (o.properties.get("email") or "").endswith(f"@{domain}"))
            ids = []
            for number in range(start, start + count):
                props = {"email": f"{prefix}.{number}@{domain}", "firstname": prefix.title(),
                         "lastname": f"Number{number}", **(properties or {})}
                ids.append(self.add_contact(props, created=last_modified, modified=last_modified))
            return ids

    def add_engagements(self, kind: str, count: int, *, contact_ids: Sequence[str] = (),
                        timestamp: str | None = None) -> list[str]:
        """Bulk engagements of one type, each associated with the given contacts."""
        body = {"notes": "hs_note_body", "emails": "hs_email_subject", "calls": "hs_call_title",
                "meetings": "hs_meeting_title", "tasks": "hs_task_subject"}[self._kind(kind)]
        return [self.add_engagement(kind, {body: f"bulk {kind} {n}"}, contact_ids, created=timestamp)
                for n in range(count)]

    def seed_demo(self, seed: int = 7) -> dict[str, Any]:
        """Forget every record, then load the demo portal: the two subjects, the decoys, ~50 others."""
        with self._lock:
            self._state = _State()
            DemoSeeder(self, random.Random(seed)).run()
            return self.summary()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.hubspot --port N`: serve the demo portal until interrupted."""
    parser = demo_cli("hubspot", main.__doc__)
    parser.add_argument("--token", action="append", help=f"accepted access token (default {DEMO_TOKEN})")
    parser.add_argument("--window-limit", type=int, default=100, help="calls per rolling window (100/110/190)")
    parser.add_argument("--window-seconds", type=float, default=10.0)
    parser.add_argument("--search-per-second", type=int, default=4)
    parser.add_argument("--daily-limit", type=int, default=250_000)
    args = parser.parse_args(argv)
    sandbox = HubSpotSandbox(tokens=args.token or (DEMO_TOKEN,), window_limit=args.window_limit,
                             window_seconds=args.window_seconds, search_per_second=args.search_per_second,
                             daily_limit=args.daily_limit)
    return serve_demo(sandbox, args.port, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
