"""The event-driven path and `dsr serve`'s embedded mode (flows/events.py, flows/serve.py).

(a) the bridge: a verification becomes exactly one `dsr.request.verified` Prefect event, with no
    personal data, and a failing bridge never breaks a verification;
(b) end to end on a real `prefect server start` child (not the ephemeral API): a verified request
    reaches `completed` in the ledger through the process-request trigger, nobody calls run;
(c) a schedule fires on that server: the ephemeral API silently drops schedules, this does not.

(b) and (c) share one `serve_embedded` (module fixture) on a CRM-only data map so runs are quick.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsr.models import parse_new_request
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.crm_seed import ERASURE_SUBJECT, seed_crm

pytestmark = pytest.mark.prefect
REPO = Path(__file__).resolve().parent.parent


def _submit(service: DsrService) -> str:
    new = parse_new_request(type="erasure", email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    return service.submit(new).state.request_id


def _verify(service: DsrService, request_id: str) -> None:
    service.verify(request_id, method="email-code", note="code returned")


# -- (a) the bridge -------------------------------------------------------------------------------


def test_a_verification_is_mirrored_as_one_event_without_personal_data(
        crm_only_service: DsrService, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.events import install

    AssertingEventsClient.reset()
    # Inside the settings: made without an API URL, the worker would start an ephemeral server.
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # recorded, never dialled
        worker = EventsWorker.instance(AssertingEventsClient)
        monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
        install(crm_only_service)
        install(crm_only_service)  # idempotent: still one listener
        request_id = _submit(crm_only_service)  # submitting is not verifying: no event
        _verify(crm_only_service, request_id)
        worker.drain()
    assert AssertingEventsClient.last is not None
    events = [e for e in AssertingEventsClient.last.events if e.event.startswith("dsr.")]
    assert len(events) == 1
    event = events[0]
    assert event.event == "dsr.request.verified"
    assert event.resource.id == f"dsr.request.{request_id}"
    assert event.resource["dsr.request-id"] == request_id
    assert event.payload == {"type": "erasure", "regime": "gdpr"}
    wire = event.model_dump_json()
    state = crm_only_service.state(request_id)
    for personal in (ERASURE_SUBJECT, ERASURE_SUBJECT.split("@")[0], state.identity_hash):
        assert personal not in wire


def test_a_failing_bridge_never_breaks_a_verification(crm_only_service: DsrService,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.events

    def down(service: DsrService, request_id: str) -> None:
        raise ConnectionError(f"orchestrator down while sending {ERASURE_SUBJECT}")

    monkeypatch.setattr(flows.events, "emit_verified", down)
    flows.events.install(crm_only_service)
    request_id = _submit(crm_only_service)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), \
            caplog.at_level(logging.WARNING, logger="flows.events"):
        _verify(crm_only_service, request_id)
    assert crm_only_service.state(request_id).verified
    warnings = [r.getMessage() for r in caplog.records if r.name == "flows.events"]
    assert len(warnings) == 1 and request_id in warnings[0] and ERASURE_SUBJECT not in warnings[0]


def test_no_prefect_api_no_event_and_no_ephemeral_server(crm_only_service: DsrService,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.events

    called: list[str] = []
    monkeypatch.setattr(flows.events, "emit_verified", lambda service, rid: called.append(rid))
    flows.events.install(crm_only_service)
    request_id = _submit(crm_only_service)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        _verify(crm_only_service, request_id)
    assert called == [] and crm_only_service.state(request_id).verified


def _server_trigger() -> Any:
    """The process-request trigger as Prefect's server evaluates it (its own matching code)."""
    from prefect.server.events.schemas.automations import EventTrigger

    from flows.serve import verified_trigger

    dumped = verified_trigger().model_dump()
    return EventTrigger.model_validate({k: v for k, v in dumped.items() if k in EventTrigger.model_fields})


