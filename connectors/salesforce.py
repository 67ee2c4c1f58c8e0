"""Salesforce: a subject's Contacts, Leads, campaign memberships, Cases, activities and Individual record.

Reached through simple-salesforce (REST, sObject Collections, Bulk API 2.0), unchanged. The data map
(`settings.objects`) names each object, how its records tie to a person (the e-mail field itself, or a
link to a parent object found before it: ``Case.ContactId``, ``Task.WhoId``; or, with ``reverse``, a
field on the parent that holds this record's Id: ``Contact.IndividualId``), its data categories, the
date a retention clock runs from, the fields retention compares with a cutoff, and what anonymising
a record means.

Identity is matched exactly: SOQL is built only through simple-salesforce's `format_soql`, so quotes,
backslashes and ``%``/``_`` in an address stay inside one string literal, and ``=`` never widens the
way LIKE would. (Salesforce compares text case-insensitively, which is what a normalised address
wants.) Object and field names come only from the validated config.

Login is OAuth 2.0 only, done by simple-salesforce itself so that it logs in again on a 401
INVALID_SESSION_ID: client credentials (``consumer_key`` + ``consumer_secret`` + a My Domain) or the
JWT bearer flow (``username`` + ``consumer_key`` + a private key). SOAP ``login()`` is being retired
and is never used. Bulk API 2.0 calls do not re-login by themselves; the connector logs in once more
and repeats the call.

Every HTTP call goes through one `requests.Session` subclass handed to simple-salesforce (a supported
parameter, not a patch): it paces calls with the shared `RateLimiter`, gives each a timeout, reads
``Sforce-Limit-Info`` and slows down as the org's daily API quota runs out, and, for sandboxes only,
sends ``https://*.salesforce.com`` and the instance URL to `endpoint_override`. Throttling
(403 REQUEST_LIMIT_EXCEEDED), 5xx answers, connection resets and timeouts are retried with backoff
(`vendor_retry`).

Erasure: ANONYMISE decisions first (a retained Case may then let go of its Contact), then deletes,
children before parents, up to 200 ids per sObject Collections call, or as Bulk API 2.0 hardDelete
jobs with ``erase_mode: hard_delete`` (records skip the Recycle Bin). A delete the org refuses with
DELETE_FAILED (a Contact still tied to a kept Case) is anonymised instead where the object has an
`anonymise` mapping. ENTITY_IS_DELETED and NOT_FOUND count as done (``already_gone``).

`verify_erased` re-runs discovery with ``query`` (never ``queryAll``): a soft-deleted record sits in
the Recycle Bin, invisible to every user and integration, until Salesforce purges it (15 days), and
counts as erased here. ``queryAll`` is no better proof for hard deletes either: Salesforce documents
that purged rows may still be returned by it for a while, so it would report records that are gone.
With ``erase_mode: hard_delete`` the Bulk API job results are the evidence of the hard delete.

Personal data never reaches an exception message: simple-salesforce's exceptions and `requests`'
carry the request URL, and a SOQL URL holds the subject's address. They are replaced (not chained) by
a `ConnectorError` naming the system, operation, object, HTTP status and Salesforce error code only.
Keep the ``urllib3`` logger above DEBUG in production: at DEBUG it logs request URLs.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dt_time
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from simple_salesforce import (
    Salesforce,
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
    format_soql,
)
from simple_salesforce.exceptions import SalesforceOperationError

from connectors.base import (
    ConnectorConfigError,
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    RateLimitSpec,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    Subject,
    chunks,
    env_secret,
    origin_problem,
    outcome_for,
    receipt_id,
    subject_email,
    topological_order,
    unique_decisions,
    validate_settings,
)

# Generic helpers of the first connector (they belong in connectors.base; one copy beats two).
from connectors.pacing import LATENCY_MARGIN, Limiter, budget_key, limiter_for, register_cache, vendor_retry
from dsr.contract import RECTIFIABLE_FIELDS, FieldChange, RightsAction, RightsOutcome, RightsReceipt

KIND = "salesforce"
VERSION = "salesforce/1"
MAX_BATCH = 200  # ids per sObject Collections call (Salesforce's limit)
BULK_JOB_MAX = 10_000  # ids per Bulk API 2.0 job
MIN_API_VERSION = 42.0  # sObject Collections delete
# `purge` calls the retention purge may have in flight at once: one call at a time cannot use the
# rate limit (25/s) at any latency past 40 ms; every call still waits for the one shared limiter.
PURGE_WORKERS = 4

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_API_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # Salesforce API names; they go into SOQL unquoted
_DOMAIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
_ID18 = re.compile(r"^[A-Za-z0-9]{18}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_USAGE = re.compile(r"(?:^|[;\s])api-usage=(\d+)/(\d+)")
_GONE = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND"})
_TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "picklist", "multipicklist", "combobox", "url",
                         "encryptedstring"})  # fmt: skip
_SOQL_URL_BUDGET = 12_000  # characters of URL-encoded SOQL per GET, well under the 16 KB URI limit
_ENCODED_ID = 27  # an id in an IN list, URL-encoded: %27 + 18 + %27 + %2C

T = TypeVar("T")
ApiName = Annotated[str, Field(pattern=_API_NAME)]


# --- settings ---------------------------------------------------------------------------------------
# Validators raise ValueError("relative.path: message"); `_describe` puts the system's config path in
# front, so every error names the field at fault without echoing its value.


class MatchSpec(BaseModel):
    """One way an object's records tie to a person."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: ApiName  # the e-mail field; or the link field (on this object, or on the parent with `reverse`)
    parent: ApiName | None = None
    reverse: bool = False  # the parent's `field` holds this record's Id (Contact.IndividualId -> Individual)

    @model_validator(mode="after")
    def _check(self) -> MatchSpec:
        if self.reverse and self.parent is None:
            raise ValueError("reverse: needs parent (the object whose field holds this record's Id)")
        return self


