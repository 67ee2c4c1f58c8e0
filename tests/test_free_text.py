"""Notes and reasons live beside the hash chain: events hold their SHA-256, the words can be redacted,
and the chain, the evidence and every view still hold together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from doors.api.app import create_app
from doors.cli import app as cli_app
from dsr.access import AccessConfig, Role, TokenEntry, token_hash
from dsr.bundle import build_bundle
from dsr.holds import add_hold, holds
from dsr.ledger.texts import REDACTED_TEXT, store_texts, text_reference, text_sha256
from dsr.models import RequestInputError, parse_new_request
from dsr.personal_text import REDACTED_EMAIL
from dsr.service import DsrService, RequestStateError
from dsr.settings import Settings
from dsr.signing import load_or_create_signing_key
from dsr.state import EventType, derive_state
from tests.test_api import AUDITOR, OFFICER, LocalEvidence

NOTES = {
    "received": "arrived by post, envelope kept",
    "verified": "passport checked at the front desk",
    "paused": "asked for a copy of the utility bill",
    "extended": "records spread over twelve systems",
    "acknowledged": "acknowledgement letter posted",
    "cancelled": "withdrawn by phone",
}
#: What got past an older filter: the kind of text redaction exists for.
SLIPPED = "subject says write to ada＠example.org instead"


def _submit(service: DsrService, note: str | None = None) -> str:
    new = parse_new_request(type="erasure", email="Ada.Lovelace@Example.com", regime="gdpr",
                            received=datetime.now(UTC) - timedelta(days=1), note=note)
    return service.submit(new).state.request_id


def _life(service: DsrService) -> str:
    """A request that went through every step that takes free text."""
    request_id = _submit(service, NOTES["received"])
    service.verify(request_id, method="id-document", note=NOTES["verified"])
    service.pause(request_id, wait_for="id", reason=NOTES["paused"])
    service.resume(request_id, wait_for="id")
    service.extend(request_id, reason=NOTES["extended"])
    service.acknowledge(request_id, note=NOTES["acknowledged"])
    service.cancel(request_id, reason=NOTES["cancelled"])
    return request_id


def test_events_carry_the_hash_of_each_note_and_the_words_are_kept_beside_the_chain(service: DsrService) -> None:
    request_id = _life(service)
    events = service.events(request_id)
    chained = json.dumps([e.to_dict() for e in events], ensure_ascii=False)
    for text in NOTES.values():
        assert text not in chained  # not in a payload, nor inside a deadline's extension reason
        assert text_sha256(text) in chained
    kept = service.ledger.free_texts(request_id)
    assert {row.text for row in kept.values()} == set(NOTES.values())
    assert service.ledger.verify(request_id) == len(events)

    shown = service.state(request_id)
    assert shown.verification["note"] == NOTES["verified"]
    assert shown.cancel_reason == NOTES["cancelled"]
    assert [c.reason for c in shown.clock if c.reason] == [NOTES["paused"], NOTES["extended"]]
    assert shown.deadline["extension_reason"] == NOTES["extended"]
    assert any(NOTES["extended"] in step for step in shown.deadline["steps"])

    alone = service.chain_state(request_id)  # what the bundle and the guards see
    assert alone.verification["note"] == text_reference(text_sha256(NOTES["verified"]))
    assert alone.deadline["extension_reason"] == text_reference(text_sha256(NOTES["extended"]))


def test_redacting_a_note_removes_the_words_and_the_chain_still_verifies(service: DsrService) -> None:
    request_id = _life(service)
    digest = text_sha256(NOTES["verified"])
    before = service.events(request_id)

    service.redact_text(request_id, text_sha256=digest, reason="held a name", actor="dpo")

    after = service.events(request_id)
    assert [e.hash for e in after[:-1]] == [e.hash for e in before]
    assert after[-1].type == EventType.TEXT_REDACTED and after[-1].payload == {"sha256": digest}
    assert after[-1].actor == "dpo"
    assert service.ledger.verify(request_id) == len(after)
    row = service.ledger.free_texts(request_id)[digest]
    assert row.text is None and row.redacted_reason == "held a name" and row.redacted_at == after[-1].at
    assert service.state(request_id).verification["note"] == REDACTED_TEXT
    assert service.state(request_id).cancel_reason == NOTES["cancelled"]  # the others are untouched
    listed = {r["sha256"]: r for r in service.free_text_list(request_id)}
    assert listed[digest]["kept"] is False and listed[text_sha256(NOTES["cancelled"])]["kept"] is True

    with pytest.raises(RequestStateError, match="already redacted"):
        service.redact_text(request_id, text_sha256=digest, reason="again")
    assert len(service.events(request_id)) == len(after)


@pytest.mark.parametrize("sha, reason, field", [
    ("not-a-hash", "held a name", "text_sha256"),
    ("0" * 64, "held a name", "text_sha256"),  # no event references it
    (text_sha256(NOTES["verified"]), "  ", "reason"),
    (text_sha256(NOTES["verified"]), "it named x (at) example.org", "reason"),
    (text_sha256(NOTES["verified"]), "x" * 201, "reason"),
])
def test_a_bad_redaction_is_refused_naming_the_field(sqlite_service: DsrService, sha: str, reason: str,
                                                     field: str) -> None:
    request_id = _submit(sqlite_service)
    sqlite_service.verify(request_id, method="id-document", note=NOTES["verified"])
    with pytest.raises(RequestInputError) as caught:
        sqlite_service.redact_text(request_id, text_sha256=sha, reason=reason)
    assert caught.value.field == field
    assert sqlite_service.ledger.free_texts(request_id)[text_sha256(NOTES["verified"])].text == NOTES["verified"]


def test_the_evidence_bundle_seals_hashes_only_and_rebuilds_the_same_after_a_redaction(
        sqlite_service: DsrService, tmp_path: Path) -> None:
    service = sqlite_service
    request_id = _life(service)
    signer = load_or_create_signing_key(tmp_path / "signing.key")

    def seal() -> bytes:
        state = derive_state(service.events(request_id))
        return build_bundle(service.events(request_id)[:state.last_seq], request_view=state.to_view(),
                            system_views={}, signer=signer)

    through = service.chain_state(request_id).last_seq
    first = seal()
    for text in NOTES.values():
        assert text.encode() not in first
    service.redact_text(request_id, text_sha256=text_sha256(NOTES["paused"]), reason="not needed")
    events = service.events(request_id)[:through]
    state = derive_state(events)
    again = build_bundle(events, request_view=state.to_view(), system_views={}, signer=signer)
    assert again == first


def test_old_chains_with_notes_in_the_clear_still_verify_and_show(service: DsrService) -> None:
    request_id = _submit(service)
    # As events were written before free text left the chain.
    service.ledger.append(request_id, EventType.VERIFIED, {"method": "email-code", "note": "old clear note"},
                          actor="officer")
    service.ledger.append(request_id, EventType.CANCELLED, {"reason": "old clear reason"}, actor="officer")
    assert service.ledger.verify(request_id) == 3
    for state in (service.state(request_id), service.chain_state(request_id)):
        assert state.verification["note"] == "old clear note" and state.cancel_reason == "old clear reason"
    assert service.free_text_list(request_id) == []


def test_an_address_in_a_note_is_refused_at_the_door_in_any_spelling(sqlite_service: DsrService) -> None:
    request_id = _submit(sqlite_service)
    for note in ("ask rel.nöte@exämple.org", "ask x (at) example (dot) org", "x&#64;example.org", SLIPPED):
        with pytest.raises(RequestInputError) as caught:
            sqlite_service.verify(request_id, method="id-document", note=note)
        assert caught.value.field == "note"
    assert len(sqlite_service.events(request_id)) == 1
    assert sqlite_service.ledger.free_texts(request_id) == {}


def test_hold_reasons_are_kept_beside_their_chain(sqlite_service: DsrService) -> None:
    hold = add_hold(sqlite_service, email="ada@example.com", ref="LIT-1", reason="prospect of litigation")
    assert hold.reason == "prospect of litigation"
    [event] = sqlite_service.events("hold-LIT-1")
    assert "reason" not in event.payload and event.payload["reason_sha256"] == text_sha256("prospect of litigation")
    sqlite_service.redact_text("hold-LIT-1", text_sha256=text_sha256("prospect of litigation"), reason="wrong case")
    assert [h.reason for h in holds(sqlite_service)] == [REDACTED_TEXT]
    assert sqlite_service.ledger.verify("hold-LIT-1") == 2
    with pytest.raises(RequestInputError) as caught:
        add_hold(sqlite_service, email="ada@example.com", ref="LIT-2", reason="per x [at] example.org")
    assert caught.value.field == "reason"


@pytest.fixture
def slipped(crm_only_service: DsrService) -> Iterator[tuple[TestClient, DsrService, str]]:
    """A request with a note holding an address, written as an older, weaker filter let it through."""
    service = crm_only_service
    request_id = _submit(service)
    service.ledger.append(request_id, EventType.VERIFIED, {"method": "id-document", "note_sha256": text_sha256(SLIPPED)},
                          actor="officer", texts=store_texts([SLIPPED]))
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),
                                  TokenEntry(name="kpmg", role=Role.AUDITOR, sha256=token_hash(AUDITOR))))
    with TestClient(create_app(service, access, LocalEvidence(service))) as client:
        yield client, service, request_id


def test_auditors_see_notes_with_addresses_redacted_officers_see_the_words(slipped) -> None:
    client, _, request_id = slipped
    auditor, officer = {"Authorization": f"Bearer {AUDITOR}"}, {"Authorization": f"Bearer {OFFICER}"}
    timeline = client.get(f"/requests/{request_id}/timeline", headers=auditor)
    assert timeline.status_code == 200
    assert timeline.json()[1]["free_text"] == {"note": f"subject says write to {REDACTED_EMAIL} instead"}
    record = client.get(f"/requests/{request_id}", headers=auditor).json()
    assert record["verification"]["note"] == f"subject says write to {REDACTED_EMAIL} instead"
    client.cookies.set("dsr_token", AUDITOR)
    page = client.get(f"/auditor/requests/{request_id}")
    assert page.status_code == 200 and "subject says write to" in page.text
    for body in (timeline.text, json.dumps(record), page.text):
        assert "ada＠example.org" not in body and "ada@example.org" not in body
    client.cookies.clear()
    assert client.get(f"/requests/{request_id}/timeline", headers=officer).json()[1]["free_text"] == {"note": SLIPPED}


def test_dsr_redact_removes_the_text_everywhere_and_ledger_verify_still_passes(
        slipped, monkeypatch: pytest.MonkeyPatch) -> None:
    client, service, request_id = slipped
    settings: Settings = service.settings
    monkeypatch.setenv("DSR_HOME", str(settings.home))
    monkeypatch.setenv("DSR_CONFIG_DIR", str(settings.config_dir))
    monkeypatch.setenv("DSR_SYSTEMS_FILE", str(settings.systems_path))
    monkeypatch.setenv("DSR_IDENTITY_KEY", "test-identity-key")
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["texts", request_id, "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["field"], row["sha256"], row["kept"]) == ("note", text_sha256(SLIPPED), True)

    bad = runner.invoke(cli_app, ["redact", request_id, "--text-sha256", "abc", "--reason", "held an address"])
    assert bad.exit_code == 2 and "text_sha256" in bad.output
    done = runner.invoke(cli_app, ["redact", request_id, "--text-sha256", row["sha256"], "--reason", "held an address"])
    assert done.exit_code == 0, done.output
    again = runner.invoke(cli_app, ["redact", request_id, "--text-sha256", row["sha256"], "--reason", "held an address"])
    assert again.exit_code == 3

    assert runner.invoke(cli_app, ["ledger", "verify", request_id]).exit_code == 0
    status = runner.invoke(cli_app, ["status", request_id, "--json"])
    assert json.loads(status.output)["verification"]["note"] == REDACTED_TEXT
    officer = {"Authorization": f"Bearer {OFFICER}"}
    assert client.get(f"/requests/{request_id}/timeline", headers=officer).json()[1]["free_text"] == {
        "note": REDACTED_TEXT}
    assert "write to" not in json.dumps([e.to_dict() for e in service.events(request_id)])


def test_an_old_chains_clear_note_holding_an_address_is_redacted_for_auditors(slipped) -> None:
    """Before free text left the chain, an internationalised address got past the old filter into a
    payload; the auditor's timeline, record and page must not show it."""
    client, service, request_id = slipped
    service.ledger.append(request_id, EventType.CANCELLED, {"reason": "duplicate of rel.nöte@exämple.org"},
                          actor="officer")
    auditor = {"Authorization": f"Bearer {AUDITOR}"}
    timeline = client.get(f"/requests/{request_id}/timeline", headers=auditor)
    assert timeline.json()[-1]["payload"] == {"reason": f"duplicate of {REDACTED_EMAIL}"}
    record = client.get(f"/requests/{request_id}", headers=auditor)
    assert record.json()["cancel_reason"] == f"duplicate of {REDACTED_EMAIL}"
    client.cookies.set("dsr_token", AUDITOR)
    page = client.get(f"/auditor/requests/{request_id}")
    assert page.status_code == 200 and "duplicate of" in page.text
    for body in (timeline.text, record.text, page.text):
        assert "exämple" not in body and "ex&auml;mple" not in body
