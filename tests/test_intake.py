"""The public OpenDSR intake end to end: the HTTP door in-process (TestClient), codes e-mailed to a
real SMTP server on loopback (aiosmtpd), status callbacks posted to a real HTTP receiver (sandbox kit),
on SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from doors.api.app import create_app
from doors.api.intake import RateLimiter
from doors.api.intake import router as intake_router
from dsr.access import AccessConfig
from dsr.adapters.mail import SmtpConfig
from dsr.adapters.storage import config_from_settings, open_store
from dsr.adapters.webhooks import (
    HMAC_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    callback_key,
    check_callback_url,
    on_status_change,
    signature_ok,
    url_sha256,
)
from dsr.bundle import build_bundle
from dsr.intake import CodeRefused, Intake
from dsr.ledger.store import Ledger
from dsr.models import parse_new_request
from dsr.opendsr_signing import processor_identity
from dsr.service import DsrService
from dsr.settings import Settings
from dsr.signing import load_or_create_signing_key
from dsr.state import index_row
from sandbox.kit import Request, Response, SandboxServer, Vendor

REPO = Path(__file__).resolve().parent.parent
SUBJECT = "Ada.Lovelace@Example.com"
SUBJECT_NORMAL = SUBJECT.lower()
TOKEN = "cbtoken9f3e7d1c"  # a secret carried by the callback URL: must never be logged or recorded
CODE_RE = re.compile(r"Your verification code: (\d{6})")


# -- servers on loopback ---------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        with self.arrived:
            self.messages.append(message_from_string(envelope.content.decode("utf-8", "replace")))
            self.arrived.notify_all()
        return "250 Message accepted for delivery"


class CallbackReceiver(Vendor):
    """The web form backend's callback endpoint: records every call; can be told to fail."""

    name = "callbacks"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Request] = []
        self.fail_next = 0
        self.router.add("POST", "/opendsr/callback", self._hook)

    def _hook(self, request: Request) -> Response:
        self.calls.append(request)
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response.json({"error": "down"}, 500)
        return Response.text("ok")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[CallbackReceiver, str]]:
    vendor = CallbackReceiver()
    with SandboxServer(vendor) as server:
        yield vendor, server.url


@pytest.fixture
def service(tmp_path: Path, ledger_url: str) -> Iterator[DsrService]:
    settings = Settings(home=tmp_path / "var", config_dir=REPO / "config", identity_key="test-identity-key")
    svc = DsrService(settings, Ledger(ledger_url, projector=index_row))
    yield svc
    svc.close()


@dataclass
class Door:
    client: TestClient
    service: DsrService
    intake: Intake
    mail: Inbox
    smtp: dict[str, SmtpConfig | None]
    receiver: CallbackReceiver
    callback_url: str


@pytest.fixture
def door(service: DsrService, inbox, receiver) -> Iterator[Door]:
    (mail, port), (hooks, base) = inbox, receiver
    smtp: dict[str, SmtpConfig | None] = {"config": SmtpConfig(
        host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
        recipients=("escalations@precision.test",))}
    app = create_app(service, AccessConfig(), open_store(config_from_settings(service.settings)),
                     intake_smtp=lambda: smtp["config"], callback_url_prefixes=(f"{base}/opendsr/",))
    with TestClient(app) as client:
        yield Door(client, service, app.state.intake, mail, smtp, hooks, f"{base}/opendsr/callback?token={TOKEN}")


