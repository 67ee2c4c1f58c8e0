"""The `process-request` flow: one verified request, fanned out to one task per system.

Thin on purpose: every rule lives in dsr.run.RequestRunner, which writes each step to the
ledger before the next. Prefect contributes the fan-out, retries of whole system steps that failed
for a transient reason (flows.observe), and the run's visibility: a name and tags by type and
regime, and an artifact of the per-system outcome; the ledger stays the record (Prefect's own run
history is lossy under load).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from prefect.task_runners import ThreadPoolTaskRunner

from dsr import telemetry
from flows import observe, runtime

#: Systems are I/O-bound and each connector paces itself to its vendor's limit; threads suffice.
MAX_PARALLEL_SYSTEMS = 8


def run_step(request_id: str, system: str, lease: str | None) -> tuple[dict[str, Any], BaseException | None]:
    """One system's step through the runner (`lease` names the run, not the thread: the step writes
    only while the run holds the request): its result, and the failure the runner recorded, if any."""
    built: list[Any] = []
    failures: list[BaseException] = []
    app = runtime.service()
    connect = observe.kept_factory(app.connecting(system), built)
    result = app.runner().run_system(request_id, system, connect, lease=lease, on_failure=failures.append)
    observe.record_vendor_traffic(system, built)
    return asdict(result), (failures[-1] if failures and result.status == "failed" else None)


def retry_if_transient(failures: dict[str, BaseException | None]) -> None:
    """Raise for Prefect to run the step again when a failure may pass, until the last attempt, whose
    result stands as recorded (each failure is in the ledger already; a re-run resumes where it stopped)."""
    transient = sorted(system for system, failure in failures.items()
                       if failure is not None and observe.is_transient(failure))
    if transient and (task_run.run_count or 1) <= observe.SYSTEM_STEP_RETRIES:
        kinds = ", ".join(f"{system}: {type(failures[system]).__name__}" for system in transient)
        raise observe.TransientSystemFailure(f"{kinds}, recorded; trying again")


@task(name="system-step", task_run_name="{system}", cache_policy=NO_CACHE,
      retries=observe.SYSTEM_STEP_RETRIES, retry_delay_seconds=observe.SYSTEM_STEP_RETRY_DELAYS,
      retry_condition_fn=observe.retry_transient)
def system_step(request_id: str, system: str, lease: str | None = None) -> dict[str, Any]:
    result, failure = run_step(request_id, system, lease)
    retry_if_transient({system: failure})
    return result


@flow(name="process-request",
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_SYSTEMS),  # type: ignore[arg-type]
      validate_parameters=True)
def process_request(request_id: str) -> dict[str, Any]:
    """Run a verified request in every system it concerns, then seal its evidence.

    Safe to run again: finished systems are skipped, unfinished ones resume where they stopped.
    Refuses (raises) an unverified, cancelled or rejected request.
    """
    logger = get_run_logger()
    started = time.monotonic()
    kind, regime = observe.request_labels(request_id)
    # Named and tagged here, in one update, not through `flow_run_name` (a call of its own per run);
    # a run dsr serve created carries both already, and nothing is sent.
    observe.tag_current_run(observe.request_run_tags(kind, regime),
                            name=observe.request_run_name(kind, regime, request_id))
    runner = runtime.service().runner()
    plan = runner.begin(request_id)
    if plan.manual_reason:
        logger.info("request %s waits for the privacy office: %s", request_id, plan.manual_reason)
    elif plan.already_closed:
        logger.info("request %s is already completed; nothing repeated", request_id)
    else:
        logger.info("request %s: %s in %d system(s): %s", request_id, plan.action, len(plan.systems),
                    ", ".join(plan.systems) or "none left")
        futures = [system_step.submit(request_id, system, plan.lease) for system in plan.systems]
        for future in futures:
            future.result()
    outcome = runner.finish(request_id, lease=plan.lease)
    logger.info("request %s ended %s", request_id, outcome.status.value)
    result = {
        "request_id": outcome.request_id,
        "status": outcome.status.value,
        "reason": outcome.reason,
        "systems": [asdict(s) for s in outcome.systems],
        "bundle": str(outcome.bundle_path) if outcome.bundle_path else outcome.bundle_uri,
        "package": str(outcome.package_path) if outcome.package_path else None,
    }
    telemetry.record_run(kind, regime, outcome.status.value, time.monotonic() - started)
    observe.publish_run_artifact(request_id, result)
    return result
