"""Vendor fault storms: every vendor sandbox answers a large share of calls with a fault
(5xx, a hold past the client's timeout, a TCP reset, the vendor's throttling answer, an expired
session), while several requests of mixed types run through the real RequestRunner. Then the
faults stop and the unfinished requests are run again.

    python -m chaos.storm --trials 50 --outages 15 --rate 0.4 --seed 1

A trial passes when, during the storm: every request ends `completed` or `partially_completed`;
no request is `completed` while one of its systems is not; a `partially_completed` request's
reason names every unfinished system with its error; and, once the faults stop, a re-run completes
every request, each ledger chain and each sealed bundle verifies, and the vendors hold exactly what
an uninterrupted run of the same requests leaves (the subjects, look-alike decoys, audience
members). An outage trial takes one vendor down (every call a 5xx) past the retry budget: the
erasure must stay open (partially_completed, that system named), the deadline sweep on a clock past
the due date must escalate it naming the system, and once the vendor is back a run must complete
it with a bundle that verifies. Faults are counted from the sandboxes' own `fault_*` counters.
Prints one line per failure and a JSON summary; exit 1 on any failure.

Retries are made quick (the storm is about what the pipeline concludes, not how long it waits):
every connector gets `STORM_SETTINGS` (short timeouts, a short cap on each retry wait) and the
sandboxes hold a timed-out call `HOLD_SECONDS`, longer than the client's timeout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from chaos.checks import outcome, unfinished_but_completed, vendor_state
from chaos.child import run_request
from chaos.world import MANUAL_SYSTEMS, Trial, World, submit, world
from connectors.pacing import forget_limiters
from dsr.adapters.mail import Notice
from dsr.bundle import verify_bundle
from dsr.models import Status
from dsr.service import DsrService
from dsr.signing import load_or_create_signing_key
from dsr.state import RequestState, SystemStatus
from dsr.sweep import sweep
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import FaultConfig, SandboxServer

FAULT_KINDS = ("error", "timeout", "reset", "throttle", "expire")
#: Connector settings for a storm: a client gives up on a held call after half a second, and no
#: single retry wait is longer than 0.3 s (a vendor asking for 1 s is waited 0.3 s: the sandboxes'
#: injected throttling is not a real budget, so waiting less does not overrun anything).
STORM_SETTINGS = {"timeout_seconds": 0.5, "connect_timeout_seconds": 0.5, "retry_max_wait": 0.3}
#: Google Ads treats a throttling wait longer than retry_max_wait as a daily quota (not retried),
#: so its sandbox asks for a wait within the cap; HubSpot's may ask for fractions of a second.
SANDBOX_WAITS = {"google_ads": ("throttle_retry_delay", 0.2), "hubspot": ("throttle_retry_after", 0.2)}
HOLD_SECONDS = 1.0  # how long a sandbox holds a "timeout" call (the client gave up at 0.5 s)
#: The requests of one trial: (type, subject). The erasure and the exports name different people,
#: so each request's end state does not depend on how far the other got.
REQUESTS = (("erasure", ERASURE_SUBJECT), ("access", ACCESS_SUBJECT), ("portability", ACCESS_SUBJECT))


# -- building blocks (tests/test_fault_storms.py uses them too) ---------------------------------


def storm_systems(data: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A systems.yaml mapping whose connectors retry quickly (STORM_SETTINGS, then `overrides`)."""
    for system in data["systems"].values():
        if system["kind"] in ("crm_sql", "manual"):
            continue  # a local database and a person: nothing of theirs goes over a vendor's wire
        settings = system.setdefault("settings", {})
        settings.update({**STORM_SETTINGS, **overrides})
        if system["kind"] == "salesforce":
            settings.pop("connect_timeout_seconds")  # one timeout for the whole call (simple-salesforce)
    return data


def rewrite_systems_file(path: Path, **overrides: Any) -> None:
    path.write_text(yaml.safe_dump(storm_systems(yaml.safe_load(path.read_text()), **overrides)))


def quick_vendor_waits(servers: Mapping[str, SandboxServer]) -> dict[str, float]:
    """Make the sandboxes' injected throttling ask for short waits; returns what to restore."""
    before = {}
    for name, (attribute, seconds) in SANDBOX_WAITS.items():
        vendor = servers[name].vendor
        before[name] = getattr(vendor, attribute)
        setattr(vendor, attribute, seconds)
    if hasattr(servers["hubspot"].vendor, "fractional_retry_after"):
        servers["hubspot"].vendor.fractional_retry_after = True  # type: ignore[attr-defined]
    return before


def restore_vendor_waits(servers: Mapping[str, SandboxServer], before: Mapping[str, float]) -> None:
    for name, value in before.items():
        setattr(servers[name].vendor, SANDBOX_WAITS[name][0], value)
    servers["hubspot"].vendor.fractional_retry_after = False  # type: ignore[attr-defined]