class ObjectSpec(BaseModel):
    """One Salesforce object of the data map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: tuple[MatchSpec, ...] = Field(min_length=1)  # one mapping, or a list (any of them matches)
    categories: tuple[DataCategory, ...] = Field(min_length=1)
    anchor_date: ApiName | None = None
    retention_fields: tuple[ApiName, ...] = Field(default=("LastModifiedDate",), min_length=1)
    anonymise: dict[str, str | int | float | bool | None] | None = None
    optional: bool = False  # the object may not exist in the org (Individual needs data protection enabled)
    # Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> this object's field.
    rectifiable: dict[str, ApiName] = Field(default_factory=dict)
    # Marketing suppression: field -> the value meaning "no marketing" (HasOptedOutOfEmail: true,
    # Individual.HasOptedOutSolicit: true...); a restore puts each changed field's old value back.
    marketing_flags: dict[ApiName, bool | str] = Field(default_factory=dict)
    # A restriction (GDPR 18) also sets these: Individual.HasOptedOutProcessing ("Don't Process").
    restriction_flags: dict[ApiName, bool | str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_rights(self) -> ObjectSpec:
        for canonical in self.rectifiable:
            if canonical not in RECTIFIABLE_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a rectifiable field (one of {', '.join(RECTIFIABLE_FIELDS)})")
        return self

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _check_anonymise(self) -> ObjectSpec:
        if self.anonymise is None:
            return self
        if not self.anonymise:
            raise ValueError("anonymise: name at least one field, or leave anonymise out")
        for name in self.anonymise:
            if not re.match(_API_NAME, name):
                raise ValueError(f"anonymise.{name}: not a Salesforce field name")
            if name.lower() == "id":
                raise ValueError("anonymise.Id: the record's Id cannot be replaced")
        replaced = {name.lower() for name in self.anonymise}
        for match in self.match:
            if not match.reverse and match.field.lower() not in replaced:
                # Otherwise an "anonymised" record would still be found as the person's.
                raise ValueError(f"anonymise: must replace the match field {match.field!r} (the link to the person)")
        return self


class AuthSpec(BaseModel):
    """OAuth 2.0 login; every secret by the name of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: Literal["client_credentials", "jwt"]
    domain: str | None = Field(default=None, pattern=_DOMAIN)  # login, test, or a My Domain such as acme.my
    client_id_env: str = Field(pattern=_ENV_VAR_NAME)
    client_secret_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    username: str | None = Field(default=None, min_length=1)
    username_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    private_key_file: str | None = Field(default=None, min_length=1)
    private_key_file_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    private_key_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)  # the PEM itself

    @model_validator(mode="after")
    def _check(self) -> AuthSpec:
        jwt_only = ("username", "username_env", "private_key_file", "private_key_file_env", "private_key_env")
        if self.flow == "client_credentials":
            if self.domain is None or self.domain in ("login", "test"):
                raise ValueError("domain: client credentials need the org's My Domain (e.g. acme.my), not login/test")
            if self.client_secret_env is None:
                raise ValueError("client_secret_env: required for flow client_credentials")
            for name in jwt_only:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only used by flow jwt")
            return self
        if self.client_secret_env is not None:
            raise ValueError("client_secret_env: not used by flow jwt")
        if (self.username is None) == (self.username_env is None):
            raise ValueError("username: give either username or username_env")
        keys = [n for n in ("private_key_file", "private_key_file_env", "private_key_env") if getattr(self, n)]
        if len(keys) != 1:
            raise ValueError("private_key_file: give exactly one of private_key_file, private_key_file_env, "
                             "private_key_env")
        return self

    @property
    def login_domain(self) -> str:
        return self.domain or "login"


class SalesforceSettings(BaseModel):
    """The `settings:` block of a `salesforce` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_url: str | None = Field(default=None, min_length=1)
    instance_url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    # Sandboxes only: send every Salesforce URL to this loopback emulator instead (see the module docstring).
    endpoint_override: str | None = Field(default=None, min_length=1)
    endpoint_override_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    api_version: str = Field(default="62.0", pattern=r"^\d{2,3}\.0$")
    auth: AuthSpec
    rate_limit: RateLimitSpec = RateLimitSpec(calls=25, period_seconds=1.0)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, ge=0, le=600)
    quota_slowdown_at: float = Field(default=0.8, gt=0, lt=1)  # share of the daily API quota used
    bulk_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    erase_mode: Literal["delete", "hard_delete"] = "delete"
    objects: dict[str, ObjectSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> SalesforceSettings:
        for base in ("instance_url", "endpoint_override"):
            if getattr(self, base) is not None and getattr(self, f"{base}_env") is not None:
                raise ValueError(f"{base}_env: give either {base} or {base}_env, not both")
        if self.instance_url is not None:
            problem = origin_problem(self.instance_url, https_only=True)
            if problem:
                raise ValueError(f"instance_url: {problem}")
        if self.endpoint_override is not None:
            problem = origin_problem(self.endpoint_override)
            if problem:
                raise ValueError(f"endpoint_override: {problem}")
        if float(self.api_version) < MIN_API_VERSION:
            raise ValueError(f"api_version: {MIN_API_VERSION} or later is needed (sObject Collections)")
        for name, spec in self.objects.items():
            if not re.match(_API_NAME, name):
                raise ValueError(f"objects.{name}: not a Salesforce object name")
            for index, match in enumerate(spec.match):
                if match.parent is not None and match.parent not in self.objects:
                    raise ValueError(f"objects.{name}.match.{index}.parent: unknown object {match.parent!r}")
        _order, cycle = topological_order(self.objects, _discovery_parents(self.objects))
        if cycle:
            raise ValueError(f"objects.{cycle[0]}.match: parent links form a cycle ({' -> '.join(cycle)})")
        return self


def _discovery_parents(objects: Mapping[str, ObjectSpec]) -> dict[str, set[str]]:
    return {name: {m.parent for m in spec.match if m.parent} for name, spec in objects.items()}


def _erase_after(objects: Mapping[str, ObjectSpec]) -> dict[str, set[str]]:
    """Object -> objects whose records must be erased before its own.

    A child (Case via ContactId) goes before its parent; a reverse-linked record (the Individual a
    Contact points at) goes after the records that point at it.
    """
    after: dict[str, set[str]] = {name: set() for name in objects}
    for name, spec in objects.items():
        for match in spec.match:
            if match.parent is None:
                continue
            if match.reverse:
                after[name].add(match.parent)
            elif match.parent != name:
                after[match.parent].add(name)
    return after


def parse_settings(system: str, settings: Mapping[str, Any]) -> SalesforceSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(SalesforceSettings, system, settings)


# --- construction -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Credentials:
    client_id: str
    client_secret: str | None = None
    username: str | None = None
    private_key_file: str | None = None
    private_key: str | None = None


class _SessionCache:
    """Salesforce sessions by org and connected app (a budget key), shared by the connectors of a process."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, budget: str) -> tuple[str, str] | None:
        with self._lock:
            return self._sessions.get(budget)

    def put(self, budget: str, session: tuple[str, str]) -> None:
        with self._lock:
            self._sessions[budget] = session

    def discard(self, budget: str, session_id: str) -> None:
        """Forget an expired session (only that one: another thread may have logged in anew already)."""
        with self._lock:
            if self._sessions.get(budget, ("", ""))[0] == session_id:
                del self._sessions[budget]

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


_SESSIONS = _SessionCache()
register_cache(_SESSIONS.clear)

#: How long an object's describe is reused by the connectors of a process. Each request used to
#: describe every object again (7 of its ~25 calls); an org's schema changes rarely, and a field
#: added or removed is seen within this time (a missing one fails the run with its config path).
DESCRIBE_TTL_SECONDS = 900.0


class _DescribeCache:
    """Objects' describe answers (their field lists) by org budget and object, with expiry."""

    def __init__(self, ttl: float = DESCRIBE_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._answers: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, budget: str, name: str) -> tuple[bool, Any]:
        """(found, answer); an answer of None means the org has no such object."""
        with self._lock:
            entry = self._answers.get((budget, name))
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, budget: str, name: str, answer: Any) -> None:
        with self._lock:
            self._answers[(budget, name)] = (time.monotonic() + self.ttl, answer)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


_DESCRIBES = _DescribeCache()
register_cache(_DESCRIBES.clear)


def create(system: str, settings: Mapping[str, Any]) -> SalesforceConnector:
    """Build the connector for one system (the registry's entry point). It logs in on first use.

    Raises:
        ConnectorConfigError: bad settings, or a missing environment variable or key file.
    """
    parsed = parse_settings(system, settings)
    where = f"systems.{system}.settings"
    instance = _setting_or_env(where, parsed.instance_url, parsed.instance_url_env, "instance_url")
    problem = origin_problem(instance, https_only=True) if instance is not None else None
    if problem:  # only an environment variable's value can get here unchecked
        raise ConnectorConfigError(f"{where}.instance_url_env: {problem}")
    override = _setting_or_env(where, parsed.endpoint_override, parsed.endpoint_override_env, "endpoint_override")
    problem = origin_problem(override) if override is not None else None
    if problem:
        raise ConnectorConfigError(f"{where}.endpoint_override_env: {problem}")
    return SalesforceConnector(
        system, parsed, _credentials(f"{where}.auth", parsed.auth), instance_url=instance, endpoint_override=override
    )


