"""The auditor web page, served by the API app under `/auditor`.

Server-rendered HTML (Jinja2, autoescaped), no JavaScript, nothing loaded from outside: inline CSS
and an inline SVG chart only, and a Content-Security-Policy on every response that forbids the rest.

Routes:
- `GET /auditor/login`, `POST /auditor/login` (paste a token; officer or auditor only), `POST /auditor/logout`;
- `GET /auditor`: requests with status, regime, due date and on-time flag, filtered by `from`/`to`
  (received date, inclusive), `type` and `outcome` (status), and the aggregates of what is shown;
- `GET /auditor/requests/{id}`: summary, deadline and how it was derived, systems, bundles, timeline;
- `POST /auditor/requests/{id}/verify`: the bundle's check list (`dsr.bundle.verify_bundle`).
Bundle downloads use the API's own route (`/requests/{id}/bundle?version=N`), which accepts the
session cookie, so every download is recorded in the ledger exactly as an API download is.

Session: the pasted token itself goes into the `dsr_token` cookie (HttpOnly, SameSite=Strict, Path=/,
Secure when the request came over https); the API's resolver reads it from there. Nothing is kept
server-side, so logging out only removes the cookie: revoke a token in `config/access.yaml`.

CSRF: the cookie is SameSite=Strict, so a browser does not send it with a request started from
another site. On top of that every POST must carry an `Origin` (or, failing that, a `Referer`)
whose host is this request's `Host`; a POST with neither, or `Origin: null`, is refused (403).
Pages may not be framed (`frame-ancestors 'none'`).

Personal data: pages are built only from `RequestState.to_view()`, system views and ledger event
payloads, which hold the subject as a keyed hash only. Notes and reasons are read from beside the
chain with their e-mail addresses redacted (`DsrService.texts(for_auditor=True)`). As a last line of
defence every value a template prints passes `_redact` (`dsr.personal_text.redact`: each address,
however spelled, becomes "[redacted e-mail]"), and a finished page that still holds one is not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from doors.api.auth import COOKIE, request_id_or_400
from doors.api.browser import read_form, same_origin, security_headers, under
from doors.api.bundles import EvidenceReader, verify_stored_bundle
from dsr import report as _report
from dsr.access import Principal, Role
from dsr.ledger.events import LedgerEvent, parse_timestamp
from dsr.ledger.store import UnknownRequest
from dsr.metrics import Metrics, RequestFacts, aggregate, request_facts
from dsr.models import RequestType, Status
from dsr.personal_text import contains_email_address, redact
from dsr.service import DsrService
from dsr.signing import SigningKeyError, load_public_key, public_key_fingerprint, public_key_path
from dsr.state import derive_state, payload_with_texts

PREFIX = "/auditor"
TEMPLATES = Path(__file__).resolve().parent / "templates"
REDACTED = "[redacted]"
SESSION_SECONDS = 8 * 3600  # the cookie's life; the token's own validity is the access config's
MAX_FORM_BYTES = 4096
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = security_headers(CSP)
STAFF = (Role.OFFICER, Role.AUDITOR)
DASH = _report.DASH


# --- rendering helpers ----------------------------------------------------------------------------


def _redact(value: Any) -> Any:
    """Jinja's `finalize`: every printed value passes here. E-mail-shaped strings never get out."""
    if value is None:
        return ""
    if isinstance(value, str):
        return redact(value)
    if not isinstance(value, (str, int, float)) and contains_email_address(str(value)):
        return REDACTED
    return value


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its file name
        finalize=_redact,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _time(stamp: Any) -> str:
    return _report._display_time(str(stamp)) if stamp else DASH


def _short(value: Any, limit: int = 160) -> str:
    return _report._short(value, limit=limit)


def _flag(facts: RequestFacts, today: date) -> tuple[str, str]:
    """(label, css class) of the on-time column."""
    if facts.on_time is True:
        return "on time", "ok"
    if facts.on_time is False:
        return "late", "bad"
    if facts.status == Status.CANCELLED.value:
        return "cancelled", "muted"
    if facts.closed:
        return DASH, "muted"
    if facts.overdue(today):
        return "overdue", "bad"
    return "open", "muted"


