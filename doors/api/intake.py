"""The public OpenDSR door: controllers and the web form's backend submit, subjects return codes.

(No `from __future__ import annotations`: FastAPI must see the real annotations of the routes.)

OpenDSR 2.0 (the protocol, dsr.opendsr), under `/opendsr/v2`:
- `GET /v2/discovery` — api_version, supported identities and request types, the certificate URL.
- `GET /v2/certificate.pem` — the processor certificate that signs responses and callbacks.
- `POST /v2/requests` — a request. 201 with controller_id, received_time (our receipt),
  expected_completion_time, encoded_request, subject_request_id, processor_signature; 400 with the
  spec's error object naming every bad field (never a value); 403 when a signature does not verify
  (or none is sent and DSR_OPENDSR_REQUIRE_SIGNATURE is on); 503 when e-mail codes cannot be sent.
- `GET /v2/requests/{id}` — its status (pending, in_progress, completed, cancelled).
- `DELETE /v2/requests/{id}` — cancel while pending: 202 with the spec's cancellation object.
- `POST /v2/requests/{id}/verify` `{"code": "123456"}` — extension: the e-mailed code.
- `GET /v2/results/{token}` — a completed request's package, once, through the single-use link a
  completion callback carried.
OpenGDPR 1.0 (section 10.1: the prior name's routes and headers are honoured), under `/opendsr/v1`:
`discovery`, `opengdpr_requests`, `opengdpr_requests/{id}` (GET, DELETE); a body without
`regulation` is gdpr there. Every OpenDSR answer carries `X-OpenDSR-Processor-Domain` and
`X-OpenDSR-Signature` (Base64 signature of the body bytes with the certificate's key), and the
`X-OpenGDPR-*` twins, and `Cache-Control: no-store`.

Signed requests: a body with `X-OpenDSR-Signature` (or `X-OpenGDPR-Signature`) is checked against
the configured controllers' certificates (dsr.opendsr_signing); the one that verifies is the
request's controller, which has verified its subject (no code is e-mailed), is not held to the
per-address rate limit (the spec asks not to throttle in normal operation), and must sign a
DELETE of its request (the signature of the request id's bytes). Unsigned requests belong to the
default controller (the company's web form) and are verified by an e-mailed code.

The unversioned routes of the web form's backend are kept as they were (`{"detail": ...}` errors,
422 for a bad body): `POST /opendsr/requests`, `POST /opendsr/requests/{id}/verify`,
`GET /opendsr/requests/{id}`.

Every route is rate-limited per client address unless signed by a controller (in memory). The
client address is the socket peer's; behind a proxy, name it in DSR_TRUSTED_PROXIES (`dsr serve`
then has uvicorn believe that proxy's X-Forwarded-For, and no one else's).
"""

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from doors.api.limits import shared_client_limit
from doors.api.paging import PRIVATE_DOWNLOAD
from dsr import opendsr
from dsr.adapters.webhooks import MAX_CALLBACK_URLS, MAX_URL_LENGTH
from dsr.deadlines import Regime, accepted_countries
from dsr.intake import (
    REGULATIONS,
    TYPES,
    CodeLimits,
    CodeRefused,
    Intake,
    IntakeConflict,
    IntakeInvalid,
    IntakeOutcome,
    IntakeUnavailable,
    SmtpConfigProvider,
)
from dsr.ledger.events import format_timestamp
from dsr.ledger.store import UnknownRequest
from dsr.models import RequestType
from dsr.opendsr_signing import OpenDsrKeyError, load_controllers, processor_identity, verify_bytes
from dsr.service import DsrService, RequestStateError

EXAMPLE = {
    "subject_request_id": "7a1c7e46-3f63-4f7c-9a1e-2b0e6c1d5f3a",
    "subject_request_type": "access",
    "submitted_time": "2026-03-02T10:00:00Z",
    "subject_identities": [{"identity_type": "email", "identity_value": "jane@example.com", "identity_format": "raw"}],
    "regulation": "gdpr",
    "status_callback_urls": ["https://forms.example.com/opendsr/callback"],
}


# -- the bodies, as they are checked (dsr.intake.parse_opendsr), stated as JSON Schema ----------------

