"""Scale-out benchmark (issue 9, item 5): SKIPPED.

Scale-out means the same flows on several Prefect workers behind one API server (process or
container work pools, `prefect worker start` on each machine), with the vendor budgets shared
across them. Multi-worker deployments do not exist yet in this project (README, "Known limits":
the SQS consumer and multi-worker deployments are the next issue), so there is nothing to run.
This module says so in the benchmarks' own format, so that `make bench` shows the gap.

    python -m bench.workers
"""

from __future__ import annotations

from bench.common import Report, parse_args

REASON = ("skipped: needs multi-worker deployments (Prefect work pool + several workers + a shared "
          "vendor budget), which do not exist yet")


def main(argv: list[str] | None = None) -> int:
    parse_args("Scale-out over several workers (skipped: not built yet).", argv)
    report = Report("workers")
    report.emit("workers.scale_out", None, "requests/min", size=None, note=REASON, skipped=True)
    report.note(REASON)
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