def _bar_chart(metrics: Metrics) -> dict[str, Any]:
    """Geometry of a small horizontal bar chart (inline SVG): counts by type, by outcome, on time/late."""
    groups: list[tuple[str, str, Sequence[tuple[str, int]]]] = [
        ("By type", "#1f4e79", list(metrics.by_type.items())),
        ("By outcome", "#5b7f2a", list(metrics.by_outcome.items())),
        ("Closed with a due date", "", [("on time", metrics.on_time), ("late", metrics.late)]),
    ]
    label_w, bar_w, row_h, head_h = 150, 230, 18, 22
    peak = max([v for _, _, rows in groups for _, v in rows] + [1])
    items: list[dict[str, Any]] = []
    y = 4
    for title, colour, rows in groups:
        items.append({"kind": "head", "y": y + 14, "text": title})
        y += head_h
        for label, value in rows:
            fill = colour or ("#1a7f37" if label == "on time" else "#b42318")
            width = round(bar_w * value / peak) if value else 0
            items.append({"kind": "bar", "y": y, "label": label.replace("_", " "), "value": value,
                          "x": label_w, "width": max(width, 1 if value else 0), "height": row_h - 5,
                          "fill": fill, "text_y": y + row_h - 8, "value_x": label_w + width + 6})
            y += row_h
        y += 6
    return {"width": label_w + bar_w + 40, "height": y, "items": items}


