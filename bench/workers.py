"""Scale-out benchmark: the fan-out on a Prefect server with 1 and with 2 workers, process and warm.

Set-up: the demo sandboxes with 50 ms per vendor call, their limits raised 20-fold in the data map
so that no vendor binds (HubSpot is left out: its sandbox enforces HubSpot's own limits whatever the
data map says; the website portal and Wistia wait for people). For each worker count W, a fresh
PostgreSQL ledger schema and a fresh Prefect database; then the production shape of flows/fleet.py:
`prefect server start` on PostgreSQL, `prefect deploy` of deployments/prefect.yaml, W process
workers (`--limit` flow runs each, default 4), vendor budgets shared through DSR_RATE_LIMIT_URL.
R verified requests (mixed access/erasure/portability of people no system holds, so every system
is searched and each run does the same work) are started with `run_deployment` (what the
`dsr.request.verified` trigger does), and the clock runs from the first start to the last request
completed in the ledger.

Reports requests per minute for W=1 and W=2, the ratio (2 workers / 1), the runs each worker took,
and throttling answers (aim 0); the same with warm workers (`python -m flows.warm --pool`: each flow
run in a thread of a long-lived process; `workers.warm.*`, aim x1.8 for the second). Then volume mode: the same R requests carried out by one
`process-verified` flow run on one worker (flows/batch.py), against one process-request run per
request. Then the shared-budget phase: two workers against one binding
limit (Salesforce held to 12 calls per 6 s, in the data map and by its sandbox): the rate they
achieved together over the limit (aim 0.9 to 1.05) and the calls the sandbox saw past it (aim 0). On a 2-core machine every flow run is a new Python process that
imports Prefect (~2-4 s of CPU), so the ratio says how much of a second worker the CPU leaves.

    python -m bench.workers [--quick] [--size R] [--limit L] [--workers 1,2] [--warm 1,2] [--no-batch] [--no-shared]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench.common import (
    IDENTITY_KEY,
    REPO,
    CallLog,
    Report,
    ServiceSpec,
    demo_stack,
    log,
    open_service,
    parse_args,
    postgres_schema,
    postgres_url,
    scratch_dir,
    submit_verified,
    vendor_limits,
    write_data_map,
)
from bench.fanout import budget_rates

SYSTEMS = ("crm", "salesforce", "netsuite", "google_ads", "linkedin")
# The shared-budget phase: Salesforce held to 2 calls/s (in 6-s windows, so that the limiter's 5%
# margin is 300 ms of jitter). Low enough that it binds two process workers on 2 cores: at 5/s the
# CPU (a process per flow run) bound first, and Salesforce's calls came in gaps (0.76 of its limit).
SHARED_LIMIT: tuple[int, float, str | None] = (12, 6.0, "^/services/data/")
RAISE = 20
KINDS = ("access", "erasure", "portability")


def prefect_database(base_url: str) -> AbstractContextManager[str]:
    """A fresh PostgreSQL database for the Prefect server (asyncpg URL), dropped after."""
    from sandbox.scratch_db import scratch_database

    return scratch_database(base_url, "prefect_bench")


def _start_runs(api_url: str, request_ids: list[str], *, batch: bool = False) -> None:
    """One process-request run per request (what the verified trigger does), or one process-verified run."""
    from prefect.deployments import run_deployment

    from flows.serve import use_prefect_api

    async def start_all() -> None:
        if batch:
            await run_deployment("process-verified/process-verified", timeout=0)  # type: ignore[misc]
            return
        for request_id in request_ids:
            await run_deployment("process-request/process-request",  # type: ignore[misc]
                                 parameters={"request_id": request_id}, timeout=0)

    with use_prefect_api(api_url):
        asyncio.run(start_all())


def one_phase(stack: Any, base_pg: str, *, workers: int, size: int, limit: int, root: Path, tag: str = "",
              systems_file: str | None = None, pace: dict[str, tuple[int, float, str | None]] | None = None,
              batch: bool = False, warm: bool = False) -> dict[str, Any]:
    """R requests on a fresh fleet of `workers` (warm ones with `warm`); `pace`: sandboxes held to
    (calls, seconds, metered paths)."""
    from flows.fleet import runs_per_worker, start_fleet

    tag = tag or str(workers)
    with postgres_schema(base_pg, prefix="dsr_bench_workers") as ledger_url, prefect_database(base_pg) as prefect_db:
        spec = ServiceSpec(home=str(root / f"var-{tag}"), systems_file=systems_file or stack.spec.systems_file,
                           env=stack.spec.env, ledger_url=ledger_url)
        env = {**stack.env, "DSR_HOME": spec.home, "DSR_CONFIG_DIR": str(REPO / "config"),
               "DSR_SYSTEMS_FILE": spec.systems_file, "DSR_DATABASE_URL": ledger_url,
               "DSR_RATE_LIMIT_URL": ledger_url, "DSR_IDENTITY_KEY": IDENTITY_KEY,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
        stack.reset(latency_ms=50)
        for system, (calls, period, metered) in (pace or {}).items():
            stack.servers[system].vendor.set_pace(calls, period, metered)
        fleet = start_fleet(home=root / f"fleet-{tag}", workers=workers, database_url=prefect_db, env=env,
                            limit=limit, query_seconds=1, warm=warm)
        call_log = CallLog(stack.servers)
        try:
            with open_service(spec) as service:
                ids = [submit_verified(service, KINDS[n % 3], f"scale-{tag}-{n}@example.net") for n in range(size)]
                log(f"{workers} {'warm' if warm else 'process'} worker(s): starting {size} runs")
                started = time.monotonic()
                _start_runs(fleet.server.api_url, ids, batch=batch)
                deadline = started + 120 + 60 * size
                while True:
                    statuses = [service.state(rid).status.value for rid in ids]
                    open_left = [s for s in statuses if s not in ("completed", "partially_completed")]
                    if not open_left or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                elapsed = time.monotonic() - started
            per_worker = dict(runs_per_worker(fleet.workers))
        finally:
            fleet.stop()
            call_log.close()
        stats = stack.stats()
    throttled = sum(s.get("throttled", 0) for s in stats.values())
    return {"workers": workers, "seconds": elapsed, "completed": statuses.count("completed"),
            "not_finished": len(open_left), "per_worker": per_worker, "throttled": throttled,
            "over_pace": {name: s.get("over_pace", 0) for name, s in stats.items()},
            "per_minute": size / elapsed * 60, "calls": call_log.snapshot()}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=4, help="flow runs per worker at once (default 4)")
    parser.add_argument("--workers", default="1,2", help="worker counts of the scale-out phases, comma-separated, or none (default 1,2)")
    parser.add_argument("--warm", default="1,2", help="warm worker counts of the scale-out phases, comma-separated, or none (default 1,2)")
    parser.add_argument("--no-batch", action="store_true",
                        help="skip the volume-mode phase (one process-verified run for all requests, 1 worker)")
    parser.add_argument("--no-shared", action="store_true",
                        help="skip the shared-budget phase (2 workers against one binding vendor limit)")


def _counts(option: str, text: str) -> list[int]:
    """Worker counts such as `1,2`, or none."""
    try:
        counts = [] if text == "none" else [int(part) for part in text.split(",")]
    except ValueError:
        counts = [0]
    if counts and min(counts) < 1:
        raise SystemExit(f"{option}: worker counts such as 1,2 (or none)")
    return counts


def _emit_scale_out(report: Report, phases: list[dict[str, Any]], *, prefix: str, what: str, size: int,
                    limit: int, target: str | None = None) -> None:
    """Requests per minute and throttling per worker count, then the 2-worker / 1-worker ratio."""
    for phase in phases:
        w = phase["workers"]
        report.emit(f"{prefix}.{w}.requests_per_minute", phase["per_minute"], "requests/min",
                    size={"requests": size, "limit_per_worker": limit},
                    seconds=phase["seconds"], completed=phase["completed"], not_finished=phase["not_finished"],
                    runs_per_worker=phase["per_worker"])
        report.emit(f"{prefix}.{w}.throttled", phase["throttled"], "answers", float(phase["throttled"]), "<= 0",
                    note="429/403 throttling answers from the sandboxes (aim 0)")
    by_count = {phase["workers"]: phase for phase in phases}
    if 1 in by_count and 2 in by_count:
        one, two = by_count[1], by_count[2]
        ratio = two["per_minute"] / one["per_minute"]
        report.emit(f"{prefix}.scale_out", ratio, "ratio", ratio if target else None, target,
                    note=f"requests per minute with 2 {what} workers / with 1 (the CPU, 2 cores, is shared by both)")
        report.note(f"{what} workers, 1: {one['per_minute']:.1f} requests/min; 2: {two['per_minute']:.1f} "
                    f"(x{ratio:.2f}); runs per worker {two['per_worker']}; "
                    f"throttled {one['throttled']} / {two['throttled']}")
    else:
        report.emit(f"{prefix}.scale_out", None, "ratio", note=f"needs both 1 and 2 {what} workers")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("Scale-out: the fan-out on 1 and 2 Prefect workers, process and warm.", argv, _add_arguments)
    size = args.size or (4 if args.quick else 24)  # requests per phase
    counts, warm_counts = _counts("--workers", args.workers), _counts("--warm", args.warm)
    report = Report("workers")
    base_pg, why = postgres_url()
    if base_pg is None:
        report.emit("workers.scale_out", None, "ratio", size={"requests": size}, note=f"skipped: {why}", skipped=True)
        report.summary()
        return 0
    raised = {name: {"rate_limit": {"calls": calls * RAISE, "period_seconds": period}}
              for name, (calls, period) in vendor_limits().items() if name in SYSTEMS and ":" not in name}
    with scratch_dir("workers") as root, \
            demo_stack(root, systems=SYSTEMS, latency_ms=50, crm_contacts=100, settings=raised) as stack:
        phases = [one_phase(stack, base_pg, workers=w, size=size, limit=args.limit, root=root) for w in counts]
        warm_phases = [one_phase(stack, base_pg, workers=w, size=size, limit=args.limit, root=root, tag=f"warm-{w}",
                                 warm=True) for w in warm_counts]
        batch = None if args.no_batch else one_phase(stack, base_pg, workers=1, size=size, limit=args.limit,
                                                     root=root, tag="batch", batch=True)
        shared = None
        if not args.no_shared:
            calls, period, metered = SHARED_LIMIT
            shared_map = write_data_map(root / "systems-shared.yaml", crm_url=stack.crm_url, systems=SYSTEMS,
                                        settings={**raised, "salesforce": {"rate_limit": {
                                            "calls": calls, "period_seconds": period}}})
            shared = one_phase(stack, base_pg, workers=2, size=size, limit=args.limit, root=root, tag="shared",
                               systems_file=str(shared_map), pace={"salesforce": SHARED_LIMIT})
    _emit_scale_out(report, phases, prefix="workers", what="process", size=size, limit=args.limit)
    if warm_phases:
        _emit_scale_out(report, warm_phases, prefix="workers.warm", what="warm", size=size, limit=args.limit,
                        target=">= 1.8")
    by_count = {phase["workers"]: phase for phase in phases}
    if batch is not None:
        report.emit("workers.batch.requests_per_minute", batch["per_minute"], "requests/min",
                    size={"requests": size, "workers": 1}, seconds=batch["seconds"], completed=batch["completed"],
                    not_finished=batch["not_finished"], throttled=batch["throttled"],
                    note="volume mode: one process-verified flow run carries out every verified request")
        if 1 in by_count:
            report.emit("workers.batch_speedup", batch["per_minute"] / by_count[1]["per_minute"], "x",
                        note="one process-verified run / one process-request run per request, 1 worker each")
            report.note(f"volume mode: {batch['per_minute']:.1f} requests/min in one flow run against "
                        f"{by_count[1]['per_minute']:.1f} with a flow run per request "
                        f"(x{batch['per_minute'] / by_count[1]['per_minute']:.1f})")
    if shared is not None:
        rates = budget_rates(shared["calls"], {"salesforce": SHARED_LIMIT[:2]})["salesforce"]
        over = shared["over_pace"].get("salesforce", 0)
        report.emit("workers.shared.budget_use", rates["rate"], "calls/s", rates["ratio"], ">= 0.9 and <= 1.05",
                    size={"requests": size, "workers": 2}, calls=rates["calls"], seconds=shared["seconds"],
                    runs_per_worker=shared["per_worker"],
                    note=f"two workers against one Salesforce budget of {SHARED_LIMIT[0]} calls per "
                         f"{SHARED_LIMIT[1]:g} s: achieved rate / limit (5th-95th percentile of its calls)")
        report.emit("workers.shared.over_limit", over, "calls", float(over), "<= 0",
                    note="calls the Salesforce sandbox saw past that limit, counted at arrival")
        report.note(f"shared budget: two workers used {rates['ratio'] or 0:.2f} of Salesforce's limit, "
                    f"{over} call(s) past it; runs per worker {shared['per_worker']}")
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
