"""Google Ads Customer Match: remove the subject from configured audiences (REST over `requests`).

The `google-ads` package is gRPC only and cannot be pointed at an HTTP emulator (vendor-apis.md section
0), so this connector speaks the REST/JSON interface with plain `requests`, in one of two modes
(`settings.mode`):

- ``offline_user_data_job`` (Google Ads API, ``https://googleads.googleapis.com/{api_version}``): per
  configured user list, one OfflineUserDataJob of type ``CUSTOMER_MATCH_USER_LIST``:
  ``offlineUserDataJobs:create``, ``:addOperations`` with one ``remove`` of the subject's ``hashedEmail``
  (``enablePartialFailure: true``), ``:run`` (a long-running operation), then GAQL polls
  (``googleAds:search`` on ``offline_user_data_job.status``, one query per customer for all its jobs)
  until ``SUCCESS`` or ``FAILED``. Headers: ``Authorization: Bearer``, ``developer-token``,
  ``login-customer-id`` (the manager account, digits only). Since 2026-04-01 the Ads API refuses
  Customer Match to new adopters (``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE``); that answer becomes a
  `ConnectorError` that says to switch to the Data Manager mode.
- ``data_manager`` (``https://datamanager.googleapis.com/v1/audienceMembers:remove``, Google's
  replacement): one request per list, the accounts in the body (``operatingAccount`` = the customer,
  ``loginAccount`` = `login_customer_id`), the hash as ``emailAddress`` with ``encoding: HEX``. No
  developer token. Google answers a ``requestId``; ``GET /v1/requestStatus:retrieve?requestId=`` is then
  polled until every destination is ``SUCCESS`` (``FAILED``/``PARTIAL_SUCCESS``: not done).

What it does, per operation of the contract (DESIGN.md):

- `discover`: audiences are write-only (membership cannot be read), so it returns one ref per configured
  list (object ``user_list``, id = the list's resource name ``customers/{cid}/userLists/{id}``,
  categories from `categories`, marketing by default), meaning "this audience may contain the subject".
  No call to Google. It remembers the subject for `erase` (see below).
- `export`: one record per list with what can be said without personal data (the audience, the platform,
  that membership is not readable, which identifier is uploaded). No call to Google; no hash.
- `erase`: the removals above; RETAIN decisions make no call; ANONYMISE is carried out as a removal (the
  only operation an audience has). A list's outcome is done when its job ended ``SUCCESS`` (mode
  ``offline_user_data_job``) or its request status reads SUCCESS (``data_manager``); never ``already_gone``
  (absence cannot be seen). `vendor_receipt_id` lists the jobs with their final status
  (``google_ads:customers/1/offlineUserDataJobs/2=SUCCESS ...``) or the Data Manager request ids
  (``google_datamanager:customers/1/userLists/111=<requestId>:SUCCESS ...``): "removal confirmed" by the
  vendor's status (`confirms_removal`), never "verified absent". Idempotent: removing a hash that is not in a list succeeds.
- `verify_erased`: ``[]``; the connector declares ``write_only`` and the runner records that the removal
  cannot be verified by re-query.

The contract's `erase(decisions)` gets refs, not the subject, and a list ref does not say whom to remove:
`erase` takes an optional ``subject=`` and otherwise uses the subject its `discover` saw (refusing if it saw
more than one, or none: a runner that resumes after a crash between discovery and erasure must pass it).

Hashing (section 4): trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex. Dots in gmail.com /
googlemail.com local parts are kept (Google does not require removing them). The Data Manager mode removes
all whitespace, including inside the address, before hashing, as Data Manager normalises.

Credentials by environment variable name only: the OAuth client (`oauth.client_id_env`,
`oauth.client_secret_env`), a refresh token (`oauth.refresh_token_env`; exchanged at `oauth.token_url` for
an access token, refreshed before it expires and once more on a 401), and the developer token
(`developer_token_env`, Ads mode only).

Pacing and retries: a client-side window (`rate_limit`); retries (tenacity, `connectors.pacing.vendor_retry`)
of 429 ``RESOURCE_TEMPORARILY_EXHAUSTED`` (waiting the ``retryDelay`` Google puts in the body), 5xx,
resets and timeouts. A 429 whose ``retryDelay`` is longer than `retry_max_wait` (the daily
``RESOURCE_EXHAUSTED`` of a developer token, hours away) is not retried.

Neither the address nor its hash ever reaches an exception, a log or an outcome: errors name the system,
the operation, the list's resource name and Google's status and error codes only (never Google's free
text), and are raised outside ``except`` blocks so the `requests` exception is not chained.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import (
    AudienceConnector,
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    HttpFailure,
    RateLimitSpec,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    Subject,
    env_secret,
    origin_setting_problem,
    outcome_for,
    receipt_id,
    resolve_origin,
    subject_email,
    unique_decisions,
    validate_settings,
)
from connectors.pacing import LATENCY_MARGIN, budget_key, limiter_for, parse_retry_after, vendor_retry

KIND = "google_ads"
VERSION = "google_ads/1"
OBJECT = "user_list"
DEFAULT_ADS_BASE_URL = "https://googleads.googleapis.com"
DEFAULT_DATA_MANAGER_BASE_URL = "https://datamanager.googleapis.com"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
DATA_MANAGER_VERSION = "v1"
# The oldest version Google still serves: google-ads 34.0.0 ships v23..v26 (README, "Google Ads API versions").
MIN_API_VERSION = 23
FINAL_STATUSES = frozenset({"SUCCESS", "FAILED"})

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TOKEN_URL = re.compile(r"^https?://[^\s@]+$")


def _token_url_problem(url: str) -> str | None:
    """Google's token endpoint has a path, so it is checked as a URL, not as an origin."""
    return None if _TOKEN_URL.match(url) else "must be an http(s) URL without credentials"
