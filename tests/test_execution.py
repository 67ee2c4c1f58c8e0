"""Carrying out requests against the demo CRM, without Prefect: what the privacy office and the
auditor would notice (records gone or anonymised with their basis, decoys untouched, re-runs
that repeat nothing, evidence that verifies, a package the subject can read)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from connectors.registry import build_connector
from dsr.bundle import verify_bundle
from dsr.contract import Connector
from dsr.models import Status, parse_new_request
from dsr.run import NotVerified, RequestRunner
from dsr.service import DsrService, RequestStateError
from dsr.signing import load_or_create_signing_key
from sandbox.crm_seed import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT
from sandbox.hubspot import DECOY_EMAILS as HUBSPOT_DECOYS
from sandbox.hubspot import DEMO_TOKEN as HUBSPOT_TOKEN
from sandbox.salesforce import DECOY_EMAILS as SALESFORCE_DECOYS
from sandbox.salesforce import OrgClient


def _connect(service: DsrService, system: str = "crm") -> Callable[[], Connector]:
    config = service.data_map.systems[system]
    return lambda: build_connector(system, config.kind, config.settings)


def _request(service: DsrService, kind: str, email: str, *, verify: bool = True, regime: str = "gdpr") -> str:
    new = parse_new_request(type=kind, email=email, regime=regime, received=datetime.now(UTC), channel="web-form")
    request_id = service.submit(new).state.request_id
    if verify:
        service.verify(request_id, method="email-code", note="code returned")
    return request_id


def _run(service: DsrService, request_id: str, wrap: dict[str, Callable[[Connector], Connector]] | None = None):
    """Run a request without Prefect; `wrap` swaps a system's connector for a wrapper around it."""
    runner = RequestRunner(service)
    plan = runner.begin(request_id)
    for system in plan.systems:
        connect = _connect(service, system)
        if wrap and system in wrap:
            connect = (lambda c, w: lambda: w(c()))(connect, wrap[system])
        runner.run_system(request_id, system, connect)
    return runner.finish(request_id)


def _crm_rows(crm_url: str, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(crm_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql, params).fetchall()


def _decoy_rows(crm_url: str) -> int:
    marks = ",".join("?" * len(DECOY_EMAILS))
    return _crm_rows(crm_url, f"SELECT count(*) FROM contacts WHERE email IN ({marks})", *DECOY_EMAILS)[0][0]


def test_unverified_request_is_refused_and_the_refusal_is_recorded(sqlite_service: DsrService) -> None:
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT, verify=False)
    with pytest.raises(NotVerified, match="not verified"):
        RequestRunner(sqlite_service).begin(request_id)
    assert sqlite_service.events(request_id)[-1].type == "run.refused"
    assert sqlite_service.state(request_id).status == Status.AWAITING_VERIFICATION


def _hubspot_contacts(sandboxes, email: str) -> int:
    """Ask the HubSpot sandbox through its own search API (as any client would)."""
    sandboxes["hubspot"].vendor.reset_state()  # the test's own look must not eat the 4/s search budget
    answer = requests.post(f"{sandboxes['hubspot'].url}/crm/v3/objects/contacts/search",
                           headers={"Authorization": f"Bearer {HUBSPOT_TOKEN}"}, timeout=10,
                           json={"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ",
                                                                "value": email}]}], "limit": 10})
    answer.raise_for_status()
    return int(answer.json()["total"])