def _body(**changes: Any) -> dict[str, Any]:
    body = {
        "subject_request_id": str(uuid.uuid4()),
        "subject_request_type": "access",
        "submitted_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "subject_identities": [{"identity_type": "email", "identity_value": SUBJECT, "identity_format": "raw"}],
        "regulation": "gdpr",
        "api_version": "1.0",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _code(door: Door, index: int = -1) -> str:
    message = door.mail.messages[index]
    assert message["To"] == SUBJECT_NORMAL  # the subject alone, never the escalation recipients
    found = CODE_RE.search(message.get_payload())
    assert found, message.get_payload()
    return found.group(1)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _types(service: DsrService, request_id: str) -> list[str]:
    return [e.type for e in service.events(request_id)]


def _ledger_text(service: DsrService, *request_ids: str) -> str:
    return json.dumps([e.to_dict() for rid in request_ids for e in service.events(rid)])


# -- submit, e-mailed code, verify -----------------------------------------------------------------


def test_submit_emails_a_code_and_the_right_code_verifies(door: Door) -> None:
    body = _body(subject_request_type="erasure", regulation="ccpa")
    rid = body["subject_request_id"]
    answer = door.client.post("/opendsr/requests", json=body)
    assert answer.status_code == 201, answer.text
    view = answer.json()
    assert view["subject_request_id"] == rid and view["request_status"] == "pending"
    assert view["request_status_reason"] == "need_user_verification"
    assert view["verification"]["code_sent"] is True and view["verification"]["subject_request_id"] == rid
    assert SUBJECT_NORMAL not in answer.text.lower()

    state = door.service.state(rid)
    assert (state.type, state.regime, state.channel) == ("erasure", "ccpa", "web-form")
    assert state.deadline and state.deadline["clock_start"]  # CCPA: the clock runs before verification
    assert not state.verified
    [sent] = [e for e in door.service.events(rid) if e.type == "verification.code_sent"]
    assert set(sent.payload) == {"expires_at", "code_number", "channel"}
    expires = datetime.fromisoformat(sent.payload["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)

    assert len(door.mail.messages) == 1
    code = _code(door)
    answer = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": code})
    assert answer.status_code == 200, answer.text
    assert answer.json()["verified"] is True and answer.json()["request_status"] == "in_progress"
    state = door.service.state(rid)
    assert state.verification is not None
    assert (state.verification["method"], state.verification["by"]) == ("email-code", "subject")
    assert state.verification["note"] == "6-digit code e-mailed to the address on file was returned"
    # A double submit of the right code gets the same answer, and nothing new is recorded.
    again = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": code})
    assert again.status_code == 200 and _types(door.service, rid).count("request.verified") == 1
    ledger = _ledger_text(door.service, rid)
    assert code not in ledger and SUBJECT_NORMAL not in ledger.lower()
    door.service.ledger.verify(rid)


def test_three_wrong_codes_lock_it_and_every_refusal_reads_the_same(door: Door) -> None:
    body = _body()
    rid = body["subject_request_id"]
    assert door.client.post("/opendsr/requests", json=body).status_code == 201
    code = _code(door)
    refusals = []
    for _ in range(3):
        answer = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _wrong(code)})
        assert answer.status_code == 400
        refusals.append(answer.json())
    locked = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": code})  # right, but too late
    assert locked.status_code == 400
    unknown = door.client.post(f"/opendsr/requests/{uuid.uuid4()}/verify", json={"code": code})
    assert unknown.status_code == 400
    assert all(r == locked.json() == unknown.json() for r in refusals)
    assert locked.json()["detail"][0]["loc"] == ["body", "code"]
    failed = [e.payload for e in door.service.events(rid) if e.type == "verification.code_failed"]
    assert failed == [{"attempt": 1, "attempts_left": 2, "failures": 1, "failures_left": 4},
                      {"attempt": 2, "attempts_left": 1, "failures": 2, "failures_left": 3},
                      {"attempt": 3, "attempts_left": 0, "failures": 3, "failures_left": 2}]
    assert not door.service.state(rid).verified

    # Submitting the same request again sends a new code (the old one is used up); it works.
    again = door.client.post("/opendsr/requests", json=body)
    assert again.status_code == 200 and again.json()["verification"]["code_sent"] is True
    assert len(door.mail.messages) == 2
    new_code = _code(door)
    assert door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": new_code}).status_code == 200
    assert door.service.state(rid).verified
    assert code not in _ledger_text(door.service, rid) and new_code not in _ledger_text(door.service, rid)


def test_a_code_lives_ten_minutes(door: Door) -> None:
    body = _body()
    rid = body["subject_request_id"]
    door.client.post("/opendsr/requests", json=body)
    code = _code(door)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=10, seconds=5), tick=True):
        expired = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": code})
    assert expired.status_code == 400 and expired.json()["detail"][0]["msg"].startswith("this code cannot be accepted")
    assert not door.service.state(rid).verified
    assert "verification.code_failed" not in _types(door.service, rid)  # expired: no attempt was counted

    body2 = _body(subject_request_type="portability")
    door.client.post("/opendsr/requests", json=body2)
    code2 = _code(door)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=9, seconds=30), tick=True):
        answer = door.client.post(f"/opendsr/requests/{body2['subject_request_id']}/verify", json={"code": code2})
    assert answer.status_code == 200 and door.service.state(body2["subject_request_id"]).verified


