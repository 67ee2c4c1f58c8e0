"""Vendor faults, short version (`python -m chaos.storm` runs the long campaign): the
sandboxes answer a large share of calls with 5xx, holds past the client's timeout, TCP resets,
throttling and expired sessions while real requests run through the RequestRunner. What the
privacy office must be able to rely on: every request ends completed or partially completed with
the reason per unfinished system, none is completed with a system unfinished, a system down longer
than the retry budget leaves the request open and escalated, and a later run finishes the job,
erasing exactly what an uninterrupted run erases.

Retries are made quick (chaos/storm.py STORM_SETTINGS: 0.5 s client timeouts, retry waits capped
at 0.3 s), so a storm costs seconds, not minutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from chaos.checks import outcome, vendor_state
from chaos.storm import (
    FAULT_KINDS,
    REQUESTS,
    StormCampaign,
    bundle_problem,
    fault_counts,
    quick_vendor_waits,
    restore_vendor_waits,
    run_together,
    storm,
)
from chaos.world import World, submit
from dsr.adapters.mail import Notice
from dsr.models import CLOSED_STATUSES, Status
from dsr.state import SystemStatus
from dsr.sweep import sweep
from sandbox.crm_seed import ERASURE_SUBJECT
from sandbox.kit import FaultConfig


class Recorder:
    """An escalation channel that keeps what it was sent (the office's inbox, for the test)."""

    name = "inbox"

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.notices.append(notice)


@pytest.fixture
def campaign(_sandbox_servers, tmp_path: Path) -> Iterator[StormCampaign]:
    """Fresh sandbox data, CRM and ledger per trial (chaos/world.py), fast retries, quick vendor waits."""
    servers, env = _sandbox_servers
    before = quick_vendor_waits(servers)
    try:
        yield StormCampaign(World(servers, env, tmp_path), seed=3, rate=0.4)
    finally:
        restore_vendor_waits(servers, before)
        for server in servers.values():
            server.vendor.faults.configure(FaultConfig())


def test_a_storm_of_every_fault_never_completes_a_request_with_work_left_and_a_rerun_finishes_exactly(
        campaign: StormCampaign) -> None:
    # What an uninterrupted run of the same requests leaves at the vendors (fresh seeded data).
    campaign.measure_baseline()
    servers = campaign.w.servers
    # 40% of every vendor's calls fault, shared by all five kinds, on every sandbox at once.
    trial = campaign._trial("storm", {name: storm(0.4, seed=11 + i) for i, name in enumerate(sorted(servers))})
    service = trial.service
    try:
        ids = {kind: submit(service, kind, email) for kind, email in REQUESTS}
        run_together(service, list(ids.values()))

        injected = fault_counts(servers)
        assert all(injected[kind] > 0 for kind in FAULT_KINDS), injected
        unfinished_somewhere = 0
        for kind, request_id in ids.items():
            state = service.state(request_id)
            assert state.status in (Status.COMPLETED, Status.PARTIALLY_COMPLETED), (kind, state.status)
            unfinished = {n: s for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED}
            unfinished_somewhere += len(unfinished)
            if state.status == Status.COMPLETED:
                assert unfinished == {}, (kind, sorted(unfinished))  # never completed with a system open
            else:
                assert unfinished, kind
                for name, system in unfinished.items():  # the reason names each system and its error
                    assert system.error and f"{name}: {system.error}" in (state.outcome_reason or ""), (kind, name)
                    assert ERASURE_SUBJECT not in system.error.lower()  # errors carry no address
            assert bundle_problem(service, state) is None  # the partial outcome is sealed too
        assert unfinished_somewhere > 0  # the storm did leave work for the re-run

        # The vendors recover; a later run finishes every request, repeating nothing harmful.
        for server in servers.values():
            server.vendor.faults.configure(FaultConfig())
        run_together(service, [r for r in ids.values() if service.state(r).status != Status.COMPLETED])
        for (kind, request_id), expected in zip(ids.items(), campaign.baseline["outcomes"], strict=True):
            state = service.state(request_id)
            got = outcome(state)
            assert got["status"] == "completed", (kind, state.outcome_reason)
            assert {n: s["status"] for n, s in got["systems"].items()} == \
                {n: s["status"] for n, s in expected["systems"].items()}
            if kind != "erasure":
                assert got == expected, kind  # the exports hold what an undisturbed run exports
            service.ledger.verify(request_id)
            assert bundle_problem(service, state) is None
        # The subject is gone where an uninterrupted run removes them, the other subject and every
        # look-alike decoy are intact, audience lists hold exactly the same members.
        assert vendor_state(service, servers) == campaign.baseline["vendors"]
    finally:
        trial.close()


def test_a_system_down_past_the_retry_budget_leaves_the_request_open_escalated_then_finished(
        campaign: StormCampaign) -> None:
    servers = campaign.w.servers
    trial = campaign._trial("down", {"hubspot": FaultConfig(error_rate=1.0)})  # HubSpot answers 502 to everything
    service = trial.service
    try:
        request_id = submit(service, "erasure", ERASURE_SUBJECT)
        run_together(service, [request_id])
        state = service.state(request_id)
        assert state.status == Status.PARTIALLY_COMPLETED and state.status not in CLOSED_STATUSES
        assert {n for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED} == {"hubspot"}
        assert "hubspot: " in (state.outcome_reason or "") and "after 5 attempts" in state.outcome_reason
        assert servers["hubspot"].vendor.stats["fault_error"] >= 5  # every attempt of the budget was made

        # Past the deadline, the sweep escalates it to the office and HubSpot's owner, naming HubSpot.
        deadline = service.deadline(state)
        late = datetime.combine(deadline.due + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=12)
        inbox = Recorder()
        with time_machine.travel(late, tick=True):
            report = sweep(service, [inbox])
            assert [level for rid, level, _ in report.raised if rid == request_id] == ["escalation"]
            [notice] = inbox.notices
            assert notice.fields["level"] == "escalation" and notice.fields["owners"][-1] == "marketing-ops"
            assert any(item.startswith("hubspot (failed") for item in notice.fields["open"])
            assert ERASURE_SUBJECT not in notice.body.lower()

            # HubSpot is back; the next run finishes the request and seals evidence that verifies.
            servers["hubspot"].vendor.faults.configure(FaultConfig())
            run_together(service, [request_id])
        state = service.state(request_id)
        assert state.status == Status.COMPLETED, state.outcome_reason
        assert all(s.status == SystemStatus.COMPLETED for s in state.systems.values())
        assert bundle_problem(service, state) is None
        service.ledger.verify(request_id)
        # HubSpot's erasure was done by the second run only: discovery then, nothing left after.
        assert state.systems["hubspot"].found > 0 and state.systems["hubspot"].remaining == []
    finally:
        trial.close()
