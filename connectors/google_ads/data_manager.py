"""Mode ``data_manager``: Customer Match removals through the Data Manager API, Google's replacement.

``POST https://datamanager.googleapis.com/v1/audienceMembers:remove``, one request for up to 10 lists (one
destination each, across customers): the accounts travel in the body (``operatingAccount`` = the customer,
``loginAccount`` = `login_customer_id`), the hash as ``emailAddress`` with ``encoding: HEX``; no developer
token. Google answers a ``requestId``; ``GET /v1/requestStatus:retrieve?requestId=`` is then polled until
every destination's status is final: a list is done when its own is ``SUCCESS`` (``FAILED`` /
``PARTIAL_SUCCESS``: not done). A request Google refuses is asked again list by list, so one bad list
fails only itself.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import chunks, outcome_for
from connectors.google_ads.connector import GoogleAdsApiError, GoogleAdsConnector
from connectors.google_ads.failures import CODE
from dsr.contract import ErasureDecision, RecordOutcome

_REQUEST_ID = re.compile(r"[\w.:-]{1,128}")
_FINAL = frozenset({"SUCCESS", "FAILED", "PARTIAL_SUCCESS"})
MAX_DESTINATIONS = 10  # of one audienceMembers:remove (Data Manager's "Limits and quotas")


def data_manager_hash(email: str) -> str:
    """The Data Manager API's hashed e-mail: every whitespace character removed (inside too), lower-case,
    SHA-256 of the UTF-8 bytes, lower-case hex."""
    normalised = "".join(email.split()).lower()
    if not normalised:
        raise ValueError("empty address")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


class DataManagerConnector(GoogleAdsConnector):
    """Removals as Data Manager requests, each polled until its status is final (all SUCCESS: done)."""

    DEFAULT_BASE_URL = "https://datamanager.googleapis.com"
    API_PATH = "/v1"
    PLATFORM, RECEIPT_PREFIX = "Google Ads Customer Match (Data Manager API)", "google_datamanager"

    def _remove(self, todo: Sequence[ErasureDecision], email: str, outcomes: dict[str, RecordOutcome]) -> list[str]:
        """Ask for the removals, up to `MAX_DESTINATIONS` lists a request, then poll the requests; returns
        ``list=requestId:STATUS`` parts, one per list."""
        hashed = data_manager_hash(email)
        accepted: dict[str, list[ErasureDecision]] = {}  # requestId -> its lists, in destination order
        for batch in chunks(list(todo), MAX_DESTINATIONS):
            self._submit(batch, hashed, outcomes, accepted)
        parts: list[str] = []
        for request_id, per_list in self._poll_requests(accepted).items():
            for decision in accepted[request_id]:
                status, problem = per_list[decision.ref.id]
                parts.append(f"{decision.ref.id}={request_id}:{status}")
                outcomes[decision.ref.key] = outcome_for(decision, done=problem is None, error=problem)
        return parts

    def _submit(self, batch: Sequence[ErasureDecision], hashed: str, outcomes: dict[str, RecordOutcome],
                accepted: dict[str, list[ErasureDecision]]) -> None:
        """One ``audienceMembers:remove`` for the lists of `batch`. Google refuses a whole request for one bad
        destination and does not reliably say which: a refused batch is asked again list by list, so each
        list gets its own outcome."""
        what = batch[0].ref.id if len(batch) == 1 else f"{len(batch)} user lists"
        try:
            answer = self.request("erase", what, "POST", "/audienceMembers:remove", json=self._removal(batch, hashed))
        except GoogleAdsApiError as exc:
            if exc.fatal:
                raise
            if len(batch) > 1:
                for decision in batch:
                    self._submit([decision], hashed, outcomes, accepted)
                return
            outcomes[batch[0].ref.key] = outcome_for(batch[0], done=False, error=str(exc))
            return
        request_id = answer.get("requestId") if isinstance(answer, dict) else None
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            for decision in batch:
                outcomes[decision.ref.key] = outcome_for(
                    decision, done=False, error="the Data Manager API accepted the removal without a requestId")
            return
        accepted[request_id] = list(batch)

    def _removal(self, batch: Sequence[ErasureDecision], hashed: str) -> dict[str, Any]:
        """The body of ``audienceMembers:remove`` for the lists of `batch` (one destination each)."""
        login = self._settings.login_customer_id
        destinations = []
        for decision in batch:
            cid, lid = self._lists[decision.ref.id]
            destination: dict[str, Any] = {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": cid}}
            if login is not None and login != cid:
                destination["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": login}
            destination["productDestinationId"] = lid
            destinations.append(destination)
        return {"destinations": destinations,
                "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": hashed}]}}],
                "encoding": "HEX", "validateOnly": False}

    def _poll_requests(self, accepted: Mapping[str, Sequence[ErasureDecision]]
                       ) -> dict[str, dict[str, tuple[str, str | None]]]:
        """Per request, per list: its status and what keeps it from being done (None: SUCCESS, confirmed).

        Reads each request's status (``GET /v1/requestStatus:retrieve``) until every destination's is final
        (SUCCESS, FAILED or PARTIAL_SUCCESS), or `poll_timeout_seconds` pass."""
        result: dict[str, dict[str, tuple[str, str | None]]] = {}
        waiting = list(accepted)
        deadline = time.monotonic() + self._settings.poll_timeout_seconds
        while waiting:
            for request_id in list(waiting):
                lists = accepted[request_id]
                what = lists[0].ref.id if len(lists) == 1 else f"{len(lists)} user lists"
                try:
                    answer = self.request("erase", what, "GET", "/requestStatus:retrieve",
                                          params={"requestId": request_id})
                except GoogleAdsApiError as exc:
                    if exc.fatal:
                        raise
                    result[request_id] = {d.ref.id: ("UNREAD", f"removal requested (request {request_id}) but its "
                                                                f"status could not be read: {exc}") for d in lists}
                    waiting.remove(request_id)
                    continue
                self._count("polls")
                statuses = _destination_statuses(answer, [self._lists[d.ref.id] for d in lists])
                final = [status for status in statuses if status in _FINAL]
                if len(final) < len(statuses):
                    continue
                result[request_id] = {d.ref.id: (status, _problem(status, d.ref.id, request_id))
                                      for d, status in zip(lists, final, strict=True)}
                waiting.remove(request_id)
            if not waiting:
                break
            if time.monotonic() >= deadline:
                for request_id in waiting:
                    result[request_id] = {d.ref.id: ("PROCESSING", f"removal requested (request {request_id}) but "
                                                                   "not confirmed: still PROCESSING after "
                                                                   "poll_timeout_seconds "
                                                                   f"({self._settings.poll_timeout_seconds:g} s); "
                                                                   "re-run to request it again")
                                          for d in accepted[request_id]}
                break
            time.sleep(min(self._settings.poll_seconds, max(deadline - time.monotonic(), 0.0)))
        return result


def _problem(status: str, what: str, request_id: str) -> str | None:
    """Why a list's final status leaves its removal not done, or None for SUCCESS."""
    if status == "SUCCESS":
        return None
    return (f"the Data Manager API reports the removal from {what} (request {request_id}) {status}; it was not "
            "fully applied")


def _destination_statuses(answer: Any, lists: Sequence[tuple[str, str]]) -> list[str | None]:
    """The status of each of `lists` ((customer id, list id), in destination order) in a status answer: the
    entry naming that destination, else the entry at its place; None where there is none (token-like only)."""
    entries = answer.get("requestStatusPerDestination") if isinstance(answer, dict) else None
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    named: dict[tuple[str, str], Any] = {}
    for entry in entries:
        destination = entry.get("destination")
        destination = destination if isinstance(destination, dict) else {}
        operating = destination.get("operatingAccount")
        operating = operating if isinstance(operating, dict) else {}
        key = (str(operating.get("accountId")), str(destination.get("productDestinationId")))
        named.setdefault(key, entry.get("requestStatus"))
    statuses: list[str | None] = []
    for index, key in enumerate(lists):
        status = named.get(key, entries[index].get("requestStatus") if index < len(entries) else None)
        statuses.append(status if isinstance(status, str) and CODE.match(status) else None)
    return statuses
