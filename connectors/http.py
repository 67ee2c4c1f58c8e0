"""The base of every HTTP connector: settings, one paced and retried call, one place that sorts failures.

A vendor connector subclasses `HttpConnector` and declares what differs: `KIND`, `VERSION`, `VENDOR`,
`DEFAULT_BASE_URL`, `SETTINGS` (an `HttpSettings` subclass), its objects and, where the defaults do not
fit, a few hooks:

- `failure_of(response)`: an error answer as an `HttpFailure` (status, token-like code, Retry-After);
- `classify(failure)`: RETRY, FATAL or PLAIN (default: `FATAL_STATUSES` and `FATAL_CODES` fatal, 429 and
  `RETRY_STATUSES` retried);
- `HINTS` (status or code -> message template) and `explain(failure)`: the words of an error;
- `translate(exc)`: an SDK's exception as an `HttpFailure`, for vendors reached through a client library;
- `reauthenticate(failure)`: drop a cached login so that a 401 is tried once more with a fresh one;
- `in_flight()`: a cap on concurrent calls (a `connectors.pacing.slots_for` semaphore), held per attempt.

`request(...)` is the plain-`requests` way in; `_call(operation, what, send)` is the core under it, also
usable with any `send` (an SDK call). Errors leave as `VendorApiError` carrying status, code and `fatal`,
raised outside every ``except`` block: vendor text and request URLs may hold personal data, so nothing is
chained and no message quotes them.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from typing import Any, ClassVar, Self, TypeVar

import requests
import requests.auth
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import (
    ConnectorError,
    ConnectorInfo,
    ErasureAction,
    ErasureDecision,
    RateLimitSpec,
    Receipt,
    RecordOutcome,
    RecordRef,
    env_secret,
    origin_setting_problem,
    outcome_for,
    receipt_id,
    resolve_origin,
    unique_decisions,
    validate_settings,
)
from connectors.pacing import LATENCY_MARGIN, Pause, budget_key, limiter_for, parse_retry_after, vendor_retry

T = TypeVar("T")

ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: A vendor's error code as it may be repeated in a message: a token, never free text.
TOKEN_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{1,79}$")


def no_inline_secrets(data: Any, keys: tuple[str, ...], hint: str) -> Any:
    """For a `mode="before"` validator: refuse a settings block holding a secret itself (``token: ...``)."""
    if isinstance(data, Mapping):
        for key in keys:
            if key in data:
                raise ValueError(f"{key}: never put a secret in systems.yaml; {hint}")
    return data


class HttpSettings(BaseModel):
    """What every HTTP system's `settings:` block may hold; a vendor subclasses it and adds its own fields.

    A vendor's default (its rate limit, say) is set by declaring the field again with another default.
    `SECRET_KEYS` are refused outright (the secret belongs in the environment, named by a ``*_env`` key).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    SECRET_KEYS: ClassVar[tuple[str, ...]] = ("token", "access_token", "api_key", "client_secret", "refresh_token")
    SECRET_HINT: ClassVar[str] = "name its environment variable with token_env"

    base_url: str | None = Field(default=None, min_length=1)
    base_url_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    rate_limit: RateLimitSpec = RateLimitSpec(calls=10, period_seconds=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        return no_inline_secrets(data, cls.SECRET_KEYS, cls.SECRET_HINT)

    @model_validator(mode="after")
    def _check_origin(self) -> Self:
        problem = origin_setting_problem(self.base_url, self.base_url_env)
        if problem:
            raise ValueError(problem)
        return self


class VendorApiError(ConnectorError):
    """A vendor answered with an error, or could not be reached; the message holds status and code only.

    `fatal`: no other record can get past it either (credentials, API version, a daily quota), so a
    batch operation stops instead of failing every record the same way.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.fatal = status, code, fatal


class HttpFailure(Exception):
    """An error answer reduced to what may be repeated. Internal: it never leaves a connector.

    `fatal`: the vendor's answer itself says no other call will get past it (a daily quota, say);
    `detail`: a further token-like word of the vendor's for the message (the throttle's scope...).
    """

    def __init__(self, status: int, *, code: str | None = None, retry_after: float | None = None,
                 fatal: bool = False, detail: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.code, self.retry_after = status, code, retry_after
        self.fatal, self.detail = fatal, detail

    @property
    def said(self) -> str:
        """What the vendor said, as a message may repeat it: status and code."""
        return f"{self.status} {self.code or ''}".rstrip()


class UnexpectedAnswer(Exception):
    """A 2xx answer that is not the JSON expected."""


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every call. Set as the session's auth, so that a ~/.netrc entry
    can never replace the token; its repr never shows it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<token>)"


class Verdict(Enum):
    """How a failure is handled: tried again, stopping everything, or failing only its own call."""

    RETRY = "retry"
    FATAL = "fatal"
    PLAIN = "plain"


class HttpConnector:
    """Settings, session, pacing, retries, failure sorting, error messages and counters of an HTTP vendor.

    Build one with `create(system, settings)`; call `close()` when done (or use it as a context manager).
    `stats` counts calls, retries, throttling answers, server and network errors and waits.
    """

    KIND: ClassVar[str]
    VERSION: ClassVar[str]
    VENDOR: ClassVar[str]  # the vendor's name in messages
    DEFAULT_BASE_URL: ClassVar[str]
    SETTINGS: ClassVar[type[HttpSettings]] = HttpSettings
    API_PATH: ClassVar[str] = ""  # between the origin and every request path
    OBJECTS: ClassVar[tuple[str, ...]] = ()
    WRITE_ONLY: ClassVar[bool] = False
    MANUAL_STEPS: ClassVar[frozenset[str]] = frozenset()
    MAX_BATCH: ClassVar[int] = 1
    ERROR: ClassVar[type[VendorApiError]] = VendorApiError
    NETWORK_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (requests.ConnectionError, requests.Timeout)
    RETRY_STATUSES: ClassVar[frozenset[int]] = frozenset({500, 502, 503, 504})
    #: Failures no other call gets past (credentials, a sunset API version): fatal, never retried.
    FATAL_STATUSES: ClassVar[frozenset[int]] = frozenset({401})
    FATAL_CODES: ClassVar[frozenset[str]] = frozenset()
    #: Every caller waits what a 429 asked (not only the one retrying): for vendors whose Retry-After is
    #: shorter than the limiter's window.
    PAUSE_ON_THROTTLE: ClassVar[bool] = False
    #: Message templates by vendor code or status, overriding the defaults of `_failure`. Fields: `vendor`,
    #: `said` (status and code), `attempts`, `system`, `what`, `s` (the settings).
    HINTS: ClassVar[Mapping[int | str, str]] = {}

    _info: ConnectorInfo
    _stats: Counter[str]
    _stats_lock: threading.Lock
    _session: Any

    def __init__(self, system: str, settings: HttpSettings, *, base_url: str, credentials: Any = None) -> None:
        self._system = system
        self._settings: Any = settings
        self._base_url = base_url
        self._root = base_url + self.API_PATH  # every request path is appended to it
        self._credentials = credentials
        rl = settings.rate_limit
        self._limiter = limiter_for(budget_key(self.KIND, *self._account()), rl.calls,
                                    rl.period_seconds * (1 + LATENCY_MARGIN))
        self._pause = Pause()
        self._timeout = (settings.connect_timeout_seconds, settings.timeout_seconds)
        self._stats = Counter()
        self._stats_lock = threading.Lock()
        self._thread_calls = threading.local()  # `count`: this thread's calls (see `_calls_in_thread`)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"dsr-pipeline/{self.VERSION}"
        self._retry = vendor_retry(retryable=self._retryable, retry_after=self.wait_asked,
                                   attempts=settings.retry_attempts, max_wait=settings.retry_max_wait,
                                   on_retry=self._on_retry)
        self._info = ConnectorInfo(
            system=system, kind=self.KIND, version=self.VERSION, write_only=self.WRITE_ONLY,
            manual_steps=self.MANUAL_STEPS, rate_limit_per_second=rl.calls / rl.period_seconds,
            max_batch=self.MAX_BATCH, objects=self.OBJECTS)

    # --- construction ---

    @classmethod
    def create(cls, system: str, settings: Mapping[str, Any]) -> Self:
        """Build the connector for one system (the registry's entry point). Makes no call to the vendor.

        Raises:
            ConnectorConfigError: bad settings, or an environment variable they name is unset.
        """
        parsed = validate_settings(cls.SETTINGS, system, settings)
        where = f"systems.{system}.settings"
        base_url = resolve_origin(where, parsed.base_url, parsed.base_url_env, cls.DEFAULT_BASE_URL)
        return cls(system, parsed, base_url=base_url, credentials=cls.read_credentials(where, parsed))

    @classmethod
    def read_credentials(cls, where: str, settings: Any) -> Any:
        """The secrets the settings name, from the environment (default: the token `token_env` names)."""
        return env_secret(f"{where}.token_env", settings.token_env)

    def _account(self) -> tuple[str | None, ...]:
        """What identifies the vendor account, for the rate budget's name (hashed, never written)."""
        return (self._base_url, self._credentials if isinstance(self._credentials, str) else None)

    # --- the connector's face ---

    @property
    def info(self) -> ConnectorInfo:
        return self._info

    @property
    def stats(self) -> dict[str, float]:
        """Counters since the connector was built (calls, retries, throttling answers, waits...)."""
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, key: str, amount: float = 1) -> None:
        with self._stats_lock:
            self._stats[key] += amount  # type: ignore[assignment]

    def _calls(self) -> int:
        with self._stats_lock:
            return int(self._stats["calls"])

    def _calls_in_thread(self) -> int:
        """Calls made so far by the calling thread: what a receipt counts when several threads use
        the connector at once (the retention purge's batches in flight)."""
        return int(getattr(self._thread_calls, "count", 0))

    def close(self) -> None:
        """Release the HTTP session's pooled connections."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- records and receipts ---

    def _problem_with(self, ref: RecordRef) -> str | None:
        """Why `ref` is not one of this system's records (another system's, another object), or None."""
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        if ref.object not in self.OBJECTS:
            known = ", ".join(map(repr, self.OBJECTS))
            return f"unknown object {ref.object!r} in systems.{self._system} (only {known})"
        return None

    def _check_refs(self, refs: Sequence[RecordRef]) -> None:
        """Refuse the whole call up front when a ref is not this system's (`_problem_with`)."""
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")

    def _triage(self, decisions: Sequence[ErasureDecision]) -> tuple[dict[str, RecordOutcome], list[ErasureDecision]]:
        """One decision per record: those refused (`_problem_with`, conflicting) and RETAIN answered at once,
        as outcomes by ref key; the rest returned to be carried out."""
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
        return outcomes, todo

    def _receipt(self, decisions: Sequence[ErasureDecision], outcomes: Mapping[str, RecordOutcome],
                 calls_before: int, vendor_receipt_id: str | None = None) -> Receipt:
        """The receipt: outcomes in the decisions' order, the calls made since `calls_before`."""
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(system=self._system, outcomes=ordered,
                       vendor_receipt_id=vendor_receipt_id or receipt_id(self.KIND, ordered),
                       api_calls=self._calls() - calls_before)

    # --- calling the vendor ---

    def request(self, operation: str, what: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                json: Any = None, headers: Mapping[str, str] | None = None, missing_ok: bool = False) -> Any:
        """One call with plain `requests`: the decoded JSON answer (None for an empty body, or for a 404 when
        `missing_ok`). Redirects are not followed: credentials go to the configured origin only.

        Raises:
            VendorApiError: after the retries, for a failure (`ERROR`, message from `_failure`).
        """
        url = self._root + path

        def send() -> Any:
            response = self._session.request(method, url, params=params, json=json, headers=headers,
                                             timeout=self._timeout, allow_redirects=False)
            if response.status_code == 404 and missing_ok:
                return None
            if not 200 <= response.status_code < 300:
                raise self.failure_of(response)
            return self.decode(response)

        return self._call(operation, what, send)

    def _call(self, operation: str, what: str, send: Callable[[], T]) -> T:
        """`send` paced and retried; once more after `reauthenticate` on a 401; failures as `VendorApiError`.

        Our own `ConnectorError`s (a token exchange that failed, say) pass through as they are.
        """
        failure: ConnectorError | None = None
        for attempt in (1, 2):
            try:
                return self._retry(lambda: self._attempt(send))()  # type: ignore[no-any-return]
            except ConnectorError:
                raise
            except HttpFailure as exc:
                if exc.status == 401 and attempt == 1 and self.reauthenticate(exc):
                    self._count("relogins")
                    continue
                failure = self._failure(operation, what, exc)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a PII-free VendorApiError
                failure = self._failure(operation, what, exc)
            break
        assert failure is not None
        raise failure  # outside the except blocks: neither the cause nor the context is kept

    def _attempt(self, send: Callable[[], T]) -> T:
        failure: HttpFailure | None = None
        with self.in_flight():
            waited = self._pause.wait() + self._limiter.acquire()
            self._count("calls")
            self._thread_calls.count = getattr(self._thread_calls, "count", 0) + 1
            if waited:
                self._count("waited_seconds", waited)
            try:
                return send()
            except (HttpFailure, ConnectorError, UnexpectedAnswer):
                raise
            except Exception as exc:
                failure = self.translate(exc)
                if failure is None:
                    raise
        raise failure  # the SDK's exception (with its URL or message) is not chained

    # --- hooks ---

    def failure_of(self, response: requests.Response) -> HttpFailure:
        """An error answer as an `HttpFailure`: status, the body's token-like ``code``, Retry-After."""
        body = json_or_none(response)
        code = body.get("code") if isinstance(body, dict) else None
        return HttpFailure(response.status_code, code=code if isinstance(code, str) and TOKEN_CODE.match(code) else None,
                           retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def decode(self, response: requests.Response) -> Any:
        """A 2xx answer's JSON (None for an empty body)."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise UnexpectedAnswer() from None

    def in_flight(self) -> AbstractContextManager[Any]:
        """Held around each attempt: a cap on concurrent calls where the vendor counts them (default: none)."""
        return nullcontext()

    def translate(self, exc: BaseException) -> HttpFailure | None:
        """An SDK's exception as an `HttpFailure` (so that it is sorted and retried like an answer), or None."""
        return None

    def reauthenticate(self, failure: HttpFailure) -> bool:
        """On a first 401: drop the cached login so the next attempt logs in afresh; False (the default)
        when there is no login to renew."""
        return False

    def classify(self, failure: HttpFailure) -> Verdict:
        """Whether a failure is worth another attempt, stops everything, or fails only its own call."""
        if failure.fatal or failure.status in self.FATAL_STATUSES or failure.code in self.FATAL_CODES:
            return Verdict.FATAL
        if failure.status == 429 or failure.status in self.RETRY_STATUSES:
            return Verdict.RETRY
        return Verdict.PLAIN

    def wait_asked(self, exc: BaseException) -> float | None:
        """The wait the vendor asked for before retrying `exc`, if it did (a 429's Retry-After)."""
        return exc.retry_after if isinstance(exc, HttpFailure) and exc.status == 429 else None

    def explain(self, failure: HttpFailure) -> str | None:
        """What went wrong, for a vendor case `HINTS` cannot express; None for the usual words."""
        return None

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, HttpFailure):
            return self.classify(exc) is Verdict.RETRY
        return isinstance(exc, self.NETWORK_ERRORS)

    def _on_retry(self, exc: BaseException, wait: float) -> None:
        """Count a retry by kind; a vendor's wait of a whole window or more holds the shared limiter."""
        self._count("retries")
        self._count("waited_seconds", wait)
        if isinstance(exc, HttpFailure) and exc.status == 429:
            self._count("throttled")
            if self.PAUSE_ON_THROTTLE:
                self._pause.extend(wait)
            if wait >= self._limiter.period:  # shorter, hold_off could let a burst through
                self._limiter.hold_off(wait)
        elif isinstance(exc, HttpFailure):
            self._count("server_errors")
        else:
            self._count("network_errors")

    # --- messages ---

    def _failure(self, operation: str, what: str, exc: BaseException) -> VendorApiError:
        """A failure as the `VendorApiError` raised: where, what the vendor said (status, code), and a hint."""
        where = f"systems.{self._system}: {operation} of {what!r} failed"
        attempts = self._settings.retry_attempts
        if isinstance(exc, UnexpectedAnswer):
            return self._bad_answer(operation, what)
        if not isinstance(exc, HttpFailure):
            if isinstance(exc, self.NETWORK_ERRORS):
                return self.ERROR(f"{where}: {self.VENDOR} unreachable ({type(exc).__name__}) after {attempts} "
                                  "attempts")
            return self.ERROR(f"{where}: unexpected {type(exc).__name__} calling {self.VENDOR}")
        said = exc.said
        template = self.HINTS.get(exc.code or "") or self.HINTS.get(exc.status)
        hint = self.explain(exc) or (template.format(vendor=self.VENDOR, said=said, attempts=attempts,
                                                     system=self._system, what=what, s=self._settings)
                                     if template else _default_hint(self.VENDOR, exc.status, said, attempts))
        return self.ERROR(f"{where}: {hint}", status=exc.status, code=exc.code,
                          fatal=self.classify(exc) is Verdict.FATAL)

    def _bad_answer(self, operation: str, what: str) -> VendorApiError:
        return self.ERROR(f"systems.{self._system}: {operation} of {what!r} failed: {self.VENDOR}'s answer was not "
                          f"the JSON expected (is base_url a {self.VENDOR} API?)")


def _default_hint(vendor: str, status: int, said: str, attempts: int) -> str:
    if status == 401:
        return f"{vendor} refused the credentials ({said}); check the secrets the settings name"
    if status == 403:
        return f"{vendor} refused this call ({said}): the credentials lack a permission it needs"
    if status == 404:
        return f"{vendor} has no such record ({said})"
    if status == 429:
        return f"still throttled by {vendor} ({said}) after {attempts} attempts"
    if status >= 500:
        return f"{vendor} server error {said} after {attempts} attempts"
    return f"{vendor} answered {said}"


def json_or_none(response: requests.Response) -> Any:
    """An answer's JSON body, or None (empty, or not JSON: an error page, a plain-text 429)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
