"""HubSpot CRM through the official `hubspot-api-client` (12.0.0): contacts and their engagements.

What it does, per operation of the contract (DESIGN.md):

- `discover`: a typed ``EQ`` filter on ``email`` in ``POST /crm/v3/objects/contacts/search`` (never a
  free-text ``query``), paged with ``after``; each hit is checked again (trimmed, lower-cased, equal) so a
  vendor-side fuzzy match can never reach an erasure. Then the contacts' engagements (notes, e-mails,
  calls, meetings; configurable) through v4 associations, paged.
- `export`: the object type's property list once (``GET /crm/v3/properties/{type}``), then every record
  with all its properties through ``batch/read`` (100 per call: a POST body holds hundreds of property
  names, where a GET's query string would not), streamed.
- `erase`: DELETE of a contact is HubSpot's GDPR delete (``basic_api.purge``, ``idProperty=email`` with
  the address read from the record, by id if it has none): one call removes the contact for good,
  blocklists the address, and (per HubSpot) takes along the engagements associated only with it.
  DELETE of an engagement archives what is still there afterwards (``batch/archive``; HubSpot has no
  GDPR delete for engagements, and archived records are purged by HubSpot after 90 days). ANONYMISE of
  a contact PATCHes the configured properties; e-mail properties are only ever cleared, never set to a
  placeholder (HubSpot validates e-mail syntax and uniqueness: Fides' "[erased]" was refused). A
  contact whose GDPR delete would take a RETAINED engagement with it is anonymised instead (with a
  mapping), as the legal rules say for refused deletions. Idempotent: what is gone is done.
- `verify_erased`: discovery again.
- `expired`/`purge`: search ``<retention property> LT cutoff`` per object holding the category, in keyset
  order (``hs_object_id``), restarting the query before HubSpot's 10,000-results-per-query cap; purge with
  ``batch/archive`` in 100s.
- `opt_out` (marketing objection): unsubscribe the address from every e-mail subscription type through
  communication preferences v3 (what SDK 12 exposes; v4's single ``unsubscribe-all`` is not in it). The
  contact is kept.

Pacing: a client-side rolling window (`rate_limit`, HubSpot's 100 per 10 s by default) paces every call,
and a second one (`search_rate_limit`, 4/s) paces search. ``X-HubSpot-RateLimit-Remaining`` is read on
every answer, and calls are spaced out when it runs low (other clients share the token's budget).
Retries (tenacity, `connectors.pacing.vendor_retry`): 429 (waiting ``Retry-After`` and holding the limiter
off; a ``DAILY`` 429 is not retried), 5xx, connection resets and timeouts. The SDK's own urllib3 retries
are turned off so that one policy decides.

Credentials: a private-app token, read from the environment variable named by `token_env`. Private-app
tokens do not expire and cannot be refreshed: a 401 (``EXPIRED_AUTHENTICATION`` for a rotated or
expired one, ``INVALID_AUTHENTICATION`` for a revoked or wrong one) is a clear `ConnectorError` asking for a
new token, never retried.

Personal data never reaches an exception or a log: the SDK's exceptions carry response bodies (HubSpot
echoes addresses in 400 and 404 bodies) and URLs (the subscription status URL holds the address), so
every one is replaced by a `ConnectorError` naming the system, the operation, the object and HubSpot's
status and category only, raised outside the ``except`` block so that it is not chained.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import hubspot
import requests
import urllib3
from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest
from hubspot.crm.contacts import PublicGdprDeleteInput
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectId,
    SimplePublicObjectInput,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.base import (
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    FieldChange,
    RateLimitSpec,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    RightsAction,
    RightsOutcome,
    RightsReceipt,
    Subject,
    as_text,
    check_rectifiable,
    chunks,
    env_secret,
    json_friendly,
    origin_setting_problem,
    outcome_for,
    receipt_id,
    resolve_origin,
    same_text,
    subject_email,
    unique_decisions,
    validate_settings,
)
from connectors.pacing import (
    LATENCY_MARGIN,
    Pause,
    budget_key,
    limiter_for,
    parse_retry_after,
    register_cache,
    vendor_retry,
)
from dsr.contract import RECTIFIABLE_FIELDS

KIND = "hubspot"
VERSION = "hubspot/1"
DEFAULT_BASE_URL = "https://api.hubapi.com"
MAX_BATCH = 100  # batch/read, batch/archive
SEARCH_PAGE_MAX = 200
SEARCH_RESULT_CAP = 10_000  # HubSpot answers 400 past this many results of one query
ASSOCIATIONS_PAGE = 500

ENGAGEMENTS = ("notes", "emails", "calls", "meetings", "tasks")
SUBSCRIPTIONS_OBJECT = "email_subscriptions"  # object name of opt-out outcomes
# Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> contact property (HubSpot's defaults).
DEFAULT_RECTIFIABLE: Mapping[str, str] = {
    "first_name": "firstname", "last_name": "lastname", "email": "email", "phone": "phone",
    "postal_address": "address", "company": "company", "title": "jobtitle",
}
# Why a lifted restriction subscribes an address again (HubSpot records it with the legal basis).
RESTORE_EXPLANATION = "Restriction of processing lifted (GDPR Art. 18): subscription restored as it was"
_SUBSCRIBED = re.compile(r"^SUBSCRIBED(?: \((?P<basis>[A-Z_]{2,64})\))?$")

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PROPERTY_NAME = re.compile(r"^[a-z0-9_]+$")
_TOKEN_LIKE = re.compile(r"^[A-Z_]{2,64}$")  # HubSpot categories and policy names; anything else is dropped
_EMAIL_PROPERTIES = frozenset({"email", "work_email", "hs_additional_emails"})
_NOT_WRITABLE = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_createdate", "hs_lastmodifieddate"})
_DEFAULT_RETENTION = {"contacts": "lastmodifieddate"}  # engagements: hs_lastmodifieddate
_DEFAULT_CATEGORIES: dict[str, tuple[DataCategory, ...]] = {
    "contacts": (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.MARKETING),
    "notes": (DataCategory.USAGE,),
    "emails": (DataCategory.MARKETING, DataCategory.USAGE),
    "calls": (DataCategory.USAGE,),
    "meetings": (DataCategory.USAGE,),
    "tasks": (DataCategory.USAGE,),
}

T = TypeVar("T")


# --- settings ---------------------------------------------------------------------------------------
# Validators raise ValueError("relative.path: message"); `_describe` puts the system's config path in
# front, so every error names the field at fault without echoing its value.


class HubSpotSettings(BaseModel):
    """The `settings:` block of a `hubspot` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(default=None, min_length=1)
    base_url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    token_env: str = Field(pattern=_ENV_VAR_NAME)
    rate_limit: RateLimitSpec = RateLimitSpec(calls=100, period_seconds=10)
    search_rate_limit: RateLimitSpec = RateLimitSpec(calls=4, period_seconds=1)
    engagements: tuple[Literal["notes", "emails", "calls", "meetings", "tasks"], ...] = (
        "notes", "emails", "calls", "meetings",
    )
    categories: dict[str, tuple[DataCategory, ...]] = Field(default_factory=dict)
    anonymise: dict[str, str | None] | None = None
    retention_property: dict[str, str] = Field(default_factory=dict)
    gdpr_delete_cascades: bool = True  # HubSpot's GDPR delete takes engagements associated only with the contact
    # canonical field -> contact property a rectification writes; unset: DEFAULT_RECTIFIABLE.
    rectifiable: dict[str, str] | None = None
    slow_down_below: int = Field(default=10, ge=0)  # X-HubSpot-RateLimit-Remaining at which calls are spaced out
    page_size: int = Field(default=SEARCH_PAGE_MAX, ge=1, le=SEARCH_PAGE_MAX)
    search_result_cap: int = Field(default=SEARCH_RESULT_CAP, ge=SEARCH_PAGE_MAX)  # HubSpot's per-query cap
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in ("token", "access_token", "api_key", "hapikey"):
                if key in data:
                    raise ValueError(f"{key}: never put a token in systems.yaml; name its environment "
                                     "variable with token_env")
        return data

    @field_validator("engagements")
    @classmethod
    def _unique_engagements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names an engagement type twice")
        return value

    @model_validator(mode="after")
    def _check(self) -> HubSpotSettings:
        problem = origin_setting_problem(self.base_url, self.base_url_env)
        if problem:
            raise ValueError(problem)
        objects = ("contacts", *self.engagements)
        for name, cats in self.categories.items():
            if name not in objects:
                raise ValueError(f"categories.{name}: not an object of this system (contacts or one of engagements)")
            if not cats:
                raise ValueError(f"categories.{name}: name at least one data category")
        for name in self.retention_property:
            if name not in objects:
                raise ValueError(f"retention_property.{name}: not an object of this system")
        for name, prop in self.retention_property.items():
            if not _PROPERTY_NAME.match(prop):
                raise ValueError(f"retention_property.{name}: not a HubSpot property name")
        if self.anonymise is not None:
            if not self.anonymise:
                raise ValueError("anonymise: name at least one property, or leave anonymise out")
            for prop, value in self.anonymise.items():
                if not _PROPERTY_NAME.match(prop):
                    raise ValueError(f"anonymise.{prop}: not a HubSpot property name")
                if prop in _NOT_WRITABLE:
                    raise ValueError(f"anonymise.{prop}: HubSpot does not let this property be set")
                if prop in _EMAIL_PROPERTIES and value not in (None, ""):
                    raise ValueError(
                        f"anonymise.{prop}: HubSpot checks e-mail syntax and uniqueness, so a placeholder is "
                        "refused or collides; use null (the property is cleared)")
            if "email" not in self.anonymise:
                raise ValueError("anonymise: must clear email (null), the link to the person")
        for canonical, prop in (self.rectifiable or {}).items():
            if canonical not in RECTIFIABLE_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a rectifiable field ({', '.join(RECTIFIABLE_FIELDS)})")
            if not _PROPERTY_NAME.match(prop) or prop in _NOT_WRITABLE:
                raise ValueError(f"rectifiable.{canonical}: not a writable HubSpot property name")
        return self

    def categories_of(self, obj: str) -> tuple[DataCategory, ...]:
        return self.categories.get(obj) or _DEFAULT_CATEGORIES[obj]

    def retention_of(self, obj: str) -> str:
        return self.retention_property.get(obj) or _DEFAULT_RETENTION.get(obj, "hs_lastmodifieddate")