def test_attempts_are_counted_atomically_when_guesses_race(door: Door) -> None:
    body = _body()
    rid = body["subject_request_id"]
    door.client.post("/opendsr/requests", json=body)
    code = _code(door)
    outcomes: list[str] = []

    def guess(n: int) -> None:
        try:
            door.intake.verify_code(rid, f"{(int(code) + n) % 1_000_000:06d}")
            outcomes.append("verified")
        except CodeRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(1, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["refused"] * 12
    assert sorted(e.payload["attempt"] for e in door.service.events(rid) if e.type == "verification.code_failed") == [1, 2, 3]
    with pytest.raises(CodeRefused):
        door.intake.verify_code(rid, code)


def test_malformed_codes_are_422_naming_the_field(door: Door) -> None:
    body = _body()
    door.client.post("/opendsr/requests", json=body)
    rid = body["subject_request_id"]
    for payload in ({"code": "12345"}, {"code": 123456}, {"code": "12a456"}, {}, {"code": "123456", "x": 1}):
        answer = door.client.post(f"/opendsr/requests/{rid}/verify", json=payload)
        assert answer.status_code == 422, payload
        assert answer.json()["detail"][0]["loc"][0] == "body"
    assert door.client.post("/opendsr/requests/not-a-uuid/verify", json={"code": "123456"}).status_code == 404
    assert "verification.code_failed" not in _types(door.service, rid)


def test_no_smtp_means_503_and_nothing_recorded(door: Door) -> None:
    door.smtp["config"] = None
    body = _body()
    answer = door.client.post("/opendsr/requests", json=body)
    assert answer.status_code == 503 and answer.json()["detail"] == "e-mail verification is not configured"
    assert not door.service.ledger.exists(body["subject_request_id"]) and door.mail.messages == []


def test_smtp_down_records_the_request_and_a_resubmission_sends_the_code(door: Door) -> None:
    working = door.smtp["config"]
    assert working is not None
    door.smtp["config"] = working.model_copy(update={"port": _free_port(), "timeout_seconds": 2.0})
    body = _body()
    rid = body["subject_request_id"]
    answer = door.client.post("/opendsr/requests", json=body)
    assert answer.status_code == 201 and answer.json()["verification"]["code_sent"] is False
    assert door.service.ledger.exists(rid) and "verification.code_sent" not in _types(door.service, rid)
    door.smtp["config"] = working
    again = door.client.post("/opendsr/requests", json=body)
    assert again.status_code == 200 and again.json()["verification"]["code_sent"] is True
    assert door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _code(door)}).status_code == 200


# -- idempotency and bad bodies --------------------------------------------------------------------


def test_the_same_request_again_is_idempotent_and_other_content_is_409(door: Door) -> None:
    body = _body(status_callback_urls=[door.callback_url])
    rid = body["subject_request_id"]
    first = door.client.post("/opendsr/requests", json=body)
    assert first.status_code == 201
    again = door.client.post("/opendsr/requests", json=dict(body, subject_request_id=rid.upper()))
    assert again.status_code == 200
    assert again.json()["verification"]["code_sent"] is False  # the first code is still usable
    assert again.json()["verification"]["code_expires_at"] == first.json()["verification"]["code_expires_at"]
    assert len(door.mail.messages) == 1 and _types(door.service, rid).count("request.received") == 1
    assert [r.request_id for r in door.service.list()] == [rid]

    for change in ({"subject_request_type": "erasure"}, {"regulation": "ccpa"},
                   {"subject_identities": [{"identity_type": "email", "identity_value": "grace@example.com",
                                            "identity_format": "raw"}]},
                   {"status_callback_urls": []}):
        conflict = door.client.post("/opendsr/requests", json=dict(body, **change))
        assert conflict.status_code == 409, change
        assert "grace" not in conflict.text
    assert len(door.service.list()) == 1

    # An id another door already used is not taken over.
    other = str(uuid.uuid4())
    door.service.submit(parse_new_request(type="access", email=SUBJECT, regime="gdpr", received=datetime.now(UTC)),
                        request_id=other)
    assert door.client.post("/opendsr/requests", json=_body(subject_request_id=other)).status_code == 409


def _future() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


