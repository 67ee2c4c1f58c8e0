"""Evidence bundles as an auditor meets them: they verify, rebuild identically, and show tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import stat
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dsr.bundle import BUNDLE_FORMAT, BundleError, build_bundle, verify_bundle, write_bundle
from dsr.ledger.events import GENESIS_HASH, LedgerEvent, canonical_json
from dsr.report import render_report
from dsr.signing import (
    SigningKeyError,
    load_or_create_signing_key,
    load_public_key,
    public_key_path,
    verify_signature,
)

REQUEST_ID = "req-2025-0042"
IDENTITY = "hmac-sha256:5f2b9c1d7e3a48b6a0c4d2e1f9b8a7c6"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
START = datetime(2025, 3, 3, 9, 15, 0, tzinfo=UTC)

NOTE = "link clicked <script>alert('x')</script>"  # free text typed by a person: must be escaped
DEADLINE = {
    "regime": "gdpr", "country": "IE", "clock_start": "2025-03-03", "base_due": "2025-04-03",
    "due": "2025-04-03", "extended": False, "extension_reason": None, "extension_available": True,
    "extension_notice_by": "2025-04-03", "paused": False, "paused_days": 0, "acknowledge_by": None,
    "holiday_calendar": "holidays 0.62 IE", "rule": "gdpr/art12(3)+reg1182/71 v1",
    "steps": ["received 2025-03-03", "one month: 2025-04-03", "not a holiday: 2025-04-03"],
}
# Shaped like the ledger payloads dsr.run writes.
STEPS: list[tuple[str, str, dict[str, Any]]] = [
    ("privacy-office", "request.received", {
        "type": "erasure", "regime": "gdpr", "country": "IE", "channel": "web-form",
        "received_at": "2025-03-03T09:22:00.000000Z", "identity_kind": "email", "identity_hash": IDENTITY,
        "note": None, "deadline": DEADLINE}),
    ("privacy-office", "request.verified", {"method": "email-link", "note": NOTE}),
    ("runner", "run.started", {"systems": ["billing", "crm"]}),
    ("runner", "system.discovered", {
        "system": "crm", "connector_version": "crm-sandbox/1.2", "records": 2,
        "by_object": {"Contact": 1, "Lead": 1},
        "identifier": {"kind": "email", "identity_hash": IDENTITY, "match": "exact, normalised"},
        "refs": [{"object": "Contact", "id": "003A1", "categories": ["contact"], "anchor_date": None},
                 {"object": "Lead", "id": "00QB2", "categories": ["marketing"], "anchor_date": None}]}),
    ("runner", "system.erased", {
        "system": "crm", "complete": True, "actions": {"delete": 2}, "exemptions": [],
        "vendor_receipt_id": "sf-del-7731", "api_calls": 1,
        "outcomes": [{"record": "crm/Contact/003A1", "action": "delete", "done": True}]}),
    ("runner", "system.verified", {"system": "crm", "proof": "re-query after erasure", "remaining": 0,
                                   "retained_as_decided": [], "unexpected_remaining": []}),
    ("runner", "system.discovered", {"system": "billing", "connector_version": "billing-sql/0.4",
                                     "records": 3, "by_object": {"invoice": 3}}),
    ("runner", "system.erased", {
        "system": "billing", "complete": True, "actions": {"retain": 3}, "vendor_receipt_id": None,
        "exemptions": [{"record": f"billing/invoice/{n}", "action": "retain",
                        "basis": "Tax law: invoices kept 6 years", "retain_until": "2031-03-31",
                        "fields_cleared": []} for n in (7, 8, 9)]}),
    ("runner", "system.verified", {"system": "billing", "proof": "re-query after erasure", "remaining": 3,
                                   "retained_as_decided": ["billing/invoice/7"], "unexpected_remaining": []}),
    ("runner", "request.completed", {"systems": ["billing", "crm"]}),
]


def make_chain(steps: list[tuple[str, str, dict[str, Any]]] = STEPS) -> list[LedgerEvent]:
    events: list[LedgerEvent] = []
    prev = GENESIS_HASH
    for seq, (actor, kind, payload) in enumerate(steps, start=1):
        at = START + timedelta(minutes=7 * seq)
        event = LedgerEvent.create(REQUEST_ID, seq, at, actor, kind, payload, prev)
        events.append(event)
        prev = event.hash
    return events


# Shaped like dsr.state's RequestState.to_view() and SystemState.to_view().
REQUEST_VIEW = {
    "request_id": REQUEST_ID, "type": "erasure", "regime": "gdpr", "country": "IE", "channel": "web-form",
    "received_at": "2025-03-03T09:22:00.000000Z", "subject": {"kind": "email", "identity_hash": IDENTITY},
    "status": "completed",
    "verification": {"method": "email-link", "note": NOTE,
                     "at": "2025-03-03T09:29:00.000000Z", "by": "privacy-office"},
    "deadline": DEADLINE,
    "clock_events": [{"kind": "received", "at": "2025-03-03T09:22:00+00:00", "reason": None}],
    "systems_planned": ["billing", "crm"], "systems": {"billing": "completed", "crm": "completed"},
    "package": None, "outcome_reason": None, "cancel_reason": None, "bundles": [], "last_seq": 10,
}
SYSTEM_VIEWS = {
    "crm": {"system": "crm", "status": "completed", "connector_version": "crm-sandbox/1.2",
            "records_found": 2, "found_by_object": {"Contact": 1, "Lead": 1}, "records_exported": None,
            "export_sha256": None, "actions": {"delete": 2}, "exemptions": [],
            "vendor_receipt_id": "sf-del-7731",
            "post_erasure_requery": {"remaining": [], "proof": "re-query after erasure"},
            "error": None, "attempts": 0},
    "billing": {"system": "billing", "status": "completed", "connector_version": "billing-sql/0.4",
                "records_found": 3, "found_by_object": {"invoice": 3}, "records_exported": None,
                "export_sha256": None, "actions": {"retain": 3},
                "exemptions": [{"record": f"billing/invoice/{n}", "action": "retain",
                                "basis": "Tax law: invoices kept 6 years", "retain_until": "2031-03-31",
                                "fields_cleared": []} for n in (7, 8, 9)],
                "vendor_receipt_id": None,
                "post_erasure_requery": {"remaining": [], "proof": "re-query after erasure"},
                "error": None, "attempts": 0},
}


@pytest.fixture
def signer(tmp_path: Path):
    return load_or_create_signing_key(tmp_path / "keys" / "signing.key")


@pytest.fixture
def events() -> list[LedgerEvent]:
    return make_chain()


@pytest.fixture
def bundle(events: list[LedgerEvent], signer) -> bytes:
    return build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer)


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rezip(data: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """What an attacker with zip tools does: unpack, edit, pack again (no signing key)."""
    members = members_of(data)
    change(members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def flip_byte(content: bytes, index: int | None = None) -> bytes:
    index = len(content) // 2 if index is None else index
    return content[:index] + bytes([content[index] ^ 0x01]) + content[index + 1:]


def failed(result) -> dict[str, str]:
    return {what: detail for what, passed, detail in result.checks if not passed}


# --- an intact bundle ----------------------------------------------------------------------------


def test_intact_bundle_verifies_and_lists_its_checks(bundle: bytes, signer) -> None:
    result = verify_bundle(bundle, signer.public_key)

    assert result.ok, result.reason
    assert result.reason is None
    assert result.request_id == REQUEST_ID
    assert result.events == len(STEPS)
    names = [what for what, _, _ in result.checks]
    assert names[:5] == ["zip readable", "manifest", "format", "signer", "signature"]
    for expected in ("member request.json", "member timeline.jsonl", "member report.html",
                     "member systems/crm.json", "member systems/billing.json", "no unlisted members",
                     "timeline chain", "timeline matches manifest", "request matches manifest"):
        assert expected in names
    assert all(passed for _, passed, _ in result.checks)


def test_bundle_layout_and_manifest(bundle: bytes, events: list[LedgerEvent], signer) -> None:
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        order = archive.namelist()
        infos = archive.infolist()
    # Zip headers come from the ledger too: the last event's time, fixed permissions.
    assert {info.date_time for info in infos} == {events[-1].timestamp.timetuple()[:6]}
    assert {info.external_attr >> 16 for info in infos} == {0o100644}
    assert order == ["manifest.json", "request.json", "timeline.jsonl", "systems/billing.json",
                     "systems/crm.json", "report.html", "manifest.sig"]
    members = members_of(bundle)
    manifest = json.loads(members["manifest.json"])
    assert members["manifest.json"].decode() == canonical_json(manifest)
    assert manifest["format"] == "dsr-evidence-bundle/1"  # no refs files: written exactly as format 1 was
    assert manifest["through_seq"] == events[-1].seq
    assert manifest["last_event_hash"] == events[-1].hash
    assert manifest["generated_at"] == events[-1].at
    assert manifest["signer_fingerprint"] == signer.fingerprint
    assert set(manifest["members"]) == set(order) - {"manifest.json", "manifest.sig"}
    for name, entry in manifest["members"].items():
        assert entry == {"sha256": hashlib.sha256(members[name]).hexdigest(), "bytes": len(members[name])}
    assert verify_signature(signer.public_key, members["manifest.sig"], members["manifest.json"])
    timeline = [json.loads(line) for line in members["timeline.jsonl"].decode().splitlines()]
    assert timeline == [event.to_dict() for event in events]
    assert json.loads(members["request.json"])["request_id"] == REQUEST_ID


def test_rebuilding_gives_identical_bytes(bundle: bytes, events: list[LedgerEvent], tmp_path: Path) -> None:
    # A fresh process: the key is loaded again from disk, the events re-read from the ledger.
    signer_again = load_or_create_signing_key(tmp_path / "keys" / "signing.key")
    rebuilt = build_bundle([LedgerEvent.from_dict(e.to_dict()) for e in events],
                           request_view=dict(REQUEST_VIEW), system_views=dict(reversed(SYSTEM_VIEWS.items())),
                           signer=signer_again)
    assert rebuilt == bundle


def test_bundle_seals_the_chain_only_up_to_the_given_event(events: list[LedgerEvent], signer) -> None:
    early = build_bundle(events[:3], request_view=REQUEST_VIEW, system_views={}, signer=signer)
    result = verify_bundle(early, signer.public_key)
    assert result.ok, result.reason
    assert result.events == 3
    assert json.loads(members_of(early)["manifest.json"])["through_seq"] == 3


def test_write_bundle_stores_once_and_refuses_a_different_file(bundle: bytes, signer, tmp_path: Path) -> None:
    store = tmp_path / "bundles"
    path = write_bundle(store, bundle, REQUEST_ID, 1)

    assert path == store / REQUEST_ID / "evidence-v1.zip"
    assert path.read_bytes() == bundle
    assert write_bundle(store, bundle, REQUEST_ID, 1) == path  # a re-run is harmless
    with pytest.raises(BundleError, match="refusing to overwrite"):
        write_bundle(store, bundle + b"x", REQUEST_ID, 1)
    assert path.read_bytes() == bundle
    assert [p.name for p in path.parent.iterdir()] == ["evidence-v1.zip"]  # no temp files left behind
    result = verify_bundle(path, signer.public_key)
    assert result.ok and result.version == 1 and result.request_id == REQUEST_ID
    with pytest.raises(BundleError):
        write_bundle(store, bundle, "../escape", 2)


# --- tampering -----------------------------------------------------------------------------------

MEMBERS = ["manifest.json", "request.json", "timeline.jsonl", "systems/billing.json", "systems/crm.json",
           "report.html", "manifest.sig"]


def expected_failure(name: str) -> str:
    # An edited manifest or signature is caught by the signature; anything else by its own hash.
    return "signature" if name in ("manifest.json", "manifest.sig") else f"member {name}"


@pytest.mark.parametrize("name", MEMBERS)
def test_an_edited_member_is_named(bundle: bytes, signer, name: str) -> None:
    def edit(members: dict[str, bytes]) -> None:
        members[name] = flip_byte(members[name])

    result = verify_bundle(rezip(bundle, edit), signer.public_key)

    assert not result.ok
    assert result.reason.startswith(expected_failure(name)), result.reason


@pytest.mark.parametrize("name", MEMBERS)
def test_a_flipped_byte_inside_the_zip_is_named(bundle: bytes, signer, name: str) -> None:
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        info = archive.getinfo(name)
    # Local header: 30 fixed bytes, then the name and the extra field, then the compressed data.
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    tampered = flip_byte(bundle, start + info.compress_size // 2)

    result = verify_bundle(tampered, signer.public_key)

    assert not result.ok
    wanted = {"manifest.json": "manifest", "manifest.sig": "signature"}.get(name, f"member {name}")
    assert result.reason.startswith(wanted), result.reason


def test_a_dropped_member_is_named(bundle: bytes, signer) -> None:
    result = verify_bundle(rezip(bundle, lambda m: m.pop("systems/crm.json")), signer.public_key)
    assert not result.ok
    assert result.reason == "member systems/crm.json: missing"


def test_an_added_member_is_named(bundle: bytes, signer) -> None:
    def add(members: dict[str, bytes]) -> None:
        members["systems/marketing.json"] = b'{"found":0}'

    result = verify_bundle(rezip(bundle, add), signer.public_key)
    assert not result.ok
    assert result.reason == "no unlisted members: not in the manifest: systems/marketing.json"


def test_a_missing_signature_is_named(bundle: bytes, signer) -> None:
    result = verify_bundle(rezip(bundle, lambda m: m.pop("manifest.sig")), signer.public_key)
    assert not result.ok
    assert result.reason == "signature: missing"


def test_edited_timeline_with_recomputed_hashes_is_caught_by_the_signature(bundle: bytes, signer) -> None:
    # The attacker rewrites an event, rebuilds a consistent chain and every manifest hash: only the
    # signature (which they cannot redo) still tells.
    steps = [(a, t, dict(p)) for a, t, p in STEPS]
    steps[5][2]["remaining"] = 5  # the crm re-query "found nothing" becomes "found 5"
    forged_events = make_chain(steps)

    def forge(members: dict[str, bytes]) -> None:
        lines = [canonical_json(event.to_dict()) + "\n" for event in forged_events]
        members["timeline.jsonl"] = "".join(lines).encode()
        manifest = json.loads(members["manifest.json"])
        manifest["last_event_hash"] = forged_events[-1].hash
        for name, content in members.items():
            if name in manifest["members"]:
                manifest["members"][name] = {"sha256": hashlib.sha256(content).hexdigest(),
                                             "bytes": len(content)}
        members["manifest.json"] = canonical_json(manifest).encode()

    result = verify_bundle(rezip(bundle, forge), signer.public_key)

    assert not result.ok
    assert result.reason.startswith("signature:"), result.reason
    assert set(failed(result)) == {"signature"}  # everything else was made to look consistent


def test_edited_timeline_without_rechaining_fails_chain_and_signature(bundle: bytes, signer) -> None:
    def edit(members: dict[str, bytes]) -> None:
        members["timeline.jsonl"] = members["timeline.jsonl"].replace(b'"remaining":0', b'"remaining":5')
        manifest = json.loads(members["manifest.json"])
        content = members["timeline.jsonl"]
        manifest["members"]["timeline.jsonl"] = {"sha256": hashlib.sha256(content).hexdigest(),
                                                 "bytes": len(content)}
        members["manifest.json"] = canonical_json(manifest).encode()

    result = verify_bundle(rezip(bundle, edit), signer.public_key)

    assert not result.ok
    assert {"signature", "timeline chain"} <= set(failed(result))
    assert "seq 6" in failed(result)["timeline chain"]


def test_reordered_timeline_events_are_detected(bundle: bytes, signer) -> None:
    def swap(members: dict[str, bytes]) -> None:
        lines = members["timeline.jsonl"].splitlines(keepends=True)
        lines[2], lines[3] = lines[3], lines[2]
        members["timeline.jsonl"] = b"".join(lines)

    result = verify_bundle(rezip(bundle, swap), signer.public_key)

    assert not result.ok
    assert {"timeline chain", "member timeline.jsonl"} <= set(failed(result))
    assert "altered" in failed(result)["member timeline.jsonl"]


def test_wrong_public_key_fails(bundle: bytes, tmp_path: Path) -> None:
    other = load_or_create_signing_key(tmp_path / "other" / "signing.key")
    result = verify_bundle(bundle, other.public_key)
    assert not result.ok
    assert result.reason.startswith("signer: signed by key")
    assert "signature" in failed(result)


def test_attacker_resigning_with_own_key_fails_against_the_real_key(bundle: bytes, signer, tmp_path) -> None:
    attacker = load_or_create_signing_key(tmp_path / "attacker.key")

    def resign(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        manifest["signer_fingerprint"] = attacker.fingerprint
        members["manifest.json"] = canonical_json(manifest).encode()
        members["manifest.sig"] = attacker.sign(members["manifest.json"])

    forged = rezip(bundle, resign)
    assert verify_bundle(forged, attacker.public_key).ok  # consistent with itself...
    result = verify_bundle(forged, signer.public_key)  # ...but not with the key the auditor holds
    assert not result.ok and result.reason.startswith("signer:")


@pytest.mark.parametrize("junk", [b"", b"not a zip", b"PK\x03\x04" + b"\x00" * 40])
def test_garbage_is_a_verdict_not_an_exception(junk: bytes, signer) -> None:
    result = verify_bundle(junk, signer.public_key)
    assert not result.ok
    assert result.reason.startswith("zip readable")


def test_missing_file_is_a_verdict(tmp_path: Path, signer) -> None:
    result = verify_bundle(tmp_path / "nope" / "evidence-v3.zip", signer.public_key)
    assert not result.ok and result.version == 3 and result.reason.startswith("bundle readable")


# --- sealing refuses -----------------------------------------------------------------------------


def test_broken_chain_refuses_to_seal(events: list[LedgerEvent], signer) -> None:
    edited = list(events)
    edited[4] = dataclasses.replace(edited[4], payload={**edited[4].payload, "actions": {"delete": 1}})
    with pytest.raises(BundleError, match="broken chain.*seq 5"):
        build_bundle(edited, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer)
    with pytest.raises(BundleError, match="broken chain"):
        build_bundle(events[1:], request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer)
    with pytest.raises(BundleError, match="without ledger events"):
        build_bundle([], request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer)


def test_view_about_another_request_refuses_to_seal(events: list[LedgerEvent], signer) -> None:
    with pytest.raises(BundleError, match="not the ledger's request"):
        build_bundle(events, request_view={**REQUEST_VIEW, "request_id": "req-other"}, system_views={},
                     signer=signer)


def test_unusable_views_refuse_to_seal(events: list[LedgerEvent], signer) -> None:
    with pytest.raises(BundleError, match="cannot be a bundle member name"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views={"../crm": {}}, signer=signer)
    with pytest.raises(BundleError, match="systems/crm.json: not JSON-able"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views={"crm": {"x": object()}}, signer=signer)


def test_an_email_address_refuses_to_seal_without_being_quoted(events: list[LedgerEvent], signer) -> None:
    views = {**SYSTEM_VIEWS, "crm": {**SYSTEM_VIEWS["crm"], "error": "no match for Jane.Doe@example.com"}}
    with pytest.raises(BundleError, match=r"systems/crm\.json at /error") as caught:
        build_bundle(events, request_view=REQUEST_VIEW, system_views=views, signer=signer)
    assert "example.com" not in str(caught.value)


def test_no_email_address_anywhere_in_the_bundle(bundle: bytes) -> None:
    for name, content in members_of(bundle).items():
        if name != "manifest.sig":
            assert not EMAIL.search(content.decode("utf-8")), name


# --- keys ----------------------------------------------------------------------------------------


def test_key_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "keys" / "signing.key"
    first = load_or_create_signing_key(path)
    pem = path.read_bytes()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    second = load_or_create_signing_key(path)
    assert second.fingerprint == first.fingerprint
    assert path.read_bytes() == pem
    assert public_key_path(path) == tmp_path / "deep" / "keys" / "signing.key.pub"
    public = load_public_key(public_key_path(path))
    assert verify_signature(public, first.sign(b"evidence"), b"evidence")
    assert not verify_signature(public, first.sign(b"evidence"), b"evidencE")
    assert first.fingerprint == hashlib.sha256(public.public_bytes_raw()).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["signing.key", "signing.key.pub"]


def test_malformed_key_is_reported_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError, match=re.escape(str(path))):
        load_or_create_signing_key(path)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\ngarbage")


def test_mismatched_public_key_file_is_reported(tmp_path: Path) -> None:
    load_or_create_signing_key(tmp_path / "a.key")
    load_or_create_signing_key(tmp_path / "b.key")
    public_key_path(tmp_path / "b.key").write_bytes(public_key_path(tmp_path / "a.key").read_bytes())
    with pytest.raises(SigningKeyError, match="does not match"):
        load_or_create_signing_key(tmp_path / "b.key")


# --- report.html ---------------------------------------------------------------------------------


def test_report_is_self_contained_escaped_and_about_the_request(bundle: bytes) -> None:
    report = members_of(bundle)["report.html"].decode("utf-8")

    assert "http://" not in report and "https://" not in report
    assert not re.search(r"""(src|href)\s*=|url\(|@import|<script|<link|<img""", report, re.IGNORECASE)
    assert "&lt;script&gt;" in report
    assert REQUEST_ID in report
    assert "@media print" in report
    for shown in ("gdpr", "web-form", "2025-04-03", "holidays 0.62 IE", "sf-del-7731", "crm-sandbox/1.2",
                  "Tax law: invoices kept 6 years", "2031-03-31", "system.erased", "0 unexpected left",
                  "gdpr/art12(3)+reg1182/71 v1", IDENTITY, "email-link"):
        assert shown in report, shown


def test_report_survives_empty_and_odd_views() -> None:
    html = render_report([], {}, {"odd": {"found": "many", "actions": ["delete", {"action": "x"}],
                                          "requery": [1, 2], "exemptions": "tax"}, "empty": {}}, {})
    assert html.startswith("<!DOCTYPE html>") and "—" in html and "odd" in html


def test_report_is_deterministic(events: list[LedgerEvent]) -> None:
    summary: Mapping[str, Any] = {"request_id": REQUEST_ID, "through_seq": len(STEPS)}
    assert render_report(events, REQUEST_VIEW, SYSTEM_VIEWS, summary) == render_report(
        events, dict(REQUEST_VIEW), dict(reversed(SYSTEM_VIEWS.items())), summary)


# --- format 2: discovery refs sealed beside the chain -------------------------------------------

REFS = [{"object": "Contact", "id": "003A1", "categories": ["contact"], "anchor_date": None},
        {"object": "Lead", "id": "00QB2", "categories": ["marketing"], "anchor_date": None}]


def refs_chain(tmp_path: Path, refs: list[dict[str, Any]] = REFS) -> tuple[list[LedgerEvent], Path]:
    """STEPS with the crm discovery recorded as dsr.run now records it: a refs file's hash."""
    from dsr.discovery import REFS_FILE, REFS_SHA256, write_refs

    written = write_refs(tmp_path / "discovered" / "crm.refs.jsonl", refs)
    steps = [(a, t, dict(p)) for a, t, p in STEPS]
    discovered = steps[3][2]
    del discovered["refs"]
    discovered.update({REFS_FILE: written.path.name, REFS_SHA256: written.sha256})
    return make_chain(steps), written.path


def test_discovered_refs_are_sealed_as_a_member_the_timeline_vouches_for(tmp_path: Path, signer) -> None:
    events, refs_file = refs_chain(tmp_path)
    data = build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                        discovered={"crm": refs_file})

    members = members_of(data)
    assert json.loads(members["manifest.json"])["format"] == BUNDLE_FORMAT == "dsr-evidence-bundle/2"
    assert [json.loads(line) for line in members["discovered/crm.jsonl"].splitlines()] == REFS
    timeline = [json.loads(line) for line in members["timeline.jsonl"].splitlines()]
    assert [e["payload"].get("refs") for e in timeline if e["type"] == "system.discovered"] == [None, None]
    result = verify_bundle(data, signer.public_key)
    assert result.ok, result.reason
    assert ("discovered refs match the timeline", True,
            "1 refs file(s), each the one its system.discovered event hashed") in result.checks
    assert build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                        discovered={"crm": refs_file}) == data  # still a pure function of its inputs


