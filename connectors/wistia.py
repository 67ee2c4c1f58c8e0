"""Wistia (video analytics) through its Stats API with plain `requests`: visitors and their viewing events.

Wire formats: vendor-apis.md section 7 (Wistia's OpenAPI 2026-01). Every call goes to the modern API,
``<base_url>/modern/stats/...`` with ``X-Wistia-Api-Version`` (`api_version`, default ``2026-01``) and
``Authorization: Bearer <API token>`` (the token needs the "Read detailed stats" permission).

What it does, per operation of the contract (DESIGN.md):

- `discover`: ``GET /stats/visitors?search=<address>&filter=has_email`` paged with ``page``/``per_page``
  (bare JSON arrays: a short page is the last). Wistia's search is fuzzy (name or e-mail, substring), so
  every hit is compared again, trimmed and lower-cased, with the subject's address, and only an exact
  match is kept: a near match is never returned, exported or named for deletion. Then each visitor's
  events, ``GET /stats/events?visitor_key=...&start_date=...&end_date=...``, paged to the end (an event
  whose ``visitor_key`` is not the visitor's is dropped too). Refs: objects ``visitor`` and ``event``, by
  ``visitor_key`` and ``event_key``.
- `export`: each visitor in full (``GET /stats/visitors/{key}``), then its events (paged list, so a
  visitor with 2,000 events costs 20 calls, not 2,000); an event ref whose visitor is not among the refs
  is read alone (``GET /stats/events/{key}``). Streamed; records gone since discovery (404) are skipped.
  Nested objects are flattened to dotted field names (``visitor_identity.email``,
  ``user_agent_details.browser``) so that the subject's CSV shows values.
- `erase`: **Wistia has no delete endpoint** (its Stats API is GET-only). The connector declares
  ``manual_steps={"erase"}``: the runner opens a manual task with `manual_instructions` (a deletion
  request to Wistia's support, naming visitor and event keys only) and never calls `erase`. Called anyway,
  it changes nothing and answers every DELETE/ANONYMISE as not done, so the misuse shows. Likewise
  ``rectify``, ``suppress`` and ``restore`` (the other rights): Wistia's API cannot change a visitor or stop
  its marketing use, so each is a manual task whose `manual_instructions` name visitor keys only.
- `verify_erased`: discovery again (after the person's work, what still matches).
- `expired`: visitors whose ``last_active_at`` (else ``created_at``) is before the cutoff (all visitors,
  paged), and events received before it (``end_date`` = the cutoff's day, checked again client-side); each
  ref's `anchor_date` is that day. Wistia itself drops events older than 2 years.
- `purge`: nothing to call either (no delete endpoint, events included): every ref is answered not done,
  to be routed to the same manual request (`manual_instructions("purge", refs)`).

Pacing: a client-side rolling window (`rate_limit`, Wistia's 600 per minute per account by default).
Retries (tenacity, `connectors.pacing.vendor_retry`): 429 (text/plain, waiting ``Retry-After`` and holding
every caller off), 5xx, connection resets and timeouts. 401/403/404/422 are not retried.

Credentials: the API token, read from the environment variable named by `token_env`. A 401 is a clear
`ConnectorError` naming Wistia's code (``unauthorized_credentials``, ``unauthorized_scope``,
``account_inactive``) and the variable, never the token.

Personal data never reaches an exception: the search URL holds the address, so no `requests` exception
text or URL is ever used; errors name the system, operation, object and Wistia's status and code only,
and are raised outside the ``except`` block so that nothing is chained. (urllib3 logs request URLs at
DEBUG level: keep ``urllib3`` logging at INFO or above in production.)
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
import requests.auth
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import (
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    HttpConnector,
    RateLimitSpec,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    Subject,
    env_secret,
    json_friendly,
    origin_setting_problem,
    outcome_for,
    receipt_id,
    resolve_origin,
    subject_email,
    unique_decisions,
    validate_settings,
)
from connectors.pacing import LATENCY_MARGIN, Pause, budget_key, limiter_for, parse_retry_after, vendor_retry

KIND = "wistia"
VERSION = "wistia/1"
DEFAULT_BASE_URL = "https://api.wistia.com"
API_PATH = "/modern"
PAGE_MAX = 100  # Wistia caps per_page at 100
OBJECTS = ("visitor", "event")
# Wistia's API reads only: deleting, correcting a visitor's identity and stopping (or resuming) its use for
# marketing are requests to Wistia's support, done by a person (dsr.contract: the runner opens a task).
MANUAL_STEPS = frozenset({"erase", "rectify", "suppress", "restore"})
_RIGHTS_STEPS: dict[str, tuple[str, str, str, str]] = {
    "rectify": (
        "correct the name or e-mail address recorded for a person",
        "Wistia's API cannot change a visitor's identity (it comes from email capture forms and the embed "
        "code's email option), so Wistia corrects it on request.",
        "rectification, GDPR Art. 16: correct the visitor identity fields the request names",
        "Check the corrected visitors in Wistia's Stats (Visitors) once Wistia confirms.",
    ),
    "suppress": (
        "stop using a person's viewing data for marketing (restriction, objection, withdrawn consent or "
        "opt-out of sale/sharing)",
        "Wistia's API has no opt-out for a visitor, so Wistia restricts it on request.",
        "restriction of processing, GDPR Art. 18/21, CCPA opt-out: keep the data but stop using it for "
        "marketing, lead scoring and integrations",
        "In Wistia's integrations (CRM and e-mail marketing syncs), make sure these visitors' captured leads are "
        "no longer sent on; the other systems of this request stop their own marketing.",
    ),
    "restore": (
        "resume the marketing use the restriction stopped",
        "The restriction has been lifted (GDPR Art. 18(3)); Wistia resumes on request.",
        "restriction lifted: resume the processing restricted earlier for these visitors",
        "Re-enable the integration sync for these visitors if it was turned off for the restriction.",
    ),
}
NO_DELETE_API = "Wistia has no delete API: done by hand (manual task)"

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_WIRE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # visitor and event keys, as they go into URL paths
_AUTH_CODE = re.compile(r"^[a-z_]{1,40}$")
_DEFAULT_CATEGORIES: dict[str, tuple[DataCategory, ...]] = {
    # name, e-mail, organisation and title; browser and platform
    "visitor": (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.TECHNICAL),
    # videos watched (usage); IP, place, browser (technical); the viewer's e-mail and gate form (contact)
    "event": (DataCategory.USAGE, DataCategory.TECHNICAL, DataCategory.CONTACT),
}


# --- settings ---------------------------------------------------------------------------------------
# Validators raise ValueError("relative.path: message"); `describe_validation_error` puts the system's
# config path in front, so every error names the field at fault without echoing its value.


class WistiaSettings(BaseModel):
    """The `settings:` block of a `wistia` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(default=None, min_length=1)
    base_url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    token_env: str = Field(pattern=_ENV_VAR_NAME)
    api_version: str = Field(default="2026-01", pattern=r"^\d{4}-\d{2}$")
    account: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")  # <account>.wistia.com
    rate_limit: RateLimitSpec = RateLimitSpec(calls=600, period_seconds=60)
    page_size: int = Field(default=PAGE_MAX, ge=1, le=PAGE_MAX)
    event_history_days: int = Field(default=731, ge=1, le=3650)  # how far back events are asked for
    categories: dict[str, tuple[DataCategory, ...]] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in ("token", "api_token", "api_password", "access_token", "api_key"):
                if key in data:
                    raise ValueError(f"{key}: never put a token in systems.yaml; name its environment "
                                     "variable with token_env")
        return data

    @model_validator(mode="after")
    def _check(self) -> WistiaSettings:
        problem = origin_setting_problem(self.base_url, self.base_url_env)
        if problem:
            raise ValueError(problem)
        for name, cats in self.categories.items():
            if name not in OBJECTS:
                raise ValueError(f"categories.{name}: not an object of this system (visitor or event)")
            if not cats:
                raise ValueError(f"categories.{name}: name at least one data category")
        return self

    def categories_of(self, obj: str) -> tuple[DataCategory, ...]:
        return self.categories.get(obj) or _DEFAULT_CATEGORIES[obj]