def parse_settings(system: str, settings: Mapping[str, Any]) -> HubSpotSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(HubSpotSettings, system, settings, describe=_describe)


def _describe(base: str, exc: ValidationError) -> str:
    messages = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join([base, *(str(part) for part in error["loc"])])
        cause = (error.get("ctx") or {}).get("error")
        if error["type"] == "value_error" and cause is not None:
            text = str(cause)
            # Model-level validators start with the path below `where`; field-level ones do not.
            messages.append(f"{where}.{text}" if error["loc"] == () else f"{where}: {text}")
        else:
            messages.append(f"{where}: {error['msg']}")
    return "; ".join(messages)


# --- construction -----------------------------------------------------------------------------------


def create(system: str, settings: Mapping[str, Any]) -> HubSpotConnector:
    """Build the connector for one system (the registry's entry point). Makes no call to HubSpot.

    Raises:
        ConnectorConfigError: bad settings, or an environment variable they name is unset.
    """
    parsed = parse_settings(system, settings)
    base_url = resolve_origin(f"systems.{system}.settings", parsed.base_url, parsed.base_url_env, DEFAULT_BASE_URL)
    token = env_secret(f"systems.{system}.settings.token_env", parsed.token_env)
    return HubSpotConnector(system, parsed, base_url=base_url, token=token)