def test_the_trigger_starts_a_run_for_the_bridges_event_and_not_for_a_run_serve_started(
        crm_only_service: DsrService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two announcements of a verification, as emitted: the bridge's (another API process) must set
    off the trigger; dsr serve's for a run it created itself must not (it would be a second run),
    and still names the request and its run."""
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.events import emit_verified
    from flows.serve import announce_started

    AssertingEventsClient.reset()
    request_id = _submit(crm_only_service)
    run = SimpleNamespace(id=uuid4(), name="erasure-gdpr-run")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # recorded, never dialled
        worker = EventsWorker.instance(AssertingEventsClient)
        monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
        emit_verified(crm_only_service, request_id)
        announce_started(request_id, run, {"type": "erasure", "regime": "gdpr"})
        worker.drain()
    assert AssertingEventsClient.last is not None
    bridge, started = [e for e in AssertingEventsClient.last.events if e.event == "dsr.request.verified"]
    trigger = _server_trigger()

    def received(event: Any) -> ReceivedEvent:
        return ReceivedEvent.model_validate({**event.model_dump(mode="json"), "received": event.occurred})

    assert trigger.covers(received(bridge))
    assert not trigger.covers(received(started))
    assert started.resource.id == f"dsr.request.{request_id}"
    assert [(r.id, r.role) for r in started.related] == [(f"prefect.flow-run.{run.id}", "flow-run")]
    assert started.payload == bridge.payload == {"type": "erasure", "regime": "gdpr"}


def test_a_server_that_never_answers_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    from flows import serve

    with pytest.raises(serve.EmbeddedServeError, match=r"did not answer at http://127\.0\.0\.1:\d+/api/health"):
        serve.start_prefect_server(home=tmp_path / "prefect", timeout=0.3, ui=False)
    assert not _children_of(os.getpid())


def test_prefect_yaml_and_dsr_serve_declare_the_same_deployments() -> None:
    """deployments/prefect.yaml (shared server, workers) and flows/serve.py (embedded) agree; the
    YAML trigger is valid for Prefect's own model (as `prefect deploy` reads it)."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    from dsr.config import load_policy
    from flows.serve import build_deployments, verified_trigger

    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in doc["deployments"]}
    timezone = load_policy(REPO / "config" / "policy.yaml").retention.timezone
    served = {d.name: d for d in build_deployments(purge_timezone=timezone)}
    assert set(declared) == set(served) == {"process-request", "process-verified", "deadline-sweep",
                                             "retention-purge", "run-failed-alert"}
    assert {d["work_pool"]["name"] for d in declared.values()} == {"dsr-pool"}

    triggers = declared["process-request"]["triggers"]
    assert len(triggers) == 1
    parsed = TypeAdapter(DeploymentTriggerTypes).validate_python(triggers[0])
    assert parsed.model_dump(mode="json", exclude={"name"}) == verified_trigger().model_dump(mode="json", exclude={"name"})
    assert [t.model_dump(mode="json", exclude={"name"}) for t in served["process-request"].triggers] == \
        [parsed.model_dump(mode="json", exclude={"name"})]
    from flows.alerts import failure_trigger

    def trigger(t: Any) -> dict[str, Any]:
        """A trigger as JSON; its event sets (`expect`, `after`) sorted, as JSON writes a set in hash order."""
        dumped = t.model_dump(mode="json", exclude={"name"})
        return {k: sorted(v) if k in ("expect", "after") else v for k, v in dumped.items()}

    alert = TypeAdapter(DeploymentTriggerTypes).validate_python(declared["run-failed-alert"]["triggers"][0])
    assert trigger(alert) == trigger(failure_trigger())
    assert [trigger(t) for t in served["run-failed-alert"].triggers] == [trigger(alert)]

    for name, entry in declared.items():
        deployment = served[name]
        path, function = entry["entrypoint"].split(":")
        assert deployment.entrypoint == f"{path.removesuffix('.py').replace('/', '.')}.{function}"
        assert deployment.concurrency_limit == entry["concurrency_limit"]
        assert deployment.parameters == (entry.get("parameters") or {})
        yaml_schedules = [(s["cron"], s["timezone"]) for s in entry.get("schedules", []) if s.get("active", True)]
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == yaml_schedules
    assert declared["retention-purge"]["schedules"][0]["timezone"] == timezone


# -- (b) and (c): one embedded serve on a real server ---------------------------------------------


#: What serve_embedded starts: the server, and a subprocess per flow run.
OURS = ("prefect server start", "prefect.engine")


