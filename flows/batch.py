"""The `process-verified` flow: every verified request waiting to run, in one flow run.

Why it exists: on a process worker every flow run is a new Python process that imports Prefect
(2-4 s of CPU on this machine), so at volume one flow run per request binds throughput long before
any vendor does (bench/workers.py: about 18-21 requests a minute on 2 cores against about 110 in
one process at the vendors' limits). This flow takes every verified request that has not started
and keeps a window of them in flight: one task run per request (`request-steps`, named like the
request's own run), whose systems run in threads of the batch's step pool, the same steps as
process-request's; each request sealed in a thread of its own as soon as its systems are done, and
the next waiting request begun in its place, until none is left. Of a finished request the run
keeps only its status, so its memory does not grow with the backlog. One task run per request, not
per system: the Prefect server records every task run from its state events, and at volume that
recording bound the batch (profiled: the server's task-run recorder was its busiest part, with a
task run per request and system).

Same rules as process-request, through the same RequestRunner: each request's lease keeps a
process-request run (or a second batch) off it, finished systems are skipped, a failure in one
request's system never stops the others, and a re-run repeats nothing.
"""

from __future__ import annotations

import contextvars
import queue
import resource
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from dsr.service import RequestStateError
from flows import observe, runtime
from flows.request import retry_if_transient, run_step

if TYPE_CHECKING:
    from dsr.run import RequestRunner, RunPlan
    from dsr.service import DsrService

#: System steps in flight across all requests of the batch (connectors pace each vendor).
MAX_PARALLEL_STEPS = 48
#: Requests begun and not yet sealed: enough queued steps to keep every step thread busy. Measured
#: back to back on a backlog of 200 (bench.workers, 2 cores): 32 drained 153 requests a minute, 16 134.
MAX_REQUESTS_IN_FLIGHT = 32
#: Requests sealed at once (ledger, evidence bundle, package): sealing one must not hold up the rest.
SEALING_THREADS = 4
#: How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). Every
#: ledger append signs the one head log under a database lock held until commit, and the holder
#: needs the GIL back after each of its round trips; among the batch's busy threads each of those
#: waits could take the default's whole 5 ms, and every other append waits behind the lock. At
#: 1 ms a backlog of 200 drained at 201 requests a minute against 182 (bench.workers, 2 cores).
SWITCH_INTERVAL_SECONDS = 0.001
#: The key of the run's summary artifact (outcomes counted, peak memory): its latest version is the last batch's.
SUMMARY_ARTIFACT = "process-verified"


_step_pool: ThreadPoolExecutor | None = None
_step_pool_lock = threading.Lock()


def step_pool() -> ThreadPoolExecutor:
    """The process's threads for batch system steps (`MAX_PARALLEL_STEPS`, across all requests)."""
    global _step_pool
    with _step_pool_lock:
        if _step_pool is None:
            _step_pool = ThreadPoolExecutor(max_workers=MAX_PARALLEL_STEPS, thread_name_prefix="dsr-batch-step")
        return _step_pool


@task(name="request-steps", task_run_name="{run_name}", cache_policy=NO_CACHE,
      retries=observe.SYSTEM_STEP_RETRIES, retry_delay_seconds=observe.SYSTEM_STEP_RETRY_DELAYS,
      retry_condition_fn=observe.retry_transient)
def request_steps(request_id: str, systems: list[str], lease: str | None = None,
                  run_name: str = "request") -> list[dict[str, Any]]:
    """Every system step of one request, each in a thread of the step pool; the systems' results.
    Retried as a whole for a transient failure: systems already done are skipped on the next attempt."""
    futures = {system: step_pool().submit(contextvars.copy_context().run, run_step, request_id, system, lease)
               for system in systems}
    outcomes = {system: future.result() for system, future in futures.items()}
    retry_if_transient({system: failure for system, (_, failure) in outcomes.items()})
    return [result for result, _ in outcomes.values()]


