"""The ledger on SQLite and PostgreSQL: append, chain integrity, tamper detection, no forks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from dsr.ledger.events import GENESIS_HASH, ChainError
from dsr.ledger.store import Ledger, LedgerError, UnknownRequest
from dsr.state import index_row

RECEIVED = {"type": "access", "regime": "ccpa", "country": "US", "channel": "cli",
            "received_at": "2026-11-02T10:00:00.000000Z", "identity_kind": "email",
            "identity_hash": "hmac-sha256:abc", "deadline": {"due": "2026-12-17"}}


@pytest.fixture
def ledger(ledger_url: str):
    store = Ledger(ledger_url, projector=index_row)
    yield store
    store.close()


def _new_request(ledger: Ledger, request_id: str = "r-1") -> None:
    ledger.append(request_id, "request.received", RECEIVED, actor="test", expect_new=True,
                  identity=("email", "ada@example.com", "hmac-sha256:abc"))


def test_appended_events_form_a_chain_that_verifies(ledger: Ledger) -> None:
    _new_request(ledger)
    ledger.append("r-1", "request.verified", {"method": "email-code", "note": "ok"}, actor="officer")
    events = ledger.events("r-1")
    assert [e.seq for e in events] == [1, 2]
    assert events[0].prev_hash == GENESIS_HASH and events[1].prev_hash == events[0].hash
    assert ledger.verify("r-1") == 2


def test_index_row_follows_the_events_and_can_be_rebuilt(ledger: Ledger) -> None:
    _new_request(ledger)
    ledger.append("r-1", "request.verified", {"method": "email-code", "note": "ok"}, actor="officer")
    [row] = ledger.index()
    assert (row.status, row.due, row.last_seq) == ("verified", "2026-12-17", 2)
    assert ledger.rebuild_index() == 1
    assert ledger.index()[0].status == "verified"


def test_identity_is_kept_beside_the_chain_never_inside_it(ledger: Ledger) -> None:
    _new_request(ledger)
    assert ledger.identity("r-1") == "ada@example.com"
    assert all("ada@example.com" not in str(e.to_dict()) for e in ledger.events("r-1"))


@pytest.mark.postgres
def test_a_connection_the_server_dropped_while_idle_is_replaced_unseen(postgres_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import create_engine

    from dsr import pool_ping
    from sandbox.scratch_db import private_schema

    monkeypatch.setattr(pool_ping, "IDLE_PING_SECONDS", 0.2)
    with private_schema(postgres_url, "dsr_test") as url:
        store = Ledger(url, projector=index_row)
        try:
            _new_request(store)
            with store.engine.connect() as conn:  # the pool's one idle connection
                backend = conn.execute(text("select pg_backend_pid()")).scalar_one()
            admin = create_engine(postgres_url)
            with admin.connect() as conn:  # a restart, or a firewall cutting idle sessions
                assert conn.execute(text("select pg_terminate_backend(:pid)"), {"pid": backend}).scalar_one()
            admin.dispose()
            time.sleep(0.3)

            store.append("r-1", "request.verified", {"method": "email-code", "note": "ok"}, actor="officer")
            assert [e.type for e in store.events("r-1")] == ["request.received", "request.verified"]
        finally:
            store.close()


def test_second_submission_with_the_same_id_is_refused(ledger: Ledger) -> None:
    _new_request(ledger)
    with pytest.raises(LedgerError, match="already exists"):
        _new_request(ledger)


def test_append_to_unknown_request_names_it(ledger: Ledger) -> None:
    with pytest.raises(UnknownRequest, match="nope"):
        ledger.append("nope", "request.verified", {}, actor="x")


@pytest.mark.parametrize("tamper, expected", [
    ("UPDATE dsr_events SET payload = replace(payload, 'email-code', 'id-document') WHERE seq = 2", "seq 2 .* altered"),
    ("UPDATE dsr_events SET actor = 'mallory' WHERE seq = 1", "seq 1 .* altered"),
    ("DELETE FROM dsr_events WHERE seq = 2", "expected event seq 2, found 3"),
    ("UPDATE dsr_events SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 3", "seq 3 .* altered"),
])
def test_tampering_with_a_stored_event_is_detected(ledger: Ledger, tamper: str, expected: str) -> None:
    _new_request(ledger)
    ledger.append("r-1", "request.verified", {"method": "email-code", "note": "ok"}, actor="officer")
    ledger.append("r-1", "request.cancelled", {"reason": "withdrawn"}, actor="officer")
    with ledger.engine.begin() as conn:
        conn.execute(text(tamper))
    with pytest.raises(ChainError, match=expected):
        ledger.verify("r-1")


def test_rehashed_forgery_still_breaks_the_link_to_the_next_event(ledger: Ledger) -> None:
    """An attacker who recomputes the edited event's own hash still breaks the next event's link."""
    from dsr.ledger.events import LedgerEvent

    _new_request(ledger)
    ledger.append("r-1", "request.verified", {"method": "email-code", "note": "ok"}, actor="officer")
    ledger.append("r-1", "request.cancelled", {"reason": "withdrawn"}, actor="officer")
    second = ledger.events("r-1")[1]
    forged = LedgerEvent.create("r-1", 2, datetime.now(UTC), "officer", second.type,
                                {"method": "id-document", "note": "ok"}, second.prev_hash)
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE dsr_events SET payload = :p, at = :at, hash = :h WHERE seq = 2"),
                     {"p": '{"method":"id-document","note":"ok"}', "at": forged.at, "h": forged.hash})
    with pytest.raises(ChainError, match="seq 3 does not link"):
        ledger.verify("r-1")


def test_concurrent_writers_never_fork_a_chain(ledger: Ledger, ledger_url: str) -> None:
    """Several writers (each with its own engine, like separate workers) append at once."""
    _new_request(ledger)
    writers, per_writer = 6, 15
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        store = Ledger(ledger_url, projector=index_row, auto_migrate=False)
        try:
            for i in range(per_writer):
                store.append("r-1", "note.added", {"worker": worker, "i": i}, actor=f"w{worker}")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events = ledger.events("r-1")
    assert [e.seq for e in events] == list(range(1, writers * per_writer + 2))
    assert ledger.verify("r-1") == writers * per_writer + 1
    assert ledger.index()[0].last_seq == writers * per_writer + 1


def test_threads_of_one_process_take_turns_on_a_chain_instead_of_colliding(ledger: Ledger) -> None:
    """A request's systems append side by side from threads of one process: each append goes
    through on its first try, so the database logs no duplicate-key errors (PostgreSQL writes every
    one to its log) and no append sleeps to retry."""
    from sqlalchemy import event

    _new_request(ledger)
    failed: list[str] = []
    event.listen(ledger.engine, "handle_error", lambda context: failed.append(type(context.original_exception).__name__))
    writers, per_writer = 8, 10

    def write(worker: int) -> None:
        for i in range(per_writer):
            ledger.append("r-1", "note.added", {"worker": worker, "i": i}, actor=f"w{worker}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    assert ledger.verify("r-1") == writers * per_writer + 1


def test_guard_refusal_inside_the_transaction_appends_nothing(ledger: Ledger) -> None:
    _new_request(ledger)

    def refuse(chain):
        raise LedgerError("refused by guard")

    with pytest.raises(LedgerError, match="refused by guard"):
        ledger.append("r-1", "request.verified", {}, actor="x", guard=refuse)
    assert len(ledger.events("r-1")) == 1


def _bulk_chain(ledger: Ledger, request_id: str, events: int, pad: int) -> int:
    """Write one valid chain with bulk inserts (appending one by one would take minutes); stored bytes."""
    import json
    from datetime import timedelta

    from sqlalchemy import insert

    from dsr.ledger.events import LedgerEvent
    from dsr.ledger.schema import events as events_table

    prev, start, rows, stored = GENESIS_HASH, datetime(2026, 1, 1, tzinfo=UTC), [], 0
    for seq in range(1, events + 1):
        event = LedgerEvent.create(request_id, seq, start + timedelta(seconds=seq), "retention-purge", "purge.batch",
                                   {"seq": seq, "keys": "k" * pad}, prev)
        prev = event.hash
        payload = json.dumps(event.payload, sort_keys=True, separators=(",", ":"))
        stored += len(payload)
        rows.append({"request_id": request_id, "seq": seq, "at": event.at, "actor": event.actor, "type": event.type,
                     "payload": payload, "prev_hash": event.prev_hash, "hash": event.hash})
    with ledger.engine.begin() as conn:
        conn.execute(insert(events_table), rows)
    return stored


def test_verifying_a_long_chain_holds_a_batch_of_events_not_the_chain(ledger: Ledger) -> None:
    """A retention run's chain can reach a million events: verify streams it (it used to hold
    3 GB at 1M events). Traced memory while verifying 15,000 events stays a small fraction of the
    chain itself, and an alteration at the very end is still found."""
    import tracemalloc

    stored = _bulk_chain(ledger, "purge-long", 15_000, pad=1_500)
    assert stored > 20_000_000
    tracemalloc.start()
    try:
        assert ledger.verify("purge-long") == 15_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"verify peak traced: {peak / 2**20:.1f} MiB for {stored / 2**20:.1f} MiB of payloads")
    assert peak < 10 * 2**20, f"verify held {peak / 2**20:.1f} MiB: it loads the chain instead of streaming it"

    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE dsr_events SET actor = 'mallory' WHERE seq = 15000"))
    with pytest.raises(ChainError, match="seq 15000 .* altered"):
        ledger.verify("purge-long")


def test_verify_of_an_unknown_request_names_it(ledger: Ledger) -> None:
    with pytest.raises(UnknownRequest, match="nope"):
        ledger.verify("nope")