_RESOURCE = re.compile(r"^customers/(?P<cid>\d{10})/userLists/(?P<list>\d+)$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,79}$")
_CATEGORY = re.compile(r"^[a-z][A-Za-z]{1,60}Error$")
_SECRET_KEYS = ("developer_token", "client_secret", "refresh_token", "access_token", "token", "password")


# --- hashing ----------------------------------------------------------------------------------------------


def customer_match_hash(email: str) -> str:
    """Customer Match's hashed e-mail: trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex.

    Gmail dots and plus-suffixes are kept: Google does not require removing them (vendor-apis.md section 4).
    """
    normalised = email.strip().lower()
    if not normalised:
        raise ValueError("empty address")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def data_manager_hash(email: str) -> str:
    """The Data Manager API's hashed e-mail: every whitespace character removed (inside too), lower-case,
    SHA-256 of the UTF-8 bytes, lower-case hex."""
    normalised = "".join(email.split()).lower()
    if not normalised:
        raise ValueError("empty address")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


# --- settings ---------------------------------------------------------------------------------------------


def _no_inline_secrets(data: Any, keys: Sequence[str], hint: str) -> Any:
    if isinstance(data, Mapping):
        for key in keys:
            if key in data:
                raise ValueError(f"{key}: never put a secret in systems.yaml; {hint}")
    return data


class OAuthSpec(BaseModel):
    """Google OAuth 2.0: a refresh token exchanged for access tokens at `token_url` (or `token_url_env`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: str | None = Field(default=None, min_length=1)
    token_url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    client_id_env: str = Field(pattern=_ENV_VAR_NAME)
    client_secret_env: str = Field(pattern=_ENV_VAR_NAME)
    refresh_token_env: str = Field(pattern=_ENV_VAR_NAME)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        return _no_inline_secrets(data, ("client_id", "client_secret", "refresh_token", "access_token"),
                                  "name its environment variable with <name>_env")

    @model_validator(mode="after")
    def _check(self) -> OAuthSpec:
        problem = origin_setting_problem(self.token_url, self.token_url_env, key="token_url", check=_token_url_problem)
        if problem:
            raise ValueError(problem)
        return self


class CustomerSpec(BaseModel):
    """One Google Ads client account and the Customer Match lists to remove the subject from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    user_lists: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CustomerSpec:
        if not re.fullmatch(r"\d{10}", self.customer_id):
            raise ValueError("customer_id: must be the 10-digit customer id, digits only (no dashes)")
        for index, item in enumerate(self.user_lists):
            if not re.fullmatch(r"\d{1,20}", item):
                raise ValueError(f"user_lists.{index}: must be the list's numeric id")
        if len(set(self.user_lists)) != len(self.user_lists):
            raise ValueError("user_lists: names a user list twice")
        return self


