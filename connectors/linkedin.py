"""LinkedIn Matched Audiences: remove the subject from configured DMP segments (vendor-apis.md section 5).

Segments are write-only audiences: `discover` names every configured segment (no call) and remembers the
subject; `export` says membership is not readable; `erase` posts a REMOVE of the subject's ``SHA256_EMAIL``
per segment (201 even for an absent member), then reads each accepted segment until its LINKEDIN destination
is READY: only then is the removal done and confirmed (any other end, or `poll_timeout_seconds`, leaves it
not done; re-running is safe); connectors.linkedin_segments reads them in as few calls as it can. A 401, a
sunset ``LinkedIn-Version`` (426) and the DAY throttle are fatal; a per-minute 429, 5xx, resets and timeouts
are retried. Neither the address nor its hash reaches an error.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Sequence

import requests
from pydantic import Field, model_validator

from connectors.audience import AudienceConnector
from connectors.base import RateLimitSpec, outcome_for, subject_email
from connectors.http import ENV_VAR_NAME, BearerAuth, HttpFailure, HttpSettings, VendorApiError, json_or_none
from connectors.linkedin_segments import destination_status, read_segments, token
from connectors.pacing import parse_retry_after
from dsr.contract import DataCategory, ErasureDecision, Receipt, Record, RecordOutcome, RecordRef, Subject

OBJECT = "dmp_segment"
_SEGMENT_URN = re.compile(r"^urn:li:dmpSegment:(?P<id>\d{1,20})$")
_THROTTLE = re.compile(r"throttle (?P<scope>[A-Z]+) (?P<period>[A-Z]+) limit")
_SUNSET = ("LinkedIn no longer serves API version {s.version} ({said}); set systems.{system}.settings.version to an "
           "active YYYYMM")


def sha256_email(email: str) -> str:
    """LinkedIn's ``SHA256_EMAIL``: trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex."""
    normalised = email.strip().lower()
    if not normalised:
        raise ValueError("empty address")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


class LinkedInSettings(HttpSettings):
    """The `settings:` block of a `linkedin` system in `systems.yaml`."""

    version: str  # LinkedIn-Version, YYYYMM (or YYYYMM.RR)
    token_env: str = Field(pattern=ENV_VAR_NAME)
    segments: tuple[str, ...] = Field(min_length=1)
    categories: tuple[DataCategory, ...] = Field(default=(DataCategory.MARKETING,), min_length=1)
    poll_seconds: float = Field(default=5.0, gt=0)
    poll_timeout_seconds: float = Field(default=600.0, gt=0)
    rate_limit: RateLimitSpec = RateLimitSpec(calls=500, period_seconds=60)  # the lower of the 500-600 documented

    @model_validator(mode="after")
    def _check(self) -> LinkedInSettings:
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


class LinkedInApiError(VendorApiError):
    """LinkedIn answered with an error (or could not be reached); the message holds status and code only."""


