"""One Salesforce org on the HTTP base: login, an SDK call paced and retried, queries, describes.

Every simple-salesforce call goes through `HttpConnector._call`: `translate` turns the SDK's exceptions into
`HttpFailure`s (status and Salesforce's errorCode only: the SDK's text holds the request URL, and a SOQL URL
the subject's address), `classify` retries throttling (403 REQUEST_LIMIT_EXCEEDED), 5xx answers and a login
server's outage, and `reauthenticate` drops an expired session once (Bulk API 2.0 calls do not log in again by
themselves). `SalesforceSession` takes the rate-limit slots, one per HTTP call.

Independent queries go out together through the Composite resource (`_first_pages`): up to five queries per
call, and the whole call counts once against the org's daily API quota (Composite Batch would save the round
trips but not the quota: Salesforce counts each of its subrequests). A subrequest's error fails the call as
the same query sent alone would have failed: same status and errorCode, same retries and re-login.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Self, TypeVar
from urllib.parse import urlencode, urlsplit

import requests
from simple_salesforce import Salesforce, SalesforceAuthenticationFailed, SalesforceError, SalesforceResourceNotFound
from simple_salesforce.exceptions import SalesforceOperationError

from connectors.base import ConnectorConfigError, ConnectorError, chunks, topological_order, validate_settings
from connectors.http import HttpConnector, HttpFailure, VendorApiError, Verdict
from connectors.pacing import Limiter, budget_key
from connectors.salesforce.schema import DESCRIBES, Schema
from connectors.salesforce.session import (
    SESSIONS,
    Credentials,
    OutsideSandbox,
    SalesforceSession,
    credentials_of,
    origin_of,
)
from connectors.salesforce.settings import ObjectSpec, SalesforceSettings, discovery_parents, erase_after
from dsr.contract import RecordRef

T = TypeVar("T")

MAX_BATCH = 200  # ids per sObject Collections call (Salesforce's limit)
COMPOSITE_QUERIES = 5  # query subrequests per Composite call (Salesforce's limit; 25 subrequests in all)
# `purge` calls the retention purge may have in flight at once: one call at a time cannot use the
# rate limit (25/s) at any latency past 40 ms; every call still waits for the one shared limiter.
PURGE_WORKERS = 4
THROTTLED = "REQUEST_LIMIT_EXCEEDED"  # Salesforce's 403 for a throttled call, and for a day's quota used up
_ID18 = re.compile(r"^[A-Za-z0-9]{18}$")
_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: What a failure that is not an answer was, in the error message (first match).
_NOT_ANSWERED: tuple[tuple[type[BaseException], str], ...] = (
    (requests.Timeout, "timed out"), (OutsideSandbox, "refused: a host outside endpoint_override"),
    (requests.ConnectionError, "connection failed"), (SalesforceOperationError, "Bulk API job failed"))


class LoginFailed(HttpFailure):
    """The login was refused (`code`: invalid_client, invalid_grant...) or met an outage (a 5xx `status`)."""


class SubrequestFailed(HttpFailure):
    """A Composite subrequest's error answer; `obj` is the object its query was about (the error names it)."""

    def __init__(self, obj: str, status: int, *, code: str | None = None, detail: str | None = None) -> None:
        super().__init__(status, code=code, detail=detail)
        self.obj = obj


class _PacedBySession:
    """The org's limiter as `HttpConnector._attempt` sees it: no slot is taken per SDK call there, because
    `SalesforceSession` takes one per HTTP call; a throttled org's hold-off still reaches the real one."""

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter
        self.calls, self.period = limiter.calls, limiter.period

    def acquire(self) -> float:
        return 0.0

    @contextmanager
    def call(self) -> Iterator[float]:
        yield 0.0

    def hold_off(self, seconds: float) -> None:
        self._limiter.hold_off(seconds)


