"""The HTTP API by role: every route allowed for the right roles and refused (401/403) for the rest,
downloads recorded in the ledger, no personal data for auditors, path tricks refused."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from doors.api.app import create_app
from doors.api.auth import COOKIE
from dsr.access import AccessConfig, Role, TokenEntry, token_hash
from dsr.adapters.storage import EvidenceStore, config_from_settings, open_store
from dsr.models import parse_new_request
from dsr.run import RequestRunner
from dsr.service import DsrService
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT

OFFICER, AUDITOR = "officer-token-" + "o" * 30, "auditor-token-" + "a" * 30


def LocalEvidence(service: DsrService) -> EvidenceStore:  # noqa: N802 - reads like the class it stood for
    """The real local evidence store of this service's settings."""
    return open_store(config_from_settings(service.settings))


def _done(service: DsrService, kind: str, email: str) -> str:
    from tests.test_execution import _connect

    new = parse_new_request(type=kind, email=email, regime="gdpr", received=datetime.now(UTC))
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="ok")
    runner = RequestRunner(service)
    for system in runner.begin(request_id).systems:
        runner.run_system(request_id, system, _connect(service, system))
    runner.finish(request_id)
    return request_id


@pytest.fixture
def api(crm_only_service: DsrService) -> Iterator[tuple[TestClient, DsrService, dict[str, str]]]:
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),
                                  TokenEntry(name="kpmg", role=Role.AUDITOR, sha256=token_hash(AUDITOR))))
    app = create_app(crm_only_service, access, LocalEvidence(crm_only_service))
    ids = {"access": _done(crm_only_service, "access", ACCESS_SUBJECT),
           "erasure": _done(crm_only_service, "erasure", ERASURE_SUBJECT)}
    with TestClient(app) as client:
        yield client, crm_only_service, ids


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _subject_token(client: TestClient, request_id: str) -> str:
    answer = client.post(f"/requests/{request_id}/subject-token", headers=_auth(OFFICER), json={"days": 1})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


# -- access control: every route x every role -------------------------------------------------------
#
# The matrix below is the access policy, written down: every route the app serves, and who may call it.
# `test_the_matrix_lists_every_route_the_app_serves` fails when a route is added without a line here,
# and `test_every_route_for_every_role` calls each route as each role and checks the answer.

STAFF, OFFICER_ONLY, SUBJECT_ONLY, PUBLIC = frozenset({"officer", "auditor"}), frozenset({"officer"}), \
    frozenset({"subject"}), frozenset({"officer", "auditor", "subject", "nobody", "forged"})
ROLES = ("officer", "auditor", "subject", "nobody", "forged")
ORIGIN = {"Origin": "http://testserver"}  # the auditor page's forms pass its same-origin check

