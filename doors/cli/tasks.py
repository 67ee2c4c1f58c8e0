"""Manual tasks: list them, record one as done."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from doors.cli.common import EXIT_NOT_COMPLETED, AsJson, RequestId, fail, open_service, out, print_json, task_app
from doors.cli.running import print_outcome, run_with_progress


@task_app.command("list")
def task_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only tasks not yet done.")] = False,
    as_json: AsJson = False,
) -> None:
    """Manual tasks of open requests: who, what, by when."""
    with open_service() as service:
        rows = [{"request_id": t.request_id, "system": t.system, **t.task} for t in service.manual_tasks()
                if not (open_only and t.task.get("done"))]
        if as_json:
            print_json(rows)
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
    request_id: RequestId,
    system: Annotated[str, typer.Argument(help="The system whose task is done.")],
    note: Annotated[str, typer.Option(help="What was done (kept as evidence; no personal data).")],
    attach: Annotated[list[Path] | None, typer.Option(help="A file to keep with the task (an export, a receipt).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume the request's run now.")] = True,
) -> None:
    """Record a manual task as done (with evidence) and resume the request."""
    with open_service() as service:
        service.task_done(request_id, system, note=note, attachments=attach or [])
        out.print(f"{request_id}: manual task in {system} recorded as done")
        if resume:
            result = run_with_progress(service, request_id)
            print_outcome(result)
            if result["status"] not in ("completed", "awaiting_manual_action"):
                fail(EXIT_NOT_COMPLETED, f"request {request_id} is {result['status']}: {result.get('reason')}")