def test_erasure_deletes_the_subject_anonymises_tax_records_and_spares_decoys(
        sqlite_service: DsrService, crm_url: str, sandboxes) -> None:
    decoys_before = _decoy_rows(crm_url)
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT)
    outcome = _run(sqlite_service, request_id)

    assert outcome.status == Status.COMPLETED, outcome.reason
    results = {r.system: r for r in outcome.systems}
    assert set(results) == {"crm", "google_ads", "hubspot", "linkedin", "netsuite", "salesforce"}
    crm, hubspot, salesforce = results["crm"], results["hubspot"], results["salesforce"]
    assert crm.actions.get("delete", 0) > 0 and crm.actions.get("anonymise", 0) > 0
    assert hubspot.records_found > 1 and hubspot.actions.get("delete", 0) > 0 and hubspot.remaining == 0
    assert _hubspot_contacts(sandboxes, ERASURE_SUBJECT) == 0
    assert all(_hubspot_contacts(sandboxes, decoy) == 1 for decoy in HUBSPOT_DECOYS)
    assert salesforce.records_found > 5 and salesforce.remaining == 0
    # NetSuite: the customer with invoices is anonymised (tax), the one without is deleted.
    netsuite = results["netsuite"]
    assert netsuite.actions.get("delete", 0) >= 1 and netsuite.actions.get("anonymise", 0) >= 1
    assert netsuite.remaining == 0
    # Ad audiences: the subject's hash is removed from every list and segment, decoys' hashes stay.
    digest = hashlib.sha256(ERASURE_SUBJECT.encode()).hexdigest()
    for system, lists in (("google_ads", ("111", "222", "333")), ("linkedin", ("8001", "8002", "8003"))):
        assert results[system].status == "completed"
        vendor = sandboxes[system].vendor
        for name in lists:
            members = vendor.members(name)
            assert digest not in members and len(members) > 0, (system, name)
    org = OrgClient(sandboxes["salesforce"].url)
    assert org.query(f"SELECT Id FROM Contact WHERE Email = '{ERASURE_SUBJECT}'") == []
    for decoy in SALESFORCE_DECOYS:
        quoted = decoy.replace("\\", "\\\\").replace("'", "\\'")
        assert len(org.query(f"SELECT Id FROM Contact WHERE Email = '{quoted}'")) == 1, decoy
    assert _crm_rows(crm_url, "SELECT count(*) FROM contacts WHERE lower(trim(email)) = ?", ERASURE_SUBJECT) == [(0,)]
    assert _decoy_rows(crm_url) == decoys_before
    # The recent order survives, anonymised, because tax law keeps it; the 2016 one is past retention.
    state = sqlite_service.state(request_id)
    exemptions = state.systems["crm"].exemptions
    assert exemptions and all(e["basis"].startswith("GDPR Art. 17(3)(b)") for e in exemptions)
    assert all(e["retain_until"] > "2026-11-25" for e in exemptions)
    kept_invoice_ids = [e["record"].split("/")[-1] for e in exemptions if "/invoices/" in e["record"]]
    for invoice_id in kept_invoice_ids:
        [(name, order_id)] = _crm_rows(crm_url, "SELECT billing_name, order_id FROM invoices WHERE id = ?", invoice_id)
        assert (name, order_id) == ("[erased]", None)
    assert state.systems["crm"].remaining == []


def test_rerunning_a_finished_request_repeats_nothing(sqlite_service: DsrService) -> None:
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT)
    first = _run(sqlite_service, request_id)
    events_after_first = len(sqlite_service.events(request_id))
    second = _run(sqlite_service, request_id)
    assert second.status == Status.COMPLETED
    assert len(sqlite_service.events(request_id)) == events_after_first
    assert second.bundle_path == first.bundle_path


