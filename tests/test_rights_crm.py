"""Every right the privacy policy promises, carried out in the company's CRM (the demo SQLite
database, the real connector, no Prefect): what the subject and the privacy office would notice."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from connectors.registry import build_connector
from dsr.contract import Connector, Subject
from dsr.holds import add_hold, release_hold
from dsr.models import RequestInputError, Status, parse_new_request
from dsr.rights import lift_restriction, restricted_subjects
from dsr.run import RequestRunner, RunOutcome
from dsr.service import DsrService, RequestStateError
from dsr.state import EventType
from sandbox.crm_seed import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT, LOOKALIKE_EMAILS

NEW_ADDRESS = "ada.king@example.net"


def _connect(service: DsrService, system: str = "crm") -> Callable[[], Connector]:
    config = service.data_map.systems[system]
    return lambda: build_connector(system, config.kind, config.settings)


def _request(service: DsrService, kind: str, email: str, *, regime: str = "gdpr", verify: bool = True,
             changes: dict[str, str] | None = None) -> str:
    new = parse_new_request(type=kind, email=email, regime=regime, received=datetime.now(UTC), channel="email",
                            changes=changes)
    request_id = service.submit(new).state.request_id
    if verify:
        service.verify(request_id, method="email-code", note="code returned")
    return request_id


def _run(service: DsrService, request_id: str) -> RunOutcome:
    runner = RequestRunner(service)
    plan = runner.begin(request_id)
    for system in plan.systems:
        runner.run_system(request_id, system, _connect(service, system))
    return runner.finish(request_id)


def _rows(service: DsrService, sql: str, *params: object) -> list[tuple]:
    url = service.data_map.systems["crm"].settings["url"]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql, params).fetchall()


def _decoys(service: DsrService) -> list[tuple]:
    """Every row of the decoy addresses and of Ada's namesakes (same name, another address)."""
    emails = (*DECOY_EMAILS, *LOOKALIKE_EMAILS)
    marks = ",".join("?" * len(emails))
    rows = (_rows(service, f"SELECT * FROM contacts WHERE email IN ({marks}) ORDER BY id", *emails)
            + _rows(service, f"SELECT * FROM newsletter_subscriptions WHERE email IN ({marks}) ORDER BY id", *emails)
            + _rows(service, f"SELECT * FROM leads WHERE email IN ({marks}) ORDER BY id", *emails))
    assert sum(1 for r in rows if "Ada" in str(r)) >= 2  # the namesakes are there
    return rows


def _marketing(service: DsrService, email: str) -> tuple[list[int], list[str]]:
    opt_in = [r[0] for r in _rows(service, "SELECT marketing_opt_in FROM contacts WHERE lower(trim(email)) = ?", email)]
    status = [r[0] for r in _rows(service, "SELECT status FROM newsletter_subscriptions "
                                           "WHERE lower(trim(email)) = ?", email)]
    return opt_in, status


def test_rectification_corrects_exactly_the_subjects_rows_and_rekeys_the_address(
        crm_only_service: DsrService) -> None:
    service = crm_only_service
    decoys = _decoys(service)
    request_id = _request(service, "rectification", ERASURE_SUBJECT,
                          changes={"first_name": "Augusta Ada", "email": NEW_ADDRESS, "title": "Countess"})
    outcome = _run(service, request_id)
    assert outcome.status == Status.COMPLETED, outcome.reason
    assert _rows(service, "SELECT first_name, title FROM contacts WHERE email = ?", NEW_ADDRESS) == [
        ("Augusta Ada", "Countess")]
    assert _rows(service, "SELECT count(*) FROM contacts WHERE lower(trim(email)) = ?", ERASURE_SUBJECT) == [(0,)]
    # Every object that ties to the person by address now ties by the new one (leads, newsletter, chat).
    connector = _connect(service)()
    found = connector.discover(Subject(NEW_ADDRESS, service.identity_hash(NEW_ADDRESS)))
    assert {r.object for r in found} >= {"contacts", "leads", "newsletter_subscriptions", "chat_transcripts"}
    assert _decoys(service) == decoys
    events = service.events(request_id)
    text = json.dumps([e.to_dict() for e in events])
    assert "Augusta" not in text and "Countess" not in text and NEW_ADDRESS not in text
    rectified = next(e.payload for e in events if e.type == EventType.SYSTEM_RECTIFIED)
    assert rectified["fields_changed"] == ["email", "first_name", "title"]
    contact = next(o for o in rectified["outcomes"] if o["record"].startswith("crm/contacts/"))
    assert {c["field"] for c in contact["changes"]} == {"email", "first_name", "title"}
    assert all(c["old_hash"].startswith("hmac-sha256:") and c["new_hash"] != c["old_hash"]
               for c in contact["changes"])
    rekeyed = next(e.payload for e in events if e.type == EventType.IDENTITY_REKEYED)
    assert rekeyed["previous_identity_hash"] == service.identity_hash(ERASURE_SUBJECT)
    assert rekeyed["identity_hash"] == service.identity_hash(NEW_ADDRESS)
    assert events[0].payload["identity_hash"] == service.identity_hash(ERASURE_SUBJECT)  # the old hash stays


