"""What an operator's probes and Prometheus ask of a running API: `/ready` and `/metrics`.

`/health` says the process answers; `/ready` says it can do its job: the ledger answers, its
schema is this release's, and evidence storage takes writes (503 naming what failed, so a load
balancer keeps traffic away and the operator knows where to look). `/metrics` is Prometheus text:
requests by status and regime, overdue and due soon, read from the ledger at each scrape, plus this
process's vendor traffic and run durations (dsr.telemetry). No label carries personal data.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from dsr import telemetry
from dsr.ledger.store import schema_revisions
from dsr.models import OPEN_STATUSES
from dsr.service import DsrService

#: "Due soon": an open request due within this many days (the sweep's first warning is at 7).
DUE_SOON_DAYS = 7


class LedgerCollector(Collector):
    """Request gauges computed from the ledger's index at each scrape (never stale, never per process)."""

    def __init__(self, service: DsrService, today: Any = None) -> None:
        self._service = service
        self._today = today or (lambda: datetime.now(UTC).date())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self._service.ledger.index(statuses=sorted(s.value for s in OPEN_STATUSES))
        today: date = self._today()
        by_status = Counter((row.status, row.regime) for row in rows)
        open_requests = GaugeMetricFamily("dsr_open_requests", "Open requests by status and regime.",
                                          labels=["status", "regime"])
        for (status, regime), count in sorted(by_status.items()):
            open_requests.add_metric([status, regime], count)
        yield open_requests
        dues = [date.fromisoformat(row.due[:10]) for row in rows if row.due]
        overdue = GaugeMetricFamily("dsr_overdue_requests", "Open requests past their legal due date.")
        overdue.add_metric([], sum(1 for due in dues if due < today))
        yield overdue
        soon = GaugeMetricFamily("dsr_due_soon_requests",
                                 f"Open requests due within {DUE_SOON_DAYS} days (not yet overdue).")
        soon.add_metric([], sum(1 for due in dues if today <= due <= today + timedelta(days=DUE_SOON_DAYS)))
        yield soon


def _storage_problem(evidence: Any) -> str | None:
    """None when evidence storage takes writes; else what is wrong (no path beyond the configured one)."""
    directories = [getattr(evidence, name) for name in ("bundle_dir", "package_dir") if hasattr(evidence, name)]
    try:
        if not directories:  # a remote store (S3): its own check of buckets and Object Lock
            evidence.ensure_ready()
            return None
        for directory in directories:
            probe = Path(directory) / f".ready-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
    except Exception as exc:  # noqa: BLE001 - any failure makes the process not ready; the name says which
        return f"storage: not writable ({type(exc).__name__}{': ' + exc.strerror if isinstance(exc, OSError) and exc.strerror else ''})"
    return None


def readiness(service: DsrService, evidence: Any) -> dict[str, str]:
    """Each check's verdict: "ok", or what failed."""
    checks: dict[str, str] = {}
    engine = service.ledger.read_engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["ledger"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported by name
        checks["ledger"] = f"unreachable ({type(exc).__name__})"
    if checks["ledger"] == "ok":
        current, head = schema_revisions(engine)
        checks["schema"] = "ok" if current == head else f"at {current or 'none'}, this release needs {head}: dsr db upgrade"
    else:
        checks["schema"] = "unknown (ledger unreachable)"
    checks["storage"] = _storage_problem(evidence) or "ok"
    return checks


def ops_router(service: DsrService, evidence: Any) -> APIRouter:
    """`/ready` and `/metrics`, outside the versioned API and its schema (like `/health`)."""
    router = APIRouter(include_in_schema=False)
    registry = CollectorRegistry()
    registry.register(LedgerCollector(service))
    for collector in telemetry.COLLECTORS:
        registry.register(collector)

    @router.get("/ready")
    def ready() -> JSONResponse:
        checks = readiness(service, evidence)
        failed = {name: verdict for name, verdict in checks.items() if verdict != "ok"}
        body: dict[str, Any] = {"status": "ready" if not failed else "not ready", "checks": checks}
        if failed:
            body["failed"] = sorted(failed)
        return JSONResponse(body, status_code=200 if not failed else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router