def _setting_or_env(where: str, inline: str | None, variable: str | None, name: str) -> str | None:
    if inline is not None:
        return inline
    return env_secret(f"{where}.{name}_env", variable) if variable is not None else None


def _credentials(where: str, auth: AuthSpec) -> _Credentials:
    client_id = env_secret(f"{where}.client_id_env", auth.client_id_env)
    if auth.flow == "client_credentials":
        assert auth.client_secret_env is not None  # the model requires it for this flow
        return _Credentials(client_id, client_secret=env_secret(f"{where}.client_secret_env", auth.client_secret_env))
    username = auth.username or env_secret(f"{where}.username_env", auth.username_env or "")
    if auth.private_key_env is not None:
        return _Credentials(client_id, username=username, private_key=env_secret(f"{where}.private_key_env",
                                                                            auth.private_key_env))
    key_file = auth.private_key_file or env_secret(f"{where}.private_key_file_env", auth.private_key_file_env or "")
    field_name = "private_key_file" if auth.private_key_file else "private_key_file_env"
    if not Path(key_file).is_file():
        raise ConnectorConfigError(f"{where}.{field_name}: the private key file it names does not exist")
    return _Credentials(client_id, username=username, private_key_file=key_file)


# --- the HTTP session --------------------------------------------------------------------------------


class _OutsideSandbox(requests.RequestException):
    """With an endpoint override, a call to any other host is refused (credentials stay in the sandbox)."""


class _SalesforceSession(requests.Session):
    """The one session simple-salesforce uses for every call: login, REST and Bulk API 2.0.

    It paces calls with the connector's limiter and slows down as the daily quota runs out, gives
    every call a timeout (simple-salesforce sets none), reads ``Sforce-Limit-Info`` from every answer
    (Bulk API 2.0 answers too, which simple-salesforce does not parse) and, with an endpoint override
    (sandboxes only), sends ``https://*.salesforce.com`` and the instance URL to it.
    """

    def __init__(
        self,
        *,
        limiter: Limiter,
        timeout: float,
        slowdown_at: float,
        override: str | None,
        instance_url: str | None,
        stats: Counter[str],
        stats_lock: threading.Lock,
    ) -> None:
        super().__init__()
        self._limiter, self._timeout, self._slowdown_at = limiter, timeout, slowdown_at
        self._slot = limiter.period / limiter.calls
        self._override: SplitResult | None = urlsplit(override) if override else None
        self._sandbox_netlocs = {urlsplit(u).netloc.lower() for u in (override, instance_url) if u}
        self._stats, self._stats_lock = stats, stats_lock
        self._thread = threading.local()  # calls made by the current thread (concurrent erase/purge calls)
        self.usage: tuple[int, int] | None = None  # (used, daily quota) from the latest answer

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        method = method if isinstance(method, str) else method.decode()
        url = self._route(url if isinstance(url, str) else url.decode())
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        login = urlsplit(url).path.endswith("/services/oauth2/token")
        if not login:  # a login counts against the user's hourly logins, not the org's API budget
            self._pace()
        self._count("http_calls")
        self._thread.calls = self.calls_in_thread() + 1
        if login:
            self._count("logins")
        response = super().request(method, url, *args, **kwargs)
        self._observe(response)
        return response

    def _route(self, url: str) -> str:
        if self._override is None:
            return url
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and (host.endswith(".salesforce.com") or parts.netloc.lower() in self._sandbox_netlocs):
            return urlunsplit((self._override.scheme, self._override.netloc, parts.path, parts.query, parts.fragment))
        if parts.netloc.lower() == self._override.netloc.lower():
            return url
        raise _OutsideSandbox("endpoint_override is set: refusing a call to a host outside the sandbox")

    def _pace(self) -> None:
        self._limiter.acquire()
        usage = self.usage
        if usage is None or not usage[1]:
            return
        share = usage[0] / usage[1]
        if share >= self._slowdown_at:
            # From one extra slot per call at the threshold to ten at the end of the quota.
            closeness = min((share - self._slowdown_at) / (1 - self._slowdown_at), 1.0)
            self._count("quota_slowdowns")
            time.sleep(self._slot * (1 + 9 * closeness))

    def _observe(self, response: requests.Response) -> None:
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.usage = (int(match.group(1)), int(match.group(2)))
        status = response.status_code
        if status == 403 and b"REQUEST_LIMIT_EXCEEDED" in response.content:
            self._count("throttled")
        elif status == 401:
            self._count("expired_sessions")
        elif status >= 500:
            self._count("server_errors")

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self._stats[key] += 1

    def calls_in_thread(self) -> int:
        """HTTP calls made so far by the calling thread (an operation's own calls, whatever other
        threads of the connector do meanwhile)."""
        return int(getattr(self._thread, "calls", 0))


# --- the connector ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FieldInfo:
    name: str
    type: str
    length: int
    nillable: bool
    updateable: bool


@dataclass(frozen=True, slots=True)
class _Schema:
    """What `describe` says about an object's fields, by lower-cased API name, in describe order."""

    fields: Mapping[str, _FieldInfo]

    def get(self, name: str) -> _FieldInfo | None:
        return self.fields.get(name.lower())

    def name(self, name: str) -> str:
        info = self.fields[name.lower()]
        return info.name


_RAISE: Any = object()