# (method, route path) -> (who may call it, how it authenticates: "bearer", "cookie", "login" (a token in
# the sign-in form) or "none")
MATRIX: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("GET", "/health"): (PUBLIC, "none"),
    ("GET", "/ready"): (PUBLIC, "none"),  # probes and Prometheus: counts only, no personal data
    ("GET", "/metrics"): (PUBLIC, "none"),
    ("GET", "/openapi.json"): (PUBLIC, "none"),
    ("GET", "/docs"): (PUBLIC, "none"),
    ("GET", "/docs/oauth2-redirect"): (PUBLIC, "none"),
    ("GET", "/redoc"): (PUBLIC, "none"),
    ("GET", "/requests"): (STAFF, "bearer"),
    ("GET", "/requests/{request_id}"): (STAFF, "bearer"),
    ("GET", "/requests/{request_id}/timeline"): (STAFF, "bearer"),
    ("GET", "/requests/{request_id}/bundle"): (STAFF, "bearer"),
    ("GET", "/requests/{request_id}/bundle/verify"): (STAFF, "bearer"),
    ("POST", "/requests"): (OFFICER_ONLY, "bearer"),
    ("POST", "/requests/{request_id}/verify"): (OFFICER_ONLY, "bearer"),
    ("POST", "/requests/{request_id}/extend"): (OFFICER_ONLY, "bearer"),
    ("POST", "/requests/{request_id}/cancel"): (OFFICER_ONLY, "bearer"),
    ("GET", "/requests/{request_id}/package"): (OFFICER_ONLY, "bearer"),
    ("POST", "/requests/{request_id}/subject-token"): (OFFICER_ONLY, "bearer"),
    ("GET", "/subject/request"): (SUBJECT_ONLY, "bearer"),
    ("GET", "/subject/package"): (SUBJECT_ONLY, "bearer"),
    # The public OpenDSR door (rate-limited, no token) and the auditor page's sign-in forms.
    ("POST", "/opendsr/requests"): (PUBLIC, "none"),
    ("POST", "/opendsr/requests/{request_id}/verify"): (PUBLIC, "none"),
    ("GET", "/opendsr/requests/{request_id}"): (PUBLIC, "none"),
    # OpenDSR 2.0 and OpenGDPR 1.0 (the protocol's own signatures; no bearer token).
    ("GET", "/opendsr/v2/discovery"): (PUBLIC, "none"),
    ("GET", "/opendsr/v2/certificate.pem"): (PUBLIC, "none"),
    ("POST", "/opendsr/v2/requests"): (PUBLIC, "none"),
    ("GET", "/opendsr/v2/requests/{request_id}"): (PUBLIC, "none"),
    ("DELETE", "/opendsr/v2/requests/{request_id}"): (PUBLIC, "none"),
    ("POST", "/opendsr/v2/requests/{request_id}/verify"): (PUBLIC, "none"),
    ("GET", "/opendsr/v2/results/{token}"): (PUBLIC, "none"),
    ("GET", "/opendsr/v1/discovery"): (PUBLIC, "none"),
    ("POST", "/opendsr/v1/opengdpr_requests"): (PUBLIC, "none"),
    ("GET", "/opendsr/v1/opengdpr_requests/{request_id}"): (PUBLIC, "none"),
    ("DELETE", "/opendsr/v1/opengdpr_requests/{request_id}"): (PUBLIC, "none"),
    ("GET", "/auditor/login"): (PUBLIC, "none"),
    ("POST", "/auditor/login"): (STAFF, "login"),  # the form takes the token: staff get a session, others 401
    ("POST", "/auditor/logout"): (PUBLIC, "none"),
    # The auditor page: a session cookie, staff only.
    ("GET", "/auditor"): (STAFF, "cookie"),
    ("GET", "/auditor/requests/{request_id}"): (STAFF, "cookie"),
    ("POST", "/auditor/requests/{request_id}/verify"): (STAFF, "cookie"),
    # The officer console: a session of its own (officers only); everyone else is sent to its sign-in.
    ("GET", "/console/login"): (PUBLIC, "none"),
    ("POST", "/console/login"): (OFFICER_ONLY, "console-login"),
    ("POST", "/console/logout"): (OFFICER_ONLY, "console"),
    ("GET", "/console"): (OFFICER_ONLY, "console"),
    ("POST", "/console/requests"): (OFFICER_ONLY, "console"),
    ("GET", "/console/requests/{request_id}"): (OFFICER_ONLY, "console"),
    ("GET", "/console/requests/{request_id}/progress"): (OFFICER_ONLY, "console"),
    ("POST", "/console/requests/{request_id}/{action}"): (OFFICER_ONLY, "console"),
    ("GET", "/console/tasks"): (OFFICER_ONLY, "console"),
    ("POST", "/console/tasks/{request_id}/{system}"): (OFFICER_ONLY, "console"),
    ("GET", "/console/holds"): (OFFICER_ONLY, "console"),
    ("POST", "/console/holds"): (OFFICER_ONLY, "console"),
    ("POST", "/console/holds/{ref}/release"): (OFFICER_ONLY, "console"),
    ("GET", "/console/purge"): (OFFICER_ONLY, "console"),
    ("POST", "/console/purge"): (OFFICER_ONLY, "console"),
    ("GET", "/console/jobs/{job_id}"): (OFFICER_ONLY, "console"),
    ("GET", "/console/escalations"): (OFFICER_ONLY, "console"),
    # The privacy center (public, rate-limited, like the OpenDSR door), its static files, GPC.
    ("GET", "/privacy"): (PUBLIC, "none"),
    ("POST", "/privacy/requests"): (PUBLIC, "none"),
    ("GET", "/privacy/requests/{request_id}"): (PUBLIC, "none"),
    ("GET", "/privacy/requests/{request_id}/progress"): (PUBLIC, "none"),
    ("GET", "/privacy/requests/{request_id}/verify"): (PUBLIC, "none"),
    ("POST", "/privacy/requests/{request_id}/verify"): (PUBLIC, "none"),
    ("POST", "/privacy/requests/{request_id}/link"): (PUBLIC, "none"),
    ("GET", "/privacy/status"): (PUBLIC, "none"),
    ("GET", "/privacy/download/{token}"): (PUBLIC, "none"),
    ("POST", "/privacy/download/{token}"): (PUBLIC, "none"),
    ("GET", "/static/{name}"): (PUBLIC, "none"),
    ("GET", "/.well-known/gpc.json"): (PUBLIC, "none"),
}
#: Path parameters of the pages' routes, and the form each POST sends (none starts a long job).
PAGE_PARAMS = {"{action}": "acknowledge", "{system}": "crm", "{ref}": "LIT-MATRIX", "{job_id}": "no-such-job",
               "{token}": "not-a-token", "{name}": "site.css"}