BAD_BODIES = [
    ("missing id", {"subject_request_id": None}, ["subject_request_id"], "Field required"),
    ("non-UUID id", {"subject_request_id": "request-1"}, ["subject_request_id"], "UUID"),
    ("UUID v1 id", {"subject_request_id": str(uuid.uuid1())}, ["subject_request_id"], "version 4"),
    ("unknown type", {"subject_request_type": "rectification"}, ["subject_request_type"], "access, portability, erasure"),
    ("sha256 identity", {"subject_identities": [{"identity_type": "email", "identity_format": "sha256",
                                                 "identity_value": "9f" * 32}]},
     ["subject_identities", 0, "identity_format"], "an e-mail is needed to reach the subject"),
    ("bad email", {"subject_identities": [{"identity_type": "email", "identity_value": "ada@@lovelace",
                                           "identity_format": "raw"}]},
     ["subject_identities", 0, "identity_value"], "not a valid e-mail address"),
    ("email missing value", {"subject_identities": [{"identity_type": "email"}]},
     ["subject_identities", 0, "identity_value"], "Field required"),
    ("not an email identity", {"subject_identities": [{"identity_type": "phone_number", "identity_value": "+3120",
                                                       "identity_format": "raw"}]},
     ["subject_identities", 0, "identity_type"], "must be email"),
    ("no identities", {"subject_identities": []}, ["subject_identities"], "at least 1"),
    ("future submitted_time", {"submitted_time": _future()}, ["submitted_time"], "future"),
    ("naive submitted_time", {"submitted_time": "2026-03-02T10:00:00"}, ["submitted_time"], "RFC 3339"),
    ("not a time", {"submitted_time": "yesterday"}, ["submitted_time"], "RFC 3339"),
    ("unknown regulation", {"regulation": "hipaa"}, ["regulation"], "gdpr"),
    ("no regulation", {"regulation": None}, ["regulation"], "required"),
    ("bad country", {"country": "N1"}, ["country"], "two-letter"),
    ("callback elsewhere", {"status_callback_urls": ["http://169.254.169.254/latest/meta-data"]},
     ["status_callback_urls", 0], "not an allowed callback address"),
    ("unknown field", {"subjct_request_type": "access"}, ["subjct_request_type"], "Extra inputs"),
]