def test_a_rerun_of_a_rectification_changes_nothing_more(crm_only_service: DsrService) -> None:
    request_id = _request(crm_only_service, "rectification", ACCESS_SUBJECT, changes={"phone": "+1 555 0100"})
    assert _run(crm_only_service, request_id).status == Status.COMPLETED
    before = len(crm_only_service.events(request_id))
    assert _run(crm_only_service, request_id).status == Status.COMPLETED
    assert len(crm_only_service.events(request_id)) == before
    assert _rows(crm_only_service, "SELECT phone FROM contacts WHERE email = ?", ACCESS_SUBJECT) == [("+1 555 0100",)]


@pytest.mark.parametrize("changes, field", [
    ({"shoe_size": "42"}, "changes.shoe_size"),
    ({"email": "not-an-address"}, "changes.email"),
    ({"email": "a@b"}, "changes.email"),
    ({"phone": "call me maybe"}, "changes.phone"),
    ({"first_name": "   "}, "changes.first_name"),
    ({}, "changes"),
])
def test_bad_corrections_are_refused_naming_the_field(changes: dict[str, str], field: str) -> None:
    with pytest.raises(RequestInputError) as caught:
        parse_new_request(type="rectification", email=ERASURE_SUBJECT, regime="gdpr",
                          received=datetime.now(UTC), changes=changes)
    assert caught.value.field == field


@pytest.mark.parametrize("kind", ["objection", "consent_withdrawal"])
def test_objection_and_withdrawn_consent_stop_marketing_and_keep_the_data(crm_only_service: DsrService,
                                                                          kind: str) -> None:
    service = crm_only_service
    decoys = _decoys(service)
    rows_before = _rows(service, "SELECT count(*) FROM contacts")
    assert _marketing(service, ERASURE_SUBJECT) == ([1], ["subscribed"])
    request_id = _request(service, kind, ERASURE_SUBJECT)
    outcome = _run(service, request_id)
    assert outcome.status == Status.COMPLETED, outcome.reason
    assert _marketing(service, ERASURE_SUBJECT) == ([0], ["unsubscribed"])
    assert _rows(service, "SELECT count(*) FROM contacts") == rows_before
    assert _decoys(service) == decoys
    suppressed = next(e.payload for e in service.events(request_id) if e.type == EventType.SYSTEM_SUPPRESSED)
    flags = {c["vendor_field"]: (c["old"], c["new"]) for o in suppressed["outcomes"] for c in o["changes"]}
    assert flags == {"contacts.marketing_opt_in": ("true", "false"),
                     "newsletter_subscriptions.status": ("subscribed", "unsubscribed")}


def test_ccpa_opt_out_runs_without_verification_within_15_business_days(crm_only_service: DsrService) -> None:
    request_id = _request(crm_only_service, "opt_out", ERASURE_SUBJECT, regime="ccpa", verify=False)
    deadline = crm_only_service.state(request_id).deadline or {}
    assert deadline["rule"].startswith("ccpa/11ccr7026")
    assert deadline["extension_available"] is False
    business_days = sum(1 for n in range(1, 30) if (date.fromisoformat(deadline["clock_start"]).toordinal() + n)
                        <= date.fromisoformat(deadline["due"]).toordinal()
                        and date.fromordinal(date.fromisoformat(deadline["clock_start"]).toordinal() + n).weekday() < 5)
    assert 15 <= business_days <= 17  # 15 business days; federal holidays may add one or two
    outcome = _run(crm_only_service, request_id)
    assert outcome.status == Status.COMPLETED, outcome.reason
    assert _marketing(crm_only_service, ERASURE_SUBJECT) == ([0], ["unsubscribed"])


