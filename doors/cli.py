"""The `dsr` command: the privacy office's door to the pipeline.

It parses and presents; every rule lives in the service layer. Exit codes: 0 done, 1 the
request did not complete (or a bundle did not verify), 2 bad input (the message names the
field), 3 refused in the request's current state.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.base import ConnectorConfigError
from dsr.config import ConfigError
from dsr.deadlines import DeadlineError, ExtensionNotAllowed, Regime, due_date
from dsr.identity import IdentityError
from dsr.ledger.events import ChainError
from dsr.ledger.store import LedgerError, SchemaOutOfDate, UnknownRequest
from dsr.models import RequestInputError, RequestType, parse_new_request
from doors.opendsr_client import app as opendsr_app
from dsr.service import PAUSES, DsrService, RequestStateError
from dsr.settings import HomeMissing, Settings

EXIT_NOT_COMPLETED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Carry out data-subject requests: submit, verify, run, and prove it.")
bundle_app = typer.Typer(no_args_is_help=True, help="Evidence bundles: verify and export.")
db_app = typer.Typer(no_args_is_help=True, help="The ledger's schema: upgrade it (a release step) and show it.")
ledger_app = typer.Typer(no_args_is_help=True, help="The ledger: verify hash chains.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens for officers and auditors.")
task_app = typer.Typer(no_args_is_help=True, help="Manual tasks: steps a person does in systems without an API.")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds: a subject's data the purge must keep.")
restriction_app = typer.Typer(no_args_is_help=True, help="Restrictions (GDPR 18): lift one.")
app.add_typer(hold_app, name="hold")
app.add_typer(restriction_app, name="restriction")
app.add_typer(task_app, name="task")
app.add_typer(bundle_app, name="bundle")
app.add_typer(ledger_app, name="ledger")
app.add_typer(token_app, name="token")
app.add_typer(opendsr_app, name="opendsr")
app.add_typer(db_app, name="db")

#: What a paused clock waits for (choices that validate and complete, like --type).
WaitFor = StrEnum("WaitFor", {name: name for name in PAUSES})  # type: ignore[misc]


class StaffRole(StrEnum):
    """Roles a token can be made for here (subject tokens are issued per request)."""

    OFFICER = "officer"
    AUDITOR = "auditor"


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"dsr-pipeline {version('dsr-pipeline')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            from dsr import __version__

            out.print(f"dsr-pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """Carry out data-subject requests: submit, verify, run, and prove it."""

# Piped output keeps whole ids and dates: 80 columns (Rich's default off a terminal) would cut them.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


# The environment prefix of each settings model whose validation errors are configuration problems.
_ENV_PREFIXES = {"Settings": "DSR_", "StorageConfig": "DSR_STORAGE_"}


def config_problem(exc: BaseException) -> str | None:
    """The message for a configuration problem (bad input, exit 2), or None for anything else.

    A setting that is missing or wrong is the operator's to fix, never an "internal error": a data map
    or policy entry, a connector's settings (the environment variables they name), a key file, or a
    DSR_* variable (named, without its value: it may be a secret).
    """
    if isinstance(exc, ConfigError | ConnectorConfigError):
        return str(exc)
    from dsr.signing import SigningKeyError  # cryptography is heavy: only when something failed

    if isinstance(exc, SigningKeyError):
        return str(exc)
    if isinstance(exc, ValidationError) and exc.title in _ENV_PREFIXES:
        first = exc.errors(include_input=False, include_url=False)[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule across fields: its message names them
            return f"{_ENV_PREFIXES[exc.title]}* settings: {message}"
        return f"{_ENV_PREFIXES[exc.title]}{'_'.join(str(p) for p in first['loc']).upper()}: {message}"
    return None


@contextmanager
def _service(*, creates_home: bool = False) -> Iterator[DsrService]:
    """Open the service and turn every known failure into a clear message and exit code.

    `creates_home`: this command may make the state directory (`dsr demo`); others refuse to
    start one in a directory nobody chose (Settings.require_home).
    """
    service: DsrService | None = None
    try:
        settings = Settings()
        if not creates_home:
            settings.require_home()
        service = DsrService(settings)
        yield service
    except (RequestInputError, IdentityError, DeadlineError, ConfigError, HomeMissing, SchemaOutOfDate) as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    except ConnectorConfigError as exc:
        where = f" (data map: {service.settings.systems_path})" if service is not None else ""
        _fail(EXIT_BAD_INPUT, f"{exc}{where}")
    except UnknownRequest as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    except RequestStateError as exc:
        _fail(EXIT_REFUSED, str(exc))
    except (LedgerError, ChainError) as exc:
        _fail(EXIT_NOT_COMPLETED, str(exc))
    except Exception as exc:
        problem = config_problem(exc)
        if problem is None:
            raise
        _fail(EXIT_BAD_INPUT, problem)
    finally:
        if service is not None:
            service.close()


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


# -- requests ------------------------------------------------------------------------------------


@app.command()
def submit(
    type: Annotated[RequestType, typer.Option("--type", help="What the subject asks for.", case_sensitive=False)],
    email: Annotated[str, typer.Option(help="The subject's e-mail address (matched exactly after trimming and lower-casing).")],
    regime: Annotated[Regime, typer.Option(help="The law the request is handled under.", case_sensitive=False)],
    country: Annotated[str | None, typer.Option(help="ISO country whose holidays count (gdpr: the member state; default NL).")] = None,
    received: Annotated[str | None, typer.Option(help="When the request arrived, ISO 8601 (default: now). A bare date means that day.")] = None,
    channel: Annotated[str, typer.Option(help="How it arrived: web-form, email, phone, post...")] = "cli",
    set_field: Annotated[list[str] | None, typer.Option(
        "--set", metavar="FIELD=VALUE",
        help="Rectification: a corrected field (first_name, last_name, email, phone, postal_address, company, "
             "title); repeat for each.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Record a new request; prints its id alone on the first line."""
    from dsr.rights import parse_set_options

    with _service() as service:
        new = parse_new_request(type=type.value, email=email, regime=regime.value, country=country,
                                received=received or datetime.now(UTC), channel=channel,
                                changes=parse_set_options(set_field))
        duplicate = service.open_duplicate(new.email, new.type)
        if duplicate is not None:  # the public intake links such a request and cancels it; here it is refused
            _fail(EXIT_REFUSED, f"email: this subject already has an open {new.type.value} request ({duplicate}); "
                                f"see dsr status {duplicate}")
        submitted = service.submit(new)
        state = submitted.state
        if as_json:
            _print_json({**state.to_view(), "created": submitted.created})
            return
        out.print(state.request_id)
        out.print(f"[dim]{state.type} under {state.regime}, due {state.due}; "
                  f"next: dsr verify {state.request_id} --method M --note TEXT[/dim]")


