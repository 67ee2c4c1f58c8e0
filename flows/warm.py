"""Flow runs executed inside a long-lived process: a verified request done in about a second.

Prefect 3.9's `serve()` and process workers start a new Python process for every flow run, and
that process spends 2-10 s of CPU importing Prefect and our code before the first system is
called (prefect-notes: "Warm flow runs"). `WarmWorker` is the in-process alternative: it watches
the server for scheduled runs of the deployments it was given, claims each one the way Prefect's
own workers do (proposing `Pending`, so a run is taken by one claimant only), and calls
`prefect.flow_engine.run_flow` in a thread of this process, where the flows are already imported
and the service, its ledger pool and the connectors' describe caches are warm.

Each run is still a real Prefect flow run: created by the deployment's trigger with its
parameters, its state changes and task runs recorded by the server, visible in the UI.

What is given up, against a process per run:
- Cancelling a run from the UI does not stop it (it stays Cancelling until it ends); the ledger
  lease keeps a second run off the same request meanwhile. Nor is a run suspended from outside
  (`without_suspension_watch`).
- Heartbeats are off for warm runs: a sync flow otherwise waits up to a second at its end for the
  heartbeat thread. A run cut short by a crash is left Running in Prefect; the ledger lease lets
  the next run of the request take over (process-request resumes where it stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.flows import Flow

    from dsr.service import DsrService

log = logging.getLogger(__name__)

#: Runs executed at once. Each is I/O-bound (vendors), but a local SQLite Prefect server answers
#: state changes one writer at a time: more than a few threads only queue there (prefect-notes).
DEFAULT_PARALLEL_RUNS = 4
#: The fallback poll when no `Scheduled` event arrives (an event lost, the websocket reconnecting).
DEFAULT_POLL_SECONDS = 5.0
SCHEDULED_EVENT = "prefect.flow-run.Scheduled"
#: After a wake (a `Scheduled` event, a local verification) that found nothing to claim, look again
#: after these pauses: the trigger creates the run a little after the verification, and the event
#: can come before the run it announces is readable.
RECHECK_SECONDS = (0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.5, 0.5, 0.5)
#: Scheduled runs read beyond the free threads, and looks in a row while other workers win the
#: runs read: with several workers on a pool, those freed at the same moment read the same oldest
#: runs and the server gives each to one of them.
CLAIM_SPARE = 2
CLAIM_ROUNDS = 3
#: Pauses between attempts to create a run that the server answered 503 ("database is locked": a
#: SQLite server's write lock was taken meanwhile). Prefect's client waits 2 s, then 4 s; the lock is
#: usually free again within milliseconds. About 30 s in all, then the caller is told.
CREATE_RETRY_SECONDS = (0.02, 0.05, 0.1, 0.1, 0.2, 0.3, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 5.0, 5.0, 5.0)

#: The flow runs lately executed warm in this process, newest last (for `ran_here`).
_recent_runs: deque[UUID] = deque(maxlen=1000)


def ran_here(flow_run_id: UUID) -> bool:
    """Whether this process executed that flow run warm (lately): what tells it from a run started
    in a process of its own, which Prefect's records do not."""
    return flow_run_id in _recent_runs