def _children_of(pid: int, needles: tuple[str, ...] = OURS) -> list[int]:
    """Live processes whose parent is `pid`, started by serve_embedded (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and any(n in cmdline for n in needles):
            found.append(int(entry.name))
    return found


@dataclass
class Embedded:
    service: DsrService
    api_url: str
    server_pid: int
    started_in: float


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """`serve_embedded` in a thread: a fresh `prefect server start` child, process-request on its
    trigger, deadline-sweep every 5 s, a stand-in API; all stopped (and checked) at the end."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import PrefectServer, free_port, serve_embedded

    tmp = tmp_path_factory.mktemp("serve")
    crm_url = f"sqlite:///{tmp / 'crm.sqlite'}"
    seed_crm(crm_url, contacts=40)
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    crm = demo["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    systems = tmp / "systems-crm-only.yaml"
    systems.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    # The served runs are subprocesses: they build their service from this environment.
    env = {"DSR_HOME": str(tmp / "var"), "DSR_CONFIG_DIR": str(REPO / "config"), "DSR_SYSTEMS_FILE": str(systems),
           "DSR_IDENTITY_KEY": "serve-test-key", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    EventsWorker.drain_all(timeout=10)  # a worker bound to another test server must not carry our events
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        service = DsrService(Settings())
        ready: queue.Queue[PrefectServer | BaseException] = queue.Queue()
        stop, api_started, api_stopped = threading.Event(), threading.Event(), threading.Event()

        def api() -> None:  # stands in for uvicorn: blocks until told to stop
            api_started.set()
            api_stopped.wait()

        def target() -> None:
            try:
                serve_embedded(prefect_port=free_port(), api=api, api_stop=api_stopped.set, service=service,
                               prefect_home=tmp / "prefect", ui=False, sweep_every=5, poll_seconds=1,
                               stop=stop, on_ready=ready.put)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                ready.put(exc)

        began = time.monotonic()
        thread = threading.Thread(target=target, name="serve-embedded", daemon=True)
        thread.start()
        try:
            got = ready.get(timeout=120)
            if isinstance(got, BaseException):
                raise got
            assert api_started.wait(5), "the API was not started"
            with temporary_settings(updates={PREFECT_API_URL: got.api_url}):
                yield Embedded(service, got.api_url, got.process.pid, time.monotonic() - began)
        finally:
            stop.set()
            thread.join(60)
            EventsWorker.drain_all(timeout=10)
            service.close()
        assert not thread.is_alive(), "serve_embedded did not return after stop"
        assert api_stopped.is_set(), "the API was not told to stop"
        with pytest.raises(ProcessLookupError):
            os.killpg(got.process.pid, 0)  # the server's whole process group is gone
        leftovers = _children_of(os.getpid())
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"child processes left running: {leftovers}"


def _wait_for(what: str, check, timeout: float, every: float = 0.5):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _flow_runs(deployment: str, **state_filter: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    flow_run_filter = None
    if "types" in state_filter:
        flow_run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=state_filter["types"])))
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                                     flow_run_filter=flow_run_filter)


def _events(name: str, resource_id: str) -> list[Any]:
    """The events of that name about that resource the server has recorded."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        return list(client.read_events(filter=EventFilter(
            event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])), limit=10).events)


def test_a_request_verified_elsewhere_is_completed_by_its_trigger_alone(embedded: Embedded) -> None:
    """Verified through another service on the same ledger (another API process: its bridge emits
    the event), the request is run by the trigger's flow run, on this serve."""
    from flows.events import install

    service = embedded.service
    elsewhere = DsrService(Settings())
    try:
        install(elsewhere)
        request_id = _submit(elsewhere)
        _verify(elsewhere, request_id)  # nothing else: no `dsr run`, no run_deployment
    finally:
        elsewhere.close()
    _wait_for(f"request {request_id} to complete",
              lambda: service.state(request_id).status.value in ("completed", "partially_completed"), timeout=60)
    state = service.state(request_id)
    assert state.status.value == "completed", state.outcome_reason
    assert list(state.systems) == ["crm"]
    runs = [r for r in _flow_runs("process-request") if r.parameters.get("request_id") == request_id]
    assert len(runs) == 1
    assert runs[0].created_by is not None and runs[0].created_by.type == "AUTOMATION"
    # The run names and tags itself (a triggered run is created with a generated name).
    assert runs[0].name == f"erasure-gdpr-{request_id[:8]}"
    assert {"type:erasure", "regime:gdpr"} <= set(runs[0].tags)


