"""The officer console (`/console`): the privacy office's work in a browser.

Pages (server-rendered; one same-origin script polls JSON for progress):
- `/console` inbox: open requests with their legal clock (due, days left, overdue, paused,
  extended), filtered by regime, type, status, system and owner, most urgent first;
- `/console/requests/{id}`: deadline and how it was derived, per-system progress (live while a run
  goes), timeline, and every action of the CLI: verify, extend, pause/resume, acknowledge, cancel, run;
- `/console/tasks`: manual tasks (what, by when), closed with a note and an attachment;
- `/console/holds`: legal holds (add, release); `/console/purge`: retention runs (dry run per system
  and category, approval of a run the guard stopped); `/console/escalations`: deadline alerts.

Every action calls the application object (`DsrService`: runs, holds and purges included),
so the ledger records the same events as the CLI's, with the officer's token name as the actor.

Sign-in: an officer token (config/access.yaml) is exchanged for a random session id in the
`dsr_console` cookie (HttpOnly, SameSite=Strict, Secure unless served over http to loopback), valid
8 hours; the token is checked again on every request, so removing it from access.yaml ends its
sessions. Sessions live in memory: a restart signs everyone out. CSRF: every POST must come from this
site (Origin/Referer) and carry the session's random form token.
"""

from __future__ import annotations

import hmac
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from doors.api import jobs as _jobs
from doors.api.auth import request_id_or_400
from doors.api.browser import read_form, same_origin
from doors.api.web import environment, render_page, secure_cookie
from dsr import report as _report
from dsr.access import AccessConfig, Principal, Role
from dsr.contract import RECTIFIABLE_FIELDS
from dsr.deadlines import DeadlineError
from dsr.identity import IdentityError
from dsr.ledger.store import UnknownRequest
from dsr.models import OPEN_STATUSES, RequestInputError, RequestType, parse_new_request
from dsr.service import DsrService, RequestStateError
from dsr.state import RequestState, SystemStatus

PREFIX = "/console"
COOKIE = "dsr_console"
SESSION_SECONDS = 8 * 3600
MAX_UPLOAD_FILES = 3
DASH = "—"


@dataclass
class Session:
    token: str
    csrf: str
    expires: float


class Sessions:
    """Console sessions in memory: random id -> the officer token behind it, until it expires."""

    def __init__(self, ttl_seconds: float = SESSION_SECONDS) -> None:
        self.ttl = ttl_seconds
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(token, secrets.token_urlsafe(24), time.monotonic() + self.ttl)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, s in self._by_id.items() if s.expires <= now]:
                del self._by_id[key]
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._by_id.get(sid)
            if session is not None and session.expires <= time.monotonic():
                del self._by_id[sid]
                return None
            return session

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


# --- views of requests ------------------------------------------------------------------------------


def clock_view(state: RequestState, today: date) -> dict[str, Any]:
    """The legal clock at a glance: due date, days left, overdue, paused, extended."""
    deadline = state.deadline or {}
    due = deadline.get("due")
    days_left = (date.fromisoformat(due) - today).days if due else None
    return {"due": due or DASH, "days_left": days_left,
            "overdue": days_left is not None and days_left < 0 and not state.closed,
            "paused": bool(deadline.get("paused")), "extended": bool(deadline.get("extended"))}


def _urgency(row: Mapping[str, Any]) -> tuple[int, int]:
    left = row["clock"]["days_left"]
    return (1 if left is None else 0, left if left is not None else 0)


def expected_systems(service: DsrService, state: RequestState) -> list[str]:
    """The systems a run of this request covers: its plan once it has one, else the data map's."""
    if state.plan:
        return list(state.plan)
    try:
        kind = RequestType(state.type)
    except ValueError:
        return []
    return sorted(name for name, cfg in service.data_map.enabled().items() if kind in cfg.request_types)


def system_rows(service: DsrService, state: RequestState) -> list[dict[str, Any]]:
    names = sorted(set(expected_systems(service, state)) | set(state.systems))
    rows = []
    for name in names:
        system = state.systems.get(name)
        view = system.to_view() if system is not None else {"status": SystemStatus.PENDING.value}
        rows.append({"system": name, "status": view["status"],
                     "found": system.found if system is not None else 0,
                     "actions": _report._actions(view) if system is not None else DASH,
                     "error": (system.error or "") if system is not None else "",
                     "task": bool(system is not None and system.task and not system.task.get("done"))})
    return rows