def parse_settings(system: str, settings: Mapping[str, Any]) -> WistiaSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(WistiaSettings, system, settings)


# --- construction -----------------------------------------------------------------------------------


def create(system: str, settings: Mapping[str, Any]) -> WistiaConnector:
    """Build the connector for one system (the registry's entry point). Makes no call to Wistia.

    Raises:
        ConnectorConfigError: bad settings, or an environment variable they name is unset.
    """
    parsed = parse_settings(system, settings)
    base_url = resolve_origin(f"systems.{system}.settings", parsed.base_url, parsed.base_url_env, DEFAULT_BASE_URL)
    token = env_secret(f"systems.{system}.settings.token_env", parsed.token_env)
    return WistiaConnector(system, parsed, base_url=base_url, token=token)


# --- errors -----------------------------------------------------------------------------------------


class WistiaApiError(ConnectorError):
    """Wistia answered with an error status; the message names status and code only."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _Status(Exception):
    """A non-2xx answer, as the retry policy sees it (never carries the URL or the body's text)."""

    def __init__(self, status: int, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(status)
        self.status, self.code, self.retry_after = status, code, retry_after


class _BadAnswer(Exception):
    """A 2xx answer that is not the JSON expected."""


_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                   requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _Status):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, _NETWORK_ERRORS)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, _Status) and exc.status == 429 else None


