"""What the API answers, as models: the OpenAPI schema at /openapi.json is built from these, and
`tests/test_api_schema.py` (Schemathesis) checks that every answer is what the schema says.

(No `from __future__ import annotations`: FastAPI and pydantic read these annotations at runtime.)

Views that other parts grow (a request's record, a system's part) allow keys beyond those listed,
so that a field added to the record reaches callers without a schema change here first.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from dsr.deadlines import Regime
from dsr.models import RequestType, Status
from dsr.state import SystemStatus

# Request ids become storage keys and file names: plain id characters only (a UUID fits).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors ---------------------------------------------------------------------------------------


class Problem(BaseModel):
    """One bad field. Never the value that was sent: it may be someone's personal data."""

    loc: list[str | int] = Field(description='Where: ["body", "email"], ["query", "version"], ...')
    msg: str
    type: str = Field(description="A stable code for the kind of problem (missing, value_error, ...).")


class ValidationReply(BaseModel):
    detail: list[Problem]


class ErrorReply(BaseModel):
    detail: str | list[Problem]


class IntegrityVerdict(BaseModel):
    """Stored evidence that is not what the ledger sealed: a verdict, not a server fault."""

    detail: str
    check: str = Field(description="The check that failed, as `dsr bundle verify` names it.")


# -- replies --------------------------------------------------------------------------------------


class RequestRow(BaseModel):
    request_id: str
    type: RequestType
    regime: Regime
    status: Status
    received_at: str
    due: str | None


class Subject(_Open):
    kind: str
    identity_hash: str
    email: str | None = Field(default=None, description="Officers only: the address the request is about.")


class SystemView(_Open):
    system: str
    status: SystemStatus
    connector_version: str | None
    records_found: int
    found_by_object: dict[str, int]
    records_exported: int | None
    export_sha256: str | None
    actions: dict[str, int]
    exemptions: list[dict[str, Any]]
    vendor_receipt_id: str | None
    post_erasure_requery: dict[str, Any]
    error: str | None
    attempts: int
    manual_task: dict[str, Any] | None


class ClockEventView(_Open):
    kind: str
    at: str
    reason: str | None


class RequestView(_Open):
    """A request's record; the subject appears as a keyed hash (and, for officers, the address)."""

    request_id: str
    type: RequestType
    regime: Regime
    country: str | None
    channel: str
    received_at: str
    subject: Subject
    status: Status
    verification: dict[str, Any] | None
    deadline: dict[str, Any] | None
    clock_events: list[ClockEventView]
    systems_planned: list[str]
    systems: dict[str, SystemView]
    package: dict[str, Any] | None
    outcome_reason: str | None
    cancel_reason: str | None
    bundles: list[dict[str, Any]]
    acknowledged_at: str | None
    alerts: list[dict[str, Any]]
    last_seq: int


class EventView(BaseModel):
    """One ledger event, as chained: `hash` covers the event and `prev_hash`."""

    request_id: str
    seq: int
    at: str
    actor: str
    type: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    free_text: dict[str, str] | None = Field(
        default=None, description="The notes/reasons the payload references by SHA-256 (`note_sha256`...), as kept "
        "beside the chain: the text, or `[redacted]`; for auditors, e-mail addresses in it are redacted.")


class CheckResult(BaseModel):
    check: str
    passed: bool
    detail: str | None


class VerifyReport(BaseModel):
    ok: bool
    version: int
    reason: str | None
    checks: list[CheckResult]


class SubjectToken(BaseModel):
    token: str = Field(description="Shown once; single-use for the package download.")
    expires_at: str


class SubjectStatus(BaseModel):
    request_id: str
    type: RequestType
    status: Status
    due: str | None
    package_available: bool


# -- what each kind of route may answer -----------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]

ZIP: Responses = {200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                        "description": "The zip file."}}
AUTH: Responses = {
    401: {"model": ErrorReply, "description": "No bearer token, or an unknown, expired or used-up one.",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    403: {"model": ErrorReply, "description": "The token's role may not do this."},
}
BY_ID: Responses = {
    400: {"model": ErrorReply, "description": "Not a valid request id."},
    404: {"model": ErrorReply, "description": "No such request (or nothing of that kind for it)."},
}
QUERY: Responses = {422: {"model": ValidationReply, "description": "A bad query parameter, named in `loc`."}}
BODY: Responses = {
    400: {"model": ErrorReply, "description": "A body that is not JSON, or a bad `Content-Length`."},
    413: {"model": ErrorReply, "description": "A body over the size limit (DSR_API_MAX_BODY_BYTES)."},
    422: {"model": ValidationReply, "description": "A bad field, named in `loc` (its value is never echoed)."},
}
EDITED: Responses = {409: {"model": ErrorReply, "description": "The request's ledger record was edited: its hash "
                                                            "chain or the identity it holds does not verify."}}
STATE: Responses = {409: {"model": ErrorReply, "description": "Refused in the request's current state, or its "
                                                           "ledger record was edited (it does not verify)."}}
TAMPERED: Responses = {409: {"model": IntegrityVerdict | ErrorReply,
                             "description": "The stored evidence differs from what the ledger sealed (the failed "
                                            "`check` named), or the request's ledger record was edited."}}


def responses(*groups: Responses) -> Responses:
    merged: Responses = {}
    for group in groups:
        merged.update(group)
    return merged


NonBlankText = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
