"""The deadline sweep through a request's life, on a moving clock (time-machine), with a real
SMTP server (aiosmtpd) and a real HTTP receiver on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dsr.adapters.mail import ChannelsConfig, SmtpChannel, SmtpConfig, WebhookChannel, WebhookConfig
from dsr.deadlines import PauseNotAllowed
from dsr.models import parse_new_request
from dsr.service import DsrService
from dsr.sweep import sweep
from sandbox.kit import Request, Response, SandboxServer, Vendor

AMS = ZoneInfo("Europe/Amsterdam")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 Message accepted for delivery"


class Receiver(Vendor):
    """A webhook receiver that records what it was sent (and can be told to fail)."""

    name = "webhook"

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[dict] = []
        self.failing = False
        self.router.add("POST", "/hook", self._hook)

    def _hook(self, request: Request) -> Response:
        if self.failing:
            return Response.json({"error": "down"}, 500)
        self.posts.append(request.json())
        return Response.text("ok")


def _free_port() -> int:
    # aiosmtpd's Controller checks readiness by connecting to the port it was given, so it needs a real one.
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
def receiver() -> Iterator[tuple[Receiver, str]]:
    vendor = Receiver()
    with SandboxServer(vendor) as server:
        yield vendor, f"{server.url}/hook"


def _channels(smtp_port: int, hook: str) -> list:
    return [SmtpChannel(SmtpConfig(host="127.0.0.1", port=smtp_port, starttls=False, sender="dsr@precision.test",
                                   recipients=("privacy@precision.test",))),
            WebhookChannel(WebhookConfig(url=hook))]


def _gdpr_request(service: DsrService, received: str = "2026-03-02T10:00:00+01:00") -> str:
    new = parse_new_request(type="erasure", email="ada.lovelace@example.com", regime="gdpr", country="NL",
                            received=received)
    return service.submit(new).state.request_id


def _sweep_at(service: DsrService, moment: datetime, channels: list) -> list[tuple[str, str, str]]:
    with time_machine.travel(moment, tick=False):
        return sweep(service, channels).raised


def test_a_request_is_warned_then_escalated_once_per_threshold_then_daily(
        sqlite_service: DsrService, inbox, receiver) -> None:
    (mail, port), (hook, url) = inbox, receiver
    channels = _channels(port, url)
    request_id = _gdpr_request(sqlite_service)  # due Thu 2026-04-02 (Amsterdam)
    timeline = [
        (datetime(2026, 3, 20, 9, tzinfo=AMS), []),
        (datetime(2026, 3, 26, 0, 30, tzinfo=AMS), ["warning"]),  # 7 days before, just after local midnight
        (datetime(2026, 3, 26, 13, 0, tzinfo=AMS), []),  # the hourly sweep again: no repeat
        (datetime(2026, 3, 29, 9, tzinfo=AMS), []),
        (datetime(2026, 3, 31, 0, 30, tzinfo=AMS), ["warning"]),  # 2 days before
        (datetime(2026, 4, 2, 8, 0, tzinfo=AMS), ["escalation"]),  # due today
        (datetime(2026, 4, 2, 17, 0, tzinfo=AMS), []),
        (datetime(2026, 4, 3, 1, 0, tzinfo=AMS), ["escalation"]),  # overdue, every day
        (datetime(2026, 4, 4, 1, 0, tzinfo=AMS), ["escalation"]),
        (datetime(2026, 4, 4, 23, 0, tzinfo=AMS), []),
    ]
    for moment, expected in timeline:
        raised = _sweep_at(sqlite_service, moment, channels)
        assert [level for _, level, _ in raised] == expected, moment
    assert len(mail.messages) == 5 and len(hook.posts) == 5
    events = [e for e in sqlite_service.events(request_id) if e.type == "deadline.alert"]
    assert [e.payload["key"].split(":")[1] for e in events] == [
        "warn-7d", "warn-2d", "due-today", "overdue", "overdue"]
    with time_machine.travel(datetime(2026, 4, 5, 9, tzinfo=AMS), tick=False):
        sqlite_service.cancel(request_id, reason="withdrawn")
        assert sweep(sqlite_service, channels).raised == []  # closed requests are left alone


def test_messages_name_request_regime_due_date_owner_and_what_is_open_but_no_personal_data(
        sqlite_service: DsrService, inbox, receiver) -> None:
    (mail, port), (hook, url) = inbox, receiver
    request_id = _gdpr_request(sqlite_service)
    state = sqlite_service.state(request_id)
    _sweep_at(sqlite_service, datetime(2026, 3, 31, 9, tzinfo=AMS), _channels(port, url))
    [message], [post] = mail.messages, hook.posts
    for text in (message, post["text"]):
        assert request_id in text and "gdpr" in text and "2026-04-02" in text
        assert "identity verification" in text and "privacy-office" in text
    blob = (message + json.dumps(post)).lower()
    assert "ada.lovelace" not in blob and "lovelace" not in blob and state.identity_hash not in blob  # (a uuid may hold "ada")
    assert post["dsr"]["days_left"] == 2 and post["dsr"]["level"] == "warning"


def test_warnings_fire_at_local_midnight_of_the_regimes_office(sqlite_service: DsrService) -> None:
    new = parse_new_request(type="access", email="grace@example.org", regime="ccpa", received="2026-03-02")
    request_id = sqlite_service.submit(new).state.request_id  # due 2026-04-16, Los Angeles
    sqlite_service.acknowledge(request_id)
    assert _sweep_at(sqlite_service, datetime(2026, 4, 9, 6, 59, tzinfo=UTC), []) == []  # 23:59 in LA
    raised = _sweep_at(sqlite_service, datetime(2026, 4, 9, 7, 0, tzinfo=UTC), [])  # 00:00 PDT
    assert [level for _, level, _ in raised] == ["warning"]
    assert sqlite_service.state(request_id).alerts  # recorded even with no channel configured


def test_undelivered_alert_is_retried_by_the_next_sweep_until_delivered(
        sqlite_service: DsrService, receiver) -> None:
    hook, url = receiver
    channels = [WebhookChannel(WebhookConfig(url=url))]
    request_id = _gdpr_request(sqlite_service)
    hook.failing = True
    with time_machine.travel(datetime(2026, 3, 31, 9, tzinfo=AMS), tick=False):
        first = sweep(sqlite_service, channels)
        assert (len(first.raised), first.delivered, first.undelivered) == (1, 0, 1)
    hook.failing = False
    with time_machine.travel(datetime(2026, 3, 31, 10, tzinfo=AMS), tick=False):
        second = sweep(sqlite_service, channels)
        assert (len(second.raised), second.delivered) == (0, 1)
        assert sweep(sqlite_service, channels).delivered == 0  # delivered: not sent again
    assert len(hook.posts) == 1
    notified = [e.payload for e in sqlite_service.events(request_id) if e.type == "deadline.notified"]
    assert [n["delivered"] for n in notified] == [False, True]
    assert notified[0]["channels"]["webhook"] == "failed: webhook: answered HTTP 500"


def test_warnings_say_while_an_extension_is_possible_and_when_it_no_longer_is(sqlite_service: DsrService) -> None:
    new = parse_new_request(type="erasure", email="a@example.ca", regime="pipeda", received="2026-03-02")
    sqlite_service.submit(new)  # due, and extension notice by, 2026-04-01 (Toronto)
    toronto = ZoneInfo("America/Toronto")
    [(_, _, warning)] = _sweep_at(sqlite_service, datetime(2026, 3, 25, 9, tzinfo=toronto), [])
    assert warning.endswith("an extension is still possible: notify the subject by 2026-04-01")
    [(_, level, overdue)] = _sweep_at(sqlite_service, datetime(2026, 4, 2, 9, tzinfo=toronto), [])
    assert level == "escalation" and overdue.endswith("the extension window closed on 2026-04-01")


def test_an_extension_moves_the_alerts_to_the_new_due_date(sqlite_service: DsrService) -> None:
    new = parse_new_request(type="erasure", email="a@example.ca", regime="pipeda", received="2026-03-02")
    request_id = sqlite_service.submit(new).state.request_id
    toronto = ZoneInfo("America/Toronto")
    assert len(_sweep_at(sqlite_service, datetime(2026, 3, 25, 9, tzinfo=toronto), [])) == 1
    sqlite_service.extend(request_id, reason="records in many systems", at=datetime(2026, 3, 26, 9, tzinfo=toronto))
    assert sqlite_service.state(request_id).due == "2026-05-01"
    # The old due date passes without an alert: the extended one counts now.
    assert _sweep_at(sqlite_service, datetime(2026, 4, 2, 9, tzinfo=toronto), []) == []
    raised = _sweep_at(sqlite_service, datetime(2026, 4, 24, 9, tzinfo=toronto), [])
    assert [s for _, _, s in raised] == ["response is due 2026-05-01: 7 day(s) left"]


def test_a_paused_clock_raises_nothing_and_moves_the_due_date_when_resumed(sqlite_service: DsrService) -> None:
    new = parse_new_request(type="access", email="a@example.co.uk", regime="uk-gdpr", received="2026-03-02")
    request_id = sqlite_service.submit(new).state.request_id  # due 2026-04-02
    london = ZoneInfo("Europe/London")
    sqlite_service.pause(request_id, wait_for="clarification", reason="which of two accounts is meant",
                         at=datetime(2026, 3, 10, 9, tzinfo=UTC))
    assert _sweep_at(sqlite_service, datetime(2026, 4, 2, 9, tzinfo=london), []) == []  # paused, not overdue
    state = sqlite_service.resume(request_id, wait_for="clarification", at=datetime(2026, 3, 20, 9, tzinfo=UTC))
    assert state.due == "2026-04-13"  # 10 days paused; 12 Apr is a Sunday
    assert _sweep_at(sqlite_service, datetime(2026, 4, 2, 9, tzinfo=london), []) == []


def test_ccpa_clock_cannot_be_paused_and_its_acknowledgement_is_chased(sqlite_service: DsrService) -> None:
    new = parse_new_request(type="access", email="a@example.com", regime="ccpa", received="2026-11-02")
    request_id = sqlite_service.submit(new).state.request_id
    with pytest.raises(PauseNotAllowed, match="regardless of verification"):
        sqlite_service.pause(request_id, wait_for="id", reason="need ID")
    ack_by = sqlite_service.state(request_id).deadline["acknowledge_by"]
    la = ZoneInfo("America/Los_Angeles")
    raised = _sweep_at(sqlite_service, datetime.fromisoformat(ack_by).replace(hour=9, tzinfo=la), [])
    assert any(s.startswith("acknowledgement is due today") for _, _, s in raised)
    sqlite_service.acknowledge(request_id)
    next_day = datetime.fromisoformat(ack_by).replace(hour=9, tzinfo=la) + dt.timedelta(days=1)
    assert not any("acknowledgement" in s for _, _, s in _sweep_at(sqlite_service, next_day, []))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_smtp_with_starttls_and_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret")

    handler = Inbox()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True)
    controller.start()
    try:
        monkeypatch.setenv("DSR_SMTP_USER", "dsr")
        monkeypatch.setenv("DSR_SMTP_PASSWORD", "s3cret")
        channels = ChannelsConfig.model_validate({"email": {
            "host": "127.0.0.1", "port": port, "starttls": True, "tls_ca_file": str(cert),
            "username_env": "DSR_SMTP_USER", "password_env": "DSR_SMTP_PASSWORD",
            "sender": "dsr@precision.test", "recipients": ["privacy@precision.test"], "timeout_seconds": 2}}).build()
        from dsr.adapters.mail import Notice, deliver

        assert deliver(channels, Notice("[DSR warning] test", "body", {})) == {"email": "sent"}
        assert seen == [("dsr", "s3cret")] and "[DSR warning] test" in handler.messages[0]
        monkeypatch.setenv("DSR_SMTP_PASSWORD", "wrong")
        result = deliver(channels, Notice("x", "y", {}))
        assert result["email"].startswith("failed: email via 127.0.0.1") and "wrong" not in result["email"]
    finally:
        controller.stop()


def test_escalations_appear_in_the_evidence_bundle_timeline(sqlite_service: DsrService) -> None:
    from dsr.run import RequestRunner
    from tests.test_execution import _connect

    request_id = _gdpr_request(sqlite_service, received=datetime.now(UTC).isoformat())
    state = sqlite_service.state(request_id)
    due = datetime.fromisoformat(state.due).replace(hour=12, tzinfo=UTC)
    _sweep_at(sqlite_service, due - dt.timedelta(days=2), [])
    sqlite_service.verify(request_id, method="email-code", note="ok")
    runner = RequestRunner(sqlite_service)
    for system in runner.begin(request_id).systems:
        runner.run_system(request_id, system, _connect(sqlite_service, system))
    outcome = runner.finish(request_id)
    import zipfile

    with zipfile.ZipFile(outcome.bundle_path) as bundle:
        timeline = [json.loads(line) for line in bundle.read("timeline.jsonl").splitlines()]
        report = bundle.read("report.html").decode()
    assert any(e["type"] == "deadline.alert" for e in timeline)
    assert "deadline.alert" in report
