"""The auditor web page: metrics, the pages over HTTP, and a real headless browser.

The browser test drives Debian's Chromium with Playwright for Python (`executable_path`; Playwright's
own browser download is never used). `scripts/install-browser.sh` installs both; without them the
browser test is skipped, saying so (set DSR_REQUIRE_BROWSER=1 to make that a failure instead).
"""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from doors.api.app import create_app
from doors.api.auth import COOKIE
from doors.api.pages import mount_pages
from dsr.access import AccessConfig, Role, TokenEntry, token_hash
from dsr.bundle import contains_email_address
from dsr.metrics import RequestFacts, aggregate, request_facts
from dsr.models import parse_new_request
from dsr.personal_text import REDACTED_EMAIL
from dsr.service import DsrService
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from tests.test_api import AUDITOR, OFFICER, LocalEvidence, _done

CHROMIUM = os.environ.get("DSR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: What must never appear on an auditor page: the seeded subjects' addresses, names and employers.
PERSONAL = (ERASURE_SUBJECT, ACCESS_SUBJECT, "ada lovelace", "ada.lovelace", "lovelace", "grace hopper",
            "grace.hopper", "hopper", "analytical engines", "harvard computation lab", "example.com", "example.org")
HOST = "127.0.0.1"


def assert_no_personal_data(html: str) -> None:
    text = html.lower()
    leaked = [p for p in PERSONAL if p in text]
    assert not leaked, f"personal data on an auditor page: {leaked}"
    assert not contains_email_address(html), "an e-mail address on an auditor page"


# --- metrics --------------------------------------------------------------------------------------

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def _facts(i: int, *, kind: str = "access", status: str = "completed", days: float | None = 3,
           due: date | None = date(2025, 2, 6)) -> RequestFacts:
    closed = T0 + timedelta(days=days) if days is not None else None
    return RequestFacts(f"r{i}", kind, "gdpr", status, T0, due, closed)


def test_metrics_counts_on_time_share_and_median() -> None:
    rows = [
        _facts(1, days=2),
        _facts(2, kind="erasure", days=31),  # closes 2025-02-06 09:00 UTC: on the due date, so on time
        _facts(3, kind="erasure", days=32),  # a day late
        _facts(4, status="rejected", days=10),
        _facts(5, status="cancelled", days=None),  # owes no answer: outcome counted, nothing else
        _facts(6, status="partially_completed", days=None, due=date(2025, 1, 10)),  # open, overdue
        _facts(7, status="in_progress", days=None, due=date(2025, 3, 1)),  # open, not yet due
        _facts(8, status="completed", days=5, due=None),  # closed without a due date: not judged
    ]
    m = aggregate(rows, today=date(2025, 2, 10))
    assert m.total == 8
    assert m.by_type == {"access": 6, "erasure": 2}
    assert m.by_outcome == {"cancelled": 1, "completed": 4, "in_progress": 1, "partially_completed": 1,
                            "rejected": 1}
    assert (m.closed, m.with_due, m.on_time, m.late) == (5, 4, 3, 1)
    assert m.on_time_percent == 75.0
    assert m.median_days_to_close == 10  # of 2, 31, 32, 10, 5
    assert m.open_overdue == 1


def test_metrics_of_nothing_are_empty_not_errors() -> None:
    m = aggregate([], today=date(2025, 1, 1))
    assert (m.total, m.closed, m.on_time_percent, m.median_days_to_close, m.by_type) == (0, 0, None, None, {})


def test_request_facts_from_a_completed_request(sqlite_service: DsrService) -> None:
    request_id = _done(sqlite_service, "erasure", ERASURE_SUBJECT)
    facts = request_facts(sqlite_service.events(request_id))
    assert facts.status == "completed" and facts.closed and facts.on_time is True
    assert facts.closed_at is not None and facts.closed_at >= facts.received_at
    assert 0 <= facts.days_to_close < 1
    new = parse_new_request(type="access", email=ACCESS_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    waiting = sqlite_service.submit(new).state.request_id
    open_facts = request_facts(sqlite_service.events(waiting))
    assert (open_facts.closed, open_facts.on_time, open_facts.days_to_close) == (False, None, None)


# --- the pages over HTTP (no browser) -------------------------------------------------------------


def _app(service: DsrService) -> FastAPI:
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),
                                  TokenEntry(name="kpmg", role=Role.AUDITOR, sha256=token_hash(AUDITOR))))
    evidence = LocalEvidence(service)
    app = create_app(service, access, evidence)
    if not any(getattr(route, "path", None) == "/auditor" for route in app.routes):
        mount_pages(app, service=service, resolve=app.state.resolve, evidence=evidence)  # until create_app does
    return app


@pytest.fixture
def site(crm_only_service: DsrService) -> Iterator[tuple[TestClient, DsrService, dict[str, str]]]:
    app = _app(crm_only_service)
    ids = {"access": _done(crm_only_service, "access", ACCESS_SUBJECT),
           "erasure": _done(crm_only_service, "erasure", ERASURE_SUBJECT)}
    with TestClient(app, base_url="http://testserver") as client:
        yield client, crm_only_service, ids


