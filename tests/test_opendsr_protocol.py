"""OpenDSR 2.0 conformance, over real HTTP: the app served by uvicorn on a loopback port, driven by
the `dsr opendsr` client (doors.opendsr_client), codes e-mailed to a real SMTP server (aiosmtpd),
callbacks to a real receiver (sandbox kit). One test per item of the spec's processor checklist
(certification_checklists.md), named after it; then the CLI, and the proxy-header rule."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import uvicorn
import yaml
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from doors.api.app import create_app
from doors.api.limits import uvicorn_proxy_options
from doors.opendsr_client import OpenDsrClient, new_request, verify_callback
from doors.opendsr_client import app as opendsr_cli
from dsr import opendsr
from dsr.access import AccessConfig
from dsr.adapters.mail import SmtpConfig
from dsr.adapters.storage import config_from_settings, open_store
from dsr.ledger.store import Ledger
from dsr.metrics import aggregate, request_facts
from dsr.opendsr_signing import OpenDsrKeyError, load_controllers, processor_identity, sign_bytes, verify_bytes
from dsr.run import RequestRunner
from dsr.service import DsrService
from dsr.settings import Settings
from dsr.state import index_row
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import Request, Response, SandboxServer, Vendor
from tests.test_execution import _connect
from tests.test_intake import CODE_RE, CallbackReceiver, Inbox

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DOMAIN = "processor.test"
SUBJECT = "Opendsr.Subject@Example.com"


# -- a processor on loopback -----------------------------------------------------------------------


def _port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(app: Any, port: int, **options: Any) -> Iterator[str]:
    """The app served by uvicorn in a thread on 127.0.0.1:port."""
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, lifespan="off", log_level="warning",
                                           access_log=False, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _key_and_cert(name: str, *, curve: bool = True, issuer: tuple[Any, x509.Name] | None = None) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1()) if curve else rsa.generate_private_key(public_exponent=65537,
                                                                                          key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, issuer_name = issuer if issuer else (key, subject)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(signer_key, hashes.SHA256()))
    return key, cert


def _pem(thing: Any) -> bytes:
    if isinstance(thing, x509.Certificate):
        return thing.public_bytes(serialization.Encoding.PEM)
    return thing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())


@dataclass
class Live:
    url: str  # the OpenDSR base: http://127.0.0.1:port/opendsr
    service: DsrService
    web: OpenDsrClient  # the company's web form backend: unsigned
    acme: OpenDsrClient  # a controller that signs (certificate in a file)
    mail: Inbox
    hooks: CallbackReceiver
    hook_url: str
    acme_key_file: Path
    app: Any

    def code(self, index: int = -1) -> str:
        found = CODE_RE.search(self.mail.messages[index].get_payload())
        assert found
        return found.group(1)


@pytest.fixture
def live(tmp_path: Path, crm_url: str) -> Iterator[Live]:
    acme_key, acme_cert = _key_and_cert("controller.acme.test")
    (tmp_path / "acme.pem").write_bytes(_pem(acme_cert))
    (tmp_path / "acme.key").write_bytes(_pem(acme_key))
    (tmp_path / "controllers.yaml").write_text(yaml.safe_dump(
        {"controllers": {"acme": {"certificate_file": str(tmp_path / "acme.pem")}}}))
    crm = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    (tmp_path / "systems.yaml").write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    port = _port()
    settings = Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=tmp_path / "systems.yaml",
                        identity_key="test-identity-key", opendsr_domain=DOMAIN,
                        opendsr_base_url=f"http://{HOST}:{port}/opendsr",
                        opendsr_controllers_file=tmp_path / "controllers.yaml")
    service = DsrService(settings, Ledger(settings.ledger_url, projector=index_row))
    inbox, smtp_port = Inbox(), _port()
    smtp = Controller(inbox, hostname=HOST, port=smtp_port)
    smtp.start()
    hooks = CallbackReceiver()
    try:
        with SandboxServer(hooks) as receiver:
            config = SmtpConfig(host=HOST, port=smtp_port, starttls=False, sender="privacy@precision.test",
                                recipients=("escalations@precision.test",))
            app = create_app(service, AccessConfig(), open_store(config_from_settings(settings)),
                             intake_smtp=lambda: config, callback_url_prefixes=(f"{receiver.url}/opendsr/",))
            with served(app, port, **uvicorn_proxy_options("")) as base:
                url = f"{base}/opendsr"
                yield Live(url, service, OpenDsrClient(url), OpenDsrClient(url, signing_key=acme_key), inbox, hooks,
                           f"{receiver.url}/opendsr/callback?token=hook-secret", tmp_path / "acme.key", app)
    finally:
        smtp.stop()
        service.close()


def _body(**changes: Any) -> dict[str, Any]:
    body = new_request(request_type="access", email=SUBJECT, regulation="gdpr")
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _end_of_day(due: str, zone: str) -> str:
    return datetime.combine(date.fromisoformat(due), datetime.max.time().replace(microsecond=0), ZoneInfo(zone)) \
        .astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(service: DsrService, request_id: str) -> list[str]:
    """Carry out a verified request on the CRM (what process-request does, without Prefect); its systems."""
    runner = RequestRunner(service)
    systems = list(runner.begin(request_id).systems)
    for system in systems:
        runner.run_system(request_id, system, _connect(service, system))
    runner.finish(request_id)
    return systems


# -- the processor checklist -----------------------------------------------------------------------


def test_new_requests_validations_and_processing_including_extensions(live: Live) -> None:
    body = _body(subject_request_type="erasure")
    answer = live.web.submit(body)
    assert answer.status_code == 201 and answer.verified, answer.body
    created = answer.body
    assert set(created) >= {"controller_id", "expected_completion_time", "received_time", "encoded_request",
                            "subject_request_id", "processor_signature"}
    assert created["controller_id"] == "web-form" and created["subject_request_id"] == body["subject_request_id"]
    assert json.loads(base64.b64decode(created["encoded_request"])) == body  # the entire body, as sent
    received = datetime.fromisoformat(created["received_time"].replace("Z", "+00:00"))
    assert abs(received - datetime.now(UTC)) < timedelta(seconds=30)  # our receipt, not the caller's time
    ours = created["extensions"][DOMAIN]
    assert ours["request_status"] == "pending" and ours["verification"]["code_sent"] is True
    assert live.service.state(body["subject_request_id"]).type == "erasure"

    # Extensions: ours (keyed by our domain) are read; another processor's are left alone.
    extended = _body(regulation=None, subject_identities=[
        {"identity_type": "email", "identity_value": "uk.subject@example.com", "identity_format": "raw"}],
        extensions={DOMAIN: {"regime": "uk-gdpr", "country": "GB"}, "other-processor.example": {"id": 7}})
    answer = live.web.submit(extended)
    assert answer.status_code == 201, answer.body
    state = live.service.state(extended["subject_request_id"])
    assert (state.regime, state.country) == ("uk-gdpr", "GB")

    # Validation: 400 with the spec's error object, every problem named by field, no value echoed.
    bad = _body(subject_request_id="not-a-uuid", subject_identities=[
        {"identity_type": "email", "identity_value": "ada@@lovelace", "identity_format": "raw"}],
        extensions={DOMAIN: {"favourite_colour": "blue"}})
    refused = live.web.submit(bad)
    assert refused.status_code == 400 and refused.verified
    error = refused.body["error"]
    assert error["code"] == 400 and error["message"]
    fields = [e["message"].split(":")[0] for e in error["errors"]]
    assert fields == ["subject_request_id", f"extensions.{DOMAIN}.favourite_colour",
                      "subject_identities.0.identity_value"]
    assert all(set(e) == {"domain", "reason", "message"} for e in error["errors"])
    assert "lovelace" not in refused.raw.decode() and "blue" not in refused.raw.decode()
    missing = live.web.submit({k: v for k, v in _body().items() if k != "regulation"})
    assert missing.status_code == 400 and missing.body["error"]["errors"][0]["message"].startswith("regulation")
    garbled = requests.post(f"{live.url}/v2/requests", data=b"{not json", timeout=5,
                            headers={"Content-Type": "application/json"})
    assert garbled.status_code == 400 and garbled.json()["error"]["code"] == 400


def test_request_status_objects_and_expected_completion_time(live: Live) -> None:
    zones = {"gdpr": "Europe/Amsterdam", "ccpa": "America/Los_Angeles"}
    for regulation, zone in zones.items():
        body = _body(regulation=regulation, subject_identities=[
            {"identity_type": "email", "identity_value": f"{regulation}@example.com", "identity_format": "raw"}])
        created = live.web.submit(body).body
        answer = live.web.status(body["subject_request_id"])
        assert answer.status_code == 200 and answer.verified
        view = answer.body
        assert {k: view[k] for k in ("api_version", "controller_id", "subject_request_id", "request_status")} == {
            "api_version": "2.0", "controller_id": "web-form", "subject_request_id": body["subject_request_id"],
            "request_status": "pending"}
        # The end of the legal due day where the office is (not 23:59:59Z): an hour earlier for NL in
        # winter, eight hours later for California.
        due = live.service.state(body["subject_request_id"]).due
        assert due is not None
        assert view["expected_completion_time"] == created["expected_completion_time"] == _end_of_day(due, zone)
        assert view["expected_completion_time"] != f"{due}T23:59:59Z"
    unknown = live.web.status(str(uuid.uuid4()))
    assert unknown.status_code == 404 and unknown.body["error"]["code"] == 404 and unknown.verified


def test_request_cancellation(live: Live) -> None:
    body = _body()
    rid = body["subject_request_id"]
    live.web.submit(body)
    answer = live.web.cancel(rid)
    assert answer.status_code == 202 and answer.verified and answer.processor_signature_ok
    assert set(answer.body) == {"api_version", "controller_id", "subject_request_id", "received_time",
                                "processor_signature"}
    state = live.service.state(rid)
    assert state.status.value == "cancelled" and "OpenDSR controller" in (state.cancel_reason or "")
    assert live.web.status(rid).body["request_status"] == "cancelled"
    again = live.web.cancel(rid)  # only a pending request can be cancelled
    assert again.status_code == 400 and "not pending" in json.dumps(again.body)

    # A signing controller's request is verified by it (in progress at once): not cancellable, and
    # only that controller may try (an unsigned DELETE is refused before the state is looked at).
    signed = _body(subject_identities=[{"identity_type": "email", "identity_value": "acme.user@example.com",
                                        "identity_format": "raw"}])
    assert live.acme.submit(signed).status_code == 201
    assert live.web.cancel(signed["subject_request_id"]).status_code == 403
    late = live.acme.cancel(signed["subject_request_id"])
    assert late.status_code == 400 and live.service.state(signed["subject_request_id"]).status.value == "verified"


def test_generating_and_securing_results_files_in_the_results_url_field(live: Live) -> None:
    body = _body(subject_identities=[{"identity_type": "email", "identity_value": ACCESS_SUBJECT,
                                      "identity_format": "raw"}], status_callback_urls=[live.hook_url])
    rid = body["subject_request_id"]
    assert live.acme.submit(body).status_code == 201
    _run(live.service, rid)
    completed = [json.loads(c.body) for c in live.hooks.calls if json.loads(c.body)["request_status"] == "completed"]
    assert len(completed) == 1 and completed[0]["results_url"].startswith(f"{live.url}/v2/results/")
    results_url = completed[0]["results_url"]
    assert "results_url" not in live.web.status(rid).body  # the public status never hands out the link
    package = requests.get(results_url, timeout=10)
    assert package.status_code == 200 and package.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(package.content)) as archive:
        assert archive.namelist()
    assert requests.get(results_url, timeout=10).status_code == 404  # single use
    assert requests.get(f"{live.url}/v2/results/{'x' * 43}", timeout=10).status_code == 404
    downloads = [e for e in live.service.events(rid) if e.type == "package.downloaded"]
    assert len(downloads) == 1 and downloads[0].payload["role"] == "controller"


def test_discovery_public_certificate_supported_identity_types_extensions(live: Live) -> None:
    answer = live.web.discover()
    assert answer.status_code == 200 and answer.verified
    found = answer.body
    assert found["api_version"] == "2.0"
    assert found["supported_identities"] == [{"identity_type": "email", "identity_format": "raw"}]
    assert found["supported_subject_request_types"] == ["access", "portability", "erasure"]
    assert found["processor_certificate"] == f"{live.url}/v2/certificate.pem"
    assert set(found["extensions"]) >= {"regime", "country"}
    pem = requests.get(found["processor_certificate"], timeout=5)
    cert = x509.load_pem_x509_certificate(pem.content)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [DOMAIN]
    fresh = requests.get(f"{live.url}/v2/discovery", timeout=5)
    assert verify_bytes(cert, fresh.content, fresh.headers[opendsr.SIGNATURE_HEADER])
    assert fresh.headers[opendsr.DOMAIN_HEADER] == DOMAIN
    assert b"PRIVATE" not in pem.content


def test_api_security_authentication_and_authorization(live: Live, tmp_path: Path) -> None:
    # A signature from a key no configured controller holds: 403, nothing recorded.
    stranger_key, _ = _key_and_cert("stranger.test")
    stranger = OpenDsrClient(live.url, signing_key=stranger_key)
    body = _body()
    refused = stranger.submit(body)
    assert refused.status_code == 403 and refused.body["error"]["errors"][0]["reason"] == "InvalidSignature"
    assert not live.service.ledger.exists(body["subject_request_id"])
    # The signer is the controller: its id is answered, and recorded as the verifier.
    signed = _body(subject_identities=[{"identity_type": "email", "identity_value": "signed@example.com",
                                        "identity_format": "raw"}])
    answer = live.acme.submit(signed)
    assert answer.status_code == 201 and answer.body["controller_id"] == "acme"
    verification = live.service.state(signed["subject_request_id"]).verification
    assert verification and verification["method"] == "opendsr-controller"
    # Configured to require signatures: an unsigned request is refused.
    live.service.settings.opendsr_require_signature = True
    try:
        unsigned = live.web.submit(_body())
        assert unsigned.status_code == 403 and unsigned.body["error"]["errors"][0]["reason"] == "SignatureRequired"
    finally:
        live.service.settings.opendsr_require_signature = False
    # Unsigned callers are rate-limited per address (10 a minute); a signed controller is not throttled.
    codes = [live.web.submit(_body(subject_request_type="sale")).status_code for _ in range(11)]
    assert codes[-1] == 429 and 400 in codes
    many = [live.acme.submit(_body(subject_identities=[
        {"identity_type": "email", "identity_value": f"bulk{n}@example.com", "identity_format": "raw"}])).status_code
        for n in range(4)]
    assert many == [201] * 4


class CertificateHost(Vendor):
    """A controller's web server: serves its certificate at a fixed path; counts the fetches."""

    name = "controller-site"

    def __init__(self, pem: bytes) -> None:
        super().__init__()
        self.fetches = 0
        self.router.add("GET", "/opendsr/cert.pem", self._cert)
        self.pem = pem

    def _cert(self, request: Request) -> Response:
        self.fetches += 1
        return Response(200, self.pem, {"Content-Type": "application/x-pem-file"})


