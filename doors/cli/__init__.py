"""The `dsr` command: the privacy office's door to the pipeline.

It parses and presents; every rule lives in the service layer. Exit codes: 0 done, 1 the
request did not complete (or a bundle did not verify), 2 bad input (the message names the
field), 3 refused in the request's current state.

One module per job registers its commands on the shared apps (`doors.cli.common`): requests and
deadlines, running a request, manual tasks, evidence and the ledger, holds and restrictions,
serving and the demo, and operations (sweep, purge, intake queue, tokens, init, schema).
"""

from __future__ import annotations

import os
import sys

from doors.cli import evidence, holds, operations, requests, running, serving, tasks  # noqa: F401 - they register commands
from doors.cli.common import EXIT_BAD_INPUT, EXIT_NOT_COMPLETED, app, config_problem, err

__all__ = ["app", "config_problem", "main"]

# `dsr --help` lists the commands in the order of a request's life, then the office's chores.
_HELP_ORDER = ("submit", "verify", "extend", "pause", "resume", "acknowledge", "sweep", "cancel", "status", "texts",
               "redact", "list", "run", "deadline", "serve", "worker", "consume", "purge", "demo", "init")
app.registered_commands.sort(
    key=lambda c: _HELP_ORDER.index(name) if (name := c.name or getattr(c.callback, "__name__", "")) in _HELP_ORDER
    else len(_HELP_ORDER))


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
        if problem is not None:  # raised outside `open_service` (a command that reads settings itself)
            err.print(f"[red]error:[/red] {problem}")
            sys.exit(EXIT_BAD_INPUT)
        if os.environ.get("DSR_DEBUG"):
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {str(exc)[:500]}\n"
                  "run again with DSR_DEBUG=1 for the traceback, and please report it")
        sys.exit(EXIT_NOT_COMPLETED)