def test_a_type_the_regime_does_not_offer_is_refused_naming_type(crm_only_service: DsrService) -> None:
    with pytest.raises(RequestInputError) as caught:
        _request(crm_only_service, "opt_out", ERASURE_SUBJECT, regime="gdpr")
    assert caught.value.field == "type"
    with pytest.raises(RequestInputError) as caught:
        _request(crm_only_service, "restriction", ERASURE_SUBJECT, regime="ccpa")
    assert caught.value.field == "type"


def test_restriction_keeps_records_from_the_purge_and_its_lift_restores_exactly(
        crm_only_service: DsrService) -> None:
    service = crm_only_service
    # Grace had already unsubscribed from the newsletter: a lift must not subscribe her again.
    assert _marketing(service, ACCESS_SUBJECT) == ([0], ["unsubscribed"])
    _rows(service, "SELECT 1")  # the CRM file exists
    url = service.data_map.systems["crm"].settings["url"].removeprefix("sqlite:///")
    with sqlite3.connect(url) as conn:
        conn.execute("UPDATE contacts SET marketing_opt_in = 1 WHERE email = ?", (ACCESS_SUBJECT,))
    request_id = _request(service, "restriction", ACCESS_SUBJECT)
    assert _run(service, request_id).status == Status.COMPLETED
    assert _marketing(service, ACCESS_SUBJECT) == ([0], ["unsubscribed"])
    assert [rid for rid, _ in restricted_subjects(service)] == [request_id]

    runner = RequestRunner(service)
    with pytest.raises(RequestInputError):
        lift_restriction(runner, request_id, reason="", actor="officer", connect=lambda s: _connect(service, s)())
    result = lift_restriction(runner, request_id, reason="accuracy confirmed", actor="officer",
                              connect=lambda s: _connect(service, s)())
    assert result.restored == ("crm",) and not result.failed
    assert _marketing(service, ACCESS_SUBJECT) == ([1], ["unsubscribed"])
    assert restricted_subjects(service) == []
    state = service.state(request_id)
    assert state.restriction_lifted and state.status == Status.COMPLETED
    assert len(state.bundles) == 2  # the evidence was sealed again with the lift in it
    with pytest.raises(RequestStateError, match="already lifted"):
        lift_restriction(runner, request_id, reason="again", actor="officer", connect=lambda s: _connect(service, s)())


def test_a_legal_hold_stops_an_erasure_until_it_is_released(crm_only_service: DsrService) -> None:
    service = crm_only_service
    count = "SELECT count(*) FROM contacts WHERE lower(trim(email)) = ?"
    add_hold(service, email=ACCESS_SUBJECT, ref="LIT-2026-014", reason="pending litigation")
    request_id = _request(service, "erasure", ACCESS_SUBJECT)
    outcome = _run(service, request_id)
    assert outcome.status == Status.COMPLETED
    assert _rows(service, count, ACCESS_SUBJECT) == [(1,)]  # nothing erased
    state = service.state(request_id)
    assert state.held == {"crm": ["LIT-2026-014"]}
    assert state.to_view()["legal_holds"] == {"crm": ["LIT-2026-014"]}
    exemptions = state.systems["crm"].exemptions
    assert exemptions and all("17(3)(e)" in e["basis"] and "LIT-2026-014" in e["basis"] for e in exemptions)

    release_hold(service, ref="LIT-2026-014", reason="case settled")
    reopened = service.state(request_id)
    assert reopened.status == Status.IN_PROGRESS and reopened.held == {}
    outcome = _run(service, request_id)
    assert outcome.status == Status.COMPLETED, outcome.reason
    assert _rows(service, count, ACCESS_SUBJECT) == [(0,)]
    assert len(service.state(request_id).bundles) == 2


def test_the_package_summary_names_systems_and_records_as_the_privacy_policy_does(
        crm_only_service: DsrService) -> None:
    import zipfile

    request_id = _request(crm_only_service, "access", ACCESS_SUBJECT)
    outcome = _run(crm_only_service, request_id)
    assert outcome.status == Status.COMPLETED and outcome.package_path is not None
    with zipfile.ZipFile(outcome.package_path) as package:
        summary = package.read("summary.txt").decode()
    assert "Precision customer records (website account, quotes, orders)" in summary
    assert "Your account and contact details: 1" in summary and "Website chat messages: 1" in summary
    assert "  - crm:" not in summary and "web_analytics_events" not in summary


