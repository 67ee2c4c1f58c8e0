"""The officer console (/console): sign-in, CSRF, actions through the service, and a real browser.

The browser test drives Debian's Chromium with Playwright (as tests/test_auditor_page.py does; skipped,
saying so, without it) and checks every page with axe-core (axe-playwright-python): no serious or
critical violation. It saves a screenshot of each page under docs/screenshots/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from doors.api.app import create_app
from doors.api.console import COOKIE
from dsr.access import AccessConfig, Role, TokenEntry, token_hash
from dsr.models import parse_new_request
from dsr.rights import corrections
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from tests.conftest import REPO
from tests.test_api import AUDITOR, OFFICER, LocalEvidence

CHROMIUM = os.environ.get("DSR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOST = "127.0.0.1"
#: Where the browser tests save page screenshots: the README's copies with DSR_UPDATE_SCREENSHOTS=1
#: (so an ordinary run leaves the working tree alone), else a scratch folder.
SCREENSHOTS = (REPO / "docs" / "screenshots" if os.environ.get("DSR_UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "dsr-screenshots")
SAME_SITE = {"Origin": "http://localhost"}  # the test client's own site (loopback: no Secure flag needed)


# --- shared harness (tests/test_privacy_center.py uses it too) --------------------------------------


def access_config() -> AccessConfig:
    return AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),
                                TokenEntry(name="kpmg", role=Role.AUDITOR, sha256=token_hash(AUDITOR))))


def make_app(service: DsrService, smtp: Any = None) -> FastAPI:
    return create_app(service, access_config(), LocalEvidence(service), intake_smtp=smtp)


def browser_or_skip() -> None:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM}")
    for package in ("playwright", "axe_playwright_python"):
        if importlib.util.find_spec(package) is None:
            missing.append(f"the {package} Python package")
    if missing:
        message = f"browser test skipped: no {' and no '.join(missing)}; run scripts/install-browser.sh"
        if os.environ.get("DSR_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


class LiveServer:
    """The app on a free loopback port, served by uvicorn in a thread."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.url = f"http://{HOST}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def assert_accessible(page: Any, name: str) -> None:
    """axe-core finds no serious or critical violation; a screenshot of the page is kept."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in results.response["violations"]
           if v.get("impact") in ("serious", "critical")]
    assert not bad, f"accessibility violations on {name}: {bad}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def portal_service(tmp_path: Path, crm_url: str) -> Iterator[DsrService]:
    """The CRM and the manual portal (a person's step): fast, no vendor sandbox needed."""
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    crm = demo["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    path = tmp_path / "systems-crm-portal.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm, "portal": demo["systems"]["portal"]}}))
    service = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                                  identity_key="test-identity-key"))
    yield service
    service.close()


@pytest.fixture
def console(crm_only_service: DsrService) -> Iterator[tuple[TestClient, DsrService]]:
    with TestClient(make_app(crm_only_service), base_url="http://localhost") as client:
        yield client, crm_only_service


def _submit(service: DsrService, kind: str = "erasure", email: str = ERASURE_SUBJECT, *, regime: str = "gdpr",
            received: datetime | None = None) -> str:
    new = parse_new_request(type=kind, email=email, regime=regime, received=received or datetime.now(UTC))
    return service.submit(new).state.request_id


