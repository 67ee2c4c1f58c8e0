"""The record cannot be made to lie: what someone with write access to the ledger's database
can edit, and how each edit is caught (DESIGN invariant 6; docs/reliability.md, "Tampering").

Every edit here is a plain SQL statement on the ledger's tables (or a cut of the anchor file),
as an attacker with database access would make it, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from connectors.registry import build_connector
from doors.cli import app
from dsr.contract import Connector
from dsr.ledger.anchors import SignedHead
from dsr.ledger.events import LedgerEvent, canonical_json
from dsr.ledger.store import ChainTampered, IdentityTampered, Ledger
from dsr.models import parse_new_request
from dsr.run import RequestRunner, SealConflict
from dsr.service import DsrService
from dsr.settings import Settings
from dsr.state import index_row
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()


def _crm_only_map(tmp_path: Path, crm_url: str) -> Path:
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    crm = demo["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    path = tmp_path / "systems-crm-only.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    return path


@pytest.fixture
def svc(tmp_path: Path, crm_url: str, ledger_url: str) -> Iterator[DsrService]:
    """The service on SQLite and on PostgreSQL, its data map the demo CRM alone (fast runs)."""
    settings = Settings(home=tmp_path / "var", config_dir=REPO / "config",
                        systems_file=_crm_only_map(tmp_path, crm_url), identity_key="test-identity-key")
    service = DsrService(settings, Ledger(ledger_url, projector=index_row))
    yield service
    service.close()


@pytest.fixture
def cli_env(tmp_path: Path, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
           "DSR_SYSTEMS_FILE": str(_crm_only_map(tmp_path, crm_url)), "DSR_IDENTITY_KEY": "cli-test-key"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def _submit(service: DsrService, email: str, kind: str = "erasure", *, verify: bool = True) -> str:
    new = parse_new_request(type=kind, email=email, regime="gdpr", received=datetime.now(UTC), channel="web-form")
    request_id = service.submit(new).state.request_id
    if verify:
        service.verify(request_id, method="email-code", note="code returned")
    return request_id


def _connect(service: DsrService, system: str, calls: list[str] | None = None) -> Callable[[], Connector]:
    config = service.data_map.systems[system]

    def connect() -> Connector:
        if calls is not None:
            calls.append(system)
        return build_connector(system, config.kind, config.settings)

    return connect


def _run(service: DsrService, request_id: str, calls: list[str] | None = None):
    runner = RequestRunner(service)
    plan = runner.begin(request_id)
    for system in plan.systems:
        runner.run_system(request_id, system, _connect(service, system, calls))
    return runner.finish(request_id)


def _completed(service: DsrService) -> str:
    request_id = _submit(service, ERASURE_SUBJECT)
    assert _run(service, request_id).ok
    return request_id


def _sql(service: DsrService, statement: str, **params: object) -> int:
    """The attacker's edit: one statement, committed."""
    with service.ledger.engine.begin() as conn:
        return conn.execute(text(statement), params).rowcount