# --- errors -----------------------------------------------------------------------------------------


class HubSpotApiError(ConnectorError):
    """HubSpot answered with an error status; the message names status and category only."""

    def __init__(self, message: str, *, status: int | None = None, category: str | None = None,
                 policy: str | None = None) -> None:
        super().__init__(message)
        self.status, self.category, self.policy = status, category, policy


def _api_status(exc: BaseException) -> int | None:
    """The HTTP status of any of the SDK's per-package `ApiException`s, else None."""
    if any(cls.__name__ == "ApiException" for cls in type(exc).__mro__):
        status = getattr(exc, "status", None)
        return status if isinstance(status, int) else None
    return None


def _body_field(exc: BaseException, name: str) -> str | None:
    """A token-like field of the error body (category, policyName); never free text."""
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else None
    except (ValueError, TypeError):
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) and _TOKEN_LIKE.match(value) else None


def _header(exc: BaseException, name: str) -> str | None:
    headers = getattr(exc, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return str(value) if value is not None else None


_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, requests.exceptions.ConnectionError,
                   requests.exceptions.Timeout, ConnectionError, TimeoutError)


def _retryable(exc: BaseException) -> bool:
    status = _api_status(exc)
    if status == 429:
        return _body_field(exc, "policyName") != "DAILY"
    if status is not None:
        return status >= 500
    return isinstance(exc, _NETWORK_ERRORS)


def _retry_after(exc: BaseException) -> float | None:
    if _api_status(exc) != 429:
        return None
    return parse_retry_after(_header(exc, "Retry-After"))


# --- the connector ----------------------------------------------------------------------------------


