"""The `deadline-sweep` flow: hourly, every open request near or past its deadline is escalated.

Thin: the rules live in dsr.sweep, run through the application (the same call `dsr sweep`
makes). Scheduled in deployments/prefect.yaml; in embedded mode see `dsr serve` (schedules need a Prefect server).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import observe, runtime


@flow(name="deadline-sweep", flow_run_name=observe.timed_run_name("deadline-sweep"))
def deadline_sweep() -> dict[str, Any]:
    """One pass over open requests; alerts are raised once per threshold and recorded in the ledger."""
    observe.tag_current_run(["flow:deadline-sweep"])
    report = runtime.service().sweep()
    logger = get_run_logger()
    logger.info("deadline sweep: %d open request(s), %d alert(s) raised, %d delivered, %d undelivered",
                report.checked, len(report.raised), report.delivered, report.undelivered)
    return {"checked": report.checked, "raised": len(report.raised), "delivered": report.delivered,
            "undelivered": report.undelivered, "skipped": len(report.skipped)}
