"""Mode ``offline_user_data_job``: Customer Match removals through the Google Ads API's offline user data jobs.

Per decided list, one OfflineUserDataJob of type ``CUSTOMER_MATCH_USER_LIST`` under
``https://googleads.googleapis.com/{api_version}``: ``offlineUserDataJobs:create``, ``:addOperations`` with
one ``remove`` of the subject's ``hashedEmail`` (``enablePartialFailure: true``), ``:run`` (a long-running
operation), then GAQL polls (``googleAds:search`` on ``offline_user_data_job.status``, one query per
customer for all its jobs) until ``SUCCESS`` or ``FAILED``. Headers besides the bearer token:
``developer-token`` and ``login-customer-id`` (the manager account, digits only). Since 2026-04-01 the Ads
API refuses Customer Match to new adopters (``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE``): that answer is
fatal and says to switch to the Data Manager mode. A 404 without codes means the API version is sunset.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import outcome_for
from connectors.google_ads.connector import Credentials, GoogleAdsApiError, GoogleAdsConnector
from connectors.google_ads.failures import CODE, GoogleFailure, error_codes
from connectors.google_ads.settings import GoogleAdsSettings
from connectors.http import HttpFailure
from dsr.contract import ErasureDecision, RecordOutcome

FINAL_STATUSES = frozenset({"SUCCESS", "FAILED"})


def customer_match_hash(email: str) -> str:
    """Customer Match's hashed e-mail: trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex.

    Gmail dots and plus-suffixes are kept: Google does not require removing them (vendor-apis.md section 4).
    """
    normalised = email.strip().lower()
    if not normalised:
        raise ValueError("empty address")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


class OfflineJobsConnector(GoogleAdsConnector):
    """Removals as offline user data jobs, each polled to its end (``SUCCESS``: done and confirmed)."""

    DEFAULT_BASE_URL = "https://googleads.googleapis.com"
    PLATFORM, RECEIPT_PREFIX = "Google Ads Customer Match", "google_ads"

    def __init__(self, system: str, settings: GoogleAdsSettings, *, base_url: str, credentials: Credentials) -> None:
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        self._root = f"{base_url}/{settings.api_version}"
        # Per call, not on the session: the token endpoint is not to see the developer token.
        self._headers = {"developer-token": credentials.developer_token or ""}
        if settings.login_customer_id is not None:
            self._headers["login-customer-id"] = settings.login_customer_id

    def _ads(self, what: str, path: str, body: Any) -> Any:
        return self.request("erase", what, "POST", f"/{path}", json=body, headers=self._headers)

    def _remove(self, todo: Sequence[ErasureDecision], email: str, outcomes: dict[str, RecordOutcome]) -> list[str]:
        """Create, fill and run one job per list, then poll them all; returns ``job=STATUS`` parts."""
        hashed = customer_match_hash(email)
        running: dict[str, ErasureDecision] = {}  # job resource name -> decision
        parts: list[str] = []
        for decision in todo:
            cid, _ = self._lists[decision.ref.id]
            try:
                job = self._create_job(cid, decision.ref.id)
                refused = self._add_removal(cid, job, hashed)
                if refused is not None:
                    outcomes[decision.ref.key] = outcome_for(decision, done=False, error=refused)
                    parts.append(f"{job}=NOT_RUN")
                    continue
                self._ads(decision.ref.id, f"customers/{cid}/{_job_path(job)}:run", {})
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
        answer = self._ads(resource, f"customers/{cid}/offlineUserDataJobs:create", body)
        job = answer.get("resourceName") if isinstance(answer, dict) else None
        if not isinstance(job, str) or not re.fullmatch(rf"customers/{cid}/offlineUserDataJobs/\d+", job):
            raise GoogleAdsApiError(f"systems.{self._system}: erase of {self.OBJECT} {resource!r} failed: Google Ads "
                                    "answered the job creation without a job resource name")
        return job

    def _add_removal(self, cid: str, job: str, hashed: str) -> str | None:
        """Add the remove operation; an error text if Google refused it (partial failure), else None."""
        body = {"operations": [{"remove": {"userIdentifiers": [{"hashedEmail": hashed}]}}],
                "enablePartialFailure": True}
        answer = self._ads(job, f"customers/{cid}/{_job_path(job)}:addOperations", body)
        partial = answer.get("partialFailureError") if isinstance(answer, dict) else None
        if partial:
            codes = error_codes(partial) if isinstance(partial, dict) else ()
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
                self._count("polls")
                try:
                    answer = self._ads(f"customers/{cid}", f"customers/{cid}/googleAds:search",
                                       {"query": _status_query(jobs)})
                except GoogleAdsApiError as exc:
                    if exc.fatal:
                        raise
                    for job in jobs:
                        result[job] = (seen[job], f"removal requested (job {job} run) but its status could not be "
                                                  f"read: {exc}")
                    del by_customer[cid]
                    continue
                for name, status, reason in _job_rows(answer):
                    if name in seen:
                        seen[name] = status
                        if status in FINAL_STATUSES:
                            result[name] = (status, reason)
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

    def _why_fatal(self, failure: HttpFailure) -> str | None:
        """Besides the shared cases: a 404 without codes, Google's answer to every path of a sunset version."""
        if isinstance(failure, GoogleFailure) and failure.status == 404 and not failure.codes:
            return (f"Google Ads answered 404 ({failure.said}): API version {self._settings.api_version} may be "
                    f"sunset; set systems.{self._system}.settings.api_version to a version Google serves "
                    "(README, 'Google Ads API versions')")
        return super()._why_fatal(failure)


def _job_path(job: str) -> str:
    """``offlineUserDataJobs/{id}`` of a job resource name ``customers/{cid}/offlineUserDataJobs/{id}``."""
    return job.split("/", 2)[2]


def _status_query(jobs: Sequence[str]) -> str:
    """GAQL for the status and failure reason of `jobs` (one customer's)."""
    names = ", ".join(f"'{job}'" for job in jobs)
    return ("SELECT offline_user_data_job.resource_name, offline_user_data_job.status, "
            "offline_user_data_job.failure_reason FROM offline_user_data_job "
            f"WHERE offline_user_data_job.resource_name IN ({names})")


def _job_rows(answer: Any) -> list[tuple[str, str, str | None]]:
    """(resource name, status, failure reason) of each well-formed row of a search answer; codes only."""
    rows = []
    for row in (answer.get("results") or []) if isinstance(answer, dict) else []:
        data = (row or {}).get("offlineUserDataJob") or {}
        name, status, reason = data.get("resourceName"), data.get("status"), data.get("failureReason")
        if isinstance(name, str) and isinstance(status, str) and CODE.match(status):
            rows.append((name, status, reason if isinstance(reason, str) and CODE.match(reason) else None))
    return rows
