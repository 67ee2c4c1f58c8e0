"""The API's OpenAPI schema is true: Schemathesis calls every operation as each role and checks each
answer against the schema (status codes, bodies, headers, constraints, auth, the Allow of a 405);
and the promises it makes are kept: no 422 echoes what was sent, tampered evidence is a 409 verdict.

The Schemathesis run here is short and seeded (a few examples per operation); `make chaos` runs the
same campaign long (`python -m chaos.schema --max-examples 500`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from chaos.schema import CONFIG, PUBLIC_PATHS, PUBLIC_ROLE, ROLES, run_roles, seeded_api
from doors.api.app import create_app
from doors.api.intake import EXAMPLE
from dsr.access import AccessConfig, Role, TokenEntry, token_hash
from dsr.adapters.mail import SmtpConfig
from dsr.adapters.storage import config_from_settings, open_store
from dsr.service import DsrService

OFFICER = "schema-officer-token-" + "o" * 30
LEGACY_PATHS = r"^/(requests|subject)(/|$)"
ADDRESS = "jane.private@example.com"


@pytest.fixture
def client(crm_only_service: DsrService) -> Iterator[TestClient]:
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),))
    app = create_app(crm_only_service, access, open_store(config_from_settings(crm_only_service.settings)))
    with TestClient(app) as test_client:
        yield test_client


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {OFFICER}"}


def test_every_answer_of_every_operation_matches_the_schema(tmp_path: Path) -> None:
    """Schemathesis (every check, seed 1) as officer, auditor and subject: 0 failures."""
    with seeded_api(tmp_path / "api") as api:
        # The unversioned paths are the very /v1 routes again (deprecated): fuzzed in `make chaos` only.
        schema = httpx.get(f"{api.base_url}/openapi.json", timeout=30).json()
        legacy = sum(1 for path, item in schema["paths"].items() if re.match(LEGACY_PATHS, path) for _ in item)
        public = sum(1 for path, item in schema["paths"].items() if re.match(PUBLIC_PATHS, path) for _ in item)
        results = run_roles(api, max_examples=3, seed=1, report_dir=tmp_path, timeout=300, at_once=True,
                            exclude_path_regex=LEGACY_PATHS)
    failed = {role: result.stdout[-6000:] for role, result in results.items() if result.returncode != 0}
    assert set(results) == set(ROLES)
    assert not failed, "\n\n".join(f"== as {role}\n{report}" for role, report in failed.items())
    assert public >= 13 and "enabled = false" not in CONFIG  # every OpenDSR operation is in the run...
    for role, result in results.items():  # ...and it did test every operation: the public door as one role
        selected, total = map(int, re.search(r"Selected: (\d+)/(\d+)", result.stdout).groups())
        tested = int(re.search(r"Tested: (\d+)", result.stdout).group(1))
        left_out = legacy + (0 if role == PUBLIC_ROLE else public)
        assert tested == selected == total - left_out, (role, tested, selected, total)


@pytest.mark.parametrize("body", [
    {"type": ADDRESS, "email": "a@example.com", "regime": "gdpr"},  # an enum refusal quotes the value
    {"type": "access", "email": ADDRESS, "regime": "gdpr", "country": ADDRESS},  # a pattern refusal does too
    {"type": "access", "email": ADDRESS, "regime": "gdpr", "received": ADDRESS},
    {"type": "access", "email": ADDRESS, "regime": "gdpr", ADDRESS: True},  # an extra field, named by its key
])
def test_a_422_never_echoes_the_value_that_was_sent(client: TestClient, body: dict[str, Any]) -> None:
    answer = client.post("/requests", headers=_auth(), json=body)
    assert answer.status_code == 422, answer.text
    problems = answer.json()["detail"]
    assert problems and all(set(p) == {"loc", "msg", "type"} for p in problems), problems
    values = [p for p in problems if p["loc"][-1] != ADDRESS]  # an extra key's name is where, not what
    assert ADDRESS not in json.dumps(values) and all(p["loc"][0] == "body" for p in problems)


def test_a_422_from_the_query_and_a_bad_id_say_where_without_the_value(client: TestClient) -> None:
    bad_status = client.get("/requests", headers=_auth(), params={"status": ADDRESS})
    assert bad_status.status_code == 422 and ADDRESS not in bad_status.text
    assert bad_status.json()["detail"][0]["loc"] == ["query", "status"]
    bad_id = client.get(f"/requests/{ADDRESS}", headers=_auth())
    assert bad_id.status_code == 400 and ADDRESS not in bad_id.text and "request_id" in bad_id.text


def test_405_names_every_method_the_path_serves(client: TestClient) -> None:
    """GET and POST /requests are two routes; a 405 must name both, as the schema does."""
    answer = client.request("PUT", "/requests", headers=_auth())
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "POST"}
    options = client.request("OPTIONS", "/requests/00000000-0000-4000-8000-000000000000/cancel")
    assert options.status_code == 405 and "POST" in options.headers["allow"]


def test_the_schema_declares_auth_constraints_and_every_status(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "An officer or auditor token (config/access.yaml), or a subject token."}
    operations = {(method.upper(), path): op for path, item in schema["paths"].items() for method, op in item.items()}
    ours = {key: op for key, op in operations.items() if not key[1].startswith("/opendsr")}
    versioned = {(method, path.removeprefix("/v1")) for method, path in ours if path.startswith("/v1/")}
    legacy = {key for key in ours if not key[1].startswith("/v1/")}
    assert len(versioned) == 13 and legacy == versioned  # the first release's paths still answer...
    assert all(ours[key].get("deprecated") is True for key in legacy)  # ...marked deprecated
    assert not any(op.get("deprecated") for key, op in ours.items() if key not in legacy)
    for (method, path), op in ours.items():
        assert op["security"] == [{"bearer": []}], (method, path)
        assert {"401", "403"} <= set(op["responses"]), (method, path)
        assert op.get("tags"), (method, path)
        for parameter in op.get("parameters", []):
            if parameter["name"] == "request_id":
                assert parameter["schema"]["pattern"] and {"400", "404"} <= set(op["responses"]), (method, path)
        if "requestBody" in op:
            assert {"400", "413", "422"} <= set(op["responses"]), (method, path)
    listing = {p["name"]: p["schema"] for p in ours[("GET", "/requests")]["parameters"]}
    assert "#/components/schemas/RequestType" in str(listing["type"])
    assert "#/components/schemas/Status" in str(listing["status"])
    assert "awaiting_verification" in schema["components"]["schemas"]["Status"]["enum"]
    for path in ("/requests/{request_id}/bundle", "/requests/{request_id}/bundle/verify"):
        verdict = ours[("GET", path)]["responses"]["409"]["content"]["application/json"]["schema"]
        assert {"$ref": "#/components/schemas/IntegrityVerdict"} in verdict["anyOf"]
    assert set(schema["components"]["schemas"]["IntegrityVerdict"]["required"]) == {"detail", "check"}


def test_an_opendsr_time_before_year_one_in_utc_is_refused_naming_the_field(crm_only_service: DsrService) -> None:
    """0001-01-01T00:00:03+04:00 is well-formed RFC 3339 but falls before year 1 in UTC, where the ledger
    keeps it: a 400 naming submitted_time, not a server error."""
    # E-mail is configured (the intake refuses all with a 503 otherwise); the refused body sends nothing.
    smtp = SmtpConfig(host="127.0.0.1", port=9, starttls=False, sender="privacy@example.com",
                      recipients=("privacy@example.com",), timeout_seconds=1)
    app = create_app(crm_only_service, AccessConfig(tokens=()), open_store(config_from_settings(
        crm_only_service.settings)), intake_smtp=lambda: smtp)
    body = EXAMPLE | {"subject_request_id": str(uuid.uuid4()), "submitted_time": "0001-01-01T00:00:03+04:00"}
    with TestClient(app) as client:
        answer = client.post("/opendsr/v2/requests", json=body)
    assert answer.status_code == 400, answer.text
    assert [e["message"].split(":")[0] for e in answer.json()["error"]["errors"]] == ["submitted_time"]