def test_refs_changed_or_lost_after_discovery_cannot_be_sealed(tmp_path: Path, signer) -> None:
    events, refs_file = refs_chain(tmp_path)
    with pytest.raises(BundleError, match="crm, but no refs file was given"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer)
    refs_file.write_text(refs_file.read_text().replace("003A1", "003A9"))
    with pytest.raises(BundleError, match="not the one the chain recorded at discovery"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                     discovered={"crm": refs_file})
    refs_file.unlink()
    with pytest.raises(BundleError, match="cannot read the refs file"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                     discovered={"crm": refs_file})


def test_refs_holding_an_address_are_refused(tmp_path: Path, signer) -> None:
    events, refs_file = refs_chain(tmp_path, [*REFS, {"object": "Lead", "id": "ada@example.com",
                                                      "categories": [], "anchor_date": None}])
    with pytest.raises(BundleError, match="discovered/crm.jsonl line 3 looks like an e-mail address"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                     discovered={"crm": refs_file})


@pytest.mark.parametrize("spelled", ["ada@example.com", "ada at example dot com", "ad%61@example.com",
                                     "ada\uff20example.com"])
def test_an_address_deep_in_a_large_refs_file_is_refused_by_its_line(tmp_path: Path, signer, spelled: str) -> None:
    """Refs files are screened a block of lines at a time: the block's one look must not let
    through any line's address, however it is spelled, and the refusal names the line."""
    refs = [{"object": "Contact", "id": f"003A{n:06d}", "categories": ["contact"], "anchor_date": "2024-01-01"}
            for n in range(30_000)]
    refs[25_000] = {**refs[25_000], "id": spelled}
    events, refs_file = refs_chain(tmp_path, refs)
    assert refs_file.stat().st_size > 2 << 20  # several blocks
    with pytest.raises(BundleError, match="discovered/crm.jsonl line 25001 looks like an e-mail address"):
        build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                     discovered={"crm": refs_file})
    refs[25_000] = {**refs[25_000], "id": "003A-at-home"}
    events, refs_file = refs_chain(tmp_path, refs)
    data = build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                        discovered={"crm": refs_file})
    assert members_of(data)["discovered/crm.jsonl"] == refs_file.read_bytes()