@pytest.mark.parametrize("case, change, loc, message", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies_are_422_naming_the_field(door: Door, case: str, change: dict, loc: list, message: str) -> None:
    body = _body()
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    answer = door.client.post("/opendsr/requests", json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", *loc]], detail
    assert message in detail[0]["msg"]
    assert "lovelace" not in answer.text.lower()  # the input is never echoed
    assert door.service.list() == [] and door.mail.messages == []


def test_every_problem_of_a_body_is_named_at_once(door: Door) -> None:
    answer = door.client.post("/opendsr/requests", json=_body(subject_request_id="x", subject_request_type="sale",
                                                              regulation="hipaa"))
    assert answer.status_code == 422
    assert [d["loc"] for d in answer.json()["detail"]] == [
        ["body", "subject_request_id"], ["body", "subject_request_type"], ["body", "regulation"]]
    assert door.client.post("/opendsr/requests", content=b"{not json",
                            headers={"Content-Type": "application/json"}).status_code == 422
    assert door.client.post("/opendsr/requests", json=["a", "list"]).status_code == 422


def test_regulations_map_to_regimes(door: Door) -> None:
    for regulation, regime in (("GDPR", "gdpr"), ("uk_gdpr", "uk-gdpr"), ("cpra", "ccpa"), ("lgpd", "lgpd"),
                               ("pipeda", "pipeda")):
        body = _body(regulation=regulation, subject_identities=[
            {"identity_type": "email", "identity_value": f"{regime}@example.com", "identity_format": "raw"}])
        assert door.client.post("/opendsr/requests", json=body).status_code == 201, regulation
        assert door.service.state(body["subject_request_id"]).regime == regime


# -- duplicates ------------------------------------------------------------------------------------


def test_a_duplicate_within_the_window_is_linked_and_cancelled(door: Door) -> None:
    first = _body()
    assert door.client.post("/opendsr/requests", json=first).status_code == 201
    first_id = first["subject_request_id"]
    code = _code(door)

    dup = _body(subject_identities=[{"identity_type": "email", "identity_value": f"  {SUBJECT.upper()} ",
                                     "identity_format": "raw"}], status_callback_urls=[door.callback_url])
    answer = door.client.post("/opendsr/requests", json=dup)
    assert answer.status_code == 201, answer.text
    view = answer.json()
    assert view["duplicate_of"] == first_id and view["request_status"] == "cancelled"
    assert view["request_status_reason"] == "duplicate"
    assert view["verification"]["subject_request_id"] == first_id and view["verification"]["code_sent"] is False
    dup_id = dup["subject_request_id"]
    state = door.service.state(dup_id)
    assert state.status.value == "cancelled" and state.cancel_reason and first_id in state.cancel_reason
    [linked] = [e for e in door.service.events(dup_id) if e.type == "request.linked"]
    assert linked.payload["to"] == first_id and linked.payload["reason"] == "duplicate"
    assert [e.payload for e in door.service.events(first_id) if e.type == "request.linked"] == [
        {"from": dup_id, "reason": "duplicate"}]
    assert door.service.state(first_id).status.value == "awaiting_verification"
    # The cancelled duplicate told its callback so; the first request's code still works.
    [call] = door.receiver.calls
    assert json.loads(call.body)["request_status"] == "cancelled"
    assert door.client.post(f"/opendsr/requests/{first_id}/verify", json={"code": code}).status_code == 200

    # Submitting the duplicate again changes nothing.
    again = door.client.post("/opendsr/requests", json=dup)
    assert again.status_code == 200 and again.json()["duplicate_of"] == first_id
    assert _types(door.service, dup_id).count("request.linked") == 1
    assert _types(door.service, first_id).count("request.linked") == 1
    assert len(door.receiver.calls) == 1
    for request_id in (first_id, dup_id):  # the intake's events seal into evidence like any other
        sealed = _bundle_members(door.service, request_id)
        assert b"request.linked" in sealed and SUBJECT_NORMAL.encode() not in sealed.lower()

    # Another type is not a duplicate; nor is the same type once the window has passed.
    other = _body(subject_request_type="erasure")
    assert "duplicate_of" not in door.client.post("/opendsr/requests", json=other).json()
    with time_machine.travel(datetime.now(UTC) + timedelta(days=8), tick=True):
        later = _body()
        assert "duplicate_of" not in door.client.post("/opendsr/requests", json=later).json()


def test_a_duplicate_of_an_unverified_first_resends_its_code_when_the_old_one_is_dead(door: Door) -> None:
    first = _body()
    door.client.post("/opendsr/requests", json=first)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=30), tick=True):
        answer = door.client.post("/opendsr/requests", json=_body())
        assert answer.json()["duplicate_of"] == first["subject_request_id"]
        assert answer.json()["verification"]["code_sent"] is True
        assert len(door.mail.messages) == 2 and first["subject_request_id"] in door.mail.messages[-1].get_payload()
        ok = door.client.post(f"/opendsr/requests/{first['subject_request_id']}/verify", json={"code": _code(door)})
        assert ok.status_code == 200


def test_a_closed_first_request_or_another_doors_open_one(door: Door) -> None:
    first = _body()
    door.client.post("/opendsr/requests", json=first)
    door.service.cancel(first["subject_request_id"], reason="withdrawn by the subject")
    second = _body()
    assert "duplicate_of" not in door.client.post("/opendsr/requests", json=second).json()  # the first is closed

    officer = door.service.submit(parse_new_request(type="erasure", email=SUBJECT, regime="gdpr",
                                                    received=datetime.now(UTC), channel="email")).state.request_id
    web = _body(subject_request_type="erasure")
    answer = door.client.post("/opendsr/requests", json=web).json()
    assert answer["duplicate_of"] == officer
    assert answer["verification"]["code_sent"] is False  # the officer verifies that one
    assert door.service.state(web["subject_request_id"]).status.value == "cancelled"


def test_racing_submissions_of_the_same_subject_and_type_run_once(door: Door) -> None:
    bodies = [_body() for _ in range(6)]
    answers: list[int] = []

    def post(body: dict) -> None:
        answers.append(door.client.post("/opendsr/requests", json=body).status_code)

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [201] * 6
    states = [door.service.state(b["subject_request_id"]) for b in bodies]
    assert sum(1 for s in states if not s.closed) == 1


# -- public status ---------------------------------------------------------------------------------


def test_public_status_has_no_personal_data_and_only_web_form_requests(door: Door) -> None:
    body = _body()
    door.client.post("/opendsr/requests", json=body)
    answer = door.client.get(f"/opendsr/requests/{body['subject_request_id']}")
    assert answer.status_code == 200
    view = answer.json()
    assert view["request_status"] == "pending" and view["subject_request_type"] == "access"
    assert "lovelace" not in answer.text.lower() and "hmac" not in answer.text
    assert door.client.get(f"/opendsr/requests/{uuid.uuid4()}").status_code == 404
    assert door.client.get("/opendsr/requests/not-an-id").status_code == 404
    officer = door.service.submit(parse_new_request(type="access", email="x@example.com", regime="gdpr",
                                                    received=datetime.now(UTC))).state.request_id
    assert door.client.get(f"/opendsr/requests/{officer}").status_code == 404


