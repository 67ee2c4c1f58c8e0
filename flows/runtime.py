"""What a flow run needs from its process: the service, built once from the environment."""

from __future__ import annotations

import threading
from collections.abc import Callable

from connectors.registry import build_connector
from dsr.contract import Connector
from dsr.execution import RequestRunner
from dsr.service import DsrService
from dsr.settings import Settings

_lock = threading.Lock()
_service: DsrService | None = None


def service() -> DsrService:
    """One service (and ledger connection pool) per process, shared by the task threads."""
    global _service
    with _lock:
        if _service is None:
            from dsr.logging_setup import configure_from_environment

            configure_from_environment()  # a worker's flow run: JSON log lines too (DSR_LOG_FORMAT)
            _service = DsrService(Settings())
        return _service


def use_service(instance: DsrService | None) -> None:
    """Point the flows at a given service (the CLI and tests do, so all share one ledger)."""
    global _service
    with _lock:
        _service = instance


def runner() -> RequestRunner:
    return RequestRunner(service())


def connector_factory(system: str) -> Callable[[], Connector]:
    """A builder the runner calls inside its error handling, so a bad entry is recorded."""

    def connect() -> Connector:
        config = service().data_map.systems[system]
        return build_connector(system, config.kind, config.settings)

    return connect
