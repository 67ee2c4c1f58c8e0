"""`make demo` / `dsr demo`: the main job on embedded defaults, end to end.

Seeds the demo CRM (a SQLite file under var/demo/) and starts the vendor sandboxes (HubSpot) on
loopback, seeded with the same subjects; then submits, verifies and runs one request of every type
through the real `process-request` flow: Ada's erasure under GDPR (NL), then Grace's access,
portability, rectification, restriction (lifted again), objection, consent withdrawal and CCPA
opt-out (unverified, as the law allows). Manual tasks are played by the demo. Prints each system's
result and where the evidence and the subject package are.

Then it runs the retention purge by hand: a dry run (which the blast-radius guard stops, as the
demo data is mostly old), the approved purge, and a dry run that finds nothing left.

Running it again re-seeds the CRM from scratch (same data) and adds eight new requests to the
ledger; earlier requests, bundles and packages stay where they are.

With `--serve` (`serve_after_demo`) the sandboxes stay up and `dsr serve` starts on them: the
officer console and the privacy center, with a ready officer token (added in memory, not written to
config/access.yaml) and, when no SMTP is configured, a demo mailbox on loopback that prints the codes
and download links sent to subjects. Ctrl-C stops it all.
"""

from __future__ import annotations

import os
import socketserver
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

from rich.console import Console

from doors.cli.running import print_outcome  # the CLI's own table, so the demo looks like `dsr run`
from dsr.models import parse_new_request
from dsr.service import DsrService
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT, seed_crm
from sandbox.demo import demo_sandboxes, person_steps

RunFn = Callable[[DsrService, str], dict[str, Any]]


def _crm_url(service: DsrService) -> str:
    settings = service.data_map.systems["crm"].settings
    return str(settings["url"])


def run_demo(service: DsrService, console: Console, run: RunFn, *,
             serve: Callable[[], None] | None = None) -> int:
    """Returns the exit code: 0 when every request completed, its bundle verifies and the purge is done.

    `serve`, when given, is called after the demo while the sandboxes still run (it blocks until Ctrl-C).
    """
    console.print("[yellow]note:[/yellow] the demo ends with a retention purge that [bold]deletes[/bold] the "
                  "expired records of the demo CRM and sandboxes (demo data only: var/demo/ and the loopback "
                  "sandboxes; re-running the demo re-seeds them)")
    info = seed_crm(_crm_url(service))
    console.print(f"[bold]demo CRM[/bold] seeded from scratch: {info.total_rows} rows in {len(info.rows)} tables "
                  f"at {info.path}")
    with demo_sandboxes() as (servers, env):
        os.environ.update(env)
        for name, server in servers.items():
            console.print(f"[bold]{name} sandbox[/bold] seeded and serving on {server.url}")
        code = _run_requests(service, console, run, person_steps(servers))
        code = code or _retention(service, console)
        if serve is not None:
            serve()
        return code


def _retention(service: DsrService, console: Console) -> int:
    """The nightly purge, by hand: a dry run stops at the blast-radius guard, then is approved."""
    console.rule("retention purge")
    dry = service.purge(dry_run=True)
    expired = sum(t.candidates - t.held_back for t in dry.tallies)
    console.print(f"dry run {dry.run_id}: {expired} expired record(s) across "
                  f"{len({t.system for t in dry.tallies if t.candidates})} system(s); nothing changed")
    for trip in dry.guard:
        console.print(f"[yellow]guard[/yellow]: {trip['system']} would lose {trip['would_purge']} records "
                      f"(limit {trip['max_share']:.0%} / {trip['max_count']}): approval needed")
    done = service.purge(approve=dry.run_id if dry.guard else None)
    console.print(f"purge {done.run_id} ({'approved' if dry.guard else 'within limits'}): {done.status}, "
                  f"{done.purged} purged; signed run report: {done.report_path}")
    again = service.purge(dry_run=True)
    left = sum(t.candidates - t.held_back for t in again.tallies)
    console.print(f"dry run again: {left} expired record(s) left")
    console.print(f"[bold]the retention purge deleted {done.purged} record(s)[/bold] from the demo systems "
                  f"({', '.join(sorted({t.system for t in done.tallies if t.purged})) or 'none'})")
    return 0 if done.status == "completed" and left == 0 else 1


