"""Salesforce counts its expired records (one COUNT() per object) and the purge lists them while it
deletes: the guard decides on the counts before the first delete; a run never deletes more per
category than it counted (what it finds beyond the count is left for the next run, in the report and
the chain); a record touched after the count is not deleted; held records are held back as a listing
shows them; the sandbox answers COUNT() as Salesforce does. Calls are counted at the sandbox; nothing
here is timed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest

from connectors.registry import build_connector
from connectors.salesforce import SalesforceConnector
from dsr.contract import Connector, DataCategory, RecordRef, Subject
from dsr.holds import add_hold
from dsr.retention import Purger, cutoffs, governing
from dsr.service import DsrService
from sandbox.kit import CONTROL_PREFIX
from sandbox.salesforce_client import OrgClient
from tests.test_retention_listing import composite_queries

TODAY = date(2026, 11, 25)
OLD = "2021-03-01T08:00:00.000+0000"
COUNT_LEADS = "SELECT COUNT() FROM Lead WHERE LastModifiedDate < 2025-11-25T00:00:00Z"


def _connect(service: DsrService, kind: type[SalesforceConnector] = SalesforceConnector) -> Callable[[str], Connector]:
    def connect(name: str) -> Connector:
        config = service.data_map.systems[name]
        if name == "salesforce":
            return kind.create(name, config.settings)
        return build_connector(name, config.kind, config.settings)
    return connect


def _guard(service: DsrService, **update: object) -> None:
    retention = service.policy.retention.model_copy(update=update)
    service.__dict__["policy"] = service.policy.model_copy(update={"retention": retention})


def _org(sandboxes: dict[str, Any]) -> OrgClient:
    return OrgClient(sandboxes["salesforce"].url)


def _old_leads(org: OrgClient, count: int, tag: str, email: str | None = None) -> list[str]:
    return org.create_many("Lead", [{"LastName": f"{tag}{n}", "Company": "Old Prospects BV",
                                     "Email": email or f"{tag.lower()}.{n}@expired.example",
                                     "LastModifiedDate": OLD} for n in range(count)])


def _present(org: OrgClient, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 200):
        quoted = ", ".join(f"'{i}'" for i in ids[start:start + 200])
        found.update(r["Id"] for r in org.query(f"SELECT Id FROM Lead WHERE Id IN ({quoted})"))
    return found


class _Calls:
    """The Salesforce sandbox's API calls in the order they came: COUNT(), listing queries, deletes."""

    def __init__(self, sandboxes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        vendor = sandboxes["salesforce"].vendor
        handle = vendor.handle

        def counted(request: Any) -> Any:
            label = self._label(request)
            with self._lock:
                if label:
                    self.seen.append(label)
                self.seen.extend("count" if q.startswith("SELECT COUNT()") else "query"
                                 for q in composite_queries(request))
            return handle(request)

        monkeypatch.setattr(vendor, "handle", counted)

    @staticmethod
    def _label(request: Any) -> str | None:
        path = request.path
        if path.startswith(CONTROL_PREFIX):
            return None
        soql = request.arg("q") if path.rstrip("/").endswith("/query") else None
        if soql:
            return "count" if soql.startswith("SELECT COUNT()") else "query"
        if "/query/" in path:
            return "query"
        if path.rstrip("/").endswith("/composite/sobjects") and request.method == "DELETE":
            return "delete"
        return None


def test_the_sandbox_answers_count_queries_as_salesforce_does(sandboxes: dict[str, Any]) -> None:
    org = _org(sandboxes)
    try:
        _old_leads(org, 2_100, "Many")  # more than a query page: a count is still one answer
        listed = org.query("SELECT Id FROM Lead WHERE LastModifiedDate < 2025-11-25T00:00:00Z")
        answer = org.call("GET", "query/", params={"q": COUNT_LEADS})
        assert answer.status_code == 200
        assert answer.json() == {"totalSize": len(listed), "done": True, "records": []}
        limited = org.call("GET", "query/", params={"q": COUNT_LEADS + " LIMIT 5"}).json()
        assert limited["totalSize"] == 5
        for soql in ("SELECT COUNT(), Id FROM Lead", "SELECT COUNT() FROM Lead ORDER BY LastName"):
            refused = org.call("GET", "query/", params={"q": soql})
            assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "MALFORMED_QUERY"
    finally:
        org.close()


def test_the_guard_decides_on_counts_before_the_first_delete(
        sqlite_service: DsrService, sandboxes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    org = _org(sandboxes)
    ids = _old_leads(org, 450, "Guarded")
    _guard(sqlite_service, max_share=1.0, max_count=100)
    calls = _Calls(sandboxes, monkeypatch)
    stopped = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["salesforce"])
    assert stopped.status == "needs_approval" and stopped.purged == 0
    [trip] = stopped.guard
    counted = sum(t.candidates - t.held_back for t in stopped.tallies)
    assert trip["would_purge"] == counted >= 450
    assert "delete" not in calls.seen and "query" not in calls.seen  # counted, neither listed nor deleted
    assert _present(org, ids) == set(ids)

    calls.seen.clear()
    approved = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["salesforce"],
                                                                    approve=stopped.run_id)
    assert approved.status == "completed" and approved.purged == counted
    assert _present(org, ids) == set()
    first_delete = calls.seen.index("delete")
    assert "count" in calls.seen[:first_delete] and "count" not in calls.seen[first_delete:]
    org.close()


