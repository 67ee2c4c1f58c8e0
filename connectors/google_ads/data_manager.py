"""Mode ``data_manager``: Customer Match removals through the Data Manager API, Google's replacement.

``POST https://datamanager.googleapis.com/v1/audienceMembers:remove``, one request per list: the accounts
travel in the body (``operatingAccount`` = the customer, ``loginAccount`` = `login_customer_id`), the hash
as ``emailAddress`` with ``encoding: HEX``; no developer token. Google answers a ``requestId``;
``GET /v1/requestStatus:retrieve?requestId=`` is then polled until every destination is ``SUCCESS``
(``FAILED`` / ``PARTIAL_SUCCESS``: not done).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import outcome_for
from connectors.google_ads.connector import GoogleAdsApiError, GoogleAdsConnector
from connectors.google_ads.failures import CODE
from dsr.contract import ErasureDecision, RecordOutcome

_REQUEST_ID = re.compile(r"[\w.:-]{1,128}")


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
        """Ask for each list's removal, then poll the requests; returns ``list=requestId:STATUS`` parts."""
        hashed = data_manager_hash(email)
        parts: list[str] = []
        accepted: dict[str, ErasureDecision] = {}  # requestId -> decision
        for decision in todo:
            try:
                answer = self.request("erase", decision.ref.id, "POST", "/audienceMembers:remove",
                                      json=self._removal(decision, hashed))
            except GoogleAdsApiError as exc:
                if exc.fatal:
                    raise
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=str(exc))
                continue
            request_id = answer.get("requestId") if isinstance(answer, dict) else None
            if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
                outcomes[decision.ref.key] = outcome_for(
                    decision, done=False, error="the Data Manager API accepted the removal without a requestId")
                continue
            accepted[request_id] = decision
        for request_id, (status, problem) in self._poll_requests(accepted).items():
            decision = accepted[request_id]
            parts.append(f"{decision.ref.id}={request_id}:{status}")
            outcomes[decision.ref.key] = outcome_for(decision, done=problem is None, error=problem)
        return parts

    def _removal(self, decision: ErasureDecision, hashed: str) -> dict[str, Any]:
        """The body of ``audienceMembers:remove`` for one list."""
        cid, lid = self._lists[decision.ref.id]
        login = self._settings.login_customer_id
        destination: dict[str, Any] = {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": cid}}
        if login is not None and login != cid:
            destination["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": login}
        destination["productDestinationId"] = lid
        return {"destinations": [destination],
                "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": hashed}]}}],
                "encoding": "HEX", "validateOnly": False}

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
                    answer = self.request("erase", what, "GET", "/requestStatus:retrieve",
                                          params={"requestId": request_id})
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


def _data_manager_status(answer: Any) -> str | None:
    """One status for a Data Manager request: SUCCESS only if every destination's is; else the first other."""
    entries = answer.get("requestStatusPerDestination") if isinstance(answer, dict) else None
    statuses = [e.get("requestStatus") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    statuses = [s for s in statuses if isinstance(s, str) and CODE.match(s)]
    if not statuses:
        return None
    return next((s for s in statuses if s != "SUCCESS"), "SUCCESS")