def test_controller_certificates_come_from_configured_files_pem_or_allow_listed_urls(tmp_path: Path) -> None:
    key, cert = _key_and_cert("partner.test", curve=False)
    other_key, other_cert = _key_and_cert("inline.test")
    host = CertificateHost(_pem(cert))
    with SandboxServer(host) as site:
        (tmp_path / "controllers.yaml").write_text(yaml.safe_dump({"controllers": {
            "partner": {"certificate_url": f"{site.url}/opendsr/cert.pem"},
            "inline": {"certificate_pem": _pem(other_cert).decode()}}}))
        controllers = load_controllers(Settings(home=tmp_path, opendsr_controllers_file=tmp_path / "controllers.yaml"))
        body = b'{"subject_request_id":"x"}'
        assert controllers.identify(body, sign_bytes(key, body)) == "partner"  # RSA, fetched from its URL
        assert controllers.identify(body, sign_bytes(other_key, body)) == "inline"  # ECDSA, inline PEM
        assert controllers.identify(body + b" ", sign_bytes(key, body)) is None
        assert controllers.identify(body, sign_bytes(key, body)) == "partner"
        assert host.fetches == 1  # cached: one fetch for many requests
    def controllers_from(entries: dict[str, Any]) -> Any:
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"controllers": entries}))
        return load_controllers(Settings(home=tmp_path, opendsr_controllers_file=tmp_path / "bad.yaml"))

    plain_http = controllers_from({"x": {"certificate_url": "http://example.com/cert.pem"}})
    with pytest.raises(OpenDsrKeyError, match="certificate_url: must be https"):
        plain_http.certificate("x")  # never fetched: plain http only to this machine
    with pytest.raises(OpenDsrKeyError, match="controllers.x: give exactly one"):
        controllers_from({"x": {"certificate_file": "a.pem", "certificate_url": "https://a/c.pem"}})