class SalesforceOrg(HttpConnector):
    """Login, calls, queries, describes and record checks of one Salesforce org; the jobs build on it."""

    KIND, VERSION, VENDOR = "salesforce", "salesforce/1", "Salesforce"
    SETTINGS = SalesforceSettings
    MAX_BATCH = MAX_BATCH
    RETRY_STATUSES = frozenset(range(500, 600))
    _settings: SalesforceSettings
    _credentials: Credentials
    _session: SalesforceSession

    @classmethod
    def create(cls, system: str, settings: Mapping[str, Any]) -> Self:
        """Build the connector for one system (the registry's entry point). It logs in on first use.

        Raises:
            ConnectorConfigError: bad settings, or a missing environment variable or key file.
        """
        parsed = validate_settings(SalesforceSettings, system, settings)
        where = f"systems.{system}.settings"
        instance = origin_of(where, "instance_url", parsed.instance_url, parsed.instance_url_env, https_only=True)
        override = origin_of(where, "endpoint_override", parsed.endpoint_override, parsed.endpoint_override_env)
        return cls(system, parsed, base_url=instance or "", credentials=credentials_of(f"{where}.auth", parsed.auth),
                   endpoint_override=override)

    def __init__(self, system: str, settings: SalesforceSettings, *, base_url: str, credentials: Credentials,
                 endpoint_override: str | None = None) -> None:
        """`base_url`: the org's instance URL, or "" to take the instance the login answers for."""
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        self._budget = budget_key(self.KIND, *self._account())
        org_limiter, self._limiter = self._limiter, _PacedBySession(self._limiter)
        headers = self._session.headers
        self._session.close()
        self._session = SalesforceSession(limiter=org_limiter, timeout=self._timeout,
                                          slowdown_at=settings.quota_slowdown_at, override=endpoint_override,
                                          instance_url=base_url or None, count=self._count)
        self._session.headers.update(headers)
        self._sf: Salesforce | None = None
        self._login_lock = threading.Lock()
        self._schemas: dict[str, Schema | None] = {}
        self._anonymise_plans: dict[str, dict[str, Any] | str] = {}
        self._discover_order, _ = topological_order(settings.objects, discovery_parents(settings.objects))
        erase_order, cycle = topological_order(settings.objects, erase_after(settings.objects))
        if cycle:  # links in a loop: fall back to children-first by discovery order
            erase_order = list(reversed(self._discover_order))
        self._erase_rank = {name: rank for rank, name in enumerate(erase_order)}
        self._reverse_links = {
            name: sorted({m.field for spec in settings.objects.values() for m in spec.match
                          if m.reverse and m.parent == name})
            for name in settings.objects
        }
        self._info = replace(self._info, objects=tuple(settings.objects))
        self.purge_workers = PURGE_WORKERS  # `purge` is thread-safe: each receipt counts its own calls

    def _account(self) -> tuple[str | None, ...]:
        # One budget per org and connected app, whichever request or worker is calling.
        host = urlsplit(self._base_url).netloc.lower() if self._base_url else self._settings.auth.login_domain
        return (host, self._credentials.client_id, self._credentials.username)

    @property
    def stats(self) -> dict[str, float]:
        """Counters since the connector was built: HTTP calls, logins, throttles, retries, quota use."""
        counters = super().stats
        # What the org counts is HTTP calls (a Bulk API job is several, a login one), not SDK calls.
        counters["calls"] = counters.get("http_calls", 0)
        usage = self._session.usage
        if usage is not None:
            counters["api_usage"], counters["api_quota"] = usage
        return counters

    def _calls(self) -> int:
        # Per thread: `erase`/`purge` may run in several threads at once (the retention purge), and
        # each receipt counts its own calls only.
        return self._session.calls_in_thread()

    # --- login ---

    def _client(self) -> Salesforce:
        with self._login_lock:
            if self._sf is None:
                self._sf = self._login()
            return self._sf

    def _login(self) -> Salesforce:
        """A client on the org's session: the one this process already holds for the same org and
        connected app (one login serves every request; Salesforce limits logins per user and hour),
        else a new login."""
        cached = SESSIONS.get(self._budget)
        if cached is not None:
            session_id, instance = cached
            return Salesforce(session_id=session_id, instance=instance, session=self._session,
                              version=self._settings.api_version)
        client = self._new_login()
        SESSIONS.put(self._budget, (client.session_id, client.sf_instance))
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
        client = Salesforce(**kwargs)  # logs in now
        instance_host = urlsplit(self._base_url).netloc.lower()
        if instance_host and client.sf_instance.lower() != instance_host:
            # Never erase in an org other than the one the data map names (a sandbox vs production mix-up).
            raise ConnectorConfigError(
                f"systems.{self._system}.settings.instance_url: the login answered for another instance "
                f"({client.sf_instance})"
            )
        return client

    # --- the base's hooks ---

    def translate(self, exc: BaseException) -> HttpFailure | None:
        """simple-salesforce's exceptions as failures: status and errorCode, never the URL or message."""
        if isinstance(exc, SalesforceAuthenticationFailed):
            return LoginFailed(exc.code if isinstance(exc.code, int) else exc.status, code=safe_code(exc.code))
        if not isinstance(exc, SalesforceError):
            return None
        code, detail = _error_fields(exc.content)
        return HttpFailure(exc.status, code=code, detail=detail)

    def classify(self, failure: HttpFailure) -> Verdict:
        if isinstance(failure, LoginFailed):  # an outage page from the login server is worth another try
            return Verdict.RETRY if failure.status >= 500 else Verdict.FATAL
        return Verdict.RETRY if failure.code == THROTTLED else super().classify(failure)

    def reauthenticate(self, failure: HttpFailure) -> bool:
        if isinstance(failure, LoginFailed):
            return False
        with self._login_lock:
            if self._sf is not None:
                SESSIONS.discard(self._budget, self._sf.session_id)
            self._sf = None
        return True

    def _on_retry(self, exc: BaseException, wait: float) -> None:
        """Count the retry and its wait (`SalesforceSession` counts the throttling and server-error answers,
        Bulk API ones included); a throttled org holds every caller of its budget off."""
        self._count("retries")
        self._count("waited_seconds", wait)
        if isinstance(exc, HttpFailure) and exc.code == THROTTLED:
            self._limiter.hold_off(wait)

    def _failure(self, operation: str, what: str, exc: BaseException) -> VendorApiError:
        """``systems.<system>: <operation> of object '<what>' failed (HTTP <status>, <code>...)``: no vendor text."""
        if isinstance(exc, SubrequestFailed):
            what = exc.obj
        where = f"systems.{self._system}: {operation}" + (f" of object {what!r}" if what else "")
        if isinstance(exc, HttpFailure):
            verdict, status, code = self.classify(exc), exc.status, exc.code
            if isinstance(exc, LoginFailed):
                detail = f"login failed ({code})"
            else:
                detail = f"HTTP {status}" + (f", {code}" if code else "")
            if code == THROTTLED:
                detail += ": the org's daily API quota is used up" if exc.detail == "quota" else ": throttled"
            retried = verdict is Verdict.RETRY
        else:
            verdict, status, code = Verdict.PLAIN, None, None
            detail = next((words for kind, words in _NOT_ANSWERED if isinstance(exc, kind)), type(exc).__name__)
            retried = isinstance(exc, self.NETWORK_ERRORS)
        if retried and self._settings.retry_attempts > 1:
            detail += f" after {self._settings.retry_attempts} attempts"
        return self.ERROR(f"{where} failed ({detail})", status=status, code=code, fatal=verdict is Verdict.FATAL)

    # --- calls ---

    def _first_page(self, operation: str, obj: str, soql: str) -> Any:
        return self._call(operation, obj, lambda: self._client().query(soql))

    def _query(self, soql: str, operation: str, obj: str, *, prefetch: bool = False) -> Iterator[Mapping[str, Any]]:
        """Every record of a SOQL query, following `nextRecordsUrl` to the end (each page retried).

        With `prefetch` (long listings: the retention purge), the next page is fetched in a second
        thread while the caller works through this one (still one page after the other, paced).
        """
        yield from self._pages(self._first_page(operation, obj, soql), operation, obj, prefetch=prefetch)

    def _pages(self, page: Any, operation: str, obj: str, *, prefetch: bool = False) -> Iterator[Mapping[str, Any]]:
        """The records of a query's first page and of every page after it (`nextRecordsUrl`)."""
        if not prefetch:
            while True:
                yield from page["records"]
                if page.get("done", True):
                    return
                page = self._next_page(operation, obj, page["nextRecordsUrl"])
        with ThreadPoolExecutor(1, thread_name_prefix="salesforce-prefetch") as pool:
            while True:
                following = None
                if not page.get("done", True):
                    following = pool.submit(self._next_page, operation, obj, page["nextRecordsUrl"])
                yield from page["records"]
                if following is None:
                    return
                page = following.result()

    def _first_pages(self, operation: str, queries: Sequence[tuple[str, str]]) -> list[Any]:
        """The first page of each independent (object, SOQL) query, in order, up to `COMPOSITE_QUERIES` per
        Composite call (a lone query goes as itself: the same one unit of quota, a plainer answer)."""
        pages: list[Any] = []
        for group in chunks(list(queries), COMPOSITE_QUERIES):
            if len(group) == 1:
                pages.append(self._first_page(operation, *group[0]))
            else:
                pages.extend(self._composite_queries(operation, group))
        return pages

    def _composite_queries(self, operation: str, group: Sequence[tuple[str, str]]) -> list[Any]:
        base = f"/services/data/v{self._settings.api_version}/query/?"
        body = {"allOrNone": False, "compositeRequest": [
            {"method": "GET", "url": base + urlencode({"q": soql}), "referenceId": f"q{index}"}
            for index, (_, soql) in enumerate(group)]}

        def send() -> list[Any]:
            answer = self._client().restful("composite", method="POST", json=body)
            results = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
            by_reference = {r.get("referenceId"): r for r in (results if isinstance(results, list) else ())
                            if isinstance(r, Mapping)}
            return [self._query_result(operation, obj, by_reference.get(f"q{index}"))
                    for index, (obj, _) in enumerate(group)]

        return self._call(operation, group[0][0], send)

    def _query_result(self, operation: str, obj: str, result: Any) -> Any:
        """A query subrequest's page, or the failure the same query sent alone would have met."""
        status = result.get("httpStatusCode") if isinstance(result, Mapping) else None
        page = result.get("body") if isinstance(result, Mapping) else None
        if isinstance(status, int) and status >= 300:
            raise self._subrequest_failed(obj, status, page)
        if isinstance(page, Mapping) and page.get("records") is None and isinstance(page.get("totalSize"), int):
            page = {**page, "records": []}  # a COUNT() query's answer may carry records: null
        if not isinstance(status, int) or not isinstance(page, Mapping) or not isinstance(page.get("records"), list):
            raise ConnectorError(f"systems.{self._system}: {operation} of object {obj!r} failed "
                                 "(Salesforce answered an unexpected shape)")
        return page

    def _subrequest_failed(self, obj: str, status: int, content: Any) -> SubrequestFailed:
        """A failed subrequest as the same query alone would have failed (and counted as `SalesforceSession`
        counts a direct call's answer)."""
        code, detail = _error_fields(content)
        if status == 403 and code == THROTTLED:
            self._count("throttled")
        elif status == 401:
            self._count("expired_sessions")
        elif status >= 500:
            self._count("server_errors")
        return SubrequestFailed(obj, status, code=code, detail=detail)

    def _next_page(self, operation: str, obj: str, url: str) -> Any:
        return self._call(operation, obj, lambda: self._client().query_more(url, identifier_is_url=True))

    def _rest(self, operation: str, obj: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """One REST call (`Salesforce.restful`); None for a 404 when `missing_ok`."""
        def send() -> Any:
            try:
                return self._client().restful(path, **kwargs)
            except SalesforceResourceNotFound:
                if missing_ok:
                    return None
                raise

        return self._call(operation, obj, send)

    def _paired(self, items: Sequence[T], results: Any, operation: str) -> list[tuple[T, Any]]:
        """Each item with its result of an sObject Collections call (in request order; a failed entry carries
        no id, so they are matched by position)."""
        if not isinstance(results, list) or len(results) != len(items):
            raise ConnectorError(f"systems.{self._system}: {operation} failed "
                                 "(Salesforce answered an unexpected shape)")
        return list(zip(items, results, strict=True))

    # --- schema ---

    def _schema(self, name: str) -> Schema | None:
        """The object's fields (described once), or None for an optional object the org lacks."""
        if name in self._schemas:
            return self._schemas[name]
        spec = self._settings.objects[name]
        # The org's budget, and where an endpoint override sends its calls (sandboxes share one org name).
        org = "|".join([self._budget, *self._session.sandbox_netlocs])
        cached, answer = DESCRIBES.lookup((org, name))
        if not cached:
            answer = self._rest("describe", name, f"sobjects/{name}/describe/", missing_ok=True)
            # Only the field list is kept: a describe answer is large and most of it unused.
            answer = None if answer is None else {"fields": list(answer.get("fields", []))}
            DESCRIBES.put((org, name), answer)
        where = f"systems.{self._system}.settings.objects.{name}"
        if answer is None:
            if not spec.optional:
                raise ConnectorConfigError(
                    f"{where}: the org has no object {name!r} (mark it optional: true if it may be absent)"
                )
            self._schemas[name] = None
            return None
        schema = Schema.of(answer)
        self._check_fields(name, spec, schema, where)
        self._schemas[name] = schema
        return schema

    def _check_fields(self, name: str, spec: ObjectSpec, schema: Schema, where: str) -> None:
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

    # --- records ---

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        if ref.object not in self._settings.objects:
            return f"unknown object {ref.object!r} in systems.{self._system}"
        if not _ID18.match(ref.id):
            return f"id is not an 18-character Salesforce id (object {ref.object!r})"
        return None

    def _group(self, refs: Sequence[RecordRef]) -> dict[str, list[RecordRef]]:
        """Refs by object, objects in first-seen order; a ref not of this org refused up front."""
        self._check_refs(refs)
        return {name: [r for r in refs if r.object == name] for name in dict.fromkeys(r.object for r in refs)}


def _error_fields(content: Any) -> tuple[str | None, str | None]:
    """An error answer's code (its errorCode, made safe) and detail ("quota": the daily quota is used up)."""
    code, message = _error_of(content)
    quota = code == THROTTLED and isinstance(message, str) and message.startswith("TotalRequests")
    return (safe_code(code) if code else None), ("quota" if quota else None)


def _error_of(content: Any) -> tuple[str | None, str | None]:
    """The first (errorCode, message) of Salesforce's error array, if the answer had one."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        code, message = content[0].get("errorCode"), content[0].get("message")
        return (str(code) if code else None), (str(message) if message else None)
    return None, None


def safe_code(code: Any) -> str:
    """A Salesforce code as a message may repeat it (a token), else ``UNKNOWN``."""
    text = str(code)
    return text if _CODE.match(text) else "UNKNOWN"


def result_code(result: Any) -> str | None:
    """None for a successful SaveResult/DeleteResult, else its first error's statusCode."""
    if isinstance(result, Mapping) and result.get("success"):
        return None
    errors = result.get("errors") if isinstance(result, Mapping) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return safe_code(errors[0].get("statusCode"))
    return "UNKNOWN"
