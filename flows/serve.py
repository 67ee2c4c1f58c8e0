"""`dsr serve`: the API and the flows, event-driven and scheduled, on one machine, one command.

Prefect's ephemeral API runs event triggers but not schedules, and says nothing about it
(prefect-notes §1, §4). So the embedded mode starts a real `prefect server start` (SQLite, its
state under DSR_HOME/prefect) as a child process, registers the deployments on it (no work pool)
and runs the HTTP API in a thread beside them. The runs of the deployments that call vendors are
executed warm, in threads of this process (flows/warm.py: no process start, about a second from
verification to completion); the deadline sweep's runs are started by Prefect's runner, each in a
subprocess. A `dsr run` on the same DSR home hands its run to this process (flows/warm.py).

- `process-request`, run by the event `dsr.request.verified` (flows/events.py emits it when a
  verification is recorded),
- `deadline-sweep`, hourly,
- `retention-purge`, nightly at 02:00 in the policy's retention timezone.

The same deployments, for a shared server and workers, are in deployments/prefect.yaml.

On SIGINT or SIGTERM the runner stops (its in-flight runs are cancelled), the warm runs in
flight are given a minute to end (a run cut short resumes where it stopped when run again), the
API is told to stop and the child server's process group is terminated. On Linux the child also gets SIGTERM if this process dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from dsr.service import DsrService
from dsr.settings import Settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

log = logging.getLogger(__name__)

SWEEP_CRON = "0 * * * *"  # hourly, as in deployments/prefect.yaml
PURGE_CRON = "0 2 * * *"  # nightly at 02:00 in the policy's retention timezone
SERVER_STARTUP_TIMEOUT = 90.0  # a fresh SQLite database runs its migrations first (~8-16 s measured)

Every = float | timedelta


class EmbeddedServeError(RuntimeError):
    """The embedded Prefect server or the API could not start, or stopped on its own."""


# -- the child Prefect server -------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent (thread) dies.

    libc is loaded here, in the parent: the child only makes one system call before exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


@dataclass
class PrefectServer:
    """A `prefect server start` child process in its own process group."""

    api_url: str
    home: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    _log_file: Any = field(repr=False, default=None)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the whole process group (SIGTERM, then SIGKILL); safe to call twice."""
        try:
            stop_process_group(self.process, "Prefect server", timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def stop_process_group(process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """SIGTERM a child's process group, wait `timeout`, then SIGKILL what is left of the group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", what, process.pid)
    # Whatever the child itself started goes too, even if the leader already exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


#: The server's task-run recorder inserts each task run in a transaction of its own by default; on
#: SQLite every insert takes the one write lock between the warm runs' state changes. In batches,
#: flushed every 2 s at the latest (a task run shows in the UI that much later at most), measured
#: on bench.latency: verified -> done 0.82 -> 0.73 s (p50, the direct runner 0.52 s both times).
RECORDER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "2",
}


def start_prefect_server(*, home: Path, port: int | None = None, host: str = "127.0.0.1", ui: bool = True,
                         timeout: float = SERVER_STARTUP_TIMEOUT, database_url: str | None = None) -> PrefectServer:
    """Start `prefect server start` and wait until `/api/health` answers.

    Its database is SQLite under `home`, or `database_url` (a fleet's PostgreSQL:
    ``postgresql+asyncpg://...``), which many workers can share.
    """
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    api_url = f"http://{host}:{port}/api"
    env = dict(os.environ)
    for name, value in RECORDER_BATCHING.items():  # the operator's own values win
        env.setdefault(name, value)
    env.update({
        "PREFECT_HOME": str(home),
        # Its own file: an ephemeral `dsr run` elsewhere uses prefect.db in the same home.
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{home / 'serve.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Loopback only, and the warm runs' clients skip the token (warm_run_settings): said here so
        # that a CSRF setting in the environment cannot set the two apart.
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "false",
        "PREFECT_API_URL": api_url,
    })
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    if not ui:
        command.append("--no-ui")
    log_path = home / "server.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=_die_with_parent())
    server = PrefectServer(api_url, home, log_path, process, log_file)
    log.info("Prefect server starting at %s (pid %d, log %s)", api_url, process.pid, log_path)
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: PrefectServer, timeout: float) -> None:
    started = time.monotonic()
    deadline = started + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not server.alive:
                raise EmbeddedServeError(
                    f"the Prefect server exited with code {server.process.returncode} before answering "
                    f"(log {server.log_path}):\n{server.log_tail()}")
            try:
                if client.get(f"{server.api_url}/health").status_code == 200:
                    log.info("Prefect server ready in %.1f s", time.monotonic() - started)
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise EmbeddedServeError(
                    f"the Prefect server did not answer at {server.api_url}/health within {timeout:.0f} s "
                    f"(log {server.log_path}):\n{server.log_tail()}")
            time.sleep(0.25)


@contextlib.contextmanager
def prefect_server(**kwargs: Any) -> Iterator[PrefectServer]:
    server = start_prefect_server(**kwargs)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def use_prefect_api(api_url: str) -> Iterator[None]:
    """Point this process's Prefect at `api_url`: this thread, every other thread, and the flow
    run subprocesses (which inherit the environment and the current settings)."""
    from prefect import context as prefect_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            # Threads started without this context (the API's, Prefect's events worker) read the
            # process-global settings context; Prefect's own test harness swaps it the same way.
            swap = getattr(prefect_context, "_temporary_global_settings_context", None)
            with swap(prefect_context.get_settings_context()) if swap else contextlib.nullcontext():
                if swap is None:
                    prefect_context.refresh_global_settings_context()
                yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


# -- the deployments ----------------------------------------------------------------------------


def verified_trigger() -> Any:
    """process-request runs when a request is verified (the same trigger as in prefect.yaml).

    The event must name the request in its label (the run's parameter). `dsr serve` announces a
    verification whose run it started itself without that label (`announce_started`), so that the
    trigger does not start a second run.
    """
    from prefect.events import DeploymentEventTrigger

    from flows.events import REQUEST_ID_LABEL, RESOURCE_PREFIX, VERIFIED_EVENT

    return DeploymentEventTrigger(
        name="process-request on dsr.request.verified",
        expect={VERIFIED_EVENT},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*", REQUEST_ID_LABEL: "*"},
        parameters={"request_id": f"{{{{ event.resource['{REQUEST_ID_LABEL}'] }}}}"},
    )


def _schedule(cron: str, every: Every | None, timezone: str) -> Any:
    from prefect.schedules import Cron, Interval

    if every is not None:
        return Interval(every if isinstance(every, timedelta) else timedelta(seconds=every))
    return Cron(cron, timezone=timezone)


def build_deployments(*, purge_timezone: str, sweep_cron: str = SWEEP_CRON, sweep_every: Every | None = None,
                      purge_cron: str = PURGE_CRON, purge_every: Every | None = None,
                      serve_purge: bool = True) -> list[RunnerDeployment]:
    """The deployments of deployments/prefect.yaml, for `serve` (no work pool).

    `sweep_every` / `purge_every` (seconds or a timedelta) replace the cron (tests use a few
    seconds). Entrypoints are module paths, so runs work from any directory.
    """
    from prefect.deployments.runner import EntrypointType

    from flows.batch import process_verified
    from flows.deadlines import deadline_sweep
    from flows.request import process_request
    from flows.retention import retention_purge

    module = EntrypointType.MODULE_PATH
    deployments: list[Any] = [  # to_deployment is typed sync-or-async; called here, it is sync
        process_request.to_deployment(name="process-request", triggers=[verified_trigger()],
                                      concurrency_limit=10, entrypoint_type=module),
        # Volume mode, run on demand (`prefect deployment run process-verified/process-verified`).
        process_verified.to_deployment(name="process-verified", concurrency_limit=1, entrypoint_type=module),
        deadline_sweep.to_deployment(name="deadline-sweep", schedules=[_schedule(sweep_cron, sweep_every, "UTC")],
                                     concurrency_limit=1, entrypoint_type=module),
    ]
    if serve_purge:
        deployments.append(retention_purge.to_deployment(
            name="retention-purge", schedules=[_schedule(purge_cron, purge_every, purge_timezone)],
            parameters={"dry_run": False}, concurrency_limit=1, entrypoint_type=module))
    from flows.alerts import failure_trigger, run_failed_alert  # the automation on failed or crashed runs

    deployments.append(run_failed_alert.to_deployment(name="run-failed-alert", triggers=[failure_trigger()],
                                                      concurrency_limit=5, entrypoint_type=module))
    return deployments


# -- serving ------------------------------------------------------------------------------------


def flows_run_warm() -> dict[str, Any]:
    """The deployments whose runs `dsr serve` executes in its own process, and their flows: every
    one that calls vendors (so that they share this process's rate limiters); the deadline sweep
    calls none and stays with the runner (a process per run)."""
    from flows.batch import process_verified
    from flows.request import process_request
    from flows.retention import retention_purge

    return {"process-request": process_request, "process-verified": process_verified,
            "retention-purge": retention_purge}


def warm_run_settings() -> dict[Any, Any]:
    """Prefect settings of the warm runs on the embedded server (whose CSRF protection is off):
    each new client of theirs would otherwise first ask for a CSRF token and be told there is none
    (a round trip before its first call)."""
    from prefect.settings import PREFECT_CLIENT_CSRF_SUPPORT_ENABLED

    return {PREFECT_CLIENT_CSRF_SUPPORT_ENABLED: False}


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def serve_embedded(*, prefect_port: int | None = None, api: Callable[[], None] | None = None,
                   api_stop: Callable[[], None] | None = None, service: DsrService | None = None,
                   settings: Settings | None = None, prefect_home: Path | None = None, ui: bool = True,
                   sweep_cron: str = SWEEP_CRON, sweep_every: Every | None = None,
                   purge_cron: str = PURGE_CRON, purge_every: Every | None = None, serve_purge: bool = True,
                   poll_seconds: float | None = None, startup_timeout: float = SERVER_STARTUP_TIMEOUT,
                   stop: threading.Event | None = None,
                   on_ready: Callable[[PrefectServer], None] | None = None, warm: bool = True,
                   warm_runs: int | None = None) -> None:
    """Run the Prefect server, the served flows and the API until SIGINT/SIGTERM or `stop`.

    - `api`: blocking callable run in a thread once the deployments exist (the CLI passes
      uvicorn's `Server.run`); `api_stop` asks it to return (e.g. sets `should_exit`). If the
      API returns or fails on its own, everything stops and EmbeddedServeError is raised.
    - `service`: the service the API uses; its verifications are mirrored as Prefect events
      (flows.events.install), and requests verified while nothing listened are re-announced.
    - `warm` (default): process-request and process-verified runs execute in threads of this
      process (flows/warm.py), with `service` (about a second from verification to completion
      instead of a process start per run); `warm_runs` of them at once. Otherwise each run is a
      subprocess that builds its service from the DSR_* environment (flows.runtime).
    """
    settings = service.settings if service is not None else (settings or Settings())
    home = prefect_home or settings.home / "prefect"
    if not warm:
        # Each flow run is a subprocess: without a shared store, each would pace itself to a vendor's
        # whole limit. A SQLite file beside the ledger is enough on one machine (a fleet sets its own).
        # Warm, every run that calls vendors is in this process and shares its limiters in memory
        # (a database round trip per vendor call cost a served request about a second).
        from connectors.pacing import RATE_LIMIT_URL_ENV

        os.environ.setdefault(RATE_LIMIT_URL_ENV, f"sqlite:///{(settings.home / 'rate-limits.sqlite').resolve()}")
    stop = stop or threading.Event()
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if on_main_thread else None
    threads: list[threading.Thread] = []  # the API's, once started
    workers: list[Any] = []  # the warm worker, once started
    api_failure: list[BaseException] = []
    stopping = threading.Event()

    def run_api() -> None:
        try:
            assert api is not None
            api()
        except BaseException as exc:  # noqa: BLE001 - reported by serve_embedded in its thread
            api_failure.append(exc)
        finally:
            if not stopping.is_set():
                api_failure.append(EmbeddedServeError("the HTTP API stopped on its own"))
                stop.set()

    def _serve_all() -> None:
        # Prefect's own variable chooses its database (a PostgreSQL one spares warm runs the waits of
        # SQLite's single writer: measured, 1 run in 4 was created ~2 s late behind event writes).
        database_url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or None
        with prefect_server(home=home, port=prefect_port, ui=ui, timeout=startup_timeout,
                            database_url=database_url) as server, use_prefect_api(server.api_url):
            from prefect.runner import Runner

            timezone = service.policy.retention.timezone if service is not None else _policy_timezone(settings)
            deployments = build_deployments(purge_timezone=timezone, sweep_cron=sweep_cron, sweep_every=sweep_every,
                                            purge_cron=purge_cron, purge_every=purge_every, serve_purge=serve_purge)
            runner = Runner(name="dsr-serve", pause_on_shutdown=True, query_seconds=poll_seconds)

            async def serve() -> None:
                warm_flows: dict[Any, Any] = {}
                request_deployment = None  # process-request's id, when its runs are warm
                for deployment in deployments:
                    flow = flows_run_warm().get(deployment.name) if warm else None
                    if flow is not None:  # registered, but run here rather than by the runner's subprocesses
                        deployment_id = await deployment.aapply()
                        warm_flows[deployment_id] = flow
                        if deployment.name == "process-request":
                            request_deployment = deployment_id
                    else:
                        await runner.aadd_deployment(deployment)
                log.info("serving %s against %s", ", ".join(d.name for d in deployments), server.api_url)
                if warm_flows:
                    from flows import runtime
                    from flows.warm import DEFAULT_PARALLEL_RUNS, WarmWorker

                    if service is not None:
                        runtime.use_service(service)  # warm runs share the API's ledger pool
                    workers.append(WarmWorker(warm_flows, parallel_runs=warm_runs or DEFAULT_PARALLEL_RUNS,
                                              run_settings=warm_run_settings()))
                    await asyncio.to_thread(workers[0].start)
                    if request_deployment is not None:
                        _use_starter(_Starter(workers[0], request_deployment))
                    # A verification here starts its run here; if the service's verifications already
                    # went to the trigger (its bridge installed before), the worker looks at once instead.
                    if service is not None and not mirror_verifications(service):
                        service.bus.subscribe(_nudge_on_verified(workers[0]))
                if service is not None:
                    from flows.events import emit_backlog, install

                    install(service)
                    backlog = await asyncio.to_thread(emit_backlog, service)
                    if backlog:
                        log.info("re-announced %d verified request(s) that never started", len(backlog))
                if api is not None:
                    threads.append(threading.Thread(target=run_api, name="dsr-api", daemon=True))
                    threads[0].start()
                from flows.warm import write_handoff

                write_handoff(settings.home, server.api_url, warm=bool(warm_flows))
                if on_ready is not None:
                    on_ready(server)
                if not stop.is_set():
                    await runner.start()

            finished = threading.Event()
            watcher = threading.Thread(target=_stop_runner_when, args=(stop, finished, runner),
                                       name="dsr-serve-stop", daemon=True)
            watcher.start()
            try:
                asyncio.run(serve())
            except KeyboardInterrupt:
                log.info("interrupted; shutting down")
            finally:
                from flows.warm import remove_handoff

                remove_handoff(settings.home)
                _use_starter(None)
                stopping.set()
                finished.set()
                stop.set()
                watcher.join(5)
                for worker in workers:
                    worker.stop()
                for thread in threads:
                    if thread.is_alive() and api_stop is not None:
                        api_stop()
                    thread.join(10)
                _drain_events()

    try:
        _serve_all()
    except KeyboardInterrupt:
        log.info("interrupted while starting; stopped")
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    if api_failure:
        raise EmbeddedServeError(f"the HTTP API stopped: {api_failure[0]!r}") from api_failure[0]


def _nudge_on_verified(worker: Any) -> Callable[[str, str], None]:
    from dsr.state import EventType

    def on_change(event_type: str, request_id: str) -> None:
        if event_type == EventType.VERIFIED:
            worker.nudge()

    return on_change


# -- a verification recorded here starts its run here ----------------------------------------------


@dataclass(frozen=True)
class _Starter:
    """The running serve's warm worker and its process-request deployment."""

    worker: Any
    deployment_id: Any


_starter: _Starter | None = None  # set while a warm serve runs in this process


def _use_starter(starter: _Starter | None) -> None:
    global _starter
    _starter = starter


def mirror_verifications(service: DsrService) -> bool:
    """Announce each verification recorded through `service` to Prefect.

    While a warm `dsr serve` runs in this process, that serve creates the request's process-request
    run itself and runs it at once (measured on the SQLite server: the automation's own creation of
    the run met the write lock in most runs, and Prefect's client then waited 2 s, sometimes 6 s),
    then announces the verification with that run beside it and without the label the trigger
    needs. Otherwise (no serve running, or it could not create the run) it is the bridge's event,
    which the trigger turns into a run (flows.events). Subscribed under the bridge's key, so a later
    `flows.events.install(service)` adds nothing: one announcement per verification. False if the
    bridge was on `service` already (its verifications then go through the trigger).
    """
    from flows.events import SUBSCRIPTION_KEY

    if service.bus.subscribed(SUBSCRIPTION_KEY):
        return False
    service.bus.subscribe(lambda event_type, request_id: _on_change(service, event_type, request_id),
                          key=SUBSCRIPTION_KEY)
    return True


def _on_change(service: DsrService, event_type: str, request_id: str) -> None:
    from prefect.settings import PREFECT_API_URL

    from dsr.state import EventType

    if event_type != EventType.VERIFIED or not PREFECT_API_URL.value():  # none: as the bridge, nothing to tell
        return
    starter = _starter
    try:
        if starter is not None:
            from flows import observe

            state = service.state(request_id)
            kind, regime = str(state.type), str(state.regime)
            payload = {"type": kind, "regime": regime}
            try:
                # Named and tagged at creation, so the run need not rename itself (a call less).
                future = starter.worker.start_run(starter.deployment_id, {"request_id": request_id},
                                                  tags=observe.request_run_tags(kind, regime),
                                                  name=observe.request_run_name(kind, regime, request_id))
            except RuntimeError:  # the worker is stopping: the trigger's way
                pass
            else:
                future.add_done_callback(lambda done: _started(service, request_id, payload, done, starter))
                return
        _announce_for_trigger(service, request_id)
    except Exception as exc:  # noqa: BLE001 - the verification is recorded; a failure here must not undo it
        log.warning("could not announce the verification of request %s (%s); run it with `dsr run %s`",
                    request_id, type(exc).__name__, request_id)


def _started(service: DsrService, request_id: str, payload: dict[str, str], done: Any, starter: _Starter) -> None:
    """After start_run (in the worker's thread): announce the started run, or leave it to the trigger."""
    try:
        flow_run = done.result()
    except Exception as exc:  # noqa: BLE001 - the trigger's way still works
        log.warning("could not create the run of request %s here (%s); the trigger will", request_id,
                    type(exc).__name__)
        try:
            _announce_for_trigger(service, request_id)
            starter.worker.nudge()
        except Exception as again:  # noqa: BLE001 - nothing more to try: `dsr run`, or the next start's backlog
            log.warning("could not announce the verification of request %s (%s); run it with `dsr run %s`",
                        request_id, type(again).__name__, request_id)
        return
    try:
        announce_started(request_id, flow_run, payload)
    except Exception as exc:  # noqa: BLE001 - the run exists and runs; the event is a courtesy
        log.warning("could not emit the verification of request %s (%s)", request_id, type(exc).__name__)


def _announce_for_trigger(service: DsrService, request_id: str) -> None:
    from flows.events import emit_verified

    emit_verified(service, request_id)


def announce_started(request_id: str, flow_run: Any, payload: dict[str, str]) -> Any:
    """`dsr.request.verified` for a request whose run is started already: the request's resource
    without its id label (the trigger requires it, so it starts nothing), the run as a related resource."""
    from prefect.events import emit_event

    from flows.events import RESOURCE_PREFIX, VERIFIED_EVENT

    return emit_event(event=VERIFIED_EVENT, resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{request_id}"},
                      related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                                "prefect.resource.role": "flow-run", "prefect.resource.name": flow_run.name}],
                      payload=payload)


def _drain_events(timeout: float = 10.0) -> None:
    """Deliver queued events (e.g. a verification during shutdown) before the server goes."""
    try:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)  # called outside any event loop: waits
    except Exception:  # noqa: BLE001 - shutting down; an undelivered event is re-announced next start
        log.warning("could not flush Prefect events before stopping", exc_info=True)


def _policy_timezone(settings: Settings) -> str:
    from dsr.config import load_policy

    return load_policy(settings.policy_path).retention.timezone


def _stop_runner_when(stop: threading.Event, finished: threading.Event, runner: Runner) -> None:
    """Waits for `stop`, then stops the runner from its own loop (it may not have started yet)."""
    stop.wait()
    while not finished.is_set():
        loop = getattr(runner, "_loop", None)
        if runner.started and loop is not None and not loop.is_closed():
            try:
                runner.execute_in_background(runner.astop).result(timeout=30)
            except Exception:  # noqa: BLE001 - it is stopping anyway; say why it was untidy
                log.warning("the runner did not stop cleanly", exc_info=True)
            return
        time.sleep(0.1)