PAGE_FORMS = {"/console/purge": {"approve": "purge-no-such-run"}}


# The API answers under /v1; its unversioned paths (the first release's) answer the same, deprecated.
MATRIX.update({(method, "/v1" + path): rule for (method, path), rule in list(MATRIX.items())
               if path.startswith(("/requests", "/subject/"))})


def served_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, routers included (HEAD and OPTIONS aside)."""
    found: set[tuple[str, str]] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            candidates = getattr(route, "effective_candidates", None)
            if candidates is not None:  # an included router (FastAPI >= 0.150)
                walk(candidates())
            elif hasattr(route, "routes") and not hasattr(route, "methods"):  # a mounted sub-app
                walk(route.routes)
            else:
                found.update((m, route.path) for m in (route.methods or ()) if m not in ("HEAD", "OPTIONS"))

    walk(app.routes)
    return found


BODIES: dict[str, dict[str, Any]] = {  # a body each POST route would accept
    "/requests": {"type": "access", "email": "matrix.new@example.com", "regime": "ccpa"},
    "/requests/{request_id}/verify": {"method": "email-code", "note": "ok"},
    "/requests/{request_id}/extend": {"reason": "complex"},
    "/requests/{request_id}/cancel": {"reason": "withdrawn"},
    "/requests/{request_id}/subject-token": {"days": 1},
    "/opendsr/requests/{request_id}/verify": {"code": "123456"},
}
BODIES.update({"/v1" + path: body for path, body in list(BODIES.items()) if path.startswith("/requests")})


def _new_request(service: DsrService, *, verified: bool) -> str:
    new = parse_new_request(type="access", email="matrix.case@example.com", regime="gdpr", received=datetime.now(UTC))
    request_id = service.submit(new).state.request_id
    if verified:
        service.verify(request_id, method="email-code", note="ok")
    return request_id


@pytest.fixture(scope="module")
def matrix_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, DsrService, dict[str, str]]]:
    """One app for the whole matrix (the per-test fixture would cost a CRM run per call): calls that
    change state get a request of their own, so the order of the calls does not matter."""
    import yaml

    from dsr.settings import Settings
    from sandbox.crm_seed import seed_crm

    home = tmp_path_factory.mktemp("matrix")
    crm_url = f"sqlite:///{home / 'crm.sqlite'}"
    seed_crm(crm_url, contacts=10)
    repo = Path(__file__).resolve().parent.parent
    crm = yaml.safe_load((repo / "config" / "demo" / "systems.yaml").read_text())["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    systems = home / "systems.yaml"
    systems.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    service = DsrService(Settings(home=home / "var", config_dir=repo / "config", systems_file=systems,
                                  identity_key="test-identity-key"))
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),
                                  TokenEntry(name="kpmg", role=Role.AUDITOR, sha256=token_hash(AUDITOR))))
    ids = {"access": _done(service, "access", ACCESS_SUBJECT)}
    with TestClient(create_app(service, access, LocalEvidence(service))) as client:
        yield client, service, ids
    service.close()


def _call(client: TestClient, service: DsrService, ids: dict[str, str], method: str, route: str, role: str,
          how: str) -> Response:
    """Call one route as one role, with arguments that would succeed for a role it allows."""
    token = {"officer": OFFICER, "auditor": AUDITOR, "nobody": None, "forged": "x" * 43}.get(role)
    if role == "subject":
        token = _subject_token(client, ids["access"])
    fresh = route.removeprefix("/v1") in ("/requests/{request_id}/verify", "/requests/{request_id}/extend",
                                          "/requests/{request_id}/cancel") and method == "POST"
    request_id = _new_request(service, verified=route.endswith("/extend")) if fresh else ids["access"]
    if route.startswith("/opendsr/"):
        request_id = "7a1c7e46-3f63-4f7c-9a1e-2b0e6c1d5f3a"  # a well-formed id nobody submitted
    path = route.replace("{request_id}", request_id)
    body = BODIES.get(route, {}) | ({"subject_request_id": request_id} if route == "/opendsr/requests" else {}) \
        if method == "POST" else None
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    if token and how == "cookie":
        cookies[COOKIE] = token
    elif token:
        headers |= _auth(token)
    if route.startswith(("/console", "/privacy", "/static")):
        return _page_call(client, method, route, path, token, how)
    if route.startswith("/auditor"):
        headers |= ORIGIN
        form = {"/auditor/login": {"token": token or ""}, "/auditor/requests/{request_id}/verify": {"version": "1"}}
        client.cookies.clear()
        client.cookies.update(cookies)
        try:
            return client.request(method, path, headers=headers, data=form.get(route) if method == "POST" else None,
                                  follow_redirects=False)
        finally:
            client.cookies.clear()
    return client.request(method, path, headers=headers, json=body, follow_redirects=False)


def _page_call(client: TestClient, method: str, route: str, path: str, token: str | None, how: str) -> Response:
    """A console or privacy center route: the console's own sign-in gives the session and form token."""
    for name, value in PAGE_PARAMS.items():
        path = path.replace(name, value)
    client.cookies.clear()
    headers = dict(ORIGIN)
    form: dict[str, str] = dict(PAGE_FORMS.get(route, {}))
    if how == "console-login":
        form["token"] = token or ""
    elif how == "console" and token:
        signed = client.post("/console/login", data={"token": token}, headers=ORIGIN, follow_redirects=False)
        session = signed.cookies.get("dsr_console")
        if session:  # Secure off loopback: sent by hand, as a browser on https would
            headers["Cookie"] = f"dsr_console={session}"
            form["csrf"] = re.search(r'name="csrf" value="([^"]+)"',
                                     client.get("/console", headers=headers).text).group(1)
    return client.request(method, path, headers=headers, data=form if method == "POST" else None,
                          follow_redirects=False)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, route", sorted(MATRIX))