def test_submissions_are_rate_limited_per_client(service: DsrService, inbox) -> None:
    _, port = inbox
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="p@precision.test", recipients=("p@x.test",))
    app = FastAPI()  # the intake router alone, with a tight submission limit
    app.include_router(intake_router(service, lambda: smtp, submit_limit=(2, 60.0)))
    with TestClient(app) as client:
        codes = [client.post("/opendsr/requests", json=_body(subject_request_type=t)).status_code
                 for t in ("access", "erasure", "portability")]
    assert codes == [201, 201, 429]


def test_rate_limiter_window_and_memory_bound() -> None:
    limiter = RateLimiter(2, 0.2, max_clients=3)
    assert limiter.retry_after("a") is None and limiter.retry_after("a") is None
    assert (limiter.retry_after("a") or 0) > 0
    for client in ("b", "c", "d", "e"):
        limiter.retry_after(client)
    assert len(limiter._calls) <= 3


# -- status callbacks ------------------------------------------------------------------------------


def test_status_callbacks_are_signed_retried_and_never_sent_twice(door: Door) -> None:
    body = _body(status_callback_urls=[door.callback_url])
    rid = body["subject_request_id"]
    door.client.post("/opendsr/requests", json=body)
    assert door.receiver.calls == []  # the submission's own answer says "pending"; no callback for it
    door.receiver.fail_next = 1  # the receiver answers 500 once: the callback is retried
    answer = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _code(door)})
    assert answer.status_code == 200
    assert len(door.receiver.calls) == 2
    key = callback_key(door.service.settings)
    processor = processor_identity(door.service.settings)
    for call in door.receiver.calls:
        assert call.query["token"] == [TOKEN]
        # Signed with the processor certificate's key (Base64), as OpenDSR asks; the HMAC is an extra.
        assert call.header("X-OpenDSR-Processor-Domain") == processor.domain
        assert processor.verify(call.body, call.header(SIGNATURE_HEADER))
        assert not processor.verify(call.body + b" ", call.header(SIGNATURE_HEADER))
        assert call.header("X-OpenGDPR-Signature") == call.header(SIGNATURE_HEADER)
        assert signature_ok(key, call.body, call.header(HMAC_HEADER))
        assert abs(int(call.header(TIMESTAMP_HEADER) or 0) - datetime.now(UTC).timestamp()) < 60
    sent = json.loads(door.receiver.calls[-1].body)
    assert sent["subject_request_id"] == rid and sent["request_status"] == "in_progress"
    assert set(sent) == {"api_version", "controller_id", "status_callback_url", "subject_request_id",
                         "request_status", "updated_time", "expected_completion_time"}
    assert sent["status_callback_url"] == door.callback_url and sent["controller_id"] == "web-form"
    [event] = [e.payload for e in door.service.events(rid) if e.type == "callback.sent"]
    assert event == {"url_sha256": url_sha256(door.callback_url), "request_status": "in_progress",
                     "status_code": 200, "attempts": 2, "delivered": True}

    on_status_change(door.service, rid)  # nothing changed: nothing sent
    assert len(door.receiver.calls) == 2
    door.service.cancel(rid, reason="withdrawn by the subject")
    for _ in range(3):
        on_status_change(door.service, rid)
    assert [json.loads(c.body)["request_status"] for c in door.receiver.calls[2:]] == ["cancelled"]
    # Final status delivered: the secret URL is forgotten; the ledger never had it.
    with door.service.ledger.read_engine.connect() as conn:
        assert conn.execute(text("select url from dsr_status_callbacks")).scalars().all() == [None]
    ledger = _ledger_text(door.service, rid)
    assert TOKEN not in ledger and "/opendsr/callback" not in ledger
    assert TOKEN.encode() not in _bundle_members(door.service, rid)


def _bundle_members(service: DsrService, request_id: str) -> bytes:
    """The request's evidence sealed now (what an auditor would get), all members concatenated."""
    bundle = build_bundle(service.events(request_id), request_view=service.state(request_id).to_view(),
                          system_views={}, signer=load_or_create_signing_key(service.settings.signing_key_path))
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        return b"".join(archive.read(name) for name in archive.namelist())


