"""The retention purge across the CRM and the vendor sandboxes: cutoffs per category, the tax
clock from the fiscal year end, legal holds and open requests left alone, the blast-radius
guard, dry runs that change nothing, crash-resume, signed run reports, flat memory."""

from __future__ import annotations

import sqlite3
import tracemalloc
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from connectors.registry import build_connector
from dsr.bundle import verify_bundle
from dsr.contract import Connector, DataCategory
from dsr.holds import add_hold, holds, release_hold
from dsr.models import parse_new_request
from dsr.retention import Purger, cutoffs, governing, tax_cutoff
from dsr.service import DsrService, RequestStateError
from dsr.signing import load_or_create_signing_key
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT

TODAY = date(2026, 11, 25)


def _connect(service: DsrService):
    def connect(name: str) -> Connector:
        config = service.data_map.systems[name]
        return build_connector(name, config.kind, config.settings)
    return connect


def _loosen_guard(service: DsrService, **update: object) -> None:
    retention = service.policy.retention.model_copy(update=update)
    service.__dict__["policy"] = service.policy.model_copy(update={"retention": retention})


def _rows(crm_url: str, sql: str, *params: object) -> int:
    with sqlite3.connect(crm_url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


def test_cutoffs_per_category_and_the_tax_clock_from_the_fiscal_year_end(sqlite_service: DsrService) -> None:
    limits = cutoffs(sqlite_service.policy, TODAY)
    assert limits[DataCategory.USAGE] == date(2025, 10, 25)  # 13 months
    assert limits[DataCategory.PROFILE] == date(2024, 11, 25)  # 24 months
    # The longest tax table (7 years: NL, US) from the end of the fiscal year: FY2018 ended
    # 2018-12-31 + 7 years = 2025-12-31, which has passed; FY2019's runs to 2026-12-31.
    assert limits[DataCategory.FINANCIAL] == date(2019, 1, 1)
    policy = sqlite_service.policy.model_copy(update={"fiscal_year_end": "03-31"})
    assert tax_cutoff(policy, TODAY) == date(2019, 4, 1)  # FY to 2019-03-31 ended + 7y = 2026-03-31


def test_the_longest_retention_governs_and_unruled_categories_keep_a_record() -> None:
    limits = {DataCategory.USAGE: date(2025, 10, 25), DataCategory.CONTACT: date(2024, 11, 25)}
    assert governing((DataCategory.USAGE, DataCategory.CONTACT), limits) == DataCategory.CONTACT
    assert governing((DataCategory.USAGE, DataCategory.FINANCIAL), limits) is None


def test_dry_run_reports_and_changes_nothing_then_the_guard_asks_for_approval(
        sqlite_service: DsrService, crm_url: str) -> None:
    before = _rows(crm_url, "SELECT count(*) FROM web_analytics_events")
    report = Purger(sqlite_service, _connect(sqlite_service)).run(dry_run=True, today=TODAY)
    assert report.dry_run and report.status == "needs_approval"
    [trip] = [t for t in report.guard if t["system"] == "crm"]
    assert trip["share"] > 0.05
    assert _rows(crm_url, "SELECT count(*) FROM web_analytics_events") == before
    signer = load_or_create_signing_key(sqlite_service.settings.signing_key_path)
    assert verify_bundle(report.report_path, signer.public_key).ok

    refused = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY)
    assert refused.status == "needs_approval" and refused.purged == 0
    assert _rows(crm_url, "SELECT count(*) FROM web_analytics_events") == before

    approved = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, approve=refused.run_id)
    assert approved.status == "completed" and approved.purged > 0
    old = _rows(crm_url, "SELECT count(*) FROM web_analytics_events WHERE occurred_at < '2025-10-25'")
    recent = _rows(crm_url, "SELECT count(*) FROM web_analytics_events WHERE occurred_at >= '2025-10-25'")
    assert old == 0 and recent > 0
    # Orders still under the tax clock stay; ones from before FY2019 are gone (or anonymised where kept).
    assert _rows(crm_url, "SELECT count(*) FROM orders WHERE ordered_at >= '2019-01-01'") > 0
    for system in ("hubspot", "salesforce"):
        assert sum(t.purged for t in approved.tallies if t.system == system) > 0
    # Exactly the expired ones went: a new dry run finds nothing left to purge in any system.
    after = Purger(sqlite_service, _connect(sqlite_service)).run(dry_run=True, today=TODAY)
    assert [(t.system, t.category) for t in after.tallies if t.candidates - t.held_back] == []


def test_approving_a_run_that_did_not_stop_is_refused(sqlite_service: DsrService) -> None:
    _loosen_guard(sqlite_service, max_share=1.0, max_count=10**9)
    done = Purger(sqlite_service, _connect(sqlite_service)).run(dry_run=True, today=TODAY, systems=["crm"])
    with pytest.raises(RequestStateError, match="did not stop at the guard"):
        Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, approve=done.run_id)