class WarmWorker:
    """Runs the scheduled flow runs of some deployments in threads of this process.

    `flows` maps a deployment id to the flow its runs execute. `start()` returns once the worker
    watches the server; `stop()` stops claiming new runs and waits for the running ones.
    """

    def __init__(self, flows: Mapping[UUID, Flow[..., Any]], *, parallel_runs: int = DEFAULT_PARALLEL_RUNS,
                 poll_seconds: float = DEFAULT_POLL_SECONDS, run_settings: Mapping[Any, Any] | None = None) -> None:
        """`run_settings`: Prefect settings for the runs, beside heartbeats off (e.g. `dsr serve`'s
        for its own server)."""
        if parallel_runs < 1:
            raise ValueError("parallel_runs: at least 1")
        self._flows = dict(flows)
        self._extra_settings = dict(run_settings or {})
        self._parallel_runs = parallel_runs
        self._poll_seconds = poll_seconds
        self._executor = ThreadPoolExecutor(max_workers=parallel_runs, thread_name_prefix="dsr-warm-run",
                                            initializer=self._open_thread_client)
        self._thread_clients: list[Any] = []  # each run thread's SyncClientContext, closed at stop
        self._running: dict[UUID, Future[None]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._expecting = False  # the last wake announced a run (worth looking again for); loop thread only
        self._creating = 0  # start_run creations in flight (loop thread only)
        self._ready = threading.Event()
        self._settings_context: tuple[Any, Any] | None = None
        self._client: PrefectClient | None = None
        self._http: httpx.AsyncClient | None = None  # for creating runs (create_flow_run)
        self._claiming: set[UUID] = set()  # runs a claim is under way for
        self._started_here: deque[str] = deque(maxlen=100)  # resource ids of runs start_run created
        self.claimed = 0  # runs this worker took (tests and the bench read it)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="dsr-warm-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the warm worker did not start within {timeout:.0f} s")

    def stop(self, timeout: float = 60.0) -> None:
        """Claim nothing more, then wait (up to `timeout`) for the runs in flight to end."""
        self._stopping.set()
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            running = list(self._running.values())
        for future in running:
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            contexts, self._thread_clients = self._thread_clients, []
        for context in contexts:
            with contextlib.suppress(Exception):
                context.client.__exit__(None, None, None)

    def nudge(self) -> None:
        """Look for runs now (and again shortly): something that makes one was just recorded here,
        e.g. a verification whose trigger is about to create a run. Safe from any thread."""
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake_up, True)

    def _wake_up(self, expecting: bool) -> None:
        """(In the loop's thread.) Look for runs now; `expecting`: a run was announced, so look again
        shortly if it is not readable yet (a freed thread, by contrast, needs one look only)."""
        assert self._wake is not None
        self._expecting = self._expecting or expecting
        self._wake.set()

    @property
    def alive(self) -> bool:
        """Whether the watching thread runs (it ends on `stop()` or when it fails)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    # -- the watching loop --------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # noqa: BLE001 - a dead worker is logged; serve keeps the API up
            log.exception("the warm worker stopped")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        from prefect.client.orchestration import get_client

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        listener = asyncio.create_task(self._listen())
        try:
            async with get_client() as client, api_http_client(str(client.api_url)) as http:
                self._client, self._http = client, http
                self._ready.set()
                expecting = False
                while not self._stopping.is_set():
                    started = await self._claim_and_start(client)
                    if expecting and not started:
                        # Measured: without this, a claim waited for the next event or poll (2 s and more).
                        for pause in RECHECK_SECONDS:
                            await asyncio.sleep(pause)
                            if self._stopping.is_set() or await self._claim_and_start(client):
                                break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                    expecting, self._expecting = self._expecting, False
                    self._wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def _listen(self) -> None:
        """Wake the loop on every `Scheduled` flow-run event; reconnect on failure (polling covers gaps)."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        assert self._wake is not None
        event_filter = EventFilter(event=EventNameFilter(name=[SCHEDULED_EVENT]))
        while not self._stopping.is_set():
            try:
                async with get_events_subscriber(filter=event_filter, reconnect_on_clean_close=True) as subscriber:
                    async for event in subscriber:
                        # A run start_run created is taken here: looking for it would only cost reads. While
                        # a creation is in flight, its run's event can come before its answer: one look then.
                        if event.resource.id not in self._started_here:
                            self._wake_up(self._creating == 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling carries on while the socket is down
                log.debug("event subscription dropped (%s); polling every %.0f s", type(exc).__name__,
                          self._poll_seconds)
                await asyncio.sleep(self._poll_seconds)

    async def _claim_and_start(self, client: PrefectClient) -> int:
        """Claim and start what is waiting, as far as free threads allow; how many runs started
        (a full worker counts as having started one: there is nothing to look again for)."""
        from prefect.types._datetime import now

        started = 0
        for _ in range(CLAIM_ROUNDS):
            free = self._parallel_runs - self.running
            if free <= 0:
                return started or 1
            try:
                # A few more than the free threads: a run another worker claims first is passed over
                # for the next one in the same look, instead of leaving this worker idle until a poll.
                runs = await client.get_scheduled_flow_runs_for_deployments(
                    deployment_ids=list(self._flows), scheduled_before=now("UTC"), limit=free + CLAIM_SPARE)
            except Exception as exc:  # noqa: BLE001 - the server restarting; try again on the next wake
                log.warning("could not read scheduled runs (%s)", type(exc).__name__)
                return started
            passed_over = False
            for flow_run in runs:
                if self._stopping.is_set() or self.running >= self._parallel_runs:
                    break
                took = await self._take(client, flow_run)
                started += took
                passed_over = passed_over or not took
            if not passed_over or len(runs) < free + CLAIM_SPARE:
                break  # nothing was lost to another claimant, or nothing more waits
        return started

    async def _take(self, client: PrefectClient, flow_run: FlowRun) -> int:
        """Claim one scheduled run and start it in a thread; 1 if it started here, else 0."""
        flow = self._flows.get(flow_run.deployment_id) if flow_run.deployment_id else None
        with self._lock:
            if flow is None or flow_run.id in self._running or flow_run.id in self._claiming:
                return 0
            self._claiming.add(flow_run.id)
        try:
            if not await self._claim(client, flow_run):
                return 0
            self.claimed += 1
            # One line per run this worker won (flows.fleet counts them); the name is Prefect's own.
            log.info("Flow run '%s' claimed to run warm", flow_run.name)
            with self._lock:
                self._running[flow_run.id] = self._executor.submit(self._execute, flow, flow_run)
            return 1
        finally:
            with self._lock:
                self._claiming.discard(flow_run.id)

    # -- a run started here, without a trigger or a poll --------------------------------------

    def start_run(self, deployment_id: UUID, parameters: Mapping[str, Any], *,
                  tags: Sequence[str] = (), name: str | None = None) -> Future[FlowRun]:
        """Create a flow run of one of this worker's deployments and run it here at once.

        What `dsr serve` does for a verification it records itself: the run exists as soon as the
        server writes it, without the event -> automation -> poll round trip (on a SQLite server,
        the automation's own write often meets the lock and its client then waits 2 s or more).
        The run is the same as a triggered one: a run of the deployment, with its parameters,
        states and task runs. Safe from any thread; the future gives the created run (it waits
        Scheduled for a free thread when all are busy). Raises RuntimeError when the worker is not
        watching (stopped, or not started).
        """
        if deployment_id not in self._flows:
            raise ValueError(f"deployment_id: {deployment_id} is not one of this worker's deployments")
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping.is_set() or self._http is None:
            raise RuntimeError("the warm worker is not running")
        # One key for every attempt: an attempt whose answer was lost cannot make a second run.
        key = f"dsr-warm-start {uuid4()}"
        return asyncio.run_coroutine_threadsafe(
            self._create_and_start(deployment_id, dict(parameters), list(tags), name, key), loop)

    async def _create_and_start(self, deployment_id: UUID, parameters: dict[str, Any], tags: list[str],
                                name: str | None, key: str) -> FlowRun:
        client, http = self._client, self._http
        assert client is not None and http is not None
        self._creating += 1
        try:
            flow_run = await create_flow_run(http, deployment_id, parameters, tags=tags, name=name,
                                             idempotency_key=key)
        finally:
            self._creating -= 1
        self._started_here.append(f"prefect.flow-run.{flow_run.id}")
        if not self._stopping.is_set() and self.running < self._parallel_runs:
            await self._take(client, flow_run)
        return flow_run

    @staticmethod
    async def _claim(client: PrefectClient, flow_run: FlowRun) -> bool:
        """Propose Pending, as Prefect's workers do: the server accepts it for one claimant only."""
        from prefect.exceptions import Abort
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state

        try:
            state = await propose_state(client, Pending(), flow_run_id=flow_run.id)
        except Abort:
            return False
        except Exception as exc:  # noqa: BLE001 - left Scheduled for the next look
            log.warning("could not claim flow run %s (%s)", flow_run.id, type(exc).__name__)
            return False
        return state.is_pending()

    # -- one run ------------------------------------------------------------------------------

    def _run_settings(self) -> Any:
        """This process's Prefect settings with heartbeats off, built once: building settings
        (what `temporary_settings` does) costs about a quarter of a second of CPU each time."""
        from prefect.context import SettingsContext, get_settings_context
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

        with self._lock:
            if self._settings_context is None:
                current = get_settings_context()
                self._settings_context = (current.profile, current.settings.copy_with_update(
                    updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, **self._extra_settings}))
            profile, settings = self._settings_context
        return SettingsContext(profile=profile, settings=settings)

    def _open_thread_client(self) -> None:
        """(Once in each run thread.) A Prefect client context kept for the thread's life, which the
        runs of the thread then find and use: without it each run builds a client of its own (an
        httpx client and its SSL context: about 60 ms of CPU) and opens new connections before its
        first state change. A pool thread keeps its context variables from one run to the next."""
        from prefect.context import SyncClientContext

        try:
            with self._run_settings():
                context = SyncClientContext()
                context.__enter__()
        except Exception as exc:  # noqa: BLE001 - each run then makes its own client, as Prefect would
            log.warning("no shared Prefect client for a run thread (%s)", type(exc).__name__)
            return
        with self._lock:
            self._thread_clients.append(context)

    def _execute(self, flow: Flow[..., Any], flow_run: FlowRun) -> None:
        from prefect.flow_engine import run_flow

        _recent_runs.append(flow_run.id)
        try:
            # A fresh pool thread has no flow-run context, so the run is a run of its own (not a subflow).
            with self._run_settings():
                run_flow(flow, flow_run=without_suspension_watch(flow_run), return_type="state")
        except BaseException:  # noqa: BLE001 - the engine has recorded the state; keep the worker going
            log.exception("flow run %s ended with an error outside the flow", flow_run.id)
        finally:
            with self._lock:
                was_full = len(self._running) >= self._parallel_runs
                self._running.pop(flow_run.id, None)
            if was_full and self._loop is not None and self._wake is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # a slot is free: look for runs left waiting now
                    self._loop.call_soon_threadsafe(self._wake_up, False)


