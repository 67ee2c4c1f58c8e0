"""The retention purge lists each system's expired records once: one query per
Salesforce object and one search per HubSpot object whatever the categories their records hold;
both count first (a COUNT() per Salesforce object, a one-record search read for its total per
HubSpot object), then list in the purge pass; the same per-category counts as a listing per
category; Salesforce delete batches in flight together, within the vendor's pace, each receipt
counting its own calls. Vendor calls are counted at the sandboxes; nothing here is timed."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.registry import build_connector
from dsr.contract import Connector
from dsr.retention import Purger, cutoffs, governing
from dsr.service import DsrService
from sandbox.kit import CONTROL_PREFIX, FaultConfig

TODAY = date(2026, 11, 25)


def _connect(service: DsrService):
    def connect(name: str) -> Connector:
        config = service.data_map.systems[name]
        return build_connector(name, config.kind, config.settings)
    return connect


def _open_guard(service: DsrService) -> None:
    retention = service.policy.retention.model_copy(update={"max_share": 1.0, "max_count": 10**9})
    service.__dict__["policy"] = service.policy.model_copy(update={"retention": retention})


class _Listings:
    """Counts the sandboxes' listing calls: Salesforce queries (first pages, per object, and
    queryMore pages) and COUNT() queries, HubSpot searches and counting searches (`limit` 1, per
    object type); and Salesforce deletes in flight."""

    def __init__(self, sandboxes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        for name in ("salesforce", "hubspot"):
            vendor = sandboxes[name].vendor
            monkeypatch.setattr(vendor, "handle", self._wrap(name, vendor.handle))

    def _wrap(self, name: str, handle: Any) -> Any:
        def counted(request: Any) -> Any:
            label = self._label(name, request)
            deleting = label == "salesforce delete"
            with self._lock:
                if label:
                    self.calls[label] += 1
                for query in composite_queries(request) if name == "salesforce" else ():
                    self.calls[f"salesforce {_query_label(query)}"] += 1  # a query sent in a Composite call
                if deleting:
                    self.in_flight += 1
                    self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return handle(request)
            finally:
                if deleting:
                    with self._lock:
                        self.in_flight -= 1
        return counted

    @staticmethod
    def _label(name: str, request: Any) -> str | None:
        path = request.path
        if path.startswith(CONTROL_PREFIX):
            return None
        if name == "hubspot":
            if not path.endswith("/search"):
                return None
            kind = "count" if (request.json() or {}).get("limit") == 1 else "search"
            return f"hubspot {kind} {path.split('/')[-2]}"
        if path.rstrip("/").endswith("/query") and request.arg("q"):
            return f"salesforce {_query_label(request.arg('q'))}"
        if "/query/" in path:
            return "salesforce queryMore"
        if path.rstrip("/").endswith("/composite/sobjects"):
            return {"DELETE": "salesforce delete", "PATCH": "salesforce anonymise"}.get(request.method)
        return None

    def listing(self) -> dict[str, int]:
        return {k: v for k, v in self.calls.items() if any(word in k for word in ("query", "search", "count"))}


def composite_queries(request: Any) -> list[str]:
    """The SOQL of each query subrequest of a Composite call (none for any other call)."""
    if request.method != "POST" or not request.path.rstrip("/").endswith("/composite"):
        return []
    subrequests = (request.json() or {}).get("compositeRequest", [])
    return [q for sub in subrequests for q in parse_qs(urlsplit(sub.get("url", "")).query).get("q", [])]


def _query_label(soql: str) -> str:
    words = soql.split()
    # "WHERE Id IN (...)": reading given records (anonymising one whose delete was refused), no listing
    kind = "read" if " Id IN " in soql else "count" if soql.startswith("SELECT COUNT()") else "query"
    return f"{kind} {words[words.index('FROM') + 1]}"


def _per_category_counts(service: DsrService, system: str) -> dict[str, int]:
    """What the old count pass counted: each category listed on its own, kept where it governs."""
    every = cutoffs(service.policy, TODAY)
    connector = _connect(service)(system)
    try:
        counts = {c.value: sum(1 for ref in connector.expired(c, every[c]) if governing(ref.categories, every) == c)
                  for c in sorted(every)}
    finally:
        connector.close()
    return {c: n for c, n in counts.items() if n}


def test_each_object_is_listed_once_whatever_its_categories_and_counts_are_unchanged(
        sqlite_service: DsrService, sandboxes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {s: _per_category_counts(sqlite_service, s) for s in ("salesforce", "hubspot")}
    assert expected["salesforce"] and expected["hubspot"]  # the demo data has expired records there
    listings = _Listings(sandboxes, monkeypatch)
    report = Purger(sqlite_service, _connect(sqlite_service)).run(
        dry_run=True, today=TODAY, systems=["hubspot", "salesforce"])
    # Leads hold identity, contact and marketing data, HubSpot contacts too: still one query each.
    # Salesforce is counted, not listed: one COUNT() per object (a few to a Composite call).
    counted = listings.listing()
    assert counted["salesforce count Lead"] == 1 and counted["salesforce count Contact"] == 1
    assert all(n == 1 for label, n in counted.items() if label.startswith("salesforce count "))
    assert not [label for label in counted if label.startswith(("salesforce query", "salesforce queryMore"))]
    # HubSpot is counted too: one search for one record per object, read for its total.
    assert counted["hubspot count contacts"] == 1
    assert all(n == 1 for label, n in counted.items() if label.startswith("hubspot count "))
    assert not [label for label in counted if label.startswith("hubspot search ")]
    # The report still shows each record under the category governing it, as a listing per category did.
    for system in ("salesforce", "hubspot"):
        shown = {t.category: t.candidates for t in report.tallies if t.system == system and t.candidates}
        assert shown == expected[system], system


def test_each_system_is_listed_once_per_run(sqlite_service: DsrService, sandboxes: dict[str, Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _open_guard(sqlite_service)
    listings = _Listings(sandboxes, monkeypatch)
    Purger(sqlite_service, _connect(sqlite_service)).run(dry_run=True, today=TODAY, systems=["hubspot", "salesforce"])
    counting_only = listings.listing()
    listings.calls.clear()
    report = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["hubspot", "salesforce"])
    assert report.status == "completed" and report.purged > 0
    run = listings.listing()
    # Each system: the count pass's counting calls, then one listing per object, in the purge pass
    # (the demo's expired records fit in one page).
    for system, listed in (("salesforce", "query"), ("hubspot", "search")):
        counts = {k: n for k, n in counting_only.items() if k.startswith(f"{system} count ")}
        assert counts, system
        assert {k: n for k, n in run.items() if k.startswith(f"{system} count ")} == counts
        assert {k.replace(f" {listed} ", " count ") for k in run if k.startswith(f"{system} {listed} ")} == set(counts)
        assert all(n == 1 for k, n in run.items() if k.startswith(f"{system} {listed} "))
    assert not any((sqlite_service.settings.home / "purge-spill").iterdir())  # the spill files are gone
    after = Purger(sqlite_service, _connect(sqlite_service)).run(dry_run=True, today=TODAY,
                                                                 systems=["hubspot", "salesforce"])
    assert [t for t in after.tallies if t.candidates - t.held_back] == []


def test_salesforce_deletes_overlap_within_the_pace_and_count_their_own_calls(
        sqlite_service: DsrService, sandboxes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.salesforce import OrgClient

    _open_guard(sqlite_service)
    vendor = sandboxes["salesforce"].vendor
    org = OrgClient(sandboxes["salesforce"].url)
    try:
        org.create_many("Lead", [{"LastName": f"Old{n}", "Company": "Old Prospects BV",
                                  "Email": f"old.{n}@expired.example",
                                  "LastModifiedDate": "2021-03-01T08:00:00.000+0000"} for n in range(2_400)])
    finally:
        org.close()
    vendor.faults.configure(FaultConfig(latency_ms=40))  # a round trip long enough for calls to overlap
    vendor.set_pace(25, 1.0, "^/services/data/")  # the org's API limit (logins are not in it), enforced
    with vendor.stats_lock:
        vendor.stats.clear()
    listings = _Listings(sandboxes, monkeypatch)
    report = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["salesforce"])
    assert report.status == "completed"
    deletes = listings.calls["salesforce delete"]
    assert sum(t.purged for t in report.tallies) >= 2_400
    # Full batches of 200: one partial batch at most per category.
    assert deletes == sum(-(-(t.purged + t.failed) // 200) for t in report.tallies)
    assert listings.most_in_flight > 1  # batches in flight together...
    assert vendor.stats["throttled"] == 0 and vendor.stats["over_pace"] == 0  # ...never past the pace
    # Each receipt counted its own calls only: the run's tallies add up to the calls the org answered
    # for the purge (deletes, and reads and updates where a refused delete was anonymised).
    purge_calls = sum(n for label, n in listings.calls.items()
                      if label == "salesforce delete" or label.startswith(("salesforce read", "salesforce anonymise")))
    assert sum(t.api_calls for t in report.tallies) == purge_calls