def test_requests_are_signed_with_the_private_key(live: Live) -> None:
    cert = live.web.certificate()
    body = _body()
    calls = [
        requests.post(f"{live.url}/v2/requests", data=opendsr.canonical(body), timeout=10,
                      headers={"Content-Type": "application/json"}),
        requests.get(f"{live.url}/v2/requests/{body['subject_request_id']}", timeout=10),
        requests.get(f"{live.url}/v2/requests/{uuid.uuid4()}", timeout=10),
        requests.post(f"{live.url}/v2/requests", json={"subject_request_id": 1}, timeout=10),
        requests.delete(f"{live.url}/v2/requests/{body['subject_request_id']}", timeout=10),
    ]
    assert [c.status_code for c in calls] == [201, 200, 404, 400, 202]
    for call in calls:
        for domain, signature in ((opendsr.DOMAIN_HEADER, opendsr.SIGNATURE_HEADER),
                                  (opendsr.OPENGDPR_DOMAIN_HEADER, opendsr.OPENGDPR_SIGNATURE_HEADER)):
            assert call.headers[domain] == DOMAIN
            assert verify_bytes(cert, call.content, call.headers[signature])
        assert not verify_bytes(cert, call.content + b" ", call.headers[opendsr.SIGNATURE_HEADER])
        base64.b64decode(call.headers[opendsr.SIGNATURE_HEADER], validate=True)  # Base64, as the spec says
    assert opendsr.processor_signature_ok(cert, calls[0].json())
    assert opendsr.processor_signature_ok(cert, calls[4].json())
    forged = calls[0].json() | {"controller_id": "someone-else"}
    assert not opendsr.processor_signature_ok(cert, forged)