SAME_SITE = {"Origin": "http://testserver"}


def _login(client: TestClient, token: str) -> None:
    answer = client.post("/auditor/login", data={"token": token}, headers=SAME_SITE, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/auditor", answer.text


def test_not_logged_in_redirects_to_login_and_every_page_has_the_csp(site) -> None:
    client, _, ids = site
    for path in ("/auditor", f"/auditor/requests/{ids['access']}"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/auditor/login"
    form = client.get("/auditor/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    _login(client, AUDITOR)
    for path in ("/auditor/login", "/auditor", f"/auditor/requests/{ids['access']}", "/auditor/requests/nope",
                 "/auditor?from=yesterday"):
        answer = client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "form-action 'self'" in csp and "img-src data:" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in answer.text.lower() and "http://" not in answer.text.replace(
            'xmlns="http://www.w3.org/2000/svg"', "")
        assert_no_personal_data(answer.text)
    assert client.get("/auditor/requests/nope").status_code == 404
    assert client.get("/auditor/requests/..%2F..%2Fetc").status_code in (400, 404)
    assert client.get("/auditor?from=yesterday").status_code == 400


def test_login_cookie_flags_and_who_may_log_in(site) -> None:
    client, _, ids = site
    answer = client.post("/auditor/login", data={"token": AUDITOR}, headers=SAME_SITE, follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert f"{COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http here; set when the request came over https
    client.cookies.clear()
    subject = client.post(f"/requests/{ids['access']}/subject-token", json={"days": 1},
                          headers={"Authorization": f"Bearer {OFFICER}"}).json()["token"]
    for token, why in ((subject, "data subject"), ("x" * 43, "Unknown"), ("", "Unknown")):
        refused = client.post("/auditor/login", data={"token": token}, headers=SAME_SITE, follow_redirects=False)
        assert refused.status_code == 401 and why in refused.text and "set-cookie" not in refused.headers
    _login(client, OFFICER)  # the privacy office may look too
    assert client.get("/auditor").status_code == 200


def test_posts_from_another_site_are_refused(site) -> None:
    client, _, ids = site
    for headers in ({}, {"Origin": "https://evil.test"}, {"Origin": "null"}, {"Referer": "https://evil.test/x"}):
        answer = client.post("/auditor/login", data={"token": AUDITOR}, headers=headers, follow_redirects=False)
        assert answer.status_code == 403 and "set-cookie" not in answer.headers
    assert client.post("/auditor/login", data={"token": AUDITOR}, follow_redirects=False,
                       headers={"Referer": "http://testserver/auditor/login"}).status_code == 303
    verify = f"/auditor/requests/{ids['erasure']}/verify"
    assert client.post(verify, data={"version": "1"}, headers={"Origin": "https://evil.test"}).status_code == 403
    assert client.post("/auditor/logout", headers={"Origin": "https://evil.test"}).status_code == 403
    assert client.get("/auditor").status_code == 200  # still logged in
    ok = client.post(verify, data={"version": "1"}, headers=SAME_SITE)
    assert ok.status_code == 200 and 'data-ok="true"' in ok.text
    assert client.post(verify, data={"version": "7"}, headers=SAME_SITE).status_code == 404


def test_filters_narrow_the_list_and_the_aggregates(site) -> None:
    client, _, ids = site
    _login(client, AUDITOR)
    everything = client.get("/auditor").text
    assert ids["access"] in everything and ids["erasure"] in everything
    erasures = client.get("/auditor", params={"type": "erasure"}).text
    assert ids["erasure"] in erasures and ids["access"] not in erasures
    assert 'data-metric="total">1<' in erasures
    today = datetime.now(UTC).date()
    assert ids["access"] not in client.get("/auditor", params={"from": str(today + timedelta(days=1))}).text
    assert ids["access"] in client.get("/auditor", params={"to": str(today), "outcome": "completed"}).text
    assert ids["access"] not in client.get("/auditor", params={"outcome": "cancelled"}).text
    assert client.get("/auditor", params={"type": "bogus"}).status_code == 400


def test_a_string_that_looks_like_an_address_is_never_rendered(site) -> None:
    """The last line of defence: even if an address reached the ledger (here: as an actor name), the
    page shows "[redacted e-mail]" in its place."""
    client, service, ids = site
    service.record_download(ids["erasure"], "bundle", by="ada.lovelace@example.com", role="auditor", version=1)
    _login(client, AUDITOR)
    page = client.get(f"/auditor/requests/{ids['erasure']}")
    assert page.status_code == 200 and REDACTED_EMAIL in page.text and "lovelace" not in page.text
    assert_no_personal_data(page.text)


# --- the real browser -----------------------------------------------------------------------------


def _browser_or_skip() -> None:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM}")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright Python package")
    if missing:
        message = (f"auditor page browser test skipped: no {' and no '.join(missing)}; "
                   "run scripts/install-browser.sh")
        if os.environ.get("DSR_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def live(crm_only_service: DsrService) -> Iterator[tuple[str, DsrService, dict[str, str]]]:
    """The app on a free port on 127.0.0.1, served by uvicorn in a thread, with two completed requests."""
    _browser_or_skip()
    import uvicorn

    ids = {"access": _done(crm_only_service, "access", ACCESS_SUBJECT),
           "erasure": _done(crm_only_service, "erasure", ERASURE_SUBJECT)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(crm_only_service), lifespan="off", log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}", crm_only_service, ids
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_auditor_in_a_real_browser(live, tmp_path: Path) -> None:
    base, service, ids = live
    subject = service.issue_subject_token(ids["access"], ttl=timedelta(days=1))[0]
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(10_000)
            visited: list[str] = []

            def check() -> None:
                visited.append(page.url)
                assert_no_personal_data(page.content())

            # Not logged in: sent to the log-in form, which has the strict CSP.
            response = page.goto(f"{base}/auditor")
            assert page.url == f"{base}/auditor/login" and response is not None
            assert "default-src 'none'" in response.headers["content-security-policy"]
            check()

            # A subject's link cannot log in.
            page.fill("#token", subject)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert page.url == f"{base}/auditor/login"
            assert "data subject" in page.inner_text(".notice")
            assert not [c for c in context.cookies() if c["name"] == COOKIE]
            check()

            # The auditor can; the cookie is HttpOnly and SameSite=Strict.
            page.fill("#token", AUDITOR)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert page.url == f"{base}/auditor"
            (cookie,) = [c for c in context.cookies() if c["name"] == COOKIE]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            rows = page.locator("#requests tbody tr")
            expect(rows).to_have_count(2)  # auto-waits: the click's navigation may still be loading
            table = page.inner_text("#requests")
            assert ids["access"] in table and ids["erasure"] in table and "on time" in table
            assert page.inner_text("[data-metric=total]") == "2"
            assert page.inner_text("[data-metric=closed]") == "2"
            assert page.inner_text("[data-metric=on-time]") == "100 %"
            assert page.locator("#metrics svg rect").count() >= 4
            page.screenshot(path=str(tmp_path / "auditor-list.png"), full_page=True)
            check()

            # Filter by type.
            page.select_option("select[name=type]", "erasure")
            page.click("form.filters button[type=submit]")
            page.wait_for_load_state()
            assert "type=erasure" in page.url
            expect(rows).to_have_count(1)
            assert ids["erasure"] in page.inner_text("#requests")
            assert page.inner_text("[data-metric=total]") == "1"
            check()

            # Open the request: summary, deadline derivation, systems, timeline.
            page.click(f"a[href='/auditor/requests/{ids['erasure']}']")
            page.wait_for_load_state()
            assert page.url == f"{base}/auditor/requests/{ids['erasure']}"
            assert ids["erasure"] in page.inner_text("h1")
            assert "crm" in page.inner_text("#systems")
            assert "How the due date was derived" in page.content()
            timeline = page.inner_text("#timeline")
            assert "request.received" in timeline and "request.completed" in timeline
            check()

            # Download the bundle: a real zip with its manifest, recorded in the ledger as the auditor's.
            with page.expect_download() as download_info:
                page.click("text=Download bundle v1")
            download = download_info.value
            assert download.suggested_filename == f"evidence-{ids['erasure']}-v1.zip"
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as bundle:
                assert "manifest.json" in bundle.namelist()
            last = service.events(ids["erasure"])[-1]
            assert (last.type, last.payload) == ("bundle.downloaded", {"by": "kpmg", "role": "auditor", "version": 1})

            # The download shows on the timeline; verify the bundle.
            page.reload()
            assert "bundle.downloaded" in page.inner_text("#timeline")
            check()
            page.click("text=Verify v1")
            page.wait_for_load_state()
            assert page.url == f"{base}/auditor/requests/{ids['erasure']}/verify"
            verdict = page.locator("#verdict")
            assert verdict.get_attribute("data-ok") == "true"
            assert "ok" in verdict.inner_text() and "intact" in verdict.inner_text()
            assert "FAILED" not in page.inner_text("#checks") and "signature" in page.inner_text("#checks")
            page.screenshot(path=str(tmp_path / "auditor-verify.png"), full_page=True)
            check()

            # The other request's page, too, must hold no personal data.
            page.goto(f"{base}/auditor/requests/{ids['access']}")
            page.screenshot(path=str(tmp_path / "auditor-request.png"), full_page=True)
            check()

            # Log out: the cookie is gone and the list is behind the log-in again.
            page.click("text=Log out")
            page.wait_for_load_state()
            assert page.url == f"{base}/auditor/login"
            assert not [c for c in context.cookies() if c["name"] == COOKIE]
            page.goto(f"{base}/auditor")
            assert page.url == f"{base}/auditor/login"
            check()
            context.close()

            # A fresh browser without a login is redirected too.
            fresh = browser.new_context()
            other = fresh.new_page()
            other.goto(f"{base}/auditor/requests/{ids['access']}")
            assert other.url == f"{base}/auditor/login"
            fresh.close()
        finally:
            browser.close()
    assert len(visited) >= 9
