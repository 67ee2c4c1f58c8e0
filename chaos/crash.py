"""Crash and resume: SIGKILL a request run or a retention purge at a seeded random
moment or at a named crash point, run it again to the end, and compare with an uninterrupted run.

    python -m chaos.crash --requests 200 --purges 100 --seed 1

A trial passes when: the final status and every system's outcome equal the uninterrupted run's;
the vendors hold exactly what they hold after it (the subject, another subject and look-alike
decoys, audience memberships, for a purge what is still expired); every ledger chain verifies;
the sealed bundle (or purge report) verifies; a request marked completed has no unfinished
system; and no vendor call that is not idempotent was repeated (chaos/checks.py says, per
vendor, what that means). Prints one line per failure and a JSON summary; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaos.checks import effects, outcome, unfinished_but_completed, vendor_state
from chaos.world import Trial, World, run_child, submit, world
from dsr.bundle import verify_bundle
from dsr.signing import load_or_create_signing_key
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT

SYSTEMS = 6  # crm, google_ads, hubspot, linkedin, netsuite, salesforce
REQUEST_POINTS = {
    "erasure": ["fanout", "discovered", "erased-unrecorded", "erased", "finishing", "sealing", "sealed"],
    "access": ["fanout", "discovered", "exported-unrecorded", "finishing", "sealing", "sealed"],
}
PER_SYSTEM = {"discovered", "erased-unrecorded", "erased", "exported-unrecorded"}
PURGE_POINTS = ["purge-sent", "purge-checkpoint", "purge-finishing", "purge-sealing"]
PURGE_SYSTEMS = "crm,hubspot,salesforce"  # NetSuite's pacing makes a purge of it take ~20 s a run


def _subject(kind: str) -> str:
    return ERASURE_SUBJECT if kind == "erasure" else ACCESS_SUBJECT


class Campaign:
    def __init__(self, w: World, seed: int) -> None:
        self.w, self.seed = w, seed
        self.baseline: dict[str, dict[str, Any]] = {}
        self.failures: list[str] = []
        self.figures: Counter[str] = Counter()

    # -- baselines ------------------------------------------------------------------------------

    def measure_baselines(self, kinds: tuple[str, ...] = ("erasure", "access", "purge")) -> None:
        for kind in [k for k in kinds if k != "purge"]:
            trial = self.w.trial(f"baseline-{kind}")
            request_id = submit(trial.service, kind, _subject(kind))
            run = run_child(trial.env, ["request", request_id])
            state = trial.service.state(request_id)
            self.baseline[kind] = {"outcome": outcome(state), "vendors": vendor_state(trial.service, self.w.servers),
                                   "seconds": run.seconds}
            trial.close()
        if "purge" not in kinds:
            return
        trial = self.w.trial("baseline-purge")
        run = run_child(trial.env, ["purge"], extra_env={"CHAOS_PURGE_SYSTEMS": PURGE_SYSTEMS})
        self.baseline["purge"] = {"vendors": vendor_state(trial.service, self.w.servers, purge=True),
                                  "seconds": run.seconds, "purged": run.result["purged"] if run.result else None}
        trial.close()

    # -- one request trial ------------------------------------------------------------------------

    def request_trial(self, index: int, kind: str | None = None, crashes: int | None = None) -> None:
        rng = random.Random(self.seed * 100_003 + index)
        drawn = "erasure" if rng.random() < 0.75 else "access"
        kind = kind or drawn
        trial = self.w.trial(f"request-{index}")
        label = f"request trial {index} ({kind}"
        try:
            request_id = submit(trial.service, kind, _subject(kind))
            twice = rng.random() < 0.25  # a quarter of the trials crash twice before resuming
            crashes = crashes or 1 + twice
            for _ in range(crashes):
                point, kill_after = self._pick(rng, REQUEST_POINTS[kind], self.baseline[kind]["seconds"])
                label += f", {point or f'kill at {kill_after:.2f}s'}"
                run = run_child(trial.env, ["request", request_id], crash_at=point, kill_after=kill_after)
                self.figures["crashes" if run.killed else "crash_not_reached"] += 1
            final = run_child(trial.env, ["request", request_id])
            label += ")"
            if final.result and final.result.get("status") == "already_running":
                self._fail(label, f"the re-run could not take over the dead run's lease: {final.result['reason']}")
                return
            self._check_request(label, trial, request_id, kind)
        finally:
            trial.close()
            self.figures["request_trials"] += 1

    def _pick(self, rng: random.Random, points: list[str], seconds: float) -> tuple[str | None, float | None]:
        if rng.random() < 0.5:
            point = rng.choice(points)
            return (f"{point}@{rng.randint(1, SYSTEMS)}" if point in PER_SYSTEM else point), None
        return None, rng.uniform(0.6, max(seconds, 1.0))  # ~0.6 s: the child's imports

    def _check_request(self, label: str, trial: Trial, request_id: str, kind: str) -> None:
        service = trial.service
        state = service.state(request_id)
        expected = self.baseline[kind]
        got = outcome(state)
        if got != expected["outcome"]:
            self._fail(label, f"outcome differs from the uninterrupted run: {got} != {expected['outcome']}")
        if bad := unfinished_but_completed(state):
            self._fail(label, f"completed with unfinished systems {bad}")
        try:
            service.ledger.verify(request_id)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            self._fail(label, f"ledger chain does not verify: {exc}")
        self._check_bundle(label, service, state)
        now = vendor_state(service, self.w.servers)
        if now != expected["vendors"]:
            differ = sorted(f"{n}.{k}" for n in now for k in now[n] if now[n][k] != expected["vendors"].get(n, {}).get(k))
            self._fail(label, f"vendors hold something other than after the uninterrupted run: {differ}")
        self._check_effects(label)

    def _check_bundle(self, label: str, service: Any, state: Any) -> None:
        if not state.bundles or state.bundles[-1]["through_seq"] != state.completed_through_seq:
            self._fail(label, "the final outcome has no sealed bundle")
            return
        path = service.settings.bundles_path / state.request_id / state.bundles[-1]["file"]
        signer = load_or_create_signing_key(service.settings.signing_key_path)
        report = verify_bundle(path, signer.public_key)
        if not report.ok or report.request_id != state.request_id:
            self._fail(label, f"bundle does not verify: {report.reason}")

    def _check_effects(self, label: str) -> None:
        found = effects(self.w.servers)
        strict, idempotent = found.repeats()
        self.figures["idempotent_repeats"] += idempotent
        self.figures["vendor_writes"] += sum(found.strict.values()) + sum(found.idempotent.values())
        if strict:
            repeated = sorted({(v, k) for (v, k, _), n in found.strict.items() if n > 1})
            self._fail(label, f"{strict} non-idempotent vendor call(s) repeated: {repeated}")

    # -- one purge trial ------------------------------------------------------------------------

    def purge_trial(self, index: int) -> None:
        rng = random.Random(self.seed * 200_003 + index)
        trial = self.w.trial(f"purge-{index}")
        env = {"CHAOS_PURGE_SYSTEMS": PURGE_SYSTEMS}
        try:
            point, kill_after = self._pick(rng, PURGE_POINTS, self.baseline["purge"]["seconds"])
            if point in ("purge-sent", "purge-checkpoint"):
                point = f"{point.split('@')[0]}@{rng.randint(1, 8)}"
            label = f"purge trial {index} ({point or f'kill at {kill_after:.2f}s'})"
            run = run_child(trial.env, ["purge"], crash_at=point, kill_after=kill_after, extra_env=env)
            self.figures["crashes" if run.killed else "crash_not_reached"] += 1
            final = run_child(trial.env, ["purge"], extra_env=env)
            assert final.result is not None
            if final.result["status"] != "completed":
                self._fail(label, f"the re-run ended {final.result['status']}")
            service = trial.service
            try:
                service.ledger.verify_all()
            except Exception as exc:  # noqa: BLE001
                self._fail(label, f"a purge chain does not verify: {exc}")
            signer = load_or_create_signing_key(service.settings.signing_key_path)
            report = verify_bundle(Path(final.result["report"]), signer.public_key)
            if not report.ok:
                self._fail(label, f"the run report does not verify: {report.reason}")
            if vendor_state(service, self.w.servers, purge=True) != self.baseline["purge"]["vendors"]:
                self._fail(label, "vendors hold something other than after the uninterrupted purge")
            self._check_effects(label)
        finally:
            trial.close()
            self.figures["purge_trials"] += 1

    def _fail(self, label: str, why: str) -> None:
        self.failures.append(f"{label}: {why}")
        print(f"FAIL {label}: {why}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--purges", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, default=None, help="where trial directories go (default: a temp dir)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dsr-chaos-") as tmp, world(args.root or Path(tmp)) as w:
        campaign = Campaign(w, args.seed)
        campaign.measure_baselines()
        for i in range(args.requests):
            campaign.request_trial(i)
            if (i + 1) % 20 == 0:
                print(f"# {i + 1}/{args.requests} request trials, {len(campaign.failures)} failure(s)",
                      file=sys.stderr, flush=True)
        for i in range(args.purges):
            campaign.purge_trial(i)
            if (i + 1) % 10 == 0:
                print(f"# {i + 1}/{args.purges} purge trials, {len(campaign.failures)} failure(s)",
                      file=sys.stderr, flush=True)
    summary = {"campaign": "crash", "seed": args.seed, **campaign.figures, "failures": len(campaign.failures),
               "seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(summary))
    return 1 if campaign.failures else 0


if __name__ == "__main__":
    sys.exit(main())