def without_suspension_watch(flow_run: FlowRun) -> FlowRun:
    """The run as handed to Prefect's engine in a warm thread: without its deployment id.

    For a deployment's run, Prefect 3.9's engine first starts a suspension watch (a thread, an
    event loop and a websocket subscription to the server) and waits for it to be ready, and at
    the end stops it and joins its thread: measured on `dsr serve`, 0.1 s before every run starts
    and 0.2 s after it ends. Warm runs are not suspended from outside, as they are not cancelled
    (the ledger's lease is what guards a request). The engine looks at the deployment id only to
    decide on that watch before it sets the run up; it then reads the run back from the server,
    deployment id included, for the run's context (`prefect.runtime.deployment`)."""
    return flow_run.model_copy(update={"deployment_id": None})


def api_http_client(api_url: str) -> httpx.AsyncClient:
    """A plain HTTP client of the Prefect API at `api_url`, with this process's Prefect credentials
    (an auth string or an API key, as Prefect's own client sends them)."""
    import base64

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    headers: dict[str, str] = {}
    if auth_string := PREFECT_API_AUTH_STRING.value():
        headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
    elif api_key := PREFECT_API_KEY.value():
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.AsyncClient(base_url=api_url.rstrip("/") + "/", headers=headers, timeout=30.0)


