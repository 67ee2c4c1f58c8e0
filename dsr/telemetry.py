"""Process-wide counters of vendor traffic and request runs, for Prometheus (`/metrics`, doors.api.ops).

Labels are system names, request types, regimes and outcomes: never an identity, a request id or
anything a subject wrote. The counters are fed where a run ends (flows.request) from each
connector's own `stats`; a process that runs no flows (an API-only one) shows them at zero, and its
request gauges come from the ledger instead (doors.api.ops).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Histogram

VENDOR_CALLS = Counter("dsr_vendor_calls", "Calls made to a vendor's API.", ["system"], registry=None)
VENDOR_THROTTLES = Counter("dsr_vendor_throttles", "Throttling answers from a vendor (429, 403 limit...).",
                           ["system"], registry=None)
VENDOR_RETRIES = Counter("dsr_vendor_retries", "Calls repeated after a throttle or a transient error.",
                         ["system"], registry=None)
RUN_SECONDS = Histogram("dsr_run_seconds", "Duration of process-request runs, by type, regime and outcome.",
                        ["type", "regime", "status"], registry=None,
                        buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600))
COLLECTORS = (VENDOR_CALLS, VENDOR_THROTTLES, VENDOR_RETRIES, RUN_SECONDS)


def record_vendor_stats(system: str, stats: Mapping[str, float]) -> None:
    """Add one connector's counters (connectors.base.HttpConnector.stats) to the process totals."""
    calls = stats.get("calls", stats.get("http_calls", 0))
    if calls:
        VENDOR_CALLS.labels(system).inc(calls)
    if stats.get("throttled"):
        VENDOR_THROTTLES.labels(system).inc(stats["throttled"])
    if stats.get("retries"):
        VENDOR_RETRIES.labels(system).inc(stats["retries"])


def record_run(type: str, regime: str, status: str, seconds: float) -> None:
    RUN_SECONDS.labels(type, regime, status).observe(seconds)