@app.command()
def verify(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    method: Annotated[str, typer.Option(help="How identity was verified: email-code, account-login, id-document...")],
    note: Annotated[str, typer.Option(help="What was matched (kept as evidence; no personal data, please).")],
) -> None:
    """Record that the privacy office verified the requester's identity."""
    with _service() as service:
        state = service.verify(request_id, method=method, note=note)
        out.print(f"{state.request_id} verified ({method}); next: dsr run {state.request_id}")


@app.command()
def extend(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why more time is needed (told to the subject).")],
) -> None:
    """Extend the deadline where the regime allows it."""
    with _service() as service:
        try:
            state = service.extend(request_id, reason=reason)
        except ExtensionNotAllowed as exc:  # a second one, too late, or none in the regime: refused, exit 3
            _fail(EXIT_REFUSED, str(exc))
        out.print(f"{state.request_id} extended; now due {state.due}")


@app.command()
def pause(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    wait_for: Annotated[WaitFor, typer.Option("--for", help="What the subject must send.")],
    reason: Annotated[str, typer.Option(help="What is needed and why (kept as evidence).")],
) -> None:
    """Stop the clock while waiting for the subject, where the regime allows it."""
    with _service() as service:
        state = service.pause(request_id, wait_for=wait_for.value, reason=reason)
        out.print(f"{state.request_id} waiting for {wait_for.value}; the clock is paused")


@app.command()
def resume(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    wait_for: Annotated[WaitFor, typer.Option("--for", help="What arrived.")],
) -> None:
    """Restart the clock: what it waited for has arrived."""
    with _service() as service:
        state = service.resume(request_id, wait_for=wait_for.value)
        out.print(f"{state.request_id} resumed; now due {state.due}")


@app.command()
def acknowledge(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    note: Annotated[str, typer.Option(help="How receipt was acknowledged.")] = "acknowledgement sent to the subject",
) -> None:
    """Record that receipt was acknowledged to the subject (CCPA: within 10 business days)."""
    with _service() as service:
        state = service.acknowledge(request_id, note=note)
        out.print(f"{state.request_id} acknowledged")