def progress_view(service: DsrService, state: RequestState, job: _jobs.Job | None) -> dict[str, Any]:
    """What the request page polls: status, per-system status, systems done of the plan."""
    rows = system_rows(service, state)
    done = sum(1 for r in rows if r["status"] in (SystemStatus.COMPLETED.value, SystemStatus.FAILED.value))
    return {"request_id": state.request_id, "status": state.status.value,
            "status_text": state.status.value.replace("_", " "),
            "done": done, "total": len(rows),
            "systems": [{"system": r["system"], "status": r["status"], "found": r["found"]} for r in rows],
            "running": job is not None and job.state == "running",
            "job": job.to_view() if job is not None else None}


def with_texts(payload: Mapping[str, Any], texts: Mapping[str, str | None]) -> dict[str, Any]:
    """An event's payload with its free-text references (`note_sha256`...) shown as the kept words.

    Notes and reasons live beside the hash chain (so they can be redacted); officers read them here.
    """
    shown: dict[str, Any] = {}
    for key, value in payload.items():
        if key.endswith("_sha256") and isinstance(value, str) and value in texts:
            kept = texts[value]
            shown[key.removesuffix("_sha256")] = kept if kept is not None else "[redacted]"
        else:
            shown[key] = value
    return shown


# --- the routes -------------------------------------------------------------------------------------