def _crm_contacts(crm_url: str, email: str) -> int:
    with sqlite3.connect(crm_url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT count(*) FROM contacts WHERE lower(email) = ?", (email,)).fetchone()[0]


def _problems(service: DsrService, request_id: str | None = None) -> str:
    return "\n".join(str(p) for p in service.ledger.audit(request_id).problems)


def _delete_last_events(service: DsrService, request_id: str, count: int) -> None:
    last = max(e.seq for e in service.events(request_id))
    _sql(service, "DELETE FROM dsr_events WHERE request_id = :r AND seq > :s", r=request_id, s=last - count)


# -- 1. the identity the runner acts on ------------------------------------------------------------


@pytest.mark.parametrize("swap", ["copy Grace's row", "replace the address only"])
def test_a_swapped_identity_row_stops_the_run_before_any_connector_call(svc: DsrService, crm_url: str,
                                                                        swap: str) -> None:
    ada = _submit(svc, ERASURE_SUBJECT)
    grace = _submit(svc, ACCESS_SUBJECT, "access", verify=False)
    grace_before = _crm_contacts(crm_url, ACCESS_SUBJECT)
    assert grace_before > 0
    if swap == "copy Grace's row":
        _sql(svc, "UPDATE dsr_identities SET value = (SELECT value FROM dsr_identities WHERE request_id = :g), "
                  "hash = (SELECT hash FROM dsr_identities WHERE request_id = :g) WHERE request_id = :a",
             g=grace, a=ada)
    else:
        _sql(svc, "UPDATE dsr_identities SET value = :v WHERE request_id = :a", v=ACCESS_SUBJECT, a=ada)
    events_before = len(svc.events(ada))

    calls: list[str] = []
    with pytest.raises(IdentityTampered) as refused:
        _run(svc, ada, calls)
    assert ada in str(refused.value) and "does not match the chain" in str(refused.value)
    assert "grace" not in str(refused.value).lower()
    assert calls == []  # no connector was even built
    assert _crm_contacts(crm_url, ACCESS_SUBJECT) == grace_before  # Grace's records untouched
    assert svc.state(ada).status.value == "verified" and len(svc.events(ada)) == events_before
    with pytest.raises(IdentityTampered):  # every reader of the address gets the same refusal
        svc.ledger.identity(ada)
    assert f"{ada}: the identity row does not match the chain" in _problems(svc)
    assert svc.ledger.identity(grace) == ACCESS_SUBJECT  # the untouched row still reads


def test_dsr_run_refuses_a_swapped_identity_clearly_and_ledger_verify_names_it(cli_env: Settings) -> None:
    service = DsrService(cli_env)
    try:
        ada = _submit(service, ERASURE_SUBJECT)
        grace = _submit(service, ACCESS_SUBJECT, "access", verify=False)
        _sql(service, "UPDATE dsr_identities SET value = (SELECT value FROM dsr_identities WHERE request_id = :g), "
                      "hash = (SELECT hash FROM dsr_identities WHERE request_id = :g) WHERE request_id = :a",
             g=grace, a=ada)
    finally:
        service.close()
    ran = cli.invoke(app, ["run", ada])
    assert ran.exit_code == 1, ran.output
    assert "the identity row does not match the chain" in ran.output and ada in ran.output
    assert "Traceback" not in ran.output and "grace" not in ran.output.lower()
    checked = cli.invoke(app, ["ledger", "verify"])
    assert checked.exit_code == 1
    assert f"FAIL {ada}: the identity row does not match the chain" in checked.output
    assert "grace" not in checked.output.lower()


# -- 2. signed heads: a cut tail, a deleted request, an edited index row --------------------------


@pytest.mark.parametrize("deleted, expect", [
    (1, "short of its newest signed head"),
    (3, "short of its newest signed head"),
    ("all", "has no events (deleted)"),
])
def test_deleting_the_newest_events_or_a_whole_request_is_caught(svc: DsrService, deleted: int | str,
                                                                 expect: str) -> None:
    request_id = _completed(svc)
    other = _submit(svc, ACCESS_SUBJECT, "access")
    assert svc.ledger.audit().ok
    if deleted == "all":
        _sql(svc, "DELETE FROM dsr_events WHERE request_id = :r", r=request_id)
    else:
        types = [e.type for e in svc.events(request_id)][-int(deleted):]
        assert types[-1] == "run.released"
        if deleted == 3:
            assert types == ["request.completed", "bundle.sealed", "run.released"]
        _delete_last_events(svc, request_id, int(deleted))
    found = svc.ledger.audit()
    assert not found.ok
    assert any(p.subject == request_id and expect in p.what for p in found.problems), found.problems
    assert all(p.subject != other for p in found.problems)  # the intact request is not blamed
    with pytest.raises(ChainTampered, match=request_id):  # nothing more is written to it either
        svc.cancel(request_id, reason="test")


@pytest.mark.parametrize("column, value", [
    ("status", "completed"), ("due", "2099-12-31"), ("type", "access"), ("regime", "ccpa"), ("last_seq", 1),
])
def test_an_edited_index_row_is_caught(svc: DsrService, column: str, value: object) -> None:
    request_id = _submit(svc, ERASURE_SUBJECT)
    _sql(svc, f"UPDATE dsr_requests SET {column} = :v WHERE request_id = :r", v=value, r=request_id)
    assert [getattr(r, column) for r in svc.list() if r.request_id == request_id] == [value]  # what `dsr list` shows
    assert f"{request_id}: index row says {column}={value!r}" in _problems(svc)


def test_a_chain_rewritten_with_fresh_hashes_is_caught_by_its_signed_head(svc: DsrService) -> None:
    """Hashes need no key: an attacker can rewrite a whole chain (here: put Grace's identity hash
    into Ada's request) and recompute every hash. Only the signed head gives it away."""
    ada = _submit(svc, ERASURE_SUBJECT)
    grace = _submit(svc, ACCESS_SUBJECT, "access", verify=False)
    grace_hash = svc.events(grace)[0].payload["identity_hash"]
    prev = "0" * 64
    with svc.ledger.engine.begin() as conn:
        for e in svc.events(ada):
            payload = dict(e.payload)
            if e.seq == 1:
                payload["identity_hash"] = grace_hash
            forged = LedgerEvent.create(ada, e.seq, e.timestamp, e.actor, e.type, payload, prev)
            conn.execute(text("UPDATE dsr_events SET payload = :p, prev_hash = :ph, hash = :h "
                              "WHERE request_id = :r AND seq = :s"),
                         {"p": canonical_json(forged.payload), "ph": forged.prev_hash, "h": forged.hash,
                          "r": ada, "s": e.seq})
            prev = forged.hash
        conn.execute(text("UPDATE dsr_identities SET value = :v, hash = :h WHERE request_id = :r"),
                     {"v": ACCESS_SUBJECT, "h": grace_hash, "r": ada})
    assert "is not the one its signed head names (rewritten)" in _problems(svc, ada)
    with pytest.raises(ChainTampered):
        svc.ledger.identity(ada)
    with pytest.raises(ChainTampered):
        RequestRunner(svc).begin(ada)


def test_an_event_inserted_around_the_ledger_is_caught(svc: DsrService) -> None:
    """A forged `request.completed` appended with a correct hash, but no signature."""
    request_id = _submit(svc, ERASURE_SUBJECT)
    last = svc.events(request_id)[-1]
    forged = LedgerEvent.create(request_id, last.seq + 1, datetime.now(UTC), "pipeline", "request.completed",
                                {"systems": []}, last.hash)
    _sql(svc, "INSERT INTO dsr_events (request_id, seq, at, actor, type, payload, prev_hash, hash) "
              "VALUES (:r, :s, :at, :a, :t, :p, :ph, :h)", r=request_id, s=forged.seq, at=forged.at,
         a=forged.actor, t=forged.type, p=canonical_json(forged.payload), ph=forged.prev_hash, h=forged.hash)
    assert f"events seq {forged.seq}..{forged.seq} are covered by no signed head" in _problems(svc)


# -- the head log and its anchor file --------------------------------------------------------------


def _heads(service: DsrService) -> list[SignedHead]:
    with service.ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM dsr_chain_heads ORDER BY position")).mappings().all()
    return [SignedHead.from_dict(r) for r in rows]


def test_deleting_the_newest_head_rows_with_the_events_is_caught_by_the_anchor_file(svc: DsrService) -> None:
    """The thorough attacker cuts the chain *and* the head log's tail: the table then agrees with
    itself, and only the anchor file outside the database remembers."""
    request_id = _completed(svc)
    _delete_last_events(svc, request_id, 3)
    newest = max(h.position for h in _heads(svc))
    _sql(svc, "DELETE FROM dsr_chain_heads WHERE position > :p", p=newest - 3)
    problems = _problems(svc)
    assert f"entry #{newest} (request {request_id}" in problems and "is in the anchor file but not in the table" in problems
    assert f"{request_id}: its chain ends at seq" in problems  # the file's newest head still names the cut


def test_a_head_row_deleted_from_the_middle_of_the_log_is_caught(svc: DsrService) -> None:
    _submit(svc, ERASURE_SUBJECT)
    _submit(svc, ACCESS_SUBJECT, "access")
    _sql(svc, "DELETE FROM dsr_chain_heads WHERE position = 2")
    problems = _problems(svc)
    assert "head log: entries #2..#2 are missing (deleted from the table)" in problems
    assert "head log: entry #2" in problems and "is in the anchor file but not in the table" in problems


@pytest.mark.parametrize("forgery", ["edited", "rehashed", "inserted"])
def test_a_forged_head_log_entry_is_caught(svc: DsrService, forgery: str) -> None:
    request_id = _submit(svc, ERASURE_SUBJECT)
    newest = _heads(svc)[-1]
    if forgery == "edited":  # lower the signed seq, so a cut chain would look whole
        _sql(svc, "UPDATE dsr_chain_heads SET seq = 1 WHERE position = :p", p=newest.position)
        expect = "its content differs from its hash (edited)"
    else:
        body = SignedHead(newest.position + (forgery == "inserted"), request_id, 1, svc.events(request_id)[0].hash,
                          newest.at, "request.received",
                          newest.entry_hash if forgery == "inserted" else newest.prev_entry_hash,
                          newest.key_fingerprint)
        entry_hash = hashlib.sha256(body.body()).hexdigest()  # anyone can hash; nobody else can sign
        values = {**body.to_dict(), "entry_hash": entry_hash, "signature": newest.signature}
        if forgery == "rehashed":
            _sql(svc, "DELETE FROM dsr_chain_heads WHERE position = :p", p=newest.position)
        _sql(svc, "INSERT INTO dsr_chain_heads (position, request_id, seq, hash, at, reason, prev_entry_hash, "
                  "key_fingerprint, entry_hash, signature) VALUES (:position, :request_id, :seq, :hash, :at, "
                  ":reason, :prev_entry_hash, :key_fingerprint, :entry_hash, :signature)", **values)
        expect = "its signature does not verify (forged)"
    assert expect in _problems(svc)


def test_a_cut_anchor_file_is_reported(svc: DsrService) -> None:
    _submit(svc, ERASURE_SUBJECT)
    mirror = svc.ledger.anchoring.mirror.path
    lines = mirror.read_bytes().splitlines(keepends=True)
    assert len(lines) == len(_heads(svc)) == 2  # received, verified: one signed head each
    mirror.write_bytes(lines[0])
    found = svc.ledger.audit()
    assert found.ok and [w.what for w in found.warnings] == [
        "lacks 1 entry of the head log (#2..#2): it was cut or edited, or a writer died between commit and mirror"]
    mirror.write_bytes(lines[0] + b'{"position": 2, "forged": true}\n')
    assert "line 2 is not a head log entry" in _problems(svc)


def test_ledger_verify_names_each_problem_and_exits_1(cli_env: Settings) -> None:
    service = DsrService(cli_env)
    try:
        cut = _completed(service)
        edited = _submit(service, ACCESS_SUBJECT, "access")
        intact = _submit(service, ACCESS_SUBJECT, "access", verify=False)
        _delete_last_events(service, cut, 3)
        _sql(service, "UPDATE dsr_requests SET status = 'completed' WHERE request_id = :r", r=edited)
    finally:
        service.close()
    result = cli.invoke(app, ["ledger", "verify"])
    assert result.exit_code == 1, result.output
    assert f"FAIL {cut}: its chain ends at seq" in result.output
    assert f"FAIL {edited}: index row says status='completed', its events say 'verified'" in result.output
    assert f"ok  {intact}" in result.output and "Traceback" not in result.output
    one = cli.invoke(app, ["ledger", "verify", intact])
    assert one.exit_code == 0 and "1 chain(s) verified" in one.output


# -- 3. a re-run after a cut; a bundle against the live ledger -------------------------------------


def test_a_rerun_after_a_cut_is_refused_clearly_before_anything_runs(cli_env: Settings) -> None:
    service = DsrService(cli_env)
    try:
        request_id = _completed(service)
        _delete_last_events(service, request_id, 3)
        remaining = len(service.events(request_id))
    finally:
        service.close()
    ran = cli.invoke(app, ["run", request_id])
    assert ran.exit_code == 1, ran.output
    assert f"the ledger of request {request_id} no longer matches its signed head" in ran.output
    assert "dsr ledger verify" in ran.output and "Traceback" not in ran.output
    service = DsrService(cli_env)
    try:
        assert len(service.events(request_id)) == remaining  # nothing was appended over the cut
    finally:
        service.close()


def test_a_rerun_after_a_cut_that_hid_its_heads_stops_at_the_sealed_bundle(svc: DsrService,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the head log's tail deleted as well, the run gets as far as sealing: the stored bundle
    v1 no longer matches what the ledger builds, and the run says so instead of BundleConflict."""
    # The cut removed run.released: the first run's lease shows again. A re-run is a new process
    # (`dsr run`), whose predecessor is gone; here both are this test's process.
    monkeypatch.setattr("dsr.run.lease.holder_gone", lambda holder: True)
    request_id = _completed(svc)
    _delete_last_events(svc, request_id, 3)
    newest = max(h.position for h in _heads(svc))
    _sql(svc, "DELETE FROM dsr_chain_heads WHERE position > :p", p=newest - 3)
    with pytest.raises(SealConflict) as stopped:
        _run(svc, request_id)
    message = str(stopped.value)
    assert f"the ledger of request {request_id} no longer matches its sealed bundle v1" in message
    assert "dsr ledger verify" in message


def test_bundle_verify_against_the_live_ledger_catches_a_cut(cli_env: Settings) -> None:
    service = DsrService(cli_env)
    try:
        request_id = _completed(service)
        bundle = service.settings.bundles_path / request_id / service.state(request_id).bundles[0]["file"]
    finally:
        service.close()
    ok = cli.invoke(app, ["bundle", "verify", str(bundle), "--request", request_id])
    assert ok.exit_code == 0, ok.output
    assert "matches the live ledger" in ok.output and "bundle intact" in ok.output
    service = DsrService(cli_env)
    try:
        _delete_last_events(service, request_id, 3)  # request.completed (the seal's last event) goes too
    finally:
        service.close()
    cut = cli.invoke(app, ["bundle", "verify", str(bundle), "--request", request_id])
    assert cut.exit_code == 1, cut.output
    assert "the ledger was truncated" in cut.output and "Traceback" not in cut.output
    offline = cli.invoke(app, ["bundle", "verify", str(bundle)])  # the bundle itself is still intact
    assert offline.exit_code == 0


def test_heads_are_signed_once_per_request_append_and_at_the_end_of_other_chains(svc: DsrService) -> None:
    """Request chains sign every append; a hold signs its own two events; the mirror holds them all."""
    from dsr.holds import add_hold, release_hold

    request_id = _submit(svc, ERASURE_SUBJECT)
    add_hold(svc, email=ACCESS_SUBJECT, ref="LIT-1", reason="litigation")
    svc.ledger.append("purge-x", "purge.started", {}, actor="t", expect_new=True, project=False)
    for n in range(5):
        svc.ledger.append("purge-x", "purge.batch", {"n": n}, actor="t", project=False)
    svc.ledger.append("purge-x", "purge.completed", {}, actor="t", project=False)
    release_hold(svc, ref="LIT-1", reason="settled")
    heads = _heads(svc)
    assert [(h.request_id, h.seq) for h in heads] == [
        (request_id, 1), (request_id, 2), ("hold-LIT-1", 1), ("purge-x", 1), ("purge-x", 7), ("hold-LIT-1", 2)]
    mirrored = [json.loads(line) for line in svc.ledger.anchoring.mirror.path.read_text().splitlines()]
    assert [m["entry_hash"] for m in mirrored] == [h.entry_hash for h in heads]
    assert svc.ledger.audit().ok
    assert svc.ledger.identity("hold-LIT-1") == ACCESS_SUBJECT


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_dsr_run_through_prefect_after_a_hidden_cut_ends_with_a_message_not_tracebacks(
        cli_env: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut and its head rows are gone from the table, so `dsr run` starts the flow; sealing
    then finds the stored bundle v1 differs. Prefect must not print the error's tracebacks."""
    monkeypatch.setattr("dsr.run.lease.holder_gone", lambda holder: True)  # see the test above
    service = DsrService(cli_env)
    try:
        request_id = _completed(service)
        _delete_last_events(service, request_id, 3)
        newest = max(h.position for h in _heads(service))
        _sql(service, "DELETE FROM dsr_chain_heads WHERE position > :p", p=newest - 3)
    finally:
        service.close()
    ran = cli.invoke(app, ["run", request_id])
    captured = capfd.readouterr()
    everything = ran.output + captured.out + captured.err
    assert ran.exit_code == 1, everything
    assert f"the ledger of request {request_id} no longer matches its sealed bundle v1" in everything
    assert "dsr ledger verify" in everything
    assert "Traceback" not in everything and "internal error" not in everything


def test_the_api_refuses_a_swapped_identity_naming_the_request_not_the_address(svc: DsrService) -> None:
    from fastapi.testclient import TestClient

    from doors.api.app import create_app
    from dsr.access import AccessConfig, Role, TokenEntry, token_hash
    from dsr.adapters.storage import config_from_settings, open_store

    officer = "officer-token-" + "o" * 30
    ada = _submit(svc, ERASURE_SUBJECT)
    grace = _submit(svc, ACCESS_SUBJECT, "access", verify=False)
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(officer)),))
    with TestClient(create_app(svc, access, open_store(config_from_settings(svc.settings)))) as client:
        headers = {"Authorization": f"Bearer {officer}"}
        assert client.get(f"/requests/{ada}", headers=headers).json()["subject"]["email"] == ERASURE_SUBJECT
        _sql(svc, "UPDATE dsr_identities SET value = (SELECT value FROM dsr_identities WHERE request_id = :g), "
                  "hash = (SELECT hash FROM dsr_identities WHERE request_id = :g) WHERE request_id = :a",
             g=grace, a=ada)
        answer = client.get(f"/requests/{ada}", headers=headers)
    assert answer.status_code == 409
    assert ada in answer.text and "does not match the chain" in answer.text
    assert ACCESS_SUBJECT not in answer.text and ERASURE_SUBJECT not in answer.text


