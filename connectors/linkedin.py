"""LinkedIn Matched Audiences: remove the subject from configured DMP segments (plain `requests`).

Per configured segment (``urn:li:dmpSegment:{id}``), one ``POST https://api.linkedin.com/rest/dmpSegments/{id}/users``
with ``X-RestLi-Method: BATCH_CREATE`` and
``{"elements": [{"action": "REMOVE", "userIds": [{"idType": "SHA256_EMAIL", "idValue": "<64 hex>"}]}]}``
(vendor-apis.md section 5). LinkedIn answers 200 with one status per element: 201 is done (also when the
member was not there: removal is idempotent "by design"); any other element status makes that segment's
outcome not done, with the status (a partial failure in one batch does not fail the others).

Headers on every call: ``Authorization: Bearer``, ``LinkedIn-Version: <settings.version>`` (YYYYMM; LinkedIn
sunsets a version about a year after release and then answers **426** ``NONEXISTENT_VERSION``, which
becomes a `ConnectorError` naming ``settings.version``), ``X-Restli-Protocol-Version: 2.0.0``.

Contract mapping (DESIGN.md): segments are write-only audiences.

- `discover`: one ref per configured segment (object ``dmp_segment``, id = the segment's numeric id,
  categories from `categories`, marketing by default), meaning "this segment may contain the subject";
  no call. It remembers the subject for `erase`.
- `export`: one record per segment saying membership is not readable; no call, no hash.
- `erase`: the removal above, one request per segment; RETAIN makes no call; ANONYMISE is carried out as a
  removal. A 201 only says LinkedIn accepted the removal (it answers 201 for an absent member too), so each
  accepted segment is then read (``GET /rest/dmpSegments/{id}``) every `poll_seconds` until its ``LINKEDIN``
  destination is ``READY`` (the change applied): only then is the outcome done and the removal confirmed
  (`confirms_removal`). ``FAILED``/``EXPIRED``/``ARCHIVED``, or still ``UPDATING`` after
  `poll_timeout_seconds`, leaves it not done ("removal requested, not confirmed"; re-running is safe).
  Never `already_gone`: absence cannot be seen. `erase` takes an optional ``subject=``, else the subject `discover` saw (the refs do not say whom
  to remove).
- `verify_erased`: ``[]``; `info.write_only` tells the runner the removal cannot be verified by re-query.

Hashing (section 5): trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex.

Credentials: a 3-legged OAuth access token with ``rw_dmp_segments``, read from the environment variable
named by `token_env` (LinkedIn access tokens live 60 days; a 401 is a `ConnectorError` asking for a new one,
never retried).

Pacing: a client-side window (`rate_limit`, 500 ``/users`` calls per minute by default: the lower of the
500-600 LinkedIn documents). Retries (tenacity): 429 for a per-minute throttle (LinkedIn sends no
``Retry-After``: exponential backoff with jitter), 5xx, resets and timeouts. A DAY throttle does not
clear until UTC midnight and is not retried.

Neither the address nor its hash reaches an exception, a log or an outcome: errors carry the system, the
operation, the segment URN, LinkedIn's status and its token-like ``code`` only, never its message text,
and are raised outside ``except`` blocks (nothing chained).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

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

KIND = "linkedin"
VERSION = "linkedin/1"
OBJECT = "dmp_segment"
DEFAULT_BASE_URL = "https://api.linkedin.com"
RESTLI_PROTOCOL_VERSION = "2.0.0"

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SEGMENT_URN = re.compile(r"^urn:li:dmpSegment:(?P<id>\d{1,20})$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,79}$")
_THROTTLE = re.compile(r"throttle (?P<scope>[A-Z]+) (?P<period>[A-Z]+) limit")


def sha256_email(email: str) -> str:
    """LinkedIn's ``SHA256_EMAIL``: trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex."""
    normalised = email.strip().lower()
    if not normalised:
        raise ValueError("empty address")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


# --- settings ---------------------------------------------------------------------------------------------


