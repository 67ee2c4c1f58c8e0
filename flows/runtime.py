"""Where a flow run gets the application from: one `DsrService` per process, built from settings.

Flows call `runtime.service()` and nothing else of the domain's wiring. The first call builds the
service from the DSR_* environment (a worker's flow run); `use_service` puts a given one in its
place (the CLI, `dsr serve` and tests do, so the flows share their ledger), and `use_service(None)`
lets the next call build afresh.
"""

from __future__ import annotations

import threading

from dsr.service import DsrService

_lock = threading.Lock()
_service: DsrService | None = None


def _build() -> DsrService:
    from dsr.logging_setup import configure_from_environment
    from dsr.settings import Settings

    configure_from_environment()  # a worker's flow run: JSON log lines too (DSR_LOG_FORMAT)
    return DsrService(Settings())


def service() -> DsrService:
    """The process's application (and ledger connection pool), shared by the task threads."""
    global _service
    with _lock:
        if _service is None:
            _service = _build()
        return _service


def use_service(instance: DsrService | None) -> None:
    """Point the flows at a given application (None: build one from settings on the next call)."""
    global _service
    with _lock:
        _service = instance