def test_a_receiver_that_stays_down_is_recorded_and_tried_again_on_the_next_call(door: Door) -> None:
    body = _body(status_callback_urls=[door.callback_url])
    rid = body["subject_request_id"]
    door.client.post("/opendsr/requests", json=body)
    door.receiver.fail_next = 3
    door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _code(door)})
    assert len(door.receiver.calls) == 3
    [failed] = [e.payload for e in door.service.events(rid) if e.type == "callback.sent"]
    assert failed["delivered"] is False and failed["attempts"] == 3 and failed["status_code"] == 500
    on_status_change(door.service, rid)  # the receiver is back: the same status is delivered now
    assert len(door.receiver.calls) == 4
    on_status_change(door.service, rid)
    assert len(door.receiver.calls) == 4


def test_callback_urls_are_checked() -> None:
    assert check_callback_url("https://forms.example.com/cb?t=1") is None
    for bad in ("http://forms.example.com/cb", "https://127.0.0.1/cb", "https://10.1.2.3/x", "https://[::1]/x",
                "https://localhost/x", "https://user:pw@forms.example.com/", "ftp://forms.example.com/",
                "https://169.254.169.254/", "https://2130706433/", "https://127.1/", "https://[::ffff:127.0.0.1]/",
                "not a url", 42):
        assert check_callback_url(bad) is not None, bad
    assert check_callback_url("http://127.0.0.1:9/opendsr/cb", ["http://127.0.0.1:9/opendsr/"]) is None
    for bad in ("http://127.0.0.1:9/admin", "http://127.0.0.1:9/opendsr/../admin", "http://127.0.0.1:9/opendsr/%2E%2E/x",
                "http://127.0.0.1:10/opendsr/cb", "https://127.0.0.1:9/opendsr/cb", "http://127.0.0.1:9@evil.test/opendsr/",
                "http://127.0.0.1.evil.test:9/opendsr/cb"):
        assert check_callback_url(bad, ["http://127.0.0.1:9/opendsr/"]) is not None, bad


# -- no personal data in logs ----------------------------------------------------------------------


def test_no_address_code_or_callback_url_in_any_log_line(door: Door, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = _body(status_callback_urls=[door.callback_url])
    rid = body["subject_request_id"]
    door.client.post("/opendsr/requests", json=body)
    code = _code(door)
    door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _wrong(code)})
    door.receiver.fail_next = 3
    door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": code})
    door.client.post("/opendsr/requests", json=_body())  # a duplicate
    door.client.post("/opendsr/requests", json=_body(subject_identities=[
        {"identity_type": "email", "identity_value": "bad@@example.com", "identity_format": "raw"}]))
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]  # aiosmtpd: the test's server
    assert any(rid in line for line in lines)  # the log does say what happened
    text = "\n".join(lines).lower()
    for secret in (SUBJECT_NORMAL, "lovelace", "bad@@example.com", code, _wrong(code), TOKEN, "/opendsr/callback"):
        assert secret.lower() not in text, secret


# -- abuse: guessing budgets, code caps, the clock ------------------------------------------------


def test_resubmitting_a_request_never_buys_a_fresh_guessing_budget_and_spending_it_cancels(door: Door) -> None:
    body = _body(subject_request_type="erasure")
    rid = body["subject_request_id"]
    assert door.client.post("/opendsr/requests", json=body).status_code == 201
    wrong_guesses = 0
    for _ in range(6):  # an attacker: three guesses, re-submit for a fresh code, again...
        code = _code(door)
        for _ in range(3):
            answer = door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _wrong(code)})
            assert answer.status_code == 400
            wrong_guesses += 1
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11), tick=True):
            door.client.post("/opendsr/requests", json=body)
        if door.service.state(rid).closed:
            break
    failed = [e.payload for e in door.service.events(rid) if e.type == "verification.code_failed"]
    assert len(failed) == 5 and failed[-1]["failures_left"] == 0  # 5 in all, across two codes
    assert len(door.mail.messages) == 2
    state = door.service.state(rid)
    assert state.status.value == "cancelled" and not state.verified
    assert state.cancel_reason and "too many wrong verification codes" in state.cancel_reason
    ledger = _ledger_text(door.service, rid)
    assert SUBJECT_NORMAL not in ledger.lower()
    # Spent: neither the right code nor another submission gets anywhere.
    assert door.client.post(f"/opendsr/requests/{rid}/verify", json={"code": _code(door)}).status_code == 400
    again = door.client.post("/opendsr/requests", json=body)
    assert again.json()["verification"]["code_sent"] is False and len(door.mail.messages) == 2


