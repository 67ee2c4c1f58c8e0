"""Systems where a person does the step (Wistia has no delete or update API): a task is opened only
where there is something to do, and a legal hold opens no erasure task at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from connectors.registry import build_connector
from dsr.holds import add_hold
from dsr.models import Status, parse_new_request
from dsr.run import RequestRunner, RunOutcome
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.crm_seed import ACCESS_SUBJECT
from sandbox.kit import SandboxServer

REPO = Path(__file__).resolve().parent.parent
NOBODY = "nobody.at.all@example.org"


@pytest.fixture
def wistia_service(tmp_path: Path, sandboxes: dict[str, SandboxServer]) -> Iterator[DsrService]:
    wistia = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())["systems"]["wistia"]
    path = tmp_path / "systems.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"wistia": wistia}}))
    service = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                                  identity_key="test-identity-key"))
    yield service
    service.close()


def _run(service: DsrService, kind: str, email: str) -> tuple[str, RunOutcome]:
    new = parse_new_request(type=kind, email=email, regime="gdpr", received=datetime.now(UTC))
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="code returned")
    runner = RequestRunner(service)
    plan = runner.begin(request_id)
    config = service.data_map.systems["wistia"]
    for system in plan.systems:
        runner.run_system(request_id, system, lambda: build_connector("wistia", config.kind, config.settings))
    return request_id, runner.finish(request_id)


@pytest.mark.parametrize("kind", ["erasure", "objection"])
def test_no_task_when_discovery_found_nothing(wistia_service: DsrService, kind: str) -> None:
    request_id, outcome = _run(wistia_service, kind, NOBODY)
    assert outcome.status == Status.COMPLETED, outcome.reason
    system = wistia_service.state(request_id).systems["wistia"]
    assert system.found == 0 and system.task is None


def test_a_task_where_there_are_records(wistia_service: DsrService) -> None:
    request_id, outcome = _run(wistia_service, "objection", ACCESS_SUBJECT)
    assert outcome.status == Status.AWAITING_MANUAL_ACTION
    task = wistia_service.state(request_id).systems["wistia"].task or {}
    assert task["step"] == "suppress" and task["done"] is False


def test_a_held_subject_gets_no_erasure_task(wistia_service: DsrService) -> None:
    add_hold(wistia_service, email=ACCESS_SUBJECT, ref="LIT-9", reason="regulator inquiry")
    request_id, outcome = _run(wistia_service, "erasure", ACCESS_SUBJECT)
    assert outcome.status == Status.COMPLETED, outcome.reason
    state = wistia_service.state(request_id)
    assert state.systems["wistia"].task is None and state.held == {"wistia": ["LIT-9"]}
    assert state.systems["wistia"].found > 0