class SalesforceConnector:
    """Discover, export, erase and verify a subject's records in one Salesforce org.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    """

    def __init__(
        self,
        system: str,
        settings: SalesforceSettings,
        credentials: _Credentials,
        *,
        instance_url: str | None = None,
        endpoint_override: str | None = None,
    ) -> None:
        self._system = system
        self._settings = settings
        self._credentials = credentials
        self._instance_host = urlsplit(instance_url).netloc.lower() if instance_url else None
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        # One budget per org and connected app, whichever request or worker is calling.
        budget = budget_key("salesforce", self._instance_host or settings.auth.login_domain, credentials.client_id,
                            credentials.username)
        self._budget = budget
        self._limiter = limiter_for(budget, settings.rate_limit.calls,
                                    settings.rate_limit.period_seconds * (1 + LATENCY_MARGIN))
        self._session = _SalesforceSession(
            limiter=self._limiter, timeout=settings.timeout_seconds, slowdown_at=settings.quota_slowdown_at,
            override=endpoint_override, instance_url=instance_url, stats=self._stats, stats_lock=self._stats_lock,
        )
        self._sf: Salesforce | None = None
        self._login_lock = threading.Lock()
        self._schemas: dict[str, _Schema | None] = {}
        self._anonymise_plans: dict[str, dict[str, Any] | str] = {}
        self._retry = vendor_retry(
            retryable=_retryable, attempts=settings.retry_attempts, max_wait=settings.retry_max_wait,
            on_retry=self._on_retry,
        )
        self._discover_order, _ = topological_order(settings.objects, _discovery_parents(settings.objects))
        erase_order, cycle = topological_order(settings.objects, _erase_after(settings.objects))
        if cycle:  # links in a loop: fall back to children-first by discovery order
            erase_order = list(reversed(self._discover_order))
        self._erase_rank = {name: rank for rank, name in enumerate(erase_order)}
        self._reverse_links = {
            name: sorted({m.field for spec in settings.objects.values() for m in spec.match
                          if m.reverse and m.parent == name})
            for name in settings.objects
        }
        rate = settings.rate_limit.calls / settings.rate_limit.period_seconds
        self._info = ConnectorInfo(
            system=system, kind=KIND, version=VERSION, rate_limit_per_second=rate, max_batch=MAX_BATCH,
            objects=tuple(settings.objects),
        )
        self.purge_workers = PURGE_WORKERS  # `purge` is thread-safe: each receipt counts its own calls

    @property
    def info(self) -> ConnectorInfo:
        """Kind, version, rate limit, batch size and the objects of the data map."""
        return self._info

    @property
    def stats(self) -> dict[str, Any]:
        """Counters since the connector was built: HTTP calls, logins, throttles, retries, quota use."""
        with self._stats_lock:
            counters: dict[str, Any] = dict(self._stats)
        usage = self._session.usage
        if usage is not None:
            counters["api_usage"], counters["api_quota"] = usage
        return counters

    def close(self) -> None:
        """Release the HTTP session's pooled connections."""
        self._session.close()

    def __enter__(self) -> SalesforceConnector:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """Every record tied to the subject's e-mail, directly or through parent links.

        Returns:
            Refs in data-map order (parents before children), records in query order within an object.

        Raises:
            ConnectorError: the subject has no e-mail, or Salesforce failed after retries.
            ConnectorConfigError: the data map names an object or field the org does not have.
        """
        return self._find(subject_email(subject))

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every field `describe` lists for the user (base64 bodies excepted), record by record.

        Fetched with SOQL, up to 200 ids per query (single-record GETs for objects too wide for one
        query URL). Records deleted since discovery are skipped.

        Raises:
            ConnectorError: a ref of another system or an unknown object, or Salesforce failed.
        """
        for name, group in self._group(refs).items():
            schema = self._schema(name)
            if schema is None:
                continue
            fields = [f.name for f in schema.fields.values() if f.type != "base64"]
            listing = ", ".join(fields)
            per_query = min(MAX_BATCH, (_SOQL_URL_BUDGET - len(listing) * 2 - 200) // _ENCODED_ID)
            if per_query < 10:
                yield from self._export_one_by_one(name, group)
                continue
            for batch in chunks(group, per_query):
                soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", listing, name,
                                   [ref.id for ref in batch])
                found = {r["Id"]: r for r in self._query(soql, "export", name)}
                for ref in batch:
                    if ref.id in found:
                        yield Record(ref, _plain(found[ref.id]))

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Delete, anonymise or retain each record as decided (see the module docstring for the order).

        Idempotent: a record already deleted, or already holding its anonymised values, is done with
        ``already_gone=True``. A record Salesforce refuses to change is not done, with the reason
        (its error code); the others go ahead. If Salesforce itself fails (after retries), the
        records not yet handled are not done, with that error.
        """
        calls_before = self._calls()
        run = _Run()
        for decision in unique_decisions(decisions, run.outcomes):
            problem = self._problem_with(decision.ref)
            if problem is not None:
                run.outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
            elif decision.action is ErasureAction.RETAIN:
                run.outcomes[decision.ref.key] = outcome_for(decision, done=True)
            else:
                run.pending.append(decision)
        self._anonymise([d for d in run.pending if d.action is ErasureAction.ANONYMISE], run)
        deletes = [d for d in run.pending if d.action is ErasureAction.DELETE]
        deletes.sort(key=lambda d: self._erase_rank[d.ref.object])
        refused = self._delete(deletes, run)
        self._anonymise(refused, run)  # deletes refused with DELETE_FAILED, for objects that say how
        ordered = tuple(run.outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(system=self._system, outcomes=ordered, vendor_receipt_id=receipt_id("salesforce", ordered),
                       api_calls=self._calls() - calls_before)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (anonymised records no longer do; see the module
        docstring for why the Recycle Bin is not searched)."""
        return self.discover(subject)

    # --- the other rights (dsr.contract.Rectifier, MarketingSuppressor) ---

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Set the canonical fields in `changes` on exactly these records (each object's `rectifiable`
        fields), read first so an unchanged field is not written; sObject Collections PATCH, 200 ids a call."""
        unknown = sorted(set(changes) - set(RECTIFIABLE_FIELDS))
        if unknown:
            raise ConnectorError(f"systems.{self._system}: not rectifiable field(s): {', '.join(unknown)}")
        return self._rights(refs, RightsAction.RECTIFY, lambda spec: {
            spec.rectifiable[c]: (c, v) for c, v in changes.items() if c in spec.rectifiable},
            not_held=lambda spec: tuple(sorted(set(changes) - set(spec.rectifiable))))

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Re-read the records: every one whose mapped fields do not show the new values."""
        return self._not_showing(refs, "verify rectification", lambda spec: {
            spec.rectifiable[c]: v for c, v in changes.items() if c in spec.rectifiable})

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef], *,
                           restrict_processing: bool = False) -> RightsReceipt:
        """Email opt-out on Contact and Lead, "Don't Market/Track/Profile" on the Individual (and, for a
        restriction, "Don't Process"), as the data map's `marketing_flags` / `restriction_flags` say."""
        return self._rights(refs, RightsAction.SUPPRESS, lambda spec: {
            f: (f, _flag_text(v)) for f, v in self._suppression(spec, restrict_processing).items()})

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Put back the old value of each field the suppression changed; nothing else."""
        previous = {o.ref.key: {c.field: c.old for c in o.changes} for o in suppressed if o.changes}
        refs = [o.ref for o in suppressed if o.changes]
        return self._rights(refs, RightsAction.RESTORE, lambda spec: {}, per_record=lambda ref: {
            f: (f, old) for f, old in previous.get(ref.key, {}).items()})

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Re-read the records: every one with a marketing flag not at its "no marketing" value."""
        return self._not_showing(refs, "verify suppression", lambda spec: {
            f: _flag_text(v) for f, v in spec.marketing_flags.items()})

    @staticmethod
    def _suppression(spec: ObjectSpec, restrict_processing: bool) -> dict[str, bool | str]:
        return {**spec.marketing_flags, **(spec.restriction_flags if restrict_processing else {})}

    def _rights(self, refs: Sequence[RecordRef], action: RightsAction,
                wanted_of: Callable[[ObjectSpec], Mapping[str, tuple[str, str | None]]], *,
                not_held: Callable[[ObjectSpec], tuple[str, ...]] = lambda spec: (),
                per_record: Callable[[RecordRef], Mapping[str, tuple[str, str | None]]] | None = None,
                ) -> RightsReceipt:
        """Read each record's fields, then PATCH only what differs. `wanted_of` gives, per object,
        field -> (the name the outcome uses, the value as text); `per_record` overrides it per record."""
        calls_before = self._calls()
        outcomes: dict[str, RightsOutcome] = {}
        for name, group in self._group(refs).items():
            spec = self._settings.objects[name]
            schema = self._schema(name)
            if schema is None:
                outcomes.update({r.key: RightsOutcome(r, action, done=True) for r in group})
                continue
            for batch in chunks(group, MAX_BATCH):
                wants = {r.key: dict(per_record(r) if per_record else wanted_of(spec)) for r in batch}
                fields = sorted({f for w in wants.values() for f in w}, key=str.lower)
                if not fields:
                    outcomes.update({r.key: RightsOutcome(r, action, done=True, not_held=not_held(spec))
                                     for r in batch})
                    continue
                soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", ", ".join(["Id", *fields]),
                                   name, [r.id for r in batch])
                current = {r["Id"]: r for r in self._query(soql, action.value, name)}
                todo: list[tuple[RecordRef, tuple[FieldChange, ...], dict[str, Any]]] = []
                for ref in batch:
                    record = current.get(ref.id)
                    if record is None:
                        gone_ok = action is not RightsAction.RECTIFY  # nothing left to market to, or to restore
                        outcomes[ref.key] = RightsOutcome(ref, action, done=gone_ok,
                                                          error=None if gone_ok else "record no longer exists")
                        continue
                    diff = tuple(FieldChange(label, f"{name}.{schema.name(f)}", _value_text(record.get(f)), value)
                                 for f, (label, value) in wants[ref.key].items()
                                 if _value_text(record.get(f)) != value)
                    if diff:
                        body = {schema.name(f): _typed_value(schema.get(f), value)
                                for f, (_label, value) in wants[ref.key].items() if _value_text(record.get(f)) != value}
                        todo.append((ref, diff, body))
                    else:
                        outcomes[ref.key] = RightsOutcome(ref, action, done=True, not_held=not_held(spec))
                if not todo:
                    continue
                payload = {"allOrNone": False,
                           "records": [{"attributes": {"type": name}, "id": ref.id, **body} for ref, _d, body in todo]}
                results = self._call(action.value, name, partial(self._rest, "composite/sobjects", method="PATCH",
                                                                 data=json.dumps(payload)))
                if not isinstance(results, list) or len(results) != len(todo):
                    raise ConnectorError(f"systems.{self._system}: {action.value} failed "
                                         "(Salesforce answered an unexpected shape)")
                for (ref, diff, _body), result in zip(todo, results, strict=True):
                    code = _result_code(result)
                    outcomes[ref.key] = (
                        RightsOutcome(ref, action, done=True, changes=diff, not_held=not_held(spec)) if code is None
                        else RightsOutcome(ref, action, done=False, error=f"Salesforce refused the update ({code})"))
        ordered = tuple(outcomes[key] for key in dict.fromkeys(r.key for r in refs))
        return RightsReceipt(self._system, action, ordered, api_calls=self._calls() - calls_before)

    def _not_showing(self, refs: Sequence[RecordRef], operation: str,
                     wanted_of: Callable[[ObjectSpec], Mapping[str, str | None]]) -> list[RecordRef]:
        left: list[RecordRef] = []
        for name, group in self._group(refs).items():
            wanted = dict(wanted_of(self._settings.objects[name]))
            if not wanted or self._schema(name) is None:
                continue
            for batch in chunks(group, MAX_BATCH):
                soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", ", ".join(["Id", *wanted]),
                                   name, [r.id for r in batch])
                current = {r["Id"]: r for r in self._query(soql, operation, name)}
                left += [ref for ref in batch if ref.id in current
                         and any(_value_text(current[ref.id].get(f)) != v for f, v in wanted.items())]
        return left

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Records of every object holding `category` whose retention date is before `cutoff`.

        An object's `retention_fields` are tried in order: the first one that has a value decides
        (``[LastActivityDate, LastModifiedDate]``: the last activity, else the last change).
        A date cutoff means midnight UTC for datetime fields; a naive datetime is taken as UTC.

        Raises:
            ConnectorError: an unknown category, or Salesforce failed.
            ConnectorConfigError: a retention field that is not a date or datetime field.
        """
        try:
            wanted = DataCategory(category)
        except ValueError:
            raise ConnectorError(f"systems.{self._system}: unknown data category {category!r}") from None
        for name in self._discover_order:
            if wanted in self._settings.objects[name].categories:
                yield from self._expired_records(name, cutoff)

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                    ) -> Iterator[RecordRef]:
        """Expired records of every object, each object queried once (whatever categories it holds).

        `cutoff_of(categories)` gives an object's cutoff (the retention purge: that of the category
        governing its records), or None to leave the object out. Otherwise as `expired`.
        """
        wanted = [(name, cutoff) for name in self._discover_order
                  if (cutoff := cutoff_of(tuple(self._settings.objects[name].categories))) is not None]
        if not wanted:
            return
        # Every object's describe and first query page at once (a few calls in flight, all paced by
        # the one limiter), not one round trip after the other; records still come object by object.
        with ThreadPoolExecutor(min(PURGE_WORKERS, len(wanted)), thread_name_prefix="salesforce-expired") as pool:
            opened = [(name, pool.submit(self._expired_open, name, cutoff)) for name, cutoff in wanted]
            for name, future in opened:
                first = future.result()
                if first is None:
                    continue
                spec, schema, page = first
                for record in self._pages(page, "expired", name, prefetch=True):
                    yield self._ref(name, spec, schema, record)

    def _expired_open(self, name: str, cutoff: date | datetime) -> tuple[ObjectSpec, _Schema, Any] | None:
        """The object's spec, schema and first page of its expired records (None: an optional object the org lacks)."""
        spec = self._settings.objects[name]
        schema = self._schema(name)
        if schema is None:
            return None
        condition = self._retention_condition(name, spec, schema, cutoff)
        columns = self._columns(name, schema, with_links=False)
        soql = format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal}", columns, name, condition)
        return spec, schema, self._call("expired", name, partial(self._soql, soql))

    def _expired_records(self, name: str, cutoff: date | datetime) -> Iterator[RecordRef]:
        first = self._expired_open(name, cutoff)
        if first is None:
            return
        spec, schema, page = first
        for record in self._pages(page, "expired", name, prefetch=True):
            yield self._ref(name, spec, schema, record)

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired records in the vendor's largest batches (as `erase` with DELETE decisions)."""
        return self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs])

    # --- discovery ---

    def _find(self, email: str) -> list[RecordRef]:
        refs: list[RecordRef] = []
        found: dict[str, list[str]] = {}
        links: dict[tuple[str, str], list[str]] = {}
        for name in self._discover_order:
            spec = self._settings.objects[name]
            schema = self._schema(name)
            if schema is None:
                found[name] = []
                continue
            columns = self._columns(name, schema, with_links=True)
            records: dict[str, Mapping[str, Any]] = {}
            for match in spec.match:
                for soql in self._match_queries(name, match, columns, email, found, links):
                    for record in self._query(soql, "discover", name):
                        records.setdefault(record["Id"], record)
            found[name] = list(records)
            for link in self._reverse_links[name]:
                canonical = schema.name(link)
                links[(name, link)] = [str(r[canonical]) for r in records.values() if r.get(canonical)]
            refs.extend(self._ref(name, spec, schema, record) for record in records.values())
        return refs

    def _match_queries(
        self, name: str, match: MatchSpec, columns: str, email: str,
        found: Mapping[str, list[str]], links: Mapping[tuple[str, str], list[str]],
    ) -> Iterator[str]:
        if match.parent is None:
            yield format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal} = {}", columns, name, match.field,
                              email)
            return
        if match.reverse:
            field, ids = "Id", links.get((match.parent, match.field), [])
        else:
            field, ids = match.field, found.get(match.parent, [])
        for batch in chunks(sorted(set(ids)), MAX_BATCH):
            yield format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal} IN {}", columns, name, field, batch)

    def _columns(self, name: str, schema: _Schema, *, with_links: bool) -> str:
        spec = self._settings.objects[name]
        wanted = ["Id"]
        if spec.anchor_date:
            wanted.append(spec.anchor_date)
        if with_links:
            wanted.extend(self._reverse_links[name])
        return ", ".join(dict.fromkeys(schema.name(field) for field in wanted))

    def _ref(self, name: str, spec: ObjectSpec, schema: _Schema, record: Mapping[str, Any]) -> RecordRef:
        anchor = None
        if spec.anchor_date:
            value = record.get(schema.name(spec.anchor_date))
            if value:
                try:
                    anchor = date.fromisoformat(str(value)[:10])
                except ValueError:
                    raise ConnectorError(
                        f"systems.{self._system}/{name}/{record['Id']}: anchor_date field "
                        f"{spec.anchor_date!r} holds no date"
                    ) from None
        return RecordRef(self._system, name, str(record["Id"]), spec.categories, anchor_date=anchor)

    def _retention_condition(self, name: str, spec: ObjectSpec, schema: _Schema, cutoff: date | datetime) -> str:
        parts = []
        for index, field in enumerate(spec.retention_fields):
            info = schema.get(field)
            assert info is not None  # checked when the schema was read
            if info.type == "date":
                literal: date | datetime = cutoff.date() if isinstance(cutoff, datetime) else cutoff
            elif info.type == "datetime":
                literal = _as_utc(cutoff)
            else:
                raise ConnectorConfigError(
                    f"systems.{self._system}.settings.objects.{name}.retention_fields.{index}: "
                    f"{info.name!r} is a {info.type} field, not a date or datetime"
                )
            parts.append((info.name, literal))
        condition = format_soql("{:literal} < {}", *parts[-1])
        for field, literal in reversed(parts[:-1]):  # the first field with a value decides
            condition = format_soql("({:literal} < {} OR ({:literal} = null AND {:literal}))", field, literal,
                                    field, condition)
        return condition

    # --- erasure ---

    def _anonymise(self, decisions: Sequence[ErasureDecision], run: _Run) -> None:
        by_object: dict[str, list[ErasureDecision]] = {}
        for decision in decisions:
            by_object.setdefault(decision.ref.object, []).append(decision)
        for name, group in by_object.items():
            plan = run.attempt(group, partial(self._anonymise_plan, name), anonymising=True)  # may describe
            if plan is None:
                continue
            if isinstance(plan, str):
                for decision in group:
                    run.outcomes[decision.ref.key] = _anonymised(decision, done=False, error=plan)
                continue
            for batch in chunks(group, MAX_BATCH):
                run.attempt(batch, partial(self._anonymise_batch, name, batch, plan, run), anonymising=True)

    def _anonymise_batch(self, name: str, batch: list[ErasureDecision], values: Mapping[str, Any], run: _Run) -> None:
        columns = ", ".join(["Id", *values])
        soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", columns, name, [d.ref.id for d in batch])
        current = {r["Id"]: r for r in self._query(soql, "anonymise", name)}
        todo = []
        for decision in batch:
            record = current.get(decision.ref.id)
            if record is None or all(record.get(f) == v for f, v in values.items()):
                # Deleted, or already anonymised: nothing more to change.
                run.outcomes[decision.ref.key] = _anonymised(decision, done=True, already_gone=True)
            else:
                todo.append(decision)
        if not todo:
            return
        body = {"allOrNone": False,
                "records": [{"attributes": {"type": name}, "id": d.ref.id, **values} for d in todo]}
        results = self._call("anonymise", name, partial(self._rest, "composite/sobjects", method="PATCH",
                                                        data=json.dumps(body)))
        for decision, result in _paired(todo, results, self._system, "anonymise"):
            code = _result_code(result)
            if code is None:
                run.outcomes[decision.ref.key] = _anonymised(decision, done=True, fields_cleared=tuple(values))
            elif code in _GONE:
                run.outcomes[decision.ref.key] = _anonymised(decision, done=True, already_gone=True)
            else:
                run.outcomes[decision.ref.key] = _anonymised(
                    decision, done=False, error=f"Salesforce refused the anonymisation ({code})")

    def _anonymise_plan(self, name: str) -> dict[str, Any] | str:
        """The replacement values as the org's fields accept them, or why they cannot be written."""
        if name in self._anonymise_plans:
            return self._anonymise_plans[name]
        spec = self._settings.objects[name]
        where = f"systems.{self._system}.settings.objects.{name}.anonymise"
        schema = self._schema(name)
        plan: dict[str, Any] | str
        if spec.anonymise is None:
            plan = f"no anonymise mapping at {where}"
        elif schema is None:
            plan = f"object {name!r} does not exist in this org"
        else:
            plan = {}
            for key, value in spec.anonymise.items():
                info = schema.get(key)
                assert info is not None  # checked when the schema was read
                problem, fitted = _fit(info, value)
                if problem:
                    plan = f"{where}.{key}: {problem}"
                    break
                plan[info.name] = fitted
        self._anonymise_plans[name] = plan
        return plan

    def _delete(self, decisions: Sequence[ErasureDecision], run: _Run) -> list[ErasureDecision]:
        """Delete in erase order; returns the DELETE_FAILED ones whose object can be anonymised instead."""
        refused: list[ErasureDecision] = []
        if self._settings.erase_mode == "hard_delete":
            by_object: dict[str, list[ErasureDecision]] = {}
            for decision in decisions:
                by_object.setdefault(decision.ref.object, []).append(decision)
            for name, group in by_object.items():
                for batch in chunks(group, BULK_JOB_MAX):
                    refused.extend(run.attempt(batch, partial(self._hard_delete, name, batch, run)) or ())
        else:
            for batch in chunks(decisions, MAX_BATCH):
                refused.extend(run.attempt(batch, partial(self._collection_delete, batch, run)) or ())
        return refused

    def _collection_delete(self, batch: list[ErasureDecision], run: _Run) -> list[ErasureDecision]:
        ids = ",".join(d.ref.id for d in batch)
        results = self._call("erase", None, partial(self._rest, "composite/sobjects", method="DELETE",
                                                    params={"ids": ids, "allOrNone": "false"}))
        return [d for d, result in _paired(batch, results, self._system, "erase")
                if self._record_delete(d, _result_code(result), run)]

    def _hard_delete(self, name: str, batch: list[ErasureDecision], run: _Run) -> list[ErasureDecision]:
        def job() -> tuple[set[str], dict[str, str]]:
            jobs = getattr(self._client().bulk2, name)
            succeeded: set[str] = set()
            failed: dict[str, str] = {}
            results = jobs.hard_delete(records=[{"Id": d.ref.id} for d in batch], wait=self._settings.bulk_poll_seconds)
            for result in results:
                job_id = result["job_id"]
                succeeded.update(row["Id"] for row in _csv_rows(jobs.get_successful_records(job_id)))
                for row in _csv_rows(jobs.get_failed_records(job_id)):
                    failed[row["Id"]] = row.get("sf__Error", "").split(":", 1)[0]
            return succeeded, failed

        succeeded, failed = self._call("hard delete (Bulk API 2.0)", name, job)
        refused = []
        for decision in batch:
            if decision.ref.id in succeeded:
                code: str | None = None
            else:
                code = failed.get(decision.ref.id, "NOT_PROCESSED") or "UNKNOWN"
            if self._record_delete(decision, code, run):
                refused.append(decision)
        return refused

    def _record_delete(self, decision: ErasureDecision, code: str | None, run: _Run) -> bool:
        """Record a delete's outcome; True when it was refused with DELETE_FAILED and can be anonymised."""
        key = decision.ref.key
        if code is None:
            run.outcomes[key] = outcome_for(decision, done=True)
        elif code in _GONE:
            run.outcomes[key] = outcome_for(decision, done=True, already_gone=True)
        elif code == "DELETE_FAILED" and self._settings.objects[decision.ref.object].anonymise is not None:
            return True  # still tied to a record kept elsewhere: anonymise it instead (legal rules, section 2)
        else:
            run.outcomes[key] = outcome_for(decision, done=False, error=f"Salesforce refused the delete ({_safe(code)})")
        return False

    # --- schema ---

    def _schema(self, name: str) -> _Schema | None:
        """The object's fields (described once), or None for an optional object the org lacks."""
        if name in self._schemas:
            return self._schemas[name]
        spec = self._settings.objects[name]
        # The org's budget, and where an endpoint override sends its calls (sandboxes share one org name).
        org = "|".join([self._budget, *sorted(self._session._sandbox_netlocs)])  # noqa: SLF001 - same module
        cached, answer = _DESCRIBES.get(org, name)
        if not cached:
            answer = self._call("describe", name, partial(self._rest, f"sobjects/{name}/describe/"), missing=None)
            # Only the field list is kept: a describe answer is large and most of it unused.
            answer = None if answer is None else {"fields": list(answer.get("fields", []))}
            _DESCRIBES.put(org, name, answer)
        where = f"systems.{self._system}.settings.objects.{name}"
        if answer is None:
            if not spec.optional:
                raise ConnectorConfigError(
                    f"{where}: the org has no object {name!r} (mark it optional: true if it may be absent)"
                )
            self._schemas[name] = None
            return None
        schema = _Schema({
            str(f["name"]).lower(): _FieldInfo(str(f["name"]), str(f.get("type", "")), int(f.get("length") or 0),
                                               bool(f.get("nillable")), bool(f.get("updateable")))
            for f in answer.get("fields", [])
        })
        self._check_fields(name, spec, schema, where)
        self._schemas[name] = schema
        return schema

    def _check_fields(self, name: str, spec: ObjectSpec, schema: _Schema, where: str) -> None:
        """Every field the data map names on this object must exist in the org."""
        objects = f"systems.{self._system}.settings.objects"
        wanted = [(f"{where}.match.{i}.field", m.field) for i, m in enumerate(spec.match) if not m.reverse]
        if spec.anchor_date:
            wanted.append((f"{where}.anchor_date", spec.anchor_date))
        wanted.extend((f"{where}.retention_fields.{i}", f) for i, f in enumerate(spec.retention_fields))
        wanted.extend((f"{where}.anonymise.{f}", f) for f in spec.anonymise or {})
        wanted.extend((f"{where}.rectifiable.{c}", f) for c, f in spec.rectifiable.items())
        wanted.extend((f"{where}.marketing_flags.{f}", f) for f in spec.marketing_flags)
        wanted.extend((f"{where}.restriction_flags.{f}", f) for f in spec.restriction_flags)
        wanted.extend((f"{objects}.{other}.match.{i}.field", m.field)  # reverse links are fields of this object
                      for other, other_spec in self._settings.objects.items()
                      for i, m in enumerate(other_spec.match) if m.reverse and m.parent == name)
        for location, field in wanted:
            if schema.get(field) is None:
                raise ConnectorConfigError(f"{location}: the org's {name} has no field {field!r}")

    # --- calls ---

    def _client(self) -> Salesforce:
        with self._login_lock:
            if self._sf is None:
                self._sf = self._login()
            return self._sf

    def _login(self) -> Salesforce:
        """A client on the org's session: the one this process already holds for the same org and
        connected app (one login serves every request; Salesforce limits logins per user and hour),
        else a new login."""
        cached = _SESSIONS.get(self._budget)
        if cached is not None:
            session_id, instance = cached
            return Salesforce(session_id=session_id, instance=instance, session=self._session,
                              version=self._settings.api_version)
        client = self._new_login()
        _SESSIONS.put(self._budget, (client.session_id, client.sf_instance))
        return client

    def _new_login(self) -> Salesforce:
        auth, creds = self._settings.auth, self._credentials
        kwargs: dict[str, Any] = {"version": self._settings.api_version, "session": self._session,
                                  "domain": auth.login_domain, "consumer_key": creds.client_id}
        if auth.flow == "client_credentials":
            kwargs["consumer_secret"] = creds.client_secret
        else:
            kwargs["username"] = creds.username
            if creds.private_key is not None:
                kwargs["privatekey"] = creds.private_key
            else:
                kwargs["privatekey_file"] = creds.private_key_file
        client = Salesforce(**kwargs)  # logs in now, and again by itself on INVALID_SESSION_ID
        if self._instance_host is not None and client.sf_instance.lower() != self._instance_host:
            # Never erase in an org other than the one the data map names (a sandbox vs production mix-up).
            raise ConnectorConfigError(
                f"systems.{self._system}.settings.instance_url: the login answered for another instance "
                f"({client.sf_instance})"
            )
        return client

    def _call(self, operation: str, obj: str | None, fn: Callable[[], T], *, missing: Any = _RAISE) -> T:
        """Run one Salesforce call with retries; failures become `ConnectorError`s without personal data."""
        failure: ConnectorError | None = None
        for attempt in (1, 2):
            try:
                return self._retry(fn)()
            except ConnectorError:
                raise
            except SalesforceResourceNotFound as exc:
                if missing is not _RAISE:
                    return missing  # type: ignore[no-any-return]
                failure = self._failure(operation, obj, exc)
            except SalesforceExpiredSession as exc:
                if attempt == 1:  # Bulk API 2.0 calls do not log in again by themselves
                    self._count("relogins")
                    with self._login_lock:
                        if self._sf is not None:
                            _SESSIONS.discard(self._budget, self._sf.session_id)
                        self._sf = None
                    continue
                failure = self._failure(operation, obj, exc)
            except (SalesforceError, SalesforceOperationError, requests.RequestException) as exc:
                failure = self._failure(operation, obj, exc)
            break
        # Raised here, outside the `except` blocks: the original (whose text holds the request URL,
        # and so the SOQL with the subject's address) is neither the cause nor the context.
        assert failure is not None
        raise failure

    def _failure(self, operation: str, obj: str | None, exc: BaseException) -> ConnectorError:
        where = f"systems.{self._system}: {operation}" + (f" of object {obj!r}" if obj else "")
        if isinstance(exc, SalesforceAuthenticationFailed):
            detail = f"login failed ({_safe(exc.code)})"
        elif isinstance(exc, SalesforceError):
            code, message = _error_of(exc)
            detail = f"HTTP {exc.status}" + (f", {_safe(code)}" if code else "")
            if code == "REQUEST_LIMIT_EXCEEDED":
                quota = isinstance(message, str) and message.startswith("TotalRequests")
                detail += ": the org's daily API quota is used up" if quota else ": throttled"
        elif isinstance(exc, requests.Timeout):
            detail = "timed out"
        elif isinstance(exc, _OutsideSandbox):
            detail = "refused: a host outside endpoint_override"
        elif isinstance(exc, requests.ConnectionError):
            detail = "connection failed"
        elif isinstance(exc, SalesforceOperationError):
            detail = "Bulk API job failed"
        else:
            detail = type(exc).__name__
        if _retryable(exc) and self._settings.retry_attempts > 1:
            detail += f" after {self._settings.retry_attempts} attempts"
        return ConnectorError(f"{where} failed ({detail})")

    def _on_retry(self, exc: BaseException, wait: float) -> None:
        self._count("retries")
        if isinstance(exc, SalesforceRefusedRequest):
            self._limiter.hold_off(wait)  # every caller of this connector backs off, not just this one

    def _query(self, soql: str, operation: str, obj: str, *, prefetch: bool = False) -> Iterator[Mapping[str, Any]]:
        """Every record of a SOQL query, following `nextRecordsUrl` to the end (each page retried).

        With `prefetch` (long listings: the retention purge), the next page is fetched in a second
        thread while the caller works through this one (still one page after the other, paced).
        """
        yield from self._pages(self._call(operation, obj, partial(self._soql, soql)), operation, obj, prefetch=prefetch)

    def _pages(self, page: Any, operation: str, obj: str, *, prefetch: bool = False) -> Iterator[Mapping[str, Any]]:
        """The records of a query's first page and of every page after it (`nextRecordsUrl`)."""
        if not prefetch:
            while True:
                yield from page["records"]
                if page.get("done", True):
                    return
                page = self._call(operation, obj, partial(self._soql_more, page["nextRecordsUrl"]))
        with ThreadPoolExecutor(1, thread_name_prefix="salesforce-prefetch") as pool:
            while True:
                following = None
                if not page.get("done", True):
                    following = pool.submit(self._call, operation, obj,
                                            partial(self._soql_more, page["nextRecordsUrl"]))
                yield from page["records"]
                if following is None:
                    return
                page = following.result()

    def _soql(self, soql: str) -> Any:
        return self._client().query(soql)

    def _soql_more(self, next_records_url: str) -> Any:
        return self._client().query_more(next_records_url, identifier_is_url=True)

    def _rest(self, path: str, **kwargs: Any) -> Any:
        return self._client().restful(path, **kwargs)

    def _export_one_by_one(self, name: str, group: Sequence[RecordRef]) -> Iterator[Record]:
        for ref in group:
            record = self._call("export", name, partial(self._rest, f"sobjects/{name}/{ref.id}"), missing=None)
            if record is not None:
                yield Record(ref, _plain(record))

    # --- helpers ---

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self._stats[key] += 1

    def _calls(self) -> int:
        # Per thread: `erase`/`purge` may run in several threads at once (the retention purge), and
        # each receipt counts its own calls only.
        return self._session.calls_in_thread()

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        if ref.object not in self._settings.objects:
            return f"unknown object {ref.object!r} in systems.{self._system}"
        if not _ID18.match(ref.id):
            return f"id is not an 18-character Salesforce id (object {ref.object!r})"
        return None

    def _group(self, refs: Sequence[RecordRef]) -> dict[str, list[RecordRef]]:
        grouped: dict[str, list[RecordRef]] = {}
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")
            grouped.setdefault(ref.object, []).append(ref)
        return grouped


