"""Latency benchmark: from "identity verified" to "completed", and the vendor calls one subject costs.

Set-up: the demo sandboxes (no added latency), the demo data map without the two systems that wait
for people (portal, wistia), a SQLite ledger; all in this process. Requests alternate access (a
subject every system holds) and erasure (a person no system holds, so every system is searched and
each run does the same work). The first request of each phase warms up and is not counted.

Phases, in one run on the same sandboxes:

1. direct: the runner called directly (no Prefect): `begin`, one thread per system, `finish`;
   the vendor calls of each request are counted per vendor and request type (calls per subject);
2. serve: `dsr serve`'s flows (flows/serve.py, a real `prefect server start`, the process-request
   deployment on its `dsr.request.verified` trigger, runs executed warm in this process), the clock
   from `service.verify` to `completed` in the ledger;
3. serve, CRM-only data map (the Prefect server kept; the service swapped);
4. `dsr run ID` as a separate process while serve runs (handed to the running service).

    python -m bench.latency [--quick] [--size N]     (--quick: 2 requests a phase, no `dsr run` phase)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    IDENTITY_KEY,
    REPO,
    CallLog,
    Report,
    ServiceSpec,
    demo_stack,
    is_throttle,
    log,
    open_service,
    parse_args,
    scratch_dir,
    submit_verified,
    write_data_map,
)

SYSTEMS = ("crm", "hubspot", "salesforce", "netsuite", "google_ads", "linkedin")
KINDS = ("access", "erasure")
DONE = {"completed", "partially_completed", "awaiting_manual_action", "failed"}
DEFAULT_SIZE = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def email_for(kind: str, number: int) -> str:
    from sandbox.crm_seed import ACCESS_SUBJECT

    return ACCESS_SUBJECT if kind == "access" else f"nobody-{number}@example.net"


def call_kind(system: str, request: Any) -> str | None:
    """A vendor call's budget, with Salesforce's describes and logins told apart (the floor's parts)."""
    path = request.path
    if system == "salesforce":
        if "/oauth2/" in path:
            return "salesforce:login"
        return "salesforce:describe" if path.endswith("/describe") or "/describe/" in path else "salesforce"
    if system in ("netsuite", "google_ads", "linkedin") and path.endswith("/token"):
        return f"{system}:login"
    if system == "hubspot":
        return "hubspot:search" if path.endswith("/search") else "hubspot"
    return system


def run_direct(service: Any, request_id: str) -> str:
    """What process-request does, without Prefect: one thread per system, then finish."""
    from dsr.run import RequestRunner

    runner = RequestRunner(service)
    plan = runner.begin(request_id)
    if plan.systems and not plan.manual_reason and not plan.already_closed:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(runner.run_system, request_id, system, service.connecting(system),
                                       lease=plan.lease) for system in plan.systems]:
                future.result()
    return runner.finish(request_id, lease=plan.lease).status.value


def wait_done(service: Any, request_id: str, timeout: float = 120.0) -> str:
    """The request's status once it is done. The state is read when the service publishes a change of
    this request (and every half second besides): reading it every few milliseconds, as a naive poll
    would, takes the interpreter from the run being timed in this same process."""
    changed = threading.Event()
    unsubscribe = service.bus.subscribe(lambda _topic, rid: changed.set() if rid == request_id else None)
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = service.state(request_id).status.value
            if status in DONE:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} still {status} after {timeout:.0f} s")
            changed.wait(0.5)
            changed.clear()
    finally:
        unsubscribe()


def submit(service: Any, kind: str, number: int) -> str:
    from datetime import UTC, datetime

    from dsr.models import parse_new_request

    return service.submit(parse_new_request(type=kind, email=email_for(kind, number), regime="gdpr",
                                            received=datetime.now(UTC), channel="web-form")).state.request_id


def timed_series(size: int, one: Callable[[int, str], float]) -> list[float]:
    """`one(number, kind)` for size+1 requests, alternating kinds; the first (warm-up) dropped."""
    seconds = [one(number, KINDS[number % len(KINDS)]) for number in range(size + 1)]
    return seconds[1:]


