"""Evidence: verify and export sealed bundles, verify and adopt the ledger, list and redact kept free texts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from doors.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_COMPLETED,
    EXIT_REFUSED,
    AsJson,
    RequestId,
    app,
    bundle_app,
    fail,
    ledger_app,
    open_service,
    out,
    print_json,
)
from dsr.ledger.store import UnknownRequest
from dsr.settings import Settings


@app.command("texts")
def texts(
    request_id: RequestId,
    as_json: AsJson = False,
) -> None:
    """List the free texts (notes, reasons) a request's events reference: hash and whether kept."""
    with open_service() as service:
        rows = service.free_text_list(request_id)
        if as_json:
            print_json(rows)
            return
        table = Table("seq", "event", "field", "sha256", "text")
        for row in rows:
            table.add_row(str(row["seq"]), row["type"], row["field"], row["sha256"],
                          "kept" if row["kept"] else f"redacted {row['redacted_at'] or ''}".strip())
        out.print(table if rows else "no free text kept beside this chain")


@app.command()
def redact(
    request_id: RequestId,
    text_sha256: Annotated[str, typer.Option("--text-sha256", help="The text's SHA-256 (see `dsr texts ID`).")],
    reason: Annotated[str, typer.Option(help="Why it is redacted (kept beside the chain; no personal data).")],
) -> None:
    """Redact a kept note or reason: the words are gone, the chain and sealed bundles still verify."""
    with open_service() as service:
        service.redact_text(request_id, text_sha256=text_sha256, reason=reason)
        out.print(f"{request_id}: text {text_sha256.strip().lower()[:12]}… redacted")


@bundle_app.command("verify")
def bundle_verify(
    path: Annotated[Path, typer.Argument(help="The evidence bundle (.zip).")],
    public_key: Annotated[Path | None, typer.Option(help="PEM public key; default: this installation's signing key.")] = None,
    request: Annotated[str | None, typer.Option(help="Also check the bundle is about this request id.")] = None,
    as_json: AsJson = False,
) -> None:
    """Check a bundle offline: member hashes, manifest, hash chain and signature."""
    from dsr.bundle import verify_bundle
    from dsr.signing import load_public_key

    settings = Settings()
    key_path = public_key or Path(str(settings.signing_key_path) + ".pub")
    if not path.is_file():
        fail(EXIT_BAD_INPUT, f"path: no file at {path}")
    if not key_path.is_file():
        fail(EXIT_BAD_INPUT, f"public-key: no public key at {key_path}")
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
        print_json({"ok": report.ok, "reason": report.reason, "request_id": report.request_id,
                     "events": report.events,
                     "checks": [{"check": what, "ok": passed, "detail": detail} for what, passed, detail in report.checks]})
        if not report.ok:
            raise typer.Exit(EXIT_NOT_COMPLETED)
        return
    for what, passed, detail in report.checks:
        mark = "[green]ok[/green]  " if passed else "[red]FAIL[/red]"
        out.print(f"{mark} {what}{': ' + detail if detail else ''}")
    if not report.ok:
        fail(EXIT_NOT_COMPLETED, f"bundle does not verify: {report.reason}")
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
    with open_service() as service:
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
    as_json: AsJson = False,
) -> None:
    """Verify the ledger: hash chains, signed heads and their anchor file, index rows, identities."""
    with open_service() as service:
        audit = service.ledger.audit(request_id)
        if request_id and not audit.counts and not audit.problems:
            raise UnknownRequest(request_id)
        failing = {p.subject for p in audit.problems}
        if as_json:
            print_json({"ok": not audit.problems and not audit.warnings,
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
            fail(EXIT_NOT_COMPLETED, f"the ledger does not verify: {len(audit.problems)} problem(s), "
                  f"{len(audit.warnings)} warning(s) (each named above)")


@ledger_app.command("adopt")
def ledger_adopt() -> None:
    """Sign the current head of every chain written before signed heads existed (run once after
    upgrading: it vouches for what the ledger holds now). Chains with other problems are left alone."""
    with open_service() as service:
        adopted, problems = service.ledger.adopt_unsigned()
        for problem in problems:
            out.print(f"[red]FAIL[/red] {problem}")
        out.print(f"signed the current head of {len(adopted)} chain(s)")
        if problems:
            fail(EXIT_NOT_COMPLETED, f"{len(problems)} problem(s) left as they are (each named above); "
                  "nothing was signed over them")


@bundle_app.command("export")
def bundle_export(
    request_id: RequestId,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the bundle.")],
    version: Annotated[int | None, typer.Option(help="Bundle version (default: the newest).")] = None,
) -> None:
    """Write a request's sealed evidence bundle to a file (recorded as a download)."""
    with open_service() as service:
        state = service.state(request_id)
        versions = [b["version"] for b in state.bundles]
        if not versions:
            fail(EXIT_REFUSED, f"request {request_id} has no sealed evidence bundle yet")
        chosen = version or max(versions)
        if chosen not in versions:
            fail(EXIT_BAD_INPUT, f"version: request {request_id} has versions {versions}")
        sealed = next(b for b in state.bundles if b["version"] == chosen)
        data = service.evidence_store().get_bundle(request_id, chosen, expected_sha256=sealed["sha256"])
        output.write_bytes(data)
        service.record_download(request_id, "bundle", by=service.settings.actor, role="cli", version=chosen)
        out.print(f"wrote evidence v{chosen} of {request_id} to {output} ({len(data)} bytes)")