async def create_flow_run(http: httpx.AsyncClient, deployment_id: UUID, parameters: Mapping[str, Any], *,
                          idempotency_key: str, tags: Sequence[str] = (), name: str | None = None) -> FlowRun:
    """Create a Scheduled run of a deployment (now), trying again soon after a 503.

    Prefect's client would also try again, but after 2 s, then 4 s: on a SQLite server the answer
    503 means another writer held the lock for a moment. Every attempt carries `idempotency_key`,
    so an attempt whose answer was lost yields the same run, not a second one.
    """
    from prefect.client.schemas.objects import FlowRun

    body: dict[str, Any] = {"parameters": dict(parameters), "idempotency_key": idempotency_key}
    if tags:
        body["tags"] = list(tags)
    if name:
        body["name"] = name
    path = f"deployments/{deployment_id}/create_flow_run"
    for pause in (*CREATE_RETRY_SECONDS, None):
        try:
            response = await http.post(path, json=body)
        except httpx.TransportError:
            if pause is None:
                raise
        else:
            if response.status_code != 503 or pause is None:
                response.raise_for_status()
                return FlowRun.model_validate(response.json())
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # the last attempt returns or raises


# -- a warm worker of a work pool ---------------------------------------------------------------


def flow_of_entrypoint(entrypoint: str) -> Flow[..., Any] | None:
    """The flow a deployment's entrypoint names (`flows/request.py:process_request`), imported as a
    module of this project so that its runs share this process's service; None for any other."""
    path, _, name = entrypoint.partition(":")
    if not (path.startswith("flows/") and path.endswith(".py") and name):
        return None
    module = import_module(path.removesuffix(".py").replace("/", "."))
    found = getattr(module, name, None)
    from prefect.flows import Flow

    return found if isinstance(found, Flow) else None