def peak_rss_mib() -> float:
    """This process's peak resident set size, in MiB: what an operator sizes a worker's memory by.

    `VmHWM` is this address space's own peak. `ru_maxrss` is the fallback only: after a fork and
    exec it can carry the peak of the process that started this one (a worker).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def publish_summary(outcomes: Counter[str], peak_mib: float) -> None:
    """A table artifact of the batch: requests per outcome and the process's peak memory (no personal data)."""
    try:
        from prefect.artifacts import create_table_artifact

        rows = [{"figure": f"requests {status}", "value": count} for status, count in sorted(outcomes.items())]
        rows += [{"figure": "requests", "value": sum(outcomes.values())},
                 {"figure": "peak RSS (MiB)", "value": round(peak_mib, 1)}]
        create_table_artifact(rows, key=SUMMARY_ARTIFACT,
                              description="process-verified: requests per outcome, and the run process's peak memory")
    except Exception as exc:  # noqa: BLE001 - the ledger is the record; an artifact is a convenience
        get_run_logger().warning("batch summary artifact not published (%s)", type(exc).__name__)


class _Window:
    """The requests begun and not yet sealed. Each is sealed (`finish`) in a thread of its own pool
    as soon as its last system step ends, so sealing one request (ledger, bundle, package) overlaps
    the others' steps and the next requests' start; `next_ended` hands back each outcome."""

    def __init__(self, finish: Callable[[RunPlan], str], threads: int) -> None:
        self._finish = finish
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dsr-batch-seal")
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # request id -> system steps not yet ended
        self._in_window: set[str] = set()
        self._ended: queue.SimpleQueue[_Ended] = queue.SimpleQueue()

    def __enter__(self) -> _Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __len__(self) -> int:
        return len(self._in_window)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._in_window

    def add(self, plan: RunPlan, steps: list[PrefectFuture[Any]]) -> None:
        self._in_window.add(plan.request_id)
        if not steps:
            self._executor.submit(self._seal, plan, [])
            return
        with self._lock:
            self._pending[plan.request_id] = len(steps)
        for step in steps:
            step.add_done_callback(partial(self._step_ended, plan, steps))

    def _step_ended(self, plan: RunPlan, steps: list[PrefectFuture[Any]], _step: PrefectFuture[Any]) -> None:
        # In the step's pool thread: the request's last step hands it to a sealing thread.
        with self._lock:
            self._pending[plan.request_id] -= 1
            last = self._pending[plan.request_id] == 0
            if last:
                del self._pending[plan.request_id]
        if last:
            self._executor.submit(self._seal, plan, steps)

    def _seal(self, plan: RunPlan, steps: list[PrefectFuture[Any]]) -> None:
        failed = sum(_failed_systems(step) for step in steps)
        try:
            self._ended.put(_Ended(plan.request_id, self._finish(plan), failed, None))
        except Exception as exc:  # noqa: BLE001 - this request stays open for its next run
            self._ended.put(_Ended(plan.request_id, "unfinished", failed, type(exc).__name__))

    def next_ended(self) -> _Ended:
        """The next request sealed (or that could not be); waits for one. It leaves the window."""
        ended = self._ended.get()
        self._in_window.discard(ended.request_id)
        return ended


def _failed_systems(step: PrefectFuture[Any]) -> int:
    """How many systems an ended step left failed: read from its final state (the task runner hands
    back states), without asking the server; a step that itself failed counts as one."""
    try:
        wrapped = getattr(step, "wrapped_future", None)
        state = wrapped.result() if wrapped is not None else step.state
        if not isinstance(state, State):
            return 0
        if state.is_failed():
            return 1
        results = state.result(raise_on_failure=False) if state.is_completed() else []
    except Exception:  # noqa: BLE001 - the step's engine itself failed; the ledger has what it did
        return 1
    return sum(1 for result in results if isinstance(result, dict) and result.get("status") == "failed") \
        if isinstance(results, list) else 0


@dataclass(frozen=True)
class _Ended:
    request_id: str
    status: str
    failed_steps: int
    error: str | None  # the type of the exception that kept it from being sealed