class _LateArrivals(SalesforceConnector):
    """Between the count and the purge pass's listing, 5 more Leads expire (created already old)."""

    origin = ""
    late: list[str] = []

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], Any]) -> Iterator[RecordRef]:
        org = OrgClient(self.origin)
        try:
            _LateArrivals.late = _old_leads(org, 5, "Late")
        finally:
            org.close()
        yield from super().expired_all(cutoff_of)


class _Touched(SalesforceConnector):
    """Between the count and the purge pass's listing, someone edits one expired Lead."""

    origin = ""
    touched = ""

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], Any]) -> Iterator[RecordRef]:
        org = OrgClient(self.origin)
        try:
            assert org.call("PATCH", f"sobjects/Lead/{_Touched.touched}", json={"Company": "Active BV"}).ok
        finally:
            org.close()
        yield from super().expired_all(cutoff_of)


def test_a_run_never_deletes_more_than_it_counted_and_says_what_it_left(
        sqlite_service: DsrService, sandboxes: dict[str, Any]) -> None:
    _guard(sqlite_service, max_share=1.0, max_count=10**9)
    org = _org(sandboxes)
    ids = _old_leads(org, 250, "Counted")
    _LateArrivals.origin = sandboxes["salesforce"].url
    report = Purger(sqlite_service, _connect(sqlite_service, _LateArrivals)).run(today=TODAY, systems=["salesforce"])
    assert report.status == "completed"
    counted = sum(t.candidates - t.held_back for t in report.tallies)
    assert report.purged == counted and sum(t.left_over for t in report.tallies) == 5
    # Which 5 stayed is the listing's order; that exactly 5 expired Leads are left is what counts.
    assert len(_present(org, ids + _LateArrivals.late)) == 5
    events = sqlite_service.ledger.events(report.run_id)
    [left] = [e.payload for e in events if e.type == "purge.left_over"]
    [leads] = [t for t in report.tallies if t.left_over]  # the category governing Leads
    assert left == {"system": "salesforce", "category": leads.category, "counted": leads.purged, "left_over": 5,
                    "reason": left["reason"]}
    completed = next(e for e in events if e.type == "purge.completed")
    assert sum(t["left_over"] for t in completed.payload["tallies"]) == 5

    again = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["salesforce"])
    assert again.purged == 5 and sum(t.left_over for t in again.tallies) == 0
    assert _present(org, ids + _LateArrivals.late) == set()
    org.close()


def test_a_record_touched_after_the_count_is_not_purged(sqlite_service: DsrService, sandboxes: dict[str, Any]) -> None:
    _guard(sqlite_service, max_share=1.0, max_count=10**9)
    org = _org(sandboxes)
    ids = _old_leads(org, 20, "Touched")
    _Touched.origin, _Touched.touched = sandboxes["salesforce"].url, ids[7]
    report = Purger(sqlite_service, _connect(sqlite_service, _Touched)).run(today=TODAY, systems=["salesforce"])
    assert report.status == "completed"
    assert report.purged == sum(t.candidates - t.held_back for t in report.tallies) - 1
    assert _present(org, ids) == {ids[7]}  # no longer expired at delete time: kept
    org.close()


def test_held_records_are_held_back_as_the_listing_shows(sqlite_service: DsrService, sandboxes: dict[str, Any]) -> None:
    _guard(sqlite_service, max_share=1.0, max_count=10**9)
    org = _org(sandboxes)
    held = _old_leads(org, 3, "Held", email="kept.person@example.com")
    others = _old_leads(org, 30, "Other")
    add_hold(sqlite_service, email="kept.person@example.com", ref="LIT-2026-031", reason="prospect of litigation")
    # What a listing shows: the expired records among those exact discovery finds for the subject.
    connector = SalesforceConnector.create("salesforce", sqlite_service.data_map.systems["salesforce"].settings)
    try:
        subject = Subject(email="kept.person@example.com", identity_hash=sqlite_service.identity_hash(
            "kept.person@example.com"))
        found = {ref.key for ref in connector.discover(subject)}
        every = cutoffs(sqlite_service.policy, TODAY)

        def cutoff_of(categories: tuple[DataCategory, ...]) -> date | None:
            category = governing(categories, every)
            return every[category] if category is not None else None

        listed = [ref for ref in connector.expired_all(cutoff_of) if ref.key in found]
    finally:
        connector.close()
    assert {ref.id for ref in listed} >= set(held)

    dry = Purger(sqlite_service, _connect(sqlite_service)).run(dry_run=True, today=TODAY, systems=["salesforce"])
    assert sum(t.held_back for t in dry.tallies) == len(listed)
    assert {r for t in dry.tallies for r in t.hold_refs} == {"hold LIT-2026-031"}
    report = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["salesforce"])
    assert report.purged == sum(t.candidates - t.held_back for t in dry.tallies)
    assert _present(org, held + others) == set(held)
    org.close()
