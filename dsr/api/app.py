"""The HTTP API (FastAPI; OpenAPI docs at /docs).

(No `from __future__ import annotations` here: FastAPI must see the real `Depends` objects
of the closures in `create_app`, not their names as strings.)

Routes by role (DESIGN.md, issue 5):
- auditor and officer: list requests, read one (no personal data for auditors), its timeline,
  download and verify its evidence bundles;
- officer: submit, verify, extend, cancel, download the subject package, issue a subject token;
- subject (single-use, expiring token): their own request's status, and the package once.
Every download is a ledger event. Errors name the field (422), the state (409) or the missing
request (404); no route ever returns a stack trace.
"""


from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, BinaryIO, Protocol

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dsr.access import AccessConfig, Principal, Role
from dsr.api.auth import principal_resolver, request_id_or_400, require
from dsr.api.intake import router as opendsr_router
from dsr.api.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from dsr.api.pages import mount_pages
from dsr.api.web import mount_web
from dsr.bundle import verify_bundle
from dsr.deadlines import DeadlineError
from dsr.models import RequestInputError, parse_new_request
from dsr.ledger.store import ChainTampered, IdentityTampered, LedgerError, UnknownRequest
from dsr.notify import SmtpConfig
from dsr.service import DsrService, RequestStateError
from dsr.signing import load_or_create_signing_key
from dsr.state import RequestState
from dsr.storage import IntegrityError as StorageIntegrityError
from dsr.storage import ObjectNotFound

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES  # the default cap; DSR_API_MAX_BODY_BYTES sets another


class EvidenceReader(Protocol):
    """What the API needs from storage (dsr.storage implements it)."""

    def get_bundle(self, request_id: str, version: int, *, expected_sha256: str | None = None) -> bytes: ...

    def open_package(self, request_id: str) -> BinaryIO: ...


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    email: str
    regime: str
    country: str | None = None
    received: datetime | None = None
    channel: str = "api"


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    note: str


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=2000)]


def _error(status_code: int, field: str | None, message: str) -> JSONResponse:
    detail: Any = [{"loc": ["body", field], "msg": message}] if field else message
    return JSONResponse({"detail": detail}, status_code=status_code)


def request_summary(state: RequestState, *, personal: bool, service: DsrService) -> dict[str, Any]:
    """A request as the API shows it; `personal` adds the subject's address (officers only)."""
    view = state.to_view()
    view["systems"] = {name: s.to_view() for name, s in sorted(state.systems.items())}
    if personal:
        view["subject"]["email"] = service.ledger.identity(state.request_id)
    return view


