"""The HTTP API (FastAPI; OpenAPI docs at /docs).

(No `from __future__ import annotations` here: FastAPI must see the real `Depends` objects
of the closures in `create_app`, not their names as strings.)

Routes by role (DESIGN.md):
- auditor and officer: list requests, read one (no personal data for auditors), its timeline,
  download and verify its evidence bundles;
- officer: submit, verify, extend, cancel, download the subject package, issue a subject token;
- subject (single-use, expiring token): their own request's status, and the package once.
Every download is a ledger event. The schema at /openapi.json is the contract, checked by
Schemathesis (tests/test_api_schema.py): every status a route can answer is declared with its body.
Errors name the field (422, never echoing the value sent), the state (409), stored evidence that is
not what was sealed (409 with the failed check) or the missing request (404); never a stack trace.
"""


import copy
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from doors.api.auth import BEARER_SCHEME, principal_resolver, require
from doors.api.bundles import EvidenceReader, sealed_hash, verify_stored_bundle
from doors.api.intake import router as opendsr_router
from doors.api.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from doors.api.ops import ops_router
from doors.api.pages import mount_pages
from doors.api.paging import (
    EVENTS_PAGE,
    EVENTS_PAGE_MAX,
    EVIDENCE_DOWNLOAD,
    EVIDENCE_HEADERS,
    LINK_HEADER,
    PACKAGE_HEADERS,
    PRIVATE_DOWNLOAD,
    REQUESTS_PAGE,
    REQUESTS_PAGE_MAX,
    entity_tag,
    link_next,
    not_modified,
    repr_digest,
)
from doors.api.schema import (
    AUTH,
    BODY,
    BY_ID,
    EDITED,
    QUERY,
    REQUEST_ID_PATTERN,
    STATE,
    TAMPERED,
    ZIP,
    EventView,
    NonBlankText,
    RequestRow,
    RequestView,
    SubjectStatus,
    SubjectToken,
    VerifyReport,
    responses,
)
from doors.api.web import mount_web
from dsr.access import AccessConfig, Principal, Role
from dsr.adapters.mail import SmtpConfig
from dsr.adapters.storage import IntegrityError as StorageIntegrityError
from dsr.adapters.storage import ObjectNotFound
from dsr.contract import RECTIFIABLE_FIELDS
from dsr.deadlines import DeadlineError, ExtensionNotAllowed, PauseNotAllowed, Regime, accepted_countries
from dsr.ledger.store import ChainTampered, IdentityTampered, UnknownRequest
from dsr.models import (
    EARLIEST_RECEIVED,
    VERIFICATION_METHODS,
    RequestInputError,
    RequestType,
    Status,
    parse_new_request,
)
from dsr.personal_text import redact_all
from dsr.service import DsrService, RequestStateError
from dsr.signing import load_or_create_signing_key
from dsr.state import RequestState, timeline_with_texts

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES  # the default cap; DSR_API_MAX_BODY_BYTES sets another

#: The check a bundle fails when storage gives back other bytes than were sealed (`dsr bundle verify`
#: reports the same mismatch as a failed member hash; here the ledger's own record is the reference).
SEALED_HASH_CHECK = "stored bytes match the SHA-256 the ledger recorded when the bundle was sealed"

RequestId = Annotated[str, Path(pattern=REQUEST_ID_PATTERN, max_length=64,
                                description="The request's id (a UUID for requests submitted here).")]


# RFC 3339 as JSON Schema's `date-time` means it: a full date, a time and an offset. Nothing looser
# (a bare number read as a Unix time, a bare date), or the schema would not say what is accepted.
RFC3339_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not RFC3339_DATE_TIME.match(value):
        raise ValueError("must be an RFC 3339 date-time with its offset, such as 2026-03-02T10:00:00Z")
    return value


ReceivedAt = Annotated[datetime, BeforeValidator(_rfc3339), Field(
    description=f"When the request arrived: not in the future, not before {EARLIEST_RECEIVED.date()}. "
                "Default: now.")]