#: An OpenDSR id: a version-4 UUID (read case-insensitively).
SUBJECT_REQUEST_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
#: RFC 3339 with its offset, as the intake reads `submitted_time`.
SUBMITTED_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
CODE_BODY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["code"], "additionalProperties": False,
    "properties": {"code": {"type": "string", "pattern": r"^\d{6}$", "description": "The 6 digits from the e-mail."}}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _named(field: str) -> dict[str, Any]:
    """`field` is present and not null."""
    return {"required": [field], "properties": {field: {"type": "string"}}}


def request_body_schema(rights: Mapping[Regime, Iterable[RequestType]], *, extension_domain: str | None,
                        regulation_implied: bool = False) -> dict[str, Any]:
    """An OpenDSR request body exactly as the intake accepts it, as JSON Schema.

    Beyond field types: one e-mail identity, sent raw (a code is e-mailed to it); the regime named by
    `regulation`, `regime` or our extension's `regime` (all that are given agree); the country, where
    given, one that regime accepts; a request type that regime gives a right to (`rights`, the policy's). `extension_domain`: the processor domain whose entry in
    `extensions` carries our extensions (None: no extension is read). `regulation_implied`: OpenGDPR
    1.0, where a body naming neither `regulation` nor `regime` is a GDPR request.
    """
    extensions: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "object"},
                                  "description": "Per processor domain, an object of that processor's extensions."}
    if extension_domain is not None:
        extensions["properties"] = {extension_domain: {
            "type": "object", "additionalProperties": False,
            "description": "Ours: `regime` (gdpr, uk-gdpr, ccpa, lgpd, pipeda) and `country` (ISO 3166).",
            "properties": {"regime": _nullable({"type": "string"}), "country": _nullable({"type": "string"})}}}
    identity = {"type": "object", "required": ["identity_type", "identity_value"], "additionalProperties": False,
                "properties": {"identity_type": {"type": "string", "enum": ["email"]},
                               "identity_value": {"type": "string", "format": "email", "minLength": 3,
                                                  "maxLength": 320},
                               "identity_format": {"type": "string", "enum": ["raw"], "default": "raw"}}}
    schema: dict[str, Any] = {
        "type": "object", "additionalProperties": False,
        "required": ["subject_request_id", "subject_request_type", "submitted_time", "subject_identities"],
        "properties": {
            "subject_request_id": {"type": "string", "pattern": SUBJECT_REQUEST_ID_PATTERN,
                                   "description": "The controller's id for the request: a UUID (version 4)."},
            "subject_request_type": {"type": "string", "enum": list(TYPES)},
            "submitted_time": {"type": "string", "format": "date-time", "pattern": SUBMITTED_TIME_PATTERN,
                               "description": "When the subject asked (RFC 3339, with its offset); "
                                              "not in the future (5 minutes of clock skew are allowed), "
                                              "not before 0001-01-01T00:00:00Z."},
            "subject_identities": {"type": "array", "minItems": 1, "maxItems": 1, "items": identity,
                                   "description": "Exactly one identity: the subject's e-mail address, raw."},
            "regulation": _nullable({"type": "string", "maxLength": 32}),
            "regime": _nullable({"type": "string", "maxLength": 32}),
            "country": _nullable({"type": "string", "maxLength": 8}),
            "status_callback_urls": {"type": "array", "maxItems": MAX_CALLBACK_URLS, "items": {
                "type": "string", "pattern": "^https://", "maxLength": MAX_URL_LENGTH,
                "description": "An https URL whose host is a name or a public address (or under the "
                               "configured callback prefixes), without . or .. segments."}},
            "api_version": _nullable({"type": "string", "maxLength": 16}),
            "property_id": _nullable({"type": "string", "maxLength": 200}),
            "extensions": _nullable(extensions),
        },
    }
    named = [_named("regulation"), _named("regime")]
    if extension_domain is not None:
        by_extension: dict[str, Any] = {"required": ["extensions"], "properties": {"extensions": {
            "type": "object", "required": [extension_domain], "properties": {extension_domain: _named("regime")}}}}
        if regulation_implied:  # only where `regulation` or `regime` is sent (null): else gdpr is implied
            by_extension["anyOf"] = [{"required": ["regulation"]}, {"required": ["regime"]}]
        named.append(by_extension)
    by_regime = []
    for regime in Regime:
        spelled = {"type": "string", "enum": sorted(k for k, v in REGULATIONS.items() if v is regime)}
        countries = {"type": "string", "enum": sorted(accepted_countries(regime))}
        types = {"type": "string", "enum": [name for name, kind in TYPES.items() if kind in set(rights[regime])]}
        branch: dict[str, Any] = {"properties": {"regulation": _nullable(spelled), "regime": _nullable(spelled),
                                                 "country": _nullable(countries), "subject_request_type": types}}
        if extension_domain is not None:
            branch["properties"]["extensions"] = {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
                extension_domain: {"properties": {"regime": _nullable(spelled), "country": _nullable(countries)}}}}]}
        implied = regulation_implied and regime is Regime.GDPR
        # Neither `regulation` nor `regime` sent at all: OpenGDPR 1.0 reads the body as GDPR.
        branch["anyOf"] = named + ([{"properties": {"regulation": False, "regime": False}}] if implied else [])
        by_regime.append(branch)
    schema["anyOf"] = by_regime
    return schema