def test_swapped_refs_are_caught_by_the_chain_even_under_a_valid_signature(tmp_path: Path, signer) -> None:
    """Someone holding the signing key swaps what was found and re-signs: the timeline's hash,
    recorded at discovery, still disagrees."""
    events, refs_file = refs_chain(tmp_path)
    data = build_bundle(events, request_view=REQUEST_VIEW, system_views=SYSTEM_VIEWS, signer=signer,
                        discovered={"crm": refs_file})

    def swap_and_resign(members: dict[str, bytes]) -> None:
        members["discovered/crm.jsonl"] = members["discovered/crm.jsonl"].splitlines(keepends=True)[0]
        manifest = json.loads(members["manifest.json"])
        content = members["discovered/crm.jsonl"]
        manifest["members"]["discovered/crm.jsonl"] = {"sha256": hashlib.sha256(content).hexdigest(),
                                                       "bytes": len(content)}
        members["manifest.json"] = canonical_json(manifest).encode()
        members["manifest.sig"] = signer.sign(members["manifest.json"])

    result = verify_bundle(rezip(data, swap_and_resign), signer.public_key)
    assert not result.ok
    assert set(failed(result)) == {"discovered refs match the timeline"}
    assert "not the refs file the timeline recorded" in failed(result)["discovered refs match the timeline"]


def test_report_timeline_json_wraps_inside_the_page(bundle: bytes) -> None:
    """An event's payload summary holds long unbroken tokens (hashes, JSON): its cell must be allowed to
    break anywhere, or a long line runs off the printed page."""
    report = members_of(bundle)["report.html"].decode("utf-8")
    assert re.search(r"td\.details\s*\{\s*overflow-wrap:\s*anywhere", report)
    cells = re.findall(r'<td class="details">([^<]*)</td>', report)
    assert cells and any("hmac-sha256:" in cell for cell in cells), "the timeline's payload cells carry the class"