def _countries_by_regime() -> list[dict[str, Any]]:
    """Which countries each regime accepts, as JSON Schema: one `if regime is R then country is one of`
    per regime, so a generated body is never one the deadline rules refuse."""
    rules = []
    for regime in Regime:
        countries = sorted(accepted_countries(regime))
        rules.append({"if": {"properties": {"regime": {"const": regime.value}}, "required": ["regime"]},
                      "then": {"properties": {"country": {"anyOf": [{"enum": countries}, {"type": "null"}]}}}})
    return rules


def _rectification_rules() -> list[dict[str, Any]]:
    """The service's rules for corrected fields, stated: a rectification names at least one, nothing else
    names any; each value is non-blank, an e-mail address or a telephone number where the field says."""
    values = {"type": "object", "properties": {"email": {"format": "email"},
                                               "phone": {"pattern": r"^\+?[0-9 ()./-]{3,40}$"}},
              "additionalProperties": {"pattern": r"\S"}}
    return [{"properties": {"changes": {"anyOf": [{"type": "null"}, values]}}},
            {"if": {"properties": {"type": {"const": RequestType.RECTIFICATION.value}}, "required": ["type"]},
             "then": {"required": ["changes"], "properties": {"changes": {"type": "object", "minProperties": 1}}},
             "else": {"properties": {"changes": {"anyOf": [{"type": "null"}, {"maxProperties": 0}]}}}}]


#: The submit body's cross-field rules, as JSON Schema (`allOf`) beside the fields' own.
_SUBMIT_RULES: dict[str, Any] = {"allOf": _countries_by_regime() + _rectification_rules()}


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_SUBMIT_RULES)

    type: RequestType
    email: Annotated[str, Field(min_length=3, max_length=320, json_schema_extra={"format": "email"},
                                description="The subject's address; trimmed and lower-cased.")]
    regime: Regime
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", min_length=2, max_length=2,
                                  json_schema_extra={"enum": sorted(set().union(*map(accepted_countries, Regime)))},
                                  description="ISO 3166 code, one the regime accepts (e.g. NL for gdpr); "
                                              "default: the regime's own.")] | None = None
    received: ReceivedAt | None = None
    channel: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$", max_length=32)] = "api"
    changes: Annotated[dict[str, Annotated[str, Field(max_length=300)]] | None, Field(
        description="Rectification only: canonical field (first_name, last_name, email, phone, postal_address, "
                    "company, title) -> corrected value.",
        json_schema_extra={"propertyNames": {"enum": list(RECTIFIABLE_FIELDS)}})] = None


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The service checks it (naming the choices); the schema lists them.
    method: Annotated[str, Field(max_length=48, json_schema_extra={"enum": list(VERIFICATION_METHODS)},
                                 description="How the identity was checked.")]
    note: Annotated[NonBlankText, Field(description="What was checked (kept as evidence; no e-mail address).")]


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[NonBlankText, Field(description="Why (kept as evidence; no e-mail address).")]


class SubjectTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: Annotated[int, Field(ge=1, le=30, description="How long the token lives.")] = 5


def _problem(status_code: int, field: str | None, message: str) -> JSONResponse:
    detail: Any = [{"loc": ["body", field], "msg": message, "type": "value_error"}] if field else message
    return JSONResponse({"detail": detail}, status_code=status_code)


def request_summary(state: RequestState, *, personal: bool, service: DsrService) -> dict[str, Any]:
    """A request as the API shows it; `personal` adds the subject's address (officers only)."""
    view = state.to_view()
    view["systems"] = {name: s.to_view() for name, s in sorted(state.systems.items())}
    if personal:
        view["subject"]["email"] = service.ledger.identity(state.request_id)
    return view


