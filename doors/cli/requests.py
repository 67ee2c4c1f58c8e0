"""Requests through their life: submit, verify, extend, pause and resume the clock, acknowledge,
cancel, show and list them; the legal due date."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from doors.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    AsJson,
    RequestId,
    app,
    fail,
    open_service,
    out,
    print_json,
    record_fields,
)
from doors.cli.running import systems_table
from dsr.deadlines import DeadlineError, ExtensionNotAllowed, Regime, due_date
from dsr.models import RequestType, parse_new_request
from dsr.service import PAUSES

#: What a paused clock waits for (choices that validate and complete, like --type).
WaitFor = StrEnum("WaitFor", {name: name for name in PAUSES})  # type: ignore[misc]



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
    as_json: AsJson = False,
) -> None:
    """Record a new request; prints its id alone on the first line."""
    from dsr.rights import parse_set_options

    with open_service() as service:
        new = parse_new_request(type=type.value, email=email, regime=regime.value, country=country,
                                received=received or datetime.now(UTC), channel=channel,
                                changes=parse_set_options(set_field))
        duplicate = service.open_duplicate(new.email, new.type)
        if duplicate is not None:  # the public intake links such a request and cancels it; here it is refused
            fail(EXIT_REFUSED, f"email: this subject already has an open {new.type.value} request ({duplicate}); "
                                f"see dsr status {duplicate}")
        submitted = service.submit(new)
        state = submitted.state
        if as_json:
            print_json({**state.to_view(), "created": submitted.created})
            return
        out.print(state.request_id)
        out.print(f"[dim]{state.type} under {state.regime}, due {state.due}; "
                  f"next: dsr verify {state.request_id} --method M --note TEXT[/dim]")


@app.command()
def verify(
    request_id: RequestId,
    method: Annotated[str, typer.Option(help="How identity was verified: email-code, account-login, id-document...")],
    note: Annotated[str, typer.Option(help="What was matched (kept as evidence; no personal data, please).")],
) -> None:
    """Record that the privacy office verified the requester's identity."""
    with open_service() as service:
        state = service.verify(request_id, method=method, note=note)
        out.print(f"{state.request_id} verified ({method}); next: dsr run {state.request_id}")


@app.command()
def extend(
    request_id: RequestId,
    reason: Annotated[str, typer.Option(help="Why more time is needed (told to the subject).")],
) -> None:
    """Extend the deadline where the regime allows it."""
    with open_service() as service:
        try:
            state = service.extend(request_id, reason=reason)
        except ExtensionNotAllowed as exc:  # a second one, too late, or none in the regime: refused, exit 3
            fail(EXIT_REFUSED, str(exc))
        out.print(f"{state.request_id} extended; now due {state.due}")


@app.command()
def pause(
    request_id: RequestId,
    wait_for: Annotated[WaitFor, typer.Option("--for", help="What the subject must send.")],
    reason: Annotated[str, typer.Option(help="What is needed and why (kept as evidence).")],
) -> None:
    """Stop the clock while waiting for the subject, where the regime allows it."""
    with open_service() as service:
        state = service.pause(request_id, wait_for=wait_for.value, reason=reason)
        out.print(f"{state.request_id} waiting for {wait_for.value}; the clock is paused")


@app.command()
def resume(
    request_id: RequestId,
    wait_for: Annotated[WaitFor, typer.Option("--for", help="What arrived.")],
) -> None:
    """Restart the clock: what it waited for has arrived."""
    with open_service() as service:
        state = service.resume(request_id, wait_for=wait_for.value)
        out.print(f"{state.request_id} resumed; now due {state.due}")


@app.command()
def acknowledge(
    request_id: RequestId,
    note: Annotated[str, typer.Option(help="How receipt was acknowledged.")] = "acknowledgement sent to the subject",
) -> None:
    """Record that receipt was acknowledged to the subject (CCPA: within 10 business days)."""
    with open_service() as service:
        state = service.acknowledge(request_id, note=note)
        out.print(f"{state.request_id} acknowledged")


@app.command()
def cancel(
    request_id: RequestId,
    reason: Annotated[str, typer.Option(help="Why (kept as evidence).")] = "cancelled by the privacy office",
) -> None:
    """Cancel an open request."""
    with open_service() as service:
        state = service.cancel(request_id, reason=reason)
        out.print(f"{state.request_id} {state.status.value}")


@app.command()
def status(
    request_id: RequestId,
    as_json: AsJson = False,
    show_subject: Annotated[bool, typer.Option(
        "--subject", help="Also show the subject's address, checked against the ledger (for the officer doing a "
                          "manual task; shown on this terminal only, never logged).")] = False,
) -> None:
    """Show a request: status, deadline, per-system results."""
    with open_service() as service:
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
            print_json(view)
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
            out.print(systems_table(list(view["systems"].values())))
        for sealed in state.bundles:
            out.print(f"evidence v{sealed['version']}: {service.settings.bundles_path / state.request_id / sealed['file']}")


@app.command("list")
def list_requests(
    open_only: Annotated[bool, typer.Option("--open", help="Only requests not yet closed.")] = False,
    as_json: AsJson = False,
) -> None:
    """List requests, oldest first."""
    with open_service() as service:
        rows = service.list(open_only=open_only)
        if as_json:
            print_json([record_fields(row) for row in rows])
            return
        table = Table()
        table.add_column("id", no_wrap=True)  # whole: it is what one copies into the next command
        for name in ("type", "regime", "status", "received", "due"):
            table.add_column(name)
        for row in rows:
            table.add_row(row.request_id, row.type, row.regime, row.status, row.received_at[:10],
                          row.due or "—")
        out.print(table if rows else "no requests")


@app.command()
def deadline(
    regime: Annotated[Regime, typer.Argument(metavar="REGIME", help="The law the request is handled under.",
                                             case_sensitive=False)],
    received: Annotated[str, typer.Argument(help="Date (or ISO timestamp) the request was received.")],
    country: Annotated[str | None, typer.Option(help="Member state for gdpr (default NL).")] = None,
    extended: Annotated[bool, typer.Option("--extended", help="With the regime's extension.")] = False,
    as_json: AsJson = False,
) -> None:
    """Print the legal due date (YYYY-MM-DD alone on the first line)."""
    try:
        moment: Any = datetime.fromisoformat(received.strip())
        if len(received.strip()) == 10:
            moment = moment.date()
    except ValueError:
        fail(EXIT_BAD_INPUT, f"received: {received!r} is not an ISO 8601 date such as 2026-01-30")
    try:
        due = due_date(regime.value, moment, country=country.upper() if country else None, extended=extended)
    except DeadlineError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    if as_json:
        print_json({"regime": regime.value, "received": received.strip(), "country": country.upper() if country else None,
                     "extended": extended, "due": due.isoformat()})
        return
    out.print(due.isoformat())
