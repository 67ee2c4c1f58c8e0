"""A subject who owns many records: what discovery found is hash-chained, not repeated
in the chain, so reading the request back costs no memory per record, and the evidence bundle
still carries every ref, bound to the chain."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tracemalloc
import zipfile
from datetime import UTC, datetime

import pytest

from connectors.registry import build_connector
from dsr.bundle import BundleError, verify_bundle
from dsr.models import parse_new_request
from dsr.run import RequestRunner
from dsr.service import DsrService
from dsr.signing import load_or_create_signing_key
from sandbox.crm_seed import ACCESS_SUBJECT

EXTRA_EVENTS = 20_000


def _add_page_views(crm_url: str, count: int) -> None:
    with sqlite3.connect(crm_url.removeprefix("sqlite:///")) as conn:
        (contact,) = conn.execute("SELECT id FROM contacts WHERE lower(trim(email)) = ?", (ACCESS_SUBJECT,)).fetchone()
        conn.executemany(
            "INSERT INTO web_analytics_events (contact_id, ip_address, user_agent, page, occurred_at) "
            "VALUES (?, ?, ?, ?, ?)",
            ((contact, "192.0.2.7", "Mozilla/5.0", f"/products/lenses/{n}", f"2024-01-01 00:{n % 60:02d}:00")
             for n in range(count)))


def _access(service: DsrService) -> tuple[str, RequestRunner]:
    new = parse_new_request(type="access", email=ACCESS_SUBJECT, regime="gdpr", received=datetime.now(UTC),
                            channel="web-form")
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="code returned")
    runner = RequestRunner(service)
    config = service.data_map.systems["crm"]
    for system in runner.begin(request_id).systems:
        runner.run_system(request_id, system, lambda: build_connector("crm", config.kind, config.settings))
    return request_id, runner


def _traced_peak(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_many_records_are_sealed_as_evidence_without_weighing_on_every_read(
        crm_only_service: DsrService, crm_url: str) -> None:
    _add_page_views(crm_url, EXTRA_EVENTS)
    request_id, runner = _access(crm_only_service)

    discovered = [e for e in crm_only_service.events(request_id) if e.type == "system.discovered"]
    assert len(discovered) == 1 and discovered[0].payload["records"] > EXTRA_EVENTS
    assert "refs" not in discovered[0].payload  # the chain holds their hash, not 20,000 refs
    assert len(json.dumps(discovered[0].payload)) < 1_000
    # Every status read, guarded append and index update folds the whole chain: it used to parse
    # ~1 KB per record each time (12 MiB here, 600 MiB for the 1 GB benchmark).
    peak = _traced_peak(lambda: crm_only_service.state(request_id))
    assert peak < 1 * 2**20, f"reading the request back took {peak / 2**20:.1f} MiB"

    outcome = runner.finish(request_id)
    assert outcome.ok, outcome.reason
    signer = load_or_create_signing_key(crm_only_service.settings.signing_key_path)
    verdict = verify_bundle(outcome.bundle_path, signer.public_key)
    assert verdict.ok, verdict.reason
    with zipfile.ZipFile(outcome.bundle_path) as bundle:
        refs = bundle.read("discovered/crm.jsonl")
        manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["format"] == "dsr-evidence-bundle/2"
    assert hashlib.sha256(refs).hexdigest() == discovered[0].payload["refs_sha256"]
    found = [json.loads(line) for line in refs.splitlines()]
    assert len(found) == discovered[0].payload["records"]
    assert sum(1 for ref in found if ref["object"] == "web_analytics_events") >= EXTRA_EVENTS
    with zipfile.ZipFile(outcome.package_path) as package:
        data = json.loads(package.read("data.json"))
    assert len(data["systems"]["crm"]["web_analytics_events"]) >= EXTRA_EVENTS


def test_refs_changed_after_discovery_stop_the_seal(crm_only_service: DsrService) -> None:
    request_id, runner = _access(crm_only_service)
    refs_file = runner.discovered_dir(request_id) / "crm.refs.jsonl"
    refs_file.write_text(refs_file.read_text().splitlines(keepends=True)[0])  # "found" just one record

    with pytest.raises(BundleError, match="not the one the chain recorded at discovery"):
        runner.finish(request_id)
    assert crm_only_service.state(request_id).bundles == []  # nothing sealed on a changed record of what was found