class LinkedInSettings(BaseModel):
    """The `settings:` block of a `linkedin` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(default=None, min_length=1)
    base_url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    version: str  # LinkedIn-Version, YYYYMM (or YYYYMM.RR)
    token_env: str = Field(pattern=_ENV_VAR_NAME)
    segments: tuple[str, ...] = Field(min_length=1)
    categories: tuple[DataCategory, ...] = Field(default=(DataCategory.MARKETING,), min_length=1)
    # After a removal the segment's LINKEDIN destination is read until READY (the change applied).
    poll_seconds: float = Field(default=5.0, gt=0)
    poll_timeout_seconds: float = Field(default=600.0, gt=0)
    rate_limit: RateLimitSpec = RateLimitSpec(calls=500, period_seconds=60)
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in ("token", "access_token", "client_secret", "refresh_token"):
                if key in data:
                    raise ValueError(f"{key}: never put a token in systems.yaml; name its environment variable "
                                     "with token_env")
        return data

    @model_validator(mode="after")
    def _check(self) -> LinkedInSettings:
        problem = origin_setting_problem(self.base_url, self.base_url_env)
        if problem:
            raise ValueError(problem)
        if not re.fullmatch(r"20\d{2}(0[1-9]|1[0-2])(\.\d{2})?", self.version):
            raise ValueError("version: must be a LinkedIn-Version YYYYMM (or YYYYMM.RR), e.g. \"202604\"")
        for index, urn in enumerate(self.segments):
            if not _SEGMENT_URN.match(urn):
                raise ValueError(f"segments.{index}: must be a DMP segment URN, urn:li:dmpSegment:<id>")
        if len(set(self.segments)) != len(self.segments):
            raise ValueError("segments: names a segment twice")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories: names a category twice")
        if self.poll_timeout_seconds < self.poll_seconds:
            raise ValueError("poll_timeout_seconds: must be at least poll_seconds")
        return self


def parse_settings(system: str, settings: Mapping[str, Any]) -> LinkedInSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(LinkedInSettings, system, settings)


def create(system: str, settings: Mapping[str, Any]) -> LinkedInConnector:
    """Build the connector for one system (the registry's entry point). Makes no call to LinkedIn.

    Raises:
        ConnectorConfigError: bad settings, or an environment variable they name is unset.
    """
    parsed = parse_settings(system, settings)
    base_url = resolve_origin(f"systems.{system}.settings", parsed.base_url, parsed.base_url_env, DEFAULT_BASE_URL)
    token = env_secret(f"systems.{system}.settings.token_env", parsed.token_env)
    return LinkedInConnector(system, parsed, base_url=base_url, token=token)


# --- errors -----------------------------------------------------------------------------------------------


class LinkedInApiError(ConnectorError):
    """LinkedIn answered with an error (or could not be reached); the message holds status and code only.

    `fatal`: no segment can get past it (token, version, daily quota), so `erase` stops.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.fatal = status, code, fatal


class _HttpFailure(HttpFailure):
    """An error answer reduced to what may be repeated. Internal: never leaves the connector."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        data = body if isinstance(body, dict) else {}
        code = data.get("code")
        self.code = code if isinstance(code, str) and _CODE.match(code) else None
        service = data.get("serviceErrorCode")
        self.service_code = service if isinstance(service, int) else None
        message = data.get("message")
        throttle = _THROTTLE.search(message) if isinstance(message, str) else None
        self.throttle = (throttle.group("scope"), throttle.group("period")) if throttle else None
        self.retry_after = parse_retry_after(headers.get("Retry-After"))

    @property
    def daily(self) -> bool:
        return self.status == 429 and self.throttle is not None and self.throttle[1] == "DAY"


_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout)


# --- the connector ----------------------------------------------------------------------------------------


class LinkedInConnector(AudienceConnector):
    """Remove a subject's ``SHA256_EMAIL`` from configured DMP segments (write-only audiences).

    Build it with `create`; call `close()` when done. `stats` counts calls, retries and throttling.
    """

    OBJECT = OBJECT  # the module constant, for AudienceConnector
    REFS = "segment refs"

    def __init__(self, system: str, settings: LinkedInSettings, *, base_url: str, token: str) -> None:
        self._system = system
        self._settings = settings
        self._base_url = base_url
        self._segments = {_SEGMENT_URN.match(urn).group("id"): urn for urn in settings.segments}  # type: ignore[union-attr]
        rl = settings.rate_limit
        self._limiter = limiter_for(budget_key("linkedin", base_url, token), rl.calls,
                                    rl.period_seconds * (1 + LATENCY_MARGIN))
        self._timeout = (settings.connect_timeout_seconds, settings.timeout_seconds)
        self._session = requests.Session()
        self._session.headers.update({
            "Authorization": f"Bearer {token}",
            "LinkedIn-Version": settings.version,
            "X-Restli-Protocol-Version": RESTLI_PROTOCOL_VERSION,
            "Content-Type": "application/json",
            "User-Agent": f"dsr-pipeline/{VERSION}",
        })
        self._subjects: dict[str, str] = {}
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._info = ConnectorInfo(
            system=system, kind=KIND, version=VERSION, write_only=True,
            rate_limit_per_second=rl.calls / rl.period_seconds, max_batch=1, objects=(OBJECT,),
        )

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """One ref per configured segment ("may contain the subject"); no call. Remembers the subject."""
        email = subject_email(subject)
        self._subjects[subject.identity_hash] = email
        return [self._ref(segment_id) for segment_id in self._segments]

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """One record per segment: membership is not readable, so nothing personal is exported."""
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")
        for ref in refs:
            yield Record(ref=ref, fields={
                "audience": self._segments[ref.id],
                "platform": "LinkedIn Matched Audiences",
                "membership": "not readable: DMP segments are write-only; the subject may be a member",
                "identifier_uploaded": "SHA-256 of the normalised e-mail address",
            })

    def erase(self, decisions: Sequence[ErasureDecision], subject: Subject | None = None) -> Receipt:
        """Remove the subject's SHA256_EMAIL from each decided segment; RETAIN makes no call.

        Raises:
            ConnectorError: the subject is unknown, or a failure no segment can get past (the token, the
                LinkedIn-Version, the daily quota); re-running is safe.
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
        if todo:
            hashed = sha256_email(self._subject_email(subject))
            accepted: list[ErasureDecision] = []
            for decision in todo:
                outcomes[decision.ref.key] = self._remove(decision, hashed)
                if outcomes[decision.ref.key].done:
                    accepted.append(decision)
            for decision, problem in self._confirm(accepted).items():
                if problem is not None:
                    outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(system=self._system, outcomes=ordered, vendor_receipt_id=receipt_id("linkedin", ordered),
                       api_calls=int(self._stats["calls"] - calls_before))

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Nothing can be re-queried (write-only audiences): always ``[]``."""
        subject_email(subject)
        return []

    @property
    def confirms_removal(self) -> bool:
        """A removal is done only once the segment's LINKEDIN destination reads READY after it."""
        return True

    # --- removal ---

    def _confirm(self, accepted: Sequence[ErasureDecision]) -> dict[ErasureDecision, str | None]:
        """Read each segment until its LINKEDIN destination is READY (None: confirmed) or ends otherwise
        (FAILED, EXPIRED, ARCHIVED: the reason), or `poll_timeout_seconds` pass (removal requested only)."""
        result: dict[ErasureDecision, str | None] = {}
        waiting = list(accepted)
        last: dict[ErasureDecision, str] = dict.fromkeys(waiting, "UPDATING")
        deadline = time.monotonic() + self._settings.poll_timeout_seconds
        while waiting:
            for decision in list(waiting):
                urn = self._segments[decision.ref.id]
                try:
                    answer = self._call("erase", urn, f"/rest/dmpSegments/{decision.ref.id}", None, method="GET")
                except LinkedInApiError as exc:
                    if exc.fatal:
                        raise
                    result[decision] = f"removal from {urn} requested but its status could not be read: {exc}"
                    waiting.remove(decision)
                    continue
                self._count("polls")
                status = _destination_status(answer)
                last[decision] = status or "missing"
                if status == "READY":
                    result[decision] = None
                    waiting.remove(decision)
                elif status not in ("BUILDING", "UPDATING"):
                    result[decision] = (f"removal from {urn} requested but LinkedIn's segment status is "
                                        f"{status or 'missing'}; the removal is not confirmed: re-run to retry")
                    waiting.remove(decision)
            if not waiting:
                break
            if time.monotonic() >= deadline:
                for decision in waiting:
                    result[decision] = (f"removal from {self._segments[decision.ref.id]} requested but not confirmed: "
                                        f"the segment was still {last[decision]} after poll_timeout_seconds "
                                        f"({self._settings.poll_timeout_seconds:g} s); re-run to request it again")
                break
            time.sleep(min(self._settings.poll_seconds, max(deadline - time.monotonic(), 0.0)))
        return result

    def _remove(self, decision: ErasureDecision, hashed: str) -> RecordOutcome:
        urn = self._segments[decision.ref.id]
        body = {"elements": [{"action": "REMOVE", "userIds": [{"idType": "SHA256_EMAIL", "idValue": hashed}]}]}
        try:
            answer = self._call("erase", urn, f"/rest/dmpSegments/{decision.ref.id}/users", body)
        except LinkedInApiError as exc:
            if exc.fatal:
                raise
            return outcome_for(decision, done=False, error=str(exc))
        elements = answer.get("elements") if isinstance(answer, dict) else None
        if not isinstance(elements, list) or len(elements) != 1:
            return outcome_for(decision, done=False, error=f"LinkedIn answered the removal from {urn} without one "
                                                           "status per element")
        status = (elements[0] or {}).get("status") if isinstance(elements[0], dict) else None
        if isinstance(status, int) and 200 <= status < 300:
            return outcome_for(decision, done=True)
        error = (elements[0] or {}).get("error") if isinstance(elements[0], dict) else None
        code = (error or {}).get("code") if isinstance(error, dict) else None
        code = code if isinstance(code, str) and _CODE.match(code) else None
        said = f"element status {status if isinstance(status, int) else 'missing'}" + (f" {code}" if code else "")
        return outcome_for(decision, done=False, error=f"LinkedIn refused the removal from {urn} ({said}); the "
                                                        "other segments are unaffected; re-run to retry")

    # --- calling LinkedIn ---

    def _call(self, operation: str, what: str, path: str, body: Any, *, method: str = "POST") -> Any:
        """One BATCH_CREATE (or a GET of the segment): paced, retried; errors as PII-free ConnectorErrors
        raised outside `except`."""
        failure: ConnectorError | None = None
        try:
            return self._attempts(path, body, method)()
        except _HttpFailure as exc:
            failure = self._failure(operation, what, exc)
        except _NETWORK_ERRORS as exc:
            failure = LinkedInApiError(f"systems.{self._system}: {operation} of {what!r} failed: LinkedIn "
                                       f"unreachable ({type(exc).__name__}) after {self._settings.retry_attempts} "
                                       "attempts")
        except (requests.RequestException, ValueError) as exc:
            failure = LinkedInApiError(f"systems.{self._system}: {operation} of {what!r} failed: unexpected "
                                       f"{type(exc).__name__}")
        raise failure

    def _attempts(self, path: str, body: Any, method: str = "POST") -> Callable[[], Any]:
        s = self._settings

        @vendor_retry(retryable=_retryable, retry_after=_wait_asked, attempts=s.retry_attempts,
                      max_wait=s.retry_max_wait, on_retry=self._on_retry)
        def attempt() -> Any:
            waited = self._limiter.acquire()
            self._count("calls")
            if waited:
                self._count("waited_seconds", waited)
            if method == "GET":
                response = self._session.get(f"{self._base_url}{path}", timeout=self._timeout)
            else:
                response = self._session.post(f"{self._base_url}{path}", json=body, timeout=self._timeout,
                                              headers={"X-RestLi-Method": "BATCH_CREATE"})
            if response.status_code >= 400:
                raise _HttpFailure(response.status_code, _json_or_none(response), response.headers)
            return _json_or_none(response)

        return attempt

    def _failure(self, operation: str, what: str, exc: _HttpFailure) -> LinkedInApiError:
        where = f"systems.{self._system}: {operation} of {what!r} failed"
        said = f"{exc.status} {exc.code or ''}".rstrip()
        attempts = self._settings.retry_attempts
        fatal = False
        if exc.status == 401:
            message = (f"{where}: LinkedIn refused the access token ({said}); LinkedIn tokens expire after 60 days: "
                       f"put a valid token with rw_dmp_segments in the environment variable {self._settings.token_env}")
            fatal = True
        elif exc.status == 426 or exc.code in ("NONEXISTENT_VERSION", "VERSION_MISSING"):
            message = (f"{where}: LinkedIn no longer serves API version {self._settings.version} ({said}); set "
                       f"systems.{self._system}.settings.version to an active YYYYMM")
            fatal = True
        elif exc.daily:
            message = (f"{where}: LinkedIn's daily quota is used up ({said} {exc.throttle[0]} DAY)"  # type: ignore[index]
                       "; it clears at midnight UTC, so this was not retried")
            fatal = True
        elif exc.status == 429:
            message = f"{where}: still throttled by LinkedIn ({said}) after {attempts} attempts"
        elif exc.status == 403:
            message = f"{where}: the token may not change this segment ({said}; rw_dmp_segments and the ad account's role)"
        elif exc.status == 404:
            message = f"{where}: LinkedIn has no such segment ({said}); check systems.{self._system}.settings.segments"
        elif exc.status >= 500:
            message = f"{where}: LinkedIn server error ({said}) after {attempts} attempts"
        else:
            message = f"{where}: LinkedIn answered {said}"
        return LinkedInApiError(message, status=exc.status, code=exc.code, fatal=fatal)

    # --- helpers ---

    def _problem_with(self, ref: RecordRef) -> str | None:
        foreign = self._foreign(ref)
        if foreign is not None:
            return foreign
        if ref.id not in self._segments:
            return f"segment {ref.id!r} is not configured in systems.{self._system}.settings.segments"
        return None


# --- module helpers ---------------------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _HttpFailure):
        if exc.status == 429:
            return not exc.daily
        return exc.status in (500, 502, 503, 504)
    return isinstance(exc, _NETWORK_ERRORS)


def _wait_asked(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, _HttpFailure) and exc.status == 429 else None


def _destination_status(segment: Any) -> str | None:
    """The status of a DMP segment's LINKEDIN destination (token-like only), or None."""
    destinations = segment.get("destinations") if isinstance(segment, dict) else None
    for destination in destinations if isinstance(destinations, list) else []:
        if isinstance(destination, dict) and destination.get("destination") == "LINKEDIN":
            status = destination.get("status")
            return status if isinstance(status, str) and _CODE.match(status) else None
    return None


def _json_or_none(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
