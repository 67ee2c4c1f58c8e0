"""Running a request's process-request flow: on a running `dsr serve` or in this process, with
progress, after its systems' connector settings are checked."""

from __future__ import annotations

import logging
import os
import threading
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.base import ConnectorConfigError
from doors.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_COMPLETED,
    RequestId,
    app,
    err,
    fail,
    open_service,
    out,
    print_json,
)
from dsr.ledger.store import LedgerError
from dsr.models import RequestType
from dsr.service import DsrService, RequestStateError
from dsr.settings import Settings


def prepare_prefect(settings: Settings) -> None:
    """Embedded defaults for Prefect: its state under our home, no telemetry, quiet logs."""
    os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


class _RefusalsWithoutTraceback(logging.Filter):
    """Prefect logs the exception that ends a run with its traceback. For a refusal this command
    explains itself (a request's state, an edited ledger) that is noise on the officer's terminal,
    so the record keeps its one line and loses the traceback; any other error keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, (LedgerError, RequestStateError)):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_refusals() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RefusalsWithoutTraceback) for f in logger.filters):
            logger.addFilter(_RefusalsWithoutTraceback())


def run_with_progress(service: DsrService, request_id: str) -> dict[str, Any]:
    """Run the process-request flow while showing each system's progress: on the `dsr serve` running
    on this DSR home if there is one (about a second), else in this process (Prefect starts first)."""
    from flows.warm import HandoffError, outcome_from_ledger, run_on_serve, running_serve

    api_url = running_serve(service.settings.home)
    if api_url is not None:
        try:
            with err.status(f"process-request {request_id[:8]}: handed to the running dsr serve"):
                final = run_on_serve(api_url, request_id)
            if final != "COMPLETED":  # the flow run itself failed (a refusal, a lost lease): say where to look
                err.print(f"[yellow]the run on dsr serve ended {final.lower()}; its log is in the Prefect UI at "
                          f"{api_url.removesuffix('/api')}[/yellow]")
            return outcome_from_ledger(service, request_id)
        except HandoffError as exc:
            if exc.taken:
                fail(EXIT_NOT_COMPLETED, str(exc))
            err.print(f"[yellow]{exc}; running it here instead[/yellow]")
    else:
        err.print("no dsr serve running on this DSR home: starting Prefect in this process first "
                  "(10-20 s; with `dsr serve` running, the run is handed to it and takes about a second)")
    prepare_prefect(service.settings)
    from flows import runtime  # Prefect is heavy to import: only for commands that run flows
    from flows.lifeline import install_ephemeral_server
    from flows.request import process_request

    install_ephemeral_server()  # a killed `dsr run` must not leave Prefect's temporary server running

    _quiet_refusals()
    runtime.use_service(service)
    result: dict[str, Any] = {}
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.update(process_request(request_id))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=target, name=f"process-request-{request_id}", daemon=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} systems"),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        bar = progress.add_task(f"process-request {request_id[:8]}: starting Prefect", total=None)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
            state = service.state(request_id)
            if state.plan:
                done = sum(1 for s in state.systems.values() if s.status.value in ("completed", "failed"))
                progress.update(bar, total=len(state.plan), completed=done,
                                description=f"process-request {request_id[:8]}: {state.status.value}")
    if failure:
        raise failure[0]
    return result


@app.command()
def run(
    request_id: RequestId,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the run's result).")] = False,
) -> None:
    """Run the process-request flow for a request now; exit 0 only when it completed."""
    with open_service() as service:
        state = service.check_runnable(request_id)  # refuse before a 10 s orchestrator start
        from flows.warm import running_serve

        if running_serve(service.settings.home) is None:  # a running dsr serve connects with its own settings
            _check_connector_settings(service, state)
        result = run_with_progress(service, request_id)
        if as_json:
            print_json(result)
            if result["status"] != "completed":
                raise typer.Exit(EXIT_NOT_COMPLETED)
            return
        print_outcome(result)
        if result["status"] != "completed":
            fail(EXIT_NOT_COMPLETED, f"request {request_id} is {result['status']}: {result.get('reason') or 'see dsr status'}")


def connector_setting_problems(service: DsrService, systems: list[str]) -> list[str]:
    """What is wrong with these systems' connector settings (each message names the setting).

    Only settings are checked: a vendor or database that cannot be reached is the run's to record.
    """
    problems: list[str] = []
    for name in systems:
        try:
            connector = service.connector(name)
        except ConnectorConfigError as exc:
            problems.append(str(exc))
            continue
        except Exception:  # noqa: BLE001 - not a settings problem (a database that is down)
            continue
        close = getattr(connector, "close", None)
        if callable(close):
            close()
    return problems


def _check_connector_settings(service: DsrService, state: Any) -> None:
    """Refuse (exit 2, nothing recorded) a run whose systems' settings are wrong or missing.

    Run unchecked, each such system would be recorded as failed and the request sealed as partially
    completed, for want of a setting the operator can fix in a minute.
    """
    from dsr.state import SystemStatus

    if state.closed:
        return
    todo = [name for name, config in sorted(service.data_map.enabled().items())
            if RequestType(state.type) in config.request_types
            and (state.systems.get(name) is None or state.systems[name].status != SystemStatus.COMPLETED)]
    problems = connector_setting_problems(service, todo)
    if problems:
        fail(EXIT_BAD_INPUT, "; ".join(problems) + f" (data map: {service.settings.systems_path}); nothing was run")


def systems_table(rows: list[dict[str, Any]]) -> Table:
    """Per-system results; rows are `SystemResult`s as dicts (run) or state views (status)."""
    table = Table("system", "status", "found", "done", "left on re-query", "note")
    for row in rows:
        actions = ", ".join(f"{k} {n}" for k, n in sorted(row.get("actions", {}).items()))
        exported = row.get("exported", row.get("records_exported"))
        done = actions or (f"exported {exported}" if exported is not None else "—")
        remaining = row.get("remaining")
        if remaining is None and row.get("post_erasure_requery"):
            left = row["post_erasure_requery"].get("remaining")
            remaining = None if left is None else len(left)
        colour = {"completed": "green", "failed": "red"}.get(row["status"], "yellow")
        table.add_row(row["system"], f"[{colour}]{row['status']}[/{colour}]",
                      str(row.get("records_found", 0)), done, "—" if remaining is None else str(remaining),
                      row.get("error") or "")
    return table


def print_outcome(result: dict[str, Any]) -> None:
    out.print(f"[bold]{result['request_id']}[/bold]: {result['status']}")
    if result["systems"]:
        out.print(systems_table(result["systems"]))
    if result.get("bundle"):
        out.print(f"evidence bundle: {result['bundle']}")
    if result.get("package"):
        out.print(f"subject package: {result['package']}")