def test_private_key_is_protected_and_securely_managed(live: Live, tmp_path: Path) -> None:
    identity = processor_identity(live.service.settings)
    key_file = live.service.settings.home / "keys" / "opendsr-processor.key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    assert identity.self_signed  # generated: development only (the spec wants a CA-issued certificate)
    key_pem = key_file.read_bytes()
    assert key_pem not in requests.get(f"{live.url}/v2/certificate.pem", timeout=5).content
    # Production: a CA-issued certificate and its key from files (mounted secrets).
    ca_key, ca_cert = _key_and_cert("Test CA", curve=False)
    leaf_key, leaf = _key_and_cert(DOMAIN, issuer=(ca_key, ca_cert.subject))
    (tmp_path / "leaf.pem").write_bytes(_pem(leaf))
    (tmp_path / "leaf.key").write_bytes(_pem(leaf_key))
    os.chmod(tmp_path / "leaf.key", 0o600)
    configured = Settings(home=tmp_path / "prod", opendsr_domain=DOMAIN, opendsr_certificate_file=tmp_path / "leaf.pem",
                          opendsr_key_file=tmp_path / "leaf.key")
    production = processor_identity(configured)
    assert not production.self_signed and production.verify(b"x", production.sign(b"x"))
    assert not (tmp_path / "prod" / "keys").exists()  # nothing generated beside configured keys
    # A key that is not the certificate's, or one too weak for FIPS 186-4, is refused, naming the setting.
    (tmp_path / "other.key").write_bytes(_pem(ca_key))
    with pytest.raises(OpenDsrKeyError, match="opendsr_key_file"):
        processor_identity(configured.model_copy(update={"opendsr_key_file": tmp_path / "other.key"}))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "weak.key").write_bytes(_pem(weak))
    with pytest.raises(OpenDsrKeyError, match="2048"):
        processor_identity(configured.model_copy(update={"opendsr_key_file": tmp_path / "weak.key"}))