class GoogleAdsSettings(BaseModel):
    """The `settings:` block of a `google_ads` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["offline_user_data_job", "data_manager"] = "offline_user_data_job"
    base_url: str | None = Field(default=None, min_length=1)
    base_url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    api_version: str | None = None  # the Ads API's, e.g. "v26"; required in offline_user_data_job mode
    developer_token_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    login_customer_id: str | None = None
    oauth: OAuthSpec
    customers: tuple[CustomerSpec, ...] = Field(min_length=1)
    categories: tuple[DataCategory, ...] = Field(default=(DataCategory.MARKETING,), min_length=1)
    poll_seconds: float = Field(default=5.0, gt=0)
    poll_timeout_seconds: float = Field(default=600.0, gt=0)
    rate_limit: RateLimitSpec = RateLimitSpec(calls=10, period_seconds=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        return _no_inline_secrets(data, _SECRET_KEYS, "name its environment variable with developer_token_env or "
                                                      "under oauth")

    @model_validator(mode="after")
    def _check(self) -> GoogleAdsSettings:
        problem = origin_setting_problem(self.base_url, self.base_url_env)
        if problem:
            raise ValueError(problem)
        if self.api_version is not None:
            match = re.fullmatch(r"v(\d+)", self.api_version)
            if match is None or int(match.group(1)) < MIN_API_VERSION:
                raise ValueError(f"api_version: must be a Google Ads API version v{MIN_API_VERSION} or later, e.g. v26")
        if self.login_customer_id is not None and not re.fullmatch(r"\d{10}", self.login_customer_id):
            raise ValueError("login_customer_id: must be the manager's 10-digit customer id, digits only (no dashes)")
        if self.mode == "offline_user_data_job":
            if self.api_version is None:
                raise ValueError("api_version: required in mode offline_user_data_job (e.g. v26)")
            if self.developer_token_env is None:
                raise ValueError("developer_token_env: required in mode offline_user_data_job (the Ads API's "
                                 "developer-token header)")
        seen: set[str] = set()
        for index, customer in enumerate(self.customers):
            if customer.customer_id in seen:
                raise ValueError(f"customers.{index}.customer_id: names a customer twice")
            seen.add(customer.customer_id)
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories: names a category twice")
        if self.poll_timeout_seconds < self.poll_seconds:
            raise ValueError("poll_timeout_seconds: must be at least poll_seconds")
        return self

    def resources(self) -> list[tuple[str, str, str]]:
        """(resource name, customer id, list id) of every configured list, in configuration order."""
        return [(f"customers/{c.customer_id}/userLists/{lid}", c.customer_id, lid)
                for c in self.customers for lid in c.user_lists]


def parse_settings(system: str, settings: Mapping[str, Any]) -> GoogleAdsSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(GoogleAdsSettings, system, settings)


# --- construction -----------------------------------------------------------------------------------------


class _Credentials:
    __slots__ = ("client_id", "client_secret", "refresh_token", "developer_token")

    def __init__(self, client_id: str, client_secret: str, refresh_token: str, developer_token: str | None) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token, self.developer_token = refresh_token, developer_token

    def __repr__(self) -> str:  # never the values
        return "_Credentials(<redacted>)"


def create(system: str, settings: Mapping[str, Any]) -> GoogleAdsConnector:
    """Build the connector for one system (the registry's entry point). Makes no call to Google.

    Raises:
        ConnectorConfigError: bad settings, or an environment variable they name is unset.
    """
    parsed = parse_settings(system, settings)
    where = f"systems.{system}.settings"
    default = DEFAULT_ADS_BASE_URL if parsed.mode == "offline_user_data_job" else DEFAULT_DATA_MANAGER_BASE_URL
    base_url = resolve_origin(where, parsed.base_url, parsed.base_url_env, default)
    token_url = resolve_origin(f"{where}.oauth", parsed.oauth.token_url, parsed.oauth.token_url_env, DEFAULT_TOKEN_URL,
                               key="token_url", check=_token_url_problem)
    credentials = _Credentials(
        client_id=env_secret(f"{where}.oauth.client_id_env", parsed.oauth.client_id_env),
        client_secret=env_secret(f"{where}.oauth.client_secret_env", parsed.oauth.client_secret_env),
        refresh_token=env_secret(f"{where}.oauth.refresh_token_env", parsed.oauth.refresh_token_env),
        developer_token=(env_secret(f"{where}.developer_token_env", parsed.developer_token_env)
                         if parsed.mode == "offline_user_data_job" and parsed.developer_token_env else None),
    )
    return GoogleAdsConnector(system, parsed, base_url=base_url, token_url=token_url, credentials=credentials)


# --- errors -----------------------------------------------------------------------------------------------


class GoogleAdsApiError(ConnectorError):
    """Google answered with an error (or could not be reached); the message holds codes only.

    `fatal`: nothing else will work either (credentials, quota, a policy refusal), so `erase` stops.
    """

    def __init__(self, message: str, *, status: int | None = None, codes: tuple[str, ...] = (),
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.status, self.codes, self.fatal = status, codes, fatal


class _HttpFailure(HttpFailure):
    """An error answer, reduced to what may be repeated: status, Google status, error codes, waits.

    Internal: never leaves the connector (its `requests` origin stays out of every `ConnectorError`).
    """

    def __init__(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        error = body.get("error") if isinstance(body, dict) else None
        self.oauth_error = error if isinstance(error, str) and _CODE.match(error.upper()) else None
        error = error if isinstance(error, dict) else {}
        google_status = error.get("status")
        self.google_status = google_status if isinstance(google_status, str) and _CODE.match(google_status) else None
        self.codes = _error_codes(error)
        self.retry_delay = _retry_delay(error)
        if self.retry_delay is None and status == 429:
            self.retry_delay = parse_retry_after(headers.get("Retry-After"))


def _error_codes(error: Mapping[str, Any]) -> tuple[str, ...]:
    """``category.CODE`` of every GoogleAdsError, and ErrorInfo / field-violation reasons; token-like only."""
    codes: list[str] = []
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        for item in detail.get("errors") or []:
            for category, code in ((item or {}).get("errorCode") or {}).items():
                if isinstance(code, str) and _CATEGORY.match(category) and _CODE.match(code):
                    codes.append(f"{category}.{code}")
        reason = detail.get("reason")
        if isinstance(reason, str) and _CODE.match(reason):
            codes.append(reason)
        for violation in detail.get("fieldViolations") or []:
            reason = (violation or {}).get("reason")
            if isinstance(reason, str) and _CODE.match(reason):
                codes.append(reason)
    return tuple(dict.fromkeys(codes))


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """The wait Google asks for: ``quotaErrorDetails.retryDelay`` or ``google.rpc.RetryInfo.retryDelay``."""
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        delays = [detail.get("retryDelay")]
        for item in detail.get("errors") or []:
            delays.append((((item or {}).get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay"))
        for delay in delays:
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", delay) if isinstance(delay, str) else None
            if match:
                return float(match.group(1))
    return None


_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout)


# --- the connector ----------------------------------------------------------------------------------------


class GoogleAdsConnector(AudienceConnector):
    """Remove a subject's hashed e-mail from configured Customer Match lists (write-only audiences).

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    `stats` counts calls, retries, throttling answers, token refreshes, polls and waits.
    """

    OBJECT = OBJECT  # the module constant, for AudienceConnector
    REFS = "audience refs"

    def __init__(self, system: str, settings: GoogleAdsSettings, *, base_url: str, token_url: str,
                 credentials: _Credentials) -> None:
        self._system = system
        self._settings = settings
        self._base_url = base_url
        self._token_url = token_url
        self._credentials = credentials
        self._lists = {resource: (cid, lid) for resource, cid, lid in settings.resources()}
        rl = settings.rate_limit
        self._limiter = limiter_for(budget_key("google_ads", base_url, credentials.developer_token, credentials.client_id),
                                    rl.calls, rl.period_seconds * (1 + LATENCY_MARGIN))
        self._timeout = (settings.connect_timeout_seconds, settings.timeout_seconds)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"dsr-pipeline/{VERSION}"
        self._token_lock = threading.Lock()
        self._access_token: str | None = None
        self._token_expires = 0.0
        self._subjects: dict[str, str] = {}  # identity hash -> address, as discover saw them
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._info = ConnectorInfo(
            system=system, kind=KIND, version=VERSION, write_only=True,
            rate_limit_per_second=rl.calls / rl.period_seconds, max_batch=1, objects=(OBJECT,),
        )

    @property
    def confirms_removal(self) -> bool:
        """A done removal is confirmed in both modes: offline user data jobs are polled until SUCCESS, Data
        Manager requests (``requestStatus:retrieve``) until every destination is SUCCESS."""
        return True

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """One ref per configured list: "this audience may contain the subject" (membership is not readable).

        Makes no call. Remembers the subject for `erase`.
        """
        email = subject_email(subject)
        self._subjects[subject.identity_hash] = email
        return [self._ref(resource) for resource in self._lists]

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """One record per list saying what can be said: no member data is readable, none is exported."""
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")
        platform = ("Google Ads Customer Match" if self._settings.mode == "offline_user_data_job"
                    else "Google Ads Customer Match (Data Manager API)")
        for ref in refs:
            yield Record(ref=ref, fields={
                "audience": ref.id,
                "platform": platform,
                "membership": "not readable: Customer Match lists are write-only; the subject may be a member",
                "identifier_uploaded": "SHA-256 of the normalised e-mail address",
            })

    def erase(self, decisions: Sequence[ErasureDecision], subject: Subject | None = None) -> Receipt:
        """Remove the subject's hashed e-mail from each decided list; RETAIN makes no call.

        Args:
            decisions: per list, from the policy.
            subject: whom to remove; defaults to the subject `discover` saw.

        Raises:
            ConnectorError: the subject is unknown, or a failure no list can get past (credentials,
                developer token, quota, Customer Match refused to this developer token); re-running is safe.
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
        receipt_parts: list[str] = []
        if todo:
            email = self._subject_email(subject)
            if self._settings.mode == "offline_user_data_job":
                receipt_parts = self._remove_with_jobs(todo, customer_match_hash(email), outcomes)
            else:
                receipt_parts = self._remove_with_data_manager(todo, data_manager_hash(email), outcomes)
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        if receipt_parts:
            prefix = "google_ads" if self._settings.mode == "offline_user_data_job" else "google_datamanager"
            vendor_receipt = f"{prefix}:" + " ".join(receipt_parts)
        else:
            vendor_receipt = receipt_id("google_ads", ordered)
        return Receipt(system=self._system, outcomes=ordered, vendor_receipt_id=vendor_receipt,
                       api_calls=int(self._stats["calls"] - calls_before))

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Nothing can be re-queried (write-only audiences): always ``[]``; `info.write_only` says so."""
        subject_email(subject)
        return []

    # --- offline user data jobs ---

    def _remove_with_jobs(self, todo: Sequence[ErasureDecision], hashed: str,
                          outcomes: dict[str, RecordOutcome]) -> list[str]:
        """Create, fill and run one job per list, then poll them all; returns ``job=STATUS`` parts."""
        running: dict[str, ErasureDecision] = {}  # job resource name -> decision
        parts: list[str] = []
        for decision in todo:
            cid, lid = self._lists[decision.ref.id]
            try:
                job = self._create_job(cid, decision.ref.id)
                refused = self._add_removal(cid, job, hashed)
                if refused is not None:
                    outcomes[decision.ref.key] = outcome_for(decision, done=False, error=refused)
                    parts.append(f"{job}=NOT_RUN")
                    continue
                self._ads("erase", decision.ref.id, "POST", f"customers/{cid}/{_job_path(job)}:run", {})
                running[job] = decision
            except GoogleAdsApiError as exc:
                if exc.fatal:
                    raise
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=str(exc))
        statuses = self._poll(running)
        for job, decision in running.items():
            status, detail = statuses[job]
            parts.append(f"{job}={status}")
            if status == "SUCCESS":
                outcomes[decision.ref.key] = outcome_for(decision, done=True)
            elif status == "FAILED":
                outcomes[decision.ref.key] = outcome_for(
                    decision, done=False, error=f"Google Ads job {job} FAILED ({detail or 'no failure reason'}); "
                    "the removal was not applied")
            else:
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=detail)
        return parts

    def _create_job(self, cid: str, resource: str) -> str:
        body = {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                        "customerMatchUserListMetadata": {"userList": resource}}}
        answer = self._ads("erase", resource, "POST", f"customers/{cid}/offlineUserDataJobs:create", body)
        job = answer.get("resourceName") if isinstance(answer, dict) else None
        if not isinstance(job, str) or not re.fullmatch(rf"customers/{cid}/offlineUserDataJobs/\d+", job):
            raise GoogleAdsApiError(f"systems.{self._system}: erase of {OBJECT} {resource!r} failed: Google Ads "
                                    "answered the job creation without a job resource name")
        return job

    def _add_removal(self, cid: str, job: str, hashed: str) -> str | None:
        """Add the remove operation; an error text if Google refused it (partial failure), else None."""
        body = {"operations": [{"remove": {"userIdentifiers": [{"hashedEmail": hashed}]}}],
                "enablePartialFailure": True}
        answer = self._ads("erase", job, "POST", f"customers/{cid}/{_job_path(job)}:addOperations", body)
        partial = answer.get("partialFailureError") if isinstance(answer, dict) else None
        if partial:
            codes = _error_codes(partial) if isinstance(partial, dict) else ()
            return (f"Google Ads refused the remove operation of job {job} "
                    f"({', '.join(codes) or 'partial failure'}); the job was not run")
        return None

    def _poll(self, running: Mapping[str, ErasureDecision]) -> dict[str, tuple[str, str | None]]:
        """Final (or last seen) status of each job: SUCCESS, FAILED (with its failure reason), else the
        last status with a message saying what is left."""
        by_customer: dict[str, list[str]] = {}
        for job in running:
            by_customer.setdefault(job.split("/")[1], []).append(job)
        seen: dict[str, str] = dict.fromkeys(running, "PENDING")
        result: dict[str, tuple[str, str | None]] = {}
        deadline = time.monotonic() + self._settings.poll_timeout_seconds
        while by_customer:
            time.sleep(min(self._settings.poll_seconds, max(deadline - time.monotonic(), 0.0)))
            for cid in list(by_customer):
                jobs = by_customer[cid]
                names = ", ".join(f"'{job}'" for job in jobs)
                query = ("SELECT offline_user_data_job.resource_name, offline_user_data_job.status, "
                         "offline_user_data_job.failure_reason FROM offline_user_data_job "
                         f"WHERE offline_user_data_job.resource_name IN ({names})")
                self._count("polls")
                try:
                    answer = self._ads("erase", f"customers/{cid}", "POST", f"customers/{cid}/googleAds:search",
                                       {"query": query})
                except GoogleAdsApiError as exc:
                    if exc.fatal:
                        raise
                    for job in jobs:
                        result[job] = (seen[job], f"removal requested (job {job} run) but its status could not be "
                                                  f"read: {exc}")
                    del by_customer[cid]
                    continue
                for row in (answer.get("results") or []) if isinstance(answer, dict) else []:
                    data = (row or {}).get("offlineUserDataJob") or {}
                    name, status = data.get("resourceName"), data.get("status")
                    if isinstance(name, str) and name in seen and isinstance(status, str) and _CODE.match(status):
                        seen[name] = status
                        if status in FINAL_STATUSES:
                            reason = data.get("failureReason")
                            result[name] = (status, reason if isinstance(reason, str) and _CODE.match(reason) else None)
                by_customer[cid] = [job for job in jobs if job not in result]
                if not by_customer[cid]:
                    del by_customer[cid]
            if by_customer and time.monotonic() >= deadline:
                for jobs in by_customer.values():
                    for job in jobs:
                        result[job] = (seen[job], f"removal requested (job {job} run) but not confirmed: the job was "
                                                  f"still {seen[job]} after poll_timeout_seconds "
                                                  f"({self._settings.poll_timeout_seconds:g} s); re-run to request "
                                                  "it again")
                break
        return result

    # --- Data Manager ---

    def _remove_with_data_manager(self, todo: Sequence[ErasureDecision], hashed: str,
                                  outcomes: dict[str, RecordOutcome]) -> list[str]:
        parts: list[str] = []
        accepted: dict[str, ErasureDecision] = {}  # requestId -> decision
        login = self._settings.login_customer_id
        for decision in todo:
            cid, lid = self._lists[decision.ref.id]
            destination: dict[str, Any] = {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": cid}}
            if login is not None and login != cid:
                destination["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": login}
            destination["productDestinationId"] = lid
            body = {"destinations": [destination],
                    "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": hashed}]}}],
                    "encoding": "HEX", "validateOnly": False}
            try:
                answer = self._call("erase", decision.ref.id, "POST",
                                    f"{self._base_url}/{DATA_MANAGER_VERSION}/audienceMembers:remove", body, ads=False)
            except GoogleAdsApiError as exc:
                if exc.fatal:
                    raise
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=str(exc))
                continue
            request_id = answer.get("requestId") if isinstance(answer, dict) else None
            if not isinstance(request_id, str) or not re.fullmatch(r"[\w.:-]{1,128}", request_id):
                outcomes[decision.ref.key] = outcome_for(
                    decision, done=False, error="the Data Manager API accepted the removal without a requestId")
                continue
            accepted[request_id] = decision
        for request_id, (status, problem) in self._poll_requests(accepted).items():
            decision = accepted[request_id]
            parts.append(f"{decision.ref.id}={request_id}:{status}")
            outcomes[decision.ref.key] = outcome_for(decision, done=problem is None, error=problem)
        return parts

    def _poll_requests(self, accepted: Mapping[str, ErasureDecision]) -> dict[str, tuple[str, str | None]]:
        """Read each removal's status (``GET /v1/requestStatus:retrieve``) until every destination is SUCCESS
        (confirmed: no problem) or one is FAILED / PARTIAL_SUCCESS, or `poll_timeout_seconds` pass."""
        result: dict[str, tuple[str, str | None]] = {}
        waiting = list(accepted)
        deadline = time.monotonic() + self._settings.poll_timeout_seconds
        while waiting:
            for request_id in list(waiting):
                what = accepted[request_id].ref.id
                try:
                    answer = self._call("erase", what, "GET", f"{self._base_url}/{DATA_MANAGER_VERSION}/"
                                        f"requestStatus:retrieve?requestId={request_id}", None, ads=False)
                except GoogleAdsApiError as exc:
                    if exc.fatal:
                        raise
                    result[request_id] = ("UNREAD", f"removal requested (request {request_id}) but its status "
                                                     f"could not be read: {exc}")
                    waiting.remove(request_id)
                    continue
                self._count("polls")
                status = _data_manager_status(answer)
                if status == "SUCCESS":
                    result[request_id] = (status, None)
                    waiting.remove(request_id)
                elif status in ("FAILED", "PARTIAL_SUCCESS"):
                    result[request_id] = (status, f"the Data Manager API reports the removal from {what} "
                                                  f"(request {request_id}) {status}; it was not fully applied")
                    waiting.remove(request_id)
            if not waiting:
                break
            if time.monotonic() >= deadline:
                for request_id in waiting:
                    result[request_id] = ("PROCESSING", f"removal requested (request {request_id}) but not "
                                                        "confirmed: still PROCESSING after poll_timeout_seconds "
                                                        f"({self._settings.poll_timeout_seconds:g} s); re-run to "
                                                        "request it again")
                break
            time.sleep(min(self._settings.poll_seconds, max(deadline - time.monotonic(), 0.0)))
        return result

    # --- calling Google ---

    def _ads(self, operation: str, what: str, method: str, path: str, body: Any) -> Any:
        return self._call(operation, what, method, f"{self._base_url}/{self._settings.api_version}/{path}", body,
                          ads=True)

    def _call(self, operation: str, what: str, method: str, url: str, body: Any, *, ads: bool) -> Any:
        """One API call: paced, retried, re-authorised once on a 401; errors as PII-free ConnectorErrors."""
        failure: ConnectorError | None = None
        for attempt in (1, 2):
            try:
                return self._attempts(method, url, body, ads)()
            except ConnectorError:
                raise  # our own (the token exchange), already without personal data
            except _HttpFailure as exc:
                if exc.status == 401 and attempt == 1 and not _developer_token_problem(exc.codes):
                    self._forget_token()  # expired or revoked meanwhile: a fresh one, once
                    continue
                failure = self._failure(operation, what, exc)
            except _NETWORK_ERRORS as exc:
                failure = self._network_failure(operation, what, exc)
            except (requests.RequestException, ValueError) as exc:
                failure = GoogleAdsApiError(f"systems.{self._system}: {operation} of {what!r} failed: unexpected "
                                            f"{type(exc).__name__} from Google")
            break
        assert failure is not None
        raise failure  # outside the except blocks: neither the cause nor the context is kept

    def _attempts(self, method: str, url: str, body: Any, ads: bool) -> Callable[[], Any]:
        s = self._settings

        @vendor_retry(retryable=self._retryable, retry_after=_wait_asked, attempts=s.retry_attempts,
                      max_wait=s.retry_max_wait, on_retry=self._on_retry)
        def attempt() -> Any:
            headers = {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json"}
            if ads:
                headers["developer-token"] = self._credentials.developer_token or ""
                if s.login_customer_id is not None:
                    headers["login-customer-id"] = s.login_customer_id
            waited = self._limiter.acquire()
            self._count("calls")
            if waited:
                self._count("waited_seconds", waited)
            response = self._session.request(method, url, json=body, headers=headers, timeout=self._timeout)
            if response.status_code >= 400:
                raise _HttpFailure(response.status_code, _json_or_none(response), response.headers)
            return _json_or_none(response) or {}

        return attempt

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, _HttpFailure):
            if exc.status == 429:
                return exc.retry_delay is None or exc.retry_delay <= self._settings.retry_max_wait
            return exc.status in (500, 502, 503, 504)
        return isinstance(exc, _NETWORK_ERRORS)

    def _failure(self, operation: str, what: str, exc: _HttpFailure) -> GoogleAdsApiError:
        where = f"systems.{self._system}: {operation} of {what!r} failed"
        codes = exc.codes
        said = f"{exc.status} {exc.google_status or ''}".rstrip() + (f" {', '.join(codes)}" if codes else "")
        attempts = self._settings.retry_attempts
        fatal = False
        if _developer_token_problem(codes):
            message = (f"{where}: Google Ads refused the developer token ({said}); put a valid one in the "
                       f"environment variable {self._settings.developer_token_env}")
            fatal = True
        elif exc.status == 401:
            message = (f"{where}: Google refused the access token even after refreshing it ({said}); check the "
                       f"OAuth client and refresh token in {self._settings.oauth.client_id_env}, "
                       f"{self._settings.oauth.refresh_token_env}")
            fatal = True
        elif any(c.endswith("CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE") for c in codes):
            message = (f"{where}: Google Ads no longer accepts Customer Match uploads from this developer token "
                       f"({said}); set systems.{self._system}.settings.mode to data_manager (the Data Manager API)")
            fatal = True
        elif any(c.endswith("USER_PERMISSION_DENIED") for c in codes) or exc.status == 403:
            message = (f"{where}: no access to this account ({said}); a client account is reached through its "
                       f"manager: check systems.{self._system}.settings.login_customer_id")
        elif exc.status == 429 and exc.retry_delay is not None and exc.retry_delay > self._settings.retry_max_wait:
            message = (f"{where}: Google's API quota is used up ({said}); Google asks to wait "
                       f"{exc.retry_delay:.0f} s, so this was not retried")
            fatal = True
        elif exc.status == 404 and not codes and self._settings.api_version is not None:
            # Google stops serving a version about a year after its release and then answers 404 to every path.
            message = (f"{where}: Google Ads answered 404 ({said}): API version {self._settings.api_version} may be "
                       f"sunset; set systems.{self._system}.settings.api_version to a version Google serves "
                       "(README, 'Google Ads API versions')")
            fatal = True
        elif exc.status == 429:
            message = f"{where}: still throttled by Google ({said}) after {attempts} attempts"
        elif exc.status >= 500:
            message = f"{where}: Google server error ({said}) after {attempts} attempts"
        else:
            message = f"{where}: Google answered {said}"
        return GoogleAdsApiError(message, status=exc.status, codes=codes, fatal=fatal)

    def _network_failure(self, operation: str, what: str, exc: BaseException) -> GoogleAdsApiError:
        return GoogleAdsApiError(f"systems.{self._system}: {operation} of {what!r} failed: Google unreachable "
                                 f"({type(exc).__name__}) after {self._settings.retry_attempts} attempts")

    # --- OAuth ---

    def _token(self) -> str:
        with self._token_lock:
            if self._access_token is not None and time.monotonic() < self._token_expires:
                return self._access_token
            token, lifetime = self._exchange()
            self._access_token = token
            # Refresh a minute early (a tenth of the lifetime for short-lived tokens).
            self._token_expires = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            self._count("token_refreshes")
            return token

    def _forget_token(self) -> None:
        with self._token_lock:
            self._access_token = None

    def _exchange(self) -> tuple[str, float]:
        """The refresh token for an access token at the token endpoint; PII- and secret-free errors."""
        s, creds = self._settings, self._credentials
        where = f"systems.{self._system}: Google OAuth token refresh failed"
        form = {"grant_type": "refresh_token", "client_id": creds.client_id, "client_secret": creds.client_secret,
                "refresh_token": creds.refresh_token}

        @vendor_retry(retryable=self._retryable, retry_after=_wait_asked, attempts=s.retry_attempts,
                      max_wait=s.retry_max_wait, on_retry=self._on_retry)
        def attempt() -> Any:
            self._count("calls")
            response = self._session.post(self._token_url, data=form, timeout=self._timeout)
            if response.status_code >= 400:
                raise _HttpFailure(response.status_code, _json_or_none(response), response.headers)
            return _json_or_none(response)

        failure: ConnectorError | None = None
        try:
            answer = attempt()
        except _HttpFailure as exc:
            if exc.oauth_error == "invalid_grant":
                failure = ConnectorError(f"{where} (invalid_grant: the refresh token is expired or revoked); put a "
                                         f"valid one in the environment variable {s.oauth.refresh_token_env}")
            elif exc.oauth_error in ("invalid_client", "unauthorized_client"):
                failure = ConnectorError(f"{where} ({exc.oauth_error}); check the OAuth client in the environment "
                                         f"variables {s.oauth.client_id_env} and {s.oauth.client_secret_env}")
            elif exc.status >= 500 or exc.status == 429:
                failure = ConnectorError(f"{where} (HTTP {exc.status}) after {s.retry_attempts} attempts")
            else:
                failure = ConnectorError(f"{where} (HTTP {exc.status}" + (f" {exc.oauth_error})" if exc.oauth_error
                                                                           else ")"))
        except _NETWORK_ERRORS as exc:
            failure = ConnectorError(f"{where}: token endpoint unreachable ({type(exc).__name__}) after "
                                     f"{s.retry_attempts} attempts")
        except (requests.RequestException, ValueError) as exc:
            failure = ConnectorError(f"{where}: unexpected {type(exc).__name__}")
        if failure is not None:
            raise failure
        token = answer.get("access_token") if isinstance(answer, dict) else None
        lifetime = answer.get("expires_in", 3600) if isinstance(answer, dict) else 0
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise ConnectorError(f"{where}: the token endpoint answered without an access token")
        return token, float(lifetime)

    # --- helpers ---

    def _problem_with(self, ref: RecordRef) -> str | None:
        foreign = self._foreign(ref)
        if foreign is not None:
            return foreign
        if not _RESOURCE.match(ref.id):
            return f"id is not a user list resource name (customers/<id>/userLists/<id>) of systems.{self._system}"
        if ref.id not in self._lists:
            return f"user list {ref.id!r} is not configured in systems.{self._system}.settings.customers"
        return None


# --- module helpers ---------------------------------------------------------------------------------------


def _job_path(job: str) -> str:
    """``offlineUserDataJobs/{id}`` of a job resource name ``customers/{cid}/offlineUserDataJobs/{id}``."""
    return job.split("/", 2)[2]


def _data_manager_status(answer: Any) -> str | None:
    """One status for a Data Manager request: SUCCESS only if every destination's is; else the first other."""
    entries = answer.get("requestStatusPerDestination") if isinstance(answer, dict) else None
    statuses = [e.get("requestStatus") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    statuses = [s for s in statuses if isinstance(s, str) and _CODE.match(s)]
    if not statuses:
        return None
    return next((s for s in statuses if s != "SUCCESS"), "SUCCESS")


def _developer_token_problem(codes: Sequence[str]) -> bool:
    return any("DEVELOPER_TOKEN" in code for code in codes)


def _wait_asked(exc: BaseException) -> float | None:
    return exc.retry_delay if isinstance(exc, _HttpFailure) and exc.status == 429 else None


def _json_or_none(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
