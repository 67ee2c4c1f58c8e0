"""The privacy center (/privacy): a subject asks, verifies with the e-mailed code, follows the request and
downloads the package once; over HTTP and in a real browser (Chromium, Playwright, axe), with codes and
links read from a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dsr.adapters.mail import SmtpConfig
from dsr.service import DsrService
from sandbox.crm_seed import ACCESS_SUBJECT
from tests.test_console import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OFFICER,
    LiveServer,
    assert_accessible,
    browser_or_skip,
    make_app,
)
from tests.test_intake import CODE_RE, Inbox, inbox  # noqa: F401 - the SMTP server fixture

ORIGIN = {"Origin": "http://localhost"}
LINK_RE = re.compile(r"(http://\S+/privacy/download/[A-Za-z0-9_-]+)")


def _body_text(message: Message) -> str:
    part = message.get_payload(decode=True) if not message.is_multipart() else message.get_payload(0).get_payload(
        decode=True)
    return part.decode("utf-8", "replace")


def _wait_mail(mail: Inbox, count: int, seconds: float = 10) -> Message:
    with mail.arrived:
        assert mail.arrived.wait_for(lambda: len(mail.messages) >= count, timeout=seconds), "no e-mail arrived"
        return mail.messages[count - 1]


@pytest.fixture
def center(crm_only_service: DsrService, inbox) -> Iterator[tuple[TestClient, DsrService, Inbox]]:  # noqa: F811
    mail, port = inbox
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
                      recipients=("unused@precision.test",))
    with TestClient(make_app(crm_only_service, lambda: smtp), base_url="http://localhost") as client:
        yield client, crm_only_service, mail


def _submit_by_officer(service: DsrService) -> str:
    from datetime import UTC, datetime

    from dsr.models import parse_new_request

    new = parse_new_request(type="access", email=ACCESS_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    return service.submit(new).state.request_id


def _ask(client: TestClient, **fields: str) -> Any:
    data = {"type": "access", "email": ACCESS_SUBJECT, "country": "NL"} | fields
    return client.post("/privacy/requests", data=data, headers=ORIGIN, follow_redirects=False)


def test_the_form_offers_every_intake_type_in_plain_words_and_the_policy_texts(center) -> None:
    client, service, _ = center
    page = client.get("/privacy")
    assert page.status_code == 200
    for words in ("Get a copy of my data", "Take my data elsewhere", "Delete my data"):
        assert words in page.text
    summary = service.policy.subject_summary
    for text in (summary.rights[0], summary.recipients[0], summary.retention[0], summary.purposes[0]):
        assert text.replace('"', "&#34;") in page.text or text in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "set-cookie" not in page.headers and "<script>" not in page.text


def test_bad_input_names_the_field_and_keeps_what_was_typed(center) -> None:
    client, service, mail = center
    missing = client.post("/privacy/requests", data={"email": "x@precision.test"}, headers=ORIGIN)
    assert missing.status_code == 422 and "type: choose" in missing.text and "country: choose" in missing.text
    assert 'value="x@precision.test"' in missing.text
    bad = _ask(client, email="not an address")
    assert bad.status_code == 422 and "email:" in bad.text and "Traceback" not in bad.text
    assert not mail.messages and service.list() == []
    assert client.post("/privacy/requests", data={"type": "access"}, headers={"Origin": "https://evil.test"}
                       ).status_code == 403


def test_country_decides_the_regime_and_a_wrong_code_is_refused_naming_the_code(center) -> None:
    client, service, mail = center
    answer = _ask(client, country="US", type="erasure")
    assert answer.status_code == 303
    request_id = answer.headers["location"].split("/")[3]
    assert service.state(request_id).regime == "ccpa"
    code = CODE_RE.search(_body_text(_wait_mail(mail, 1))).group(1)
    wrong = "000000" if code != "000000" else "111111"
    refused = client.post(f"/privacy/requests/{request_id}/verify", data={"code": wrong}, headers=ORIGIN)
    assert refused.status_code == 400 and "code: this code cannot be accepted" in refused.text
    assert not service.state(request_id).verified
    ok = client.post(f"/privacy/requests/{request_id}/verify", data={"code": code}, headers=ORIGIN,
                     follow_redirects=False)
    assert ok.status_code == 303 and service.state(request_id).verified
    status = client.get(ok.headers["location"]).text
    assert "In progress" in status and ACCESS_SUBJECT not in status.lower()


def test_gpc_signal_is_honoured_as_a_ccpa_opt_out_and_declared(center) -> None:
    client, _, _ = center
    assert "Global Privacy Control" not in client.get("/privacy").text
    with_signal = client.get("/privacy", headers={"Sec-GPC": "1"})
    assert "Global Privacy Control" in with_signal.text and "opt out of the sale and sharing" in with_signal.text
    assert with_signal.headers["vary"] == "Sec-GPC"
    assert "Global Privacy Control" not in client.get("/privacy", headers={"Sec-GPC": "yes"}).text  # exactly "1"
    assert client.get("/.well-known/gpc.json").json()["gpc"] is True


def test_submissions_are_rate_limited_per_client_like_the_intake_api(center) -> None:
    client, _, _ = center
    answers = [client.post("/privacy/requests", data={"type": "access"}, headers=ORIGIN).status_code
               for _ in range(11)]
    assert answers[:10] == [422] * 10 and answers[10] == 429


def test_unknown_references_and_dead_links_say_so_plainly(center) -> None:
    client, service, _ = center
    assert client.get("/privacy/requests/7a1c7e46-3f63-4f7c-9a1e-2b0e6c1d5f3a").status_code == 404
    officer_made = _submit_by_officer(service)  # a real request, but not one of the privacy center's
    for trick in (officer_made, "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a" * 65, "x%00y"):
        for method, path in (("GET", f"/privacy/requests/{trick}"), ("GET", f"/privacy/requests/{trick}/verify"),
                             ("POST", f"/privacy/requests/{trick}/verify"), ("POST", f"/privacy/requests/{trick}/link")):
            answer = client.request(method, path, headers=ORIGIN, data={"code": "123456"} if method == "POST" else None)
            assert answer.status_code == 404, (trick, path, answer.status_code)
    assert [e.type for e in service.events(officer_made)] == ["request.received"]  # nothing recorded
    assert client.get("/privacy/status", params={"reference": "nope"}).status_code == 404
    gone = client.get("/privacy/download/not-a-token")
    assert gone.status_code == 410 and "no longer works" in gone.text


# --- in a real browser ------------------------------------------------------------------------------


def test_subject_asks_verifies_officer_runs_subject_downloads_once(crm_only_service: DsrService, inbox,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    service = crm_only_service
    mail, port = inbox
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
                      recipients=("unused@precision.test",))
    with LiveServer(make_app(service, lambda: smtp)) as live, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            subject = browser.new_context(viewport={"width": 1000, "height": 900}, accept_downloads=True).new_page()
            subject.set_default_timeout(15_000)
            subject.goto(f"{live.url}/privacy")
            assert_accessible(subject, "privacy-form")

            # The subject asks for a copy, from the Netherlands.
            subject.check("#type-access")
            subject.fill("#email", ACCESS_SUBJECT)
            subject.select_option("#country", "NL")
            subject.click("#request-form button[type=submit]")
            expect(subject.locator("h1")).to_have_text("Confirm your e-mail address")
            request_id = subject.inner_text("#reference")
            assert service.state(request_id).regime == "gdpr"
            assert_accessible(subject, "privacy-verify")

            # The code arrives by e-mail; a wrong one first, then the right one.
            code = CODE_RE.search(_body_text(_wait_mail(mail, 1))).group(1)
            subject.fill("#code", "000000" if code != "000000" else "111111")
            subject.click("button[type=submit]")
            expect(subject.locator("#error-code")).to_contain_text("code:")
            subject.fill("#code", code)
            subject.click("button[type=submit]")
            expect(subject.locator("#status-text")).to_contain_text("In progress")
            assert_accessible(subject, "privacy-status")

            # The officer sees it in the inbox and runs it; the progress moves on the request page.
            officer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            officer.set_default_timeout(15_000)
            officer.goto(f"{live.url}/console/login")
            officer.fill("#token", OFFICER)
            officer.click("button[type=submit]")
            expect(officer.locator(f"tr[data-request='{request_id}']")).to_be_visible()
            officer.click(f"a[href='/console/requests/{request_id}']")
            officer.click("#run-button")
            expect(officer.locator("#status-text")).to_have_text("completed", timeout=30_000)
            expect(officer.locator("tr[data-system=crm] .sys-status")).to_have_text("completed")
            assert officer.get_attribute("#run-progress", "value") == "1"

            # The subject's page follows by itself; the download link goes to the address on file.
            expect(subject.locator("#status-text")).to_contain_text("Done", timeout=15_000)
            subject.reload()
            subject.click("#send-link")
            expect(subject.locator("#link-sent")).to_be_visible()
            link = LINK_RE.search(_body_text(_wait_mail(mail, 2))).group(1)
            assert link.startswith(live.url)
            subject.goto(link)
            assert_accessible(subject, "privacy-download")
            with subject.expect_download() as download_info:
                subject.click("#download")
            saved = tmp_path / "package.zip"
            download_info.value.save_as(saved)
            with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as package:
                assert any(name.endswith(".json") for name in package.namelist())
            last = [e for e in service.events(request_id) if e.type == "package.downloaded"]
            assert [(e.payload["by"], e.payload["role"]) for e in last] == [("subject", "subject")]

            # The link worked once.
            subject.goto(link)
            expect(subject.locator("h1")).to_have_text("This link no longer works")
        finally:
            browser.close()