@flow(name="process-verified", flow_run_name=observe.timed_run_name("process-verified"),
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_STEPS),  # type: ignore[arg-type]
      validate_parameters=True)
def process_verified(max_requests: int = MAX_REQUESTS_IN_FLIGHT, max_rounds: int = 400) -> dict[str, Any]:
    """Run every verified request that has not started, `max_requests` at a time, until none is left.

    A request is begun (its lease taken) when a place in the window frees up, and sealed as soon
    as its own systems are done, so no thread waits for the slowest request of a group. A lease is
    renewed only when one of its system steps starts: the window is kept small enough that the
    last request's steps start well within a lease (DSR_RUN_LEASE_SECONDS, 15 min) even at a slow
    vendor's limit. `max_rounds` caps the looks at the ledger for more (each takes up to
    `max_requests`), so that a steady stream of new requests cannot keep one run going for ever.

    Returns each request's final status ("skipped" when another run held it or it could not run)
    and the run process's peak memory (`peak_rss_mib`), also published as the `process-verified`
    table artifact.
    """
    if max_requests < 1 or max_rounds < 1:
        raise ValueError("max_requests and max_rounds: at least 1")
    logger = get_run_logger()
    service = runtime.service()
    runner = service.runner()
    observe.tag_current_run(["flow:process-verified"])
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_SECONDS))
    try:
        ended, labels = _drain(service, runner, max_requests, max_rounds)
    finally:
        sys.setswitchinterval(switch_interval)
    peak = peak_rss_mib()
    logger.info("batch ended: %d request(s), peak RSS %.0f MiB", len(ended), peak)
    publish_summary(Counter(ended.values()), peak)
    observe.tag_current_run({f"type:{kind}" for kind, _ in labels} | {f"regime:{regime}" for _, regime in labels})
    return {"requests": ended, "peak_rss_mib": round(peak, 1)}


def _drain(service: DsrService, runner: RequestRunner, max_requests: int,
           max_rounds: int) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """process-verified's loop: each request's final status, and the (type, regime) pairs seen."""
    logger = get_run_logger()
    ended: dict[str, str] = {}
    labels: set[tuple[str, str]] = set()
    kinds: dict[str, tuple[str, str]] = {}  # request id -> (type, regime), for its task run's name
    waiting: deque[str] = deque()
    looks = 0
    with _Window(lambda plan: runner.finish(plan.request_id, lease=plan.lease).status.value, SEALING_THREADS) as window:
        while True:
            while len(window) < max_requests:
                if not waiting and looks < max_rounds:
                    looks += 1
                    for row in service.list(open_only=True):
                        if row.status == "verified" and row.request_id not in ended and row.request_id not in window:
                            waiting.append(row.request_id)
                            labels.add((row.type, row.regime))
                            kinds[row.request_id] = (row.type, row.regime)
                            if len(waiting) >= max_requests:
                                break
                if not waiting:
                    break
                request_id = waiting.popleft()
                try:
                    plan = runner.begin(request_id)
                except RequestStateError as exc:  # another run holds it, or it is no longer runnable
                    logger.info("request %s skipped: %s", request_id, type(exc).__name__)
                    ended[request_id] = "skipped"
                    continue
                kind, regime = kinds.get(request_id, ("request", "any"))
                window.add(plan, [] if plan.manual_reason or plan.already_closed or not plan.systems else
                           [request_steps.submit(request_id, list(plan.systems), plan.lease,
                                                 run_name=observe.request_run_name(kind, regime, request_id))])
            if not len(window):
                break
            done = window.next_ended()
            if done.failed_steps:  # recorded by the runner; the batch goes on
                logger.warning("request %s: %d system(s) failed", done.request_id, done.failed_steps)
            if done.error:
                logger.warning("request %s could not be finished (%s)", done.request_id, done.error)
            ended[done.request_id] = done.status
            kinds.pop(done.request_id, None)
    return ended, labels