@contextmanager
def served(service: Any, home: Path) -> Iterator[Any]:
    """serve_embedded in a thread (no HTTP API, no purge); yields the PrefectServer once ready."""
    from flows.serve import serve_embedded

    ready: list[Any] = []
    is_ready = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    def on_ready(server: Any) -> None:
        ready.append(server)
        is_ready.set()

    def target() -> None:
        try:
            serve_embedded(service=service, prefect_home=home, ui=False, serve_purge=False, sweep_every=3600,
                           stop=stop, on_ready=on_ready)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
            is_ready.set()

    thread = threading.Thread(target=target, name="bench-serve", daemon=True)
    thread.start()
    is_ready.wait(180)
    if failure or not ready:
        raise RuntimeError(f"dsr serve did not start: {failure[0] if failure else 'timeout'}")
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join(60)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    size = args.size or (2 if args.quick else DEFAULT_SIZE)
    report = Report("latency")
    report.note("measured on a 2-core machine shared with other work: absolute figures are noisy")
    with scratch_dir("latency") as root, demo_stack(root, systems=SYSTEMS) as stack:
        calls = CallLog(stack.servers, classify=call_kind)
        try:
            with open_service(stack.spec) as service:
                direct = measure_direct(service, calls, size, report)
                serve_seconds, handoff = measure_serve(service, stack.spec, root, size, report,
                                                       handoff_runs=0 if args.quick else 5)
        finally:
            calls.close()
        throttled = sum(1 for _, budget, status in calls.snapshot() if is_throttle(budget, status))
        report.emit("latency.throttled", throttled, "answers", float(throttled), "== 0",
                    note="429s (or Salesforce's 403 limit answers) over every phase")
        sizes = {"requests": size, "systems": list(SYSTEMS)}
        direct_p50 = statistics.median(direct)
        serve_p50 = statistics.median(serve_seconds)
        report.emit("latency.direct.p50", direct_p50, "s", size=sizes)
        report.emit("latency.direct.p95", percentile(direct, 0.95), "s", size=sizes)
        report.emit("latency.serve.p50", serve_p50, "s", serve_p50, "< 2", size=sizes,
                    note="verified -> completed on dsr serve (event trigger, warm flow runs)")
        report.emit("latency.serve.p95", percentile(serve_seconds, 0.95), "s", size=sizes)
        report.emit("latency.serve.over_direct", serve_p50 / direct_p50, "x", serve_p50 / direct_p50, "<= 1.5",
                    size=sizes, note="p50 on serve over p50 of the runner called directly")
        pg_seconds = measure_serve_postgresql(service, size, report) if not args.quick else []
        if pg_seconds:
            pg_p50 = statistics.median(pg_seconds)
            report.emit("latency.serve_postgresql.p50", pg_p50, "s", pg_p50, "< 2", size=sizes,
                        note="as latency.serve, the Prefect server on PostgreSQL instead of SQLite")
            report.emit("latency.serve_postgresql.p95", percentile(pg_seconds, 0.95), "s", size=sizes)
            report.emit("latency.serve_postgresql.over_direct", pg_p50 / direct_p50, "x", pg_p50 / direct_p50,
                        "<= 1.5", size=sizes)
        if handoff:
            report.emit("latency.dsr_run_handoff.p50", statistics.median(handoff), "s",
                        statistics.median(handoff), "< 3", size={"runs": len(handoff)},
                        note="`dsr run ID` wall time (a new process) while dsr serve runs")
    report.summary()
    return 0


def measure_direct(service: Any, calls: CallLog, size: int, report: Report) -> list[float]:
    log(f"direct: {size + 1} requests")
    per_kind: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    counted: Counter[str] = Counter()

    def one(number: int, kind: str) -> float:
        request_id = submit_verified(service, kind, email_for(kind, number))
        calls.clear()
        started = time.monotonic()
        status = run_direct(service, request_id)
        elapsed = time.monotonic() - started
        if status != "completed":
            raise RuntimeError(f"direct run of a {kind} request ended {status}")
        if number > 0:
            per_kind[kind].update(budget for _, budget, _ in calls.snapshot())
            counted[kind] += 1
        return elapsed

    seconds = timed_series(size, one)
    for kind in KINDS:
        for budget in sorted(per_kind[kind]):
            report.emit(f"latency.calls_per_subject.{kind}.{budget}", per_kind[kind][budget] / max(1, counted[kind]),
                        "calls", size={"requests": counted[kind]})
    return seconds


def verified_to_done(service: Any, what: str, offset: int) -> Callable[[int, str], float]:
    """A timed_series step: submit a request, then time verification -> completed on a running serve."""
    def one(number: int, kind: str) -> float:
        request_id = submit(service, kind, offset + number)
        started = time.monotonic()
        service.verify(request_id, method="email-code", note="code sent to the address was returned")
        status = wait_done(service, request_id)
        if status != "completed":
            raise RuntimeError(f"{what} run of a {kind} request ended {status}")
        return time.monotonic() - started
    return one