#: Refusals answered with a status and no field: the exception's own words, or a fixed message.
_REFUSALS: dict[type[Exception], tuple[int, str | None]] = {
    # The regime or the request's history refuses it (one extension only, say): a state, not a field.
    ExtensionNotAllowed: (status.HTTP_409_CONFLICT, None),
    PauseNotAllowed: (status.HTTP_409_CONFLICT, None),
    RequestStateError: (status.HTTP_409_CONFLICT, None),
    # The ledger refuses to use an edited record: say which request and why (never an address).
    IdentityTampered: (status.HTTP_409_CONFLICT, None),
    ChainTampered: (status.HTTP_409_CONFLICT, None),
    UnknownRequest: (status.HTTP_404_NOT_FOUND, "no such request"),
    ObjectNotFound: (status.HTTP_404_NOT_FOUND, "the stored object is missing"),
}


def _refused(code: int, message: str | None) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return _problem(code, None, message or str(exc))

    return handler


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route serves at this path: Starlette's own 405 names only the first route's."""
    methods: set[str] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            candidates = getattr(route, "effective_candidates", None)
            if candidates is not None:  # an included router (the /v1 routes and their deprecated twins)
                walk(candidates())
                continue
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods.update(getattr(route, "methods", None) or ())

    walk(app.router.routes)
    return ", ".join(sorted(methods))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # `loc`, `msg` and `type` only: pydantic's `input` (and `ctx`, which can quote it) would echo
        # what was sent, which may be someone's address.
        problems = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                    for e in exc.errors()]
        if problems and all(p["loc"][:1] == ["path"] for p in problems):
            # A malformed id names no resource: the same 400 as everywhere ids are checked.
            names = sorted({str(p["loc"][1]) for p in problems if len(p["loc"]) > 1}) or ["path"]
            return JSONResponse({"detail": f"{', '.join(names)}: not a valid {names[0].replace('_', ' ')}"},
                                status_code=status.HTTP_400_BAD_REQUEST)
        return JSONResponse({"detail": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            exc.headers = {**(exc.headers or {}), "Allow": _allowed_methods(app, request)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestInputError)
    async def _input(_: Request, exc: RequestInputError) -> JSONResponse:
        return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.field, str(exc).split(": ", 1)[-1])

    @app.exception_handler(DeadlineError)
    async def _deadline(_: Request, exc: DeadlineError) -> JSONResponse:
        field, _sep, message = str(exc).partition(": ")
        return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, field, message or str(exc))

    for refusal, (code, message) in _REFUSALS.items():
        app.add_exception_handler(refusal, _refused(code, message))

    @app.exception_handler(StorageIntegrityError)
    async def _tampered(_: Request, exc: StorageIntegrityError) -> JSONResponse:
        # Never serve bytes that differ from what was sealed; and say so as a verdict on the evidence
        # (a 409 naming the failed check), not as a server fault: the server did its job.
        return JSONResponse({"detail": "stored content does not match the hash recorded when it was sealed",
                             "check": SEALED_HASH_CHECK}, status_code=status.HTTP_409_CONFLICT)


def _document_rights(app: FastAPI, service: DsrService) -> None:
    """Add the policy's rights per regime to the schema of a submission (`if regime is R then type is
    one of`): which types a regime gives is configuration (policy.yaml), so it is read when the schema
    is asked for, not fixed in the model."""
    built = app.openapi

    def openapi() -> dict[str, Any]:
        schema = copy.deepcopy(built())
        body = schema.get("components", {}).get("schemas", {}).get("SubmitBody")
        if body is not None:
            body.setdefault("allOf", []).extend(
                {"if": {"properties": {"regime": {"const": regime.value}}, "required": ["regime"]},
                 "then": {"properties": {"type": {"enum": [t.value for t in service.policy.regimes[regime].rights]}}}}
                for regime in Regime)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend its schema


def create_app(service: DsrService, access: AccessConfig, evidence: EvidenceReader, *,
               intake_smtp: Callable[[], SmtpConfig | None] | None = None,
               callback_url_prefixes: tuple[str, ...] | None = None,
               max_body_bytes: int | None = None) -> FastAPI:
    app = FastAPI(title="dsr-pipeline", version="0.1.0",
                  description="Data-subject requests: intake, status, evidence bundles and packages. "
                              f"Officer, auditor and subject routes take a bearer token ({BEARER_SCHEME}).",
                  openapi_tags=[
                      {"name": "requests", "description": "Officers and auditors: requests, timelines, evidence."},
                      {"name": "officer", "description": "Officers only: submit and act on requests."},
                      {"name": "subject", "description": "The subject, with a single-use, expiring token."}])
    resolve = principal_resolver(service, access)
    staff = require(resolve, Role.OFFICER, Role.AUDITOR)
    officer = require(resolve, Role.OFFICER)
    subject = require(resolve, Role.SUBJECT)
    app.state.service, app.state.resolve = service, resolve
    _install_error_handlers(app)
    _document_rights(app, service)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(ops_router(service, evidence))  # /ready and /metrics for probes and Prometheus

    # The API's routes live under /v1; the unversioned paths of the first release answer too, for one
    # more release, marked deprecated in the schema (included below).
    api = APIRouter()

    # -- auditors and officers ------------------------------------------------------------------

    Limit = Annotated[int, Query(ge=1, le=REQUESTS_PAGE_MAX, description="At most this many in one page.")]
    After = Annotated[str | None, Query(pattern=REQUEST_ID_PATTERN, description=(
        "Start after this request (the last of the previous page; the `Link: rel=next` header names it)."))]

    @api.get("/requests", tags=["requests"], responses=responses(
        {200: {"headers": LINK_HEADER}}, AUTH, {404: {**BY_ID[404], "description": "No request `after` names."}},
        QUERY))
    def list_requests(
        request: Request, response: Response,
        who: Annotated[Principal, Depends(staff)],
        open_only: Annotated[bool, Query(alias="open", description="Only requests still open.")] = False,
        type: RequestType | None = None,
        status_: Annotated[Status | None, Query(alias="status")] = None,
        limit: Limit = REQUESTS_PAGE,
        after: After = None,
    ) -> list[RequestRow]:
        """Requests, oldest first, a page at a time (the next page's address in `Link`); no personal data."""
        everything = service.list()
        start: tuple[str, str] | None = None
        if after is not None:
            start = next(((r.received_at, r.request_id) for r in everything if r.request_id == after), None)
            if start is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "after: no such request")
        rows = [r for r in (service.list(open_only=True) if open_only else everything)
                if (type is None or r.type == type) and (status_ is None or r.status == status_)
                and (start is None or (r.received_at, r.request_id) > start)]
        page = rows[:limit]
        link_next(request, response, {"after": page[-1].request_id} if len(rows) > limit else None)
        return [RequestRow(request_id=r.request_id, type=RequestType(r.type), regime=Regime(r.regime),
                           status=Status(r.status), received_at=r.received_at, due=r.due) for r in page]

    @api.get("/requests/{request_id}", tags=["requests"], responses=responses(AUTH, BY_ID, EDITED),
             response_model=RequestView)
    def get_request(request_id: RequestId, who: Annotated[Principal, Depends(staff)]) -> dict[str, Any]:
        """One request's record; officers also see the subject's address."""
        if who.role == Role.OFFICER:
            return request_summary(service.state(request_id), personal=True, service=service)
        # Auditors never see personal data: addresses in kept texts and in old chains' clear notes go.
        return redact_all(request_summary(service.state(request_id, for_auditor=True), personal=False,
                                          service=service))

    @api.get("/requests/{request_id}/timeline", tags=["requests"],
             responses=responses({200: {"headers": LINK_HEADER}}, AUTH, BY_ID, QUERY, EDITED),
             response_model=list[EventView])
    def timeline(request_id: RequestId, request: Request, response: Response,
                 who: Annotated[Principal, Depends(staff)],
                 limit: Annotated[int, Query(ge=1, le=EVENTS_PAGE_MAX, description="At most this many events.")]
                 = EVENTS_PAGE,
                 after: Annotated[int, Query(ge=0, le=2**62, description=(
                     "Start after this event number (the `Link: rel=next` header names it)."))] = 0,
                 ) -> list[dict[str, Any]]:
        """The request's ledger events, oldest first, as chained, with the free text they reference; a
        page at a time (the next page's address in `Link`)."""
        auditor = who.role != Role.OFFICER
        chain = [event for event in service.events(request_id) if event.seq > after]
        page = chain[:limit]
        link_next(request, response, {"after": str(page[-1].seq)} if len(chain) > limit else None)
        events = timeline_with_texts(page, service.texts(request_id, for_auditor=auditor))
        # Old chains carry notes in the clear: an auditor gets them redacted (their hashes then differ;
        # the evidence bundle is what proves the chain).
        return redact_all(events) if auditor else events

    def _version(state: RequestState, version: int | None) -> int:
        versions = [b["version"] for b in state.bundles]
        if not versions:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no evidence bundle sealed for this request yet")
        chosen = version or max(versions)
        if chosen not in versions:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"version: no bundle version {chosen}")
        return chosen

    Version = Annotated[int | None, Query(ge=1, le=1_000_000, description="Default: the latest.")]

    @api.get("/requests/{request_id}/bundle", tags=["requests"], response_class=Response,
             responses=responses({**ZIP, 200: {**ZIP[200], "headers": EVIDENCE_HEADERS}},
                                 {304: {"description": "Not modified: `If-None-Match` names this bundle."}},
                                 AUTH, BY_ID, QUERY, TAMPERED))
    def download_bundle(request_id: RequestId, who: Annotated[Principal, Depends(staff)], request: Request,
                        version: Version = None,
                        if_none_match: Annotated[str | None, Header(max_length=1024, description=(
                            "An `ETag` of this bundle already held: answered 304, nothing sent."))] = None) -> Response:
        """The sealed evidence bundle (zip); the download is recorded in the ledger. Its SHA-256, sealed
        in the ledger, is its `ETag` and `Repr-Digest`."""
        state = service.state(request_id)
        chosen = _version(state, version)
        sealed = sealed_hash(state, chosen)
        tags = {"ETag": entity_tag(sealed), **EVIDENCE_DOWNLOAD} if sealed else dict(EVIDENCE_DOWNLOAD)
        if sealed and not_modified(request, sealed):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=tags)  # nothing sent: no download
        data = evidence.get_bundle(request_id, chosen, expected_sha256=sealed)
        service.record_download(request_id, "bundle", by=who.name, role=who.role.value, version=chosen)
        if sealed:
            tags["Repr-Digest"] = repr_digest(sealed)
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="evidence-{request_id}-v{chosen}.zip"', **tags})

    @api.get("/requests/{request_id}/bundle/verify", tags=["requests"],
             responses=responses(AUTH, BY_ID, QUERY, TAMPERED))
    def verify(request_id: RequestId, who: Annotated[Principal, Depends(staff)],
               version: Version = None) -> VerifyReport:
        """Check the stored bundle: member hashes, manifest, hash chain and signature."""
        state = service.state(request_id)
        chosen = _version(state, version)
        signer = load_or_create_signing_key(service.settings.signing_key_path)
        result, checks = verify_stored_bundle(evidence, state, chosen, signer.public_key)
        return VerifyReport.model_validate({"ok": result.ok, "version": chosen, "reason": result.reason,
                                            "checks": checks})

    # -- officers -----------------------------------------------------------------------------------

    @api.post("/requests", status_code=status.HTTP_201_CREATED, tags=["officer"], response_model=RequestView,
              responses=responses(AUTH, BODY))
    def submit(body: SubmitBody, who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        """Record a new request (status awaiting_verification)."""
        new = parse_new_request(type=body.type, email=body.email, regime=body.regime, country=body.country,
                                received=body.received or datetime.now(UTC), channel=body.channel,
                                changes=body.changes)
        state = service.submit(new, actor=who.name).state
        return request_summary(state, personal=False, service=service)

    acting = responses(AUTH, BY_ID, BODY, STATE)

    @api.post("/requests/{request_id}/verify", tags=["officer"], response_model=RequestView, responses=acting)
    def verify_identity(request_id: RequestId, body: VerifyBody,
                        who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        """Record that the requester's identity was verified; the request may then run."""
        state = service.verify(request_id, method=body.method, note=body.note, actor=who.name)
        return request_summary(state, personal=False, service=service)

    @api.post("/requests/{request_id}/extend", tags=["officer"], response_model=RequestView, responses=acting)
    def extend(request_id: RequestId, body: ReasonBody, who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        """Extend the deadline where the regime allows it."""
        state = service.extend(request_id, reason=body.reason, actor=who.name)
        return request_summary(state, personal=False, service=service)

    @api.post("/requests/{request_id}/cancel", tags=["officer"], response_model=RequestView, responses=acting)
    def cancel(request_id: RequestId, body: ReasonBody, who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        """Cancel an open request."""
        state = service.cancel(request_id, reason=body.reason, actor=who.name)
        return request_summary(state, personal=False, service=service)

    @api.get("/requests/{request_id}/package", tags=["officer"], response_class=StreamingResponse,
             responses=responses({200: {**ZIP[200], "headers": PACKAGE_HEADERS}}, AUTH, BY_ID, EDITED))
    def download_package(request_id: RequestId, who: Annotated[Principal, Depends(officer)]) -> StreamingResponse:
        """The subject's package (zip, personal data); the download is recorded in the ledger."""
        state = service.state(request_id)
        return _package_response(state, who)

    @api.post("/requests/{request_id}/subject-token", status_code=status.HTTP_201_CREATED, tags=["officer"],
              responses=acting)
    def subject_token(request_id: RequestId, body: SubjectTokenBody,
                      who: Annotated[Principal, Depends(officer)]) -> SubjectToken:
        """A single-use, expiring token for the subject's status and package (a completed access request)."""
        token, expires = service.issue_subject_token(request_id, ttl=timedelta(days=body.days), actor=who.name)
        return SubjectToken(token=token, expires_at=expires.isoformat())

    # -- subjects -----------------------------------------------------------------------------------

    @api.get("/subject/request", tags=["subject"], responses=responses(AUTH, EDITED))
    def subject_status(who: Annotated[Principal, Depends(subject)]) -> SubjectStatus:
        """The status of the token's own request."""
        state = service.state(str(who.request_id))
        return SubjectStatus(request_id=state.request_id, type=RequestType(state.type), status=state.status,
                             due=state.due, package_available=state.package is not None)

    @api.get("/subject/package", tags=["subject"], response_class=StreamingResponse,
             responses=responses({200: {**ZIP[200], "headers": PACKAGE_HEADERS}}, AUTH, {404: BY_ID[404]}, EDITED))
    def subject_package(request: Request, who: Annotated[Principal, Depends(subject)]) -> StreamingResponse:
        """The subject's package, once: the download spends the token."""
        state = service.state(str(who.request_id))
        if state.package is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no package for this request")
        if not service.spend_subject_token(request.state.token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this link was already used; ask for a new one",
                                headers={"WWW-Authenticate": "Bearer"})
        return _package_response(state, who)

    def _package_response(state: RequestState, who: Principal) -> StreamingResponse:
        if state.package is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no package for this request")
        stream = evidence.open_package(state.request_id)
        service.record_download(state.request_id, "package", by=who.name, role=who.role.value)

        def chunks() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(1 << 16):
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="your-data-{state.request_id}.zip"', **PRIVATE_DOWNLOAD})

    app.include_router(api, prefix="/v1")
    app.include_router(api, deprecated=True)

    intake = service.policy.intake
    routes = opendsr_router(
        service, intake_smtp or (lambda: intake.email or service.policy.escalation.channels.email),
        duplicate_window=timedelta(days=intake.duplicate_window_days),
        callback_url_prefixes=callback_url_prefixes if callback_url_prefixes is not None
        else intake.callback_url_prefixes)
    app.include_router(routes)
    app.state.intake = routes.intake  # the router carries its Intake
    mount_pages(app, service=service, resolve=resolve, evidence=evidence)
    mount_web(app, service=service, access=access, evidence=evidence, intake=routes.intake)  # console, privacy center
    # Added last, so it is the outermost of our middlewares: bodies are capped before anything reads them.
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes or service.settings.api_max_body_bytes)
    return app
