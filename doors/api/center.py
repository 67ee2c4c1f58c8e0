"""The privacy center (`/privacy`): where a data subject asks, proves the address is theirs, follows
the request and downloads their data. Public: no token, no account, no cookie.

- `GET /privacy`: one form for every request type the intake offers, in plain words; the regime
  follows from the country chosen; what the company holds and why is `subject_summary` in
  config/policy.yaml, shown as it is written there.
- `POST /privacy/requests`: submitted through `dsr.intake.Intake.submit` (the very object behind
  `POST /opendsr/requests`): same checks, duplicate handling and e-mailed code. Then
  `/privacy/requests/{id}/verify` takes the 6-digit code (`Intake.verify_code`: same attempt limits).
- `/privacy/requests/{id}`: the status in plain words (`Intake.public_status`: no personal data).
  Once the package is ready, the subject asks for a download link: a single-use, expiring subject
  token (`DsrService.issue_subject_token`) e-mailed to the address on the request, never shown on
  the page (whoever knows the request id must not get the data). `/privacy/download/{token}` shows a
  button; pressing it spends the token and streams the package (a `package.downloaded` event).
- Global Privacy Control: a `Sec-GPC: 1` header is honoured as a valid opt-out of sale and sharing
  under the CCPA (11 CCR 7025) and the page says so: a California request sent with it also records
  an `opt_out` request (no code needed); `/.well-known/gpc.json` declares it. This site
  itself sets no cookie and loads nothing from third parties.

Abuse limits: per client address, the intake API's numbers (submit 10, verify 20, status 60 a
minute), counted in the database every API process shares (doors.api.limits); codes are limited by the intake itself (3 attempts, 5 codes).
Links in e-mails use DSR_PUBLIC_URL when set; without it only a loopback Host is trusted (a
forged Host header must not turn a download link into one to another site).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from doors.api.browser import read_form, same_origin
from doors.api.limits import shared_client_limit
from doors.api.paging import PRIVATE_DOWNLOAD
from doors.api.web import environment, is_loopback, render_page
from dsr.access import token_hash
from dsr.adapters.mail import Notice, NotifyError, SmtpChannel, SmtpConfig
from dsr.adapters.storage import ObjectNotFound
from dsr.intake import TYPES, CodeRefused, Intake, IntakeConflict, IntakeInvalid, IntakeUnavailable, new_request_id
from dsr.ledger.store import UnknownRequest
from dsr.service import DsrService, RequestStateError
from dsr.state import EventType

PREFIX = "/privacy"
LINK_DAYS = 3
MAX_LINKS = 5  # download links per request: enough for a lost e-mail, not a mail bomb
ACTOR = "privacy-center"

#: Each request type in the words a person uses (the intake's types only: the ones it carries out).
PLAIN_WORDS = {
    "access": ("Get a copy of my data", "We send you a copy of the personal data we hold about you, "
               "what we use it for, who receives it and how long we keep it."),
    "portability": ("Take my data elsewhere", "We send you the data you gave us in a machine-readable "
                    "file (JSON and CSV) that you can take to another service."),
    "erasure": ("Delete my data", "We erase the personal data we hold about you, except what the law "
                "makes us keep (for example tax records of your orders), and tell you what was kept and why."),
    "restriction": ("Keep my data but stop using it", "We keep your data as it is and stop using it (no "
                    "marketing, not deleted by our retention either) until you or we lift the restriction."),
    "objection": ("Stop direct marketing to me", "We stop using your data for direct marketing: no "
                  "newsletters or offers, and you are taken out of advertising audiences."),
    "consent_withdrawal": ("Withdraw my consent to marketing", "You can withdraw consent to marketing at any "
                           "time: we stop marketing e-mails and take you out of advertising audiences."),
    "opt_out": ("Do not sell or share my personal information", "California residents: we stop selling or "
                "sharing your personal information. No verification code is needed."),
}
#: Where we take requests from, the law that applies, and the name shown.
COUNTRIES: dict[str, tuple[str, str]] = {
    "US": ("United States (California)", "ccpa"), "GB": ("United Kingdom", "uk-gdpr"),
    "BR": ("Brazil", "lgpd"), "CA": ("Canada", "pipeda"),
    "AT": ("Austria", "gdpr"), "BE": ("Belgium", "gdpr"), "BG": ("Bulgaria", "gdpr"), "HR": ("Croatia", "gdpr"),
    "CY": ("Cyprus", "gdpr"), "CZ": ("Czechia", "gdpr"), "DK": ("Denmark", "gdpr"), "EE": ("Estonia", "gdpr"),
    "FI": ("Finland", "gdpr"), "FR": ("France", "gdpr"), "DE": ("Germany", "gdpr"), "GR": ("Greece", "gdpr"),
    "HU": ("Hungary", "gdpr"), "IE": ("Ireland", "gdpr"), "IT": ("Italy", "gdpr"), "LV": ("Latvia", "gdpr"),
    "LT": ("Lithuania", "gdpr"), "LU": ("Luxembourg", "gdpr"), "MT": ("Malta", "gdpr"),
    "NL": ("Netherlands", "gdpr"), "PL": ("Poland", "gdpr"), "PT": ("Portugal", "gdpr"),
    "RO": ("Romania", "gdpr"), "SK": ("Slovakia", "gdpr"), "SI": ("Slovenia", "gdpr"), "ES": ("Spain", "gdpr"),
    "SE": ("Sweden", "gdpr"),
}
STATUS_WORDS = {
    "pending": "Received: we are waiting for you to confirm your e-mail address with the code we sent.",
    "in_progress": "In progress: we are working on your request.",
    "completed": "Done: your request has been carried out.",
    "cancelled": "Closed without action.",
    "denied": "Refused: we could not carry out this request; we have written to you why.",
}
FORM_FIELDS = {"subject_identities": "email", "regulation": "country", "regime": "country", "country": "country",
               "subject_request_type": "type", "code": "code"}


def gpc_signal(request: Request) -> bool:
    """Global Privacy Control: exactly "1" counts; any other value is ignored (the GPC spec)."""
    return request.headers.get("sec-gpc") == "1"


def _problems(exc: IntakeInvalid) -> dict[str, str]:
    errors: dict[str, str] = {}
    for loc, message in exc.problems:
        name = FORM_FIELDS.get(str(loc[0]) if loc else "", "form")
        errors.setdefault(name, f"{name}: {message}")
    return errors


def mount_center(app: FastAPI, *, service: DsrService, evidence: Any, intake: Intake,
                 smtp: Callable[[], SmtpConfig | None]) -> None:
    env = environment()
    summary = service.policy.subject_summary
    # The intake's numbers, counted in the database every API process shares (doors.api.limits).
    limits = {name: shared_client_limit(service, f"center-{name}", calls, 60.0)
              for name, calls in (("submit", 10), ("verify", 20), ("status", 60))}
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def page(request: Request, name: str, context: dict[str, Any], code: int = 200) -> Response:
        base = {"prefix": PREFIX, "summary": summary, "gpc": gpc_signal(request)}
        response = render_page(env, name, base | context, code)
        response.headers["Vary"] = "Sec-GPC"
        return response

    def problem(request: Request, code: int, title: str, message: str) -> Response:
        return page(request, "center_message.html", {"title": title, "message": message}, code)

    def limited(request: Request, which: str) -> Response | None:
        client = request.client.host if request.client is not None else "unknown"
        wait = limits[which].retry_after(client)
        if wait is None:
            return None
        response = problem(request, status.HTTP_429_TOO_MANY_REQUESTS, "Please wait",
                           f"Too many attempts from your connection; try again in {max(1, math.ceil(wait))} seconds.")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response

    def not_ours(request: Request) -> Response:
        return problem(request, status.HTTP_404_NOT_FOUND, "Request not found",
                       "We have no request with that reference. Check the reference in our e-mail.")

    def refused_post(request: Request, which: str, request_id: str | None = None) -> Response | None:
        """What a form post is checked for, in order: sent from this site, within its rate limit, ours."""
        if not same_origin(request):
            return problem(request, status.HTTP_403_FORBIDDEN, "Refused", "This form must be sent from this site.")
        refused = limited(request, which)
        if refused is not None:
            return refused
        if request_id is not None and not known(request_id):
            return not_ours(request)
        return None

    def form_page(request: Request, values: dict[str, str], errors: dict[str, str], code: int = 200) -> Response:
        return page(request, "center_form.html", {
            "types": [(key, *PLAIN_WORDS.get(key, (key, ""))) for key in TYPES],
            "countries": sorted(COUNTRIES.items(), key=lambda item: item[1][0]),
            "values": values, "errors": errors}, code)

    @router.get("")
    def home(request: Request) -> Response:
        return form_page(request, {"type": "", "email": "", "country": ""}, {})

    @router.post("/requests")
    async def submit(request: Request) -> Response:
        refused = refused_post(request, "submit")
        if refused is not None:
            return refused
        form = await read_form(request)
        values = {"type": form.get("type", ""), "email": form.get("email", "").strip(),
                  "country": form.get("country", "").upper()}
        errors: dict[str, str] = {}
        if values["type"] not in TYPES:
            errors["type"] = "type: choose what you would like us to do"
        if not values["email"]:
            errors["email"] = "email: enter the e-mail address you use with us"
        if values["country"] not in COUNTRIES:
            errors["country"] = "country: choose the country you live in"
        if errors:
            return form_page(request, values, errors, status.HTTP_422_UNPROCESSABLE_CONTENT)
        regime = COUNTRIES[values["country"]][1]
        body: dict[str, Any] = {
            "subject_request_id": new_request_id(), "subject_request_type": values["type"],
            "submitted_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject_identities": [{"identity_type": "email", "identity_value": values["email"],
                                    "identity_format": "raw"}],
            "regulation": regime,
            "country": values["country"] if regime == "gdpr" else None,
        }
        try:
            outcome = intake.submit(body)
            if gpc_signal(request) and regime == "ccpa" and values["type"] != "opt_out":
                # The browser's Global Privacy Control is a valid opt-out of sale and sharing (11 CCR
                # 7025): recorded beside what was asked, with no code to wait for.
                intake.submit({**body, "subject_request_id": new_request_id(), "subject_request_type": "opt_out"})
        except IntakeInvalid as exc:
            return form_page(request, values, _problems(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)
        except IntakeUnavailable:
            return problem(request, status.HTTP_503_SERVICE_UNAVAILABLE, "Not available right now",
                           "We cannot send verification codes at the moment; please try again later or "
                           f"write to us: {summary.contact}")
        except IntakeConflict as exc:
            return problem(request, status.HTTP_409_CONFLICT, "Please try again", str(exc))
        target = outcome.duplicate_of or outcome.state.request_id
        if values["type"] == "opt_out":  # nothing to verify: straight to its status
            return RedirectResponse(f"{PREFIX}/requests/{target}", status_code=status.HTTP_303_SEE_OTHER)
        return RedirectResponse(f"{PREFIX}/requests/{target}/verify", status_code=status.HTTP_303_SEE_OTHER)

    def known(request_id: str) -> bool:
        return intake.valid_request_id(request_id) and intake.is_intake_request(request_id)

    def verify_page(request: Request, request_id: str, error: str | None, code: int = 200) -> Response:
        view = intake.public_status(request_id)
        return page(request, "center_verify.html", {"id": request_id, "error": error, "view": view,
                                                    "verified": view["request_status"] != "pending"}, code)

    @router.get("/requests/{request_id}/verify")
    def verify_form(request: Request, request_id: str) -> Response:
        if not known(request_id):
            return not_ours(request)
        return verify_page(request, request_id, None)

    @router.post("/requests/{request_id}/verify")
    async def verify(request: Request, request_id: str) -> Response:
        refused = refused_post(request, "verify", request_id)
        if refused is not None:
            return refused
        code = (await read_form(request)).get("code", "").strip()
        try:
            intake.verify_code(request_id, code)
        except IntakeInvalid as exc:
            return verify_page(request, request_id, next(iter(_problems(exc).values())),
                               status.HTTP_422_UNPROCESSABLE_CONTENT)
        except CodeRefused as exc:
            return verify_page(request, request_id, f"code: {exc}", status.HTTP_400_BAD_REQUEST)
        except RequestStateError as exc:
            return verify_page(request, request_id, str(exc), status.HTTP_409_CONFLICT)
        return RedirectResponse(f"{PREFIX}/requests/{request_id}", status_code=status.HTTP_303_SEE_OTHER)

    @router.get("/status")
    def lookup(request: Request, reference: str = "") -> Response:
        reference = reference.strip().lower()
        if not known(reference):
            return page(request, "center_lookup.html", {
                "error": "reference: enter the request reference from our e-mail" if reference else None,
                "reference": reference[:64]}, status.HTTP_404_NOT_FOUND if reference else 200)
        return RedirectResponse(f"{PREFIX}/requests/{reference}", status_code=status.HTTP_303_SEE_OTHER)

    def package_ready(request_id: str) -> bool:
        state = service.state(request_id)
        return state.package is not None and state.status.value == "completed"

    @router.get("/requests/{request_id}")
    def request_status(request: Request, request_id: str) -> Response:
        refused = limited(request, "status")
        if refused is not None:
            return refused
        if not known(request_id):
            return not_ours(request)
        view = intake.public_status(request_id)
        kind = view["subject_request_type"]
        return page(request, "center_status.html", {
            "id": request_id, "view": view, "words": STATUS_WORDS.get(view["request_status"], view["request_status"]),
            "kind": PLAIN_WORDS.get(kind, (kind, ""))[0], "due": (view.get("expected_completion_time") or "")[:10],
            "package": package_ready(request_id), "sent": request.query_params.get("sent") == "1"})

    @router.get("/requests/{request_id}/progress")
    def request_progress(request: Request, request_id: str) -> Response:
        refused = limited(request, "status")
        if refused is not None:
            return JSONResponse({"detail": "too many requests"}, status_code=status.HTTP_429_TOO_MANY_REQUESTS)
        if not known(request_id):
            return JSONResponse({"detail": "no such request"}, status_code=status.HTTP_404_NOT_FOUND)
        view = intake.public_status(request_id)
        return JSONResponse({"status": view["request_status"],
                             "status_text": STATUS_WORDS.get(view["request_status"], view["request_status"])})

    def link_base(request: Request) -> str | None:
        configured = os.environ.get("DSR_PUBLIC_URL", "").strip().rstrip("/")
        if configured:
            return configured
        return str(request.base_url).rstrip("/") if is_loopback(request.url.hostname) else None

    @router.post("/requests/{request_id}/link")
    async def send_link(request: Request, request_id: str) -> Response:
        refused = refused_post(request, "submit", request_id)
        if refused is not None:
            return refused
        if not package_ready(request_id):
            return problem(request, status.HTTP_409_CONFLICT, "Not ready yet",
                           "Your data is not ready yet; this page will offer the download once it is.")
        issued = sum(1 for e in service.events(request_id) if e.type == EventType.SUBJECT_TOKEN_ISSUED)
        if issued >= MAX_LINKS:
            return problem(request, status.HTTP_429_TOO_MANY_REQUESTS, "Too many links",
                           f"We have sent {issued} links for this request already; please write to us: {summary.contact}")
        base, config = link_base(request), smtp()
        address = service.ledger.identity(request_id)
        if base is None or config is None or not address:
            return problem(request, status.HTTP_503_SERVICE_UNAVAILABLE, "Not available right now",
                           "We cannot e-mail download links at the moment; please write to us: " + summary.contact)
        token, expires = service.issue_subject_token(request_id, ttl=timedelta(days=LINK_DAYS), actor=ACTOR)
        body = (f"Your data is ready. Download it here (the link works once, until {expires:%Y-%m-%d %H:%M} UTC):\n\n"
                f"{base}{PREFIX}/download/{token}\n\nRequest reference: {request_id}\n\n"
                "If you did not ask for this, you can ignore this message.\n")
        try:
            SmtpChannel(config.model_copy(update={"recipients": (address,)})).send(
                Notice(subject="Your data is ready to download", body=body, fields={}))
        except NotifyError:
            service.spend_subject_token(token)  # a link nobody received must not stay usable
            return problem(request, status.HTTP_503_SERVICE_UNAVAILABLE, "Not sent",
                           "We could not send the e-mail just now; please try again in a few minutes.")
        return RedirectResponse(f"{PREFIX}/requests/{request_id}?{urlencode({'sent': '1'})}",
                                status_code=status.HTTP_303_SEE_OTHER)

    def token_state(token: str) -> tuple[str, bool] | None:
        """(request id, already used) of a live token; None when unknown or expired."""
        if not token or len(token) > 200:
            return None
        found = service.ledger.subject_token(token_hash(token))
        if found is None or service.subject_principal(token) is None:
            return None
        return found[0], found[2] is not None

    @router.get("/download/{token}")
    def download_page(request: Request, token: str) -> Response:
        found = token_state(token)
        if found is None or found[1]:
            return problem(request, status.HTTP_410_GONE, "This link no longer works",
                           "Download links work once and expire. Ask for a new one on your request's page.")
        return page(request, "center_download.html", {"token": token, "id": found[0]})

    @router.post("/download/{token}")
    def download(request: Request, token: str) -> Response:
        if not same_origin(request):
            return problem(request, status.HTTP_403_FORBIDDEN, "Refused", "This form must be sent from this site.")
        found = token_state(token)
        if found is None or not service.spend_subject_token(token):
            return problem(request, status.HTTP_410_GONE, "This link no longer works",
                           "Download links work once and expire. Ask for a new one on your request's page.")
        request_id = found[0]
        try:
            stream = evidence.open_package(request_id)
        except (ObjectNotFound, UnknownRequest, OSError):
            return problem(request, status.HTTP_404_NOT_FOUND, "Not found", "Your data could not be found; "
                           "please write to us: " + summary.contact)
        service.record_download(request_id, "package", by="subject", role="subject")

        def chunks() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(1 << 16):
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/zip", headers={  # personal data: never cached
            "Content-Disposition": f'attachment; filename="your-data-{request_id}.zip"', **PRIVATE_DOWNLOAD})

    @app.get("/.well-known/gpc.json", include_in_schema=False)
    def gpc_json() -> JSONResponse:
        return JSONResponse({"gpc": True, "lastUpdate": "2026-12-07"})

    app.include_router(router)