def measure_serve(service: Any, spec: ServiceSpec, root: Path, size: int, report: Report, *,
                  handoff_runs: int) -> tuple[list[float], list[float]]:
    log("serve: starting dsr serve's Prefect server")
    started = time.monotonic()
    with served(service, root / "prefect"):
        report.emit("latency.serve_startup", time.monotonic() - started, "s",
                    note="prefect server start with a fresh database, deployments, warm worker")
        log(f"serve: {size + 1} requests through the verified trigger")

        seconds = timed_series(size, verified_to_done(service, "served", 1000))
        handoff = measure_handoff(spec, handoff_runs) if handoff_runs else []
        crm_only(service, spec, root, size, report)
    return seconds, handoff


def measure_serve_postgresql(service: Any, size: int, report: Report) -> list[float]:
    """The serve phase again, its Prefect server on a fresh PostgreSQL database (none: skipped)."""
    from bench.common import postgres_database, postgres_url

    base, why = postgres_url()
    if base is None:
        report.note(f"serve on PostgreSQL not measured: {why}")
        return []
    with postgres_database(base, "dsr_bench_prefect") as database_url, scratch_dir("latency-pg") as home:
        previous = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        try:
            log("serve on PostgreSQL: starting its Prefect server")
            with served(service, home):
                log(f"serve on PostgreSQL: {size + 1} requests")
                return timed_series(size, verified_to_done(service, "served", 4000))
        finally:
            if previous is None:
                os.environ.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
            else:
                os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = previous


def crm_only(service: Any, spec: ServiceSpec, root: Path, size: int, report: Report) -> None:
    """The same serve, its warm runs pointed at a service whose data map holds the CRM alone."""
    from flows import runtime

    crm_url = f"sqlite:///{root / 'crm.sqlite'}"
    crm_spec = ServiceSpec(home=str(root / "var-crm"), systems_file=str(write_data_map(
        root / "systems-crm.yaml", crm_url=crm_url, systems=["crm"])), env=spec.env)
    with open_service(crm_spec) as crm_service:
        from flows.serve import mirror_verifications

        mirror_verifications(crm_service)  # its verifications start their runs on the running serve
        runtime.use_service(crm_service)
        try:
            log(f"serve, CRM only: {size + 1} requests")
            seconds = timed_series(size, verified_to_done(crm_service, "served CRM-only", 2000))
        finally:
            runtime.use_service(service)
    p50 = statistics.median(seconds)
    report.emit("latency.serve_crm_only.p50", p50, "s", p50, "< 1.3", size={"requests": size, "systems": ["crm"]})
    report.emit("latency.serve_crm_only.p95", percentile(seconds, 0.95), "s", size={"requests": size})


def measure_handoff(spec: ServiceSpec, runs: int) -> list[float]:
    """`dsr run ID` in a new process, with dsr serve running on the same DSR home.

    The requests are verified through a second service on the same ledger, one that announces
    nothing to Prefect: otherwise the trigger would start each run before `dsr run` could.
    """
    env = {**os.environ, **spec.env, "DSR_HOME": spec.home, "DSR_SYSTEMS_FILE": spec.systems_file,
           "DSR_CONFIG_DIR": str(REPO / "config"), "DSR_IDENTITY_KEY": IDENTITY_KEY}
    env.pop("PREFECT_API_URL", None)  # found through the running serve, as an operator's shell would
    # An installed dsr has its bytecode compiled; this environment may forbid writing it beside the
    # sources (PYTHONDONTWRITEBYTECODE), which makes every start compile ~600 modules (about 0.7 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(spec.home) / "pycache")
    dsr = str(Path(sys.executable).parent / "dsr")
    seconds: list[float] = []
    log(f"dsr run hand-off: {runs} runs (and one to compile the bytecode)")
    with open_service(spec) as quiet:
        for number in range(runs + 1):
            kind = KINDS[number % len(KINDS)]
            request_id = submit_verified(quiet, kind, email_for(kind, 3000 + number))
            started = time.monotonic()
            done = subprocess.run([dsr, "run", request_id], env=env, capture_output=True, text=True, timeout=300)
            elapsed = time.monotonic() - started
            if done.returncode != 0:
                raise RuntimeError(f"dsr run exited {done.returncode}: {done.stderr[-500:]}")
            if number > 0:
                seconds.append(elapsed)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
