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

Pacing, retries and errors come from `connectors.http`: 600 calls a minute per account by default; a 429
(text/plain, ``Retry-After``) holds every caller off; 5xx, resets and timeouts are retried, 401/403/404/422
are not. A 401 names Wistia's code (``unauthorized_credentials``, ``unauthorized_scope``,
``account_inactive``) and `token_env`, never the token. The search URL holds the address, so errors carry
the system, operation, object, status and code only, and nothing is chained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
from pydantic import Field, model_validator

from connectors.base import ConnectorError, RateLimitSpec, json_friendly, outcome_for, receipt_id, subject_email
from connectors.http import ENV_VAR_NAME, BearerAuth, HttpConnector, HttpSettings, VendorApiError
from dsr.contract import DataCategory, ErasureAction, ErasureDecision, Receipt, Record, RecordRef, Subject

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


_WIRE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # visitor and event keys, as they go into URL paths
_DEFAULT_CATEGORIES: dict[str, tuple[DataCategory, ...]] = {
    # name, e-mail, organisation and title; browser and platform
    "visitor": (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.TECHNICAL),
    # videos watched (usage); IP, place, browser (technical); the viewer's e-mail and gate form (contact)
    "event": (DataCategory.USAGE, DataCategory.TECHNICAL, DataCategory.CONTACT),
}


class WistiaSettings(HttpSettings):
    """The `settings:` block of a `wistia` system in `systems.yaml`."""

    SECRET_KEYS = ("token", "api_token", "api_password", "access_token", "api_key")

    token_env: str = Field(pattern=ENV_VAR_NAME)
    api_version: str = Field(default="2026-01", pattern=r"^\d{4}-\d{2}$")
    account: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")  # <account>.wistia.com
    rate_limit: RateLimitSpec = RateLimitSpec(calls=600, period_seconds=60)
    page_size: int = Field(default=PAGE_MAX, ge=1, le=PAGE_MAX)
    event_history_days: int = Field(default=731, ge=1, le=3650)  # how far back events are asked for
    categories: dict[str, tuple[DataCategory, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> WistiaSettings:
        for name, cats in self.categories.items():
            if name not in OBJECTS:
                raise ValueError(f"categories.{name}: not an object of this system (visitor or event)")
            if not cats:
                raise ValueError(f"categories.{name}: name at least one data category")
        return self

    def categories_of(self, obj: str) -> tuple[DataCategory, ...]:
        return self.categories.get(obj) or _DEFAULT_CATEGORIES[obj]


class WistiaApiError(VendorApiError):
    """Wistia answered with an error status (or could not be reached); the message names status and code only."""


class WistiaConnector(HttpConnector):
    """Discover, export and re-query a subject's Wistia visitors and events; erasure is a manual task.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    """

    KIND, VERSION, VENDOR = "wistia", "wistia/1", "Wistia"
    DEFAULT_BASE_URL = "https://api.wistia.com"
    API_PATH = "/modern"
    SETTINGS = WistiaSettings
    OBJECTS, MANUAL_STEPS = OBJECTS, MANUAL_STEPS
    ERROR = WistiaApiError
    NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                      requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)
    RETRY_STATUSES = frozenset(range(500, 600))
    PAUSE_ON_THROTTLE = True  # Wistia's Retry-After is shorter than its window: every caller waits it
    HINTS = {
        "unauthorized_scope": "the Wistia API token lacks the \"Read detailed stats\" permission ({said}); give "
                              "the token in {s.token_env} that permission",
        "account_inactive": "the Wistia account is inactive ({said})",
        401: "Wistia refused the API token ({said}); put a valid token in the environment variable {s.token_env}",
        403: "the Wistia plan or token does not allow this call ({said})",
    }
    _settings: WistiaSettings

    def __init__(self, system: str, settings: WistiaSettings, *, base_url: str, credentials: str) -> None:
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        self._session.auth = BearerAuth(credentials)
        self._session.headers.update({"X-Wistia-Api-Version": settings.api_version, "Accept": "application/json"})

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """The subject's visitors (exact e-mail match), then each one's events, newest first. A
        `ConnectorError` when the subject has no e-mail, or Wistia failed (after retries)."""
        keys = self._find_visitors(subject_email(subject))
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
            visitor = self.request("export", "visitor", "GET", f"/stats/visitors/{quote(ref.id, safe='')}",
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
            event = self.request("export", "event", "GET", f"/stats/events/{quote(ref.id, safe='')}", missing_ok=True)
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
        outcomes, todo = self._triage(decisions)
        for decision in todo:
            outcomes[decision.ref.key] = outcome_for(decision, done=False, error=NO_DELETE_API)
        return self._receipt(decisions, outcomes, self._calls())

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
            f"{self.API_PATH}/stats/visitors/<visitor_key> for each visitor above (the pipeline checks again).",
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
            outcome_for(ErasureDecision(r, ErasureAction.DELETE), done=False,
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
            query = {**params, "per_page": str(size), "page": str(page)}
            items = self.request(operation, obj, "GET", path, params=query)
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
    def _ref(self, obj: str, key: str) -> RecordRef:
        return RecordRef(self._system, obj, key, self._settings.categories_of(obj))

    def _problem_with(self, ref: RecordRef) -> str | None:
        problem = super()._problem_with(ref)
        return problem if problem is not None or _WIRE_KEY.match(ref.id) else f"id is not a Wistia {ref.object} key"

    def _group(self, refs: Sequence[RecordRef]) -> dict[str, list[RecordRef]]:
        self._check_refs(refs)
        grouped: dict[str, list[RecordRef]] = {}
        for ref in refs:
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


create = WistiaConnector.create
