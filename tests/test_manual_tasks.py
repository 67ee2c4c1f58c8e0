"""Manual tasks: a system with no API (the website portal) makes the request wait for a person,
who is told what to do and by when, is chased when late, and whose recorded work completes it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
import yaml

from dsr.ledger.texts import text_reference, text_sha256
from dsr.models import RequestInputError, Status, parse_new_request
from dsr.run import RequestRunner
from dsr.service import DsrService, RequestStateError
from dsr.settings import Settings
from dsr.sweep import sweep
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from tests.conftest import REPO
from tests.test_execution import _connect


@pytest.fixture
def portal_service(tmp_path: Path, systems_file: Path) -> Iterator[DsrService]:
    """The test data map plus the demo's manual portal system."""
    data = yaml.safe_load(systems_file.read_text())
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    data["systems"]["portal"] = demo["systems"]["portal"]
    path = tmp_path / "systems-with-portal.yaml"
    path.write_text(yaml.safe_dump(data))
    service = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                                  identity_key="test-identity-key"))
    yield service
    service.close()


def _request(service: DsrService, kind: str, email: str) -> str:
    new = parse_new_request(type=kind, email=email, regime="gdpr", received=datetime.now(UTC))
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="ok")
    return request_id


def _run(service: DsrService, request_id: str):
    runner = RequestRunner(service)
    for system in runner.begin(request_id).systems:
        runner.run_system(request_id, system, _connect(service, system))
    return runner.finish(request_id)


def test_erasure_waits_for_the_portal_task_then_completes_when_it_is_done(portal_service: DsrService) -> None:
    request_id = _request(portal_service, "erasure", ERASURE_SUBJECT)
    outcome = _run(portal_service, request_id)
    assert outcome.status == Status.AWAITING_MANUAL_ACTION
    assert "portal" in (outcome.reason or "") and "web-team" in (outcome.reason or "")
    assert outcome.bundle_path is None  # nothing to seal until the request has an outcome
    state = portal_service.state(request_id)
    task = state.systems["portal"].task
    assert task["step"] == "erase" and task["assignee"] == "web-team" and "delete the account" in task["instructions"]
    assert date.fromisoformat(task["due"]) == date.fromisoformat(state.due) - timedelta(days=5)
    assert {n: s.status.value for n, s in state.systems.items()}["crm"] == "completed"

    again = _run(portal_service, request_id)  # nothing happens while the person has not answered
    assert again.status == Status.AWAITING_MANUAL_ACTION
    assert sum(e.type == "task.opened" for e in portal_service.events(request_id)) == 1

    portal_service.task_done(request_id, "portal", note="account and saved quotes deleted", actor="web-team")
    done = _run(portal_service, request_id)
    assert done.status == Status.COMPLETED and done.bundle_path is not None
    with zipfile.ZipFile(done.bundle_path) as bundle:
        portal = json.loads(bundle.read("systems/portal.json"))
        timeline = bundle.read("timeline.jsonl").decode()
    # The bundle names the note by its hash (it stays redactable beside the chain); the service shows the words.
    note = "account and saved quotes deleted"
    assert portal["manual_task"]["done"] is True and portal["manual_task"]["note"] == text_reference(text_sha256(note))
    assert note not in timeline
    assert portal_service.state(request_id).systems["portal"].task["note"] == note
    assert portal["post_erasure_requery"]["proof"].startswith("confirmed by web-team")
    assert "task.opened" in timeline and "task.done" in timeline


def test_access_request_packages_the_file_the_person_attached(portal_service: DsrService, tmp_path: Path) -> None:
    request_id = _request(portal_service, "access", ACCESS_SUBJECT)
    assert _run(portal_service, request_id).status == Status.AWAITING_MANUAL_ACTION
    export = tmp_path / "portal account.csv"
    export.write_text("account,quotes\nG. Hopper,3\n")
    state = portal_service.task_done(request_id, "portal", note="exported from the admin", attachments=[export])
    [attachment] = state.systems["portal"].task["attachments"]
    assert attachment["name"] == "portal_account.csv" and len(attachment["sha256"]) == 64
    outcome = _run(portal_service, request_id)
    assert outcome.status == Status.COMPLETED
    with zipfile.ZipFile(outcome.package_path) as package:
        assert package.read("attachments/portal/portal_account.csv") == export.read_bytes()
        assert "portal" in json.loads(package.read("data.json"))["systems"]


def test_task_done_is_refused_where_there_is_nothing_to_do(portal_service: DsrService, tmp_path: Path) -> None:
    request_id = _request(portal_service, "erasure", ERASURE_SUBJECT)
    with pytest.raises(RequestStateError, match="no manual task"):
        portal_service.task_done(request_id, "portal", note="done")
    _run(portal_service, request_id)
    with pytest.raises(RequestInputError, match="^note: "):
        portal_service.task_done(request_id, "portal", note="deleted ada.lovelace@example.com")
    with pytest.raises(RequestInputError, match="^attach: "):
        portal_service.task_done(request_id, "portal", note="done", attachments=[tmp_path / "missing.csv"])
    portal_service.task_done(request_id, "portal", note="done")
    with pytest.raises(RequestStateError, match="already done"):
        portal_service.task_done(request_id, "portal", note="again")


def test_a_late_manual_task_is_escalated_like_a_request(portal_service: DsrService) -> None:
    request_id = _request(portal_service, "erasure", ERASURE_SUBJECT)
    _run(portal_service, request_id)
    task_due = date.fromisoformat(portal_service.state(request_id).systems["portal"].task["due"])
    with time_machine.travel(datetime.combine(task_due + timedelta(days=1), datetime.min.time(), UTC)
                             + timedelta(hours=12), tick=False):
        raised = sweep(portal_service, []).raised
    summaries = [s for _, level, s in raised if level == "escalation"]
    assert any(s.startswith("manual task in portal was due") for s in summaries)
    alert = next(a for a in portal_service.state(request_id).alerts.values() if a["kind"] == "manual_task")
    assert "web-team" in alert["owners"]
