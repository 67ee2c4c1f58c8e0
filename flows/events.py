"""The bridge from the ledger to Prefect events: a verified request becomes `dsr.request.verified`.

The domain (`dsr/`) never imports Prefect. It publishes recorded changes on the service's event
bus (`DsrService.bus`, `dsr.bus`); `install(service)` subscribes a handler that mirrors a
verification as a Prefect event, which the `process-request` deployment's trigger turns into a
flow run (see deployments/prefect.yaml and flows/serve.py).

The event carries the request id, its type and regime, nothing else: no address, no name, no
identity hash. Emission is queued to Prefect's events worker (a background thread), so it does
not slow a verification down, and a failure is logged with the request id only; it never
undoes or blocks the verification, which is already in the ledger.

Without a Prefect API URL (no `dsr serve`, no production server) nothing is emitted: Prefect
would otherwise start a throwaway ephemeral server inside the verifying process, and the event
would reach no one. `dsr run ID` remains the way to run a request by hand.
"""

from __future__ import annotations

import logging
from typing import Any

from dsr.service import DsrService
from dsr.state import EventType

log = logging.getLogger(__name__)

VERIFIED_EVENT = "dsr.request.verified"
RESOURCE_PREFIX = "dsr.request."
REQUEST_ID_LABEL = "dsr.request-id"

#: The bridge's subscription on a service's bus (one per service however often installed).
SUBSCRIPTION_KEY = "prefect-events"


def resource(request_id: str) -> dict[str, str]:
    """The Prefect resource of a request (label values must be strings)."""
    return {"prefect.resource.id": f"{RESOURCE_PREFIX}{request_id}", REQUEST_ID_LABEL: request_id}


def _api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def emit_verified(service: DsrService, request_id: str) -> Any:
    """Emit `dsr.request.verified` for one request now; returns the Prefect event (or None)."""
    from prefect.events import emit_event

    state = service.state(request_id)
    return emit_event(event=VERIFIED_EVENT, resource=resource(request_id),
                      payload={"type": str(state.type), "regime": str(state.regime)})


def install(service: DsrService) -> None:
    """Mirror every verification recorded through `service` as a Prefect event (idempotent)."""
    def on_change(event_type: str, request_id: str) -> None:
        if event_type != EventType.VERIFIED:
            return
        try:
            if not _api_configured():
                log.debug("no Prefect API configured: request %s verified without an event", request_id)
                return
            emit_verified(service, request_id)
        except Exception as exc:  # noqa: BLE001 - the verification is recorded; the event is a courtesy
            log.warning("could not emit %s for request %s (%s); run it with `dsr run %s`",
                        VERIFIED_EVENT, request_id, type(exc).__name__, request_id)

    service.bus.subscribe(on_change, key=SUBSCRIPTION_KEY)


def emit_backlog(service: DsrService) -> list[str]:
    """Re-announce every request waiting to run (`DsrService.waiting_to_run`: verified, or an
    opt-out that runs unverified) that was never started (its event was lost, or it was verified
    while nothing listened, e.g. `dsr verify` while `dsr serve` was down).

    Called by `dsr serve` once its deployments exist. A request that already has a queued run
    may get a second one; process-request is idempotent, so that costs a run, not a step.
    """
    emitted: list[str] = []
    for row in service.waiting_to_run():
        try:
            emit_verified(service, row.request_id)
            emitted.append(row.request_id)
        except Exception as exc:  # noqa: BLE001 - one bad request must not hide the others
            log.warning("could not emit %s for request %s (%s)", VERIFIED_EVENT, row.request_id,
                        type(exc).__name__)
    return emitted