def storm(rate: float, seed: int, kinds: tuple[str, ...] = FAULT_KINDS) -> FaultConfig:
    """A fault on `rate` of a vendor's calls, shared equally by `kinds`."""
    share = rate / len(kinds)
    return FaultConfig(**{f"{kind}_rate": share for kind in kinds}, timeout_seconds=HOLD_SECONDS, seed=seed)


def fault_counts(servers: Mapping[str, SandboxServer]) -> Counter[str]:
    """Faults injected so far, by kind, read from each sandbox's own `fault_*` counters."""
    counts: Counter[str] = Counter()
    for server in servers.values():
        with server.vendor.stats_lock:
            for key, value in server.vendor.stats.items():
                if key.startswith("fault_"):
                    counts[key.removeprefix("fault_")] += value
    return counts


def run_together(service: DsrService, request_ids: list[str]) -> None:
    """Run the requests at once, each as chaos.child runs one (begin, a thread per system, finish)."""
    with ThreadPoolExecutor(max_workers=len(request_ids)) as pool:
        for future in [pool.submit(run_request, service, r) for r in request_ids]:
            future.result()


def storm_problems(state: RequestState) -> list[str]:
    """What is wrong with a request's outcome after a run under a storm (empty: nothing)."""
    problems = []
    if state.status not in (Status.COMPLETED, Status.PARTIALLY_COMPLETED):
        problems.append(f"ended {state.status.value}, not completed or partially_completed")
    if bad := unfinished_but_completed(state):
        problems.append(f"marked completed with unfinished systems {bad}")
    unfinished = {n: s for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED}
    if state.status == Status.PARTIALLY_COMPLETED:
        if not unfinished:
            problems.append("partially_completed with every system completed")
        reason = state.outcome_reason or ""
        for name, system in sorted(unfinished.items()):
            if not system.error or f"{name}: {system.error}" not in reason:
                problems.append(f"the reason does not name {name} and its error")
    return problems


def bundle_problem(service: DsrService, state: RequestState) -> str | None:
    """None when the request's latest outcome is sealed in a bundle that verifies."""
    if not state.bundles or state.bundles[-1]["through_seq"] != state.completed_through_seq:
        return "the final outcome has no sealed bundle"
    path = service.settings.bundles_path / state.request_id / state.bundles[-1]["file"]
    report = verify_bundle(path, load_or_create_signing_key(service.settings.signing_key_path).public_key)
    if not report.ok or report.request_id != state.request_id:
        return f"bundle does not verify: {report.reason}"
    return None


class _Inbox:
    """The escalation channel of a trial: keeps what it was sent."""

    name = "inbox"

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.notices.append(notice)


# -- the campaign --------------------------------------------------------------------------------