def _auth_code(response: requests.Response) -> str | None:
    """Wistia's 401 `code` (unauthorized_credentials...), if it is one; never free text."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) and _AUTH_CODE.match(code) else None


class _Bearer(requests.auth.AuthBase):
    """``Authorization: Bearer <API token>`` on every call (Wistia's documented scheme)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<token>)"


# --- the connector ----------------------------------------------------------------------------------


class WistiaConnector(HttpConnector):
    """Discover, export and re-query a subject's Wistia visitors and events; erasure is a manual task.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    `stats` counts calls, retries, throttling answers and waits, for benchmarks and tests.
    """

    def __init__(self, system: str, settings: WistiaSettings, *, base_url: str, token: str) -> None:
        self._system = system
        self._settings = settings
        self._root = base_url + API_PATH
        rl = settings.rate_limit
        self._limiter = limiter_for(budget_key("wistia", base_url, token), rl.calls,
                                    rl.period_seconds * (1 + LATENCY_MARGIN))
        self._pause = Pause()
        self._timeout = (settings.connect_timeout_seconds, settings.timeout_seconds)
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._session = requests.Session()
        self._session.auth = _Bearer(token)  # explicit auth: a ~/.netrc entry can never replace the token
        self._session.headers.update({
            "X-Wistia-Api-Version": settings.api_version,
            "Accept": "application/json",
            "User-Agent": f"dsr-pipeline {VERSION}",
        })
        self._info = ConnectorInfo(
            system=system, kind=KIND, version=VERSION, write_only=False, manual_steps=MANUAL_STEPS,
            rate_limit_per_second=rl.calls / rl.period_seconds, max_batch=1, objects=OBJECTS,
        )

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """The subject's visitors (exact e-mail match), then each one's events, newest first.

        Raises:
            ConnectorError: the subject has no e-mail, or Wistia failed (after retries).
        """
        email = subject_email(subject)
        keys = self._find_visitors(email)
        refs = [self._ref("visitor", key) for key in keys]
        seen: set[str] = set()
        for key in keys:
            for event in self._events_of("discover", key):
                event_key = event["event_key"]
                if event_key not in seen:
                    seen.add(event_key)
                    refs.append(self._ref("event", event_key))
        return refs

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every field of each record, streamed: visitors first, then events (paged per visitor).

        Records gone since discovery are skipped. Raises `ConnectorError` up front for refs of another
        system or object.
        """
        grouped = self._group(refs)
        visitors = grouped.get("visitor", [])
        wanted = {ref.id: ref for ref in grouped.get("event", [])}
        for ref in visitors:
            visitor = self._get("export", "visitor", f"/stats/visitors/{quote(ref.id, safe='')}", {},
                                missing_ok=True)
            if visitor is None:
                continue
            if not isinstance(visitor, dict):
                raise self._bad_answer("export", "visitor")
            yield Record(ref=ref, fields=_flatten(visitor))
        for visitor_ref in visitors:
            if not wanted:
                break
            for event in self._events_of("export", visitor_ref.id):
                found = wanted.pop(event["event_key"], None)
                if found is not None:
                    yield Record(ref=found, fields=_flatten(event))
        for ref in list(wanted.values()):  # events whose visitor is not among the refs: one call each
            event = self._get("export", "event", f"/stats/events/{quote(ref.id, safe='')}", {}, missing_ok=True)
            if event is None:
                continue
            if not isinstance(event, dict) or event.get("event_key") != ref.id:
                raise self._bad_answer("export", "event")
            yield Record(ref=ref, fields=_flatten(event))

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Changes nothing: Wistia has no delete API (the runner opens a manual task instead).

        RETAIN is done (nothing to do); every DELETE or ANONYMISE is answered not done with
        `NO_DELETE_API`, so a caller that forgot the manual step sees it in the receipt.
        """
        outcomes: dict[str, RecordOutcome] = {}
        for decision in unique_decisions(decisions, outcomes):
            problem = self._problem_with(decision.ref)
            if problem is not None:
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
            elif decision.action is ErasureAction.RETAIN:
                outcomes[decision.ref.key] = outcome_for(decision, done=True)
            else:
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=NO_DELETE_API)
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(system=self._system, outcomes=ordered, vendor_receipt_id=receipt_id("wistia", ordered),
                       api_calls=0)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: the visitors (and their events) that still carry the subject's address."""
        return self.discover(subject)

    def manual_instructions(self, step: str, refs: Sequence[RecordRef]) -> str:
        """What the person does in Wistia for `step` ("erase", or "purge" for retention), in words.

        Names records by visitor and event key only (never the address), as the text goes to the
        assignee and into the evidence.

        Raises:
            ConnectorError: `step` is not one this connector needs a person for.
        """
        if step in _RIGHTS_STEPS:
            return self._rights_instructions(step, refs)
        if step not in ("erase", "purge"):
            raise ConnectorError(f"systems.{self._system}: no manual {step!r} step (Wistia's API reads; "
                                 "deletion, correction and marketing restriction are done by hand)")
        mine = [r for r in refs if r.system == self._system]
        visitors = list(dict.fromkeys(r.id for r in mine if r.object == "visitor"))
        events = list(dict.fromkeys(r.id for r in mine if r.object == "event"))
        account = (f"the Wistia account {self._settings.account}.wistia.com" if self._settings.account
                   else f"the Wistia account whose API token is in {self._settings.token_env}")
        why = ("an erasure request" if step == "erase" else "the retention schedule (records past their period)")
        lines = [f"Wistia ({self._system}): delete {len(visitors)} visitor(s) and {len(events)} viewing event(s) "
                 f"for {why}.",
                 "Wistia's API has no delete endpoint, so this is done by Wistia on request.", ""]
        if not visitors and not events:
            lines += ["Nothing was found in Wistia for this request: there is nothing to delete. "
                      "Mark the task done; the pipeline re-queries Wistia to confirm."]
            return "\n".join(lines)
        lines.append(f"1. Ask Wistia to delete the records below from {account}: send a personal-data "
                     "deletion request (GDPR/CCPA) to Wistia support, as Wistia's privacy article describes, "
                     "quoting these keys.")
        if visitors:
            lines.append("   Visitors (delete each visitor profile and every event recorded for it):")
            lines += [f"   - visitor_key {key}" for key in visitors]
        if events:
            lines.append("   Events (each must be gone; they belong to the visitors above"
                         + (")" if visitors else ", whose profiles are to be kept)") + ":")
            lines += [f"   - event_key {key}" for key in events]
        lines += [
            "   The keys identify the records: do not put the person's name or e-mail address in the ticket.",
            "2. Keep Wistia's ticket number and wait for its confirmation that the deletion is done.",
            "3. Check, if you can: Wistia's API answers 404 for GET "
            f"{API_PATH}/stats/visitors/<visitor_key> for each visitor above (the pipeline checks again).",
            "4. Mark this task done with Wistia's ticket number in the note. The pipeline then re-queries "
            "Wistia by the person's address and closes the step only if nothing matches any more.",
            "To keep the person from being tracked again, Wistia's Player Privacy Mode (or W.consent(false) "
            "in the site's embed code) stops new visitor tracking.",
        ]
        return "\n".join(lines)

    def _rights_instructions(self, step: str, refs: Sequence[RecordRef]) -> str:
        """Rectify, suppress or restore: what the person asks of Wistia, naming visitor keys only."""
        visitors = list(dict.fromkeys(r.id for r in refs if r.system == self._system and r.object == "visitor"))
        account = (f"the Wistia account {self._settings.account}.wistia.com" if self._settings.account
                   else f"the Wistia account whose API token is in {self._settings.token_env}")
        what = _RIGHTS_STEPS[step]
        lines = [f"Wistia ({self._system}): {what[0]} for {len(visitors)} visitor(s).", what[1], ""]
        if not visitors:
            lines.append("Nothing was found in Wistia for this request: there is nothing to do. Mark the task done.")
            return "\n".join(lines)
        lines.append(f"1. Send Wistia support a data-subject request for {account} ({what[2]}), quoting these "
                     "keys:")
        lines += [f"   - visitor_key {key}" for key in visitors]
        lines += ["   The keys identify the records: do not put the person's name, e-mail address or the new "
                  "values in the ticket; Wistia's support asks for them through its own verified channel.",
                  f"2. {what[3]}",
                  "3. Mark this task done with Wistia's ticket number in the note."]
        return "\n".join(lines)

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Visitors last active before `cutoff`, and events received before it, for objects holding `category`.

        A date cutoff means midnight UTC. Refs carry the day of last activity (or receipt) as `anchor_date`.
        """
        wanted = DataCategory(category)
        moment = _moment_of(cutoff)
        if wanted in self._settings.categories_of("visitor"):
            for visitor in self._pages("expired", "visitor", "/stats/visitors", {}, key="visitor_key"):
                last = _parse_time(visitor.get("last_active_at")) or _parse_time(visitor.get("created_at"))
                if last is not None and last < moment:
                    yield replace(self._ref("visitor", visitor["visitor_key"]), anchor_date=last.date())
        if wanted in self._settings.categories_of("event"):
            params = {"start_date": self._history_start().isoformat(), "end_date": moment.date().isoformat()}
            for event in self._pages("expired", "event", "/stats/events", params, key="event_key"):
                received = _parse_time(event.get("received_at"))
                if received is not None and received < moment:
                    yield replace(self._ref("event", event["event_key"]), anchor_date=received.date())

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Changes nothing: no delete API for visitors or events. Every ref is answered not done; route them
        to a manual request (`manual_instructions("purge", refs)`)."""
        outcomes = tuple(
            RecordOutcome(ref=r, action=ErasureAction.DELETE, done=False,
                          error=self._problem_with(r) or f"{NO_DELETE_API}; Wistia drops events after 2 years itself")
            for r in refs)
        return Receipt(system=self._system, outcomes=outcomes, vendor_receipt_id=receipt_id("wistia", outcomes),
                       api_calls=0)

    # --- discovery ---

    def _find_visitors(self, email: str) -> list[str]:
        keys: list[str] = []
        params = {"search": email, "filter": "has_email"}
        for visitor in self._pages("discover", "visitor", "/stats/visitors", params, key="visitor_key"):
            stored = (visitor.get("visitor_identity") or {}).get("email")
            if isinstance(stored, str) and stored.strip().lower() == email:  # never trust a fuzzy search
                keys.append(visitor["visitor_key"])
        return sorted(set(keys))

    def _events_of(self, operation: str, visitor_key: str) -> Iterator[dict[str, Any]]:
        """The visitor's events over Wistia's retention, newest first; another visitor's never."""
        today = datetime.now(UTC).date()
        params = {"visitor_key": visitor_key, "start_date": self._history_start().isoformat(),
                  "end_date": (today + timedelta(days=1)).isoformat()}  # accounts ahead of UTC
        for event in self._pages(operation, "event", "/stats/events", params, key="event_key"):
            if event.get("visitor_key") != visitor_key:
                self._count("foreign_events")  # the filter was not applied: never pass them on
                continue
            yield event

    def _history_start(self) -> date:
        return datetime.now(UTC).date() - timedelta(days=self._settings.event_history_days)

    # --- calling Wistia ---

    def _pages(self, operation: str, obj: str, path: str, params: Mapping[str, str], *,
               key: str) -> Iterator[dict[str, Any]]:
        """Every item of a paged list (bare JSON arrays; a short page is the last), each with a valid `key`."""
        size = self._settings.page_size
        page = 1
        seen: set[str] = set()
        while True:
            items = self._get(operation, obj, path, {**params, "per_page": str(size), "page": str(page)})
            if not isinstance(items, list):
                raise self._bad_answer(operation, obj)
            fresh = 0
            for item in items:
                value = item.get(key) if isinstance(item, dict) else None
                if not isinstance(value, str) or not _WIRE_KEY.match(value):
                    raise self._bad_answer(operation, obj)
                if value in seen:
                    continue  # a record shifted across a page boundary: already yielded
                seen.add(value)
                fresh += 1
                yield item
            if len(items) < size:
                return
            if not fresh:
                raise WistiaApiError(f"systems.{self._system}: {operation} of {obj!r} failed: Wistia's paging "
                                     f"did not advance at page {page}")
            page += 1

    def _get(self, operation: str, obj: str, path: str, params: Mapping[str, str], *,
             missing_ok: bool = False) -> Any:
        """One GET: paced, retried, decoded; None for a 404 when `missing_ok`; errors as PII-free ConnectorErrors."""
        url = self._root + path

        @vendor_retry(retryable=_retryable, retry_after=_retry_after, attempts=self._settings.retry_attempts,
                      max_wait=self._settings.retry_max_wait, on_retry=self._on_retry)
        def attempt() -> Any:
            waited = self._pause.wait() + self._limiter.acquire()
            self._count("calls")
            if waited:
                self._count("waited_seconds", waited)
            response = self._session.get(url, params=params, timeout=self._timeout, allow_redirects=False)
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise _BadAnswer() from None
            if response.status_code == 404 and missing_ok:
                return None
            code = _auth_code(response) if response.status_code == 401 else None
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if response.status_code == 429 else None
            raise _Status(response.status_code, code=code, retry_after=retry_after)

        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a PII-free ConnectorError below
            error = self._wrap(operation, obj, exc)
        raise error  # outside the except block: the requests exception (URL with the address) is not chained

    def _on_retry(self, exc: BaseException, wait: float) -> None:
        self._count("retries")
        if isinstance(exc, _Status) and exc.status == 429:
            self._count("throttled")
            self._pause.extend(wait)  # every caller waits what Wistia asked, not only this one
            if wait >= self._limiter.period:  # shorter, hold_off could let a burst through
                self._limiter.hold_off(wait)
        elif isinstance(exc, _Status):
            self._count("server_errors")
        else:
            self._count("network_errors")
        self._count("waited_seconds", wait)

    def _wrap(self, operation: str, obj: str, exc: BaseException) -> ConnectorError:
        where = f"systems.{self._system}: {operation} of {obj!r}"
        attempts = self._settings.retry_attempts
        if isinstance(exc, _BadAnswer):
            return self._bad_answer(operation, obj)
        if not isinstance(exc, _Status):
            if isinstance(exc, _NETWORK_ERRORS):
                return WistiaApiError(f"{where} failed: Wistia unreachable ({type(exc).__name__}), "
                                      f"after {attempts} attempts")
            return WistiaApiError(f"{where} failed: unexpected {type(exc).__name__} calling Wistia")
        status, code = exc.status, exc.code
        if status == 401 and code == "unauthorized_scope":
            message = (f"{where} failed: the Wistia API token lacks the \"Read detailed stats\" permission "
                       f"(401 unauthorized_scope); give the token in {self._settings.token_env} that permission")
        elif status == 401 and code == "account_inactive":
            message = f"{where} failed: the Wistia account is inactive (401 account_inactive)"
        elif status == 401:
            message = (f"{where} failed: Wistia refused the API token (401 {code or 'unauthorized'}); put a valid "
                       f"token in the environment variable {self._settings.token_env}")
        elif status == 403:
            message = f"{where} failed: the Wistia plan or token does not allow this call (403)"
        elif status == 429:
            message = f"{where} failed: still throttled by Wistia (429) after {attempts} attempts"
        elif status >= 500:
            message = f"{where} failed: Wistia server error {status} after {attempts} attempts"
        else:
            message = f"{where} failed: Wistia answered {status}"
        return WistiaApiError(message, status=status, code=code)

    def _bad_answer(self, operation: str, obj: str) -> WistiaApiError:
        return WistiaApiError(f"systems.{self._system}: {operation} of {obj!r} failed: Wistia's answer was not "
                              "the JSON expected (is base_url a Wistia API?)")

    # --- helpers ---

    def _ref(self, obj: str, key: str) -> RecordRef:
        return RecordRef(self._system, obj, key, self._settings.categories_of(obj))

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        if ref.object not in OBJECTS:
            return f"unknown object {ref.object!r} in systems.{self._system}"
        if not _WIRE_KEY.match(ref.id):
            return f"id is not a Wistia {ref.object} key"
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


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A record's fields one level deep (``visitor_identity.org.name``), so that the subject's CSV shows
    values, not nested objects; lists (none documented) become JSON text."""
    flat: dict[str, Any] = {}
    for name, item in value.items():
        key = f"{prefix}{name}"
        if isinstance(item, Mapping) and item:
            flat.update(_flatten(item, f"{key}."))
        elif isinstance(item, Mapping | list | tuple):
            flat[key] = json.dumps(item, ensure_ascii=False, sort_keys=True)
        else:
            flat[key] = json_friendly(item)
    return flat


def _moment_of(cutoff: date | datetime) -> datetime:
    if isinstance(cutoff, datetime):
        return cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    return datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

