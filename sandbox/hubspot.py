"""A loopback emulator of HubSpot's CRM v3 API, speaking its wire formats (vendor-apis.md section 2).

The real `hubspot-api-client` (12.0.0), unchanged, talks to it once pointed at it::

    hubspot.Client.create(access_token=DEMO_TOKEN, host=server.url, base_url=server.url)

What it serves (paths, methods, status codes and JSON bodies as HubSpot's):

- Objects ``contacts`` and the engagements ``notes``, ``emails``, ``calls``, ``meetings``, ``tasks``
  (also by their singular names and ``0-1``/``0-46``... type ids):
  ``POST /crm/v3/objects/{type}`` (201, with v3 ``associations`` in the body), ``GET|PATCH|DELETE
  /crm/v3/objects/{type}/{id}`` (``idProperty``, ``properties``, ``associations``), ``POST .../batch/read``
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

import argparse
import json
import math
import random
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from sandbox.kit import Request, Response, Vendor, WindowLimiter, serve_forever

DEMO_TOKEN = "pat-na1-5a4db0c3-0000-4000-8000-sandboxdemo01"
"""The private-app access token the demo sandbox accepts."""

PORTAL_ID = 6748263

ERASURE_SUBJECT = "ada.lovelace@example.com"
"""The demo erasure subject; her contact is stored as ``Ada.Lovelace@Example.com``."""

ACCESS_SUBJECT = "grace.hopper@example.org"
"""The demo access subject; stored as ``Grace.Hopper@Example.org``."""

DECOY_EMAILS: tuple[str, ...] = (
    "ada.lovelace@example.com.attacker.test",  # the subject's address as a prefix
    "xada.lovelace@example.com",  # ... as a suffix
    "%@example.com",  # a SQL LIKE wildcard as the local part
    "obrien@example.com",  # o'brien without the quote
    "ada_lovelace@example.com",  # `_` is LIKE's single-character wildcard
    "ada.lovelace@example.co",  # a neighbouring top-level domain
)
"""Contacts (each with a note) that no exact match on the demo subjects may ever touch."""

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
_CASE_INSENSITIVE = frozenset({"email"})
_EMAIL_PROPERTIES = frozenset({"email", "work_email"})
_EMAIL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")  # noqa: E501
_MAX_FILTER_GROUPS, _MAX_FILTERS_PER_GROUP, _MAX_FILTERS = 5, 10, 25
_BATCH_LIMIT = 100
_V4_PAGE_MAX = 500


def is_valid_email(value: str) -> bool:
    """HubSpot-like e-mail syntax check: no spaces, one @, a dotted domain."""
    return bool(_EMAIL_RE.match(value)) and ".." not in value and len(value) <= 254


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now() -> str:
    return _iso(datetime.now(UTC))


def _parse_moment(value: Any) -> float | None:
    """Epoch milliseconds from epoch millis (number or digits) or an ISO date/datetime; None if neither."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


# --- property metadata --------------------------------------------------------------------------------


def _prop(name: str, label: str, type_: str, field_type: str, group: str, *, read_only: bool = False,
          calculated: bool = False, options: Sequence[str] = (), order: int = -1) -> dict[str, Any]:
    return {
        "updatedAt": "2023-09-14T18:02:11.223Z",
        "createdAt": "2019-08-06T02:41:08.029Z",
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "description": f"{label}.",
        "groupName": group,
        "options": [
            {"label": option.replace("_", " ").title(), "value": option, "displayOrder": index, "hidden": False}
            for index, option in enumerate(options)
        ],
        "displayOrder": order,
        "calculated": calculated,
        "externalOptions": False,
        "hasUniqueValue": name == "hs_object_id",
        "hidden": False,
        "hubspotDefined": True,
        "modificationMetadata": {"archivable": True, "readOnlyDefinition": True, "readOnlyValue": read_only},
        "formField": not read_only and type_ != "datetime",
        "archived": False,
    }


def _common(prefix: str) -> list[dict[str, Any]]:
    return [
        _prop(f"{prefix}createdate", "Create date", "datetime", "date", "engagement", read_only=True),
        _prop(f"{prefix}lastmodifieddate", "Last modified date", "datetime", "date", "engagement", read_only=True),
        _prop("hs_object_id", "Record ID", "number", "number", "engagement", read_only=True),
        _prop("hubspot_owner_id", "Owner", "enumeration", "select", "engagement"),
        _prop("hs_timestamp", "Activity date", "datetime", "date", "engagement"),
    ]