def _login(client: TestClient, token: str = OFFICER) -> str:
    answer = client.post("/console/login", data={"token": token}, headers=SAME_SITE, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console", answer.text
    return csrf_of(client.get("/console").text)


# --- over HTTP --------------------------------------------------------------------------------------


def test_sign_in_gives_a_session_cookie_not_the_token_and_only_officers_get_in(console) -> None:
    client, _ = console
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/login"
    answer = client.post("/console/login", data={"token": OFFICER}, headers=SAME_SITE, follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert f"{COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert OFFICER.lower() not in cookie  # a random session id, not the token itself
    assert "secure" not in cookie  # plain http to loopback (see the next test for any other host)
    client.cookies.clear()
    for token, why in ((AUDITOR, "not an officer"), ("x" * 43, "unknown"), ("", "unknown")):
        refused = client.post("/console/login", data={"token": token}, headers=SAME_SITE, follow_redirects=False)
        assert refused.status_code == 401 and "token: " in refused.text and why in refused.text
        assert "set-cookie" not in refused.headers
    page = client.get("/console/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "<script src=\"/static/console.js\"" in page.text and "<script>" not in page.text
    assert client.get("/static/console.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../app.py").status_code == 404


def test_secure_cookie_off_loopback(crm_only_service: DsrService) -> None:
    with TestClient(make_app(crm_only_service), base_url="http://console.example.test") as client:
        answer = client.post("/console/login", data={"token": OFFICER},
                             headers={"Origin": "http://console.example.test"}, follow_redirects=False)
        assert "secure" in answer.headers["set-cookie"].lower()
    with TestClient(make_app(crm_only_service), base_url="http://127.0.0.1:8080") as client:
        answer = client.post("/console/login", data={"token": OFFICER},
                             headers={"Origin": "http://127.0.0.1:8080"}, follow_redirects=False)
        assert "secure" not in answer.headers["set-cookie"].lower()


def test_every_form_needs_the_session_csrf_token_and_this_site_as_origin(console) -> None:
    client, service = console
    request_id = _submit(service)
    csrf = _login(client)
    url = f"/console/requests/{request_id}/cancel"
    for headers, data in (({"Origin": "https://evil.test"}, {"csrf": csrf, "reason": "x"}),
                          (SAME_SITE, {"reason": "x"}), (SAME_SITE, {"csrf": "forged", "reason": "x"})):
        assert client.post(url, data=data, headers=headers).status_code == 403
    assert service.state(request_id).status.value == "awaiting_verification"  # nothing happened
    done = client.post(url, data={"csrf": csrf, "reason": "asked twice"}, headers=SAME_SITE, follow_redirects=False)
    assert done.status_code == 303 and service.state(request_id).status.value == "cancelled"


def test_actions_write_the_same_ledger_events_as_the_cli_with_the_officer_as_actor(console) -> None:
    client, service = console
    request_id = _submit(service, regime="ccpa")
    csrf = _login(client)
    base = f"/console/requests/{request_id}"

    def post(action: str, **data: str) -> Any:
        return client.post(f"{base}/{action}", data={"csrf": csrf, **data}, headers=SAME_SITE, follow_redirects=False)

    assert post("acknowledge", note="acknowledged by e-mail").status_code == 303
    assert post("verify", method="email-code", note="code returned").status_code == 303
    assert post("extend", reason="many systems").status_code == 303
    events = service.events(request_id)
    assert [e.type for e in events][1:] == ["request.acknowledged", "request.verified", "request.extended"]
    assert {e.actor for e in events[1:]} == {"alice"}
    page = client.get(base).text
    assert '<span class="tag">extended</span>' in page and "request.extended" in page
    assert "note: code returned" in page and "reason: many systems" in page  # the kept words, not their hashes

    gdpr = _submit(service)  # the GDPR clock may wait for a clarification (config/policy.yaml)
    waiting = client.post(f"/console/requests/{gdpr}/pause", data={"csrf": csrf, "wait_for": "clarification",
                                                                   "reason": "which of two accounts"},
                          headers=SAME_SITE, follow_redirects=False)
    assert waiting.status_code == 303 and service.state(gdpr).deadline["paused"]
    assert '<span class="tag">paused</span>' in client.get(f"/console/requests/{gdpr}").text
    resumed = client.post(f"/console/requests/{gdpr}/resume", data={"csrf": csrf, "wait_for": "clarification"},
                          headers=SAME_SITE, follow_redirects=False)
    assert resumed.status_code == 303 and not service.state(gdpr).deadline["paused"]
    assert [e.payload["kind"] for e in service.events(gdpr) if e.type == "clock.event"] == [
        "clarification_requested", "clarification_received"]


def test_a_request_that_arrived_by_post_is_recorded_from_the_inbox(console) -> None:
    client, service = console
    csrf = _login(client)
    form = {"csrf": csrf, "type": "erasure", "email": "not-an-address", "regime": "gdpr", "country": "DE",
            "channel": "post"}
    bad = client.post("/console/requests", data=form, headers=SAME_SITE)
    assert bad.status_code == 400 and "email:" in bad.text and service.list() == []
    recorded = client.post("/console/requests", data=form | {"email": ERASURE_SUBJECT}, headers=SAME_SITE,
                           follow_redirects=False)
    assert recorded.status_code == 303
    [row] = service.list()
    first = service.events(row.request_id)[0]
    assert (first.actor, first.payload["channel"], first.payload["country"]) == ("alice", "post", "DE")
    assert recorded.headers["location"].startswith(f"/console/requests/{row.request_id}?")


def test_a_rectification_is_recorded_from_the_inbox_with_its_corrected_values(console) -> None:
    """The inbox form carries the corrected fields; the values stay out of the chain (names and a hash only)."""
    client, service = console
    csrf = _login(client)
    form = {"csrf": csrf, "type": "rectification", "email": ERASURE_SUBJECT, "regime": "gdpr", "country": "NL",
            "channel": "post", "set_last_name": "Byron-King", "set_first_name": ""}
    recorded = client.post("/console/requests", data=form, headers=SAME_SITE, follow_redirects=False)
    assert recorded.status_code == 303, recorded.text[:500]
    [row] = service.list()
    first = service.events(row.request_id)[0]
    assert first.payload["changes"]["fields"] == ["last_name"]
    assert "Byron-King" not in json.dumps(first.payload)
    assert corrections(service, row.request_id) == {"last_name": "Byron-King"}
    bare = client.post("/console/requests", data={**form, "set_last_name": "", "email": "other@example.org"},
                       headers=SAME_SITE)
    assert bare.status_code == 400 and "changes" in bare.text and len(service.list()) == 1


def test_bad_input_is_named_by_field_and_refusals_by_state_without_a_trace(console) -> None:
    client, service = console
    request_id = _submit(service)
    csrf = _login(client)
    empty = client.post(f"/console/requests/{request_id}/verify", data={"csrf": csrf, "method": "email-code",
                                                                        "note": ""}, headers=SAME_SITE)
    assert empty.status_code == 400 and "note:" in empty.text and "Traceback" not in empty.text
    leaky = client.post(f"/console/requests/{request_id}/extend",
                        data={"csrf": csrf, "reason": "ask ada@example.com"}, headers=SAME_SITE)
    assert leaky.status_code == 400 and "reason: must not contain an e-mail address" in leaky.text
    run = client.post(f"/console/requests/{request_id}/run", data={"csrf": csrf}, headers=SAME_SITE)
    assert run.status_code == 409 and "not verified" in run.text
    assert client.get("/console/requests/no-such-id").status_code == 404
    assert client.get("/console", params={"regime": "mars"}).status_code == 400


def test_inbox_puts_the_overdue_first_and_filters(console) -> None:
    client, service = console
    late = _submit(service, "access", ACCESS_SUBJECT, received=datetime.now(UTC) - timedelta(days=28))
    fresh = _submit(service)
    overdue = _submit(service, "access", "someone.else@example.org", regime="lgpd",
                      received=datetime.now(UTC) - timedelta(days=25))
    _login(client)
    page = client.get("/console").text
    order = [m.group(1) for m in re.finditer(r'data-request="([^"]+)"', page)]
    assert order == [overdue, late, fresh]
    assert re.search(rf'<tr class="overdue" data-request="{overdue}"', page) and "overdue</span>" in page
    only_gdpr = client.get("/console", params={"regime": "gdpr", "type": "erasure"}).text
    assert fresh in only_gdpr and late not in only_gdpr and overdue not in only_gdpr
    assert fresh in client.get("/console", params={"owner": "privacy-office"}).text


def test_holds_add_and_release_through_the_console(console) -> None:
    client, service = console
    from dsr.holds import holds

    csrf = _login(client)
    bad = client.post("/console/holds", data={"csrf": csrf, "email": "not-an-address", "ref": "LIT-1",
                                              "reason": "litigation"}, headers=SAME_SITE)
    assert bad.status_code == 400 and "email" in bad.text
    ok = client.post("/console/holds", data={"csrf": csrf, "email": ERASURE_SUBJECT, "ref": "LIT-1",
                                             "reason": "litigation"}, headers=SAME_SITE, follow_redirects=False)
    assert ok.status_code == 303 and [h.ref for h in holds(service)] == ["LIT-1"]
    assert ERASURE_SUBJECT not in client.get("/console/holds").text  # the subject shows as a keyed hash
    again = client.post("/console/holds/LIT-1/release", data={"csrf": csrf, "reason": ""}, headers=SAME_SITE)
    assert again.status_code == 400 and "reason:" in again.text
    client.post("/console/holds/LIT-1/release", data={"csrf": csrf, "reason": "case closed"}, headers=SAME_SITE)
    assert holds(service) == []


def test_api_docs_are_served_from_this_server(console) -> None:
    client, _ = console
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr" not in docs.text and "/static-offline-docs/" in docs.text
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "cdn.jsdelivr" not in redoc.text and "fonts.googleapis" not in redoc.text
    assert client.get("/openapi.json").status_code == 200


# --- in a real browser ------------------------------------------------------------------------------


def _wait_for(predicate: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_officer_runs_a_request_closes_its_manual_task_with_an_attachment_and_approves_a_held_purge(
        portal_service: DsrService, tmp_path: Path) -> None:
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    service = portal_service
    request_id = _submit(service, "access", ACCESS_SUBJECT)
    # Other open requests, so the inbox shows its clock: one overdue, one paused, one extended.
    overdue = _submit(service, "erasure", "late.one@example.org", regime="lgpd",
                      received=datetime.now(UTC) - timedelta(days=30))
    paused = _submit(service, "erasure", "waiting.one@example.org")
    service.pause(paused, wait_for="clarification", reason="which of two accounts is meant")
    extended = _submit(service, "access", "extended.one@example.org", regime="ccpa")
    service.extend(extended, reason="many systems to search")
    attachment = tmp_path / "portal export.csv"
    attachment.write_text("account,saved_quotes\nportal user,3\n")
    with LiveServer(make_app(service)) as live, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(15_000)
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

            page.goto(f"{live.url}/console")
            assert page.url == f"{live.url}/console/login"
            assert_accessible(page, "console-login")
            page.fill("#token", OFFICER)
            page.click("button[type=submit]")
            expect(page.locator("#inbox tbody tr")).to_have_count(4)
            assert page.get_attribute("#inbox tbody tr >> nth=0", "data-request") == overdue  # most urgent first
            assert "overdue" in page.inner_text(f"tr[data-request='{overdue}']")
            assert "paused" in page.inner_text(f"tr[data-request='{paused}']")
            assert "extended" in page.inner_text(f"tr[data-request='{extended}']")
            page.click("#record summary")  # the form to record a request, checked open
            assert_accessible(page, "console-inbox")

            # The request: verify, then run; progress moves without a reload.
            page.click(f"a[href='/console/requests/{request_id}']")
            page.fill("#verify-note", "code returned by the subject")
            page.click("form[action$='/verify'] button")
            expect(page.locator("#flash")).to_have_text("identity verified")
            marker = page.evaluate("() => (window.__sameDocument = 'yes')")
            page.click("#run-button")
            expect(page.locator("#flash")).to_have_text("run started")
            page.evaluate("() => (window.__sameDocument = 'yes')")
            expect(page.locator("#status-text")).to_have_text("awaiting manual action", timeout=30_000)
            expect(page.locator("tr[data-system=crm] .sys-status")).to_have_text("completed")
            assert page.evaluate("() => window.__sameDocument") == marker  # updated in place, no reload
            assert page.get_attribute("#run-progress", "value") == "1"
            assert_accessible(page, "console-request")

            # The portal's manual task: instructions shown in full, closed with a note and a file.
            page.click("nav >> text=Manual tasks")
            task = page.locator(f"#task-{request_id}-portal")
            assert "export the subject's account" in task.inner_text()
            assert_accessible(page, "console-tasks")
            task.locator("input[name=note]").fill("exported from the portal admin")
            task.locator("input[type=file]").set_input_files(str(attachment))
            task.locator("button[type=submit]").click()
            expect(page.locator("#flash")).to_contain_text("recorded as done")
            expect(page.locator("#status-text")).to_have_text("completed", timeout=30_000)
            done = service.state(request_id)
            assert done.status.value == "completed"
            [stored] = done.systems["portal"].task["attachments"]
            assert stored["name"] == "portal_export.csv"
            task_event = next(e for e in service.events(request_id) if e.type == "task.done")
            assert task_event.actor == "alice"

            # A retention dry run stops at the blast-radius guard; the officer approves it.
            page.click("nav >> text=Retention purge")
            page.click("#dry-run")
            expect(page.locator(".run").first).to_be_visible(timeout=30_000)
            expect(page.locator(".run .run-status").first).to_have_text("needs approval")
            assert "would lose" in page.locator(".run").first.inner_text()
            assert_accessible(page, "console-purge")
            page.click("text=Approve and purge")
            expect(page.locator(".run .run-status").first).to_have_text("completed", timeout=30_000)
            runs = [r for r in service.ledger.request_ids() if r.startswith("purge-")]
            approved = [service.ledger.events(r)[0].payload.get("approves") for r in runs]
            assert any(approved), "the approved run names the run it approves"
            assert sum(e.payload.get("purged", 0) for r in runs for e in service.ledger.events(r)
                       if e.type == "purge.batch") > 0

            page.click("nav >> text=Legal holds")
            assert_accessible(page, "console-holds")
            page.click("nav >> text=Escalations")
            assert_accessible(page, "console-escalations")
            assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
        finally:
            browser.close()


# --- the day-one path in the CLI ---------------------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI on a fresh home with the CRM and the manual portal, and an access file of its own."""
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    from sandbox.crm_seed import seed_crm

    crm_url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    seed_crm(crm_url, contacts=40)
    demo["systems"]["crm"]["settings"]["url"] = crm_url
    systems = tmp_path / "systems.yaml"
    systems.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": demo["systems"]["crm"],
                                                                  "portal": demo["systems"]["portal"]}}))
    access = tmp_path / "access.yaml"
    access.write_text("# officers and auditors\ntokens: []\n")
    for key, value in {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
                       "DSR_SYSTEMS_FILE": str(systems), "DSR_ACCESS_FILE": str(access),
                       "DSR_IDENTITY_KEY": "test-identity-key"}.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def test_token_create_write_adds_a_working_officer_token_to_the_access_file(cli_home: Path) -> None:
    from typer.testing import CliRunner

    from doors.cli import app as cli
    from dsr.access import load_access

    runner = CliRunner()
    made = runner.invoke(cli, ["token", "create", "--role", "officer", "--name", "alice", "--write"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    access = load_access(cli_home / "access.yaml")
    assert access.authenticate(token).name == "alice"
    assert (cli_home / "access.yaml").read_text().startswith("# officers and auditors")  # comments kept
    again = runner.invoke(cli, ["token", "create", "--role", "auditor", "--name", "kpmg", "--write"])
    assert again.exit_code == 0 and len(load_access(cli_home / "access.yaml").tokens) == 2
    bad = runner.invoke(cli, ["token", "create", "--role", "officer", "--name", "no/slashes", "--write"])
    assert bad.exit_code == 2 and "name:" in bad.output and len(load_access(cli_home / "access.yaml").tokens) == 2


def test_sweep_without_a_channel_does_not_claim_delivery(cli_home: Path) -> None:
    from typer.testing import CliRunner

    from doors.cli import app as cli

    runner = CliRunner()
    old = (datetime.now(UTC) - timedelta(days=40)).date().isoformat()
    submitted = runner.invoke(cli, ["submit", "--type", "access", "--email", ACCESS_SUBJECT, "--regime", "gdpr",
                                    "--received", old])
    assert submitted.exit_code == 0, submitted.output
    swept = runner.invoke(cli, ["sweep"])
    assert "alert(s) raised" in swept.stdout and "no channel configured" in swept.stdout
    assert "delivered" not in swept.stdout.replace("not delivered", "")


def test_task_list_shows_what_to_do(cli_home: Path) -> None:
    from typer.testing import CliRunner

    from doors.cli import app as cli
    from dsr.run import RequestRunner
    from dsr.service import DsrService

    service = DsrService(Settings())
    try:
        request_id = _submit(service, "access", ACCESS_SUBJECT)
        service.verify(request_id, method="email-code", note="ok")
        runner = RequestRunner(service)
        connect = service.connector
        plan = runner.begin(request_id)
        for system in plan.systems:
            runner.run_system(request_id, system, lambda name=system: connect(name), lease=plan.lease)
        runner.finish(request_id, lease=plan.lease)
    finally:
        service.close()
    listed = CliRunner().invoke(cli, ["task", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "what to do" in listed.stdout and "export the subject's account" in " ".join(listed.stdout.split())


def test_demo_serve_prints_the_addresses_a_working_officer_token_and_mails_without_addresses(
        crm_only_service: DsrService) -> None:
    """`dsr demo --serve` after the demo: what it hands to `dsr serve`, and what the person sees."""
    from rich.console import Console

    from doors.demo import serve_after_demo
    from dsr.adapters.mail import Notice, SmtpChannel

    screen = Console(record=True, width=200)
    handed: dict[str, Any] = {}

    def serve_app(service: DsrService, **options: Any) -> None:  # stands in for the blocking `dsr serve`
        handed.update(options)
        options["banner"]()
        smtp = options["intake_smtp"]()
        SmtpChannel(smtp.model_copy(update={"recipients": (ACCESS_SUBJECT,)})).send(
            Notice("Your verification code", "Your verification code: 123456", {}))

    serve_after_demo(crm_only_service, screen, serve_app, port=18080)
    shown = screen.export_text()
    assert "http://127.0.0.1:18080/console" in shown and "http://127.0.0.1:18080/privacy" in shown
    token = re.search(r"officer token[^\n]*\n(\S+)", shown).group(1)
    officer = AccessConfig(tokens=handed["extra_tokens"]).authenticate(token)
    assert officer is not None and officer.role == Role.OFFICER
    assert "Your verification code: 123456" in shown and ACCESS_SUBJECT not in shown  # the mailbox hides the address


def test_escalations_list_the_sweeps_alerts_and_say_no_channel_is_configured(console) -> None:
    from dsr.sweep import sweep

    client, service = console
    late = _submit(service, "access", ACCESS_SUBJECT, received=datetime.now(UTC) - timedelta(days=40))
    assert sweep(service, []).raised
    _login(client)
    page = client.get("/console/escalations")
    assert page.status_code == 200
    assert f"/console/requests/{late}" in page.text and ">escalation<" in page.text
    assert "No channel is configured" in page.text and "identity verification" in page.text  # what is still open