def test_two_processes_writing_in_turn_keep_one_unbroken_head_log(svc: DsrService, ledger_url: str) -> None:
    """Each append signs the next head after the newest in the log, whichever process wrote it:
    two processes taking turns leave it gap-free, each entry linked to the one before."""
    other = Ledger(ledger_url, projector=index_row, anchoring=svc.ledger.anchoring, auto_migrate=False)
    try:
        first = _submit(svc, ERASURE_SUBJECT, verify=False)
        for n in range(3):
            other.append(first, "note.added", {"n": n}, actor="other")  # the newest head is now the other's
            svc.ledger.append(first, "note.added", {"n": n}, actor="first")
    finally:
        other.close()
    heads = _heads(svc)
    assert [h.position for h in heads] == list(range(1, len(heads) + 1)) and len(heads) == 7
    assert all(h.prev_entry_hash == before.entry_hash for before, h in zip(heads, heads[1:], strict=False))
    assert svc.ledger.audit().ok


def test_verifying_while_requests_are_written_reports_nothing(svc: DsrService) -> None:
    """A live ledger is not a tampered one: appends racing the audit must not look like cuts,
    unsigned tails or edited index rows."""
    import threading

    ids = [_submit(svc, ERASURE_SUBJECT, verify=False) for _ in range(3)]
    done = threading.Event()

    def write() -> None:
        try:
            for n in range(40):
                svc.acknowledge(ids[n % 3], note=f"note {n}") if n < 3 else svc.record_download(
                    ids[n % 3], "bundle", by="auditor", role="auditor")
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    audits = []
    while not done.is_set():
        audits.append(svc.ledger.audit())
    writer.join()
    audits.append(svc.ledger.audit())
    assert len(audits) >= 2
    assert [str(p) for a in audits for p in a.problems + a.warnings] == []