def mount_console(app: FastAPI, *, service: DsrService, access: AccessConfig) -> None:
    env = environment()
    sessions = Sessions()
    jobs = _jobs.Jobs()
    app.state.console_jobs = jobs
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def officer_of(request: Request) -> tuple[Principal, Session] | None:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        who = access.authenticate(session.token)
        if who is None or who.role != Role.OFFICER:
            return None
        return who, session

    def page(request: Request, name: str, context: dict[str, Any], code: int = 200,
             signed_in: tuple[Principal, Session] | None = None) -> Response:
        who, session = signed_in if signed_in else (None, None)
        base = {"prefix": PREFIX, "who": who, "csrf": session.csrf if session else "", "dash": DASH,
                "section": context.pop("section", ""), "flash": request.query_params.get("done", "")[:300]}
        return render_page(env, name, base | context, code)

    def to_login() -> Response:
        response = RedirectResponse(f"{PREFIX}/login", status_code=status.HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    def back(path: str, message: str) -> Response:
        return RedirectResponse(f"{path}?{urlencode({'done': message})}", status_code=status.HTTP_303_SEE_OTHER)

    def refused(request: Request, signed_in: tuple[Principal, Session] | None) -> Response:
        return page(request, "console_error.html", {"title": "Refused", "message":
                    "This form must be sent from this console (the page may be stale: reload it and try again)."},
                    status.HTTP_403_FORBIDDEN, signed_in)

    async def post_form(request: Request) -> tuple[tuple[Principal, Session], dict[str, str]] | Response:
        """The signed-in officer and the form of a POST that passed the CSRF checks (or the answer)."""
        signed_in = officer_of(request)
        if signed_in is None:
            return to_login()
        if not same_origin(request):
            return refused(request, signed_in)
        form = await read_form(request)
        if not hmac.compare_digest(form.get("csrf", ""), signed_in[1].csrf):
            return refused(request, signed_in)
        return signed_in, form

    # -- sign-in ---------------------------------------------------------------------------------

    @router.get("/login")
    def login_form(request: Request) -> Response:
        return page(request, "console_login.html", {"error": None, "section": "login"})

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return refused(request, None)
        token = (await read_form(request)).get("token", "").strip()
        who = access.authenticate(token) if token and len(token) <= 200 else None
        if who is None or who.role != Role.OFFICER:
            error = ("token: this token is not an officer's; the console is for the privacy office"
                     if who is not None else "token: unknown or revoked token")
            return page(request, "console_login.html", {"error": error, "section": "login"},
                        status.HTTP_401_UNAUTHORIZED)
        sid, _ = sessions.create(token)
        response = RedirectResponse(PREFIX, status_code=status.HTTP_303_SEE_OTHER)
        response.set_cookie(COOKIE, sid, max_age=SESSION_SECONDS, path=PREFIX, httponly=True, samesite="strict",
                            secure=secure_cookie(request))
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        sessions.drop(request.cookies.get(COOKIE))
        return to_login()

    # -- inbox -----------------------------------------------------------------------------------

    @router.get("")
    def inbox(request: Request) -> Response:
        signed_in = officer_of(request)
        if signed_in is None:
            return to_login()
        return inbox_page(request, signed_in)

    def inbox_page(request: Request, signed_in: tuple[Principal, Session], new_errors: dict[str, str] | None = None,
                   new_values: dict[str, str] | None = None, code: int = 200) -> Response:
        query = request.query_params
        systems = service.data_map.systems
        choices = {
            "regime": sorted({r.value for r in service.policy.regimes}),
            "type": [t.value for t in RequestType],
            "status": sorted(s.value for s in OPEN_STATUSES),
            "system": sorted(systems),
            "owner": sorted({service.policy.escalation.owner} | {c.owner for c in systems.values()}
                            | {c.assignee for c in systems.values() if c.assignee}),
        }
        rectifiable = list(RECTIFIABLE_FIELDS)
        filters = {name: query.get(name) or "" for name in choices}
        errors = [f"{name}: must be one of {', '.join(choices[name])}" for name, value in filters.items()
                  if value and value not in choices[name]]
        today = datetime.now(UTC).date()
        rows = []
        for row in service.list(open_only=True):
            if (filters["regime"] and row.regime != filters["regime"]) or (filters["type"] and row.type != filters["type"]) \
                    or (filters["status"] and row.status != filters["status"]):
                continue
            state = service.state(row.request_id)
            planned = set(state.plan) | set(state.systems)
            if filters["system"] and filters["system"] not in planned:
                continue
            owners = {service.policy.escalation.owner} | {systems[n].owner for n in planned if n in systems} | {
                str(s.task.get("assignee")) for s in state.systems.values() if s.task}
            if filters["owner"] and filters["owner"] not in owners:
                continue
            open_tasks = sum(1 for s in state.systems.values() if s.task and not s.task.get("done"))
            rows.append({"id": row.request_id, "type": row.type, "regime": row.regime, "status": row.status,
                         "received": row.received_at[:10], "clock": clock_view(state, today),
                         "verified": state.verified, "tasks": open_tasks, "alerts": len(state.alerts)})
        rows.sort(key=_urgency)
        return page(request, "console_inbox.html", {
            "section": "inbox", "rows": rows, "filters": filters, "choices": choices, "errors": errors,
            "today": today.isoformat(), "new_errors": new_errors or {}, "rectifiable": rectifiable,
            "new": new_values or {"type": "", "email": "", "regime": "", "country": "", "channel": "email"},
        }, status.HTTP_400_BAD_REQUEST if errors and code == 200 else code, signed_in)

    @router.post("/requests")
    async def record(request: Request) -> Response:
        """Record a request that arrived another way (e-mail, phone, post), as `dsr submit` does."""
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        signed_in, form = checked
        values = {name: form.get(name, "").strip() for name in ("type", "email", "regime", "country", "channel")}
        # A rectification's corrected values, one optional field each; blank means "not corrected".
        changes = {name: str(form.get(f"set_{name}", "")).strip() for name in RECTIFIABLE_FIELDS}
        changes = {name: value for name, value in changes.items() if value}
        values.update({f"set_{name}": value for name, value in changes.items()})
        try:
            new = parse_new_request(type=values["type"], email=values["email"], regime=values["regime"],
                                    country=values["country"] or None, received=datetime.now(UTC),
                                    channel=values["channel"] or "email", changes=changes or None)
            state = service.submit(new, actor=signed_in[0].name).state
        except (RequestInputError, IdentityError, DeadlineError) as exc:
            field, _, text = str(exc).partition(": ")
            return inbox_page(request, signed_in, {field if text else "form": str(exc)}, values,
                              status.HTTP_400_BAD_REQUEST)
        return back(f"{PREFIX}/requests/{state.request_id}", f"request recorded; due {state.due}")

    # -- one request -----------------------------------------------------------------------------

    def load(request_id: str) -> RequestState | None:
        try:
            request_id_or_400(request_id)
            return service.state(request_id)
        except (HTTPException, UnknownRequest, ValueError):
            return None

    def not_found(request: Request, signed_in: tuple[Principal, Session]) -> Response:
        return page(request, "console_error.html", {"title": "No such request",
                                                    "message": "There is no request with that id."},
                    status.HTTP_404_NOT_FOUND, signed_in)

    def request_page(request: Request, signed_in: tuple[Principal, Session], state: RequestState,
                     errors: dict[str, str] | None = None, code: int = 200) -> Response:
        today = datetime.now(UTC).date()
        view = state.to_view()
        deadline = state.deadline or {}
        events = service.events(state.request_id)
        waiting = [kind for kind, (start, _end) in service.PAUSES.items()
                   if any(c.kind == start for c in state.clock)
                   and sum(1 for c in state.clock if c.kind == start) > sum(1 for c in state.clock if c.kind == _end)]
        job = jobs.latest(state.request_id)
        texts = service.texts(state.request_id)
        return page(request, "console_request.html", {
            "section": "inbox", "state": state, "view": view, "clock": clock_view(state, today),
            "deadline_rows": [(label, _report._short(deadline.get(key))) for label, key in _report._DEADLINE_FIELDS
                              if deadline.get(key) is not None],
            "steps": [str(s) for s in deadline.get("steps", [])],
            "systems": system_rows(service, state),
            "progress": progress_view(service, state, job),
            "timeline": [{"seq": e.seq, "at": _report._display_time(str(e.at)), "actor": e.actor, "type": e.type,
                          "details": _report._summarise(with_texts(e.payload, texts))} for e in events],
            "waiting": waiting, "pause_kinds": list(service.PAUSES),
            "runnable": state.verified and not state.closed,
            "errors": errors or {},
        }, code, signed_in)

    @router.get("/requests/{request_id}")
    def detail(request: Request, request_id: str) -> Response:
        signed_in = officer_of(request)
        if signed_in is None:
            return to_login()
        state = load(request_id)
        return not_found(request, signed_in) if state is None else request_page(request, signed_in, state)

    @router.get("/requests/{request_id}/progress")
    def progress(request: Request, request_id: str) -> Response:
        signed_in = officer_of(request)
        if signed_in is None:
            return JSONResponse({"detail": "sign in again"}, status_code=status.HTTP_401_UNAUTHORIZED)
        state = load(request_id)
        if state is None:
            return JSONResponse({"detail": "no such request"}, status_code=status.HTTP_404_NOT_FOUND)
        return JSONResponse(progress_view(service, state, jobs.latest(state.request_id)))

    # The request page's forms: the notice each shows once done, and the service call it makes with the
    # form's fields as the signed-in officer ("run" starts a job instead: see below).
    form_actions: dict[str, tuple[str, Callable[[str, dict[str, str], str], object]]] = {
        "verify": ("identity verified", lambda rid, form, by: service.verify(
            rid, method=form.get("method", ""), note=form.get("note", ""), actor=by)),
        "extend": ("deadline extended", lambda rid, form, by: service.extend(
            rid, reason=form.get("reason", ""), actor=by)),
        "pause": ("clock paused", lambda rid, form, by: service.pause(
            rid, wait_for=form.get("wait_for", ""), reason=form.get("reason", ""), actor=by)),
        "resume": ("clock resumed", lambda rid, form, by: service.resume(
            rid, wait_for=form.get("wait_for", ""), actor=by)),
        "acknowledge": ("receipt acknowledged", lambda rid, form, by: service.acknowledge(
            rid, note=form.get("note") or "acknowledgement sent to the subject", actor=by)),
        "cancel": ("request cancelled", lambda rid, form, by: service.cancel(
            rid, reason=form.get("reason", ""), actor=by)),
    }
    ACTIONS = (*form_actions, "run")

    @router.post("/requests/{request_id}/{action}")
    async def act(request: Request, request_id: str, action: str) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        signed_in, form = checked
        who = signed_in[0]
        state = load(request_id)
        if state is None:
            return not_found(request, signed_in)
        if action not in ACTIONS:
            return page(request, "console_error.html", {"title": "Unknown action",
                                                        "message": f"action: must be one of {', '.join(ACTIONS)}"},
                        status.HTTP_404_NOT_FOUND, signed_in)
        path = f"{PREFIX}/requests/{state.request_id}"
        try:
            if action in form_actions:
                message, call = form_actions[action]
                call(state.request_id, form, who.name)
            else:
                service.check_runnable(state.request_id)  # refuse at once, with the reason
                job = jobs.start("run", state.request_id,
                                 lambda job: _jobs.run_request(service, state.request_id, job))
                message = "run started" if job.state == "running" else job.message
        except (RequestInputError, IdentityError, DeadlineError) as exc:
            field, _, text = str(exc).partition(": ")
            return request_page(request, signed_in, service.state(state.request_id),
                                {action: f"{field}: {text}" if text else str(exc)}, status.HTTP_400_BAD_REQUEST)
        except RequestStateError as exc:
            return request_page(request, signed_in, service.state(state.request_id), {action: str(exc)},
                                status.HTTP_409_CONFLICT)
        return back(path, message)

    # -- manual tasks ----------------------------------------------------------------------------

    def task_rows() -> list[dict[str, Any]]:
        today = datetime.now(UTC).date()
        rows = []
        for request_id, name, task in service.manual_tasks():
            due = str(task.get("due") or "")
            left = (date.fromisoformat(due) - today).days if due else None
            rows.append({"request_id": request_id, "system": name, "step": task.get("step"),
                         "assignee": task.get("assignee"), "due": due or DASH, "days_left": left,
                         "instructions": task.get("instructions") or "", "done": bool(task.get("done")),
                         "subject": service.ledger.identity(request_id) or DASH,
                         "key": f"{request_id}-{name}"})
        rows.sort(key=lambda r: (r["done"], r["due"]))
        return rows

    def tasks_page(request: Request, signed_in: tuple[Principal, Session], errors: dict[str, str] | None = None,
                   code: int = 200) -> Response:
        # The whole form passes the API's body cap (BodySizeLimit), so the attachment must fit under it.
        limit_kb = max(1, (service.settings.api_max_body_bytes - 2048) // 1024)
        return page(request, "console_tasks.html", {"section": "tasks", "rows": task_rows(), "errors": errors or {},
                                                    "limit_kb": limit_kb}, code, signed_in)

    @router.get("/tasks")
    def tasks(request: Request) -> Response:
        signed_in = officer_of(request)
        return to_login() if signed_in is None else tasks_page(request, signed_in)

    @router.post("/tasks/{request_id}/{system}")
    async def task_done(request: Request, request_id: str, system: str) -> Response:
        signed_in = officer_of(request)
        if signed_in is None:
            return to_login()
        if not same_origin(request):
            return refused(request, signed_in)
        form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=10)
        if not hmac.compare_digest(str(form.get("csrf") or ""), signed_in[1].csrf):
            return refused(request, signed_in)
        state = load(request_id)
        if state is None:
            return not_found(request, signed_in)
        key = f"{state.request_id}-{system}"
        staging = Path(tempfile.mkdtemp(prefix="dsr-upload-"))
        try:
            paths = []
            for item in form.getlist("attachment"):
                if isinstance(item, UploadFile) and item.filename:
                    target = staging / Path(item.filename).name
                    with target.open("wb") as out:
                        shutil.copyfileobj(item.file, out)
                    paths.append(target)
            service.task_done(state.request_id, system, note=str(form.get("note") or ""), attachments=paths,
                              actor=signed_in[0].name)
        except (RequestInputError, RequestStateError) as exc:
            return tasks_page(request, signed_in, {key: str(exc)}, status.HTTP_400_BAD_REQUEST)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        message = f"manual task in {system} recorded as done"
        if form.get("resume") and service.state(state.request_id).verified:
            jobs.start("run", state.request_id, lambda job: _jobs.run_request(service, state.request_id, job))
            return back(f"{PREFIX}/requests/{state.request_id}", message + "; the run resumes")
        return back(f"{PREFIX}/tasks", message)

    # -- legal holds -----------------------------------------------------------------------------

    def holds_page(request: Request, signed_in: tuple[Principal, Session], errors: dict[str, str] | None = None,
                   code: int = 200) -> Response:
        found = [{"ref": h.ref, "subject": h.identity_hash, "since": h.since[:16].replace("T", " "), "by": h.by,
                  "reason": h.reason, "released": h.released} for h in service.holds(active_only=False)]
        return page(request, "console_holds.html", {"section": "holds", "holds": found, "errors": errors or {}},
                    code, signed_in)

    @router.get("/holds")
    def holds(request: Request) -> Response:
        signed_in = officer_of(request)
        return to_login() if signed_in is None else holds_page(request, signed_in)

    @router.post("/holds")
    async def hold_add(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        signed_in, form = checked
        try:
            hold = service.place_hold(email=form.get("email", ""), ref=form.get("ref", "").strip(),
                                      reason=form.get("reason", ""), actor=signed_in[0].name)
        except (RequestInputError, IdentityError) as exc:
            return holds_page(request, signed_in, {"add": str(exc)}, status.HTTP_400_BAD_REQUEST)
        except RequestStateError as exc:
            return holds_page(request, signed_in, {"add": f"ref: {exc}"}, status.HTTP_409_CONFLICT)
        return back(f"{PREFIX}/holds", f"hold {hold.ref} placed")

    @router.post("/holds/{ref}/release")
    async def hold_release(request: Request, ref: str) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        signed_in, form = checked
        try:
            service.release_hold(ref=ref, reason=form.get("reason", ""), actor=signed_in[0].name)
        except RequestInputError as exc:
            return holds_page(request, signed_in, {ref: str(exc)}, status.HTTP_400_BAD_REQUEST)
        except RequestStateError as exc:
            return holds_page(request, signed_in, {ref: str(exc)}, status.HTTP_409_CONFLICT)
        return back(f"{PREFIX}/holds", f"hold {ref} released")

    # -- retention purge -------------------------------------------------------------------------

    def purge_runs() -> list[dict[str, Any]]:
        runs = []
        for run_id in service.purge_run_ids():
            events = service.ledger.events(run_id)
            started = events[0]
            completed = next((e for e in reversed(events) if e.type == "purge.completed"), None)
            runs.append({
                "id": run_id, "at": started.at[:16].replace("T", " "), "started": started.at, "by": started.actor,
                "dry_run": bool(started.payload.get("dry_run")), "approves": started.payload.get("approves"),
                "status": completed.payload.get("status") if completed else "running",
                "tallies": [t for t in (completed.payload.get("tallies", []) if completed else [])
                            if t.get("candidates") or t.get("purged") or t.get("failed")],
                "guard": [e.payload for e in events if e.type == "purge.guard_stopped"],
            })
        approved = {r["approves"] for r in runs if r["approves"]}
        for run in runs:
            run["approved"] = run["id"] in approved
        runs.sort(key=lambda r: str(r["started"]), reverse=True)
        return runs

    def purge_page(request: Request, signed_in: tuple[Principal, Session], errors: dict[str, str] | None = None,
                   code: int = 200) -> Response:
        running = [j for j in jobs.recent("purge") if j.state == "running"]
        last = jobs.recent("purge")[:1]
        return page(request, "console_purge.html", {
            "section": "purge", "runs": purge_runs()[:20], "errors": errors or {},
            "job": running[0] if running else (last[0] if last else None)}, code, signed_in)

    @router.get("/purge")
    def purge_list(request: Request) -> Response:
        signed_in = officer_of(request)
        return to_login() if signed_in is None else purge_page(request, signed_in)

    @router.get("/jobs/{job_id}")
    def job_status(request: Request, job_id: str) -> Response:
        if officer_of(request) is None:
            return JSONResponse({"detail": "sign in again"}, status_code=status.HTTP_401_UNAUTHORIZED)
        job = jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": "no such job"}, status_code=status.HTTP_404_NOT_FOUND)
        return JSONResponse(job.to_view())

    @router.post("/purge")
    async def purge_start(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        signed_in, form = checked
        approve = form.get("approve") or None
        if approve is not None:
            try:
                service.check_purge_approval(approve)  # refuse at once, naming it
            except RequestStateError as exc:
                return purge_page(request, signed_in, {"approve": str(exc)}, status.HTTP_409_CONFLICT)
        dry_run = approve is None and form.get("mode") != "purge"
        jobs.start("purge", "purge", lambda job: _jobs.purge(service, job, dry_run=dry_run, approve=approve))
        what = f"approved purge of {approve}" if approve else ("dry run" if dry_run else "purge")
        return back(f"{PREFIX}/purge", f"{what} started")

    # -- escalations -----------------------------------------------------------------------------

    @router.get("/escalations")
    def escalations(request: Request) -> Response:
        signed_in = officer_of(request)
        if signed_in is None:
            return to_login()
        from dsr.sweep import what_is_open

        rows = []
        for row in service.list(open_only=True):
            state = service.state(row.request_id)
            for alert in state.alerts.values():
                rows.append({"request_id": row.request_id, "level": alert.get("level"), "kind": alert.get("kind"),
                             "due": alert.get("due"), "days_left": alert.get("days_left"),
                             "at": str(alert.get("at") or "")[:16].replace("T", " "),
                             "summary": alert.get("summary"), "delivered": alert.get("delivered"),
                             "open": "; ".join(what_is_open(state))})
        rows.sort(key=lambda r: (r["level"] != "escalation", r["days_left"] if r["days_left"] is not None else 0))
        channels = [c for c in ("email", "webhook") if getattr(service.policy.escalation.channels, c, None)]
        return page(request, "console_escalations.html", {"section": "escalations", "rows": rows,
                                                          "channels": channels}, 200, signed_in)

    app.include_router(router)