def _do_manual_tasks(service: DsrService, console: Console, request_id: str, email: str,
                     steps: dict[str, Callable[[str], None]]) -> None:
    """Play the people the manual tasks were sent to: do the step, then record it as done."""
    state = service.state(request_id)
    for name, system in sorted(state.systems.items()):
        task = system.task
        if not task or task.get("done"):
            continue
        console.print(f"[yellow]manual task[/yellow] {name} ({task['step']}) for {task['assignee']}, "
                      f"due {task['due']}")
        attachments: list[Path] = []
        if name in steps and task["step"] == "erase":
            steps[name](email)  # what the person does in the vendor's own UI (support deletes the visitor)
        if task["step"] == "export":
            export = service.settings.home / "demo" / f"{name}-export-{request_id[:8]}.csv"
            export.parent.mkdir(parents=True, exist_ok=True)
            export.write_text("account,saved_quotes,newsletter\nportal user,2,yes\n", encoding="utf-8")
            attachments.append(export)
        service.task_done(request_id, name, note=f"demo: {task['step']} done by {task['assignee']}",
                          attachments=attachments, actor=str(task["assignee"]))
        console.print(f"  done and recorded: dsr task done {request_id[:8]}… {name} --note ...")


def _run_requests(service: DsrService, console: Console, run: RunFn,
                  steps: dict[str, Callable[[str], None]]) -> int:
    from dsr.bundle import verify_bundle
    from dsr.signing import load_or_create_signing_key

    # One request of every type the privacy policy promises. Ada's data is erased first; the other
    # rights are Grace's (an access request, then a correction, then the rights that stop a use).
    demo_requests: list[tuple[str, str, str, str | None, str, dict[str, str] | None]] = [
        ("erasure", ERASURE_SUBJECT, "gdpr", "NL", "web-form", None),
        ("access", ACCESS_SUBJECT, "uk-gdpr", None, "email", None),
        ("portability", ACCESS_SUBJECT, "gdpr", "DE", "web-form", None),
        ("rectification", ACCESS_SUBJECT, "uk-gdpr", None, "email",
         {"title": "Rear Admiral", "company": "Harvard Computation Laboratory"}),
        ("restriction", ACCESS_SUBJECT, "gdpr", "NL", "post", None),
        ("objection", ACCESS_SUBJECT, "uk-gdpr", None, "email", None),
        ("consent_withdrawal", ACCESS_SUBJECT, "pipeda", None, "phone", None),
        ("opt_out", ACCESS_SUBJECT, "ccpa", None, "web-form", None),
    ]
    code = 0
    for kind, email, regime, country, channel, changes in demo_requests:
        new = parse_new_request(type=kind, email=email, regime=regime, country=country,
                                received=datetime.now(UTC), channel=channel, changes=changes)
        state = service.submit(new, actor="demo").state
        console.rule(f"{kind} · {regime} · {state.request_id}")
        console.print(f"submitted; subject {state.identity_hash}; due {state.due}")
        if kind == "opt_out":
            console.print("a CCPA opt-out needs no verification (11 CCR 7026): it runs as received")
        else:
            service.verify(state.request_id, method="email-code", note="demo: code sent to the address was returned",
                           actor="demo")
            console.print("verified (email-code)")
        result = run(service, state.request_id)
        print_outcome(result)
        if result["status"] == "awaiting_manual_action":
            _do_manual_tasks(service, console, state.request_id, email, steps)
            result = run(service, state.request_id)
            print_outcome(result)
        if result["status"] != "completed":
            code = 1
            continue
        signer = load_or_create_signing_key(service.settings.signing_key_path)
        check = verify_bundle(Path(result["bundle"]), signer.public_key)
        console.print(f"evidence bundle verifies: {'yes' if check.ok else 'NO: ' + str(check.reason)}")
        code = code or (0 if check.ok else 1)
        if kind == "restriction":
            code = code or _lift_restriction(service, console, state.request_id, email, steps)
    console.rule()
    console.print("try: dsr list · dsr status ID · dsr bundle verify PATH · dsr deadline uk-gdpr 2026-01-30")
    return code