class LinkedInConnector(AudienceConnector):
    """Remove a subject's ``SHA256_EMAIL`` from configured DMP segments (write-only audiences)."""

    KIND, VERSION, VENDOR = "linkedin", "linkedin/1", "LinkedIn"
    DEFAULT_BASE_URL = "https://api.linkedin.com"
    SETTINGS = LinkedInSettings
    OBJECT, REFS, WRITE_ONLY = OBJECT, "segment refs", True
    ERROR = LinkedInApiError
    FATAL_STATUSES, FATAL_CODES = frozenset({401, 426}), frozenset({"NONEXISTENT_VERSION", "VERSION_MISSING"})
    HINTS = {
        401: "LinkedIn refused the access token ({said}); LinkedIn tokens expire after 60 days: put a valid token "
             "with rw_dmp_segments in the environment variable {s.token_env}",
        426: _SUNSET, "NONEXISTENT_VERSION": _SUNSET, "VERSION_MISSING": _SUNSET,
        403: "the token may not change this segment ({said}; rw_dmp_segments and the ad account's role)",
        404: "LinkedIn has no such segment ({said}); check systems.{system}.settings.segments",
    }
    _settings: LinkedInSettings

    def __init__(self, system: str, settings: LinkedInSettings, *, base_url: str, credentials: str) -> None:
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        # The settings model checked every URN, so each matches.
        matches = (_SEGMENT_URN.match(urn) for urn in settings.segments)
        self._segments = {m.group("id"): m.group(0) for m in matches if m is not None}
        self._session.auth = BearerAuth(credentials)
        self._session.headers.update({"LinkedIn-Version": settings.version, "X-Restli-Protocol-Version": "2.0.0"})
        self._subjects: dict[str, str] = {}

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """One ref per configured segment ("may contain the subject"); no call. Remembers the subject."""
        self._subjects[subject.identity_hash] = subject_email(subject)
        return [self._ref(segment_id) for segment_id in self._segments]

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """One record per segment: membership is not readable, so nothing personal is exported."""
        self._check_refs(refs)
        for ref in refs:
            yield Record(ref=ref, fields={
                "audience": self._segments[ref.id], "platform": "LinkedIn Matched Audiences",
                "membership": "not readable: DMP segments are write-only; the subject may be a member",
                "identifier_uploaded": "SHA-256 of the normalised e-mail address"})

    def erase(self, decisions: Sequence[ErasureDecision], subject: Subject | None = None) -> Receipt:
        """Remove the subject's SHA256_EMAIL from each decided segment and confirm it; RETAIN makes no call.

        Raises:
            ConnectorError: the subject is unknown, or a fatal failure (token, version, daily quota).
        """
        calls_before = self._calls()
        outcomes, todo = self._triage(decisions)
        if todo:
            hashed = sha256_email(self._subject_email(subject))
            for decision in todo:
                outcomes[decision.ref.key] = self._remove(decision, hashed)
            for decision, problem in self._confirm([d for d in todo if outcomes[d.ref.key].done]).items():
                if problem is not None:
                    outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
        return self._receipt(decisions, outcomes, calls_before)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Nothing can be re-queried (write-only audiences): always ``[]``."""
        subject_email(subject)
        return []

    @property
    def confirms_removal(self) -> bool:
        """A removal is done only once the segment's LINKEDIN destination reads READY after it."""
        return True

    # --- removal ---

    def _remove(self, decision: ErasureDecision, hashed: str) -> RecordOutcome:
        urn = self._segments[decision.ref.id]
        body = {"elements": [{"action": "REMOVE", "userIds": [{"idType": "SHA256_EMAIL", "idValue": hashed}]}]}
        try:
            answer = self.request("erase", urn, "POST", f"/rest/dmpSegments/{decision.ref.id}/users", json=body,
                                  headers={"X-RestLi-Method": "BATCH_CREATE"})
        except LinkedInApiError as exc:
            if exc.fatal:
                raise
            return outcome_for(decision, done=False, error=str(exc))
        elements = answer.get("elements") if isinstance(answer, dict) else None
        if not isinstance(elements, list) or len(elements) != 1 or not isinstance(elements[0], dict):
            return outcome_for(decision, done=False, error=f"LinkedIn answered the removal from {urn} without one "
                                                           "status per element")
        status, code = elements[0].get("status"), token((elements[0].get("error") or {}), "code")
        if isinstance(status, int) and 200 <= status < 300:
            return outcome_for(decision, done=True)
        said = f"element status {status if isinstance(status, int) else 'missing'}" + (f" {code}" if code else "")
        return outcome_for(decision, done=False, error=f"LinkedIn refused the removal from {urn} ({said}); the "
                                                        "other segments are unaffected; re-run to retry")

    def _confirm(self, accepted: Sequence[ErasureDecision]) -> dict[ErasureDecision, str | None]:
        """Read each segment until its LINKEDIN destination is READY (None: confirmed), ends otherwise
        (FAILED, EXPIRED, ARCHIVED: the reason), or `poll_timeout_seconds` pass (removal requested only)."""
        result: dict[ErasureDecision, str | None] = {}
        last = dict.fromkeys(accepted, "UPDATING")
        deadline = time.monotonic() + self._settings.poll_timeout_seconds
        while waiting := [d for d in accepted if d not in result]:
            read = read_segments(self.request, self._base_url, self._segments, [d.ref.id for d in waiting])
            for decision in waiting:
                urn = self._segments[decision.ref.id]
                answer = read[decision.ref.id]
                if isinstance(answer, LinkedInApiError):
                    result[decision] = f"removal from {urn} requested but its status could not be read: {answer}"
                    continue
                self._count("polls")
                last[decision] = status = destination_status(answer) or "missing"
                if status == "READY":
                    result[decision] = None
                elif status not in ("BUILDING", "UPDATING"):
                    result[decision] = (f"removal from {urn} requested but LinkedIn's segment status is {status}; "
                                        "the removal is not confirmed: re-run to retry")
            if len(result) == len(accepted):
                break
            if time.monotonic() >= deadline:
                for decision in (d for d in accepted if d not in result):
                    result[decision] = (f"removal from {self._segments[decision.ref.id]} requested but not confirmed: "
                                        f"the segment was still {last[decision]} after poll_timeout_seconds "
                                        f"({self._settings.poll_timeout_seconds:g} s); re-run to request it again")
                break
            time.sleep(min(self._settings.poll_seconds, max(deadline - time.monotonic(), 0.0)))
        return result

    # --- LinkedIn's failures ---

    def failure_of(self, response: requests.Response) -> HttpFailure:
        """LinkedIn's error answer; a DAY throttle (read from its message, tokens only) is fatal."""
        body = json_or_none(response)
        message = body.get("message") if isinstance(body, dict) else None
        throttle = _THROTTLE.search(message) if isinstance(message, str) else None
        daily = response.status_code == 429 and throttle is not None and throttle.group("period") == "DAY"
        return HttpFailure(response.status_code, code=token(body, "code"), fatal=daily,
                           detail=f"{throttle.group('scope')} DAY" if daily and throttle else None,
                           retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def explain(self, failure: HttpFailure) -> str | None:
        if failure.status == 429 and failure.fatal:
            return (f"LinkedIn's daily quota is used up ({failure.said} {failure.detail}); it clears at midnight "
                    "UTC, so this was not retried")
        return None

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.id not in self._segments and self._foreign(ref) is None:
            return f"segment {ref.id!r} is not configured in systems.{self._system}.settings.segments"
        return self._foreign(ref)


create = LinkedInConnector.create