class _Run:
    """One erase call's bookkeeping: outcomes so far, and the failure that stops the rest."""

    def __init__(self) -> None:
        self.outcomes: dict[str, RecordOutcome] = {}
        self.pending: list[ErasureDecision] = []
        self.failure: str | None = None

    def attempt(self, batch: Sequence[ErasureDecision], step: Callable[[], T], *, anonymising: bool = False) -> T | None:
        """Run a step for a batch; if Salesforce fails, the batch (and every later one) is not done."""
        if self.failure is None:
            try:
                return step()
            except ConnectorConfigError:
                raise
            except ConnectorError as exc:
                self.failure = str(exc)
        for decision in batch:
            if decision.ref.key not in self.outcomes:
                make = _anonymised if anonymising else outcome_for
                self.outcomes[decision.ref.key] = make(decision, done=False, error=self.failure)
        return None


def _anonymised(decision: ErasureDecision, *, done: bool, **extra: Any) -> RecordOutcome:
    return outcome_for(decision, done=done, action=ErasureAction.ANONYMISE, **extra)


def _fit(info: _FieldInfo, value: Any) -> tuple[str | None, Any]:
    """(problem, value as the field accepts it): strings cut to the field's length (Salesforce refuses
    longer ones with STRING_TOO_LONG: FirstName holds 40 characters)."""
    if not info.updateable:
        return "Salesforce does not allow updating this field", None
    if value is None:
        if info.type == "boolean":
            return None, False  # Salesforce checkboxes are never null: clearing one unticks it
        if not info.nillable:
            return "the field cannot be empty in Salesforce; give a replacement value", None
        return None, None
    if info.type in _TEXT_TYPES:
        if not isinstance(value, str):
            return "the field holds text; give a string", None
        if info.length and len(value) > info.length:
            value = value[: info.length]
        if info.type == "email" and not _EMAIL.match(value):
            return "not a valid e-mail address for an e-mail field (use null)", None
        return None, value
    if info.type == "boolean":
        return (None, value) if isinstance(value, bool) else ("the field holds true/false", None)
    if info.type in ("int", "double", "currency", "percent"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (None, value) if ok else ("the field holds a number", None)
    if info.type in ("date", "datetime"):
        return (None, value) if isinstance(value, str) else ("the field holds a date; give an ISO date string", None)
    return f"fields of type {info.type} cannot be anonymised by this connector", None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, SalesforceAuthenticationFailed):
        return isinstance(exc.code, int) and exc.code >= 500  # the login server answered an outage page
    if isinstance(exc, SalesforceRefusedRequest):
        return _error_of(exc)[0] == "REQUEST_LIMIT_EXCEEDED"
    if isinstance(exc, SalesforceGeneralError):
        return exc.status >= 500
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def _error_of(exc: SalesforceError) -> tuple[str | None, str | None]:
    """The first (errorCode, message) of Salesforce's error array, if the answer had one."""
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        code, message = content[0].get("errorCode"), content[0].get("message")
        return (str(code) if code else None), (str(message) if message else None)
    return None, None


