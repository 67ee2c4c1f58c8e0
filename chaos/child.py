"""The process a chaos trial kills: one request run, or one retention purge, without Prefect.

`python -m chaos.child request ID` does what flows/request.py does (begin; one thread per system,
each with its own runner holding the plan's lease, as Prefect's task threads do; finish).
`python -m chaos.child purge` runs the retention purge on the campaign's fixed day, with the
blast-radius guard opened (the seeded data is small, so any purge trips a 5 % guard).
Settings come from DSR_* variables; DSR_CHAOS_CRASH_AT picks a crash point (chaos/probe.py), handed
to the runner and the purge as their crash probe.
Prints one JSON line with the outcome.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import date

from chaos.probe import probe_from_env
from dsr.retention import Purger
from dsr.run import AlreadyRunning, CrashProbe, RequestRunner, no_crash
from dsr.service import DsrService
from dsr.settings import Settings

PURGE_DAY = date(2026, 11, 25)
PURGE_SYSTEMS_ENV = "CHAOS_PURGE_SYSTEMS"  # a comma-separated subset of the data map (default: all)


def run_request(service: DsrService, request_id: str, crash: CrashProbe = no_crash) -> dict[str, object]:
    runner = RequestRunner(service, crash=crash)
    try:
        plan = runner.begin(request_id)
    except AlreadyRunning as exc:
        return {"request_id": request_id, "status": "already_running", "reason": str(exc)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(RequestRunner(service, crash=crash).run_system, request_id, system,
                               service.connecting(system), plan.lease) for system in plan.systems]
        for future in futures:
            future.result()
    outcome = runner.finish(request_id, lease=plan.lease)
    return {"request_id": request_id, "status": outcome.status.value, "reason": outcome.reason,
            "systems": [asdict(s) for s in outcome.systems],
            "bundle": str(outcome.bundle_path) if outcome.bundle_path else None}


def open_guard(service: DsrService) -> None:
    retention = service.policy.retention.model_copy(update={"max_share": 1.0, "max_count": 10**9})
    service.__dict__["policy"] = service.policy.model_copy(update={"retention": retention})


def run_purge(service: DsrService, crash: CrashProbe = no_crash) -> dict[str, object]:
    open_guard(service)
    systems = [s for s in os.environ.get(PURGE_SYSTEMS_ENV, "").split(",") if s] or None
    report = Purger(service, service.connector, crash=crash).run(today=PURGE_DAY, systems=systems)
    return {"run_id": report.run_id, "status": report.status, "purged": report.purged,
            "report": str(report.report_path)}


def main(argv: list[str]) -> int:
    service = DsrService(Settings())
    crash = probe_from_env()
    try:
        result = run_request(service, argv[1], crash) if argv[0] == "request" else run_purge(service, crash)
    finally:
        service.close()
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