class HubSpotConnector:
    """Discover, export, erase, verify, purge and opt out a subject's HubSpot contacts and engagements.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    `stats` counts calls, retries, throttling answers and waits, for benchmarks and tests.
    """

    def __init__(self, system: str, settings: HubSpotSettings, *, base_url: str, token: str) -> None:
        self._system = system
        self._settings = settings
        self._objects = ("contacts", *settings.engagements)
        rl, srl = settings.rate_limit, settings.search_rate_limit
        # HubSpot counts per private-app token; search has its own, smaller budget.
        self._limiter = limiter_for(budget_key("hubspot", base_url, token), rl.calls,
                                    rl.period_seconds * (1 + LATENCY_MARGIN))
        self._search_limiter = limiter_for(budget_key("hubspot-search", base_url, token), srl.calls,
                                           srl.period_seconds * (1 + LATENCY_MARGIN))
        self._pause = Pause()
        self._timeout = (settings.connect_timeout_seconds, settings.timeout_seconds)
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._property_names: dict[str, list[str]] = {}
        # urllib3 retries off: one retry policy (ours) decides, and counts.
        client = hubspot.Client.create(access_token=token, host=base_url, base_url=base_url,
                                       retry=urllib3.Retry(total=0, redirect=False, raise_on_status=False))
        # Each property access builds a new ApiClient (and connection pool): build each API once.
        self._search_api = client.crm.objects.search_api
        self._batch_api = client.crm.objects.batch_api
        self._basic_api = client.crm.objects.basic_api
        self._contacts_api = client.crm.contacts.basic_api
        self._associations_api = client.crm.associations.v4.basic_api
        self._properties_api = client.crm.properties.core_api
        self._status_api = client.communication_preferences.status_api
        self._apis = (self._search_api, self._batch_api, self._basic_api, self._contacts_api,
                      self._associations_api, self._properties_api, self._status_api)
        self._info = ConnectorInfo(
            system=system, kind=KIND, version=VERSION, write_only=False,
            rate_limit_per_second=rl.calls / rl.period_seconds, max_batch=MAX_BATCH, objects=self._objects,
        )

    @property
    def info(self) -> ConnectorInfo:
        """Kind, version, rate limit, batch size (100) and the objects (contacts, engagements)."""
        return self._info

    @property
    def stats(self) -> dict[str, float]:
        """calls, retries, throttled, server_errors, network_errors, slowdowns, waited_seconds."""
        with self._stats_lock:
            return dict(self._stats)

    def close(self) -> None:
        """Release the SDK's connection pools."""
        for api in self._apis:
            api_client = getattr(api, "api_client", None)
            try:
                api_client.rest_client.pool_manager.clear()  # type: ignore[union-attr]
            except AttributeError:
                pass

    def __enter__(self) -> HubSpotConnector:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """The subject's contacts (exact e-mail match), then their engagements, each object by id.

        Raises:
            ConnectorError: the subject has no e-mail, or HubSpot failed (after retries).
        """
        email = subject_email(subject)
        contact_ids = self._find_contacts(email)
        refs = [self._ref("contacts", cid) for cid in contact_ids]
        for obj in self._settings.engagements:
            found: set[str] = set()
            for cid in contact_ids:
                found.update(self._associated(cid, obj))
            refs.extend(self._ref(obj, eid) for eid in sorted(found, key=_id_order))
        return refs

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every property of each record, 100 records per call; records gone since discovery are skipped.

        Records come object by object, in the order of `refs` within an object.
        """
        for obj, group in self._group(refs).items():
            names = self._all_properties(obj)
            for chunk in chunks(group, MAX_BATCH):
                found = self._read_batch("export", obj, [r.id for r in chunk], names)
                for ref in chunk:
                    properties = found.get(ref.id)
                    if properties is not None:
                        yield Record(ref=ref, fields={k: json_friendly(v) for k, v in sorted(properties.items())})

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """GDPR-delete contacts, archive engagements, anonymise or retain, per decision; idempotent.

        Raises:
            ConnectorError: HubSpot failed in a way that is not a refusal of one record (network,
                authentication, still throttled after retries); re-running is safe.
        """
        calls_before = self._stats["calls"]
        outcomes: dict[str, RecordOutcome] = {}
        todo: list[ErasureDecision] = []
        for decision in unique_decisions(decisions, outcomes):
            problem = self._problem_with(decision.ref)
            if problem is not None:
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
            elif decision.action is ErasureAction.RETAIN:
                outcomes[decision.ref.key] = outcome_for(decision, done=True)
            else:
                todo.append(decision)

        contact_deletes = [d for d in todo if d.ref.object == "contacts" and d.action is ErasureAction.DELETE]
        contact_anons = [d for d in todo if d.ref.object == "contacts" and d.action is ErasureAction.ANONYMISE]
        for d in todo:
            if d.ref.object != "contacts" and d.action is ErasureAction.ANONYMISE:
                outcomes[d.ref.key] = outcome_for(
                    d, done=False, error=f"no anonymise mapping for object {d.ref.object!r} in systems."
                    f"{self._system} (HubSpot engagements can only be deleted)")
        engagement_deletes: dict[str, list[ErasureDecision]] = {}
        for d in todo:
            if d.ref.object != "contacts" and d.action is ErasureAction.DELETE:
                engagement_deletes.setdefault(d.ref.object, []).append(d)

        wanted = ["email", *(self._settings.anonymise or {})]
        contacts = self._read_batch("erase", "contacts",
                                    [d.ref.id for d in contact_deletes + contact_anons], list(dict.fromkeys(wanted)))
        before = {obj: set(self._read_batch("erase", obj, [d.ref.id for d in group], ["hs_object_id"]))
                  for obj, group in engagement_deletes.items()}

        retained = {(d.ref.object, d.ref.id) for d in decisions if d.action is ErasureAction.RETAIN
                    and d.ref.system == self._system and d.ref.object != "contacts"}
        for decision in contact_deletes:
            if decision.ref.id in contacts and self._purge_would_take(decision.ref.id, retained):
                if self._settings.anonymise is None:
                    outcomes[decision.ref.key] = outcome_for(
                        decision, done=False,
                        error="HubSpot's GDPR delete would also delete a retained engagement of this contact; "
                        f"give systems.{self._system}.settings.anonymise to anonymise it instead")
                else:
                    outcomes[decision.ref.key] = self._anonymise(decision, contacts.get(decision.ref.id))
            else:
                outcomes[decision.ref.key] = self._gdpr_delete(decision, contacts.get(decision.ref.id))
        for decision in contact_anons:
            outcomes[decision.ref.key] = self._anonymise(decision, contacts.get(decision.ref.id))

        for obj, group in engagement_deletes.items():
            present_before = before[obj]
            still = set(self._read_batch("erase", obj, sorted(present_before, key=_id_order), ["hs_object_id"]))
            for chunk in chunks(sorted(still, key=_id_order), MAX_BATCH):
                self._archive("erase", obj, chunk)
            cleared = tuple(self._all_properties(obj, "erase")) if present_before else ()
            for decision in group:
                gone = decision.ref.id not in present_before
                outcomes[decision.ref.key] = outcome_for(decision, done=True, already_gone=gone,
                                                      fields_cleared=() if gone else cleared)

        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(system=self._system, outcomes=ordered, vendor_receipt_id=receipt_id("hubspot", ordered),
                       api_calls=int(self._stats["calls"] - calls_before))

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (GDPR-deleted and anonymised contacts no longer do)."""
        return self.discover(subject)

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Records of every object holding `category` whose retention property is before `cutoff`.

        The retention property is `retention_property.<object>` (default ``lastmodifieddate`` for
        contacts, ``hs_lastmodifieddate`` for engagements); a date cutoff means midnight UTC. Refs carry
        the property's date as `anchor_date`. Pages in ``hs_object_id`` order, so records purged while
        iterating do not make it skip others.
        """
        wanted = DataCategory(category)
        for obj in self._objects:
            if wanted in self._settings.categories_of(obj):
                yield from self._expired_hits(obj, cutoff)

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                    ) -> Iterator[RecordRef]:
        """Expired records of every object, each object searched once (whatever categories it holds).

        `cutoff_of(categories)` gives an object's cutoff (the retention purge: that of the category
        governing its records), or None to leave the object out. Otherwise as `expired`.
        """
        for obj in self._objects:
            cutoff = cutoff_of(tuple(self._settings.categories_of(obj)))
            if cutoff is not None:
                yield from self._expired_hits(obj, cutoff)

    def _expired_hits(self, obj: str, cutoff: date | datetime) -> Iterator[RecordRef]:
        prop = self._settings.retention_of(obj)
        filters = [Filter(property_name=prop, operator="LT", value=str(_epoch_millis(cutoff)))]
        for hit in self._search_all("expired", obj, filters, [prop]):
            yield replace(self._ref(obj, hit.id), anchor_date=_date_of((hit.properties or {}).get(prop)))

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Archive the records, 100 per call (HubSpot's batch/archive; restorable by HubSpot for 90 days).

        HubSpot's batch/archive answers 204 whether or not an id still exists, so `already_gone` is
        never claimed here.
        """
        calls_before = self._stats["calls"]
        outcomes: list[RecordOutcome] = []
        for obj, group in self._group(refs).items():
            for chunk in chunks(group, MAX_BATCH):
                self._archive("purge", obj, [r.id for r in chunk])
                outcomes.extend(RecordOutcome(ref=r, action=ErasureAction.DELETE, done=True) for r in chunk)
        result = tuple(outcomes)
        return Receipt(system=self._system, outcomes=result, vendor_receipt_id=receipt_id("hubspot", result),
                       api_calls=int(self._stats["calls"] - calls_before))

    def opt_out(self, subject: Subject) -> Receipt:
        """Marketing objection: unsubscribe the address from every e-mail subscription type; keep the contact.

        One outcome per subscription type (object ``email_subscriptions``): done, or already gone when
        HubSpot says the address is already unsubscribed. Subscription statuses are per address in
        HubSpot, so this works whether or not a contact has the address.
        """
        email = subject_email(subject)
        calls_before = self._stats["calls"]
        statuses = self._call("opt_out", SUBSCRIPTIONS_OBJECT,
                              self._status_api.get_email_status_with_http_info, email)
        outcomes = []
        for status in statuses.subscription_statuses or []:
            ref = RecordRef(self._system, SUBSCRIPTIONS_OBJECT, str(status.id), (DataCategory.MARKETING,))
            request = PublicUpdateSubscriptionStatusRequest(email_address=email, subscription_id=str(status.id))
            try:
                self._call("opt_out", SUBSCRIPTIONS_OBJECT, self._status_api.unsubscribe_with_http_info, request)
            except HubSpotApiError as exc:
                if exc.status == 400 and status.status != "SUBSCRIBED":
                    # HubSpot refuses to unsubscribe an address that already is: nothing to do.
                    outcomes.append(RecordOutcome(ref, ErasureAction.DELETE, done=True, already_gone=True))
                    continue
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
                    outcomes.append(RecordOutcome(ref, ErasureAction.DELETE, done=False, error=str(exc)))
                    continue
                raise
            outcomes.append(RecordOutcome(ref, ErasureAction.DELETE, done=True, fields_cleared=("status",)))
        result = tuple(outcomes)
        return Receipt(system=self._system, outcomes=result, vendor_receipt_id=receipt_id("hubspot", result),
                       api_calls=int(self._stats["calls"] - calls_before))

    # --- rectification (dsr.contract.Rectifier) ---

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Update the changed properties of each contact (``PATCH /crm/v3/objects/contacts/{id}`` through the
        SDK's ``basic_api.update``); engagements hold no rectifiable field (every field `not_held`).

        A contact HubSpot refuses to change (an address that is not valid or another contact's: 400/409)
        is not done with HubSpot's category; one gone since discovery is not done either.

        Raises:
            ConnectorError: `changes` names a field that is not a canonical rectifiable field, or HubSpot
                failed (network, token, throttled after retries).
        """
        check_rectifiable(self._system, changes)
        calls_before = self._stats["calls"]
        mapping = self._rectifiable()
        held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
        not_held = tuple(canonical for canonical in changes if canonical not in mapping)
        contacts = [r for r in refs if r.object == "contacts" and self._problem_with(r) is None]
        current = self._read_batch("rectify", "contacts", [r.id for r in contacts], sorted(set(held.values()))) \
            if contacts and held else {}
        outcomes: list[RightsOutcome] = []
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, False, error=problem))
            elif ref.object != "contacts":
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=tuple(changes)))
            elif not held:
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held))
            else:
                outcomes.append(self._rectify_contact(ref, current.get(ref.id), held, changes, not_held))
        result = tuple(outcomes)
        return RightsReceipt(self._system, RightsAction.RECTIFY, result, receipt_id("hubspot", result),
                             int(self._stats["calls"] - calls_before))

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Read the contacts again: those whose properties do not show the new values (a contact deleted
        meanwhile holds no old value either, so it is not listed)."""
        check_rectifiable(self._system, changes)
        mapping = self._rectifiable()
        held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
        contacts = [r for r in refs if r.object == "contacts" and self._problem_with(r) is None]
        if not contacts or not held:
            return []
        current = self._read_batch("verify", "contacts", [r.id for r in contacts], sorted(set(held.values())))
        return [ref for ref in contacts if ref.id in current and any(
            not same_text(canonical, current[ref.id].get(prop), changes[canonical]) for canonical, prop in held.items())]

    def _rectifiable(self) -> Mapping[str, str]:
        return self._settings.rectifiable if self._settings.rectifiable is not None else DEFAULT_RECTIFIABLE

    def _rectify_contact(self, ref: RecordRef, current: Mapping[str, Any] | None, held: Mapping[str, str],
                         changes: Mapping[str, str], not_held: tuple[str, ...]) -> RightsOutcome:
        if current is None:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error="the contact no longer exists in HubSpot")
        diffs = tuple(FieldChange(canonical, f"contacts.{prop}", old=as_text(current.get(prop)), new=changes[canonical])
                      for canonical, prop in held.items()
                      if not same_text(canonical, current.get(prop), changes[canonical]))
        if not diffs:
            return RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held)
        properties = {held[d.field]: d.new or "" for d in diffs}  # "" clears a property
        try:
            self._call("rectify", "contacts", self._basic_api.update_with_http_info, "contacts", ref.id,
                       SimplePublicObjectInput(properties=properties))
        except HubSpotApiError as exc:
            if exc.status == 404:
                return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                     error="the contact no longer exists in HubSpot")
            if exc.status in (400, 409):
                return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                     error=f"HubSpot refused the new values ({exc.status} {exc.category or 'error'})")
            raise
        return RightsOutcome(ref, RightsAction.RECTIFY, True, changes=diffs, not_held=not_held)

    # --- marketing (dsr.contract.MarketingSuppressor) ---

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Unsubscribe the subject's address from every e-mail subscription it is subscribed to
        (Communication Preferences v3, what SDK 12 exposes; HubSpot keeps subscriptions per address).

        The changes (``subscription:<id>``, ``SUBSCRIBED (<legal basis>)`` -> ``NOT_SUBSCRIBED``) go on the
        first contact's outcome; other records are done without a change. Already unsubscribed: no change.
        """
        email = subject_email(subject)
        calls_before = self._stats["calls"]
        changes: list[FieldChange] = []
        contacts = [r for r in refs if r.object == "contacts" and self._problem_with(r) is None]
        error: str | None = None
        if contacts:
            statuses = self._call("suppress", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info,
                                  email)
            for status in statuses.subscription_statuses or []:
                if status.status != "SUBSCRIBED":
                    continue
                basis = status.legal_basis if isinstance(status.legal_basis, str) and \
                    _TOKEN_LIKE.match(status.legal_basis) else None
                request = PublicUpdateSubscriptionStatusRequest(email_address=email, subscription_id=str(status.id))
                try:
                    self._call("suppress", SUBSCRIPTIONS_OBJECT, self._status_api.unsubscribe_with_http_info, request)
                except HubSpotApiError as exc:
                    if exc.status is not None and exc.status in (400, 404):
                        error = f"HubSpot refused to unsubscribe subscription {status.id} ({exc.status} " \
                                f"{exc.category or 'error'})"
                        continue
                    raise
                changes.append(FieldChange(f"subscription:{status.id}", f"communication-preferences/v3:{status.id}",
                                           old=f"SUBSCRIBED ({basis})" if basis else "SUBSCRIBED", new="NOT_SUBSCRIBED"))
        outcomes = []
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                outcomes.append(RightsOutcome(ref, RightsAction.SUPPRESS, False, error=problem))
            elif contacts and ref == contacts[0]:
                outcomes.append(RightsOutcome(ref, RightsAction.SUPPRESS, error is None, changes=tuple(changes),
                                              error=error))
            else:
                outcomes.append(RightsOutcome(ref, RightsAction.SUPPRESS, True))
        result = tuple(outcomes)
        return RightsReceipt(self._system, RightsAction.SUPPRESS, result, receipt_id("hubspot", result),
                             int(self._stats["calls"] - calls_before))

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Subscribe the address again to exactly the subscriptions the suppression ended, with the legal
        basis they had. One the person has meanwhile subscribed to again is left as it is; a blocklisted
        address (GDPR-deleted since) cannot be subscribed: not done, with HubSpot's answer."""
        email = subject_email(subject)
        calls_before = self._stats["calls"]
        outcomes = []
        for outcome in suppressed:
            restored: list[FieldChange] = []
            error: str | None = None
            for change in outcome.changes:
                match = _SUBSCRIBED.match(change.old or "") if change.field.startswith("subscription:") else None
                if match is None:
                    continue
                sub_id = change.field.split(":", 1)[1]
                basis = match.group("basis")
                request = PublicUpdateSubscriptionStatusRequest(
                    email_address=email, subscription_id=sub_id, legal_basis=basis,
                    legal_basis_explanation=RESTORE_EXPLANATION if basis else None)
                try:
                    self._call("restore", SUBSCRIPTIONS_OBJECT, self._status_api.subscribe_with_http_info, request)
                except HubSpotApiError as exc:
                    if exc.status == 400 and self._subscribed(email, sub_id):
                        continue  # subscribed again meanwhile: nothing to put back
                    if exc.status is not None and exc.status in (400, 404):
                        error = f"HubSpot refused to subscribe again to {sub_id} ({exc.status} {exc.category or 'error'})"
                        continue
                    raise
                restored.append(FieldChange(change.field, change.vendor_field, old=change.new, new=change.old))
            outcomes.append(RightsOutcome(outcome.ref, RightsAction.RESTORE, error is None, changes=tuple(restored),
                                          error=error))
        result = tuple(outcomes)
        return RightsReceipt(self._system, RightsAction.RESTORE, result, receipt_id("hubspot", result),
                             int(self._stats["calls"] - calls_before))

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """The contacts, if their address is still subscribed to any e-mail subscription."""
        email = subject_email(subject)
        contacts = [r for r in refs if r.object == "contacts" and self._problem_with(r) is None]
        if not contacts:
            return []
        statuses = self._call("verify", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info, email)
        still = any(s.status == "SUBSCRIBED" for s in statuses.subscription_statuses or [])
        return contacts if still else []

    def _subscribed(self, email: str, sub_id: str) -> bool:
        statuses = self._call("restore", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info, email)
        return any(str(s.id) == sub_id and s.status == "SUBSCRIBED" for s in statuses.subscription_statuses or [])

    # --- discovery ---

    def _find_contacts(self, email: str) -> list[str]:
        filters = [Filter(property_name="email", operator="EQ", value=email)]
        ids = []
        for hit in self._search_all("discover", "contacts", filters, ["email"]):
            stored = ((hit.properties or {}).get("email") or "").strip().lower()
            if stored == email:  # belt and braces: never trust a vendor-side match blindly
                ids.append(str(hit.id))
        return sorted(set(ids), key=_id_order)

    def _associated(self, contact_id: str, obj: str) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": ASSOCIATIONS_PAGE}
            if after:
                kwargs["after"] = after
            page = self._call("discover", obj, self._associations_api.get_page_with_http_info,
                              "contacts", contact_id, obj, **kwargs)
            ids.extend(str(item.to_object_id) for item in page.results or [])
            after = _next_after(page)
            if not after:
                return ids

    def _search_all(self, operation: str, obj: str, filters: list[Filter], properties: list[str]) -> Iterator[Any]:
        """Every hit of a search, in hs_object_id order, paged by keyset (`hs_object_id > last`).

        Not HubSpot's `after` cursor: it is an offset, so records archived while the listing goes
        on (the retention purge deletes as it lists) would make it skip as many others. Keyset
        paging also never meets the 10,000-results cap of one query.
        """
        limit = self._settings.page_size
        last_id: str | None = None
        while True:
            round_filters = list(filters)
            if last_id is not None:
                round_filters.append(Filter(property_name="hs_object_id", operator="GT", value=last_id))
            request = PublicObjectSearchRequest(
                filter_groups=[FilterGroup(filters=round_filters)], properties=properties, limit=limit,
                sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            )
            page = self._call(operation, obj, self._search_api.do_search_with_http_info, obj, request, search=True)
            results = page.results or []
            for hit in results:
                last_id = str(hit.id)
                yield hit
            if len(results) < limit or not _next_after(page):
                return

    # --- erasure ---

    def _purge_would_take(self, contact_id: str, retained: set[tuple[str, str]]) -> bool:
        """Whether the contact's GDPR delete would take a retained engagement along."""
        if not retained or not self._settings.gdpr_delete_cascades:
            return False
        for obj in sorted({o for o, _ in retained}):
            if obj in self._settings.engagements and any(
                    (obj, eid) in retained for eid in self._associated(contact_id, obj)):
                return True
        return False

    def _gdpr_delete(self, decision: ErasureDecision, current: Mapping[str, Any] | None) -> RecordOutcome:
        if current is None:
            return outcome_for(decision, done=True, already_gone=True)
        email = (current.get("email") or "").strip()
        body = (PublicGdprDeleteInput(id_property="email", object_id=email) if email
                else PublicGdprDeleteInput(object_id=decision.ref.id))
        try:
            self._call("erase", "contacts", self._contacts_api.purge_with_http_info, body)
        except HubSpotApiError as exc:
            if exc.status == 404:
                return outcome_for(decision, done=True, already_gone=True)
            if exc.status == 400:
                return outcome_for(decision, done=False, error=str(exc))
            raise
        return outcome_for(decision, done=True, fields_cleared=tuple(self._all_properties("contacts", "erase")))

    def _anonymise(self, decision: ErasureDecision, current: Mapping[str, Any] | None) -> RecordOutcome:
        mapping = self._settings.anonymise
        if mapping is None:
            return outcome_for(decision, done=False, action=ErasureAction.ANONYMISE,
                            error=f"no anonymise mapping at systems.{self._system}.settings.anonymise")
        if current is None:
            return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, already_gone=True)
        changes = {prop: ("" if value is None else value) for prop, value in mapping.items()
                   if (current.get(prop) or "") != (value or "")}
        if not changes:
            return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, already_gone=True)
        try:
            self._call("erase", "contacts", self._basic_api.update_with_http_info, "contacts", decision.ref.id,
                       SimplePublicObjectInput(properties=changes))
        except HubSpotApiError as exc:
            if exc.status == 404:
                return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, already_gone=True)
            if exc.status in (400, 409):
                return outcome_for(decision, done=False, action=ErasureAction.ANONYMISE,
                                error=f"HubSpot refused the values of systems.{self._system}.settings.anonymise "
                                f"({exc.status} {exc.category or 'error'})")
            raise
        return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, fields_cleared=tuple(sorted(changes)))

    def _archive(self, operation: str, obj: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        body = BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=i) for i in ids])
        self._call(operation, obj, self._batch_api.archive_with_http_info, obj, body)

    # --- reading ---

    def _all_properties(self, obj: str, operation: str = "export") -> list[str]:
        if obj not in self._property_names:
            names = _PROPERTIES.get(self._limiter, obj)
            if names is None:
                answer = self._call(operation, obj, self._properties_api.get_all_with_http_info, obj)
                names = sorted({p.name for p in answer.results or []})
                _PROPERTIES.put(self._limiter, obj, names)
            self._property_names[obj] = list(names)
        return self._property_names[obj]

    def _read_batch(self, operation: str, obj: str, ids: Sequence[str], properties: list[str]) -> dict[str, dict[str, Any]]:
        """id -> properties of the records that exist (batch/read answers 207 for the others)."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_BATCH):
            body = BatchReadInputSimplePublicObjectId(
                properties=properties, properties_with_history=[], inputs=[SimplePublicObjectId(id=i) for i in chunk])
            answer = self._call(operation, obj, self._batch_api.read_with_http_info, obj, body)
            for item in answer.results or []:
                found[str(item.id)] = dict(item.properties or {})
        return found

    # --- calling HubSpot ---

    def _call(self, operation: str, obj: str, fn: Callable[..., Any], *args: Any, search: bool = False,
              **kwargs: Any) -> Any:
        """One SDK call: paced, retried, its rate-limit headers read; errors as PII-free ConnectorErrors."""

        @vendor_retry(retryable=_retryable, retry_after=_retry_after, attempts=self._settings.retry_attempts,
                      max_wait=self._settings.retry_max_wait, on_retry=self._on_retry)
        def attempt() -> Any:
            waited = self._pause.wait()
            if search:
                waited += self._search_limiter.acquire()
                waited += _SEARCH_SPACING.wait(self._search_limiter,
                                               self._search_limiter.period / self._search_limiter.calls)
            waited += self._limiter.acquire()
            self._count("calls")
            if waited:
                self._count("waited_seconds", waited)
            return fn(*args, _request_timeout=self._timeout, **kwargs)

        error: ConnectorError | None = None
        try:
            data, _status, headers = attempt()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a PII-free ConnectorError below
            error = self._wrap(operation, obj, exc)
        if error is not None:
            raise error  # outside the except block: the SDK exception (body, URL) is not chained
        self._observe(headers)
        return data

    def _on_retry(self, exc: BaseException, wait: float) -> None:
        self._count("retries")
        status = _api_status(exc)
        if status == 429:
            self._count("throttled")
            # Every caller waits what HubSpot asked, not only this one.
            self._pause.extend(wait)
            if wait >= self._limiter.period:  # shorter, hold_off could let a burst through (see _Pause)
                self._limiter.hold_off(wait)
        elif status is not None:
            self._count("server_errors")
        else:
            self._count("network_errors")
        self._count("waited_seconds", wait)

    def _observe(self, headers: Any) -> None:
        """Space calls out when HubSpot says the token's window is nearly used up (by us or others)."""
        try:
            remaining = int(headers.get("X-HubSpot-RateLimit-Remaining"))
            maximum = int(headers.get("X-HubSpot-RateLimit-Max"))
            interval = int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")) / 1000
        except (AttributeError, TypeError, ValueError):
            return  # search answers carry no rate-limit headers
        threshold = self._settings.slow_down_below
        if maximum > 0 and remaining < threshold:
            # One slot's share of the window per missing call below the threshold.
            self._pause.extend((threshold - remaining) * interval / maximum)
            self._count("slowdowns")

    def _wrap(self, operation: str, obj: str, exc: BaseException) -> ConnectorError:
        where = f"systems.{self._system}: {operation} of {obj!r}"
        status = _api_status(exc)
        if status is None:
            if isinstance(exc, _NETWORK_ERRORS):
                return ConnectorError(f"{where} failed: HubSpot unreachable ({type(exc).__name__}), "
                                      f"after {self._settings.retry_attempts} attempts")
            return ConnectorError(f"{where} failed: unexpected {type(exc).__name__} from the HubSpot client")
        category = _body_field(exc, "category")
        policy = _body_field(exc, "policyName")
        if status == 401:
            message = (f"{where} failed: HubSpot refused the access token (401 {category or 'UNAUTHORIZED'}). "
                       f"Private-app tokens cannot be refreshed: put a valid token in the environment variable "
                       f"{self._settings.token_env}")
        elif status == 403:
            message = f"{where} failed: the token lacks a scope this call needs (403 {category or 'FORBIDDEN'})"
        elif status == 429 and policy == "DAILY":
            message = f"{where} failed: HubSpot's daily API limit is used up (429 DAILY); not retried"
        elif status == 429:
            message = (f"{where} failed: still throttled by HubSpot (429 {policy or 'RATE_LIMIT'}) after "
                       f"{self._settings.retry_attempts} attempts")
        elif status >= 500:
            message = f"{where} failed: HubSpot server error {status} after {self._settings.retry_attempts} attempts"
        else:
            message = f"{where} failed: HubSpot answered {status} {category or ''}".rstrip()
        return HubSpotApiError(message, status=status, category=category, policy=policy)

    # --- helpers ---

    def _count(self, key: str, amount: float = 1) -> None:
        with self._stats_lock:
            self._stats[key] += amount  # type: ignore[assignment]

    def _ref(self, obj: str, object_id: str) -> RecordRef:
        return RecordRef(self._system, obj, str(object_id), self._settings.categories_of(obj))

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        if ref.object not in self._objects:
            return f"unknown object {ref.object!r} in systems.{self._system}"
        if not ref.id.isdigit():
            return f"id is not a HubSpot record id of object {ref.object!r}"
        return None

    def _group(self, refs: Sequence[RecordRef]) -> dict[str, list[RecordRef]]:
        grouped: dict[str, list[RecordRef]] = {}
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")
            grouped.setdefault(ref.object, []).append(ref)
        return grouped