def test_callbacks_are_sent_on_status_changes(live: Live, tmp_path: Path) -> None:
    body = _body(status_callback_urls=[live.hook_url])
    rid = body["subject_request_id"]
    live.web.submit(body)
    assert live.hooks.calls == []  # the 201 says pending; nothing changed yet
    verified = requests.post(f"{live.url}/v2/requests/{rid}/verify", json={"code": live.code()}, timeout=10)
    assert verified.status_code == 200 and verified.json()["request_status"] == "in_progress"
    live.service.cancel(rid, reason="withdrawn by the subject")
    statuses = [json.loads(c.body)["request_status"] for c in live.hooks.calls]
    assert statuses == ["in_progress", "cancelled"]
    cert = live.web.certificate()
    for call in live.hooks.calls:
        sent = json.loads(call.body)
        assert sent["controller_id"] == "web-form" and sent["status_callback_url"] == live.hook_url
        assert sent["subject_request_id"] == rid and sent["expected_completion_time"]
        assert call.header("X-OpenDSR-Processor-Domain") == DOMAIN
        assert verify_callback(call.body, call.header("X-OpenDSR-Signature"), cert, live.hook_url) is None
        assert verify_callback(call.body, call.header("X-OpenDSR-Signature"), cert, "https://elsewhere.test/cb")
        assert verify_callback(call.body.replace(b"web-form", b"web-farm"), call.header("X-OpenDSR-Signature"),
                               cert, live.hook_url)
    # The CLI does the same check for a controller that received one.
    last = live.hooks.calls[-1]
    (tmp_path / "callback.json").write_bytes(last.body)
    ok = CliRunner().invoke(opendsr_cli, ["verify-callback", "--body", str(tmp_path / "callback.json"),
                                          "--signature", str(last.header("X-OpenDSR-Signature")),
                                          "--callback-url", live.hook_url, "--processor", live.url])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "forged.json").write_bytes(last.body.replace(b"web-form", b"web-farm"))
    forged = CliRunner().invoke(opendsr_cli, ["verify-callback", "--body", str(tmp_path / "forged.json"),
                                              "--signature", str(last.header("X-OpenDSR-Signature")),
                                              "--callback-url", live.hook_url, "--processor", live.url])
    assert forged.exit_code == 1