def _system_rows(views: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for name in sorted(views):
        view = views[name]
        state = _short(view.get("status"))
        if view.get("error"):
            state = f"{state}: {_short(view.get('error'), 120)}"
        rows.append({
            "system": name,
            "connector": _short(view.get("connector_version")),
            "found": _report._found(view),
            "actions": _report._actions(view),
            "status": state,
            "receipt": _report._receipts(view.get("vendor_receipt_id")),
            "requery": _requery(view.get("post_erasure_requery")),
            "exemptions": str(len(view.get("exemptions") or [])),
        })
    return rows


def _requery(value: Any) -> str:
    """The proof-of-erasure re-query; a dash where none was made (access requests)."""
    if isinstance(value, Mapping) and all(v is None for v in value.values()):
        return DASH
    return _report._requery(value)


def _timeline(events: Iterable[LedgerEvent], texts: Mapping[str, str | None]) -> list[dict[str, Any]]:
    return [{"seq": e.seq, "at": _time(e.at), "actor": e.actor, "type": e.type,
             "details": _report._summarise(payload_with_texts(e.payload, texts))} for e in events]



def _deadline_rows(deadline: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(label, _short(deadline.get(key))) for label, key in _report._DEADLINE_FIELDS
            if deadline.get(key) is not None]


def _verification(view: Mapping[str, Any]) -> str:
    found = view.get("verification")
    return _report._verification(found) if isinstance(found, Mapping) else "not verified"


def _parse_date(text: str | None, name: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{name}: not a date (use YYYY-MM-DD)")
        return None


# --- the routes -----------------------------------------------------------------------------------


def mount_pages(app: FastAPI, *, service: DsrService, resolve: Callable[[Request], Principal],
                evidence: EvidenceReader) -> None:
    """Add the auditor page to `app` (call at the end of `create_app`).

    Args:
        app: The API app; the page shares its token resolver and evidence storage.
        service: Reads requests, states and events.
        resolve: The API's principal resolver (bearer header or the `dsr_token` cookie).
        evidence: Reads sealed bundles (`get_bundle(request_id, version) -> bytes`).
    """
    templates = Jinja2Templates(env=_environment())
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @app.middleware("http")
    async def auditor_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if under(request.url.path, PREFIX):
            for name, value in SECURITY_HEADERS.items():
                response.headers[name] = value
        return response

    def render(request: Request, name: str, context: dict[str, Any], code: int = 200) -> Response:
        page = templates.get_template(name).render({"request": request, "prefix": PREFIX, "who": None,
                                                    "dash": DASH, **context})
        if contains_email_address(page):  # cannot happen through `_redact`; refuse rather than leak
            page = templates.get_template("error.html").render(
                {"request": request, "prefix": PREFIX, "who": None, "dash": DASH,
                 "title": "Page withheld", "message": "This page was withheld: it looked like it held personal data."})
            code = status.HTTP_500_INTERNAL_SERVER_ERROR
        return HTMLResponse(page, status_code=code)

    def error(request: Request, who: Principal | None, code: int, title: str, message: str) -> Response:
        return render(request, "error.html", {"who": who, "title": title, "message": message}, code)

    def to_login(clear: bool = False) -> Response:
        response = RedirectResponse(f"{PREFIX}/login", status_code=status.HTTP_303_SEE_OTHER)
        if clear:
            response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    def staff(request: Request) -> Principal | Response:
        """The signed-in officer or auditor, or the response to send instead (login or 403).

        Pages read the session cookie themselves (for their own POST forms too, which the
        Origin/Referer check guards); the API proper accepts the cookie for reads only.
        """
        token = request.cookies.get(COOKIE)
        who = token_principal(token) if token else None
        if who is None:
            return to_login(clear=COOKIE in request.cookies)
        if who.role not in STAFF:
            return error(request, None, status.HTTP_403_FORBIDDEN, "Not for this role",
                         "The auditor page is for auditors and the privacy office only.")
        return who

    def token_principal(token: str) -> Principal | None:
        """The same resolver the API uses, fed the pasted token as a bearer header."""
        try:
            header = f"Bearer {token}".encode("latin-1")
        except UnicodeEncodeError:
            return None
        probe = Request({"type": "http", "method": "POST", "path": f"{PREFIX}/login", "query_string": b"",
                         "headers": [(b"authorization", header)]})
        try:
            return resolve(probe)
        except HTTPException:
            return None

    # -- session ------------------------------------------------------------------------------------

    @router.get("/login")
    def login_form(request: Request) -> Response:
        return render(request, "login.html", {"message": None})

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return error(request, None, status.HTTP_403_FORBIDDEN, "Refused",
                         "This form must be sent from this site (Origin/Referer check).")
        token = (await read_form(request, max_bytes=MAX_FORM_BYTES, max_fields=20)).get("token", "").strip()
        who = token_principal(token) if token else None
        if who is None or who.role not in STAFF:
            message = ("This link is for the data subject; it cannot open the auditor page."
                       if who is not None else "Unknown or expired token.")
            return render(request, "login.html", {"message": message}, status.HTTP_401_UNAUTHORIZED)
        response = RedirectResponse(PREFIX, status_code=status.HTTP_303_SEE_OTHER)
        response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    def logout(request: Request) -> Response:
        if not same_origin(request):
            return error(request, None, status.HTTP_403_FORBIDDEN, "Refused",
                         "This form must be sent from this site (Origin/Referer check).")
        return to_login(clear=True)

    # -- the list -----------------------------------------------------------------------------------

    @router.get("")
    def listing(request: Request) -> Response:
        who = staff(request)
        if isinstance(who, Response):
            return who
        query = request.query_params
        errors: list[str] = []
        since = _parse_date(query.get("from"), "from", errors)
        until = _parse_date(query.get("to"), "to", errors)
        kind = query.get("type") or None
        outcome = query.get("outcome") or None
        types, outcomes = [t.value for t in RequestType], [s.value for s in Status]
        if kind is not None and kind not in types:
            errors.append(f"type: must be one of {', '.join(types)}")
            kind = None
        if outcome is not None and outcome not in outcomes:
            errors.append(f"outcome: must be one of {', '.join(outcomes)}")
            outcome = None
        today = datetime.now(UTC).date()
        shown: list[RequestFacts] = []
        every = service.list()
        for row in every:
            received = parse_timestamp(row.received_at).date()
            if ((kind and row.type != kind) or (outcome and row.status != outcome)
                    or (since and received < since) or (until and received > until)):
                continue
            shown.append(request_facts(service.events(row.request_id)))
        metrics = aggregate(shown, today=today)
        rows = [{"id": f.request_id, "type": f.type, "regime": f.regime, "status": f.status,
                 "received": f.received_at.strftime("%Y-%m-%d %H:%M"), "due": f.due.isoformat() if f.due else DASH,
                 "flag": _flag(f, today)} for f in shown]
        filters = {"from": query.get("from") or "", "to": query.get("to") or "", "type": kind or "",
                   "outcome": outcome or ""}
        return render(request, "list.html", {
            "who": who, "rows": rows, "metrics": metrics, "chart": _bar_chart(metrics), "errors": errors,
            "filters": filters, "types": types, "outcomes": outcomes, "today": today.isoformat(),
            "filtered": any(filters.values()), "total": len(every),
        }, status.HTTP_400_BAD_REQUEST if errors else 200)

    # -- one request ----------------------------------------------------------------------------------

    def load(request: Request, who: Principal, request_id: str) -> tuple[Any, list[LedgerEvent]] | Response:
        try:
            request_id_or_400(request_id)
            events = service.events(request_id)
        except HTTPException:
            return error(request, who, status.HTTP_400_BAD_REQUEST, "Not a request id",
                         "That is not a valid request id.")
        except UnknownRequest:
            events = []
        if not events:
            return error(request, who, status.HTTP_404_NOT_FOUND, "No such request", "There is no such request.")
        return derive_state(events, service.texts(request_id, for_auditor=True)), events

    @router.get("/requests/{request_id}")
    def detail(request: Request, request_id: str) -> Response:
        who = staff(request)
        if isinstance(who, Response):
            return who
        loaded = load(request, who, request_id)
        if isinstance(loaded, Response):
            return loaded
        state, events = loaded
        view = state.to_view()
        deadline = view.get("deadline") or {}
        today = datetime.now(UTC).date()
        facts = request_facts(events)
        summary = [
            ("Request", view["request_id"]), ("Type", view["type"]), ("Regime", view["regime"]),
            ("Rule", _short(deadline.get("rule"))), ("Country", _short(view.get("country"))),
            ("Channel", view["channel"]), ("Received", _time(view["received_at"])),
            ("Status", view["status"]),
            ("Outcome", _short(view.get("outcome_reason") or view.get("cancel_reason"))),
            ("Subject (keyed hash)", view["subject"]["identity_hash"]),
            ("Identity verified", _verification(view)),
            ("Acknowledged", _time(view.get("acknowledged_at"))),
            ("Systems in scope", _short(view.get("systems_planned"))),
            ("Response package (SHA-256)", _short((view.get("package") or {}).get("sha256"))),
        ]
        clock = [{"at": _time(c.get("at")), "kind": c.get("kind"), "reason": _short(c.get("reason"))}
                 for c in view.get("clock_events", [])]
        bundles = sorted(view.get("bundles", []), key=lambda b: b.get("version", 0), reverse=True)
        for bundle in bundles:
            bundle["href"] = f"/requests/{state.request_id}/bundle?{urlencode({'version': bundle['version']})}"
        return render(request, "request.html", {
            "who": who, "id": state.request_id, "summary": summary, "due": deadline.get("due") or DASH,
            "flag": _flag(facts, today),
            "closed_at": facts.closed_at.strftime("%Y-%m-%d %H:%M:%S") if facts.closed_at else None,
            "deadline_rows": _deadline_rows(deadline), "steps": [str(s) for s in deadline.get("steps", [])],
            "clock": clock, "systems": _system_rows({n: s.to_view() for n, s in state.systems.items()}),
            "bundles": bundles, "timeline": _timeline(events, service.texts(state.request_id, for_auditor=True)),
        })

    @router.post("/requests/{request_id}/verify")
    async def verify(request: Request, request_id: str) -> Response:
        who = staff(request)
        if isinstance(who, Response):
            return who
        if not same_origin(request):
            return error(request, who, status.HTTP_403_FORBIDDEN, "Refused",
                         "This form must be sent from this site (Origin/Referer check).")
        loaded = load(request, who, request_id)
        if isinstance(loaded, Response):
            return loaded
        state, _ = loaded
        versions = [b["version"] for b in state.bundles]
        wanted = (await read_form(request, max_bytes=MAX_FORM_BYTES, max_fields=20)).get("version", "")
        if not versions:
            return error(request, who, status.HTTP_404_NOT_FOUND, "No bundle",
                         "No evidence bundle has been sealed for this request yet.")
        version = int(wanted) if wanted.isdigit() else max(versions)
        if version not in versions:
            return error(request, who, status.HTTP_404_NOT_FOUND, "No such version",
                         f"There is no bundle version {version} for this request.")
        fingerprint: str | None = None
        try:
            public_key = load_public_key(public_key_path(service.settings.signing_key_path))
            fingerprint = public_key_fingerprint(public_key)
            result, checks = verify_stored_bundle(evidence, state, version, public_key)
            ok, reason = result.ok, result.reason
        except (SigningKeyError, OSError, KeyError) as exc:
            problem = "the signer's public key" if isinstance(exc, SigningKeyError) else "the stored bundle"
            checks = [{"check": "inputs readable", "passed": False, "detail": f"cannot read {problem}"}]
            ok, reason = False, f"cannot read {problem}"
        return render(request, "verify.html", {
            "who": who, "id": state.request_id, "version": version, "ok": ok, "reason": reason,
            "checks": checks, "fingerprint": fingerprint,
            "href": f"/requests/{state.request_id}/bundle?{urlencode({'version': version})}",
        })

    app.include_router(router)