_CI, _AN = "contactinformation", "analyticsinformation"
PROPERTY_DEFINITIONS: dict[str, list[dict[str, Any]]] = {
    "contacts": [
        _prop("email", "Email", "string", "text", _CI, order=3),
        _prop("firstname", "First Name", "string", "text", _CI, order=0),
        _prop("lastname", "Last Name", "string", "text", _CI, order=1),
        _prop("phone", "Phone Number", "string", "phonenumber", _CI),
        _prop("mobilephone", "Mobile Phone Number", "string", "phonenumber", _CI),
        _prop("company", "Company Name", "string", "text", _CI),
        _prop("jobtitle", "Job Title", "string", "text", _CI),
        _prop("address", "Street Address", "string", "text", _CI),
        _prop("city", "City", "string", "text", _CI),
        _prop("zip", "Postal Code", "string", "text", _CI),
        _prop("country", "Country/Region", "string", "text", _CI),
        _prop("website", "Website URL", "string", "text", _CI),
        _prop("message", "Message", "string", "textarea", _CI),
        _prop("work_email", "Work email", "string", "text", _CI),
        _prop("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", _CI,
              options=("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                       "customer", "evangelist", "other")),
        _prop("hs_lead_status", "Lead Status", "enumeration", "radio", "sales_properties",
              options=("NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "CONNECTED")),
        _prop("hs_additional_emails", "Additional email addresses", "enumeration", "checkbox", _CI, read_only=True),
        _prop("hs_email_optout", "Unsubscribed from all email", "bool", "booleancheckbox", "emailinformation",
              read_only=True, options=("true", "false")),
        _prop("hs_analytics_source", "Original Source", "enumeration", "select", _AN, read_only=True,
              options=("ORGANIC_SEARCH", "PAID_SEARCH", "EMAIL_MARKETING", "SOCIAL_MEDIA", "REFERRALS",
                       "OTHER_CAMPAIGNS", "DIRECT_TRAFFIC", "OFFLINE", "PAID_SOCIAL")),
        _prop("ip_city", "IP City", "string", "text", _AN, read_only=True),
        _prop("recent_conversion_event_name", "Recent Conversion", "string", "text", "conversioninformation",
              read_only=True),
        _prop("recent_conversion_date", "Recent Conversion Date", "datetime", "date", "conversioninformation",
              read_only=True),
        _prop("num_conversion_events", "Number of Form Submissions", "number", "number", "conversioninformation",
              read_only=True, calculated=True),
        _prop("notes_last_contacted", "Last Contacted", "datetime", "date", "sales_properties", read_only=True,
              calculated=True),
        _prop("notes_last_updated", "Last Activity Date", "datetime", "date", "sales_properties", read_only=True,
              calculated=True),
        _prop("num_notes", "Number of Sales Activities", "number", "number", "sales_properties", read_only=True,
              calculated=True),
        _prop("createdate", "Create Date", "datetime", "date", _CI, read_only=True),
        _prop("lastmodifieddate", "Last Modified Date", "datetime", "date", _CI, read_only=True),
        _prop("hs_object_id", "Record ID", "number", "number", _CI, read_only=True),
    ],
    "notes": [*_common("hs_"), _prop("hs_note_body", "Note body", "string", "html", "engagement"),
              _prop("hs_attachment_ids", "Attached file IDs", "enumeration", "checkbox", "engagement")],
    "emails": [*_common("hs_"),
               _prop("hs_email_direction", "Email direction", "enumeration", "select", "engagement",
                     options=("EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL")),
               _prop("hs_email_subject", "Email subject", "string", "text", "engagement"),
               _prop("hs_email_text", "Email body", "string", "textarea", "engagement"),
               _prop("hs_email_html", "Email HTML body", "string", "html", "engagement"),
               _prop("hs_email_status", "Email send status", "enumeration", "select", "engagement",
                     options=("BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT")),
               _prop("hs_email_headers", "Email headers", "string", "textarea", "engagement"),
               _prop("hs_email_sender_email", "From", "string", "text", "engagement", read_only=True),
               _prop("hs_email_to_email", "To", "string", "text", "engagement", read_only=True)],
    "calls": [*_common("hs_"),
              _prop("hs_call_title", "Call title", "string", "text", "engagement"),
              _prop("hs_call_body", "Call notes", "string", "html", "engagement"),
              _prop("hs_call_duration", "Call duration (ms)", "number", "number", "engagement"),
              _prop("hs_call_from_number", "From number", "string", "phonenumber", "engagement"),
              _prop("hs_call_to_number", "To number", "string", "phonenumber", "engagement"),
              _prop("hs_call_status", "Call status", "enumeration", "select", "engagement",
                    options=("BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED",
                             "IN_PROGRESS", "NO_ANSWER", "QUEUED", "RINGING")),
              _prop("hs_call_direction", "Call direction", "enumeration", "select", "engagement",
                    options=("INBOUND", "OUTBOUND"))],
    "meetings": [*_common("hs_"),
                 _prop("hs_meeting_title", "Meeting name", "string", "text", "engagement"),
                 _prop("hs_meeting_body", "Meeting description", "string", "html", "engagement"),
                 _prop("hs_internal_meeting_notes", "Internal notes", "string", "html", "engagement"),
                 _prop("hs_meeting_location", "Location", "string", "text", "engagement"),
                 _prop("hs_meeting_start_time", "Start time", "datetime", "date", "engagement"),
                 _prop("hs_meeting_end_time", "End time", "datetime", "date", "engagement"),
                 _prop("hs_meeting_outcome", "Meeting outcome", "enumeration", "select", "engagement",
                       options=("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"))],
    "tasks": [*_common("hs_"),
              _prop("hs_task_subject", "Task title", "string", "text", "engagement"),
              _prop("hs_task_body", "Task notes", "string", "html", "engagement"),
              _prop("hs_task_status", "Task status", "enumeration", "select", "engagement",
                    options=("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED")),
              _prop("hs_task_priority", "Priority", "enumeration", "select", "engagement",
                    options=("NONE", "LOW", "MEDIUM", "HIGH"))],
}  # fmt: skip
_PROPERTY_INDEX = {kind: {p["name"]: p for p in props} for kind, props in PROPERTY_DEFINITIONS.items()}


def _dates(kind: str) -> tuple[str, str]:
    """(create date property, last-modified property) of an object type."""
    return ("createdate", "lastmodifieddate") if kind == "contacts" else ("hs_createdate", "hs_lastmodifieddate")


def _default_properties(kind: str) -> tuple[str, ...]:
    if kind == "contacts":
        return ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
    return ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")


LEGAL_BASES = frozenset({
    "LEGITIMATE_INTEREST_PQL", "LEGITIMATE_INTEREST_CLIENT", "PERFORMANCE_OF_CONTRACT", "CONSENT_WITH_NOTICE",
    "NON_GDPR", "PROCESS_AND_STORE", "LEGITIMATE_INTEREST_OTHER",
})  # fmt: skip
"""The ``legalBasis`` values of Communication Preferences v3 (HubSpot's PublicUpdateSubscriptionStatusRequest)."""

SUBSCRIPTION_DEFINITIONS: tuple[dict[str, Any], ...] = tuple(
    {
        "id": sub_id, "name": name, "description": description, "purpose": purpose,
        "communicationMethod": "Email", "isActive": True, "isDefault": sub_id == "1190",
        "isInternal": False, "businessUnitId": 0,
        "createdAt": "2021-02-01T10:00:00.000Z", "updatedAt": "2024-05-06T09:30:00.000Z",
    }
    for sub_id, name, description, purpose in (
        ("1190", "Marketing Information", "Marketing offers and updates.", "Marketing"),
        ("1191", "Product Updates", "News about the products you use.", "Marketing"),
        ("1192", "One to One", "One to one emails from your account team.", "Sales"),
    )
)  # fmt: skip


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class _Object:
    id: str
    kind: str
    properties: dict[str, str | None]
    created_at: str
    updated_at: str
    archived_at: str | None = None

    def value(self, name: str) -> str | None:
        return self.id if name == "hs_object_id" else self.properties.get(name)


class _Invalid(Exception):
    """A request the vendor refuses; carries the vendor's answer."""

    def __init__(self, response: Response) -> None:
        super().__init__("invalid")
        self.response = response


@dataclass
class _State:
    objects: dict[str, dict[str, _Object]] = field(default_factory=lambda: {k: {} for k in OBJECT_TYPES})
    archived: dict[str, dict[str, _Object]] = field(default_factory=lambda: {k: {} for k in OBJECT_TYPES})
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
        self._daily_used = 0
        self._daily_lock = threading.RLock()
        self._lock = threading.RLock()
        self._state = _State()
        self._routes()
        if seed_demo_data:
            self.seed_demo()

    # --- routes -------------------------------------------------------------------------------------

    def _routes(self) -> None:
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
        add("POST", r"/communication-preferences/v3/unsubscribe", self._unsubscribe)
        add("POST", r"/communication-preferences/v3/subscribe", self._subscribe)

    # --- kit hooks ----------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        header = request.header("authorization") or ""
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
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
        search = _is_search(request.path)
        if self.daily_limit is not None:
            with self._daily_lock:
                if self._daily_used >= self.daily_limit:
                    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                                               microsecond=0)
                    wait = (tomorrow - datetime.now(UTC)).total_seconds()
                    return self._rate_limited("DAILY", "daily", "api-calls-daily", wait, remaining=0)
                self._daily_used += 1
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
        if _is_search(request.path):
            return  # search answers carry only the correlation id, as HubSpot's
        remaining = getattr(request, "_hs_remaining", None)
        if remaining is not None:
            response.headers.update(self._limit_headers(remaining))

    def throttled(self, request: Request) -> Response:
        if _is_search(request.path):
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
        with self._daily_lock:
            self._daily_used = 0

    def control(self, action: str, request: Request) -> Response | None:
        body = request.json() if request.body else {}
        body = body or {}
        try:
            if action == "seed-demo" and request.method == "POST":
                return Response.json(self.seed_demo(int(body.get("seed", 7))))
            if action == "add-contacts" and request.method == "POST":
                ids = self.add_contacts(int(body["count"]), prefix=str(body.get("prefix", "bulk")),
                                        domain=str(body.get("domain", "bulk.example")),
                                        last_modified=body.get("lastmodifieddate"),
                                        properties=body.get("properties") or {})
                return Response.json({"count": len(ids), "ids": ids})
            if action == "add-engagements" and request.method == "POST":
                ids = self.add_engagements(str(body["type"]), int(body["count"]),
                                           contact_ids=[str(c) for c in body.get("contactIds", [])],
                                           timestamp=body.get("timestamp"))
                return Response.json({"count": len(ids), "ids": ids})
            if action == "expire-token" and request.method == "POST":
                self.expire_token(str(body["token"]))
                return Response.json({"expired": True})
            if action == "state" and request.method == "GET":
                return Response.json(self.summary())
        except (KeyError, ValueError, TypeError) as exc:
            return Response.json({"error": f"{type(exc).__name__}: {exc}"}, 400)
        return None

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
            context={"expire time": [_iso(expired_at)]},
        )

    def _retry_after(self, seconds: float) -> str:
        if self.fractional_retry_after:
            return f"{max(seconds, 0.001):.3f}"
        return str(max(1, math.ceil(seconds)))

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Max": str(self.window_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window_seconds * 1000)),
        }
        if self.daily_limit is not None:
            with self._daily_lock:
                used = self._daily_used
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(self.daily_limit - used, 0))
        return headers

    def _rate_limited(self, policy: str, words: str, group: str, wait: float, *, search: bool = False,
                      remaining: int | None = None) -> Response:
        """HubSpot's 429: no `category`, but `errorType`, `policyName` and `groupName` (vendor-apis.md)."""
        headers = {"Retry-After": self._retry_after(wait)}
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

    def _property_errors(self, errors: list[dict[str, Any]]) -> _Invalid:
        detail = json.dumps([{**e, "localizedErrorMessage": e["message"]} for e in errors], separators=(",", ":"))
        return _Invalid(self._validation(f"Property values were not valid: {detail}"))

    # --- helpers ------------------------------------------------------------------------------------

    def _kind(self, name: str) -> str:
        kind = _TYPE_ALIASES.get(name.lower())
        if kind is None:
            raise _Invalid(self.error(400, f"Unable to infer object type from: {name}", "VALIDATION_ERROR"))
        return kind

    def _new_id(self) -> str:
        self._state.next_id += 1
        return str(self._state.next_id)

    def _find(self, kind: str, object_id: str, id_property: str | None = None) -> _Object | None:
        objects = self._state.objects[kind]
        if id_property in (None, "", "hs_object_id"):
            return objects.get(object_id)
        wanted = object_id.lower() if id_property in _CASE_INSENSITIVE else object_id
        for obj in objects.values():
            value = obj.value(id_property)  # type: ignore[arg-type]
            if value is not None and (value.lower() if id_property in _CASE_INSENSITIVE else value) == wanted:
                return obj
        return None

    def _contact_by_email(self, email: str) -> _Object | None:
        return self._find("contacts", email, "email")

    def _check_properties(self, kind: str, values: Mapping[str, Any], *, creating: bool,
                          current: _Object | None = None) -> dict[str, str | None]:
        """Validate property values as HubSpot does; return them as stored (strings, None for cleared)."""
        if not isinstance(values, Mapping):
            raise _Invalid(self._validation("Invalid input JSON: properties must be an object"))
        index = _PROPERTY_INDEX[kind]
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
                moment = _parse_moment(text)
                if moment is None:
                    errors.append({"isValid": False, "message": f"{text} is not a valid datetime",
                                   "error": "INVALID_DATE", "name": name})
                    continue
                text = _iso(datetime.fromtimestamp(moment / 1000, UTC))
            clean[name] = text
        if errors:
            raise self._property_errors(errors)
        if kind == "contacts" and clean.get("email"):
            other = self._contact_by_email(clean["email"])  # type: ignore[arg-type]
            if other is not None and (current is None or other.id != current.id):
                raise _Invalid(self.error(409, f"Contact already exists. Existing ID: {other.id}", "CONFLICT"))
        return clean

    def _insert(self, kind: str, properties: Mapping[str, str | None], *, created: str | None = None,
                modified: str | None = None) -> _Object:
        created = created or _now()
        create_prop, modified_prop = _dates(kind)
        obj = _Object(self._new_id(), kind, {}, created, modified or created)
        obj.properties.update({k: v for k, v in properties.items() if v is not None})
        obj.properties[create_prop] = created
        obj.properties[modified_prop] = obj.updated_at
        obj.properties["hs_object_id"] = obj.id
        self._state.objects[kind][obj.id] = obj
        return obj

    def _touch(self, obj: _Object) -> None:
        obj.updated_at = _now()
        obj.properties[_dates(obj.kind)[1]] = obj.updated_at

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
        return sorted(found, key=_id_order)

    def _apply_associations(self, obj: _Object, associations: Any) -> list[tuple[str, str]]:
        """Check v3 `associations` of a create body; return the links to make."""
        if associations in (None, []):
            return []
        if not isinstance(associations, list):
            raise _Invalid(self._validation("Invalid input JSON: associations must be a list"))
        links = []
        for assoc in associations:
            try:
                to_id = str(assoc["to"]["id"])
                types = assoc["types"]
            except (KeyError, TypeError):
                raise _Invalid(self._validation("Invalid input JSON: association needs to.id and types")) from None
            for spec in types:
                type_id = spec.get("associationTypeId") if isinstance(spec, dict) else None
                pair = _TYPE_ID_PAIRS.get(type_id) if isinstance(type_id, int) else None
                if pair is None or spec.get("associationCategory") != "HUBSPOT_DEFINED":
                    raise _Invalid(self._validation(f"{type_id} is not a valid association type id"))
                if pair[0] != obj.kind:
                    raise _Invalid(self._validation(
                        f"association type id {type_id} does not apply to {_SINGULAR[obj.kind]} objects"))
                if to_id not in self._state.objects[pair[1]]:
                    raise _Invalid(self.error(
                        400, f"One or more associations are invalid: {_SINGULAR[pair[1]]} {to_id} does not exist",
                        "VALIDATION_ERROR", subCategory="crm.associations.INVALID_OBJECT_IDS"))
                links.append((pair[1], to_id))
        return links

    def _public(self, obj: _Object, properties: Iterable[str] | None = None) -> dict[str, Any]:
        """SimplePublicObject: requested properties (null when unset) plus the always-sent ones."""
        create_prop, modified_prop = _dates(obj.kind)
        names = list(properties) if properties is not None else list(_default_properties(obj.kind))
        out: dict[str, Any] = {name: obj.value(name) for name in names if name in _PROPERTY_INDEX[obj.kind]}
        for name in (create_prop, "hs_object_id", modified_prop):
            out[name] = obj.value(name)
        body: dict[str, Any] = {"id": obj.id, "properties": out, "createdAt": obj.created_at,
                                "updatedAt": obj.updated_at, "archived": obj.archived_at is not None}
        if obj.archived_at is not None:
            body["archivedAt"] = obj.archived_at
        return body

    # --- handlers: objects --------------------------------------------------------------------------

    def _handle(self, fn: Any, request: Request) -> Response:
        try:
            with self._lock:
                return fn(request)  # type: ignore[no-any-return]
        except _Invalid as invalid:
            return invalid.response

    def _properties(self, request: Request) -> Response:
        return self._handle(lambda r: Response.json({"results": PROPERTY_DEFINITIONS[self._kind(r.params["type"])]}),
                            request)

    def _create(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            return Response.json(self._create_one(kind, r.json() or {}), 201)
        return self._handle(run, request)

    def _create_one(self, kind: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Invalid(self._validation("Invalid input JSON: expected an object"))
        properties = self._check_properties(kind, body.get("properties") or {}, creating=True)
        if kind in ENGAGEMENT_TYPES and not properties.get("hs_timestamp"):
            properties["hs_timestamp"] = _now()
        probe = _Object("0", kind, {}, "", "")
        links = self._apply_associations(probe, body.get("associations"))
        obj = self._insert(kind, properties)
        for to in links:
            self._link((kind, obj.id), to)
        return self._public(obj, [*properties, *_default_properties(kind)])

    def _batch_create(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            inputs = self._inputs(r.json())
            started = _now()
            # All-or-nothing: validate everything before creating anything.
            for item in inputs:
                if not isinstance(item, dict):
                    raise _Invalid(self._validation("Invalid input JSON: inputs must be objects"))
                self._check_properties(kind, item.get("properties") or {}, creating=True)
                self._apply_associations(_Object("0", kind, {}, "", ""), item.get("associations"))
            results = [self._create_one(kind, item) for item in inputs]
            return Response.json({"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": _now()}, 201)
        return self._handle(run, request)

    def _inputs(self, body: Any) -> list[Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise _Invalid(self._validation("Invalid input JSON: inputs is required"))
        if len(inputs) > _BATCH_LIMIT:
            raise _Invalid(self.error(
                400, f"Too many inputs: {len(inputs)}. The maximum number of inputs per batch is {_BATCH_LIMIT}.",
                "VALIDATION_ERROR", context={"maxInputs": [str(_BATCH_LIMIT)]}))
        return inputs

    def _read(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            object_id = unquote(r.params["id"])
            id_property = r.arg("idProperty")
            obj = self._find(kind, object_id, id_property)
            if obj is None and r.arg("archived") == "true":
                obj = self._state.archived[kind].get(object_id)
            if obj is None:
                return self._not_found(object_id)
            names = _multi(r.query.get("properties"))
            body = self._public(obj, names or None)
            wanted = [self._kind(a) for a in _multi(r.query.get("associations"))]
            if wanted:
                body["associations"] = {}
                for to_kind in wanted:
                    ids = self._linked(kind, obj.id, to_kind)
                    if ids:
                        label = f"{_SINGULAR[kind]}_to_{_SINGULAR[to_kind]}"
                        body["associations"][to_kind] = {"results": [{"id": i, "type": label} for i in ids]}
            return Response.json(body)
        return self._handle(run, request)

    def _update(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            object_id = unquote(r.params["id"])
            obj = self._find(kind, object_id, r.arg("idProperty"))
            if obj is None:
                return self._not_found(object_id)
            body = r.json() or {}
            properties = self._check_properties(kind, body.get("properties") or {}, creating=False, current=obj)
            for name, value in properties.items():
                if value is None:
                    obj.properties.pop(name, None)
                else:
                    obj.properties[name] = value
            self._touch(obj)
            return Response.json(self._public(obj, [*properties, *_default_properties(kind)]))
        return self._handle(run, request)

    def _archive_object(self, kind: str, object_id: str) -> bool:
        obj = self._state.objects[kind].pop(object_id, None)
        if obj is None:
            return False
        obj.archived_at = _now()
        self._state.archived[kind][obj.id] = obj
        self._unlink_all((kind, obj.id))
        return True

    def _archive(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            object_id = unquote(r.params["id"])
            if not self._archive_object(kind, object_id):
                return self._not_found(object_id)
            return Response.empty(204)
        return self._handle(run, request)

    def _batch_read(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            body = r.json() or {}
            inputs = self._inputs(body)
            names = body.get("properties") or None
            id_property = body.get("idProperty")
            started = _now()
            results, missing = [], []
            for item in inputs:
                wanted = str(item.get("id")) if isinstance(item, dict) else ""
                obj = self._find(kind, wanted, id_property)
                if obj is None:
                    missing.append(wanted)
                else:
                    results.append(self._public(obj, names))
            answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                      "completedAt": _now()}
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
        return self._handle(run, request)

    def _batch_archive(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            kind = self._kind(r.params["type"])
            inputs = self._inputs(r.json())
            for item in inputs:
                if isinstance(item, dict) and "id" in item:
                    self._archive_object(kind, str(item["id"]))  # ids that do not exist are ignored, as HubSpot
            return Response.empty(204)
        return self._handle(run, request)

    def _gdpr_delete(self, request: Request) -> Response:
        def run(r: Request) -> Response:
            body = r.json() or {}
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
        return self._handle(run, request)

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
        def run(r: Request) -> Response:
            kind, to_kind = self._kind(r.params["type"]), self._kind(r.params["to"])
            object_id = unquote(r.params["id"])
            limit = _int_arg(r.arg("limit"), _V4_PAGE_MAX)
            after = _int_arg(r.arg("after"), 0)
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
                answer["paging"] = {"next": {"after": nxt, "link": f"{r.path}?after={nxt}"}}
            return Response.json(answer)
        return self._handle(run, request)

    # --- search ---------------------------------------------------------------------------------------

    def _search(self, request: Request) -> Response:
        return self._handle(self._run_search, request)

    def _run_search(self, request: Request) -> Response:
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
        names = body.get("properties") or list(_default_properties(kind))
        query = body.get("query")
        matched = [obj for obj in self._state.objects[kind].values()
                   if _matches_groups(obj, groups) and _matches_query(obj, query)]
        matched = _sorted(matched, body.get("sorts") or [])
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
                if flt.get("propertyName") not in _PROPERTY_INDEX[kind]:
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
        def run(r: Request) -> Response:
            email = unquote(r.params["email"])
            if not is_valid_email(email):
                return self._validation(f"Invalid email address: {email}")
            statuses = [self._status_of(email, d["id"]) for d in SUBSCRIPTION_DEFINITIONS]
            return Response.json({"recipient": email, "subscriptionStatuses": statuses})
        return self._handle(run, request)

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

    def _unsubscribe(self, request: Request) -> Response:
        return self._handle(lambda r: self._change_subscription(r, False), request)

    def _subscribe(self, request: Request) -> Response:
        return self._handle(lambda r: self._change_subscription(r, True), request)

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
                           if (o.properties.get("email") or "").lower() == wanted), key=_id_order)

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
            clean.setdefault("hs_timestamp", created or _now())
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
            _DemoSeeder(self, random.Random(seed)).run()
            return self.summary()


# --- search helpers -------------------------------------------------------------------------------------


def _is_search(path: str) -> bool:
    return path.endswith("/search") and path.startswith("/crm/")


def _id_order(object_id: str) -> tuple[int, str]:
    return (int(object_id), "") if object_id.isdigit() else (1 << 62, object_id)


def _int_arg(value: str | None, default: int) -> int | None:
    if value is None or value == "":
        return default
    return int(value) if value.isdigit() else None


def _multi(values: list[str] | None) -> list[str]:
    """A multi-value query parameter, repeated or comma-separated."""
    return [part for value in values or [] for part in value.split(",") if part]


def _kind_of(obj: _Object, name: str) -> str:
    meta = _PROPERTY_INDEX[obj.kind].get(name)
    return meta["type"] if meta else "string"


def _comparable(obj: _Object, name: str, value: Any) -> Any:
    """A value in the property's own order: numbers and dates as floats, strings as they are."""
    kind = _kind_of(obj, name)
    if value is None:
        return None
    if kind in ("number",):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if kind in ("datetime", "date"):
        return _parse_moment(value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.lower() if name in _CASE_INSENSITIVE else text


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^\w@.'%+-]+", text.lower()) if t]


def _matches_filter(obj: _Object, flt: Mapping[str, Any]) -> bool:
    name, op = flt["propertyName"], flt["operator"]
    raw = obj.value(name)
    present = raw not in (None, "")
    if op == "HAS_PROPERTY":
        return present
    if op == "NOT_HAS_PROPERTY":
        return not present
    have = _comparable(obj, name, raw) if present else None
    if op in ("IN", "NOT_IN"):
        wanted = {_comparable(obj, name, v) for v in flt.get("values", [])}
        inside = have is not None and have in wanted
        return inside if op == "IN" else not inside
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = "^" + ".*".join(re.escape(part) for part in str(flt.get("value", "")).lower().split("*")) + "$"
        found = present and any(re.match(pattern, token) for token in _tokens(str(raw)))
        return found if op == "CONTAINS_TOKEN" else not found
    value = _comparable(obj, name, flt.get("value"))
    if op == "EQ":
        return have is not None and have == value
    if op == "NEQ":
        return have != value
    if have is None or value is None:
        return False
    try:
        if op == "LT":
            return bool(have < value)
        if op == "LTE":
            return bool(have <= value)
        if op == "GT":
            return bool(have > value)
        if op == "GTE":
            return bool(have >= value)
        if op == "BETWEEN":
            high = _comparable(obj, name, flt.get("highValue"))
            return high is not None and bool(value <= have <= high)
    except TypeError:  # a number compared with text
        return False
    return False


def _matches_groups(obj: _Object, groups: Sequence[Mapping[str, Any]]) -> bool:
    if not groups:
        return True
    return any(all(_matches_filter(obj, f) for f in group["filters"]) for group in groups)


def _matches_query(obj: _Object, query: Any) -> bool:
    """`query`: a prefix match on the tokens of the default searchable text properties."""
    if not query:
        return True
    wanted = str(query).lower()
    fields = ("email", "firstname", "lastname", "phone", "company") if obj.kind == "contacts" else ()
    values = [obj.properties.get(f) or "" for f in fields] or [v or "" for v in obj.properties.values()]
    return any(token.startswith(wanted) for value in values for token in _tokens(value))


def _sorted(objects: list[_Object], sorts: Sequence[Any]) -> list[_Object]:
    result = sorted(objects, key=lambda o: _id_order(o.id))
    for spec in reversed(list(sorts)):
        if isinstance(spec, str):
            name, descending = spec.lstrip("-"), spec.startswith("-")
        elif isinstance(spec, dict):
            name, descending = spec.get("propertyName", "hs_object_id"), spec.get("direction") == "DESCENDING"
        else:
            continue

        def key(obj: _Object, name: str = name) -> tuple[int, Any]:
            value = _comparable(obj, name, obj.value(name))
            return (1, "") if value is None else (0, value)
        try:
            result.sort(key=key, reverse=descending)
        except TypeError:
            result.sort(key=lambda o, name=name: str(o.value(name) or ""), reverse=descending)  # type: ignore[misc]
    return result


# --- demo seed -------------------------------------------------------------------------------------------

_FIRST = ("Alice", "Bruno", "Chloe", "Daniel", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya",
          "Lucas", "Marta", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tessa", "Umar", "Vera")
_LAST = ("Andersen", "Barbosa", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova", "Jansen",
         "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva", "Tanaka", "Walsh")
_COMPANIES = (("Northwind Networks", "northwind.example"), ("Bluewater Datacentres", "bluewater-dc.example"),
              ("Helix Carrier Services", "helixcarrier.example"), ("Polar Telecom", "polartel.example"),
              ("Tidal Cloud", "tidalcloud.example"), ("Orbital Exchange", "orbital-ix.example"))
_CITIES = (("London", "United Kingdom"), ("Leeds", "United Kingdom"), ("Austin", "United States"),
           ("Amsterdam", "Netherlands"), ("Berlin", "Germany"), ("Toronto", "Canada"))
_TOPICS = ("QSFP28 100G-LR4 pricing", "lead time on MPO-12 trunks", "DOM thresholds for SFP28 LR",
           "a quote for 200 LC-LC patch cables", "Arista compatibility of 400G-DR4 optics")
_START = datetime(2019, 1, 1, tzinfo=UTC)
_SPAN_S = int((datetime(2026, 6, 30, tzinfo=UTC) - _START).total_seconds())


class _DemoSeeder:
    def __init__(self, sandbox: HubSpotSandbox, rng: random.Random) -> None:
        self.sandbox, self.rng = sandbox, rng

    def moment(self, after: datetime = _START) -> datetime:
        span = max(int((datetime(2026, 6, 30, tzinfo=UTC) - after).total_seconds()), 1)
        return after + timedelta(seconds=self.rng.randrange(span))

    def person(self, email: str, first: str, last: str, company: str, city: tuple[str, str], created: datetime,
               modified: datetime, **extra: Any) -> str:
        props = {
            "email": email, "firstname": first, "lastname": last, "company": company,
            "jobtitle": self.rng.choice(("Network Engineer", "IT Director", "Procurement Manager", "CTO")),
            "phone": f"+44 20 7946 {self.rng.randint(1000, 9999)}", "city": city[0], "country": city[1],
            "lifecyclestage": self.rng.choice(("lead", "customer", "subscriber")),
            "hs_analytics_source": self.rng.choice(("ORGANIC_SEARCH", "EMAIL_MARKETING", "REFERRALS")),
            "ip_city": city[0], **extra,
        }
        return self.sandbox.add_contact(props, created=_iso(created), modified=_iso(modified))

    def activity(self, contact: str, email: str, first: str, kinds: Mapping[str, int], after: datetime) -> None:
        for kind, count in kinds.items():
            for _ in range(count):
                when = self.moment(after)
                topic = self.rng.choice(_TOPICS)
                props: dict[str, Any] = {
                    "notes": {"hs_note_body": f"<p>{first} asked about {topic}.</p>"},
                    "emails": {"hs_email_direction": "INCOMING_EMAIL", "hs_email_status": "SENT",
                               "hs_email_subject": f"Re: {topic}",
                               "hs_email_text": f"Hi, this is {first}. Could you help with {topic}?",
                               "hs_email_headers": json.dumps({"from": {"email": email, "firstName": first},
                                                               "to": [{"email": "sales@precision.example"}]}),
                               "hs_email_sender_email": email, "hs_email_to_email": "sales@precision.example"},
                    "calls": {"hs_call_title": f"Call with {first}", "hs_call_body": f"<p>Discussed {topic}.</p>",
                              "hs_call_duration": str(self.rng.randint(60, 1800) * 1000),
                              "hs_call_direction": "OUTBOUND", "hs_call_status": "COMPLETED",
                              "hs_call_to_number": f"+44 20 7946 {self.rng.randint(1000, 9999)}"},
                    "meetings": {"hs_meeting_title": f"{first} / Precision: {topic}",
                                 "hs_meeting_body": "Agenda: requirements, pricing, delivery.",
                                 "hs_meeting_location": "Video call", "hs_meeting_outcome": "COMPLETED",
                                 "hs_meeting_start_time": _iso(when),
                                 "hs_meeting_end_time": _iso(when + timedelta(minutes=30))},
                    "tasks": {"hs_task_subject": f"Follow up with {first}", "hs_task_status": "COMPLETED",
                              "hs_task_priority": "MEDIUM"},
                }[kind]
                props["hs_timestamp"] = _iso(when)
                self.sandbox.add_engagement(kind, props, [contact], created=_iso(when))

    def subscribe(self, email: str, ids: Sequence[str]) -> None:
        self.sandbox._state.subscriptions[email.lower()] = {sub_id: "SUBSCRIBED" for sub_id in ids}

    def run(self) -> None:
        ada = self.person("Ada.Lovelace@Example.com", "Ada", "Lovelace", "Analytical Engines Ltd",
                          ("London", "United Kingdom"), datetime(2015, 11, 3, 9, 12, tzinfo=UTC),
                          datetime(2025, 4, 1, 12, 0, tzinfo=UTC), recent_conversion_event_name="Contact us",
                          recent_conversion_date="2024-11-17T16:21:00.000Z", num_conversion_events="2",
                          message="Please send the datasheet for the QSFP28 LR4.")
        self.activity(ada, "Ada.Lovelace@Example.com", "Ada", {"notes": 2, "emails": 2, "calls": 1, "meetings": 1},
                      datetime(2024, 1, 1, tzinfo=UTC))
        self.subscribe(ERASURE_SUBJECT, ("1190", "1191"))
        self.sandbox._state.legal_bases[(ERASURE_SUBJECT, "1191")] = ("CONSENT_WITH_NOTICE", "Product updates box ticked")

        grace = self.person("Grace.Hopper@Example.org", "Grace", "Hopper", "Harvard Computation Lab",
                            ("Austin", "United States"), datetime(2020, 2, 11, 11, 30, tzinfo=UTC),
                            datetime(2025, 9, 9, 9, 9, tzinfo=UTC))
        self.activity(grace, "Grace.Hopper@Example.org", "Grace",
                      {"notes": 1, "emails": 1, "calls": 2, "meetings": 1}, datetime(2023, 1, 1, tzinfo=UTC))
        self.subscribe(ACCESS_SUBJECT, ("1190",))

        for number, email in enumerate(DECOY_EMAILS):
            created = datetime(2021, 3, 1 + number, 10, 0, tzinfo=UTC)
            first, last = _FIRST[number], _LAST[-1 - number]
            decoy = self.person(email, first, last, "Decoy Systems", ("Amsterdam", "Netherlands"), created, created)
            self.activity(decoy, email, first, {"notes": 1}, created)
            self.subscribe(email, ("1190",))

        used: set[str] = set()
        for _ in range(50):
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            company, domain = self.rng.choice(_COMPANIES)
            email = f"{first}.{last}@{domain}".lower()
            suffix = 2
            while email in used:
                email, suffix = f"{first}.{last}{suffix}@{domain}".lower(), suffix + 1
            used.add(email)
            created = self.moment()
            modified = min(created + timedelta(days=self.rng.randint(0, 700)), datetime(2026, 6, 30, tzinfo=UTC))
            person = self.person(email, first, last, company, self.rng.choice(_CITIES), created, modified)
            kinds = {kind: self.rng.choices((0, 1, 2), (4, 3, 1))[0] for kind in ("notes", "emails", "calls", "meetings")}
            self.activity(person, email, first, kinds, created)
            if self.rng.random() < 0.5:
                self.subscribe(email, ("1190",))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.hubspot --port N`: serve the demo portal until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.hubspot", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--seed", type=int, default=7, help="demo seed (default 7)")
    parser.add_argument("--token", action="append", help=f"accepted access token (default {DEMO_TOKEN})")
    parser.add_argument("--window-limit", type=int, default=100, help="calls per rolling window (100/110/190)")
    parser.add_argument("--window-seconds", type=float, default=10.0)
    parser.add_argument("--search-per-second", type=int, default=4)
    parser.add_argument("--daily-limit", type=int, default=250_000)
    args = parser.parse_args(argv)
    sandbox = HubSpotSandbox(tokens=args.token or (DEMO_TOKEN,), window_limit=args.window_limit,
                             window_seconds=args.window_seconds, search_per_second=args.search_per_second,
                             daily_limit=args.daily_limit)
    sandbox.seed_demo(args.seed)
    serve_forever(sandbox, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