def _sealed_hash(state: RequestState, version: int) -> str | None:
    """The hash the ledger recorded when the bundle was sealed: what storage must give back."""
    return next((b.get("sha256") for b in state.bundles if b["version"] == version), None)


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route serves at this path: Starlette's own 405 names only the first route's."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
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

    @app.exception_handler(ExtensionNotAllowed)
    @app.exception_handler(PauseNotAllowed)
    async def _clock_refused(_: Request, exc: DeadlineError) -> JSONResponse:
        # The regime or the request's history refuses it (one extension only, say): a state, not a field.
        return _problem(status.HTTP_409_CONFLICT, None, str(exc))

    @app.exception_handler(RequestStateError)
    async def _state(_: Request, exc: RequestStateError) -> JSONResponse:
        return _problem(status.HTTP_409_CONFLICT, None, str(exc))

    @app.exception_handler(UnknownRequest)
    async def _unknown(_: Request, exc: UnknownRequest) -> JSONResponse:
        return _problem(status.HTTP_404_NOT_FOUND, None, "no such request")

    @app.exception_handler(IdentityTampered)
    @app.exception_handler(ChainTampered)
    async def _ledger_tampered(_: Request, exc: LedgerError) -> JSONResponse:
        # The ledger refuses to use an edited record: say which request and why (never an address).
        return _problem(status.HTTP_409_CONFLICT, None, str(exc))

    @app.exception_handler(ObjectNotFound)
    async def _missing(_: Request, exc: ObjectNotFound) -> JSONResponse:
        return _problem(status.HTTP_404_NOT_FOUND, None, "the stored object is missing")

    @app.exception_handler(StorageIntegrityError)
    async def _tampered(_: Request, exc: StorageIntegrityError) -> JSONResponse:
        # Never serve bytes that differ from what was sealed; and say so as a verdict on the evidence
        # (a 409 naming the failed check), not as a server fault: the server did its job.
        return JSONResponse({"detail": "stored content does not match the hash recorded when it was sealed",
                             "check": SEALED_HASH_CHECK}, status_code=status.HTTP_409_CONFLICT)


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

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # -- auditors and officers ------------------------------------------------------------------

    @app.get("/requests")
    def list_requests(
        who: Annotated[Principal, Depends(staff)],
        open_only: Annotated[bool, Query(alias="open")] = False,
        type: str | None = None,
        status_: Annotated[str | None, Query(alias="status")] = None,
    ) -> list[dict[str, Any]]:
        rows = service.list(open_only=open_only)
        return [
            {"request_id": r.request_id, "type": r.type, "regime": r.regime, "status": r.status,
             "received_at": r.received_at, "due": r.due}
            for r in rows if (type is None or r.type == type) and (status_ is None or r.status == status_)
        ]

    @app.get("/requests/{request_id}")
    def get_request(request_id: str, who: Annotated[Principal, Depends(staff)]) -> dict[str, Any]:
        state = service.state(request_id_or_400(request_id))
        return request_summary(state, personal=who.role == Role.OFFICER, service=service)

    @app.get("/requests/{request_id}/timeline")
    def timeline(request_id: str, who: Annotated[Principal, Depends(staff)]) -> list[dict[str, Any]]:
        return [e.to_dict() for e in service.events(request_id_or_400(request_id))]

    def _version(state: RequestState, version: int | None) -> int:
        versions = [b["version"] for b in state.bundles]
        if not versions:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no evidence bundle sealed for this request yet")
        chosen = version or max(versions)
        if chosen not in versions:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"version: no bundle version {chosen}")
        return chosen

    @app.get("/requests/{request_id}/bundle", response_class=Response,
             responses={200: {"content": {"application/zip": {}}}})
    def download_bundle(request_id: str, who: Annotated[Principal, Depends(staff)],
                        version: Annotated[int | None, Query(ge=1)] = None) -> Response:
        state = service.state(request_id_or_400(request_id))
        chosen = _version(state, version)
        data = evidence.get_bundle(request_id, chosen, expected_sha256=_sealed_hash(state, chosen))
        service.record_download(request_id, "bundle", by=who.name, role=who.role.value, version=chosen)
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="evidence-{request_id}-v{chosen}.zip"'})

    @app.get("/requests/{request_id}/bundle/verify")
    def verify(request_id: str, who: Annotated[Principal, Depends(staff)],
               version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        state = service.state(request_id_or_400(request_id))
        chosen = _version(state, version)
        signer = load_or_create_signing_key(service.settings.signing_key_path)
        result = verify_bundle(evidence.get_bundle(request_id, chosen, expected_sha256=_sealed_hash(state, chosen)),
                               signer.public_key)
        return {"ok": result.ok, "version": chosen, "reason": result.reason,
                "checks": [{"check": c, "passed": p, "detail": d} for c, p, d in result.checks]}

    # -- officers -----------------------------------------------------------------------------------

    @app.post("/requests", status_code=status.HTTP_201_CREATED)
    def submit(body: SubmitBody, who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        new = parse_new_request(type=body.type, email=body.email, regime=body.regime, country=body.country,
                                received=body.received or datetime.now(UTC), channel=body.channel)
        state = service.submit(new, actor=who.name).state
        return request_summary(state, personal=False, service=service)

    @app.post("/requests/{request_id}/verify")
    def verify_identity(request_id: str, body: VerifyBody,
                        who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        state = service.verify(request_id_or_400(request_id), method=body.method, note=body.note, actor=who.name)
        return request_summary(state, personal=False, service=service)

    @app.post("/requests/{request_id}/extend")
    def extend(request_id: str, body: ReasonBody, who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        state = service.extend(request_id_or_400(request_id), reason=body.reason, actor=who.name)
        return request_summary(state, personal=False, service=service)

    @app.post("/requests/{request_id}/cancel")
    def cancel(request_id: str, body: ReasonBody, who: Annotated[Principal, Depends(officer)]) -> dict[str, Any]:
        state = service.cancel(request_id_or_400(request_id), reason=body.reason, actor=who.name)
        return request_summary(state, personal=False, service=service)

    @app.get("/requests/{request_id}/package", response_class=StreamingResponse,
             responses={200: {"content": {"application/zip": {}}}})
    def download_package(request_id: str, who: Annotated[Principal, Depends(officer)]) -> StreamingResponse:
        state = service.state(request_id_or_400(request_id))
        return _package_response(state, who)

    @app.post("/requests/{request_id}/subject-token", status_code=status.HTTP_201_CREATED)
    def subject_token(request_id: str, who: Annotated[Principal, Depends(officer)],
                      days: Annotated[int, Body(embed=True, ge=1, le=30)] = 5) -> dict[str, str]:
        token, expires = service.issue_subject_token(request_id_or_400(request_id), ttl=timedelta(days=days),
                                                     actor=who.name)
        return {"token": token, "expires_at": expires.isoformat()}

    # -- subjects -----------------------------------------------------------------------------------

    @app.get("/subject/request")
    def subject_status(who: Annotated[Principal, Depends(subject)]) -> dict[str, Any]:
        state = service.state(str(who.request_id))
        return {"request_id": state.request_id, "type": state.type, "status": state.status.value,
                "due": state.due, "package_available": state.package is not None}

    @app.get("/subject/package", response_class=StreamingResponse,
             responses={200: {"content": {"application/zip": {}}}})
    def subject_package(request: Request, who: Annotated[Principal, Depends(subject)]) -> StreamingResponse:
        state = service.state(str(who.request_id))
        if state.package is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no package for this request")
        if not service.spend_subject_token(request.state.token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this link was already used; ask for a new one")
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
            "Content-Disposition": f'attachment; filename="your-data-{state.request_id}.zip"'})

    intake = service.policy.intake
    routes = opendsr_router(
        service, intake_smtp or (lambda: intake.email or service.policy.escalation.channels.email),
        duplicate_window=timedelta(days=intake.duplicate_window_days),
        callback_url_prefixes=callback_url_prefixes if callback_url_prefixes is not None
        else intake.callback_url_prefixes)
    app.include_router(routes)
    app.state.intake = routes.intake  # type: ignore[attr-defined]  # the router carries its Intake
    mount_pages(app, service=service, resolve=resolve, evidence=evidence)
    mount_web(app, service=service, access=access, evidence=evidence, intake=routes.intake)  # console, privacy center
    # Added last, so it is the outermost of our middlewares: bodies are capped before anything reads them.
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes or service.settings.api_max_body_bytes)
    return app
