"""The `process-verified` flow: every verified request waiting to run, in one flow run.

Why it exists: on a process worker every flow run is a new Python process that imports Prefect
(2-4 s of CPU on this machine), so at volume one flow run per request binds throughput long before
any vendor does (bench/workers.py: about 18-21 requests a minute on 2 cores against about 110 in
one process at the vendors' limits). This flow takes every verified request that has not started,
fans out one task per request and system (the same `system-step` task as process-request), and
seals each request as its systems finish, then looks again until none is left.

Same rules as process-request, through the same RequestRunner: each request's lease keeps a
process-request run (or a second batch) off it, finished systems are skipped, a failure in one
request's system never stops the others, and a re-run repeats nothing.
"""

from __future__ import annotations

import resource
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from dsr.service import RequestStateError
from flows import observe, runtime
from flows.request import system_step

if TYPE_CHECKING:
    from dsr.run import RunPlan

#: System steps in flight across all requests of the batch (connectors pace each vendor).
MAX_PARALLEL_STEPS = 32
#: The key of the run's summary artifact (outcomes counted, peak memory): its latest version is the last batch's.
SUMMARY_ARTIFACT = "process-verified"


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


@flow(name="process-verified", flow_run_name=observe.timed_run_name("process-verified"),
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_STEPS),  # type: ignore[arg-type]
      validate_parameters=True)
def process_verified(max_requests: int = 50, max_rounds: int = 40) -> dict[str, Any]:
    """Run every verified request that has not started, up to `max_requests` a round, until none is left.

    A round takes the leases of all its requests at once, and a lease is renewed only when one of
    its system steps starts: rounds are kept small enough that the last request's steps start
    well within a lease (DSR_RUN_LEASE_SECONDS, 15 min) even at a slow vendor's limit.

    Returns each request's final status ("skipped" when another run held it or it could not run)
    and the run process's peak memory (`peak_rss_mib`), also published as the `process-verified`
    table artifact.
    """
    logger = get_run_logger()
    service = runtime.service()
    runner = service.runner()
    ended: dict[str, str] = {}
    observe.tag_current_run(["flow:process-verified"])
    for _ in range(max_rounds):
        waiting = [row.request_id for row in service.list(open_only=True)
                   if row.status == "verified" and row.request_id not in ended][:max_requests]
        if not waiting:
            break
        plans: dict[str, RunPlan] = {}
        for request_id in waiting:
            try:
                plans[request_id] = runner.begin(request_id)
            except RequestStateError as exc:  # another run holds it, or it is no longer runnable
                logger.info("request %s skipped: %s", request_id, type(exc).__name__)
                ended[request_id] = "skipped"
        steps: dict[str, list[PrefectFuture[Any]]] = {
            request_id: [system_step.submit(request_id, system, plan.lease) for system in plan.systems]
            for request_id, plan in plans.items() if not plan.manual_reason and not plan.already_closed
        }
        logger.info("batch: %d request(s), %d system step(s)", len(plans), sum(len(s) for s in steps.values()))
        for request_id, plan in plans.items():
            for step in steps.get(request_id, []):
                try:
                    step.result()
                except Exception as exc:  # noqa: BLE001 - recorded by the runner; the batch goes on
                    logger.warning("request %s: a system step failed (%s)", request_id, type(exc).__name__)
            try:
                ended[request_id] = runner.finish(request_id, lease=plan.lease).status.value
            except Exception as exc:  # noqa: BLE001 - this request stays open for its next run
                logger.warning("request %s could not be finished (%s)", request_id, type(exc).__name__)
                ended[request_id] = "unfinished"
    peak = peak_rss_mib()
    logger.info("batch ended: %d request(s), peak RSS %.0f MiB", len(ended), peak)
    publish_summary(Counter(ended.values()), peak)
    labels = {row.request_id: (row.type, row.regime) for row in service.list() if row.request_id in ended}
    observe.tag_current_run({f"type:{kind}" for kind, _ in labels.values()} |
                            {f"regime:{regime}" for _, regime in labels.values()})
    return {"requests": ended, "peak_rss_mib": round(peak, 1)}