@pytest.fixture
def any_ledger_service(tmp_path, crm_url: str, ledger_url: str):
    """The CRM-only data map on a ledger of each kind (SQLite and PostgreSQL)."""
    from pathlib import Path

    import yaml

    from dsr.ledger.store import Ledger
    from dsr.settings import Settings
    from dsr.state import index_row

    repo = Path(__file__).resolve().parent.parent
    crm = yaml.safe_load((repo / "config" / "demo" / "systems.yaml").read_text())["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    path = tmp_path / "systems-crm.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    settings = Settings(home=tmp_path / "var", config_dir=repo / "config", systems_file=path,
                        identity_key="test-identity-key")
    service = DsrService(settings, Ledger(ledger_url, projector=index_row))
    yield service
    service.close()


def test_rekeying_holds_and_restrictions_on_each_ledger(any_ledger_service: DsrService) -> None:
    service = any_ledger_service
    request_id = _request(service, "rectification", ERASURE_SUBJECT, changes={"email": NEW_ADDRESS})
    assert _run(service, request_id).status == Status.COMPLETED
    assert service.ledger.verify(request_id) == len(service.events(request_id))
    assert any(e.type == EventType.IDENTITY_REKEYED for e in service.events(request_id))
    restriction = _request(service, "restriction", ACCESS_SUBJECT)
    assert _run(service, restriction).status == Status.COMPLETED
    assert [rid for rid, _ in restricted_subjects(service)] == [restriction]
    add_hold(service, email=ACCESS_SUBJECT, ref="H-1", reason="claim")
    erasure = _request(service, "erasure", ACCESS_SUBJECT)
    assert _run(service, erasure).status == Status.COMPLETED
    release_hold(service, ref="H-1", reason="over")
    assert service.state(erasure).status == Status.IN_PROGRESS
    audit = service.ledger.audit()  # every chain, the rectified address's identity row included
    assert audit.problems == [], audit.problems


def test_a_hold_placed_after_planning_but_before_erasing_still_stops_the_erasure(
        crm_only_service: DsrService) -> None:
    service = crm_only_service
    request_id = _request(service, "erasure", ACCESS_SUBJECT)

    class FailsToErase:
        """The CRM, except that its erase fails once (the vendor was down)."""

        def __init__(self, inner: Connector) -> None:
            self._inner = inner

        def __getattr__(self, name: str):  # noqa: ANN204 - delegate everything else
            return getattr(self._inner, name)

        def erase(self, decisions):  # noqa: ANN001, ANN201
            raise RuntimeError("CRM unavailable")

    runner = RequestRunner(service)
    runner.begin(request_id)
    runner.run_system(request_id, "crm", lambda: FailsToErase(_connect(service)()))
    assert runner.finish(request_id).status == Status.PARTIALLY_COMPLETED  # planned, nothing erased
    add_hold(service, email=ACCESS_SUBJECT, ref="LATE-1", reason="claim received after the plan")
    outcome = _run(service, request_id)
    assert outcome.status == Status.COMPLETED
    assert service.state(request_id).held == {"crm": ["LATE-1"]}
    assert _rows(service, "SELECT count(*) FROM contacts WHERE email = ?", ACCESS_SUBJECT) == [(1,)]


def test_the_retention_purge_holds_back_a_restricted_subjects_records(crm_only_service: DsrService) -> None:
    from dsr.retention import Purger

    service = crm_only_service

    def connect(name: str) -> Connector:
        return _connect(service, name)()

    def held_back() -> int:
        return sum(t.held_back for t in Purger(service, connect).run(dry_run=True).tallies)

    before = held_back()
    request_id = _request(service, "restriction", ERASURE_SUBJECT)
    assert _run(service, request_id).status == Status.COMPLETED
    # Ada's expired records (a 2016 order and its invoice, an old lead...) are held back now.
    restricted = held_back()
    assert restricted > before
    lift_restriction(RequestRunner(service), request_id, reason="resolved", actor="officer", connect=connect)
    assert held_back() == before