class _FailingErase:
    """Wraps the real connector; the first erase fails after doing part of the work."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @property
    def info(self):
        return self.inner.info

    def erase(self, decisions):
        self.inner.erase(decisions[: len(decisions) // 2])
        raise ConnectionError("connection reset by peer")


def test_a_failed_system_leaves_the_request_partially_completed_and_a_rerun_finishes_it(
        sqlite_service: DsrService, crm_url: str) -> None:
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT)
    outcome = _run(sqlite_service, request_id, {"crm": _FailingErase})
    assert outcome.status == Status.PARTIALLY_COMPLETED
    assert "crm: ConnectionError" in (outcome.reason or "")
    assert outcome.bundle_path is not None  # the partial state is sealed too (version 1)

    outcome = _run(sqlite_service, request_id)
    assert outcome.status == Status.COMPLETED
    assert _crm_rows(crm_url, "SELECT count(*) FROM contacts WHERE lower(trim(email)) = ?", ERASURE_SUBJECT) == [(0,)]
    events = sqlite_service.events(request_id)
    # Discovery and decisions were read back from the ledger, not redone.
    for step in ("system.discovered", "system.erase_planned"):
        assert [e.payload["system"] for e in events if e.type == step] == [
            "crm", "google_ads", "hubspot", "linkedin", "netsuite", "salesforce"]
    assert [b["version"] for b in sqlite_service.state(request_id).bundles] == [1, 2]
    assert outcome.bundle_path.name == "evidence-v2.zip"


def test_access_request_delivers_a_package_the_subject_can_read(sqlite_service: DsrService, crm_url: str,
                                                               sandboxes) -> None:
    request_id = _request(sqlite_service, "access", ACCESS_SUBJECT, regime="uk-gdpr")
    outcome = _run(sqlite_service, request_id)
    assert outcome.status == Status.COMPLETED and outcome.package_path is not None
    with zipfile.ZipFile(outcome.package_path) as package:
        names = set(package.namelist())
        data = json.loads(package.read("data.json"))
        contacts_csv = list(csv.DictReader(io.StringIO(package.read("csv/crm/contacts.csv").decode())))
        summary = package.read("summary.txt").decode()
    assert {"data.json", "summary.txt", "summary.html"} <= names
    [contact] = data["systems"]["crm"]["contacts"]
    assert contact["email"].strip().lower() == ACCESS_SUBJECT
    assert len(data["systems"]["crm"]["orders"]) >= 1 and "invoices" in data["systems"]["crm"]
    assert contacts_csv[0]["email"].strip().lower() == ACCESS_SUBJECT
    salesforce = data["systems"]["salesforce"]
    assert [c["Email"].lower() for c in salesforce["Contact"]] == [ACCESS_SUBJECT]
    hubspot = data["systems"]["hubspot"]
    assert [c["email"].lower() for c in hubspot["contacts"]] == [ACCESS_SUBJECT]
    assert sum(len(hubspot.get(kind, [])) for kind in ("notes", "emails", "calls", "meetings")) > 0
    assert "Your rights" in summary and "privacy@precisionot.com" in summary
    # Nothing was changed in the CRM by an access request.
    assert _crm_rows(crm_url, "SELECT count(*) FROM contacts WHERE lower(trim(email)) = ?", ACCESS_SUBJECT) == [(1,)]
    # The evidence holds the package's hash, never its contents.
    state = sqlite_service.state(request_id)
    assert state.package["sha256"] == hashlib.sha256(outcome.package_path.read_bytes()).hexdigest()
    with zipfile.ZipFile(outcome.bundle_path) as bundle:
        everything = b"".join(bundle.read(n) for n in bundle.namelist())
    assert ACCESS_SUBJECT.encode() not in everything.lower()
    assert state.package["sha256"].encode() in everything


def test_sealed_bundle_verifies_and_rebuilds_to_the_same_bytes(sqlite_service: DsrService) -> None:
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT)
    outcome = _run(sqlite_service, request_id)
    signer = load_or_create_signing_key(sqlite_service.settings.signing_key_path)
    report = verify_bundle(outcome.bundle_path, signer.public_key)
    assert report.ok, report.reason
    through = sqlite_service.state(request_id).bundles[0]["through_seq"]
    rebuilt = RequestRunner(sqlite_service).build_bundle_bytes(request_id, through)
    assert rebuilt == Path(outcome.bundle_path).read_bytes()


def test_cancelled_request_does_not_run(sqlite_service: DsrService) -> None:
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT)
    sqlite_service.cancel(request_id, reason="withdrawn")
    with pytest.raises(RequestStateError, match="cancelled"):
        RequestRunner(sqlite_service).begin(request_id)


def test_no_personal_data_in_logs_or_ledger_events(sqlite_service: DsrService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    request_id = _request(sqlite_service, "erasure", ERASURE_SUBJECT)
    _run(sqlite_service, request_id)
    access_id = _request(sqlite_service, "access", ACCESS_SUBJECT)
    _run(sqlite_service, access_id)
    text = caplog.text.lower() + json.dumps([e.to_dict() for r in (request_id, access_id)
                                              for e in sqlite_service.events(r)]).lower()
    for needle in (ERASURE_SUBJECT, ACCESS_SUBJECT, "lovelace", "hopper"):
        assert needle not in text