# --- module helpers ---------------------------------------------------------------------------------



def _next_after(page: Any) -> str | None:
    paging = getattr(page, "paging", None)
    nxt = getattr(paging, "next", None) if paging is not None else None
    after = getattr(nxt, "after", None) if nxt is not None else None
    return str(after) if after else None


#: How long an object type's property list is reused by the connectors of a process (it was read
#: again by every export: one call per object type). A property added in HubSpot is exported
#: within this time.
PROPERTIES_TTL_SECONDS = 900.0


class _ProcessCache:
    """Answers kept per vendor account (its limiter, which `limiter_for` shares per account) and key."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._answers: dict[tuple[object, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, account: object, key: str) -> Any | None:
        with self._lock:
            entry = self._answers.get((account, key))
        return entry[1] if entry is not None and entry[0] >= time.monotonic() else None

    def put(self, account: object, key: str, answer: Any) -> None:
        with self._lock:
            self._answers[(account, key)] = (time.monotonic() + self.ttl, answer)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


_PROPERTIES = _ProcessCache(PROPERTIES_TTL_SECONDS)
register_cache(_PROPERTIES.clear)


class _Spacer:
    """Search calls of one account spaced evenly (period / calls apart), never in bursts.

    The search limiter allows its whole window at once; a burst that left together can reach
    HubSpot late and bunched with the next window's first calls (threads on a loaded machine), and
    HubSpot answers 429 below its limit. Evenly spaced, a call must be late by a whole interval for that.
    """

    def __init__(self) -> None:
        self._next: dict[object, float] = {}
        self._lock = threading.Lock()

    def wait(self, account: object, interval: float) -> float:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(account, 0.0))
            self._next[account] = start + interval
        if start > now:
            time.sleep(start - now)
        return start - now

    def clear(self) -> None:
        with self._lock:
            self._next.clear()


_SEARCH_SPACING = _Spacer()
register_cache(_SEARCH_SPACING.clear)


def _id_order(object_id: str) -> tuple[int, str]:
    return (int(object_id), "") if object_id.isdigit() else (1 << 62, object_id)


def _epoch_millis(cutoff: date | datetime) -> int:
    if isinstance(cutoff, datetime):
        moment = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    else:
        moment = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _date_of(value: Any) -> date | None:
    if value in (None, ""):
        return None
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC).date()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None