def test_codes_per_subject_are_capped_whatever_request_ids_are_used(service: DsrService, inbox) -> None:
    mail, port = inbox
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="p@precision.test", recipients=("p@x.test",))
    # No duplicate window: every new id is a request of its own, each asking for a code.
    intake = Intake(service, lambda: smtp, duplicate_window=timedelta(0))
    outcomes = [intake.submit(_body()) for _ in range(7)]
    assert [o.code.sent for o in outcomes if o.code] == [True] * 5 + [False] * 2
    assert [o.code.withheld for o in outcomes[5:] if o.code] == ["identity_limit"] * 2
    assert len(mail.messages) == 5
    other = intake.submit(_body(subject_identities=[{"identity_type": "email", "identity_value": "grace@example.com",
                                                     "identity_format": "raw"}]))
    assert other.code is not None and other.code.sent  # another subject is not held back
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=25), tick=True):
        later = intake.submit(_body())
        assert later.code is not None and later.code.sent  # the window slides


def test_codes_per_request_are_capped_per_window_and_in_all(service: DsrService, inbox) -> None:
    mail, port = inbox
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="p@precision.test", recipients=("p@x.test",))
    intake = Intake(service, lambda: smtp)
    body = _body()
    sent: list[bool] = []
    start = datetime.now(UTC)
    for n in range(8):  # every code left to expire before the next submission
        hours = 0 if n < 4 else 25 * (n - 3)
        with time_machine.travel(start + timedelta(hours=hours, minutes=11 * n), tick=True):
            code = intake.submit(body).code
            sent.append(bool(code and code.sent))
    # 3 in the first 24 hours; then one a day until the request's 5 are spent.
    assert sent == [True, True, True, False, True, True, False, False]
    assert len(mail.messages) == 5


def test_the_clock_starts_on_receipt_and_submitted_time_is_kept_as_information(door: Door) -> None:
    claimed = datetime.now(UTC) - timedelta(days=20)
    body = _body(submitted_time=claimed.isoformat().replace("+00:00", "Z"))
    before = datetime.now(UTC)
    answer = door.client.post("/opendsr/requests", json=body)
    assert answer.status_code == 201, answer.text
    received_time = datetime.fromisoformat(answer.json()["received_time"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= received_time <= datetime.now(UTC)
    state = door.service.state(body["subject_request_id"])
    # The deadline counts from the receipt's local date (Amsterdam for gdpr), not 20 days back.
    assert abs(date_of(state.deadline["clock_start"]) - received_time.date()) <= timedelta(days=1)
    [received] = [e for e in door.service.events(body["subject_request_id"]) if e.type == "request.received"]
    assert received.payload["submitted_at"].startswith(claimed.strftime("%Y-%m-%dT%H:%M:%S"))
    # The spec sets no age limit on submitted_time: an old one is information, not a refusal.
    old = _body(subject_request_type="erasure",
                submitted_time=(datetime.now(UTC) - timedelta(days=400)).isoformat())
    assert door.client.post("/opendsr/requests", json=old).status_code == 201


def date_of(text: str):  # noqa: ANN201 - a tiny test helper
    return datetime.fromisoformat(text).date()


def test_the_policy_sets_the_guessing_budget(tmp_path: Path, ledger_url: str, inbox) -> None:
    import yaml

    mail, port = inbox
    policy = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    policy["intake"] = {**policy.get("intake", {}), "failures_per_request": 2}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    settings = Settings(home=tmp_path / "var", config_dir=REPO / "config", policy_file=tmp_path / "policy.yaml",
                        identity_key="test-identity-key")
    service = DsrService(settings, Ledger(ledger_url, projector=index_row))
    smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="p@precision.test", recipients=("p@x.test",))
    try:
        with TestClient(create_app(service, AccessConfig(), open_store(config_from_settings(settings)),
                                   intake_smtp=lambda: smtp)) as client:
            body = _body()
            client.post("/opendsr/requests", json=body)
            code = CODE_RE.search(mail.messages[-1].get_payload()).group(1)  # type: ignore[union-attr]
            for _ in range(2):
                client.post(f"/opendsr/requests/{body['subject_request_id']}/verify", json={"code": _wrong(code)})
        assert service.state(body["subject_request_id"]).status.value == "cancelled"
    finally:
        service.close()