def test_every_route_for_every_role(matrix_api, method: str, route: str, role: str) -> None:
    client, service, ids = matrix_api
    allowed, how = MATRIX[(method, route)]
    answer = _call(client, service, ids, method, route, role, how)
    if allowed is PUBLIC:
        # No token is needed, and none changes the answer (a bad one included). /opendsr answers about
        # the request (404 unknown, 422 bad body, 503 no SMTP here); none of that is a refusal.
        assert answer.status_code not in (401, 403), answer.text
        assert answer.status_code < 500 or answer.status_code == 503, answer.text
    elif how == "console-login":
        if role in allowed:
            assert answer.status_code == 303 and "dsr_console=" in answer.headers.get("set-cookie", "")
        else:
            assert answer.status_code == 401 and "set-cookie" not in answer.headers
    elif how == "console":  # officers act (an answer about the request, never a refusal); others sign in first
        if role in allowed:
            assert answer.status_code not in (401, 403) and answer.status_code < 500, answer.text
        elif answer.headers.get("content-type", "").startswith("application/json"):  # what the pages' script polls
            assert answer.status_code == 401, answer.text
        else:
            assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    elif how == "login":
        if role in allowed:
            assert answer.status_code == 303 and COOKIE in answer.headers.get("set-cookie", "")
        else:
            assert answer.status_code == 401 and "set-cookie" not in answer.headers
    elif role in allowed:
        assert answer.status_code in (200, 201), answer.text
    elif how == "cookie":  # the page: sign in first (nobody, forged), or not for this role (subject)
        if role in ("nobody", "forged"):
            assert answer.status_code == 303 and answer.headers["location"].endswith("/auditor/login")
        else:
            assert answer.status_code == 403
    elif role in ("nobody", "forged"):
        assert answer.status_code == 401 and answer.headers.get("www-authenticate") == "Bearer"
    else:
        assert answer.status_code == 403, answer.text