class StormCampaign:
    def __init__(self, w: World, seed: int, rate: float) -> None:
        self.w, self.seed, self.rate = w, seed, rate
        self.failures: list[str] = []
        self.figures: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.baseline: dict[str, Any] = {}

    def _trial(self, name: str, faults: dict[str, FaultConfig] | None = None) -> Trial:
        forget_limiters()  # each trial starts with the vendors' budgets untouched, as its sandboxes do
        trial = self.w.trial(name, faults)
        rewrite_systems_file(Path(trial.env["DSR_SYSTEMS_FILE"]))
        for server in self.w.servers.values():
            server.vendor.journal = None
        return trial

    def measure_baseline(self) -> None:
        trial = self._trial("baseline")
        try:
            ids = [submit(trial.service, kind, email) for kind, email in REQUESTS]
            for request_id in ids:
                run_request(trial.service, request_id)
            self.baseline = {
                "outcomes": [outcome(trial.service.state(r)) for r in ids],
                "vendors": vendor_state(trial.service, self.w.servers),
            }
            if any(o["status"] != "completed" for o in self.baseline["outcomes"]):
                raise RuntimeError(f"the fault-free baseline did not complete: {self.baseline['outcomes']}")
        finally:
            trial.close()

    def trial(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + index)
        # Each trial: every vendor under a storm of every kind, or (one in four) one kind alone at
        # the full rate, so each kind is also seen as a storm of its own.
        kinds = FAULT_KINDS if rng.random() < 0.75 else (rng.choice(FAULT_KINDS),)
        faults = {name: storm(self.rate, rng.randrange(1 << 30), kinds) for name in self.w.servers}
        label = f"storm trial {index} ({'+'.join(kinds)} at {self.rate:.0%})"
        trial = self._trial(f"storm-{index}", faults)
        service = trial.service
        try:
            ids = [submit(service, kind, email) for kind, email in REQUESTS]
            run_together(service, ids)  # as one worker running several flow runs at once
            for i in range(len(ids)):
                state = service.state(ids[i])
                self.figures[f"storm_{state.status.value}"] += 1
                self.figures["systems_unfinished_in_storm"] += sum(
                    1 for s in state.systems.values() if s.status != SystemStatus.COMPLETED)
                for problem in storm_problems(state):
                    self._fail(label, f"{REQUESTS[i][0]} request: {problem}")
            self.faults.update(fault_counts(self.w.servers))
            for server in self.w.servers.values():
                server.vendor.faults.configure(FaultConfig())
            unfinished = [r for r in ids if service.state(r).status != Status.COMPLETED]
            if unfinished:
                run_together(service, unfinished)
            self.figures["reruns"] += len(unfinished)
            for (kind, _), request_id, expected in zip(REQUESTS, ids, self.baseline["outcomes"], strict=True):
                state = service.state(request_id)
                got = outcome(state)
                if got["status"] != "completed":
                    self._fail(label, f"{kind} request: the re-run without faults ended {got['status']}")
                elif {n: s["status"] for n, s in got["systems"].items()} != \
                        {n: s["status"] for n, s in expected["systems"].items()}:
                    self._fail(label, f"{kind} request: systems differ from the uninterrupted run")
                elif kind != "erasure" and got != expected:
                    self._fail(label, f"{kind} request: found/exported differ from the uninterrupted run: "
                                      f"{got} != {expected}")
                try:
                    service.ledger.verify(request_id)
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    self._fail(label, f"{kind} request: ledger chain does not verify: {exc}")
                if problem := bundle_problem(service, state):
                    self._fail(label, f"{kind} request: {problem}")
            now = vendor_state(service, self.w.servers)
            if now != self.baseline["vendors"]:
                differ = sorted(f"{n}.{k}" for n in now for k in now[n]
                                if now[n][k] != self.baseline["vendors"].get(n, {}).get(k))
                self._fail(label, f"vendors hold something other than after the uninterrupted run: {differ}")
            self.figures["requests"] += len(ids)
        finally:
            trial.close()
            self.figures["trials"] += 1

    def outage_trial(self, index: int) -> None:
        """One vendor down (every call a 5xx) for longer than the retry budget: the erasure stays open,
        the deadline sweep (on a clock past the due date) escalates it naming that system, and once
        the vendor is back a run completes it."""
        rng = random.Random(self.seed * 2_000_003 + index)
        down = rng.choice(sorted(set(self.w.servers) - MANUAL_SYSTEMS))  # Wistia waits for a person
        label = f"outage trial {index} ({down} down)"
        trial = self._trial(f"outage-{index}", {down: FaultConfig(error_rate=1.0)})
        service = trial.service
        try:
            request_id = submit(service, "erasure", ERASURE_SUBJECT)
            run_request(service, request_id)
            state = service.state(request_id)
            self.faults.update(fault_counts(self.w.servers))
            open_systems = sorted(n for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED)
            if state.status != Status.PARTIALLY_COMPLETED or open_systems != [down]:
                self._fail(label, f"ended {state.status.value} with {open_systems} unfinished")
            late = datetime.combine(service.deadline(state).due + timedelta(days=1), datetime.min.time(), UTC)
            channel = _Inbox()
            report = sweep(service, [channel], now=late + timedelta(hours=12))
            if [level for rid, level, _ in report.raised if rid == request_id] != ["escalation"] or not any(
                    item.startswith(f"{down} (failed") for n in channel.notices for item in n.fields["open"]):
                self._fail(label, f"not escalated naming {down}: {report.raised}")
            self.figures["escalated"] += len(report.raised)
            self.w.servers[down].vendor.faults.configure(FaultConfig())
            run_request(service, request_id)
            state = service.state(request_id)
            if state.status != Status.COMPLETED or unfinished_but_completed(state):
                self._fail(label, f"the run after the outage ended {state.status.value}")
            if problem := bundle_problem(service, state):
                self._fail(label, problem)
            self.figures["requests"] += 1
        finally:
            trial.close()
            self.figures["outage_trials"] += 1

    def _fail(self, label: str, why: str) -> None:
        self.failures.append(f"{label}: {why}")
        print(f"FAIL {label}: {why}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--outages", type=int, default=15, help="trials with one vendor down past the retry budget")
    parser.add_argument("--rate", type=float, default=0.4, help="share of each vendor's calls that fault")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, default=None, help="where trial directories go (default: a temp dir)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dsr-storm-") as tmp, world(args.root or Path(tmp)) as w:
        before = quick_vendor_waits(w.servers)
        try:
            campaign = StormCampaign(w, args.seed, args.rate)
            campaign.measure_baseline()
            for i in range(args.trials):
                campaign.trial(i)
                if (i + 1) % 5 == 0:
                    print(f"# {i + 1}/{args.trials} storm trials, {sum(campaign.faults.values())} faults, "
                          f"{len(campaign.failures)} failure(s)", file=sys.stderr, flush=True)
            for i in range(args.outages):
                campaign.outage_trial(i)
        finally:
            restore_vendor_waits(w.servers, before)
    summary = {"campaign": "storm", "seed": args.seed, "rate": args.rate, **campaign.figures,
               "faults_injected": sum(campaign.faults.values()),
               **{f"faults_{k}": campaign.faults[k] for k in FAULT_KINDS},
               "failures": len(campaign.failures), "seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(summary))
    return 1 if campaign.failures else 0


if __name__ == "__main__":
    sys.exit(main())