def test_major_version_number_in_urls(live: Live) -> None:
    # Every protocol route carries its major version; the prior name's (OpenGDPR 1.0) are honoured.
    legacy_web_form = {"/opendsr/requests", "/opendsr/requests/{request_id}", "/opendsr/requests/{request_id}/verify"}
    paths = {p for p in live.app.openapi()["paths"] if p.startswith("/opendsr")}
    assert paths > legacy_web_form
    assert all(p.startswith(("/opendsr/v1/", "/opendsr/v2/")) for p in paths - legacy_web_form), paths
    old = {k: v for k, v in _body(api_version="1.0").items() if k != "regulation"}  # OpenGDPR had no regulation
    answer = requests.post(f"{live.url}/v1/opengdpr_requests", data=opendsr.canonical(old), timeout=10,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 201 and answer.json()["api_version"] == "1.0"
    assert answer.headers["X-OpenGDPR-Processor-Domain"] == DOMAIN
    assert verify_bytes(live.web.certificate(), answer.content, answer.headers["X-OpenGDPR-Signature"])
    assert live.service.state(old["subject_request_id"]).regime == "gdpr"
    status = requests.get(f"{live.url}/v1/opengdpr_requests/{old['subject_request_id']}", timeout=10)
    assert status.status_code == 200 and status.json()["request_status"] == "pending"
    assert requests.get(f"{live.url}/v1/discovery", timeout=10).json()["api_version"] == "1.0"
    assert requests.delete(f"{live.url}/v1/opengdpr_requests/{old['subject_request_id']}", timeout=10).status_code == 202
    assert requests.get(f"{live.url}/discovery", timeout=10).status_code == 404  # no unversioned protocol route


def test_logging_activity(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = _body(status_callback_urls=[live.hook_url])
    rid = body["subject_request_id"]
    live.web.submit(body)
    requests.post(f"{live.url}/v2/requests/{rid}/verify", json={"code": "000000" if live.code() != "000000"
                                                                  else "111111"}, timeout=10)
    requests.post(f"{live.url}/v2/requests/{rid}/verify", json={"code": live.code()}, timeout=10)
    # Every step is in the ledger (the record), in order, without the address, the code or the URL.
    types = [e.type for e in live.service.events(rid)]
    for expected in ("request.received", "verification.code_sent", "verification.code_failed", "request.verified",
                     "callback.sent"):
        assert expected in types, expected
    ledger = json.dumps([e.to_dict() for e in live.service.events(rid)]).lower()
    assert SUBJECT.lower() not in ledger and "hook-secret" not in ledger and live.code() not in ledger
    # The log names the request, never the subject, the code, the callback URL or the encoded request.
    ours = [r for r in caplog.records if r.name.startswith(("dsr", "uvicorn", "fastapi", "httpx", "urllib3"))]
    text = "\n".join(r.getMessage() for r in ours)  # (the test's own SMTP server logs what it receives)
    assert rid in text
    encoded = base64.b64encode(opendsr.canonical(body)).decode()
    for secret in (SUBJECT.lower(), live.code(), "hook-secret", encoded[:40]):
        assert secret not in text.lower(), secret


def test_publishing_any_required_extensions(live: Live) -> None:
    published = live.web.discover().body["extensions"]
    assert published["regime"] == ["gdpr", "uk-gdpr", "ccpa", "lgpd", "pipeda"]
    for regime in ("lgpd", "pipeda"):
        body = _body(regulation=None, extensions={DOMAIN: {"regime": regime}}, subject_identities=[
            {"identity_type": "email", "identity_value": f"{regime}@example.com", "identity_format": "raw"}])
        assert live.web.submit(body).status_code == 201
        assert live.service.state(body["subject_request_id"]).regime == regime
    unknown = live.web.submit(_body(extensions={DOMAIN: {"regime": "hipaa"}}))
    assert unknown.status_code == 400
    readme = (REPO / "README.md").read_text()
    assert "OpenDSR conformance" in readme and "extensions" in readme


def test_defined_process_for_fulfilling_each_request_type(live: Live) -> None:
    subjects = {"access": ACCESS_SUBJECT, "portability": ACCESS_SUBJECT, "erasure": ERASURE_SUBJECT}
    assert sorted(subjects) == sorted(live.web.discover().body["supported_subject_request_types"])
    for kind, email in subjects.items():
        body = _body(subject_request_type=kind, subject_identities=[
            {"identity_type": "email", "identity_value": email, "identity_format": "raw"}])
        assert live.acme.submit(body).status_code == 201
        rid = body["subject_request_id"]
        assert _run(live.service, rid), kind  # the data map and policy give each type its steps
        assert live.acme.status(rid).body["request_status"] == "completed", kind


def test_metrics_on_the_fulfillment_to_ensure_correct_operations(live: Live) -> None:
    done = _body(subject_identities=[{"identity_type": "email", "identity_value": ACCESS_SUBJECT,
                                      "identity_format": "raw"}], status_callback_urls=[live.hook_url])
    live.acme.submit(done)
    _run(live.service, done["subject_request_id"])
    withdrawn = _body(subject_request_type="erasure")
    live.web.submit(withdrawn)
    live.web.cancel(withdrawn["subject_request_id"])
    ids = [done["subject_request_id"], withdrawn["subject_request_id"]]
    metrics = aggregate([request_facts(live.service.events(rid)) for rid in ids], today=datetime.now(UTC).date())
    assert metrics.by_type == {"access": 1, "erasure": 1}
    assert metrics.by_outcome == {"cancelled": 1, "completed": 1}
    assert (metrics.closed, metrics.on_time_percent, metrics.open_overdue) == (1, 100.0, 0)
    delivered = [e.payload["delivered"] for e in live.service.events(done["subject_request_id"])
                 if e.type == "callback.sent"]
    assert delivered and all(delivered)  # callback delivery is measured per status, in the ledger


# -- the client over HTTP, and the proxy rule ------------------------------------------------------


def test_the_dsr_opendsr_cli_against_a_live_processor(live: Live) -> None:
    cli = CliRunner()
    found = cli.invoke(opendsr_cli, ["discover", live.url])
    assert found.exit_code == 0 and json.loads(found.stdout)["body"]["api_version"] == "2.0"
    rid = str(uuid.uuid4())
    sent = cli.invoke(opendsr_cli, ["submit", live.url, "--email", "cli.subject@example.com", "--type", "erasure",
                                    "--request-id", rid])
    assert sent.exit_code == 0, sent.output
    shown = json.loads(sent.stdout)
    assert shown["signature_verified"] is True and "cli.subject" not in sent.stdout  # encoded_request not shown
    assert json.loads(cli.invoke(opendsr_cli, ["status", live.url, rid]).stdout)["body"]["request_status"] == "pending"
    assert cli.invoke(opendsr_cli, ["cancel", live.url, rid]).exit_code == 0
    assert cli.invoke(opendsr_cli, ["cancel", live.url, rid]).exit_code == 3  # no longer pending
    bad = cli.invoke(opendsr_cli, ["submit", live.url, "--email", "not-an-address"])
    assert bad.exit_code == 2 and "identity_value" in bad.stderr
    signed = cli.invoke(opendsr_cli, ["submit", live.url, "--email", "cli.signed@example.com",
                                      "--sign-key", str(live.acme_key_file)])
    assert signed.exit_code == 0 and json.loads(signed.stdout)["body"]["controller_id"] == "acme"
    assert cli.invoke(opendsr_cli, ["status", "ftp://nowhere", rid]).exit_code == 2


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path, trusted: str) -> None:
    settings = Settings(home=tmp_path / "var", config_dir=REPO / "config", identity_key="k")
    service = DsrService(settings)
    app = create_app(service, AccessConfig(), open_store(config_from_settings(settings)), intake_smtp=lambda: None)
    try:
        with served(app, _port(), **uvicorn_proxy_options(trusted)) as base:
            def post(forwarded: str) -> int:
                return requests.post(f"{base}/opendsr/v2/requests", json={}, timeout=5,
                                     headers={"X-Forwarded-For": forwarded}).status_code

            rotating = [post(f"203.0.113.{n}") for n in range(11)]  # a new "client" on every call
            if trusted:  # the proxy is trusted: each forwarded address is its own client
                assert 429 not in rotating
                assert [post("198.51.100.7") for _ in range(11)][-1] == 429
            else:  # nobody is trusted: the header changes nothing, the peer is limited
                assert rotating[-1] == 429 and 429 not in rotating[:10]
    finally:
        service.close()


def test_trusted_proxies_setting_is_checked() -> None:
    assert uvicorn_proxy_options("") == {"proxy_headers": False, "forwarded_allow_ips": ""}
    assert uvicorn_proxy_options("10.0.0.5, 192.168.0.0/24")["forwarded_allow_ips"] == "10.0.0.5/32,192.168.0.0/24"
    with pytest.raises(ValueError, match="trusted_proxies: entry 2"):
        uvicorn_proxy_options("10.0.0.5, proxy.internal")

