"""Talking to HubSpot: the SDK's APIs on the shared HTTP base, HubSpot's failures, and the reads every
operation shares (property lists, batch reads, keyset-paged searches, associations).

Every SDK call goes through `HttpConnector._call`: paced by the account's window (`rate_limit`), retried on
a 429 (waiting ``Retry-After``; every caller waits it), 5xx, resets and timeouts, its SDK exception sorted
by `translate`. A search also holds a slot of the search budget (`search_rate_limit`) until answered. A 401 and a
``DAILY`` 429 are not retried. ``X-HubSpot-RateLimit-Remaining`` is read on every answer, and calls are
spaced out when it runs low (other clients share the token's budget). The SDK's own urllib3 retries are off.

Personal data never reaches an exception: the SDK's exceptions carry response bodies (HubSpot echoes
addresses in 400 and 404 bodies) and URLs (the subscription status URL holds the address), so only the
status and HubSpot's category (or, for a 429, its policy name) are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import hubspot
import requests
import urllib3
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectId,
)

from connectors.base import chunks
from connectors.http import HttpConnector, HttpFailure, VendorApiError
from connectors.hubspot.settings import ENGAGEMENTS, HubSpotSettings
from connectors.pacing import budget_key, limiter_for, parse_retry_after
from connectors.process_cache import ProcessCache
from dsr.contract import RecordRef

MAX_BATCH = 100  # batch/read, batch/archive
ASSOCIATIONS_PAGE = 500
#: How long an object type's property list is reused by the connectors of a process (one call per
#: object type saved on each export). A property added in HubSpot is exported within this time.
PROPERTIES_TTL_SECONDS = 900.0

_TOKEN_LIKE = re.compile(r"^[A-Z_]{2,64}$")  # HubSpot categories and policy names; anything else is dropped


class HubSpotApiError(VendorApiError):
    """HubSpot answered with an error (or could not be reached); the message names status and code only.

    `code` is HubSpot's `category` (``OBJECT_NOT_FOUND``...) or, for a 429, which has none, its
    `policy` (``TEN_SECONDLY_ROLLING``, ``DAILY``...).
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, fatal: bool = False,
                 category: str | None = None, policy: str | None = None) -> None:
        code = code or policy or category
        super().__init__(message, status=status, code=code, fatal=fatal)
        self.category: str | None = None if status == 429 else code
        self.policy: str | None = code if status == 429 else None