def test_legal_holds_and_open_requests_keep_their_subjects_records(sqlite_service: DsrService, crm_url: str) -> None:
    _loosen_guard(sqlite_service, max_share=1.0, max_count=10**9)
    add_hold(sqlite_service, email=ERASURE_SUBJECT, ref="LIT-2026-014", reason="prospect of litigation")
    new = parse_new_request(type="access", email=ACCESS_SUBJECT, regime="uk-gdpr", received=datetime.now(UTC))
    sqlite_service.submit(new)
    ada_before = _rows(crm_url, "SELECT count(*) FROM web_analytics_events e JOIN contacts c ON c.id = e.contact_id "
                                "WHERE lower(trim(c.email)) = ?", ERASURE_SUBJECT)
    report = Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["crm"])
    held = [t for t in report.tallies if t.held_back]
    assert held and any("hold LIT-2026-014" in t.hold_refs for t in held)
    assert any(r.startswith("open request") for t in held for r in t.hold_refs)
    assert _rows(crm_url, "SELECT count(*) FROM web_analytics_events e JOIN contacts c ON c.id = e.contact_id "
                          "WHERE lower(trim(c.email)) = ?", ERASURE_SUBJECT) == ada_before
    assert _rows(crm_url, "SELECT count(*) FROM contacts WHERE lower(trim(email)) = ?", ACCESS_SUBJECT) == 1

    release_hold(sqlite_service, ref="LIT-2026-014", reason="claim settled")
    assert holds(sqlite_service) == []
    Purger(sqlite_service, _connect(sqlite_service)).run(today=TODAY, systems=["crm"])
    assert _rows(crm_url, "SELECT count(*) FROM web_analytics_events e JOIN contacts c ON c.id = e.contact_id "
                          "WHERE lower(trim(c.email)) = ? AND e.occurred_at < '2025-10-25'", ERASURE_SUBJECT) == 0


def test_hold_references_are_unique_and_validated(sqlite_service: DsrService) -> None:
    add_hold(sqlite_service, email=ERASURE_SUBJECT, ref="C-1", reason="complaint")
    with pytest.raises(RequestStateError, match="already exists"):
        add_hold(sqlite_service, email=ACCESS_SUBJECT, ref="C-1", reason="complaint")
    from dsr.models import RequestInputError
    with pytest.raises(RequestInputError, match="^ref: "):
        add_hold(sqlite_service, email=ERASURE_SUBJECT, ref="../etc", reason="x")
    chain = sqlite_service.ledger.events("hold-C-1")
    assert ERASURE_SUBJECT not in str([e.to_dict() for e in chain])


class _CrashAfter:
    """The real CRM connector, whose purge dies after `n` batches (a killed worker)."""

    def __init__(self, inner: Connector, n: int) -> None:
        self.inner, self.left = inner, n

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @property
    def info(self):
        return self.inner.info

    def purge(self, refs):
        if self.left == 0:
            raise KeyboardInterrupt("worker killed")
        self.left -= 1
        return self.inner.purge(refs)


def test_a_crashed_purge_resumes_without_resending_what_was_purged(sqlite_service: DsrService, crm_url: str) -> None:
    _loosen_guard(sqlite_service, max_share=1.0, max_count=10**9)
    plain = _connect(sqlite_service)
    scope = {"today": TODAY, "systems": ["crm"]}
    expected = Purger(sqlite_service, plain).run(dry_run=True, **scope)
    to_purge = sum(t.candidates - t.held_back for t in expected.tallies)
    with pytest.raises(KeyboardInterrupt):
        Purger(sqlite_service, lambda name: _CrashAfter(plain(name), 1)).run(**scope)
    resumed = Purger(sqlite_service, plain).run(**scope)
    runs = [r for r in sqlite_service.ledger.request_ids() if r.startswith("purge-")]
    sent = sum(e.payload["records"] for r in runs for e in sqlite_service.ledger.events(r) if e.type == "purge.batch")
    assert sent == to_purge  # every expired record sent exactly once across the crash
    assert resumed.status == "completed" and 0 < resumed.purged < to_purge


def _big_crm(path: Path, rows: int) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, contact_id INTEGER, page TEXT, occurred_at TEXT)")
        conn.execute("INSERT INTO contacts VALUES (1, 'someone@example.com')")
        conn.executemany("INSERT INTO events VALUES (?, 1, '/products', '2020-01-01 10:00:00')",
                         ((i,) for i in range(1, rows + 1)))
    return f"sqlite:///{path}"


def _purge_peak(tmp_path: Path, service: DsrService, rows: int) -> tuple[int, int]:
    url = _big_crm(tmp_path / f"big-{rows}.sqlite", rows)
    settings = {"url": url, "objects": {
        "contacts": {"table": "contacts", "key": "id", "match": {"column": "email"}, "categories": ["identity"]},
        "events": {"table": "events", "key": "id", "match": {"parent": "contacts", "column": "contact_id"},
                   "categories": ["technical", "usage"], "retention_date": ["occurred_at"]}}}
    tracemalloc.start()
    report = Purger(service, lambda name: build_connector("big", "crm_sql", settings)).run(
        today=TODAY, systems=["crm"], categories=["technical"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return report.purged, peak


def test_purging_200000_records_keeps_memory_flat(sqlite_service: DsrService, tmp_path: Path) -> None:
    _loosen_guard(sqlite_service, max_share=1.0, max_count=10**9)
    _purge_peak(tmp_path, sqlite_service, 2_000)  # warm-up: first-use allocations (imports, caches) are not growth
    small, small_peak = _purge_peak(tmp_path, sqlite_service, 20_000)
    large, large_peak = _purge_peak(tmp_path, sqlite_service, 200_000)
    assert (small, large) == (20_000, 200_000)
    print(f"peak {small_peak} B at 20k, {large_peak} B at 200k")
    # Ten times the records, not ten times the memory: the extra 180,000 records may not cost even a
    # pointer each (a run that kept every ref would cost hundreds of bytes per record).
    assert large_peak - small_peak < 180_000 * 8, (small_peak, large_peak)
