"""The HTTP API by role: every route allowed for the right roles and refused (401/403) for the rest,
downloads recorded in the ledger, no personal data for auditors, path tricks refused."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from dsr.access import AccessConfig, Role, TokenEntry, token_hash
from dsr.api.app import create_app
from dsr.execution import RequestRunner
from dsr.models import parse_new_request
from dsr.service import DsrService
from dsr.storage import EvidenceStore, config_from_settings, open_store
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


ROUTES = [  # (method, path template, roles allowed)
    ("GET", "/requests", {"officer", "auditor"}),
    ("GET", "/requests/{access}", {"officer", "auditor"}),
    ("GET", "/requests/{access}/timeline", {"officer", "auditor"}),
    ("GET", "/requests/{access}/bundle", {"officer", "auditor"}),
    ("GET", "/requests/{access}/bundle/verify", {"officer", "auditor"}),
    ("GET", "/requests/{access}/package", {"officer"}),
    ("GET", "/subject/request", {"subject"}),
    ("GET", "/subject/package", {"subject"}),
]


@pytest.mark.parametrize("method, path, allowed", ROUTES)
@pytest.mark.parametrize("role", ["officer", "auditor", "subject", "nobody", "forged"])
def test_every_route_for_every_role(api, method: str, path: str, allowed: set[str], role: str) -> None:
    client, _, ids = api
    token = {"officer": OFFICER, "auditor": AUDITOR, "nobody": None, "forged": "x" * 43}.get(role)
    if role == "subject":
        token = _subject_token(client, ids["access"])
    answer = client.request(method, path.format(**ids), headers=_auth(token) if token else {})
    if role in allowed:
        assert answer.status_code == 200, answer.text
    elif role in ("nobody", "forged"):
        assert answer.status_code == 401
    else:
        assert answer.status_code == 403


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/requests", {"type": "access", "email": "x@example.com", "regime": "ccpa"}),
    ("POST", "/requests/{erasure}/verify", {"method": "email-code", "note": "ok"}),
    ("POST", "/requests/{erasure}/extend", {"reason": "complex"}),
    ("POST", "/requests/{erasure}/cancel", {"reason": "withdrawn"}),
    ("POST", "/requests/{access}/subject-token", {"days": 1}),
])
def test_write_routes_are_for_officers_only(api, method: str, path: str, body: dict) -> None:
    client, _, ids = api
    for token in (AUDITOR, _subject_token(client, ids["access"])):
        assert client.request(method, path.format(**ids), headers=_auth(token), json=body).status_code == 403
    assert client.request(method, path.format(**ids), json=body).status_code == 401


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
    assert answer.status_code == 500 and "does not match" in answer.json()["detail"]
    checked = client.get(f"/requests/{ids['erasure']}/bundle/verify", headers=_auth(AUDITOR))
    assert checked.status_code == 500