async def pool_flows(pool: str) -> dict[UUID, Flow[..., Any]]:
    """Each deployment of work pool `pool` (at PREFECT_API_URL) whose flow this project holds, by id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    async with get_client() as client:
        deployments = await client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
    flows: dict[UUID, Flow[..., Any]] = {}
    for deployment in deployments:
        flow = flow_of_entrypoint(deployment.entrypoint or "")
        if flow is None:
            log.warning("deployment %s: entrypoint %r is not a flow of this project; left to other workers",
                        deployment.name, deployment.entrypoint)
            continue
        flows[deployment.id] = flow
    return flows


def run_pool_worker(pool: str, *, parallel_runs: int = DEFAULT_PARALLEL_RUNS,
                    poll_seconds: float = DEFAULT_POLL_SECONDS, stop: threading.Event | None = None,
                    drain_seconds: float = 300.0) -> int:
    """Run the scheduled flow runs of `pool`'s deployments warm in this process until SIGTERM,
    SIGINT or `stop`; then claim nothing more and let the runs in flight end (up to `drain_seconds`:
    a run cut off by the exit would be left Failed). Flows build their service from the DSR_*
    environment (flows.runtime). Returns 0, or 2 when the pool has none of this project's flows."""
    stop = stop or threading.Event()
    flows = asyncio.run(pool_flows(pool))
    if not flows:
        log.error("work pool %s has no deployment of this project's flows (deploy first)", pool)
        return 2
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda _signum, _frame: stop.set())
    worker = WarmWorker(flows, parallel_runs=parallel_runs, poll_seconds=poll_seconds)
    try:
        worker.start()
        log.info("warm worker on pool %s: %d deployment(s), %d run(s) at once", pool, len(flows), parallel_runs)
        while not stop.wait(1.0):
            if not worker.alive:
                log.error("the warm worker's watching thread ended; exiting")
                return 1
        log.info("stopping: %d run(s) in flight", worker.running)
    finally:
        worker.stop(drain_seconds)
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.warm --pool POOL [--limit N]`: a worker of a work pool that runs its flow
    runs in threads of one long-lived process (PREFECT_API_URL names the server)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.warm", description=main.__doc__)
    parser.add_argument("--pool", required=True, help="the work pool whose deployments' runs to take")
    parser.add_argument("--limit", type=int, default=DEFAULT_PARALLEL_RUNS,
                        help=f"flow runs at once (default {DEFAULT_PARALLEL_RUNS})")
    parser.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                        help=f"fallback poll when no Scheduled event arrives (default {DEFAULT_POLL_SECONDS:g})")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit: at least 1")
    from dsr.logging_setup import configure_logging

    # The DSR_LOG_* settings, identities redacted; this module's INFO lines (a run claimed) always.
    configure_logging(os.environ.get("DSR_LOG_FORMAT", "text"), os.environ.get("DSR_LOG_LEVEL", "WARNING"))
    logging.getLogger(__name__).setLevel(logging.INFO)
    return run_pool_worker(args.pool, parallel_runs=args.limit, poll_seconds=args.poll_seconds)


# -- `dsr run` handing a request to a running `dsr serve` ---------------------------------------

HANDOFF_FILE = "serve.json"
PROCESS_REQUEST_DEPLOYMENT = "process-request/process-request"
_FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class HandoffError(RuntimeError):
    """The running `dsr serve` did not take the run (`taken` False: run it here instead) or was
    lost while it ran (`taken` True: the run may still end there; the ledger tells)."""

    def __init__(self, message: str, *, taken: bool) -> None:
        super().__init__(message)
        self.taken = taken


def write_handoff(home: Path, api_url: str, *, warm: bool) -> None:
    """Tell later `dsr run`s of this DSR home where the running `dsr serve` takes runs."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / HANDOFF_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"api_url": api_url, "pid": os.getpid(), "warm": warm}))
    temporary.replace(path)


def remove_handoff(home: Path) -> None:
    path = home / HANDOFF_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def running_serve(home: Path, timeout: float = 1.0) -> str | None:
    """The Prefect API URL of a `dsr serve` running on this DSR home and running flows warm, or None."""
    try:
        found = json.loads((home / HANDOFF_FILE).read_text())
        pid, api_url, warm = int(found["pid"]), str(found["api_url"]), bool(found.get("warm"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not warm:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's: its API still answers or not
    try:
        with httpx.Client(timeout=timeout) as client:
            return api_url if client.get(f"{api_url}/health").status_code == 200 else None
    except httpx.HTTPError:
        return None


def run_on_serve(api_url: str, request_id: str, *, timeout: float = 3600.0,
                 on_wait: Callable[[str], None] | None = None) -> str:
    """Create a process-request run on the running `dsr serve` and wait for it to end.

    Plain HTTP to Prefect's REST API: importing Prefect in this process would cost more than the
    run. Returns the run's final state type (COMPLETED, FAILED, ...); the outcome is in the ledger.
    `on_wait(state)` is called between looks (the CLI shows progress from the ledger).
    """
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        try:
            found = client.get(f"/deployments/name/{PROCESS_REQUEST_DEPLOYMENT}")
            found.raise_for_status()
            path = f"/deployments/{found.json()['id']}/create_flow_run"
            body = {"parameters": {"request_id": request_id}, "tags": ["dsr-run"],
                    "idempotency_key": f"dsr-run {uuid4()}"}  # one run, however many attempts
            for pause in (*CREATE_RETRY_SECONDS, None):  # a 503: the server's SQLite lock, for a moment
                created = client.post(path, json=body)
                if created.status_code != 503 or pause is None:
                    break
                time.sleep(pause)
            created.raise_for_status()
        except httpx.HTTPError as exc:
            raise HandoffError(f"the running dsr serve did not take the run ({type(exc).__name__})",
                               taken=False) from exc
        flow_run_id = created.json()["id"]
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            try:
                state = (client.get(f"/flow_runs/{flow_run_id}").json().get("state") or {}).get("type", "")
            except (httpx.HTTPError, ValueError) as exc:
                raise HandoffError(f"lost the running dsr serve while flow run {flow_run_id} ran "
                                   f"({type(exc).__name__}); see `dsr status {request_id}`", taken=True) from exc
            if state in _FINAL_STATES:
                return str(state)
            if time.monotonic() > deadline:
                raise HandoffError(f"flow run {flow_run_id} did not end within {timeout:.0f} s; see `dsr status "
                                   f"{request_id}`", taken=True)
            if on_wait is not None:
                on_wait(str(state))
            time.sleep(pause)
            pause = min(pause * 1.5, 0.2)  # a look costs the server one read; the run takes about a second


def outcome_from_ledger(service: DsrService, request_id: str) -> dict[str, Any]:
    """What process-request returns, read from the ledger after a run elsewhere ended (same keys)."""
    outcome = service.recorded_outcome(request_id)
    return {
        "request_id": request_id,
        "status": outcome.status.value,
        "reason": outcome.reason,
        "systems": [asdict(s) for s in outcome.systems],
        "bundle": str(outcome.bundle_path) if outcome.bundle_path else outcome.bundle_uri,
        "package": str(outcome.package_path) if outcome.package_path else None,
    }


if __name__ == "__main__":
    # Through the imported module, not this `__main__` copy: one `_recent_runs`, one logger name.
    from flows.warm import main as _main

    sys.exit(_main())
