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

Then the backlog phases (`--backlog 50,200`): N requests verified with no trigger firing, then
drained on ONE worker the way an operator would: `volume`, one run of the process-verified
deployment on a process worker (`workers.backlog.<N>.*`), and `warm`, a process-request run per
request on a warm worker (`workers.backlog.warm.<N>.*`). Each reports requests per minute against
the per-request process worker of the same benchmark run (aim x10), and the peak RSS of the process
that ran the requests (the process-verified run's own, from its summary artifact; the warm
worker's, from /proc) at each N, and the largest N's over the smallest's (aim <= 1.2: flat).

    python -m bench.workers [--quick] [--size R] [--limit L] [--workers 1,2] [--warm 1,2] [--no-batch] [--no-shared]
                            [--backlog 50,200] [--backlog-modes volume,warm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
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
    machine_cpu_seconds,
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
CORES = os.cpu_count() or 1
KINDS = ("access", "erasure", "portability")
# Backlog drains: (worker kind, one process-verified run?) and the figures' prefix.
BACKLOG_MODES: dict[str, tuple[bool, bool, str, str]] = {
    "volume": (False, True, "workers.backlog", "one process-verified run on one process worker"),
    "warm": (True, False, "workers.backlog.warm", "a process-request run per request on one warm worker"),
    "warm-volume": (True, True, "workers.backlog.warm_volume", "one process-verified run on one warm worker"),
}


def prefect_database(base_url: str) -> AbstractContextManager[str]:
    """A fresh PostgreSQL database for the Prefect server (asyncpg URL), dropped after."""
    from sandbox.scratch_db import scratch_database

    return scratch_database(base_url, "prefect_bench")


def _start_runs(api_url: str, request_ids: list[str], *, batch: bool = False) -> list[Any]:
    """One process-request run per request (what the verified trigger does), or one process-verified
    run; the flow run ids."""
    from prefect.deployments import run_deployment

    from flows.serve import use_prefect_api

    async def start_all() -> list[Any]:
        if batch:
            run = await run_deployment("process-verified/process-verified", timeout=0)  # type: ignore[misc]
            return [run.id]
        return [(await run_deployment("process-request/process-request",  # type: ignore[misc]
                                      parameters={"request_id": request_id}, timeout=0)).id
                for request_id in request_ids]

    with use_prefect_api(api_url):
        return asyncio.run(start_all())


def _vm_hwm_mib(pid: int) -> float | None:
    """A live process's peak resident set size (VmHWM), in MiB; None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _batch_peak_rss(api_url: str, flow_run_id: Any, timeout: float = 120.0) -> float | None:
    """The peak RSS that process-verified run published in its summary artifact (MiB), once it has
    ended (the ledger shows the last request done a little before the artifact is written)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.batch import SUMMARY_ARTIFACT
    from flows.serve import use_prefect_api

    async def read() -> float | None:
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
                for artifact in found:
                    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
                    for row in rows or []:
                        if row.get("figure") == "peak RSS (MiB)":
                            return float(row["value"])
                await asyncio.sleep(0.5)
        return None

    with use_prefect_api(api_url):
        return asyncio.run(read())


def _runs_ended(api_url: str, run_ids: list[Any]) -> bool:
    """Whether every one of these flow runs is in a final state (a run that failed leaves its
    request open in the ledger: waiting for it would only wait out the deadline)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.serve import use_prefect_api

    with use_prefect_api(api_url), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
                                     limit=len(run_ids))
    return len(runs) == len(run_ids) and all(run.state is not None and run.state.is_final() for run in runs)


def _throttled(stack: Any) -> int:
    return sum(s.get("throttled", 0) for s in stack.stats().values())


def _drain(stack: Any, fleet: Any, service: Any, *, tag: str, size: int, batch: bool, warm: bool) -> dict[str, Any]:
    """Verify `size` requests (no trigger fires: a backlog), start them (one process-verified run,
    or a process-request run each), and wait until the ledger has them all done."""
    ids = [submit_verified(service, KINDS[n % 3], f"scale-{tag}-{n}@example.net") for n in range(size)]
    throttled_before = _throttled(stack)
    log(f"{len(fleet.workers)} {'warm' if warm else 'process'} worker(s), {tag}: starting "
        f"{'one process-verified run for ' if batch else ''}{size} request(s)")
    started, cpu_started = time.monotonic(), machine_cpu_seconds()
    run_ids = _start_runs(fleet.server.api_url, ids, batch=batch)
    deadline = started + 120 + 60 * size
    wanted = set(ids)
    looks = 0
    while True:
        # The ledger's index, one query: a state derived per request would load this CPU.
        statuses = [row.status for row in service.list() if row.request_id in wanted]
        open_left = [s for s in statuses if s not in ("completed", "partially_completed")]
        if not open_left or time.monotonic() > deadline:
            break
        looks += 1
        if looks % 20 == 0 and _runs_ended(fleet.server.api_url, run_ids):
            log(f"{tag}: every flow run ended, {len(open_left)} request(s) left open")
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    cpu_ended = machine_cpu_seconds()
    # The whole machine's: the Prefect server, PostgreSQL and the sandboxes share the cores with the workers.
    busy_cores = (cpu_ended - cpu_started) / elapsed if cpu_started is not None and cpu_ended is not None else None
    if batch:  # the process-verified run's own process
        peak_rss = _batch_peak_rss(fleet.server.api_url, run_ids[0])
    else:  # a warm worker runs its requests in its own process; a process worker's runs are gone
        peaks = [_vm_hwm_mib(worker.process.pid) for worker in fleet.workers] if warm else []
        peak_rss = max((p for p in peaks if p is not None), default=None)
    return {"seconds": elapsed, "completed": statuses.count("completed"), "not_finished": len(open_left),
            "per_minute": size / elapsed * 60, "busy_cores": busy_cores, "completed_per_minute": statuses.count("completed") / elapsed * 60, "peak_rss_mb": peak_rss, "size": size,
            "outcomes": dict(Counter(statuses)), "throttled": _throttled(stack) - throttled_before}


def _restart_warm_worker(fleet: Any, *, name: str, env: dict[str, str], limit: int, timeout: float = 180.0) -> None:
    """A fresh warm worker in place of the fleet's one, ready to claim runs: its peak RSS is its own."""
    from flows.fleet import start_worker

    old = fleet.workers.pop()
    old.stop()
    worker = start_worker(fleet.server.api_url, name, log_dir=old.log_path.parent, env=env, limit=limit,
                          query_seconds=1, warm=True)
    fleet.workers.append(worker)
    deadline = time.monotonic() + timeout
    while "warm worker on pool" not in (worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""):
        if not worker.alive or time.monotonic() > deadline:
            raise RuntimeError(f"warm worker {name} did not start (see {worker.log_path})")
        time.sleep(0.2)


def one_phase(stack: Any, base_pg: str, *, workers: int, size: int, limit: int, root: Path, tag: str = "",
              systems_file: str | None = None, pace: dict[str, tuple[int, float, str | None]] | None = None,
              batch: bool = False, warm: bool = False, backlogs: Sequence[int] = (),
              backlog_batch: bool = True) -> dict[str, Any]:
    """R requests on a fresh fleet of `workers` (warm ones with `warm`); `pace`: sandboxes held to
    (calls, seconds, metered paths). Then each of `backlogs` drained on the same fleet (one
    process-verified run, or with `backlog_batch` False a process-request run per request); a warm
    worker is restarted before each, so that the peak RSS measured is that drain's alone."""
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
        drained: list[dict[str, Any]] = []
        try:
            with open_service(spec) as service:
                main = _drain(stack, fleet, service, tag=tag, size=size, batch=batch, warm=warm) if size else None
                per_worker = dict(runs_per_worker(fleet.workers))
                calls = call_log.snapshot()
                for n in backlogs:
                    if warm:
                        _restart_warm_worker(fleet, name=f"worker-backlog-{n}", env=env, limit=limit)
                    drained.append(_drain(stack, fleet, service, tag=f"{tag}-backlog-{n}", size=n,
                                          batch=backlog_batch, warm=warm))
        finally:
            fleet.stop()
            call_log.close()
        stats = stack.stats()
    return {**(main or {}), "workers": workers, "per_worker": per_worker, "calls": calls,
            "over_pace": {name: s.get("over_pace", 0) for name, s in stats.items()}, "backlog": drained}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=4, help="flow runs per worker at once (default 4)")
    parser.add_argument("--workers", default="1,2", help="worker counts of the scale-out phases, comma-separated, or none (default 1,2)")
    parser.add_argument("--warm", default="1,2", help="warm worker counts of the scale-out phases, comma-separated, or none (default 1,2)")
    parser.add_argument("--no-batch", action="store_true",
                        help="skip the volume-mode phase (one process-verified run for all requests, 1 worker)")
    parser.add_argument("--no-shared", action="store_true",
                        help="skip the shared-budget phase (2 workers against one binding vendor limit)")
    parser.add_argument("--backlog", default=None,
                        help="backlog sizes drained on one worker, comma-separated, or none (default 50,200; --quick 2,4)")
    parser.add_argument("--backlog-modes", default="volume,warm",
                        help=f"how a backlog is drained: {', '.join(BACKLOG_MODES)} (default volume,warm)")


def _counts(option: str, text: str) -> list[int]:
    """Worker counts such as `1,2`, or none."""
    try:
        counts = [] if text == "none" else [int(part) for part in text.split(",")]
    except ValueError:
        counts = [0]
    if counts and min(counts) < 1:
        raise SystemExit(f"{option}: worker counts such as 1,2 (or none)")
    return counts


def _modes(text: str) -> list[str]:
    modes = [] if text == "none" else [part.strip() for part in text.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in BACKLOG_MODES]
    if unknown:
        raise SystemExit(f"--backlog-modes: {', '.join(unknown)} unknown (choose from {', '.join(BACKLOG_MODES)})")
    return modes


def _emit_backlog(report: Report, mode: str, phases: list[dict[str, Any]], baseline: float | None) -> None:
    """Requests per minute per backlog size (against the per-request process worker), peak RSS
    of the process that ran them, and its growth from the smallest backlog to the largest."""
    _, _, prefix, how = BACKLOG_MODES[mode]
    for phase in phases:
        n = phase["size"]
        if phase["completed"] < n:
            report.note(f"backlog of {n}, {how}: {n - phase['completed']} request(s) not completed {phase['outcomes']}")
        # Only requests completed count: a request a failure left partial or open ended early, not faster.
        rate = phase["completed_per_minute"]
        report.emit(f"{prefix}.{n}.requests_per_minute", rate, "requests/min",
                    rate / baseline if baseline else None, ">= 10" if baseline else None,
                    size={"requests": n, "workers": 1}, seconds=phase["seconds"], completed=phase["completed"],
                    not_finished=phase["not_finished"], throttled=phase["throttled"], outcomes=phase["outcomes"],
                    note=f"a backlog of {n} verified requests drained by {how}; ratio: over one "
                         "process-request run per request on a process worker (workers.1)"
                         if baseline else f"a backlog of {n} drained by {how}; no workers.1 phase to compare with")
        report.emit(f"{prefix}.{n}.peak_rss", phase["peak_rss_mb"], "MiB", size={"requests": n},
                    note="peak RSS of the process that ran the requests (VmHWM)")
    by_size = {phase["size"]: phase for phase in phases}
    small, large = (by_size.get(min(by_size)), by_size.get(max(by_size))) if by_size else (None, None)
    if small and large and small is not large and small["peak_rss_mb"] and large["peak_rss_mb"]:
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        report.emit(f"{prefix}.peak_rss_ratio", ratio, "ratio", ratio, "<= 1.2",
                    size={"requests": [small["size"], large["size"]]},
                    note=f"peak RSS draining {large['size']} / draining {small['size']} (flat: no memory kept per request)")
        rates = ", ".join(f"{p['size']}: {p['completed_per_minute']:.1f}/min" for p in phases)
        report.note(f"backlog, {how}: {rates}"
                    + (f" (x{large['completed_per_minute'] / baseline:.1f} the per-request process worker)"
                       if baseline else "")
                    + f"; peak RSS {small['peak_rss_mb']:.0f} -> {large['peak_rss_mb']:.0f} MiB")
    else:
        report.emit(f"{prefix}.peak_rss_ratio", None, "ratio",
                    note="needs two backlog sizes, each with its peak RSS")


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
        report.emit(f"{prefix}.{w}.busy_cores", phase["busy_cores"], "cores", size={"cores": CORES},
                    note="CPU the whole machine used while the phase ran (server, PostgreSQL, sandboxes, workers)")
    by_count = {phase["workers"]: phase for phase in phases}
    if 1 in by_count and 2 in by_count:
        one, two = by_count[1], by_count[2]
        ratio = two["per_minute"] / one["per_minute"]
        report.emit(f"{prefix}.scale_out", ratio, "ratio", ratio if target else None, target,
                    note=f"requests per minute with 2 {what} workers / with 1 (the CPU, {CORES} cores, is shared by both)")
        ceiling = CORES / one["busy_cores"] if one["busy_cores"] else None
        report.emit(f"{prefix}.cpu_ceiling", ceiling, "ratio", size={"cores": CORES},
                    note="cores / cores busy with one worker: the most a second worker can add while the "
                         "CPU binds (each request costs the machine the same CPU whichever worker runs it)")
        report.note(f"{what} workers, 1: {one['per_minute']:.1f} requests/min; 2: {two['per_minute']:.1f} "
                    f"(x{ratio:.2f}); runs per worker {two['per_worker']}; "
                    f"throttled {one['throttled']} / {two['throttled']}"
                    + (f"; busy cores {one['busy_cores']:.2f} / {two['busy_cores']:.2f} of {CORES}, so the CPU "
                       f"leaves room for x{ceiling:.2f} at most" if ceiling else ""))
    else:
        report.emit(f"{prefix}.scale_out", None, "ratio", note=f"needs both 1 and 2 {what} workers")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("Scale-out: the fan-out on 1 and 2 Prefect workers, process and warm.", argv, _add_arguments)
    size = args.size or (4 if args.quick else 24)  # requests per phase
    counts, warm_counts = _counts("--workers", args.workers), _counts("--warm", args.warm)
    backlogs = _counts("--backlog", args.backlog or ("2,4" if args.quick else "50,200"))
    modes = _modes(args.backlog_modes) if backlogs else []
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
        # The volume-mode backlogs drain on the per-request phase's process worker, once its runs are done
        # (each process-verified run is a process of its own): one fleet start less.
        shared_fleet = "volume" in modes and 1 in counts
        phases = [one_phase(stack, base_pg, workers=w, size=size, limit=args.limit, root=root,
                            backlogs=backlogs if w == 1 and shared_fleet else ()) for w in counts]
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
        backlog: dict[str, list[dict[str, Any]]] = {}
        for mode in modes:
            if mode == "volume" and shared_fleet:
                backlog[mode] = next(phase for phase in phases if phase["workers"] == 1)["backlog"]
                continue
            warm, batch_drain = BACKLOG_MODES[mode][:2]
            backlog[mode] = one_phase(stack, base_pg, workers=1, size=0, limit=args.limit, root=root,
                                      tag=f"backlog-{mode}", warm=warm, backlogs=backlogs,
                                      backlog_batch=batch_drain)["backlog"]
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
    baseline = by_count[1]["per_minute"] if 1 in by_count else None
    for mode, backlog_phases in backlog.items():
        _emit_backlog(report, mode, backlog_phases, baseline)
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
