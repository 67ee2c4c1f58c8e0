"""What the flows tell Prefect and Prometheus about a run, and which failures Prefect retries.

- Retries: the runner records a system's failure in the ledger and reports the system as failed
  (it never raises for it). A failure worth trying again soon (the vendor down, a timeout, a 5xx or
  429 past the connector's own retries, a dropped database connection) is raised to Prefect as
  `TransientSystemFailure`, and the `system-step` task retries it (`retry_transient`); anything
  else (bad settings, a 4xx, a refusal) is final for this run.
- Names and tags: runs are named and tagged by request type and regime (`type:erasure`,
  `regime:gdpr`), never by anything of the subject.
- Artifacts: each process-request run leaves a table (per system: status, records found, what was
  done, what is left) and the sealed bundle's version and SHA-256. No personal data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from dsr import telemetry

log = logging.getLogger(__name__)

#: How many times Prefect repeats a system step that failed for a transient reason.
SYSTEM_STEP_RETRIES = 2
#: Seconds before each retry (the connectors already retried each call with backoff).
SYSTEM_STEP_RETRY_DELAYS: list[float] = [5.0, 30.0]

_TRANSIENT_NAMES = frozenset({
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutError", "ConnectionResetError",
    "ConnectionRefusedError", "BrokenPipeError", "RemoteDisconnected", "ChunkedEncodingError", "RetryError",
    "OperationalError", "InterfaceError", "DisconnectionError", "ServiceUnavailable", "SessionExpired",
})


class TransientSystemFailure(RuntimeError):
    """A system step failed for a reason that may pass (recorded in the ledger); Prefect retries the step."""


def is_transient(exc: BaseException) -> bool:
    """A failure that may pass on its own: network, timeout, a vendor's 5xx or 429, a lost connection.

    Configuration errors, refusals and a vendor's 4xx answers are not: repeating them changes nothing.
    """
    from connectors.base import ConnectorConfigError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the cause chain: a wrapped timeout counts
        seen.add(id(current))
        if isinstance(current, ConnectorConfigError):
            return False
        status = getattr(current, "status", None) or getattr(current, "status_code", None)
        if isinstance(status, int):  # a daily quota used up does not pass within a retry's wait
            return (status == 429 and getattr(current, "policy", None) != "DAILY") or status >= 500
        if isinstance(current, TimeoutError | ConnectionError):
            return True
        if any(klass.__name__ in _TRANSIENT_NAMES for klass in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def kept_factory(connect: Callable[[], Any], built: list[Any]) -> Callable[[], Any]:
    """`connect`, keeping each connector it builds, so their traffic can be counted after the step."""
    def build() -> Any:
        connector = connect()
        built.append(connector)
        return connector

    return build


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn for system steps: retry only a TransientSystemFailure."""
    try:
        state.result()
    except TransientSystemFailure:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final for this run
        return False
    return False


def record_vendor_traffic(system: str, built: Iterable[Any]) -> None:
    for connector in built:
        stats = getattr(connector, "stats", None)  # connectors without a vendor (manual) count nothing
        telemetry.record_vendor_stats(system, dict(stats) if isinstance(stats, dict) else {})


def tag_current_run(tags: Iterable[str], *, name: str | None = None) -> None:
    """Add tags to the running flow run (and rename it to `name`), in one update through the run's own
    client; nothing is sent when the run carries them already (a run `dsr serve` created so)."""
    try:
        from prefect.client.orchestration import SyncPrefectClient, get_client
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        run = context.flow_run
        current = set(run.tags or ())
        wanted = current | set(tags)
        if wanted == current and name in (None, run.name):
            return
        if isinstance(context.client, SyncPrefectClient):  # a sync flow's engine client: no new connection
            context.client.update_flow_run(run.id, name=name, tags=sorted(wanted))
        else:
            with get_client(sync_client=True) as client:
                client.update_flow_run(run.id, name=name, tags=sorted(wanted))
        run.tags = sorted(wanted)
        if name is not None:
            run.name = name
    except Exception as exc:  # noqa: BLE001 - tags help the operator find runs; never fail a run for them
        log.debug("could not tag the flow run (%s)", type(exc).__name__)


def request_labels(request_id: str) -> tuple[str, str]:
    """(type, regime) of a request, or ("unknown", "unknown") when it cannot be read (the run will say why)."""
    from flows import runtime

    try:
        state = runtime.service().state(request_id)
        return state.type, state.regime
    except Exception:  # noqa: BLE001 - a name is no place to fail; process_request refuses with the reason
        return "unknown", "unknown"


def request_run_name(kind: str, regime: str, request_id: str) -> str:
    """`erasure-gdpr-1a2b3c4d`: what the run does, under which law, and which request (its id's start)."""
    return f"{kind}-{regime}-{request_id[:8]}"


def request_run_tags(kind: str, regime: str) -> list[str]:
    """The tags a request's run carries, to find runs by type and regime."""
    return [f"type:{kind}", f"regime:{regime}"]


def timed_run_name(kind: str) -> Callable[[], str]:
    """A run name for flows about no one request: `deadline-sweep-20260107T1400Z`."""

    def name() -> str:
        from datetime import UTC, datetime

        return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%MZ}"

    return name


def publish_run_artifact(request_id: str, result: dict[str, Any]) -> None:
    """A table of the run's per-system outcome, and the sealed bundle's version and hash (no personal data)."""
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        from flows import runtime

        rows = [{"system": s["system"], "status": s["status"], "records found": s["records_found"],
                 "done": ", ".join(f"{k} {n}" for k, n in sorted(s.get("actions", {}).items()))
                 or (f"exported {s['exported']}" if s.get("exported") is not None else ""),
                 "left after erasure": "" if s.get("remaining") is None else s["remaining"],
                 "error": (s.get("error") or "").split(":", 1)[0]}  # the error's type: its text may quote a vendor
                for s in result["systems"]]
        key = f"request-{request_id.lower()}"
        create_table_artifact(rows, key=key, description=f"Request {request_id}: {result['status']}, per system")
        bundles = runtime.service().state(request_id).bundles
        sealed = bundles[-1] if bundles else None
        evidence = (f"evidence bundle v{sealed['version']} of request `{request_id}`, "
                    f"SHA-256 `{sealed['sha256']}`" if sealed else "no evidence bundle sealed in this run")
        create_markdown_artifact(f"**{result['status']}**: {evidence}", key=f"{key}-evidence",
                                 description="The sealed evidence bundle: verify with `dsr bundle verify`.")
    except Exception as exc:  # noqa: BLE001 - the ledger is the record; an artifact is a convenience
        log.warning("request %s: run artifact not published (%s)", request_id, type(exc).__name__)
