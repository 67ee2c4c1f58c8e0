"""Smoke test of the benchmarks (bench/): each runs at a tiny size (--quick) so that it cannot rot.

Benchmarks are not tests: nothing here looks at a timing or a ratio. It checks only that each
benchmark runs to its end and prints well-formed JSON lines carrying the figures it promises,
then its human summary. `make bench` runs them at their real sizes. The fan-out benchmark
starts Prefect (its orchestration overhead), so it carries the `prefect` marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is not an installed package: run from the repository
    sys.path.insert(0, str(REPO))

from bench import common, export, fanout, ledger, purge, workers  # noqa: E402

FIELDS = {"bench", "name", "value", "unit", "ratio", "target", "meets", "size", "note"}

EXPECTED = {
    "ledger": (ledger, ["--quick"], {
        "ledger.sqlite.append_rate", "ledger.sqlite.append_rate_no_index", "ledger.sqlite.plain_insert_rate",
        "ledger.sqlite.verify_seconds", "ledger.sqlite.verify_rate", "ledger.sqlite.verify_peak_rss",
    }),
    "export": (export, ["--quick"], {
        "export.peak_rss", "export.peak_rss_tenth", "export.package_bundle_rate", "export.baseline_rate",
        "export.export_rate",
    }),
    "purge": (purge, ["--quick"], {
        *(f"purge.{figure}.{system}" for figure in ("records_per_call", "throughput", "left_behind")
          for system in ("crm", "salesforce", "hubspot")),
        *(f"purge.{figure}.{system}" for figure in ("throughput_guarded", "budget_use", "throttled")
          for system in ("salesforce", "hubspot")),
        "purge.peak_rss_small", "purge.peak_rss_large", "purge.total_seconds",
    }),
    "fanout": (fanout, ["--quick"], {
        "fanout.requests_per_minute", "fanout.binding_call_rate", "fanout.throttled", "fanout.logins_per_request",
        "fanout.requests_per_minute_concurrency_1", "fanout.speedup", "fanout.orchestration_overhead_per_task",
        "fanout.orchestration_overhead_per_flow",
        "fanout.prefect_startup",
        *(f"fanout.call_rate.{budget}" for budget in ("google_ads", "hubspot", "hubspot:search", "linkedin",
                                                       "netsuite", "salesforce", "wistia")),
    }),
    # One worker, one request: the fleet's start-up is the cost (tests/test_workers_e2e.py runs two,
    # process and warm ones). Then a backlog of one drained by a process-verified run on the same
    # worker (one flow-run process more), whose peak RSS comes from the run's summary artifact.
    "workers": (workers, ["--quick", "--size", "1", "--workers", "1", "--warm", "none", "--no-batch", "--no-shared",
                          "--backlog", "1", "--backlog-modes", "volume"], {
        "workers.1.requests_per_minute", "workers.1.throttled", "workers.1.busy_cores", "workers.scale_out",
        "workers.backlog.1.requests_per_minute", "workers.backlog.1.peak_rss", "workers.backlog.peak_rss_ratio"}),
}


def _judged(ratio: float, target: str) -> bool:
    """`">= 0.9"`, `"<= 1.2"`, or clauses joined by `" and "`, as bench/README.md states them."""
    checks = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__, "==": float.__eq__}
    verdict = True
    for clause in target.split(" and "):
        op, bound = clause.split()
        verdict = verdict and checks[op](float(ratio), float(bound))
    return verdict


@pytest.mark.parametrize("bench", [pytest.param(name, marks=[pytest.mark.prefect] if name in ("fanout", "workers") else [])
                                   for name in sorted(EXPECTED)])
def test_benchmark_prints_its_figures_as_json_lines(bench: str, capsys: pytest.CaptureFixture[str]) -> None:
    module, argv, names = EXPECTED[bench]
    if bench == "ledger" and common.postgres_url()[0] is not None:  # PostgreSQL figures only with a server
        names = names | {n.replace(".sqlite.", ".postgresql.") for n in names}
    assert module.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    figures = [json.loads(line) for line in out if line.startswith("{")]
    summary = [line for line in out if line.startswith("#")]
    assert [line for line in out if line.strip() and not line.startswith(("{", "#"))] == []
    assert {f["name"] for f in figures} == names
    for figure in figures:
        assert FIELDS <= set(figure), figure
        assert figure["bench"] == bench
        assert isinstance(figure["unit"], str) and figure["unit"]
        assert figure["value"] is None or isinstance(figure["value"], (int, float))
        assert figure["ratio"] is None or isinstance(figure["ratio"], (int, float))
        # The verdict printed is the figure's ratio judged against its target (recomputed here), so a
        # reader of the JSON line can trust "meets": a missed target never reads as met.
        if figure["target"] is None or figure["ratio"] is None:
            assert figure["meets"] is None, figure
        else:
            assert figure["meets"] is _judged(figure["ratio"], figure["target"]), figure
    assert summary and summary[0].startswith(f"# {bench}: {len(figures)} figure(s)")
    if bench == "workers":  # the process-verified run published its peak memory, and the benchmark read it
        assert next(f for f in figures if f["name"] == "workers.backlog.1.peak_rss")["value"] > 0


@pytest.mark.prefect
def test_latency_benchmark_a_served_request_completes_at_the_vendors_floor() -> None:
    """bench/latency.py at its smallest, in its own process as `make bench` runs it (this session's
    Prefect test harness must not be the one its embedded `dsr serve` talks to). Every request it
    times completed (the benchmark raises otherwise), the second request of a process describes
    no Salesforce object again, and no vendor throttled. Its timings are figures, not assertions."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "DSR_"))}
    done = subprocess.run([sys.executable, "-m", "bench.latency", "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    figures = {f["name"]: f for f in lines}
    for name in ("latency.direct.p50", "latency.direct.p95", "latency.serve.p50", "latency.serve.p95",
                 "latency.serve.over_direct", "latency.serve_crm_only.p50", "latency.serve_startup",
                 "latency.throttled"):
        assert FIELDS <= set(figures[name]), name
    assert figures["latency.throttled"]["value"] == 0
    counted = [name for name in figures if name.startswith("latency.calls_per_subject.")]
    assert any(name.endswith(".salesforce") for name in counted)
    assert not any(name.endswith(".salesforce:describe") for name in counted)