def test_bundle_verify_with_request_on_a_machine_without_the_ledger_checks_offline_only(
        cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor verifying a bundle away from the deployment: no ledger appears as a side effect."""
    service = DsrService(cli_env)
    try:
        request_id = _completed(service)
        bundle = service.settings.bundles_path / request_id / service.state(request_id).bundles[0]["file"]
        public_key = Path(str(service.settings.signing_key_path) + ".pub")
    finally:
        service.close()
    elsewhere = tmp_path / "auditor"
    monkeypatch.setenv("DSR_HOME", str(elsewhere))
    result = cli.invoke(app, ["bundle", "verify", str(bundle), "--request", request_id, "--public-key", str(public_key)])
    assert result.exit_code == 0, result.output
    assert "not compared: no ledger" in result.output and not (elsewhere / "ledger.sqlite").exists()


def test_chains_written_before_signed_heads_are_adopted_once_then_protected(svc: DsrService) -> None:
    anchoring, svc.ledger.anchoring = svc.ledger.anchoring, None  # a ledger from before signed heads
    old = _submit(svc, ERASURE_SUBJECT)
    edited = _submit(svc, ACCESS_SUBJECT, "access")
    svc.ledger.anchoring = anchoring
    assert f"{old}: events seq 1..2 are covered by no signed head" in _problems(svc)
    _sql(svc, "UPDATE dsr_requests SET due = '2099-01-01' WHERE request_id = :r", r=edited)
    adopted, problems = svc.ledger.adopt_unsigned()
    assert adopted == [old]  # the edited one is not blessed
    assert [p.subject for p in problems] == [edited]
    assert [str(p) for p in svc.ledger.audit(old).problems] == []
    _delete_last_events(svc, old, 1)
    assert f"{old}: its chain ends at seq 1, short of its newest signed head, seq 2 (cut)" in _problems(svc)