#: An OpenAPI `responses` table (FastAPI's own type for it).
_Docs = dict[int | str, dict[str, Any]]


class IntakeRouter(APIRouter):
    """The OpenDSR routes, carrying the `Intake` behind them (the app's pages share it; tests read it)."""

    def __init__(self, intake: Intake, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.intake = intake


class RateLimiter:
    """At most `limit` calls per client in any `per_seconds` (sliding window, thread-safe, in memory)."""

    def __init__(self, limit: int, per_seconds: float, *, max_clients: int = 50_000) -> None:
        self.limit, self.per_seconds, self.max_clients = limit, per_seconds, max_clients
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """None when the call may go ahead (and counts it), else seconds to wait."""
        now = time.monotonic()
        with self._lock:
            calls = self._calls.get(client)
            if calls is None:
                if len(self._calls) >= self.max_clients:
                    self._prune(now)
                calls = self._calls[client] = deque()
            while calls and now - calls[0] >= self.per_seconds:
                calls.popleft()
            if len(calls) >= self.limit:
                return self.per_seconds - (now - calls[0])
            calls.append(now)
            return None

    def _prune(self, now: float) -> None:
        for key in [k for k, calls in self._calls.items() if not calls or now - calls[-1] >= self.per_seconds]:
            del self._calls[key]
        while len(self._calls) >= self.max_clients:  # still full: forget the longest idle
            del self._calls[min(self._calls, key=lambda k: self._calls[k][-1] if self._calls[k] else 0.0)]


def _detail(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _answer(call: Callable[[], Any]) -> Any:
    """Run a route's work; the intake's errors become their HTTP answers."""
    try:
        return call()
    except IntakeInvalid as exc:
        return _detail(422, exc.detail())
    except CodeRefused as exc:
        return _detail(status.HTTP_400_BAD_REQUEST, [{"loc": ["body", "code"], "msg": str(exc)}])
    except IntakeConflict as exc:
        return _detail(status.HTTP_409_CONFLICT, str(exc))
    except RequestStateError as exc:
        return _detail(status.HTTP_409_CONFLICT, str(exc))
    except IntakeUnavailable as exc:
        return _detail(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
    except UnknownRequest:
        return _detail(status.HTTP_404_NOT_FOUND, "no such request")


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _submitted_view(intake: Intake, outcome: IntakeOutcome) -> dict[str, Any]:
    view = intake.public_status(outcome.state.request_id)
    target = outcome.duplicate_of or outcome.state.request_id
    code = outcome.code
    verified = intake.service.ledger.exists(target) and intake.service.state(target).verified
    view["verification"] = {"method": "email-code", "subject_request_id": target, "verified": verified,
                            "code_sent": bool(code and code.sent), "code_expires_at": code.expires_at if code else None,
                            # why no code went out although none is usable: request_limit, identity_limit...
                            "code_withheld": code.withheld if code else None}
    return view


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    """An operation's JSON request body, declared as the route checks it (the route reads it itself)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}


_DETAIL_TEXT = {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}


def _legacy_problems(description: str) -> dict[str, Any]:
    """The unversioned routes' 422: `{"detail": [{"loc", "msg"}]}`, each problem naming its field."""
    problem = {"type": "object", "required": ["loc", "msg"],
               "properties": {"loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                              "msg": {"type": "string"}, "type": {"type": "string"}}}
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": ["detail"],
        "properties": {"detail": {"type": "array", "items": problem}}}}}}


def router(service: DsrService, smtp_config_provider: SmtpConfigProvider, *,
           duplicate_window: timedelta = timedelta(days=7),
           callback_url_prefixes: Sequence[str] = (),
           submit_limit: tuple[int, float] = (10, 60.0),
           verify_limit: tuple[int, float] = (20, 60.0),
           status_limit: tuple[int, float] = (60, 60.0),
           code_lifetime: timedelta = timedelta(minutes=10),
           max_attempts: int = 3,
           code_limits: CodeLimits | None = None) -> IntakeRouter:
    """The OpenDSR routes under /opendsr, for `app.include_router(...)`.

    Args:
        service: The service the rest of the API uses.
        smtp_config_provider: Returns the SMTP settings for code e-mails (`SmtpConfig`; its
            `recipients` are ignored: a code goes to the subject only), or None when none are
            configured (the intake then answers 503). Called on each submission, so a policy
            reload is picked up.
        duplicate_window: Same subject and type again within this, while the first is open: linked.
        callback_url_prefixes: Callback URLs must start with one of these (empty: any public https URL).
        submit_limit, verify_limit, status_limit: (calls, per seconds) per client address.
        code_limits: Codes and wrong guesses allowed (default: the policy's `intake` caps, with the two above).
    """
    if code_limits is None:  # the policy's caps (`intake:` in policy.yaml), with this door's code lifetime
        policy = service.policy.intake
        code_limits = CodeLimits(code_lifetime=code_lifetime, attempts_per_code=max_attempts,
                                 failures_per_request=policy.failures_per_request,
                                 codes_per_request=policy.codes_per_request,
                                 codes_per_request_per_window=policy.codes_per_request_per_day,
                                 codes_per_identity_per_window=policy.codes_per_identity_per_day)
    intake = service.intake(smtp_config_provider, duplicate_window=duplicate_window,
                            callback_url_prefixes=callback_url_prefixes, limits=code_limits)
    if service.settings.opendsr_calls_per_minute is not None:  # one setting for all three (a trusted load)
        submit_limit = verify_limit = status_limit = (service.settings.opendsr_calls_per_minute, 60.0)
    controllers = load_controllers(service.settings)  # a bad file fails here, naming the setting
    if service.settings.opendsr_certificate_file or service.settings.opendsr_key_file:
        processor_identity(service.settings)  # configured certificate and key: checked now, not at the first answer
    # Per client address, counted in the database every API process shares (doors.api.limits).
    # The rights each regime gives, as the policy says: the bodies' schema names the types each accepts.
    rights = {regime: service.policy.regimes[regime].rights for regime in Regime}
    limits = {name: shared_client_limit(service, f"opendsr-{name}", *limit)
              for name, limit in (("submit", submit_limit), ("verify", verify_limit), ("status", status_limit))}
    api = IntakeRouter(intake, prefix="/opendsr", tags=["opendsr (public)"])

    def limited(request: Request, which: str) -> JSONResponse | None:
        wait = limits[which].retry_after(_client(request))
        if wait is None:
            return None
        return _detail(status.HTTP_429_TOO_MANY_REQUESTS, "too many requests; try again later",
                       {"Retry-After": str(max(1, math.ceil(wait)))})

    @api.post("/requests", status_code=status.HTTP_201_CREATED,
              responses={200: {"description": "the same request was submitted before"},
                         400: {"description": "the body cannot be read (not UTF-8 JSON)", "content": {
                             "application/json": {"schema": _DETAIL_TEXT}}},
                         409: {"description": "the id is taken by other content"},
                         413: {"description": "body larger than the cap"},
                         422: _legacy_problems("bad body; every problem names its field"),
                         429: {"description": "rate limited"},
                         503: {"description": "e-mail verification is not configured"}},
              openapi_extra=_body(request_body_schema(rights, extension_domain=None), EXAMPLE))
    def submit_opendsr(request: Request, background: BackgroundTasks,
                       body: Annotated[Any, Body(examples=[EXAMPLE])]) -> Any:
        """Submit an OpenDSR request from the web form; a 6-digit code is e-mailed to the subject."""
        refused = limited(request, "submit")
        if refused is not None:
            return refused

        def work() -> Any:
            outcome = intake.submit(body)  # a duplicate is cancelled through the service, which tells its callbacks
            code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
            return JSONResponse(_submitted_view(intake, outcome), status_code=code)

        return _answer(work)

    @api.post("/requests/{request_id}/verify",
              responses={400: {"description": "the code is not accepted (never says why)"},
                         404: {"description": "not a request id"},
                         409: {"description": "the request is closed"},
                         413: {"description": "body larger than the cap"},
                         422: _legacy_problems("not a 6-digit code"), 429: {"description": "rate limited"}},
              openapi_extra=_body(CODE_BODY_SCHEMA, {"code": "123456"}))
    def verify_opendsr(request_id: str, request: Request, background: BackgroundTasks,
                       body: Annotated[Any, Body(examples=[{"code": "123456"}])]) -> Any:
        """Return the 6-digit code from the e-mail: the request's identity is then verified."""
        refused = limited(request, "verify")
        if refused is not None:
            return refused
        if not intake.valid_request_id(request_id):
            return _detail(status.HTTP_404_NOT_FOUND, "no such request")

        def work() -> Any:
            if not isinstance(body, dict):
                raise IntakeInvalid([((), 'must be a JSON object: {"code": "123456"}')])
            extra = sorted(str(key) for key in body if key != "code")
            if extra or "code" not in body:
                raise IntakeInvalid([((key,), "not allowed") for key in extra] or [(("code",), "required")])
            state = intake.verify_code(request_id, body.get("code"))  # the service tells the callbacks
            return intake.public_status(state.request_id) | {"verified": state.verified}

        return _answer(work)

    @api.get("/requests/{request_id}", responses={404: {"description": "no such request"},
                                                  429: {"description": "rate limited"}})
    def status_opendsr(request_id: str, request: Request) -> Any:
        """The OpenDSR status of a request submitted here (pending, in_progress, completed, cancelled, denied)."""
        refused = limited(request, "status")
        if refused is not None:
            return refused
        if not intake.valid_request_id(request_id):
            return _detail(status.HTTP_404_NOT_FOUND, "no such request")
        return _answer(lambda: intake.public_status(request_id))

    _protocol_routes(api, intake, controllers, limited)
    return api


# -- OpenDSR 2.0 and OpenGDPR 1.0 ------------------------------------------------------------------


_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                   "errors": {"type": "array", "items": {"type": "object", "properties": {
                       "domain": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"}}}}}}}}


def _spec_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


_LIMIT_RESPONSES: _Docs = {
    413: {"description": "body larger than the cap"}, 429: _spec_response("rate limited (unsigned callers)")}


class _Refused(Exception):
    def __init__(self, code: int, message: str, problems: Sequence[tuple[str, str]] = (), *,
                 reason: str = "IllegalArgumentException", domain: str = "Validation") -> None:
        super().__init__(message)
        self.code, self.message, self.problems, self.reason, self.domain = code, message, problems, reason, domain


def _protocol_routes(api: APIRouter, intake: Intake, controllers: Any,
                     limited: Callable[[Request, str], JSONResponse | None]) -> None:
    service = intake.service
    settings = service.settings

    def identity() -> Any:
        return processor_identity(settings)

    def domain() -> str:
        return identity().domain

    def base_url(request: Request) -> str:
        return (settings.opendsr_base_url or f"{str(request.base_url).rstrip('/')}/opendsr").rstrip("/")

    def signed(payload: dict[str, Any], code: int = 200) -> Response:
        body = opendsr.canonical(payload)
        headers = opendsr.signature_headers(identity(), body) | {"Cache-Control": "no-store", "Pragma": "no-cache"}
        return Response(body, status_code=code, media_type="application/json", headers=headers)

    def refused(exc: _Refused) -> Response:
        return signed(opendsr.error_object(exc.code, exc.message, exc.problems, reason=exc.reason,
                                           domain=exc.domain), exc.code)

    def throttled(request: Request, which: str) -> Response | None:
        answer = limited(request, which)
        if answer is None:
            return None
        retry = answer.headers.get("Retry-After", "60")
        response = refused(_Refused(429, "too many requests; try again later", reason="RateLimited", domain="Usage"))
        response.headers["Retry-After"] = retry
        return response

    def signature_of(request: Request) -> str | None:
        return next((request.headers[h] for h in opendsr.SIGNATURE_HEADERS if request.headers.get(h)), None)

    def signer(request: Request, raw: bytes) -> str | None:
        """The controller that signed `raw`; None when unsigned (and allowed to be); _Refused otherwise."""
        signature = signature_of(request)
        if signature is None:
            if settings.opendsr_require_signature:
                raise _Refused(403, "a controller signature (X-OpenDSR-Signature) is required",
                               reason="SignatureRequired", domain="Authentication")
            return None
        found = controllers.identify(raw, signature)
        if found is None:
            raise _Refused(403, "the signature does not verify with any known controller's certificate",
                           reason="InvalidSignature", domain="Authentication")
        return str(found)

    def known(request_id: str) -> str:
        request_id = request_id.strip().lower()
        if not intake.valid_request_id(request_id) or not intake.is_intake_request(request_id):
            raise _Refused(404, "no such request", reason="NotFound", domain="Request")
        return request_id

    def extension(view: dict[str, Any], **more: Any) -> dict[str, Any]:
        """Our extension object: what we say beyond the spec, under our processor domain."""
        ours = {"regime": view["regulation"], "subject_request_type": view["subject_request_type"],
                "updated_time": view["updated_time"], "duplicate_of": view.get("duplicate_of")} | more
        return {domain(): {k: v for k, v in ours.items() if v is not None}}

    def status_view(request_id: str, version: str) -> dict[str, Any]:
        view = intake.public_status(request_id)
        spec_status, denied = opendsr.spec_status(view["request_status"])
        return {"api_version": version, "controller_id": intake.controller_id(request_id),
                "subject_request_id": request_id, "request_status": spec_status,
                "expected_completion_time": view["expected_completion_time"],
                "extensions": extension(view, request_status_reason=denied or view.get("request_status_reason"))}

    async def submit(request: Request, version: str) -> Response:
        raw = await request.body()
        try:
            controller = signer(request, raw)
            if controller is None:
                wait = throttled(request, "submit")
                if wait is not None:
                    return wait
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise _Refused(400, "the body is not valid JSON", [("body", "not valid JSON")]) from None
            if version == opendsr.OPENGDPR_API_VERSION and isinstance(body, dict) and "regulation" not in body \
                    and "regime" not in body:
                body = body | {"regulation": "gdpr"}  # OpenGDPR 1.0 bodies had no regulation: GDPR was implied
            outcome = await run_in_threadpool(intake.submit, body, controller_id=controller,
                                              extension_domain=domain())
        except _Refused as exc:
            return refused(exc)
        except IntakeInvalid as exc:
            return refused(_Refused(400, "the request is not valid", _problems(exc)))
        except IntakeConflict as exc:
            return refused(_Refused(400, str(exc), [("subject_request_id", "already used with other content")],
                                    reason="Conflict"))
        except IntakeUnavailable as exc:
            return refused(_Refused(503, str(exc), reason="Unavailable", domain="Service"))
        rid = outcome.state.request_id
        view = intake.public_status(rid)
        code = outcome.code
        verification = {"method": "email-code", "subject_request_id": outcome.duplicate_of or rid,
                        "code_sent": bool(code and code.sent), "code_expires_at": code.expires_at if code else None,
                        "code_withheld": code.withheld if code else None} if controller is None else \
            {"method": "opendsr-controller", "verified": True}
        spec_status, denied = opendsr.spec_status(view["request_status"])
        payload = {
            "api_version": version, "controller_id": intake.controller_id(rid),
            "subject_request_id": rid, "received_time": view["received_time"],
            "expected_completion_time": view["expected_completion_time"],
            "encoded_request": opendsr.encoded_request(raw),
            "extensions": extension(view, request_status=spec_status,
                                    request_status_reason=denied or view.get("request_status_reason"),
                                    verification=verification),
        }
        return signed(opendsr.with_processor_signature(identity(), payload), status.HTTP_201_CREATED)

    async def status_of(request: Request, request_id: str, version: str) -> Response:
        wait = throttled(request, "status")
        if wait is not None:
            return wait
        try:
            rid = known(request_id)
            return signed(await run_in_threadpool(status_view, rid, version))
        except _Refused as exc:
            return refused(exc)

    async def cancel(request: Request, request_id: str, version: str) -> Response:
        try:
            rid = known(request_id)
            controller = intake.controller_id(rid)
            if controller != intake.default_controller_id:
                # A signing controller's request: only that controller may withdraw it.
                try:
                    certificate = controllers.certificate(controller)
                except (KeyError, OpenDsrKeyError):
                    certificate = None
                if certificate is None or not verify_bytes(certificate, rid.encode("ascii"), signature_of(request)):
                    raise _Refused(403, "a cancellation of this request must be signed by its controller "
                                        "(X-OpenDSR-Signature of the subject_request_id)",
                                   reason="InvalidSignature", domain="Authentication")
            else:
                wait = throttled(request, "verify")
                if wait is not None:
                    return wait
            received = format_timestamp(datetime.now(UTC))
            try:
                await run_in_threadpool(intake.cancel_pending, rid)
            except RequestStateError as exc:
                raise _Refused(400, str(exc), [("subject_request_id", "not pending: it can no longer be cancelled")],
                               reason="InvalidState", domain="Request") from None
        except _Refused as exc:
            return refused(exc)
        payload = {"api_version": version, "controller_id": controller, "subject_request_id": rid,
                   "received_time": received}
        return signed(opendsr.with_processor_signature(identity(), payload), status.HTTP_202_ACCEPTED)

    def discovery_answer(request: Request, version: str) -> Response:
        wait = throttled(request, "status")
        return wait or signed(opendsr.discovery(base_url=base_url(request), version=version))

    # -- OpenDSR 2.0 --

    discovery_doc: _Docs = {200: {"description": "what this processor supports"}, 429: _spec_response("rate limited")}
    domain_name = settings.opendsr_domain.strip().lower()  # the processor domain our extensions are under
    example = EXAMPLE | {"api_version": opendsr.API_VERSION}
    rights = {regime: service.policy.regimes[regime].rights for regime in Regime}
    body_v2 = _body(request_body_schema(rights, extension_domain=domain_name), example)
    body_v1 = _body(request_body_schema(rights, extension_domain=domain_name, regulation_implied=True), example)
    created: _Docs = {201: {"description": "recorded (or recorded before: the same answer)"},
                      400: _spec_response("bad body; every problem names its field, never its value"),
                      403: _spec_response("a signature that does not verify, or none where one is required"),
                      503: _spec_response("e-mail verification is not configured"), **_LIMIT_RESPONSES}
    status_doc: _Docs = {200: {"description": "the request's status"}, 404: _spec_response("no such request"),
                         429: _spec_response("rate limited")}
    cancel_doc: _Docs = {202: {"description": "cancelled"}, 400: _spec_response("not pending"),
                         403: _spec_response("not signed by the request's controller"),
                         404: _spec_response("no such request"), 429: _spec_response("rate limited")}

    @api.get("/v2/discovery", responses=discovery_doc, tags=["opendsr 2.0"])
    def discovery_v2(request: Request) -> Response:
        """OpenDSR discovery (section 6)."""
        return discovery_answer(request, opendsr.API_VERSION)

    @api.get("/v2/certificate.pem", response_class=Response, tags=["opendsr 2.0"],
             responses={200: {"content": {"application/x-pem-file": {}}, "description": "X.509, PEM"},
                        429: _spec_response("rate limited")})
    def certificate(request: Request) -> Response:
        """The processor certificate that signs responses and callbacks."""
        wait = throttled(request, "status")
        if wait is not None:
            return wait
        return Response(identity().certificate_pem(), media_type="application/x-pem-file",
                        headers={"Cache-Control": "public, max-age=3600"})

    def request_routes(path: str, version: str, *, name: str, tag: str, body: dict[str, Any],
                       docs: tuple[str, str, str]) -> None:
        """Submit, status and cancel under `path` for one protocol version: the same handlers, each
        version's own paths, names and descriptions in the schema."""

        async def submit_route(request: Request) -> Response:
            return await submit(request, version)

        async def status_route(request: Request, request_id: str) -> Response:
            return await status_of(request, request_id, version)

        async def cancel_route(request: Request, request_id: str) -> Response:
            return await cancel(request, request_id, version)

        api.add_api_route(path, submit_route, methods=["POST"], status_code=201, responses=created,
                          openapi_extra=body, tags=[tag], name=f"submit_{name}", description=docs[0])
        api.add_api_route(path + "/{request_id}", status_route, methods=["GET"], responses=status_doc, tags=[tag],
                          name=f"status_{name}", description=docs[1])
        api.add_api_route(path + "/{request_id}", cancel_route, methods=["DELETE"], status_code=202,
                          responses=cancel_doc, tags=[tag], name=f"cancel_{name}", description=docs[2])

    request_routes("/v2/requests", opendsr.API_VERSION, name="v2", tag="opendsr 2.0", body=body_v2,
                   docs=("Submit an OpenDSR 2.0 request (section 7).", "A request's status (section 8).",
                         "Cancel a pending request (section 9)."))

    @api.post("/v2/requests/{request_id}/verify", tags=["opendsr 2.0"],
              responses={200: {"description": "verified"},
                         400: _spec_response("the code is not accepted, or not 6 digits"),
                         404: _spec_response("no such request"), 429: _spec_response("rate limited"),
                         413: {"description": "body larger than the cap"}},
              openapi_extra=_body(CODE_BODY_SCHEMA, {"code": "123456"}))
    async def verify_v2(request: Request, request_id: str) -> Response:
        """Extension: return the 6-digit code the subject was e-mailed."""
        wait = throttled(request, "verify")
        if wait is not None:
            return wait
        try:
            if not intake.valid_request_id(request_id.strip().lower()):
                raise _Refused(404, "no such request", reason="NotFound", domain="Request")
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                body = None
            if not isinstance(body, dict) or set(body) != {"code"}:
                raise _Refused(400, 'the body must be {"code": "<6 digits>"}', [("code", "required, and alone")])
            state = await run_in_threadpool(intake.verify_code, request_id.strip().lower(), body["code"])
        except _Refused as exc:
            return refused(exc)
        except IntakeInvalid as exc:
            return refused(_Refused(400, "the code is not valid", _problems(exc)))
        except (CodeRefused, UnknownRequest) as exc:
            return refused(_Refused(400, str(CodeRefused()) if isinstance(exc, UnknownRequest) else str(exc),
                                    [("code", "not accepted")], reason="CodeRefused", domain="Verification"))
        except RequestStateError as exc:
            return refused(_Refused(400, str(exc), reason="InvalidState", domain="Request"))
        return signed(status_view(state.request_id, opendsr.API_VERSION) | {"verified": state.verified})

    @api.get("/v2/results/{token}", response_class=StreamingResponse, tags=["opendsr 2.0"],
             responses={200: {"content": {"application/zip": {}}, "description": "the package"},
                        404: _spec_response("unknown, expired or used link"), 429: _spec_response("rate limited")})
    def results(request: Request, token: str) -> Response:
        """A completed request's package, through the single-use link its completion callback carried."""
        wait = throttled(request, "status")
        if wait is not None:
            return wait
        who = service.subject_principal(token) if 20 <= len(token) <= 200 else None
        state = service.state(str(who.request_id)) if who is not None else None
        if who is None or state is None or state.package is None or not service.spend_subject_token(token):
            return refused(_Refused(404, "unknown, expired or used link", reason="NotFound", domain="Request"))
        from dsr.adapters.storage import config_from_settings, open_store

        stream = open_store(config_from_settings(settings)).open_package(state.request_id)
        service.record_download(state.request_id, "package", by=intake.controller_id(state.request_id)[:64],
                                role="controller")

        def chunks() -> Any:
            with stream:
                while chunk := stream.read(1 << 16):
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="results-{state.request_id}.zip"', **PRIVATE_DOWNLOAD})

    # -- OpenGDPR 1.0: the prior name's routes (section 10.1) --

    @api.get("/v1/discovery", responses=discovery_doc, tags=["opengdpr 1.0"])
    def discovery_v1(request: Request) -> Response:
        """OpenGDPR 1.0 discovery."""
        return discovery_answer(request, opendsr.OPENGDPR_API_VERSION)

    request_routes("/v1/opengdpr_requests", opendsr.OPENGDPR_API_VERSION, name="v1", tag="opengdpr 1.0",
                   body=body_v1, docs=("Submit an OpenGDPR 1.0 request (without `regulation`: gdpr).",
                                       "An OpenGDPR request's status.", "Cancel a pending OpenGDPR request."))


def _problems(exc: IntakeInvalid) -> list[tuple[str, str]]:
    return [(".".join(map(str, loc)) or "body", message) for loc, message in exc.problems]
