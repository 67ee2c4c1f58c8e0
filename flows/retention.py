"""The `retention-purge` flow: nightly, expired records of every system, holds honoured.

Thin: the rules live in dsr.retention, run through the application (the same call `dsr purge`
makes). Scheduled at 02:00 (Europe/Amsterdam by default) in deployments/prefect.yaml.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import observe, runtime


@flow(name="retention-purge", flow_run_name=observe.timed_run_name("retention-purge"))
def retention_purge(dry_run: bool = False, approve: str | None = None) -> dict[str, Any]:
    """One purge run; stops before deleting anything if the blast-radius guard trips."""
    observe.tag_current_run(["flow:retention-purge", "dry-run" if dry_run else "live"])
    service = runtime.service()
    report = service.purge(dry_run=dry_run, approve=approve)
    get_run_logger().info("retention purge %s: %s, %d purged", report.run_id, report.status, report.purged)
    # Exports of cancelled requests wait for no run; the nightly purge clears them too.
    swept = [] if dry_run else service.sweep_staging()
    return {"run_id": report.run_id, "status": report.status, "purged": report.purged,
            "report": str(report.report_path), "guard": report.guard, "staging_swept": len(swept)}
