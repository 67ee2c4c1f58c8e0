"""The public doors and the officer API for the other rights: the privacy center offers them in plain
words, records a California request sent with Global Privacy Control (`Sec-GPC: 1`) as an opt-out
too (no code needed, runnable at once), and the API takes a rectification's corrected fields,
naming a bad one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from dsr.adapters.mail import SmtpConfig
from dsr.models import Status
from dsr.run import RequestRunner
from dsr.service import DsrService
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from tests.test_console import OFFICER, make_app
from tests.test_intake import Inbox, inbox  # noqa: F401 - the SMTP server fixture

ORIGIN = {"Origin": "http://localhost"}


@pytest.fixture
def client(crm_only_service: DsrService, inbox) -> Iterator[tuple[TestClient, DsrService, Inbox]]:  # noqa: F811
    mail, port = inbox
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
                      recipients=("unused@precision.test",))
    with TestClient(make_app(crm_only_service, lambda: smtp), base_url="http://localhost") as test_client:
        yield test_client, crm_only_service, mail


def _requests(service: DsrService) -> dict[str, str]:
    return {row.type: row.request_id for row in service.list()}


def test_the_center_offers_every_right_that_stops_a_use(client) -> None:
    test_client, _, _ = client
    page = test_client.get("/privacy").text
    for words in ("Keep my data but stop using it", "Stop direct marketing to me", "Withdraw my consent to marketing",
                  "Do not sell or share my personal information"):
        assert words in page


def test_a_californian_request_with_gpc_also_records_an_opt_out_that_runs_unverified(client) -> None:
    test_client, service, mail = client
    answer = test_client.post("/privacy/requests", data={"type": "access", "email": ERASURE_SUBJECT, "country": "US"},
                              headers={**ORIGIN, "Sec-GPC": "1"}, follow_redirects=False)
    assert answer.status_code == 303
    recorded = _requests(service)
    assert set(recorded) == {"access", "opt_out"}
    opt_out = service.state(recorded["opt_out"])
    assert opt_out.regime == "ccpa" and not opt_out.verified
    assert opt_out.deadline is not None and opt_out.deadline["rule"].startswith("ccpa/11ccr7026")
    assert not service.state(recorded["access"]).verified
    runner = RequestRunner(service)
    plan = runner.begin(recorded["opt_out"])  # no verification asked
    assert plan.systems == ("crm",)
    from connectors.registry import build_connector

    config = service.data_map.systems["crm"]
    runner.run_system(recorded["opt_out"], "crm", lambda: build_connector("crm", config.kind, config.settings))
    assert runner.finish(recorded["opt_out"]).status == Status.COMPLETED


@pytest.mark.parametrize("signal, country", [("0", "US"), ("1", "NL")])
def test_no_opt_out_without_the_exact_signal_or_outside_california(client, signal: str, country: str) -> None:
    test_client, service, _ = client
    test_client.post("/privacy/requests", data={"type": "access", "email": ACCESS_SUBJECT, "country": country},
                     headers={**ORIGIN, "Sec-GPC": signal}, follow_redirects=False)
    assert set(_requests(service)) == {"access"}


def test_an_opt_out_from_the_form_needs_no_code(client) -> None:
    test_client, service, mail = client
    answer = test_client.post("/privacy/requests", data={"type": "opt_out", "email": ACCESS_SUBJECT, "country": "US"},
                              headers=ORIGIN, follow_redirects=False)
    request_id = _requests(service)["opt_out"]
    assert answer.status_code == 303 and answer.headers["location"] == f"/privacy/requests/{request_id}"
    assert mail.messages == []


def test_the_api_takes_a_rectification_and_names_a_bad_field(client) -> None:
    test_client, service, _ = client
    headers = {"Authorization": f"Bearer {OFFICER}"}
    body = {"type": "rectification", "email": ERASURE_SUBJECT, "regime": "gdpr",
            "changes": {"last_name": "King", "email": "ada.king@example.net"}}
    created = test_client.post("/requests", json=body, headers=headers)
    assert created.status_code == 201, created.text
    first = service.events(created.json()["request_id"])[0].payload
    assert first["changes"]["fields"] == ["email", "last_name"] and "King" not in str(first)
    bad = test_client.post("/requests", json={**body, "changes": {"shoe_size": "42"}}, headers=headers)
    assert bad.status_code == 422 and "shoe_size" in bad.text and "42" not in bad.text
