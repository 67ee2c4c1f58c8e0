"""Fan-out benchmark: R verified requests across every system, 50 ms per vendor call.

Set-up (parent process): every demo sandbox (`sandbox.demo.demo_sandboxes`, the vendors'
default limits), 50 ms added to every vendor call, a demo CRM with R + 100 people, and the demo
data map without the website portal (no API: it only opens a task). Requests are for distinct
people of the demo data (some held by one system, some by several, some by none), mixed types
(40% access, 40% erasure, 20% portability) and regimes. Wistia has no delete API, so an erasure
ends `awaiting_manual_action` once every automated step is done; that counts as processed.

Phases, each in its own child process (the sandboxes stay in the parent):

1. main: R requests driven through `RequestRunner` by a pool of C request threads (default 16),
   each request fanning out to its systems in up to 8 threads, as the flow does;
2. concurrency 1: fewer requests (default 20: the full R would take a quarter of an hour), one
   request and one system at a time; the speed-up compares requests per minute;
3. orchestration overhead: the real `process-request` Prefect flow (ephemeral API, PREFECT_HOME in
   the scratch dir) against the same `RequestRunner` calls without Prefect, on zero-latency
   sandboxes (their windows reset before each request, so no rate limit interferes), for access
   requests of people no system holds (identical work on both sides), alternately, N of each.
   Done with all seven systems and with the CRM alone, which separates what each connector task
   adds (the difference of the two, per extra task) from the fixed cost of a flow run. Both with
   flow heartbeats off: the sync engine's heartbeat-thread join (prefect-notes section 6.3) rounds
   every run up towards the next second and would swamp a per-task difference; its own cost is
   measured apart (flows with the default setting) and added to the fixed cost. Prefect's
   start-up is excluded (a warm-up flow runs first) and reported on its own.

Vendor calls and throttling answers are read from each sandbox's /__sandbox__/stats; per-budget,
time-resolved counts come from a `CallLog` on the sandboxes (HubSpot's search budget is separate
from its general one). Each budget's limit comes from the connector settings in the data map.
The binding budget is the one whose calls need the most time at its limit; its achieved rate is
measured between the 5th and 95th percentile of its calls (ramp-up and tail left out).

    python -m bench.fanout [--quick] [--size R] [--concurrency C] [--baseline N] [--no-prefect]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bench.common import (
    CallLog,
    Report,
    ServiceSpec,
    demo_stack,
    is_throttle,
    log,
    open_service,
    parse_args,
    run_in_child,
    scratch_dir,
    submit_verified,
    vendor_limits,
    write_data_map,
)

REQUESTS = 300
# Requests in flight. With 16, Salesforce (the binding budget) idled a quarter of the time while the
# requests in flight waited on HubSpot's search budget (4/s) and NetSuite: 0.75 of its limit. With 48
# it stays busy: 0.95, which is the limit less the 5% latency margin (connectors.pacing).
CONCURRENCY = 48
SYSTEM_THREADS = 8  # flows.request.MAX_PARALLEL_SYSTEMS
BASELINE = 20
PREFECT_REQUESTS = 10
LATENCY_MS = 50.0
SYSTEMS = ("crm", "google_ads", "hubspot", "linkedin", "netsuite", "salesforce", "wistia")  # the portal has no API
TYPES = ("access", "erasure", "portability", "erasure", "access")
REGIMES = ("gdpr", "uk-gdpr", "ccpa", "gdpr", "uk-gdpr")


# --- subjects (parent) -----------------------------------------------------------------------------------


def subjects(stack: Any, count: int, seed: int = 3) -> list[str]:
    """`count` distinct addresses, those some vendor holds first (shuffled), then CRM-only people."""
    from sandbox import crm_seed, hubspot, netsuite, salesforce, wistia

    decoys = {e.strip().lower() for e in (*crm_seed.DECOY_EMAILS, *hubspot.DECOY_EMAILS, *netsuite.DECOY_EMAILS,
                                          *salesforce.DECOY_EMAILS, *wistia.DECOY_EMAILS)}
    servers = stack.servers
    vendor_held = {(r.get("Email") or "").strip().lower() for obj in ("Contact", "Lead")
                   for r in servers["salesforce"].vendor.records(obj)}
    vendor_held |= {(r.get("email") or "").strip().lower() for r in servers["netsuite"].vendor.records("customer")}
    with sqlite3.connect(stack.crm_url.removeprefix("sqlite:///")) as conn:
        crm = {row[0].strip().lower() for row in conn.execute("SELECT email FROM contacts")}
    rng = random.Random(seed)
    first = sorted(e for e in vendor_held if e and e not in decoys)
    rest = sorted(e for e in crm - vendor_held if e and e not in decoys)
    rng.shuffle(first)
    rng.shuffle(rest)
    chosen = (first + rest)[:count]
    while len(chosen) < count:  # people no system holds
        chosen.append(f"nobody.{len(chosen)}@unknown.example")
    return chosen


def plan(emails: list[str], offset: int = 0) -> list[tuple[str, str, str]]:
    """(type, email, regime) per request, types and regimes mixed."""
    return [(TYPES[(i + offset) % len(TYPES)], email, REGIMES[(i + offset) % len(REGIMES)])
            for i, email in enumerate(emails)]


# --- the runs (children) ---------------------------------------------------------------------------------


def _carry_out(service: Any, runner: Any, request_id: str, system_threads: int) -> dict[str, Any]:
    started = time.time()
    begun = runner.begin(request_id)
    tasks: list[float] = []

    def one(system: str) -> Any:
        t0 = time.perf_counter()
        result = runner.run_system(request_id, system, service.connecting(system))
        tasks.append(time.perf_counter() - t0)
        return result

    if begun.systems:
        if system_threads > 1:
            with ThreadPoolExecutor(min(system_threads, len(begun.systems))) as pool:
                list(pool.map(one, begun.systems))
        else:
            for system in begun.systems:
                one(system)
    outcome = runner.finish(request_id)
    return {"status": outcome.status.value, "started": started, "ended": time.time(), "tasks": tasks,
            "failed": [s.system for s in outcome.systems if s.status == "failed"],
            "errors": [f"{s.system}: {(s.error or '')[:120]}" for s in outcome.systems if s.status == "failed"]}


def fanout_in_child(spec: ServiceSpec, requests: list[tuple[str, str, str]], concurrency: int,
                    system_threads: int) -> dict[str, Any]:
    """Child: submit and verify the requests, then carry them out `concurrency` at a time."""
    from dsr.run import RequestRunner

    with open_service(spec) as service:
        ids = [submit_verified(service, kind, email, regime=regime) for kind, email, regime in requests]
        runner = RequestRunner(service)
        runner.store  # noqa: B018 - open the evidence store before the clock starts
        started, cpu = time.time(), time.process_time()
        if concurrency > 1:
            with ThreadPoolExecutor(concurrency) as pool:
                done = list(pool.map(lambda rid: _carry_out(service, runner, rid, system_threads), ids))
        else:
            done = [_carry_out(service, runner, rid, system_threads) for rid in ids]
        ended, cpu = time.time(), time.process_time() - cpu
    return {"started": started, "ended": ended, "requests": done, "cpu_seconds": cpu}


def _reset_windows(urls: list[str]) -> None:
    import requests

    for url in urls:
        requests.post(f"{url}/__sandbox__/reset", timeout=10).raise_for_status()


def overhead_in_child(specs: dict[str, ServiceSpec], emails: list[str], pairs: int, sandbox_urls: list[str],
                      prefect_home: str) -> dict[str, Any]:
    """Child: access requests through the real flow and straight through RequestRunner, alternately,
    with each data map of `specs` (all systems; the CRM alone), heartbeats off; then flows with
    the default heartbeat."""
    os.environ.update({"PREFECT_HOME": prefect_home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
                       "PREFECT_LOGGING_TO_API_ENABLED": "false"})
    os.environ.pop("PREFECT_API_URL", None)
    from contextlib import ExitStack

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from dsr.run import RequestRunner
    from flows import runtime
    from flows.request import MAX_PARALLEL_SYSTEMS, process_request

    queue = iter(emails)
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        services = {name: stack.enter_context(open_service(spec)) for name, spec in specs.items()}

        def timed_flow(service: Any) -> float:
            request_id = submit_verified(service, "access", next(queue), regime="gdpr")
            runtime.use_service(service)
            _reset_windows(sandbox_urls)
            t0 = time.perf_counter()
            result = process_request(request_id)
            seconds = time.perf_counter() - t0
            if result["status"] != "completed":
                raise RuntimeError(f"flow run ended {result['status']}: {result['reason']}")
            out.setdefault("systems", {})[id(service)] = len(result["systems"])
            return seconds

        def timed_direct(service: Any) -> float:
            request_id = submit_verified(service, "access", next(queue), regime="gdpr")
            _reset_windows(sandbox_urls)
            t0 = time.perf_counter()
            result = _carry_out(service, RequestRunner(service), request_id, MAX_PARALLEL_SYSTEMS)
            seconds = time.perf_counter() - t0
            if result["status"] != "completed":
                raise RuntimeError(f"direct run ended {result['status']}")
            return seconds

        out["startup"] = timed_flow(services["all"])  # the ephemeral server starts here
        # The sync engine joins its heartbeat thread, which sleeps in 1 s steps, at the end of every
        # flow run (prefect-notes 6.3): that rounds each run up towards the next second and would
        # swamp a per-task difference. Tasks and the fixed cost are measured with heartbeats off;
        # the heartbeat's own cost is measured apart, with the default setting.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            for name, service in services.items():
                direct, flowed = [], []
                for _ in range(pairs):
                    direct.append(timed_direct(service))
                    flowed.append(timed_flow(service))
                out[name] = {"direct": direct, "flow": flowed, "systems": out["systems"][id(service)]}
        out["all_heartbeat"] = [timed_flow(services["all"]) for _ in range(pairs)]
        runtime.use_service(None)
    out.pop("systems")
    return out


# --- analysis (parent) -----------------------------------------------------------------------------------


def budget_rates(calls: list[tuple[float, str, int | None]], limits: dict[str, tuple[int, float]],
                 ) -> dict[str, dict[str, Any]]:
    """Per budget: calls, throttles, seconds its calls need at its limit, achieved rate / limit."""
    out: dict[str, dict[str, Any]] = {}
    for budget, (limit, period) in limits.items():
        mine = [(t, s) for t, b, s in calls if b == budget]
        ok = sorted(t for t, s in mine if not is_throttle(budget, s))
        throttled = sum(1 for _, s in mine if is_throttle(budget, s))
        entry: dict[str, Any] = {"calls": len(ok), "throttled": throttled, "limit_per_s": limit / period,
                                 "needs_seconds": max(0, len(ok) - limit) * period / limit, "rate": None, "ratio": None}
        if len(ok) >= 20:
            lo, hi = ok[int(len(ok) * 0.05)], ok[int(len(ok) * 0.95) - 1]
            if hi > lo:
                entry["rate"] = (int(len(ok) * 0.95) - 1 - int(len(ok) * 0.05)) / (hi - lo)
                entry["ratio"] = entry["rate"] / (limit / period)
        out[budget] = entry
    return out


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=None, help=f"requests in flight ({CONCURRENCY})")
    parser.add_argument("--baseline", type=int, default=None, help=f"requests of the concurrency-1 run ({BASELINE})")
    parser.add_argument("--prefect-requests", type=int, default=None,
                        help=f"requests per side of the overhead measurement ({PREFECT_REQUESTS})")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS, help="added to every vendor call (50)")
    parser.add_argument("--no-prefect", action="store_true", help="skip the Prefect overhead measurement")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("Fan-out: requests/min, call rate vs each vendor's limit, throttles, speed-up, "
                      "orchestration overhead.", argv, _add_arguments)
    report = Report("fanout")
    count = args.size or (6 if args.quick else REQUESTS)
    concurrency = args.concurrency or (3 if args.quick else CONCURRENCY)
    baseline = args.baseline or (2 if args.quick else BASELINE)
    prefect_pairs = args.prefect_requests or (1 if args.quick else PREFECT_REQUESTS)
    with scratch_dir("fanout") as root:
        with demo_stack(root, systems=SYSTEMS, latency_ms=args.latency_ms, crm_contacts=count + baseline + 100) as stack:
            limits = vendor_limits(stack.spec.systems_file)
            people = subjects(stack, count + baseline)
            main_plan, base_plan = plan(people[:count]), plan(people[count:], offset=count)
            vendors = {name: server for name, server in stack.servers.items()}
            calls = CallLog(vendors)
            try:
                log(f"fanout: {count} requests, {concurrency} at a time, {args.latency_ms:g} ms per vendor call")
                sandbox_cpu = time.process_time()
                run = run_in_child(fanout_in_child, stack.spec, main_plan, concurrency, SYSTEM_THREADS).value
                sandbox_cpu = time.process_time() - sandbox_cpu
                main_calls, main_stats = calls.snapshot(), stack.stats()
                stack.reset(latency_ms=args.latency_ms)
                calls.clear()
                log(f"fanout: {baseline} requests at concurrency 1 (one request, one system at a time)")
                base = run_in_child(fanout_in_child, stack.spec, base_plan, 1, 1).value
                base_stats = stack.stats()
                overhead = None
                if not args.no_prefect:
                    stack.reset(latency_ms=0.0)
                    log(f"fanout: orchestration overhead, zero latency: {prefect_pairs} request(s) through the Prefect "
                        f"flow and {prefect_pairs} straight through RequestRunner, with all systems and with the CRM "
                        f"alone (heartbeats off), then {prefect_pairs} flow(s) with them (Prefect starts first)")
                    emails = [f"nobody.prefect.{i}@unknown.example" for i in range(1 + 6 * prefect_pairs)]
                    urls = [s.url for s in stack.servers.values()]
                    one = write_data_map(root / "systems-crm-only.yaml", crm_url=stack.crm_url, systems=["crm"])
                    specs = {"all": stack.spec, "one": replace(stack.spec, systems_file=str(one))}
                    overhead = run_in_child(overhead_in_child, specs, emails, prefect_pairs, urls,
                                            str(root / "prefect")).value
            finally:
                calls.close()

    wall = run["ended"] - run["started"]
    statuses = Counter(r["status"] for r in run["requests"])
    failed = Counter(s for r in run["requests"] for s in r["failed"])
    errors = Counter(e for r in run["requests"] for e in r["errors"])
    size = {"requests": count, "concurrency": concurrency, "system_threads": SYSTEM_THREADS,
            "latency_ms": args.latency_ms, "systems": list(SYSTEMS)}
    if count < REQUESTS:
        size["reduced_from"] = REQUESTS
    rpm = count / wall * 60
    rates = budget_rates(main_calls, limits)
    binding = max(rates, key=lambda b: rates[b]["needs_seconds"])
    allowed_rpm = count / rates[binding]["needs_seconds"] * 60 if rates[binding]["needs_seconds"] else None
    report.emit("fanout.requests_per_minute", rpm, "requests/min", rpm / allowed_rpm if allowed_rpm else None, None,
                size=size, seconds=wall, allowed_by_limits=allowed_rpm, binding_budget=binding,
                client_cpu_share=run["cpu_seconds"] / (wall * (os.cpu_count() or 1)),
                sandboxes_cpu_share=sandbox_cpu / (wall * (os.cpu_count() or 1)),
                statuses=dict(statuses), failed_systems=dict(failed), errors=dict(errors.most_common(5)),
                note="requests carried out to the end of their automated part per minute (main run); ratio = "
                     "against what the binding budget's limit allows for these calls (above 1: limits overrun)")

    for budget, entry in sorted(rates.items()):
        calls_n, period_limit = entry["calls"], entry["limit_per_s"]
        report.emit(f"fanout.call_rate.{budget}", entry["rate"], "calls/s", entry["ratio"], None, size=size,
                    calls=calls_n, throttled=entry["throttled"], limit_per_s=period_limit,
                    needs_seconds=entry["needs_seconds"],
                    note="successful calls/s between the 5th and 95th percentile of this budget's calls / its limit")
    bind = rates[binding]
    report.emit("fanout.binding_call_rate", bind["rate"], "calls/s", bind["ratio"], ">= 0.9 and <= 1.05", size=size,
                budget=binding, calls=bind["calls"], limit_per_s=bind["limit_per_s"],
                needs_seconds=bind["needs_seconds"], run_seconds=wall,
                note=f"the binding budget ({binding}: its calls need the most time at its limit): achieved / limit "
                     f"(above 1: faster than the vendor allows, which only a lenient sandbox lets through)")
    throttled = {name: int(s.get("throttled", 0)) for name, s in main_stats.items()}
    total_calls = sum(int(s.get("calls", 0)) for s in main_stats.values())
    report.emit("fanout.throttled", sum(throttled.values()), "answers",
                sum(throttled.values()) / total_calls if total_calls else 0.0, "<= 0", size=size,
                per_vendor=throttled, vendor_calls=total_calls,
                note="429/403 throttling answers (sandbox /__sandbox__/stats); ratio = share of all vendor calls")
    logins = {b: sum(1 for _, budget, _ in main_calls if budget == b) for b in
              ("salesforce:login", "google_ads:login", "netsuite:login")}
    report.emit("fanout.logins_per_request", sum(logins.values()) / count, "logins/request", size=size,
                per_vendor=logins, note="OAuth token calls per request (a new connector, and login, per task)")

    base_wall = base["ended"] - base["started"]
    base_rpm = baseline / base_wall * 60
    base_size = {"requests": baseline, "concurrency": 1, "system_threads": 1, "latency_ms": args.latency_ms,
                 "reduced_from": count}
    report.emit("fanout.requests_per_minute_concurrency_1", base_rpm, "requests/min", size=base_size,
                seconds=base_wall, statuses=dict(Counter(r["status"] for r in base["requests"])),
                throttled=sum(int(s.get("throttled", 0)) for s in base_stats.values()),
                note="one request and one system at a time, on fewer requests of the same mix")
    report.emit("fanout.speedup", rpm / base_rpm, "x", rpm / base_rpm, None, size=size,
                note="requests/min of the main run / requests/min at concurrency 1")

    if overhead is not None:
        med = statistics.median
        extra = {name: med(overhead[name]["flow"]) - med(overhead[name]["direct"]) for name in ("all", "one")}
        tasks = {name: overhead[name]["systems"] for name in ("all", "one")}
        per_task = (extra["all"] - extra["one"]) / (tasks["all"] - tasks["one"])
        per_flow = extra["one"] - per_task * tasks["one"]
        heartbeat = med(overhead["all_heartbeat"]) - med(overhead["all"]["flow"])
        task_times = [t for r in run["requests"] for t in r["tasks"]]
        mean_task = statistics.mean(task_times) if task_times else float("nan")
        mean_request = statistics.mean(r["ended"] - r["started"] for r in base["requests"])
        osize = {"requests_per_side": prefect_pairs, "systems_per_request": tasks, "latency_ms": 0}
        if prefect_pairs < PREFECT_REQUESTS:
            osize["reduced_from"] = PREFECT_REQUESTS
        report.emit("fanout.orchestration_overhead_per_task", per_task * 1000, "ms/task", per_task / mean_task, None,
                    size=osize, mean_task_s_at_latency=mean_task,
                    flow_minus_direct_s={k: v for k, v in extra.items()},
                    note="what one more connector task adds to a flow run: (flow - direct, all systems) - (flow - "
                         "direct, CRM only), per extra task, heartbeats off; ratio = against the mean connector task "
                         "of the main run")
        report.emit("fanout.orchestration_overhead_per_flow", (per_flow + heartbeat) * 1000, "ms/request",
                    (per_flow + heartbeat) / mean_request, None, size=osize, without_heartbeat_ms=per_flow * 1000,
                    heartbeat_ms=heartbeat * 1000,
                    note="fixed cost of one process-request run beyond its tasks, default settings; ratio = against "
                         "the mean request at concurrency 1 (50 ms latency); heartbeat_ms: the flow heartbeat "
                         "thread's join (PREFECT_FLOWS_HEARTBEAT_FREQUENCY)")
        report.emit("fanout.prefect_startup", overhead["startup"], "s", size=osize,
                    note="first process-request in a fresh process and PREFECT_HOME (ephemeral server start "
                         "+ migrations + one request); excluded from the overhead")
    else:
        report.note("orchestration overhead not measured (--no-prefect)")
    if count < REQUESTS:
        report.note(f"{count} requests instead of the full {REQUESTS}")
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
