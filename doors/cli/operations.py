"""The office's chores: the deadline sweep, the retention purge, the intake queue, API tokens, a new
installation, the ledger's schema."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from doors.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_COMPLETED,
    EXIT_REFUSED,
    AsJson,
    app,
    db_app,
    err,
    fail,
    open_service,
    out,
    print_json,
    token_app,
)
from dsr.config import ConfigError
from dsr.settings import HomeMissing, Settings

# The access file's opening comment: in a new installation's file, and kept when a token is added.
_ACCESS_HEADER = "# API tokens for officers and auditors, stored as SHA-256 hashes only (`dsr token create --write`).\n"


class StaffRole(StrEnum):
    """Roles a token can be made for here (subject tokens are issued per request)."""

    OFFICER = "officer"
    AUDITOR = "auditor"



@app.command()
def sweep(
    at: Annotated[str | None, typer.Option(help="Evaluate as of this ISO 8601 time (default: now).")] = None,
    as_json: AsJson = False,
) -> None:
    """Warn and escalate every open request near or past its deadline (once per threshold)."""
    with open_service() as service:
        now = datetime.now(UTC)
        if at is not None:
            try:
                now = datetime.fromisoformat(at)
            except ValueError:
                fail(EXIT_BAD_INPUT, f"at: {at!r} is not an ISO 8601 time")
            now = now if now.tzinfo else now.replace(tzinfo=UTC)
        channels = service.escalation_channels()
        report = service.sweep(now=now, channels=channels)
        if as_json:
            print_json({"checked": report.checked, "channels": bool(channels), "delivered": report.delivered,
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
def consume(
    queue_url: Annotated[str, typer.Option(help="The SQS queue requests arrive on (OpenDSR bodies).")],
    dead_letter_url: Annotated[str, typer.Option(help="Where unusable messages go, with the reason.")],
    endpoint_url: Annotated[str | None, typer.Option(help="Another SQS endpoint (a local emulator).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain what is there, then stop.")] = False,
) -> None:
    """Take requests from Amazon SQS into the intake (at least once; idempotent on the request id)."""
    import boto3

    from dsr.adapters.queue import QueueConsumer

    with open_service() as service:
        consumer = QueueConsumer(service.intake(), boto3.client("sqs", endpoint_url=endpoint_url), queue_url, dead_letter_url)
        while True:
            report = consumer.drain(wait_seconds=0 if once else 20)
            if report.received:
                out.print(f"{report.received} message(s): {report.accepted} new, {report.repeated} repeated, "
                          f"{report.dead_lettered} dead-lettered, {report.left_for_retry} left for retry")
            if once:
                break


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; change nothing.")] = False,
    system: Annotated[list[str] | None, typer.Option(help="Only this system (repeatable).")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Only records governed by this category.")] = None,
    approve: Annotated[str | None, typer.Option(help="Go ahead with a run the blast-radius guard stopped.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the run report).")] = False,
) -> None:
    """The retention purge: expired records of every system, minus legal holds and open requests."""
    with open_service() as service:
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
            print_json({"run_id": report.run_id, "dry_run": report.dry_run, "status": report.status,
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
            fail(EXIT_REFUSED, f"nothing was deleted; to go ahead: dsr purge --approve {report.run_id}")
        if report.status != "completed":
            fail(EXIT_NOT_COMPLETED, "some records could not be purged; see the run report")


def _add_token_entry(path: Path, entry: Any) -> None:
    """Add a token entry to the access file: its comments kept, the result checked before it replaces
    the file (a ConfigError names what is wrong with the file as it is)."""
    import yaml

    from dsr.access import load_access

    current = load_access(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#")) or _ACCESS_HEADER
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
        fail(EXIT_BAD_INPUT, "name: letters, digits, spaces and . _ @ - only")
    if as_json and not write:
        print_json({"token": token, "entry": entry.model_dump(mode="json"), "written_to": None})
        return
    if write:
        path = Settings().access_path
        try:
            _add_token_entry(path, entry)
        except ConfigError as exc:
            fail(EXIT_BAD_INPUT, str(exc))
        except OSError as exc:
            fail(EXIT_BAD_INPUT, f"access file: cannot write {path} ({exc.strerror or type(exc).__name__})")
        if as_json:
            print_json({"token": token, "entry": entry.model_dump(mode="json"), "written_to": str(path)})
            return
        out.print(token)
        err.print(f"[dim]shown once; {entry.role.value} {entry.name!r} added to {path} (a running `dsr serve` "
                  "reads it at start: restart it)[/dim]")
        return
    out.print(token)
    err.print("[dim]shown once; add this entry under `tokens:` in config/access.yaml (or use --write):[/dim]")
    err.print(f'  - {{name: "{entry.name}", role: {entry.role.value}, sha256: {entry.sha256}}}')


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
                config_dir / "access.yaml": _ACCESS_HEADER + "tokens: []\n"}
    present = [str(path) for path in starters if path.exists()]
    if present:
        fail(EXIT_REFUSED, f"{', '.join(present)} already there; nothing was written (init never overwrites)")
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        for path, text in starters.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(EXIT_BAD_INPUT, f"DIR: cannot write under {directory} ({exc.strerror or type(exc).__name__})")
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
        fail(EXIT_BAD_INPUT, str(exc))
    try:
        before, head = schema_revisions(engine)
        migrate(engine)
    except Exception as exc:  # an unreachable database is the operator's to fix: say which, not a traceback
        fail(EXIT_NOT_COMPLETED, f"DSR_DATABASE_URL: the ledger's schema could not be upgraded ({type(exc).__name__})")
    finally:
        engine.dispose()
    out.print(f"ledger schema at {head}" + ("" if before == head else f" (was {before or 'empty'})"))


@db_app.command("status")
def db_status(as_json: AsJson = False) -> None:
    """Show the ledger's schema revision and this release's; exit 1 when an upgrade is due."""
    from dsr.ledger.store import create_ledger_engine, schema_revisions

    try:
        engine = create_ledger_engine(_schema_settings().ledger_url, for_writes=False)
    except HomeMissing as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    try:
        current, head = schema_revisions(engine)
    except Exception as exc:
        fail(EXIT_NOT_COMPLETED, f"DSR_DATABASE_URL: the ledger could not be read ({type(exc).__name__})")
    finally:
        engine.dispose()
    if as_json:
        print_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        out.print(f"ledger schema: {current or 'none (empty database)'}; this release: {head}; "
                  + ("up to date" if current == head else "upgrade due: dsr db upgrade"))
    if current != head:
        raise typer.Exit(EXIT_NOT_COMPLETED)
