"""The real `process-request` Prefect flow and the `dsr run` / `dsr demo` commands end to end.

These share one Prefect test server per session (marker `prefect`; `make test-fast` skips them).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsr.bundle import verify_bundle
from dsr.models import parse_new_request
from dsr.run import NotVerified
from dsr.service import DsrService
from dsr.signing import load_or_create_signing_key
from flows import runtime
from sandbox.crm_seed import ERASURE_SUBJECT

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def flow_service(sqlite_service: DsrService):
    runtime.use_service(sqlite_service)
    yield sqlite_service
    runtime.use_service(None)


def _verified(service: DsrService, kind: str = "erasure") -> str:
    new = parse_new_request(type=kind, email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="code returned")
    return request_id


def test_flow_carries_out_an_erasure_and_a_second_run_adds_nothing(flow_service: DsrService) -> None:
    from flows.request import process_request

    request_id = _verified(flow_service)
    result = process_request(request_id)
    assert result["status"] == "completed"
    assert [s["system"] for s in result["systems"]] == ["crm", "google_ads", "hubspot", "linkedin", "netsuite", "salesforce"]
    assert all(s["remaining"] == 0 for s in result["systems"])
    signer = load_or_create_signing_key(flow_service.settings.signing_key_path)
    assert verify_bundle(Path(result["bundle"]), signer.public_key).ok
    count = len(flow_service.events(request_id))
    again = process_request(request_id)
    assert again["status"] == "completed" and len(flow_service.events(request_id)) == count


def test_flow_refuses_an_unverified_request(flow_service: DsrService) -> None:
    from flows.request import process_request

    new = parse_new_request(type="erasure", email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    request_id = flow_service.submit(new).state.request_id
    with pytest.raises(NotVerified):
        process_request(request_id)
    assert flow_service.state(request_id).systems == {}


def _cli_env(tmp_path: Path, systems_file: Path) -> dict[str, str]:
    return {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
            "DSR_SYSTEMS_FILE": str(systems_file), "DSR_IDENTITY_KEY": "cli-test-key"}


def test_dsr_run_prints_results_and_exits_zero_when_completed(tmp_path: Path, systems_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from doors.cli import app

    for key, value in _cli_env(tmp_path, systems_file).items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    submitted = runner.invoke(app, ["submit", "--type", "erasure", "--email", ERASURE_SUBJECT, "--regime", "gdpr"])
    request_id = submitted.output.splitlines()[0]
    assert runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "ok"]).exit_code == 0
    ran = runner.invoke(app, ["run", request_id])
    assert ran.exit_code == 0, ran.output
    assert "completed" in ran.output and "crm" in ran.output and "evidence bundle:" in ran.output
    bundle = ran.output.split("evidence bundle: ")[1].split()[0]
    checked = runner.invoke(app, ["bundle", "verify", bundle])
    assert checked.exit_code == 0 and "bundle intact" in checked.output


def test_demo_runs_end_to_end_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from doors.cli import app

    monkeypatch.chdir(tmp_path)  # the demo's data map points at ./var/demo/crm.sqlite
    monkeypatch.setenv("DSR_CONFIG_DIR", str(REPO / "config"))
    monkeypatch.setenv("DSR_SYSTEMS_FILE", str(REPO / "config" / "demo" / "systems.yaml"))
    monkeypatch.delenv("DSR_HOME", raising=False)
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["demo"])
        assert result.exit_code == 0, result.output
        assert result.output.count("evidence bundle verifies: yes") == 8  # one request of every type
        assert "subject package:" in result.output and "restriction lifted" in result.output
    assert len(list((tmp_path / "var" / "bundles").iterdir())) == 16
    assert os.path.exists(tmp_path / "var" / "ledger.sqlite")