class HubSpotClient(HttpConnector):
    """HubSpot's SDK APIs, paced and retried by the base; what discovery, erasure and the rights read."""

    KIND, VERSION, VENDOR = "hubspot", "hubspot/1", "HubSpot"
    DEFAULT_BASE_URL = "https://api.hubapi.com"
    SETTINGS = HubSpotSettings
    OBJECTS = ("contacts", *ENGAGEMENTS)  # all HubSpot may hold; a system's own are `self._objects`
    MAX_BATCH = MAX_BATCH
    ERROR = HubSpotApiError
    NETWORK_ERRORS = (urllib3.exceptions.HTTPError, requests.ConnectionError, requests.Timeout, ConnectionError,
                      TimeoutError)
    RETRY_STATUSES = frozenset(range(500, 600))
    FATAL_CODES = frozenset({"DAILY"})
    PAUSE_ON_THROTTLE = True
    HINTS = {
        401: "HubSpot refused the access token ({said}). Private-app tokens cannot be refreshed: put a valid token "
             "in the environment variable {s.token_env}",
        403: "the token lacks a scope this call needs ({said})",
        404: "HubSpot answered {said}",
        "DAILY": "HubSpot's daily API limit is used up ({said}); not retried",
    }
    _settings: HubSpotSettings

    def __init__(self, system: str, settings: HubSpotSettings, *, base_url: str, credentials: str) -> None:
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        # A system holds the engagements its settings name: its info lists those, not the class's OBJECTS.
        self._objects = ("contacts", *settings.engagements)
        self._info = replace(self._info, objects=self._objects)
        srl = settings.search_rate_limit
        # HubSpot counts per private-app token; search has its own, smaller budget. A search holds
        # its slot until answered (no margin needed, none of its 429s however late a search arrives).
        self._search_limiter = limiter_for(budget_key("hubspot-search", *self._account()), srl.calls,
                                           srl.period_seconds, until_answered=True)
        self._property_names: dict[str, list[str]] = {}
        # urllib3 retries off: one retry policy (the base's) decides, and counts.
        client = hubspot.Client.create(access_token=credentials, host=base_url, base_url=base_url,
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

    def close(self) -> None:
        """Release the SDK's connection pools."""
        super().close()
        for api in self._apis:
            api_client = getattr(api, "api_client", None)
            try:
                api_client.rest_client.pool_manager.clear()  # type: ignore[union-attr]
            except AttributeError:
                pass

    def _calls(self) -> int:
        # Per thread: `purge` runs in several threads at once (the retention purge), and each
        # receipt counts its own calls only.
        return self._calls_in_thread()

    # --- calling HubSpot ---

    def _sdk(self, operation: str, what: str, fn: Callable[..., Any], *args: Any, search: bool = False,
             **kwargs: Any) -> Any:
        """One SDK call (a ``*_with_http_info`` method) through the base's `_call`: its data, once its
        rate-limit headers are read. A search also holds a slot of the search budget until answered."""

        def send() -> Any:
            # A search's slot is taken last, after the account's window, so it is not held while
            # waiting for that.
            with self._search_limiter.call() if search else nullcontext(0.0) as waited:
                if waited:
                    self._count("waited_seconds", waited)
                data, _status, headers = fn(*args, _request_timeout=self._timeout, **kwargs)
            self._observe(headers)
            return data

        return self._call(operation, what, send)

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

    def translate(self, exc: BaseException) -> HttpFailure | None:
        """The SDK's `ApiException` (any of its per-package copies): status, category or a 429's policy,
        Retry-After. Its body and URL are dropped."""
        if not any(cls.__name__ == "ApiException" for cls in type(exc).__mro__):
            return None
        status = getattr(exc, "status", None)
        if not isinstance(status, int):
            return None
        code = _body_field(exc, "policyName" if status == 429 else "category")
        return HttpFailure(status, code=code, retry_after=parse_retry_after(_header(exc, "Retry-After")))

    def explain(self, failure: HttpFailure) -> str | None:
        if failure.status >= 500:  # the category (INTERNAL_ERROR) adds nothing to the status
            return f"HubSpot server error {failure.status} after {self._settings.retry_attempts} attempts"
        return None

    # --- reading ---

    def _all_properties(self, obj: str, operation: str = "export") -> list[str]:
        if obj not in self._property_names:
            names = _PROPERTIES.get((self._limiter, obj))
            if names is None:
                answer = self._sdk(operation, obj, self._properties_api.get_all_with_http_info, obj)
                names = sorted({p.name for p in answer.results or []})
                _PROPERTIES.put((self._limiter, obj), names)
            self._property_names[obj] = list(names)
        return self._property_names[obj]

    def _read_batch(self, operation: str, obj: str, ids: Sequence[str], properties: list[str]) -> dict[str, dict[str, Any]]:
        """id -> properties of the records that exist (batch/read answers 207 for the others)."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_BATCH):
            body = BatchReadInputSimplePublicObjectId(
                properties=properties, properties_with_history=[], inputs=[SimplePublicObjectId(id=i) for i in chunk])
            answer = self._sdk(operation, obj, self._batch_api.read_with_http_info, obj, body)
            for item in answer.results or []:
                found[str(item.id)] = dict(item.properties or {})
        return found

    def _count_hits(self, operation: str, obj: str, filters: list[Filter]) -> int:
        """How many records a search matches: one search for one record, read for its `total`."""
        request = PublicObjectSearchRequest(filter_groups=[FilterGroup(filters=list(filters))],
                                            properties=["hs_object_id"], limit=1)
        page = self._sdk(operation, obj, self._search_api.do_search_with_http_info, obj, request, search=True)
        total = getattr(page, "total", None)
        if not isinstance(total, int) or total < 0:
            raise HubSpotApiError(f"systems.{self._system}: {operation} of {obj} failed: HubSpot answered the "
                                  "search without a count of its matches (total)")
        return total

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
            page = self._sdk(operation, obj, self._search_api.do_search_with_http_info, obj, request, search=True)
            results = page.results or []
            for hit in results:
                last_id = str(hit.id)
                yield hit
            if len(results) < limit or not _next_after(page):
                return

    def _engagements_of(self, contact_id: str, objects: Sequence[str]) -> dict[str, list[str]]:
        """The ids of the contact's engagements of each of `objects`, in one read of the contact with its
        associations; a type with more than HubSpot pages there (100) is listed in full through v4.

        A contact gone since the search has none."""
        if not objects:
            return {}
        try:
            answer = self._sdk("discover", "contacts", self._basic_api.get_by_id_with_http_info, "contacts",
                               contact_id, properties=["hs_object_id"], associations=list(objects))
        except HubSpotApiError as exc:
            if exc.status == 404:
                return {obj: [] for obj in objects}
            raise
        # Keyed by the type's plural name ("notes"); the singular is accepted too, in case HubSpot answers it.
        listed = {str(key).lower(): page for key, page in (getattr(answer, "associations", None) or {}).items()}
        found: dict[str, list[str]] = {}
        for obj in objects:
            page = listed.get(obj, listed.get(obj.removesuffix("s")))
            if page is not None and _next_after(page):
                found[obj] = self._associated(contact_id, obj)
            else:
                found[obj] = list(dict.fromkeys(str(item.id) for item in getattr(page, "results", None) or []))
        return found

    def _associated(self, contact_id: str, obj: str) -> list[str]:
        """The ids of the contact's `obj` engagements (v4 associations, paged)."""
        ids: list[str] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": ASSOCIATIONS_PAGE}
            if after:
                kwargs["after"] = after
            page = self._sdk("discover", obj, self._associations_api.get_page_with_http_info,
                             "contacts", contact_id, obj, **kwargs)
            ids.extend(str(item.to_object_id) for item in page.results or [])
            after = _next_after(page)
            if not after:
                return ids

    def _archive(self, operation: str, obj: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        body = BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=i) for i in ids])
        self._sdk(operation, obj, self._batch_api.archive_with_http_info, obj, body)

    # --- records ---

    def _ref(self, obj: str, object_id: str) -> RecordRef:
        return RecordRef(self._system, obj, str(object_id), self._settings.categories_of(obj))

    def _problem_with(self, ref: RecordRef) -> str | None:
        """Another system's record, an object this system does not hold (`engagements`), or an id that is
        not a HubSpot record id."""
        if ref.system != self._system:
            return super()._problem_with(ref)
        if ref.object not in self._objects:
            return f"unknown object {ref.object!r} in systems.{self._system} (only {', '.join(self._objects)})"
        if not ref.id.isdigit():
            return f"id is not a HubSpot record id of object {ref.object!r}"
        return None

    def _group(self, refs: Sequence[RecordRef]) -> dict[str, list[RecordRef]]:
        """Refs by object, each in the order given; a ref that is not ours refuses the call (`_check_refs`)."""
        self._check_refs(refs)
        return {obj: [r for r in refs if r.object == obj] for obj in dict.fromkeys(r.object for r in refs)}


# --- the SDK's exceptions ---------------------------------------------------------------------------


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


def _next_after(page: Any) -> str | None:
    paging = getattr(page, "paging", None)
    nxt = getattr(paging, "next", None) if paging is not None else None
    after = getattr(nxt, "after", None) if nxt is not None else None
    return str(after) if after else None


def id_order(object_id: str) -> tuple[int, str]:
    """Sort key of HubSpot ids: numerically."""
    return (int(object_id), "") if object_id.isdigit() else (1 << 62, object_id)


# --- kept per process -------------------------------------------------------------------------------


#: Property names by vendor account (its limiter, which `limiter_for` shares per account) and object.
_PROPERTIES: ProcessCache[tuple[object, str], list[str]] = ProcessCache(PROPERTIES_TTL_SECONDS)