def test_a_failed_run_sets_off_the_failure_automation(embedded: Embedded) -> None:
    """A process-request run that fails (here: a request id the ledger does not hold) is followed,
    through Prefect's own Failed event and the run-failed-alert trigger, by an alert run about it."""
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    failed = run_deployment("process-request/process-request", parameters={"request_id": "no-such-request"},
                            timeout=60)
    assert failed.state is not None and failed.state.is_failed()
    alerts = _wait_for("the run-failed-alert run about it", lambda: [
        r for r in _flow_runs("run-failed-alert", types=[StateType.COMPLETED])
        if r.parameters.get("flow_run_id") == f"prefect.flow-run.{failed.id}"], timeout=60)
    assert alerts[0].created_by is not None and alerts[0].created_by.type == "AUTOMATION"
    assert alerts[0].parameters["event"] == "prefect.flow-run.Failed"


def test_a_schedule_fires_in_embedded_mode(embedded: Embedded) -> None:
    from prefect.client.schemas.objects import StateType

    completed = _wait_for("a scheduled deadline-sweep run to complete",
                          lambda: _flow_runs("deadline-sweep", types=[StateType.COMPLETED]), timeout=45)
    assert any(run.auto_scheduled for run in completed)  # made by the server's scheduler, not by us


# -- warm runs: verified to completed without a process start (flows/warm.py) ---------------------


def test_a_verified_request_runs_warm_in_seconds_as_a_real_flow_run_with_its_task_runs(embedded: Embedded) -> None:
    """A verification recorded by dsr serve's own service: serve creates the run itself (no
    automation round trip) and executes it in its own process (no `prefect.engine` child is
    started), and it is still a Prefect flow run of the deployment: Completed, its system step a
    task run, the only run of the request (the announced event sets off no second one)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType

    from flows.warm import ran_here

    service = embedded.service
    request_id = _submit(service)
    _verify(service, request_id)
    # How fast is bench/latency.py's to measure; here: that it completes, in this very process.
    _wait_for(f"request {request_id} to complete",
              lambda: service.state(request_id).status.value in ("completed", "partially_completed"),
              timeout=30, every=0.05)
    assert service.state(request_id).status.value == "completed"
    run = _wait_for("the flow run to be Completed", lambda: [
        r for r in _flow_runs("process-request", types=[StateType.COMPLETED])
        if r.parameters.get("request_id") == request_id], timeout=20)[0]
    assert run.created_by is None or run.created_by.type != "AUTOMATION"
    assert ran_here(run.id), "the run was started in a process of its own"
    assert run.deployment_id is not None  # a run of the deployment, as the UI lists it
    assert run.name == f"erasure-gdpr-{request_id[:8]}"  # named and tagged at creation
    assert {"type:erasure", "regime:gdpr"} <= set(run.tags)
    announced = _wait_for("the verification's event to be recorded", lambda: [
        e for e in _events("dsr.request.verified", f"dsr.request.{request_id}")], timeout=30)
    assert [r.id for r in announced[0].related] == [f"prefect.flow-run.{run.id}"]
    # The trigger had that event in hand before it was recorded; the automation's run would be here.
    time.sleep(1)
    assert [r.id for r in _flow_runs("process-request") if r.parameters.get("request_id") == request_id] == [run.id]

    def task_runs() -> list[Any]:
        with get_client(sync_client=True) as client:
            return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))

    steps = _wait_for("the system step's task run to be recorded Completed",
                      lambda: [t for t in task_runs() if t.name == "crm" and t.state_type == StateType.COMPLETED],
                      timeout=30)
    assert len(steps) == 1


def test_dsr_run_hands_the_run_to_the_running_serve(embedded: Embedded, tmp_path: Path) -> None:
    """`dsr run ID` on the DSR home of a running dsr serve: the run is a flow run of that serve
    (tagged dsr-run), not a Prefect started in the command's own process."""
    import subprocess
    import sys

    from prefect.client.schemas.objects import StateType

    # Verified through a second service that announces nothing, so that the trigger does not start it first.
    quiet = DsrService(Settings())
    try:
        request_id = _submit(quiet)
        _verify(quiet, request_id)
    finally:
        quiet.close()
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    env.pop("PREFECT_API_URL", None)  # found through the running serve, as an operator's shell would
    done = subprocess.run([str(Path(sys.executable).parent / "dsr"), "run", request_id], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{request_id}: completed" in done.stdout
    assert "starting Prefect in this process" not in done.stderr
    assert embedded.service.state(request_id).status.value == "completed"
    runs = [r for r in _flow_runs("process-request", types=[StateType.COMPLETED])
            if r.parameters.get("request_id") == request_id]
    assert len(runs) == 1 and "dsr-run" in runs[0].tags
    from flows.warm import ran_here

    assert ran_here(runs[0].id)
