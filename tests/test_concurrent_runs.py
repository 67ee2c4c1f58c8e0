"""Two runs of the same request at once (two workers picking it up): one acts, the other stops
with "already running", the vendors see each action once, and the chain does not fork. On
SQLite and PostgreSQL; threads of one process and two processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from chaos.checks import effects
from connectors.registry import build_connector
from dsr.contract import Connector
from dsr.models import Status
from dsr.run import AlreadyRunning, LeaseLost, RequestRunner
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.crm_seed import ERASURE_SUBJECT
from tests.test_execution import _request

REPO = Path(__file__).resolve().parent.parent


def _connect(service: DsrService, system: str) -> Callable[[], Connector]:
    config = service.data_map.systems[system]
    return lambda: build_connector(system, config.kind, config.settings)


@pytest.fixture
def journals(sandboxes):
    for server in sandboxes.values():
        server.vendor.journal = []
    yield sandboxes
    for server in sandboxes.values():
        server.vendor.journal = None


def _once_each(servers) -> None:
    """No vendor saw any write twice: not even an idempotent one (nothing crashed here)."""
    found = effects(servers)
    assert found.repeats() == (0, 0)
    assert found.strict, "the run reached the vendors"


def _types(service: DsrService, request_id: str) -> list[str]:
    return [e.type for e in service.events(request_id)]


def test_a_second_worker_stops_while_the_first_holds_the_request(service: DsrService, journals) -> None:
    request_id = _request(service, "erasure", ERASURE_SUBJECT)
    first = RequestRunner(service)
    plan = first.begin(request_id)
    inside, release = threading.Event(), threading.Event()
    refused: list[BaseException] = []

    def second_worker() -> None:
        inside.wait()
        try:
            RequestRunner(service).begin(request_id)
        except AlreadyRunning as exc:
            refused.append(exc)
        finally:
            release.set()

    def held_crm() -> Connector:  # the first run is in the middle of a system when the second arrives
        inside.set()
        release.wait()
        return _connect(service, "crm")()

    worker = threading.Thread(target=second_worker)
    worker.start()
    results = []
    for system in plan.systems:  # the run's own task threads pass the plan's lease, as the flow does
        connect = held_crm if system == "crm" else _connect(service, system)
        results.append(RequestRunner(service).run_system(request_id, system, connect, lease=plan.lease))
    worker.join()
    outcome = first.finish(request_id, lease=plan.lease)

    assert len(refused) == 1 and "already running (held by" in str(refused[0])
    assert plan.lease in str(refused[0])
    assert outcome.status == Status.COMPLETED
    types = _types(service, request_id)
    assert types.count("run.started") == 1 and types.count("request.completed") == 1
    assert types[-1] == "run.released"
    assert service.ledger.verify(request_id) == len(types)
    _once_each(journals)
    # Released: the next run may take the request (nothing left to do, nothing repeated).
    assert RequestRunner(service).begin(request_id).already_closed


def test_two_threads_racing_from_the_start_act_once(sqlite_service: DsrService, journals) -> None:
    service = sqlite_service
    request_id = _request(service, "erasure", ERASURE_SUBJECT)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def worker() -> None:
        runner = RequestRunner(service)
        barrier.wait()
        try:
            plan = runner.begin(request_id)
        except AlreadyRunning as exc:
            outcomes.append(exc)
            return
        for system in plan.systems:
            runner.run_system(request_id, system, _connect(service, system))
        outcomes.append(runner.finish(request_id).status)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Status.COMPLETED in outcomes
    assert len(outcomes) == 2
    types = _types(service, request_id)
    assert types.count("run.started") == 1 and types.count("system.erased") == 6
    assert service.ledger.verify(request_id) == len(types)
    _once_each(journals)


def test_an_expired_lease_is_taken_over_and_the_old_holder_stops(service: DsrService) -> None:
    request_id = _request(service, "erasure", ERASURE_SUBJECT)
    stalled = RequestRunner(service, lease_seconds=1e-6)  # a worker that stopped renewing
    old = stalled.begin(request_id)
    fresh = RequestRunner(service)
    plan = fresh.begin(request_id)
    claims = [e for e in service.events(request_id) if e.type == "run.claimed"]
    assert claims[-1].payload["took_over"] == old.lease
    with pytest.raises(LeaseLost, match="taken over"):
        stalled.run_system(request_id, "crm", _connect(service, "crm"), lease=old.lease)
    for system in plan.systems:
        fresh.run_system(request_id, system, _connect(service, system))
    assert fresh.finish(request_id).status == Status.COMPLETED
    assert "system.failed" not in _types(service, request_id)


def test_two_processes_at_once_act_once(service: DsrService, settings: Settings, ledger_url: str,
                                        journals) -> None:
    request_id = _request(service, "erasure", ERASURE_SUBJECT)
    env = {**os.environ, "DSR_HOME": str(settings.home), "DSR_CONFIG_DIR": str(settings.config_dir),
           "DSR_SYSTEMS_FILE": str(settings.systems_file), "DSR_IDENTITY_KEY": "test-identity-key",
           "DSR_DATABASE_URL": ledger_url}
    env.pop("DSR_CHAOS_CRASH_AT", None)
    procs = [subprocess.Popen([sys.executable, "-m", "chaos.child", "request", request_id], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    answers = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in answers]
    statuses = sorted(out.strip().splitlines()[-1].split('"status": "')[1].split('"')[0] for out, _ in answers)
    # Either the second found the request held, or it came after the first had finished.
    assert statuses in (["already_running", "completed"], ["completed", "completed"])
    types = _types(service, request_id)
    assert types.count("run.started") == 1 and types.count("request.completed") == 1
    assert service.ledger.verify(request_id) == len(types)
    _once_each(journals)
