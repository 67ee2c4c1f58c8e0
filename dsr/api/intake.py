"""The public OpenDSR door: the web form's backend submits, the subject returns the e-mailed code.

(No `from __future__ import annotations`: FastAPI must see the real annotations of the routes.)

Routes (no token: the web form is public; each is rate-limited per client address, in memory):
- `POST /opendsr/requests` — an OpenDSR request (`dsr.intake.OpenDsrBody`). 201 when recorded,
  200 when the same request was submitted before, 409 when its id holds other content, 422 naming
  every bad field (`loc: ["body", "subject_identities", 0, "identity_value"]`), 503 when no SMTP is
  configured for codes. The answer never depends on whether the company holds data on the address.
- `POST /opendsr/requests/{id}/verify` `{"code": "123456"}` — 200 when verified; 400 with one
  message for a wrong, expired or used-up code (or an unknown request): never which.
- `GET /opendsr/requests/{id}` — the OpenDSR status of a web-form request, no personal data.

Mount with `app.include_router(router(service, smtp_config_provider))` (see `router`). The client
address is the socket peer's: behind a proxy, run uvicorn with `--proxy-headers
--forwarded-allow-ips=<proxy>` so that it is the caller's, not the proxy's.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Request, status
from fastapi.responses import JSONResponse

from dsr.intake import (
    CodeRefused,
    Intake,
    IntakeConflict,
    IntakeInvalid,
    IntakeOutcome,
    IntakeUnavailable,
    SmtpConfigProvider,
)
from dsr.ledger.store import UnknownRequest
from dsr.service import DsrService, RequestStateError

EXAMPLE = {
    "subject_request_id": "7a1c7e46-3f63-4f7c-9a1e-2b0e6c1d5f3a",
    "subject_request_type": "access",
    "submitted_time": "2026-03-02T10:00:00Z",
    "subject_identities": [{"identity_type": "email", "identity_value": "jane@example.com", "identity_format": "raw"}],
    "regulation": "gdpr",
    "status_callback_urls": ["https://forms.example.com/opendsr/callback"],
}


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
                            "code_sent": bool(code and code.sent), "code_expires_at": code.expires_at if code else None}
    return view


def router(service: DsrService, smtp_config_provider: SmtpConfigProvider, *,
           duplicate_window: timedelta = timedelta(days=7),
           callback_url_prefixes: Sequence[str] = (),
           submit_limit: tuple[int, float] = (10, 60.0),
           verify_limit: tuple[int, float] = (20, 60.0),
           status_limit: tuple[int, float] = (60, 60.0),
           code_lifetime: timedelta = timedelta(minutes=10),
           max_attempts: int = 3) -> APIRouter:
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
    """
    intake = Intake(service, smtp_config_provider, duplicate_window=duplicate_window,
                    callback_url_prefixes=callback_url_prefixes, code_lifetime=code_lifetime,
                    max_attempts=max_attempts)
    limits = {"submit": RateLimiter(*submit_limit), "verify": RateLimiter(*verify_limit),
              "status": RateLimiter(*status_limit)}
    api = APIRouter(prefix="/opendsr", tags=["opendsr (public)"])
    api.intake = intake  # type: ignore[attr-defined]  # the intake behind the routes (tests, wiring)

    def limited(request: Request, which: str) -> JSONResponse | None:
        wait = limits[which].retry_after(_client(request))
        if wait is None:
            return None
        return _detail(status.HTTP_429_TOO_MANY_REQUESTS, "too many requests; try again later",
                       {"Retry-After": str(max(1, math.ceil(wait)))})

    @api.post("/requests", status_code=status.HTTP_201_CREATED,
              responses={200: {"description": "the same request was submitted before"},
                         409: {"description": "the id is taken by other content"},
                         422: {"description": "bad body; every problem names its field"},
                         429: {"description": "rate limited"},
                         503: {"description": "e-mail verification is not configured"}})
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
                         422: {"description": "not a 6-digit code"}, 429: {"description": "rate limited"}})
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

    @api.get("/requests/{request_id}")
    def status_opendsr(request_id: str, request: Request) -> Any:
        """The OpenDSR status of a request submitted here (pending, in_progress, completed, cancelled, denied)."""
        refused = limited(request, "status")
        if refused is not None:
            return refused
        if not intake.valid_request_id(request_id):
            return _detail(status.HTTP_404_NOT_FOUND, "no such request")
        return _answer(lambda: intake.public_status(request_id))

    return api