@app.command()
def sweep(
    at: Annotated[str | None, typer.Option(help="Evaluate as of this ISO 8601 time (default: now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Warn and escalate every open request near or past its deadline (once per threshold)."""
    with _service() as service:
        now = datetime.now(UTC)
        if at is not None:
            try:
                now = datetime.fromisoformat(at)
            except ValueError:
                _fail(EXIT_BAD_INPUT, f"at: {at!r} is not an ISO 8601 time")
            now = now if now.tzinfo else now.replace(tzinfo=UTC)
        channels = service.escalation_channels()
        report = service.sweep(now=now, channels=channels)
        if as_json:
            _print_json({"checked": report.checked, "channels": bool(channels), "delivered": report.delivered,
                         "undelivered": report.undelivered,
                         "raised": [{"request_id": r, "level": lv, "summary": s} for r, lv, s in report.raised],
                         "skipped": [{"request_id": r, "why": why} for r, why in report.skipped]})
            if report.undelivered or report.skipped:
                raise typer.Exit(EXIT_NOT_COMPLETED)
            return
        for request_id, level, summary in report.raised:
            colour = "red" if level == "escalation" else "yellow"
            out.print(f"[{colour}]{level}[/{colour}] {request_id}: {summary}")
        for request_id, why in report.skipped:
            out.print(f"[red]skipped[/red] {request_id}: {why}")
        # Without a channel an alert is only recorded: "delivered" would say someone was told.
        delivery = (f"{report.delivered} delivered, {report.undelivered} not delivered" if channels else
                    "no channel configured: recorded in the ledger only (escalation.channels in the policy)")
        out.print(f"{report.checked} open request(s) checked; {len(report.raised)} alert(s) raised; {delivery}")
        if report.undelivered or report.skipped:
            raise typer.Exit(EXIT_NOT_COMPLETED)


@app.command()
def cancel(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why (kept as evidence).")] = "cancelled by the privacy office",
) -> None:
    """Cancel an open request."""
    with _service() as service:
        state = service.cancel(request_id, reason=reason)
        out.print(f"{state.request_id} {state.status.value}")


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    show_subject: Annotated[bool, typer.Option(
        "--subject", help="Also show the subject's address, checked against the ledger (for the officer doing a "
                          "manual task; shown on this terminal only, never logged).")] = False,
) -> None:
    """Show a request: status, deadline, per-system results."""
    with _service() as service:
        state = service.state(request_id)
        view = state.to_view()
        view["systems"] = {name: s.to_view() for name, s in sorted(state.systems.items())}
        # Read through the ledger's checked identity read: a swapped identity row refuses, never shows.
        address = service.ledger.identity(request_id) if show_subject else None
        if show_subject:
            view["subject_email"] = address
            if state.type == "rectification":
                view["corrected_values"] = service.corrections(request_id)
        if as_json:
            _print_json(view)
            return
        out.print(f"[bold]{state.request_id}[/bold]  {state.type} · {state.regime}"
                  f"{' (' + state.country + ')' if state.country else ''} · [bold]{state.status.value}[/bold]")
        out.print(f"received {state.received_at} via {state.channel}; due [bold]{state.due}[/bold]"
                  f"{' (extended)' if state.deadline and state.deadline.get('extended') else ''}")
        if show_subject:
            out.print(f"subject: {address or '(address erased)'} ({state.identity_hash})")
            for name, value in sorted(view.get("corrected_values", {}).items()):
                out.print(f"  corrected {name}: {value}")
        if state.verification:
            out.print(f"verified by {state.verification['by']} ({state.verification['method']}) at {state.verification['at']}")
        if state.outcome_reason:
            out.print(f"[yellow]{state.outcome_reason}[/yellow]")
        if state.deadline and state.deadline.get("paused"):
            out.print("[yellow]clock paused: waiting for the subject[/yellow]")
        for alert in list(state.alerts.values())[-3:]:
            colour = "red" if alert["level"] == "escalation" else "yellow"
            out.print(f"[{colour}]{alert['level']}[/{colour}] {alert['at'][:16]}: {alert['summary']}"
                      f"{'' if alert['delivered'] else ' (not delivered yet)'}")
        for system, refs in sorted(state.held.items()):
            out.print(f"[yellow]legal hold {', '.join(refs)}: {system} records kept, not erased "
                      "(GDPR 17(3)(e)); releasing the hold re-opens them[/yellow]")
        if state.restriction_lifted:
            out.print("restriction lifted")
        if state.systems:
            out.print(_systems_table(list(view["systems"].values())))
        for sealed in state.bundles:
            out.print(f"evidence v{sealed['version']}: {service.settings.bundles_path / state.request_id / sealed['file']}")


@app.command("texts")
def texts(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the free texts (notes, reasons) a request's events reference: hash and whether kept."""
    with _service() as service:
        rows = service.free_text_list(request_id)
        if as_json:
            _print_json(rows)
            return
        table = Table("seq", "event", "field", "sha256", "text")
        for row in rows:
            table.add_row(str(row["seq"]), row["type"], row["field"], row["sha256"],
                          "kept" if row["kept"] else f"redacted {row['redacted_at'] or ''}".strip())
        out.print(table if rows else "no free text kept beside this chain")


@app.command()
def redact(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    text_sha256: Annotated[str, typer.Option("--text-sha256", help="The text's SHA-256 (see `dsr texts ID`).")],
    reason: Annotated[str, typer.Option(help="Why it is redacted (kept beside the chain; no personal data).")],
) -> None:
    """Redact a kept note or reason: the words are gone, the chain and sealed bundles still verify."""
    with _service() as service:
        service.redact_text(request_id, text_sha256=text_sha256, reason=reason)
        out.print(f"{request_id}: text {text_sha256.strip().lower()[:12]}… redacted")


@app.command("list")
def list_requests(
    open_only: Annotated[bool, typer.Option("--open", help="Only requests not yet closed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List requests, oldest first."""
    with _service() as service:
        rows = service.list(open_only=open_only)
        if as_json:
            _print_json([row.__dict__ if not hasattr(row, "__slots__") else
                         {k: getattr(row, k) for k in row.__slots__} for row in rows])
            return
        table = Table()
        table.add_column("id", no_wrap=True)  # whole: it is what one copies into the next command
        for name in ("type", "regime", "status", "received", "due"):
            table.add_column(name)
        for row in rows:
            table.add_row(row.request_id, row.type, row.regime, row.status, row.received_at[:10],
                          row.due or "—")
        out.print(table if rows else "no requests")


def _systems_table(rows: list[dict[str, Any]]) -> Table:
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


# -- running -------------------------------------------------------------------------------------


def _prepare_prefect(settings: Settings) -> None:
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
                _fail(EXIT_NOT_COMPLETED, str(exc))
            err.print(f"[yellow]{exc}; running it here instead[/yellow]")
    else:
        err.print("no dsr serve running on this DSR home: starting Prefect in this process first "
                  "(10-20 s; with `dsr serve` running, the run is handed to it and takes about a second)")
    _prepare_prefect(service.settings)
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
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the run's result).")] = False,
) -> None:
    """Run the process-request flow for a request now; exit 0 only when it completed."""
    with _service() as service:
        state = service.check_runnable(request_id)  # refuse before a 10 s orchestrator start
        from flows.warm import running_serve

        if running_serve(service.settings.home) is None:  # a running dsr serve connects with its own settings
            _check_connector_settings(service, state)
        result = run_with_progress(service, request_id)
        if as_json:
            _print_json(result)
            if result["status"] != "completed":
                raise typer.Exit(EXIT_NOT_COMPLETED)
            return
        _print_outcome(result)
        if result["status"] != "completed":
            _fail(EXIT_NOT_COMPLETED, f"request {request_id} is {result['status']}: {result.get('reason') or 'see dsr status'}")


def _connector_setting_problems(service: DsrService, systems: list[str]) -> list[str]:
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
    problems = _connector_setting_problems(service, todo)
    if problems:
        _fail(EXIT_BAD_INPUT, "; ".join(problems) + f" (data map: {service.settings.systems_path}); nothing was run")


def _print_outcome(result: dict[str, Any]) -> None:
    out.print(f"[bold]{result['request_id']}[/bold]: {result['status']}")
    if result["systems"]:
        out.print(_systems_table(result["systems"]))
    if result.get("bundle"):
        out.print(f"evidence bundle: {result['bundle']}")
    if result.get("package"):
        out.print(f"subject package: {result['package']}")


# -- deadlines, evidence, ledger ------------------------------------------------------------------


@app.command()
def deadline(
    regime: Annotated[Regime, typer.Argument(metavar="REGIME", help="The law the request is handled under.",
                                             case_sensitive=False)],
    received: Annotated[str, typer.Argument(help="Date (or ISO timestamp) the request was received.")],
    country: Annotated[str | None, typer.Option(help="Member state for gdpr (default NL).")] = None,
    extended: Annotated[bool, typer.Option("--extended", help="With the regime's extension.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the legal due date (YYYY-MM-DD alone on the first line)."""
    try:
        moment: Any = datetime.fromisoformat(received.strip())
        if len(received.strip()) == 10:
            moment = moment.date()
    except ValueError:
        _fail(EXIT_BAD_INPUT, f"received: {received!r} is not an ISO 8601 date such as 2026-01-30")
    try:
        due = due_date(regime.value, moment, country=country.upper() if country else None, extended=extended)
    except DeadlineError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    if as_json:
        _print_json({"regime": regime.value, "received": received.strip(), "country": country.upper() if country else None,
                     "extended": extended, "due": due.isoformat()})
        return
    out.print(due.isoformat())


@bundle_app.command("verify")
def bundle_verify(
    path: Annotated[Path, typer.Argument(help="The evidence bundle (.zip).")],
    public_key: Annotated[Path | None, typer.Option(help="PEM public key; default: this installation's signing key.")] = None,
    request: Annotated[str | None, typer.Option(help="Also check the bundle is about this request id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check a bundle offline: member hashes, manifest, hash chain and signature."""
    from dsr.bundle import verify_bundle
    from dsr.signing import load_public_key

    settings = Settings()
    key_path = public_key or Path(str(settings.signing_key_path) + ".pub")
    if not path.is_file():
        _fail(EXIT_BAD_INPUT, f"path: no file at {path}")
    if not key_path.is_file():
        _fail(EXIT_BAD_INPUT, f"public-key: no public key at {key_path}")
    report = verify_bundle(path, load_public_key(key_path))
    if request is not None:
        # An intact bundle of another request must not pass for this one (a swapped file).
        report.checks.append(("about the request asked for", report.request_id == request,
                              f"bundle is about {report.request_id}" if report.request_id != request else request))
        if report.request_id != request and report.ok:
            report.ok, report.reason = False, f"bundle is about request {report.request_id}, not {request}"
        elif report.ok:
            _compare_with_live_ledger(report, request)
    if as_json:
        _print_json({"ok": report.ok, "reason": report.reason, "request_id": report.request_id,
                     "events": report.events,
                     "checks": [{"check": what, "ok": passed, "detail": detail} for what, passed, detail in report.checks]})
        if not report.ok:
            raise typer.Exit(EXIT_NOT_COMPLETED)
        return
    for what, passed, detail in report.checks:
        mark = "[green]ok[/green]  " if passed else "[red]FAIL[/red]"
        out.print(f"{mark} {what}{': ' + detail if detail else ''}")
    if not report.ok:
        _fail(EXIT_NOT_COMPLETED, f"bundle does not verify: {report.reason}")
    out.print(f"[green]bundle intact[/green]: request {report.request_id}, {report.events} events")


def _compare_with_live_ledger(report: Any, request_id: str) -> None:
    """A bundle is a copy of the chain up to its seal: the live ledger must still hold that very
    event, and agree with its newest signed head. A bundle longer than the ledger means the
    ledger lost its tail."""
    settings = Settings()
    local = settings.ledger_url.removeprefix("sqlite:///") if settings.ledger_url.startswith("sqlite:///") else None
    if local is not None and not Path(local).is_file():  # an auditor's machine: never create a ledger here
        report.checks.append(("live ledger", True, f"not compared: no ledger at {local} (offline checks only)"))
        return
    with _service() as service:
        ledger = service.ledger
        through, expected = report.through_seq, report.last_event_hash
        try:
            live = ledger.events(request_id)
        except UnknownRequest:
            live = []
        at = next((e for e in live if e.seq == through), None)
        if not live:
            check = (False, "the live ledger holds no events of this request (deleted)")
        elif at is None:
            check = (False, f"the bundle's chain reaches seq {through}, the live ledger only seq {live[-1].seq}: "
                            "the ledger was truncated")
        elif at.hash != expected:
            check = (False, f"event seq {through} of the live ledger differs from the bundle's (rewritten)")
        else:
            check = (True, f"seq {through} and its hash match the live ledger ({live[-1].seq} events now)")
        report.checks.append(("matches the live ledger", *check))
        audit = ledger.audit(request_id)
        report.checks.append(("live ledger matches its signed head", not audit.problems,
                              "; ".join(p.what for p in audit.problems) or "chain, signed head and anchor agree"))
        if not check[0]:
            report.ok, report.reason = False, check[1]
        elif audit.problems:
            report.ok, report.reason = False, f"the live ledger does not verify: {audit.problems[0]}"


@ledger_app.command("verify")
def ledger_verify(
    request_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Verify the ledger: hash chains, signed heads and their anchor file, index rows, identities."""
    with _service() as service:
        audit = service.ledger.audit(request_id)
        if request_id and not audit.counts and not audit.problems:
            raise UnknownRequest(request_id)
        failing = {p.subject for p in audit.problems}
        if as_json:
            _print_json({"ok": not audit.problems and not audit.warnings,
                         "verified": {rid: n for rid, n in audit.counts.items() if rid not in failing},
                         "problems": [str(p) for p in audit.problems], "warnings": [str(w) for w in audit.warnings]})
            if audit.problems or audit.warnings:
                raise typer.Exit(EXIT_NOT_COMPLETED)
            return
        for rid, n in audit.counts.items():
            if rid not in failing:
                out.print(f"ok  {rid}: {n} events")
        for problem in audit.problems:
            out.print(f"[red]FAIL[/red] {problem}")
        for warning in audit.warnings:
            out.print(f"[yellow]warning[/yellow] {warning}")
        verified = len([rid for rid in audit.counts if rid not in failing])
        out.print(f"{verified} chain(s) verified")
        if audit.problems or audit.warnings:
            _fail(EXIT_NOT_COMPLETED, f"the ledger does not verify: {len(audit.problems)} problem(s), "
                  f"{len(audit.warnings)} warning(s) (each named above)")


@ledger_app.command("adopt")
def ledger_adopt() -> None:
    """Sign the current head of every chain written before signed heads existed (run once after
    upgrading: it vouches for what the ledger holds now). Chains with other problems are left alone."""
    with _service() as service:
        adopted, problems = service.ledger.adopt_unsigned()
        for problem in problems:
            out.print(f"[red]FAIL[/red] {problem}")
        out.print(f"signed the current head of {len(adopted)} chain(s)")
        if problems:
            _fail(EXIT_NOT_COMPLETED, f"{len(problems)} problem(s) left as they are (each named above); "
                  "nothing was signed over them")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    prefect_port: Annotated[int | None, typer.Option(help="Port of the embedded Prefect server (default: a free one).")] = None,
    api_only: Annotated[bool, typer.Option("--api-only", help="Only the HTTP API; flows run on the Prefect server at PREFECT_API_URL.")] = False,
) -> None:
    """Serve the HTTP API (docs at /docs), the officer console (/console), the privacy center (/privacy),
    the auditor page (/auditor) and the flows: a request runs when verified, the deadline sweep hourly,
    the retention purge nightly (embedded Prefect server)."""
    with _service() as service:
        _serve_app(service, host=host, port=port, prefect_port=prefect_port, api_only=api_only)


def _serve_app(service: DsrService, *, host: str, port: int, prefect_port: int | None = None, api_only: bool = False,
               extra_tokens: tuple[Any, ...] = (), intake_smtp: Any = None, banner: Any = None) -> None:
    """`dsr serve` (and `dsr demo --serve`): the API and its pages, with the embedded Prefect server
    unless `api_only`. `extra_tokens` are access entries added in memory (the demo's officer token);
    `banner()` prints once everything listens."""
    import uvicorn

    from dsr.access import AccessConfig, load_access
    from doors.api.app import create_app

    loaded = load_access(service.settings.access_path)
    access = AccessConfig(tokens=(*loaded.tokens, *extra_tokens)) if extra_tokens else loaded
    store = service.evidence_store()
    store.ensure_ready()
    if not access.tokens:
        err.print(f"[yellow]no officer or auditor tokens in {service.settings.access_path}: "
                  "create one with `dsr token create`[/yellow]")
    # The API and intake work without them, but every run would record these systems as failed.
    for problem in _connector_setting_problems(service, sorted(service.data_map.enabled())):
        err.print(f"[yellow]warning:[/yellow] {problem} (data map: {service.settings.systems_path})")
    from doors.api.limits import uvicorn_proxy_options

    try:  # forwarded headers are believed from the configured proxies only (DSR_TRUSTED_PROXIES)
        proxies = uvicorn_proxy_options(service.settings.trusted_proxies)
    except ValueError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    api = uvicorn.Server(uvicorn.Config(create_app(service, access, store, intake_smtp=intake_smtp), host=host,
                                        port=port, log_level="warning", **proxies))
    if api_only:
        from flows.events import install

        install(service)  # with PREFECT_API_URL set, verifications reach the shared server's trigger
        err.print(f"serving on http://{host}:{port} (API docs at /docs, console at /console, privacy center "
                  "at /privacy, auditor page at /auditor)")
        if banner is not None:
            banner()
        api.run()
        return
    _prepare_prefect(service.settings)
    from flows.serve import EmbeddedServeError, PrefectServer, serve_embedded

    def ready(prefect: PrefectServer) -> None:
        err.print(f"serving on http://{host}:{port} (API docs at /docs, console at /console, privacy center "
                  f"at /privacy, auditor page at /auditor); flows on Prefect at "
                  f"{prefect.api_url.removesuffix('/api')} (process-request on verification, deadline-sweep "
                  "hourly, retention-purge nightly)")
        if banner is not None:
            banner()

    err.print("starting the embedded Prefect server (first start 10-20 s)...")
    try:
        serve_embedded(prefect_port=prefect_port, api=api.run,
                       api_stop=lambda: setattr(api, "should_exit", True), service=service, on_ready=ready)
    except EmbeddedServeError as exc:
        _fail(EXIT_NOT_COMPLETED, str(exc))


@app.command()
def consume(
    queue_url: Annotated[str, typer.Option(help="The SQS queue requests arrive on (OpenDSR bodies).")],
    dead_letter_url: Annotated[str, typer.Option(help="Where unusable messages go, with the reason.")],
    endpoint_url: Annotated[str | None, typer.Option(help="Another SQS endpoint (a local emulator).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain what is there, then stop.")] = False,
) -> None:
    """Take requests from Amazon SQS into the intake (at least once; idempotent on the request id)."""
    import boto3

    from dsr.adapters.queue import QueueConsumer

    with _service() as service:
        consumer = QueueConsumer(service.intake(), boto3.client("sqs", endpoint_url=endpoint_url), queue_url, dead_letter_url)
        while True:
            report = consumer.drain(wait_seconds=0 if once else 20)
            if report.received:
                out.print(f"{report.received} message(s): {report.accepted} new, {report.repeated} repeated, "
                          f"{report.dead_lettered} dead-lettered, {report.left_for_retry} left for retry")
            if once:
                break


@bundle_app.command("export")
def bundle_export(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the bundle.")],
    version: Annotated[int | None, typer.Option(help="Bundle version (default: the newest).")] = None,
) -> None:
    """Write a request's sealed evidence bundle to a file (recorded as a download)."""
    with _service() as service:
        state = service.state(request_id)
        versions = [b["version"] for b in state.bundles]
        if not versions:
            _fail(EXIT_REFUSED, f"request {request_id} has no sealed evidence bundle yet")
        chosen = version or max(versions)
        if chosen not in versions:
            _fail(EXIT_BAD_INPUT, f"version: request {request_id} has versions {versions}")
        sealed = next(b for b in state.bundles if b["version"] == chosen)
        data = service.evidence_store().get_bundle(request_id, chosen, expected_sha256=sealed["sha256"])
        output.write_bytes(data)
        service.record_download(request_id, "bundle", by=service.settings.actor, role="cli", version=chosen)
        out.print(f"wrote evidence v{chosen} of {request_id} to {output} ({len(data)} bytes)")


@task_app.command("list")
def task_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only tasks not yet done.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Manual tasks of open requests: who, what, by when."""
    with _service() as service:
        rows = [{"request_id": t.request_id, "system": t.system, **t.task} for t in service.manual_tasks()
                if not (open_only and t.task.get("done"))]
        if as_json:
            _print_json(rows)
            return
        table = Table(show_lines=True)
        table.add_column("request", no_wrap=True)
        for name in ("system", "step", "assignee", "due", "done"):
            table.add_column(name)
        table.add_column("what to do", ratio=1)  # the instructions: the point of the list for the person doing it
        for r in rows:
            table.add_row(r["request_id"], r["system"], str(r.get("step")), str(r.get("assignee")), str(r.get("due")),
                          "yes" if r.get("done") else "[yellow]no[/yellow]",
                          rich_escape(str(r.get("instructions") or "—")))
        out.print(table if rows else "no manual tasks")


@task_app.command("done")
def task_done(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    system: Annotated[str, typer.Argument(help="The system whose task is done.")],
    note: Annotated[str, typer.Option(help="What was done (kept as evidence; no personal data).")],
    attach: Annotated[list[Path] | None, typer.Option(help="A file to keep with the task (an export, a receipt).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume the request's run now.")] = True,
) -> None:
    """Record a manual task as done (with evidence) and resume the request."""
    with _service() as service:
        service.task_done(request_id, system, note=note, attachments=attach or [])
        out.print(f"{request_id}: manual task in {system} recorded as done")
        if resume:
            result = run_with_progress(service, request_id)
            _print_outcome(result)
            if result["status"] not in ("completed", "awaiting_manual_action"):
                _fail(EXIT_NOT_COMPLETED, f"request {request_id} is {result['status']}: {result.get('reason')}")


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; change nothing.")] = False,
    system: Annotated[list[str] | None, typer.Option(help="Only this system (repeatable).")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Only records governed by this category.")] = None,
    approve: Annotated[str | None, typer.Option(help="Go ahead with a run the blast-radius guard stopped.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the run report).")] = False,
) -> None:
    """The retention purge: expired records of every system, minus legal holds and open requests."""
    with _service() as service:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err,
                      transient=True) as bars:
            tasks: dict[tuple[str, str], Any] = {}

            def progress(sys_name: str, cat: str, done: int, expected: int) -> None:
                key = (sys_name, cat)
                if key not in tasks:
                    tasks[key] = bars.add_task(f"{sys_name} · {cat}", total=expected)
                bars.update(tasks[key], completed=done, total=max(expected, done))

            report = service.purge(
                dry_run=dry_run, systems=system, categories=category, approve=approve, progress=progress)
        if as_json:
            _print_json({"run_id": report.run_id, "dry_run": report.dry_run, "status": report.status,
                         "purged": report.purged, "report": str(report.report_path) if report.report_path else None,
                         "tallies": [t.to_view() for t in report.tallies], "guard": report.guard})
            if report.status == "needs_approval":
                raise typer.Exit(EXIT_REFUSED)
            if report.status != "completed":
                raise typer.Exit(EXIT_NOT_COMPLETED)
            return
        table = Table("system", "category", "cutoff", "expired", "held back", "purged", "failed", "api calls")
        for t in report.tallies:
            if t.candidates or t.purged or t.failed:
                table.add_row(t.system, t.category, t.cutoff, str(t.candidates),
                              f"{t.held_back}{' (' + ', '.join(sorted(t.hold_refs)) + ')' if t.hold_refs else ''}",
                              "—" if report.dry_run else str(t.purged), str(t.failed), str(t.api_calls))
        out.print(f"[bold]{report.run_id}[/bold]{' (dry run: nothing changed)' if report.dry_run else ''}")
        out.print(table)
        out.print(f"signed run report: {report.report_path}")
        if report.status == "needs_approval":
            for trip in report.guard:
                share = f"{trip['share']:.1%} of {trip['records']}" if trip.get("share") is not None else "—"
                out.print(f"[red]guard:[/red] {trip['system']} would lose {trip['would_purge']} records ({share}); "
                          f"limits {trip['max_share']:.0%} / {trip['max_count']}")
            _fail(EXIT_REFUSED, f"nothing was deleted; to go ahead: dsr purge --approve {report.run_id}")
        if report.status != "completed":
            _fail(EXIT_NOT_COMPLETED, "some records could not be purged; see the run report")


@hold_app.command("add")
def hold_add(
    email: Annotated[str, typer.Option(help="The subject whose data must be kept.")],
    ref: Annotated[str, typer.Option(help="Your reference (case or complaint number).")],
    reason: Annotated[str, typer.Option(help="Why (kept as evidence; no personal data).")],
) -> None:
    """Place a legal hold: the purge keeps this subject's data until it is released."""
    with _service() as service:
        hold = service.place_hold(email=email, ref=ref, reason=reason)
        out.print(f"hold {hold.ref} placed on {hold.identity_hash}")


@hold_app.command("release")
def hold_release(
    ref: Annotated[str, typer.Argument(help="The hold's reference.")],
    reason: Annotated[str, typer.Option(help="Why the hold ends.")],
) -> None:
    """Release a legal hold."""
    with _service() as service:
        service.release_hold(ref=ref, reason=reason)
        out.print(f"hold {ref} released")
        for request_id in service.reopened_by(ref):
            out.print(f"{request_id}: what the hold kept from erasure is open again; next: dsr run {request_id}")


@restriction_app.command("lift")
def restriction_lift(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why the restriction ends (kept as evidence; no personal data).")],
) -> None:
    """Lift a restriction: marketing put back as it was before it, the purge no longer holds the data back."""
    with _service() as service:
        result = service.lift_restriction(request_id, reason=reason)
        for system in result.restored:
            out.print(f"{system}: marketing settings restored")
        for system in result.tasks:
            out.print(f"{system}: a person restores them (manual task open; dsr task done {request_id} {system})")
        if result.failed:
            for system, error in sorted(result.failed.items()):
                out.print(f"[red]{system}: {rich_escape(error)}[/red]")
            _fail(EXIT_NOT_COMPLETED, f"request {request_id}: restriction not lifted; run it again")
        out.print(f"{request_id}: restriction lifted")


@hold_app.command("list")
def hold_list(
    all_holds: Annotated[bool, typer.Option("--all", help="Released holds too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Legal holds in force (or all of them)."""
    with _service() as service:
        found = service.holds(active_only=not all_holds)
        if as_json:
            _print_json([h.__dict__ if hasattr(h, "__dict__") else
                         {k: getattr(h, k) for k in h.__slots__} for h in found])
            return
        table = Table("ref", "subject", "since", "by", "reason", "released")
        for h in found:
            table.add_row(h.ref, h.identity_hash, h.since[:10], h.by, h.reason, "yes" if h.released else "no")
        out.print(table if found else "no holds")


def _add_token_entry(path: Path, entry: Any) -> None:
    """Add a token entry to the access file: its comments kept, the result checked before it replaces
    the file (a ConfigError names what is wrong with the file as it is)."""
    import yaml

    from dsr.access import load_access

    current = load_access(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#")) or (
        "# API tokens for officers and auditors, stored as SHA-256 hashes only (`dsr token create --write`).\n")
    tokens = [t.model_dump(mode="json") for t in (*current.tokens, entry)]
    staged = path.with_name(f".{path.name}.new")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(header + yaml.safe_dump({"tokens": tokens}, sort_keys=False), encoding="utf-8")
    try:
        load_access(staged)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


@token_app.command("create")
def token_create(
    role: Annotated[StaffRole, typer.Option(help="Who may use it (subject tokens are issued per request).",
                                            case_sensitive=False)],
    name: Annotated[str, typer.Option(help="Who holds it (shown in the ledger on every download).")],
    write: Annotated[bool, typer.Option("--write", help="Add the entry to the access file (config/access.yaml) "
                                        "instead of printing it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output: the token (shown once) and "
                                          "its access-file entry.")] = False,
) -> None:
    """Make a new API token: prints it once, and the entry to add to config/access.yaml (or adds it: --write)."""
    from dsr.access import Role, TokenEntry, new_token, token_hash

    token = new_token()
    try:
        entry = TokenEntry(name=name, role=Role(role.value), sha256=token_hash(token))
    except ValueError:
        _fail(EXIT_BAD_INPUT, "name: letters, digits, spaces and . _ @ - only")
    if as_json and not write:
        _print_json({"token": token, "entry": entry.model_dump(mode="json"), "written_to": None})
        return
    if write:
        path = Settings().access_path
        try:
            _add_token_entry(path, entry)
        except ConfigError as exc:
            _fail(EXIT_BAD_INPUT, str(exc))
        except OSError as exc:
            _fail(EXIT_BAD_INPUT, f"access file: cannot write {path} ({exc.strerror or type(exc).__name__})")
        if as_json:
            _print_json({"token": token, "entry": entry.model_dump(mode="json"), "written_to": str(path)})
            return
        out.print(token)
        err.print(f"[dim]shown once; {entry.role.value} {entry.name!r} added to {path} (a running `dsr serve` "
                  "reads it at start: restart it)[/dim]")
        return
    out.print(token)
    err.print("[dim]shown once; add this entry under `tokens:` in config/access.yaml (or use --write):[/dim]")
    err.print(f'  - {{name: "{entry.name}", role: {entry.role.value}, sha256: {entry.sha256}}}')


@app.command()
def demo(
    serve_after: Annotated[bool, typer.Option("--serve", help="Afterwards keep the sandboxes and `dsr serve` running: "
                                              "the officer console and the privacy center, with a ready officer "
                                              "token (Ctrl-C stops).")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8080,
) -> None:
    """Seed the demo CRM, then submit, verify and run an erasure and an access request; ends with a
    retention purge that deletes the demo systems' expired records."""
    from dsr.settings import packaged_default
    from doors.demo import run_demo, serve_after_demo

    demo_map = Path("config/demo/systems.yaml")  # a checkout's; else the one shipped in the package
    os.environ.setdefault("DSR_SYSTEMS_FILE", str(demo_map if demo_map.is_file() else packaged_default("demo/systems.yaml")))
    with _service(creates_home=True) as service:
        keep_serving = (lambda: serve_after_demo(service, out, _serve_app, port=port)) if serve_after else None
        code = run_demo(service, out, run_with_progress, serve=keep_serving)
    raise typer.Exit(code)


_STARTER_ACCESS = ("# API tokens for officers and auditors, stored as SHA-256 hashes only (`dsr token create --write`).\n"
                   "tokens: []\n")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to make the installation (created if needed).")],
) -> None:
    """Make a new installation in DIR: a starter data map and policy under DIR/config/ (edit them), an
    empty token file, and DIR/var/ for the state. Then `cd DIR` and use `dsr` there (or set DSR_HOME)."""
    from dsr.settings import packaged_default

    config_dir, home = directory / "config", directory / "var"
    starters = {config_dir / "systems.yaml": packaged_default("systems.yaml").read_text(encoding="utf-8"),
                config_dir / "policy.yaml": packaged_default("policy.yaml").read_text(encoding="utf-8"),
                config_dir / "access.yaml": _STARTER_ACCESS}
    present = [str(path) for path in starters if path.exists()]
    if present:
        _fail(EXIT_REFUSED, f"{', '.join(present)} already there; nothing was written (init never overwrites)")
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        for path, text in starters.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(EXIT_BAD_INPUT, f"DIR: cannot write under {directory} ({exc.strerror or type(exc).__name__})")
    out.print(f"made {directory}: data map and policy in {config_dir} (edit them), state in {home}")
    out.print(f"[dim]next: cd {directory} && dsr token create --role officer --name you --write[/dim]")


def _schema_settings() -> Settings:
    settings = Settings()
    if settings.database_url is None:  # the SQLite ledger lives under the home
        settings.require_home()
    return settings


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the ledger's schema to this release's (once per release, before the new processes start)."""
    from dsr.ledger.store import create_ledger_engine, migrate, schema_revisions

    try:
        engine = create_ledger_engine(_schema_settings().ledger_url)
    except HomeMissing as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    try:
        before, head = schema_revisions(engine)
        migrate(engine)
    except Exception as exc:  # an unreachable database is the operator's to fix: say which, not a traceback
        _fail(EXIT_NOT_COMPLETED, f"DSR_DATABASE_URL: the ledger's schema could not be upgraded ({type(exc).__name__})")
    finally:
        engine.dispose()
    out.print(f"ledger schema at {head}" + ("" if before == head else f" (was {before or 'empty'})"))


@db_app.command("status")
def db_status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show the ledger's schema revision and this release's; exit 1 when an upgrade is due."""
    from dsr.ledger.store import create_ledger_engine, schema_revisions

    try:
        engine = create_ledger_engine(_schema_settings().ledger_url, for_writes=False)
    except HomeMissing as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    try:
        current, head = schema_revisions(engine)
    except Exception as exc:
        _fail(EXIT_NOT_COMPLETED, f"DSR_DATABASE_URL: the ledger could not be read ({type(exc).__name__})")
    finally:
        engine.dispose()
    if as_json:
        _print_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        out.print(f"ledger schema: {current or 'none (empty database)'}; this release: {head}; "
                  + ("up to date" if current == head else "upgrade due: dsr db upgrade"))
    if current != head:
        raise typer.Exit(EXIT_NOT_COMPLETED)


def main() -> None:
    from dsr.logging_setup import configure_logging

    try:
        configure_logging(os.environ.get("DSR_LOG_FORMAT", "text"), os.environ.get("DSR_LOG_LEVEL", "WARNING"))
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_BAD_INPUT)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; a re-run resumes where this one stopped")
        sys.exit(130)
    except Exception as exc:  # last resort: a message, not a stack trace (DSR_DEBUG=1 shows it)
        problem = config_problem(exc)
        if problem is not None:  # raised outside `_service` (a command that reads settings itself)
            err.print(f"[red]error:[/red] {problem}")
            sys.exit(EXIT_BAD_INPUT)
        if os.environ.get("DSR_DEBUG"):
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {str(exc)[:500]}\n"
                  "run again with DSR_DEBUG=1 for the traceback, and please report it")
        sys.exit(EXIT_NOT_COMPLETED)