def _lift_restriction(service: DsrService, console: Console, request_id: str, email: str,
                      steps: dict[str, Callable[[str], None]]) -> int:
    """`dsr restriction lift`: marketing put back exactly as it was before the restriction."""
    result = service.lift_restriction(request_id, reason="demo: the subject's dispute is resolved", actor="demo")
    console.print(f"restriction lifted: marketing restored in {', '.join(result.restored) or 'no system'}"
                  + (f"; a person restores it in {', '.join(result.tasks)}" if result.tasks else ""))
    _do_manual_tasks(service, console, request_id, email, steps)
    return 1 if result.failed else 0


# -- `dsr demo --serve` ------------------------------------------------------------------------------


class DemoMailbox:
    """A loopback SMTP sink for the demo: what the privacy center e-mails a subject (the code, the
    download link) is printed on the terminal instead. Only subject line and body are printed: the
    recipient's address is left out."""

    def __init__(self, console: Console) -> None:
        mailbox = self

        class Session(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self._say("220 demo mailbox")
                data: list[bytes] = []
                reading = False
                for raw in self.rfile:
                    if reading:
                        if raw.rstrip(b"\r\n") == b".":
                            reading = False
                            mailbox.show(b"".join(data))
                            data = []
                            self._say("250 accepted")
                        else:
                            data.append(raw[1:] if raw.startswith(b"..") else raw)
                        continue
                    verb = raw[:4].upper()
                    if verb == b"DATA":
                        reading = True
                        self._say("354 end with a line holding a single dot")
                    elif verb == b"QUIT":
                        self._say("221 bye")
                        return
                    elif verb == b"EHLO":
                        self._say("250 demo mailbox")
                    else:  # HELO, MAIL, RCPT, RSET, NOOP
                        self._say("250 ok")

            def _say(self, line: str) -> None:
                self.wfile.write(line.encode("ascii") + b"\r\n")

        self.console = console
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="demo-mailbox", daemon=True)

    def show(self, raw: bytes) -> None:
        message = message_from_bytes(raw)
        payload = message.get_payload(decode=True) if not message.is_multipart() else b""
        body = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        self.console.rule(f"demo mailbox: {message.get('Subject', '(no subject)')}")
        self.console.print(body.strip(), markup=False, highlight=False)
        self.console.rule()

    def __enter__(self) -> DemoMailbox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_after_demo(service: DsrService, console: Console, serve_app: Callable[..., None], *,
                     host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the API, the console and the privacy center on the demo's data until Ctrl-C."""
    from dsr.access import Role, TokenEntry, new_token, token_hash
    from dsr.adapters.mail import SmtpConfig

    token = new_token()
    entry = TokenEntry(name="demo-officer", role=Role.OFFICER, sha256=token_hash(token))
    with DemoMailbox(console) as mailbox:
        demo_smtp = SmtpConfig(host="127.0.0.1", port=mailbox.port, starttls=False, sender="privacy@demo.invalid",
                               recipients=("privacy-office@demo.invalid",))
        policy = service.policy

        def intake_smtp() -> SmtpConfig:
            return policy.intake.email or policy.escalation.channels.email or demo_smtp

        def banner() -> None:
            base = f"http://{host}:{port}"
            console.rule("the demo keeps running")
            console.print(f"officer console:  {base}/console   (sign in with the token below)")
            console.print(f"privacy center:   {base}/privacy")
            console.print(f"auditor page:     {base}/auditor · API docs: {base}/docs")
            console.print(f"officer token (this run only, not written to config/access.yaml):\n{token}",
                          markup=False, highlight=False)
            if intake_smtp() is demo_smtp:
                console.print("no SMTP configured: codes and download links for subjects are printed here")
            console.print("Ctrl-C stops the server and the sandboxes")

        serve_app(service, host=host, port=port, extra_tokens=(entry,), intake_smtp=intake_smtp, banner=banner)
