"""Scale-out benchmark (issue 9, item 5): the fan-out on a Prefect server with 1 and with 2 process workers.

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
and throttling answers (aim 0). On a 2-core machine every flow run is a new Python process that
imports Prefect (~2-4 s of CPU), so the ratio says how much of a second worker the CPU leaves.

    python -m bench.workers [--quick] [--size R] [--limit L] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    IDENTITY_KEY,
    REPO,
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
)

SYSTEMS = ("crm", "salesforce", "netsuite", "google_ads", "linkedin")
RAISE = 20
KINDS = ("access", "erasure", "portability")


@contextmanager
def prefect_database(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the Prefect server (asyncpg URL), dropped after."""
    from sqlalchemy import create_engine, text

    name = f"prefect_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base_url.replace("postgresql+psycopg://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _start_runs(api_url: str, request_ids: list[str]) -> None:
    from prefect.deployments import run_deployment

    from flows.serve import use_prefect_api

    async def start_all() -> None:
        for request_id in request_ids:
            await run_deployment("process-request/process-request",  # type: ignore[misc]
                                 parameters={"request_id": request_id}, timeout=0)

    with use_prefect_api(api_url):
        asyncio.run(start_all())


def one_phase(stack: Any, base_pg: str, *, workers: int, size: int, limit: int, root: Path) -> dict[str, Any]:
    from flows.fleet import runs_per_worker, start_fleet

    with postgres_schema(base_pg, prefix="dsr_bench_workers") as ledger_url, prefect_database(base_pg) as prefect_db:
        spec = ServiceSpec(home=str(root / f"var-{workers}"), systems_file=stack.spec.systems_file,
                           env=stack.spec.env, ledger_url=ledger_url)
        env = {**stack.env, "DSR_HOME": spec.home, "DSR_CONFIG_DIR": str(REPO / "config"),
               "DSR_SYSTEMS_FILE": spec.systems_file, "DSR_DATABASE_URL": ledger_url,
               "DSR_RATE_LIMIT_URL": ledger_url, "DSR_IDENTITY_KEY": IDENTITY_KEY,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
        stack.reset(latency_ms=50)
        fleet = start_fleet(home=root / f"fleet-{workers}", workers=workers, database_url=prefect_db, env=env,
                            limit=limit, query_seconds=1)
        try:
            with open_service(spec) as service:
                ids = [submit_verified(service, KINDS[n % 3], f"scale-{workers}-{n}@example.net") for n in range(size)]
                log(f"{workers} worker(s): starting {size} runs")
                started = time.monotonic()
                _start_runs(fleet.server.api_url, ids)
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
        stats = stack.stats()
    throttled = sum(s.get("throttled", 0) for s in stats.values())
    return {"workers": workers, "seconds": elapsed, "completed": statuses.count("completed"),
            "not_finished": len(open_left), "per_worker": per_worker, "throttled": throttled,
            "per_minute": size / elapsed * 60}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=4, help="flow runs per worker at once (default 4)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated (default 1,2)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("Scale-out: the fan-out on 1 and 2 Prefect process workers.", argv, _add_arguments)
    size = args.size or (4 if args.quick else 24)  # requests per phase
    try:
        counts = [int(part) for part in args.workers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit("--workers: worker counts such as 1,2")
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
    for phase in phases:
        w = phase["workers"]
        report.emit(f"workers.{w}.requests_per_minute", phase["per_minute"], "requests/min", size={"requests": size, "limit_per_worker": args.limit},
                    seconds=phase["seconds"], completed=phase["completed"], not_finished=phase["not_finished"],
                    runs_per_worker=phase["per_worker"])
        report.emit(f"workers.{w}.throttled", phase["throttled"], "answers", float(phase["throttled"]), "<= 0",
                    note="429/403 throttling answers from the sandboxes (aim 0)")
    by_count = {phase["workers"]: phase for phase in phases}
    if 1 in by_count and 2 in by_count:
        one, two = by_count[1], by_count[2]
        report.emit("workers.scale_out", two["per_minute"] / one["per_minute"], "ratio",
                    note="requests per minute with 2 workers / with 1 (the CPU, 2 cores, is shared by both)")
        report.note(f"1 worker: {one['per_minute']:.1f} requests/min; 2 workers: {two['per_minute']:.1f} "
                    f"(x{two['per_minute'] / one['per_minute']:.2f}); runs per worker {two['per_worker']}; "
                    f"throttled {one['throttled']} / {two['throttled']}")
    else:
        report.emit("workers.scale_out", None, "ratio", note="needs both 1 and 2 workers (--workers 1,2)")
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
