"""Every request type through the real `process-request` Prefect flow, once: the CRM and Salesforce
by API, the website portal (no API) by a manual task that `task done` closes; each request ends
completed with sealed evidence that verifies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from dsr.bundle import verify_bundle
from dsr.models import RequestType, Status, parse_new_request
from dsr.service import DsrService
from dsr.settings import Settings
from dsr.signing import load_or_create_signing_key
from flows import runtime
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import SandboxServer

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parent.parent

#: type -> (regime, subject, corrected fields)
REQUESTS: dict[RequestType, tuple[str, str, dict[str, str] | None]] = {
    RequestType.ACCESS: ("gdpr", ERASURE_SUBJECT, None),
    RequestType.PORTABILITY: ("gdpr", ERASURE_SUBJECT, None),
    RequestType.RECTIFICATION: ("gdpr", ERASURE_SUBJECT, {"title": "Countess", "phone": "+44 20 7946 0001"}),
    RequestType.RESTRICTION: ("gdpr", ERASURE_SUBJECT, None),
    RequestType.OBJECTION: ("uk-gdpr", ERASURE_SUBJECT, None),
    RequestType.CONSENT_WITHDRAWAL: ("pipeda", ERASURE_SUBJECT, None),
    RequestType.OPT_OUT: ("ccpa", ERASURE_SUBJECT, None),
    RequestType.ERASURE: ("gdpr", ACCESS_SUBJECT, None),
}


@pytest.fixture
def flow_service(tmp_path: Path, crm_url: str, sandboxes: dict[str, SandboxServer]) -> Iterator[DsrService]:
    systems = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())["systems"]
    systems["crm"]["settings"]["url"] = crm_url
    path = tmp_path / "systems.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {name: systems[name]
                                                              for name in ("crm", "salesforce", "portal")}}))
    service = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                                  identity_key="test-identity-key"))
    runtime.use_service(service)
    yield service
    runtime.use_service(None)
    service.close()


def test_every_request_type_completes_through_the_flow(flow_service: DsrService) -> None:
    from flows.request import process_request

    assert set(REQUESTS) == set(RequestType)  # a new type must be added here
    signer = load_or_create_signing_key(flow_service.settings.signing_key_path)
    for kind, (regime, email, changes) in REQUESTS.items():
        new = parse_new_request(type=kind.value, email=email, regime=regime, received=datetime.now(UTC),
                                changes=changes)
        request_id = flow_service.submit(new).state.request_id
        if kind is not RequestType.OPT_OUT:  # the CCPA opt-out runs unverified (11 CCR 7026)
            flow_service.verify(request_id, method="email-code", note="code returned")
        result = process_request(request_id)
        assert result["status"] == Status.AWAITING_MANUAL_ACTION.value, (kind, result["reason"])
        task = flow_service.state(request_id).systems["portal"].task or {}
        assert task.get("done") is False, kind
        flow_service.task_done(request_id, "portal", note=f"{task['step']} done in the portal by hand")
        result = process_request(request_id)
        assert result["status"] == Status.COMPLETED.value, (kind, result["reason"])
        assert {s["system"]: s["status"] for s in result["systems"]} == {
            "crm": "completed", "portal": "completed", "salesforce": "completed"}, kind
        assert verify_bundle(Path(result["bundle"]), signer.public_key).ok, kind