def test_the_matrix_lists_every_route_the_app_serves(matrix_api) -> None:
    client, _, _ = matrix_api
    served = served_routes(client.app)
    assert served - set(MATRIX) == set(), "routes without an access rule in MATRIX"
    assert set(MATRIX) - served == set(), "MATRIX lists routes the app no longer serves"


def test_a_staff_token_in_a_cookie_never_carries_a_write(matrix_api) -> None:
    """The cookie is for the auditor page's reads: a forged cross-site POST riding it gets nowhere."""
    client, service, ids = matrix_api
    before = len(service.list())
    client.cookies.set(COOKIE, OFFICER)
    try:
        created = client.post("/requests", json={"type": "access", "email": "csrf@example.com", "regime": "ccpa"})
        cancelled = client.post(f"/requests/{ids['access']}/cancel", json={"reason": "csrf"})
    finally:
        client.cookies.clear()
    assert (created.status_code, cancelled.status_code) == (401, 401)
    assert len(service.list()) == before


def test_tokens_are_compared_in_constant_time_against_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured token is compared with hmac.compare_digest, whether or not an earlier one matched,
    so how long a check takes says nothing about which entry (if any) nearly matched."""
    import dsr.access

    entries = tuple(TokenEntry(name=f"n{i}", role=Role.AUDITOR, sha256=token_hash(f"token-{i}")) for i in range(5))
    access = AccessConfig(tokens=entries)
    compared: list[tuple[str, str]] = []
    real = dsr.access.same_hash

    def counting(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(dsr.access, "same_hash", counting)
    assert access.authenticate("token-0") == dsr.access.Principal("n0", Role.AUDITOR)
    assert len(compared) == len(entries)  # no early exit on the first (matching) entry
    compared.clear()
    assert access.authenticate("nobody's token") is None
    assert len(compared) == len(entries)


def test_token_checks_use_compare_digest_never_equality() -> None:
    """Read the code: the functions that compare secrets call compare_digest and hold no == on them."""
    import ast
    import inspect

    import dsr.access
    import dsr.intake

    def compares(fn: Any) -> tuple[bool, list[str]]:
        tree = ast.parse(inspect.getsource(fn).lstrip())  # methods are indented
        calls = any(isinstance(n, ast.Attribute) and n.attr == "compare_digest" for n in ast.walk(tree))
        eq = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)
              and any(isinstance(op, ast.Eq | ast.NotEq) for op in n.ops)
              and any(w in ast.unparse(n) for w in ("sha256", "digest", "token", "hmac"))]
        return calls, eq

    for fn in (dsr.access.same_hash, dsr.intake.Intake.verify_code):
        calls, eq = compares(fn)
        assert calls and not eq, (fn.__qualname__, eq)
    calls, eq = compares(dsr.access.AccessConfig.authenticate)
    assert "same_hash" in inspect.getsource(dsr.access.AccessConfig.authenticate) and not eq


# The privacy center's ids are OpenDSR UUIDs, checked before any lookup (tests/test_privacy_center.py).
ID_ROUTES = sorted((m, r) for m, r in MATRIX if "{request_id}" in r and not r.startswith(("/opendsr", "/privacy")))
# (A bare ".." is resolved by the HTTP client before it is sent, as browsers do: its encodings reach the server.)
PATH_TRICKS = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a..b", "x%00y", "%5C..%5Cwin.ini", "-rf", "a" * 65,
               "%C3%A9t%C3%A9", "a%20b", "a.zip", "%252e%252e%252f"]


@pytest.mark.parametrize("method, route", ID_ROUTES)
def test_path_tricks_in_ids_are_refused_on_every_route(matrix_api, method: str, route: str) -> None:
    """Ids become storage keys and file names: every id route refuses them, even for an officer."""
    client, service, _ = matrix_api
    events_before = sum(len(service.events(r.request_id)) for r in service.list())
    for trick in PATH_TRICKS:
        path = route.replace("{request_id}", trick)
        if route.startswith("/console"):
            answer = _page_call(client, method, route, path, OFFICER, MATRIX[(method, route)][1])
        elif route.startswith("/auditor"):
            client.cookies.set(COOKIE, OFFICER)
            try:
                answer = client.request(method, path, headers=ORIGIN, data={"version": "1"}, follow_redirects=False)
            finally:
                client.cookies.clear()
        else:
            answer = client.request(method, path, headers=_auth(OFFICER), json=BODIES.get(route))
        if answer.status_code == 307:
            # Starlette drops a trailing slash (an encoded "/" at the end) by redirecting, on this host,
            # to a path the same checks then judge: nothing is served on the way.
            assert answer.headers["location"].startswith("http://testserver/") and not answer.content
            continue
        assert answer.status_code in (400, 404), (trick, answer.status_code, answer.text)
        if answer.status_code == 400:
            assert "request_id" in answer.text or "request id" in answer.text
    assert sum(len(service.events(r.request_id)) for r in service.list()) == events_before  # nothing recorded


@pytest.mark.parametrize("version", ["0", "-1", "abc", "1.5", "99999999999999999999999", "1;rm"])
def test_bundle_versions_are_validated(matrix_api, version: str) -> None:
    client, _, ids = matrix_api
    for suffix in ("bundle", "bundle/verify"):
        answer = client.get(f"/requests/{ids['access']}/{suffix}", params={"version": version}, headers=_auth(AUDITOR))
        assert answer.status_code in (404, 422), (version, answer.status_code)
        if answer.status_code == 422:
            assert answer.json()["detail"][0]["loc"] == ["query", "version"]


def test_a_subject_token_is_spent_by_one_download_however_many_race(matrix_api) -> None:
    client, service, ids = matrix_api
    token = _subject_token(client, ids["access"])
    with ThreadPoolExecutor(max_workers=8) as pool:
        spent = list(pool.map(lambda _: service.spend_subject_token(token), range(16)))
    assert spent.count(True) == 1
    answer = client.get("/subject/package", headers=_auth(token))
    assert answer.status_code == 401 and "already used" in answer.json()["detail"]


def test_an_expired_subject_token_opens_nothing(matrix_api) -> None:
    client, service, ids = matrix_api
    token, _ = service.issue_subject_token(ids["access"], ttl=timedelta(seconds=-1))
    for path in ("/subject/request", "/subject/package"):
        assert client.get(path, headers=_auth(token)).status_code == 401
    assert service.spend_subject_token(token) is False


def test_a_subject_token_works_once_for_the_package_and_is_not_a_staff_token(matrix_api) -> None:
    client, _, ids = matrix_api
    token = _subject_token(client, ids["access"])
    assert client.get("/subject/package", headers=_auth(token)).status_code == 200
    assert client.get("/subject/package", headers=_auth(token)).status_code == 401
    assert client.get("/requests", headers=_auth(token)).status_code == 403
    assert client.post("/requests/x/subject-token", headers=_auth(token), json={"days": 1}).status_code == 403

def test_auditor_sees_no_personal_data_officer_sees_the_address(api) -> None:
    client, _, ids = api
    for request_id in ids.values():
        as_auditor = client.get(f"/requests/{request_id}", headers=_auth(AUDITOR)).text.lower()
        timeline = client.get(f"/requests/{request_id}/timeline", headers=_auth(AUDITOR)).text.lower()
        listing = client.get("/requests", headers=_auth(AUDITOR)).text.lower()
        for text in (as_auditor, timeline, listing):
            assert ACCESS_SUBJECT not in text and ERASURE_SUBJECT not in text and "hopper" not in text
    officer_view = client.get(f"/requests/{ids['access']}", headers=_auth(OFFICER)).json()
    assert officer_view["subject"]["email"] == ACCESS_SUBJECT


def test_bundle_download_verifies_and_is_recorded_with_who_and_which_version(api) -> None:
    client, service, ids = api
    answer = client.get(f"/requests/{ids['erasure']}/bundle", headers=_auth(AUDITOR))
    assert answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as bundle:
        assert "manifest.json" in bundle.namelist()
    verified = client.get(f"/requests/{ids['erasure']}/bundle/verify", headers=_auth(AUDITOR)).json()
    assert verified["ok"] is True and any(c["check"].startswith("signature") for c in verified["checks"])
    last = service.events(ids["erasure"])[-1]
    assert (last.type, last.payload) == ("bundle.downloaded", {"by": "kpmg", "role": "auditor", "version": 1})
    assert client.get(f"/requests/{ids['erasure']}/bundle?version=9", headers=_auth(AUDITOR)).status_code == 404


def test_subject_token_shows_status_and_downloads_the_package_once(api) -> None:
    client, service, ids = api
    token = _subject_token(client, ids["access"])
    status_ = client.get("/subject/request", headers=_auth(token)).json()
    assert status_ == {"request_id": ids["access"], "type": "access", "status": "completed",
                       "due": status_["due"], "package_available": True}
    first = client.get("/subject/package", headers=_auth(token))
    assert first.status_code == 200
    with zipfile.ZipFile(io.BytesIO(first.content)) as package:
        assert ACCESS_SUBJECT in json.dumps(json.loads(package.read("data.json"))).lower()
    second = client.get("/subject/package", headers=_auth(token))
    assert second.status_code == 401 and "already used" in second.json()["detail"]
    downloads = [e for e in service.events(ids["access"]) if e.type == "package.downloaded"]
    assert [(d.payload["by"], d.payload["role"]) for d in downloads] == [("subject", "subject")]
    issued = [e for e in service.events(ids["access"]) if e.type == "subject_token.issued"]
    assert token not in json.dumps([e.payload for e in issued])  # only its hash is kept


def test_a_subject_token_reaches_only_its_own_request(api) -> None:
    client, _, ids = api
    token = _subject_token(client, ids["access"])
    assert client.get(f"/requests/{ids['erasure']}", headers=_auth(token)).status_code == 403
    assert client.get(f"/requests/{ids['erasure']}/package", headers=_auth(token)).status_code == 403


def test_no_subject_token_for_an_erasure_or_before_completion(api) -> None:
    client, _, ids = api
    answer = client.post(f"/requests/{ids['erasure']}/subject-token", headers=_auth(OFFICER), json={"days": 1})
    assert answer.status_code == 409


@pytest.mark.parametrize("trick", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a..b", "..", "x%00y", "%5C..%5Cwin.ini"])
def test_path_tricks_in_ids_are_refused(api, trick: str) -> None:
    client, _, _ = api
    answer = client.get(f"/requests/{trick}/bundle", headers=_auth(AUDITOR))
    assert answer.status_code in (400, 404)
    assert answer.status_code != 200


def test_officer_submit_and_errors_name_the_field(api) -> None:
    client, _, _ = api
    bad = client.post("/requests", headers=_auth(OFFICER), json={"type": "access", "email": "nope", "regime": "ccpa"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "email"]
    extra = client.post("/requests", headers=_auth(OFFICER),
                        json={"type": "access", "email": "a@example.com", "regime": "ccpa", "admin": True})
    assert extra.status_code == 422 and "admin" in json.dumps(extra.json())
    good = client.post("/requests", headers=_auth(OFFICER), json={"type": "access", "email": "a@example.com",
                                                                  "regime": "ccpa"})
    assert good.status_code == 201 and good.json()["status"] == "awaiting_verification"
    huge = client.post("/requests", headers={**_auth(OFFICER), "Content-Type": "application/json"},
                       content=b"{" + b" " * 70_000 + b"}")
    assert huge.status_code == 413


def test_unknown_request_is_404(api) -> None:
    client, _, _ = api
    assert client.get("/requests/does-not-exist", headers=_auth(AUDITOR)).status_code == 404


def test_a_bundle_swapped_in_storage_is_never_served(api) -> None:
    """Someone with write access to storage puts another request's (intact, signed) bundle in place."""
    client, service, ids = api
    folder = service.settings.bundles_path
    erasure, access = folder / ids["erasure"] / "evidence-v1.zip", folder / ids["access"] / "evidence-v1.zip"
    erasure.chmod(0o644)
    erasure.write_bytes(access.read_bytes())
    answer = client.get(f"/requests/{ids['erasure']}/bundle", headers=_auth(AUDITOR))
    # A verdict on the evidence (409, the failed check named), not a server fault (500).
    assert answer.status_code == 409 and "does not match" in answer.json()["detail"]
    assert "sealed" in answer.json()["check"] and answer.headers["content-type"] == "application/json"
    checked = client.get(f"/requests/{ids['erasure']}/bundle/verify", headers=_auth(AUDITOR))
    assert checked.status_code == 409 and checked.json()["check"] == answer.json()["check"]
