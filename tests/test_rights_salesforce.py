"""Rectification, marketing suppression and its restore in Salesforce: the real connector over the
real simple-salesforce and HTTP against the sandbox org, as the demo data map configures it.
Ada's look-alikes (same name, another address) and the decoy addresses must come out untouched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.registry import build_connector
from connectors.salesforce import SalesforceConnector
from dsr.contract import RightsAction, Subject
from dsr.models import Status, parse_new_request
from dsr.rights import lift_restriction
from dsr.run import RequestRunner
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.kit import SandboxServer
from sandbox.salesforce import DECOY_EMAILS, ERASURE_SUBJECT, LOOKALIKE_EMAILS, OrgClient

REPO = Path(__file__).resolve().parent.parent
ADA = Subject(ERASURE_SUBJECT, "hash-ada")
NEW_ADDRESS = "ada.king@example.net"
FLAGS = "HasOptedOutSolicit, HasOptedOutTracking, HasOptedOutProfiling, HasOptedOutProcessing, HasOptedOutGeoTracking"


def _demo_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())["systems"]["salesforce"]


@pytest.fixture
def connector(sandboxes: dict[str, SandboxServer]) -> Iterator[SalesforceConnector]:
    config = _demo_config()
    built = build_connector("salesforce", config["kind"], config["settings"])
    assert isinstance(built, SalesforceConnector)
    yield built
    built.close()


@pytest.fixture
def org(sandboxes: dict[str, SandboxServer]) -> OrgClient:
    return OrgClient(sandboxes["salesforce"].url)


@pytest.fixture
def sf_service(tmp_path: Path, sandboxes: dict[str, SandboxServer]) -> Iterator[DsrService]:
    path = tmp_path / "systems-salesforce.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"salesforce": _demo_config()}}))
    service = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                                  identity_key="test-identity-key"))
    yield service
    service.close()


def _bystanders(org: OrgClient) -> list[dict[str, Any]]:
    """Every field a right could change, of everyone who is not Ada (look-alikes and decoys)."""
    emails = ", ".join("'" + e.replace("'", "\\'") + "'" for e in (*LOOKALIKE_EMAILS, *DECOY_EMAILS))
    people = org.query(f"SELECT Id, FirstName, LastName, Email, Title, Phone, HasOptedOutOfEmail, IndividualId "
                       f"FROM Contact WHERE Email IN ({emails}) ORDER BY Id")
    people += org.query(f"SELECT Id, FirstName, LastName, Email, Company, HasOptedOutOfEmail, IndividualId "
                        f"FROM Lead WHERE Email IN ({emails}) ORDER BY Id")
    individual_ids = ", ".join(f"'{p['IndividualId']}'" for p in people if p.get("IndividualId"))
    people += org.query(f"SELECT Id, FirstName, LastName, {FLAGS} FROM Individual WHERE Id IN ({individual_ids}) "
                        "ORDER BY Id")
    assert len(people) > 2 * len(DECOY_EMAILS)
    return people


def _ada(org: OrgClient, email: str = ERASURE_SUBJECT) -> dict[str, Any]:
    contact = org.query(f"SELECT Id, FirstName, Email, Title, HasOptedOutOfEmail, IndividualId FROM Contact "
                        f"WHERE Email = '{email}'")
    lead = org.query(f"SELECT Id, FirstName, Email, HasOptedOutOfEmail FROM Lead WHERE Email = '{email}'")
    individual = org.query(f"SELECT Id, FirstName, {FLAGS} FROM Individual WHERE Id = '{contact[0]['IndividualId']}'")
    return {"contact": contact[0], "lead": lead[0], "individual": individual[0]}


def test_rectification_patches_exactly_adas_records(connector: SalesforceConnector, org: OrgClient) -> None:
    before = _bystanders(org)
    refs = connector.discover(ADA)
    changes = {"first_name": "Augusta Ada", "email": NEW_ADDRESS, "title": "Countess of Lovelace"}
    receipt = connector.rectify(refs, changes)
    assert receipt.action is RightsAction.RECTIFY and not receipt.failed
    changed = {o.ref.object: {c.field for c in o.changes} for o in receipt.outcomes if o.changes}
    assert changed["Contact"] == {"first_name", "email", "title"}
    assert changed["Lead"] == {"first_name", "email", "title"}
    assert changed["Individual"] == {"first_name"}
    assert "email" in next(o.not_held for o in receipt.outcomes if o.ref.object == "Individual")
    assert connector.verify_rectified(refs, changes) == []
    ada = _ada(org, NEW_ADDRESS)
    assert ada["contact"]["FirstName"] == "Augusta Ada" and ada["contact"]["Title"] == "Countess of Lovelace"
    assert ada["lead"]["FirstName"] == "Augusta Ada" and ada["individual"]["FirstName"] == "Augusta Ada"
    assert {r.object for r in connector.discover(Subject(NEW_ADDRESS, "hash-new"))} >= {"Contact", "Lead"}
    # Under the old address only the web-to-case address the subject typed is left (history, tied by ContactId).
    assert {r.object for r in connector.discover(ADA)} == {"Case"}
    assert _bystanders(org) == before
    again = connector.rectify(refs, changes)  # idempotent: nothing left to change
    assert not again.failed and all(not o.changes for o in again.outcomes)


def test_suppression_sets_the_documented_opt_outs_and_restore_puts_back_only_what_changed(
        connector: SalesforceConnector, org: OrgClient) -> None:
    before_bystanders = _bystanders(org)
    before = _ada(org)
    refs = connector.discover(ADA)
    receipt = connector.suppress_marketing(ADA, refs, restrict_processing=True)
    assert receipt.action is RightsAction.SUPPRESS and not receipt.failed
    after = _ada(org)
    assert after["contact"]["HasOptedOutOfEmail"] is True and after["lead"]["HasOptedOutOfEmail"] is True
    individual = after["individual"]
    assert all(individual[f] is True for f in ("HasOptedOutSolicit", "HasOptedOutTracking", "HasOptedOutProfiling",
                                               "HasOptedOutProcessing"))
    assert individual["HasOptedOutGeoTracking"] is before["individual"]["HasOptedOutGeoTracking"]  # not marketing
    assert connector.verify_suppressed(ADA, refs) == []
    assert _bystanders(org) == before_bystanders

    restored = connector.restore_marketing(ADA, receipt.outcomes)
    assert not restored.failed
    assert _ada(org) == before  # exactly the flags as they were, opted-out ones still opted out
    assert _bystanders(org) == before_bystanders


def test_objection_through_the_runner_leaves_processing_allowed(sf_service: DsrService, org: OrgClient) -> None:
    before = _ada(org)
    new = parse_new_request(type="objection", email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    request_id = sf_service.submit(new).state.request_id
    sf_service.verify(request_id, method="email-code", note="code returned")
    runner = RequestRunner(sf_service)
    plan = runner.begin(request_id)
    config = sf_service.data_map.systems["salesforce"]
    for system in plan.systems:
        runner.run_system(request_id, system, lambda: build_connector("salesforce", config.kind, config.settings))
    assert runner.finish(request_id).status == Status.COMPLETED
    after = _ada(org)
    assert after["contact"]["HasOptedOutOfEmail"] is True and after["individual"]["HasOptedOutSolicit"] is True
    assert after["individual"]["HasOptedOutProcessing"] is before["individual"]["HasOptedOutProcessing"]


def test_restriction_and_its_lift_through_the_runner(sf_service: DsrService, org: OrgClient) -> None:
    before = _ada(org)
    new = parse_new_request(type="restriction", email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    request_id = sf_service.submit(new).state.request_id
    sf_service.verify(request_id, method="email-code", note="code returned")
    runner = RequestRunner(sf_service)
    config = sf_service.data_map.systems["salesforce"]

    def connect(system: str = "salesforce") -> Any:
        return build_connector(system, config.kind, config.settings)

    plan = runner.begin(request_id)
    for system in plan.systems:
        runner.run_system(request_id, system, connect)
    assert runner.finish(request_id).status == Status.COMPLETED
    assert _ada(org)["individual"]["HasOptedOutProcessing"] is True
    result = lift_restriction(runner, request_id, reason="the subject's complaint is resolved", actor="officer",
                              connect=connect)
    assert result.restored == ("salesforce",) and not result.failed
    assert _ada(org) == before
