"""Legal holds and lifting a restriction."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from doors.cli.common import (
    EXIT_NOT_COMPLETED,
    AsJson,
    RequestId,
    fail,
    hold_app,
    open_service,
    out,
    print_json,
    record_fields,
    restriction_app,
)


@hold_app.command("add")
def hold_add(
    email: Annotated[str, typer.Option(help="The subject whose data must be kept.")],
    ref: Annotated[str, typer.Option(help="Your reference (case or complaint number).")],
    reason: Annotated[str, typer.Option(help="Why (kept as evidence; no personal data).")],
) -> None:
    """Place a legal hold: the purge keeps this subject's data until it is released."""
    with open_service() as service:
        hold = service.place_hold(email=email, ref=ref, reason=reason)
        out.print(f"hold {hold.ref} placed on {hold.identity_hash}")


@hold_app.command("release")
def hold_release(
    ref: Annotated[str, typer.Argument(help="The hold's reference.")],
    reason: Annotated[str, typer.Option(help="Why the hold ends.")],
) -> None:
    """Release a legal hold."""
    with open_service() as service:
        service.release_hold(ref=ref, reason=reason)
        out.print(f"hold {ref} released")
        for request_id in service.reopened_by(ref):
            out.print(f"{request_id}: what the hold kept from erasure is open again; next: dsr run {request_id}")


@restriction_app.command("lift")
def restriction_lift(
    request_id: RequestId,
    reason: Annotated[str, typer.Option(help="Why the restriction ends (kept as evidence; no personal data).")],
) -> None:
    """Lift a restriction: marketing put back as it was before it, the purge no longer holds the data back."""
    with open_service() as service:
        result = service.lift_restriction(request_id, reason=reason)
        for system in result.restored:
            out.print(f"{system}: marketing settings restored")
        for system in result.tasks:
            out.print(f"{system}: a person restores them (manual task open; dsr task done {request_id} {system})")
        if result.failed:
            for system, error in sorted(result.failed.items()):
                out.print(f"[red]{system}: {rich_escape(error)}[/red]")
            fail(EXIT_NOT_COMPLETED, f"request {request_id}: restriction not lifted; run it again")
        out.print(f"{request_id}: restriction lifted")


@hold_app.command("list")
def hold_list(
    all_holds: Annotated[bool, typer.Option("--all", help="Released holds too.")] = False,
    as_json: AsJson = False,
) -> None:
    """Legal holds in force (or all of them)."""
    with open_service() as service:
        found = service.holds(active_only=not all_holds)
        if as_json:
            print_json([record_fields(h) for h in found])
            return
        table = Table("ref", "subject", "since", "by", "reason", "released")
        for h in found:
            table.add_row(h.ref, h.identity_hash, h.since[:10], h.by, h.reason, "yes" if h.released else "no")
        out.print(table if found else "no holds")
