"""The runner's parts on their own: the lease fold the append guard uses, the crash probe the
chaos campaign hands in, and the optional connector abilities asked for with isinstance."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import pytest

from chaos.probe import CRASH_ENV, KillAt, probe_from_env
from dsr.contract import (
    Closeable,
    ConfirmsRemoval,
    CountsRecords,
    DataCategory,
    ListsExpiredOnce,
    ParallelPurge,
    Receipt,
    RecordRef,
    RetentionSource,
    close_connector,
)
from dsr.run import RequestRunner, no_crash
from dsr.run.lease import LeasedLedger, lease_of
from dsr.service import DsrService
from dsr.state import derive_state
from sandbox.crm_seed import ERASURE_SUBJECT
from tests.test_execution import _request


def test_the_lease_fold_agrees_with_the_request_state_after_every_event(crm_only_service: DsrService) -> None:
    service = crm_only_service
    request_id = _request(service, "erasure", ERASURE_SUBJECT)
    first, second = LeasedLedger(service.ledger, 60), LeasedLedger(service.ledger, 1e-6)
    held = first.claim(request_id)
    first.release(request_id, held)
    first.release(request_id, held)  # released already: nothing more is written
    stalled = second.claim(request_id)  # expires at once
    first.claim(request_id)  # takes over the expired lease
    second.release(request_id, stalled)  # not its lease any more: nothing is written

    events = service.events(request_id)
    assert [e.type for e in events].count("run.released") == 1
    for end in range(1, len(events) + 1):
        assert lease_of(events[:end]) == derive_state(events[:end]).lease


def test_the_crash_probe_kills_only_at_its_point_and_only_the_nth_time(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[int] = []
    monkeypatch.setattr("chaos.probe.os.kill", lambda pid, sig: killed.append(sig))
    probe = KillAt("discovered", 2)
    probe("fanout")
    probe("discovered")
    assert killed == []
    probe("discovered")
    assert len(killed) == 1

    assert probe_from_env({}) is no_crash
    built = probe_from_env({CRASH_ENV: "sealing@3"})
    assert isinstance(built, KillAt) and (built.point, built.nth) == ("sealing", 3)


def test_a_runner_crashes_nowhere_unless_given_a_probe(crm_only_service: DsrService) -> None:
    assert RequestRunner(crm_only_service).crash is no_crash


class _Full:
    """A connector offering every optional ability."""

    purge_workers = 4
    confirms_removal = True

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def expired(self, category: DataCategory, cutoff: date) -> Iterator[RecordRef]:
        return iter(())

    def expired_all(self, cutoff_of: Any) -> Iterator[RecordRef]:
        return iter(())

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        return Receipt("x")

    def total_records(self) -> int:
        return 0


def test_optional_abilities_are_seen_on_a_connector() -> None:
    """The runner and the purge ask the connector itself (no wrapper between: Python 3.12's protocol
    checks do not look through `__getattr__`)."""
    full = _Full()
    for ability in (Closeable, ConfirmsRemoval, RetentionSource, ListsExpiredOnce, CountsRecords, ParallelPurge):
        assert isinstance(full, ability), ability.__name__
        assert not isinstance(object(), ability), ability.__name__
    close_connector(full)
    close_connector(object())  # nothing to close: nothing happens
    close_connector(None)
    assert full.closed
