"""The `process-verified` flow (volume mode): every verified request waiting, in one flow run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dsr.models import parse_new_request
from dsr.service import DsrService
from flows import runtime
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def flow_service(sqlite_service: DsrService):
    runtime.use_service(sqlite_service)
    yield sqlite_service
    runtime.use_service(None)


def _submit(service: DsrService, kind: str, email: str, *, verify: bool = True) -> str:
    new = parse_new_request(type=kind, email=email, regime="gdpr", received=datetime.now(UTC))
    request_id = service.submit(new).state.request_id
    if verify:
        service.verify(request_id, method="email-code", note="code returned")
    return request_id


def test_one_flow_run_carries_out_every_verified_request_and_leaves_the_rest(flow_service: DsrService) -> None:
    from flows.batch import process_verified

    erasure = _submit(flow_service, "erasure", ERASURE_SUBJECT)
    access = _submit(flow_service, "access", ACCESS_SUBJECT)
    nobody = _submit(flow_service, "portability", "nobody-held@example.net")
    unverified = _submit(flow_service, "erasure", "not-yet@example.net", verify=False)

    result = process_verified()

    assert result["requests"] == {erasure: "completed", access: "completed", nobody: "completed"}
    # The operator sees the batch's outcome and what memory its process needed, in the run's artifact.
    summary = _summary_artifact()
    assert summary["requests completed"] == 3 and summary["requests"] == 3
    assert summary["peak RSS (MiB)"] == result["peak_rss_mib"]
    assert 20 < result["peak_rss_mib"] < 4096  # this test process's own peak, a Python process with Prefect loaded
    assert flow_service.state(unverified).status.value == "awaiting_verification"
    assert flow_service.state(erasure).systems["crm"].status.value == "completed"
    assert flow_service.state(access).package is not None  # the subject's package was written
    assert all(flow_service.state(rid).bundles for rid in (erasure, access, nobody))  # each sealed
    for request_id in (erasure, access, nobody):
        assert flow_service.ledger.verify(request_id) > 0  # raises on a broken chain
    # Nothing is waiting any more: a second batch finds nothing and repeats nothing.
    counts = {rid: len(flow_service.events(rid)) for rid in (erasure, access, nobody)}
    assert process_verified()["requests"] == {}
    assert {rid: len(flow_service.events(rid)) for rid in counts} == counts


def _summary_artifact() -> dict[str, float]:
    """The latest `process-verified` summary artifact, as {figure: value}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    from flows.batch import SUMMARY_ARTIFACT

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[SUMMARY_ARTIFACT])))
    assert len(found) == 1
    rows = json.loads(found[0].data) if isinstance(found[0].data, str) else found[0].data
    return {row["figure"]: row["value"] for row in rows}


def test_a_window_of_one_request_carries_out_the_whole_backlog_one_after_another(flow_service: DsrService) -> None:
    """The window bounds how many requests are in flight, not how many the run carries out."""
    from flows.batch import process_verified

    ids = [_submit(flow_service, kind, f"backlog-{n}@example.net")
           for n, kind in enumerate(("erasure", "access", "portability"))]

    result = process_verified(max_requests=1)

    assert result["requests"] == {rid: "completed" for rid in ids}
    assert all(flow_service.state(rid).bundles for rid in ids)


def test_a_request_another_run_holds_is_left_to_that_run(flow_service: DsrService) -> None:
    """A worker already carrying out a request keeps it: the batch skips it, acts on it not at all."""
    from dsr.run import RequestRunner
    from flows.batch import process_verified

    held = _submit(flow_service, "erasure", ERASURE_SUBJECT)
    free = _submit(flow_service, "access", ACCESS_SUBJECT)
    RequestRunner(flow_service).begin(held)  # another run took it (its lease is live, its process is this one)
    before = len(flow_service.events(held))

    result = process_verified()

    assert result["requests"] == {free: "completed"}
    assert len(flow_service.events(held)) == before
    assert flow_service.state(held).status.value == "in_progress"


def test_a_vendor_outage_that_passes_is_retried_in_the_batch_and_the_request_completes(
        sqlite_service: DsrService, sandboxes, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A transient failure in one system makes Prefect run the request's step again (the systems
    already done are skipped) and the request completes; its task run is named like its own run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from flows.batch import process_verified, request_steps
    from sandbox.kit import FaultConfig

    monkeypatch.setattr(request_steps, "retry_delay_seconds", [0, 0])  # the waits, not the retries, are shortened
    runtime.use_service(sqlite_service)
    try:
        request_id = _submit(sqlite_service, "erasure", ERASURE_SUBJECT)
        # HubSpot answers 503 to more calls than its connector retries, then recovers.
        sandboxes["hubspot"].vendor.faults.configure(FaultConfig(error_rate=1.0, burst=6))
        result = process_verified()
    finally:
        runtime.use_service(None)

    assert result["requests"] == {request_id: "completed"}
    hubspot = [e.type for e in sqlite_service.events(request_id) if e.payload.get("system") == "hubspot"]
    assert "system.failed" in hubspot and hubspot[-1] == "system.completed"
    crm = [e.type for e in sqlite_service.events(request_id) if e.payload.get("system") == "crm"]
    assert crm.count("system.completed") == 1  # done on the first attempt, skipped on the second
    with get_client(sync_client=True) as client:
        steps = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(any_=[f"erasure-gdpr-{request_id[:8]}"])))
    assert len(steps) == 1 and steps[0].run_count == 2 and steps[0].state.is_completed()