def _result_code(result: Any) -> str | None:
    """None for a successful SaveResult/DeleteResult, else its first error's statusCode."""
    if isinstance(result, Mapping) and result.get("success"):
        return None
    errors = result.get("errors") if isinstance(result, Mapping) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return _safe(errors[0].get("statusCode"))
    return "UNKNOWN"


def _paired(
    decisions: Sequence[ErasureDecision], results: Any, system: str, operation: str
) -> list[tuple[ErasureDecision, Any]]:
    # Results come in request order; failed entries carry no id, so they are matched by position.
    if not isinstance(results, list) or len(results) != len(decisions):
        raise ConnectorError(f"systems.{system}: {operation} failed (Salesforce answered an unexpected shape)")
    return list(zip(decisions, results, strict=True))


def _safe(code: Any) -> str:
    text = str(code)
    return text if _CODE.match(text) else "UNKNOWN"


def _flag_text(value: bool | str) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else value


def _value_text(value: Any) -> str | None:
    """A field's value as the contract's text (booleans true/false)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed_value(info: _FieldInfo | None, text: str | None) -> Any:
    """Text back in the field's JSON type (a boolean flag as true/false)."""
    if text is not None and info is not None and info.type == "boolean":
        return text == "true"
    return text


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) if isinstance(value, Mapping) else value
            for key, value in record.items() if key != "attributes"}


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _as_utc(moment: date | datetime) -> datetime:
    if not isinstance(moment, datetime):
        return datetime.combine(moment, dt_time(0, 0), tzinfo=UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


