"""The HTTP API against its own OpenAPI schema: Schemathesis generates calls from /openapi.json (valid
and invalid ones) and checks every answer against what the schema declares (status codes, bodies,
content types, headers, constraints, authentication, the Allow header of a 405).

    python -m chaos.schema --max-examples 500 --seed 1

The API runs in this process under uvicorn on a loopback port, over a temporary ledger seeded with
a completed access request (bundle and package), a completed erasure and an unverified request, and
tokens for each role. Schemathesis runs once per role (officer, auditor, subject), so that each
role's routes answer something other than 403 (the public OpenDSR door, which reads no token, as
the officer only). Prints each run's report; exit 1 on any failure.
`tests/test_api_schema.py` runs the same with a few examples per operation in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ROLES = ("officer", "auditor", "subject")
#: The public OpenDSR door reads no bearer token, so one role's run covers it (the others leave it out).
PUBLIC_PATHS = r"^/opendsr/"
PUBLIC_ROLE = "officer"
ACCESS_SUBJECT, ERASURE_SUBJECT, OPEN_SUBJECT = ("schema.access@example.com", "schema.erasure@example.com",
                                                 "schema.open@example.com")


@dataclass
class ApiUnderTest:
    base_url: str
    tokens: dict[str, str]  # role -> bearer token
    request_ids: dict[str, str] = field(default_factory=dict)  # what was seeded: "access", "erasure", "open"


def _seeded_service(home: Path):  # -> DsrService
    from dsr.models import parse_new_request
    from dsr.run import RequestRunner
    from dsr.service import DsrService
    from dsr.settings import Settings
    from sandbox.crm_seed import seed_crm

    crm_url = f"sqlite:///{home / 'crm.sqlite'}"
    seed_crm(crm_url, contacts=20)
    crm = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text(encoding="utf-8"))["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    systems = home / "systems.yaml"
    systems.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}), encoding="utf-8")
    service = DsrService(Settings(home=home / "var", config_dir=REPO / "config", systems_file=systems,
                                  identity_key="schema-run-identity-key",
                                  # The OpenDSR door's per-address limits would answer most generated
                                  # calls 429 (which the schema allows) and leave its checks unexercised.
                                  opendsr_calls_per_minute=1_000_000))
    ids: dict[str, str] = {}
    for kind, email in (("access", ACCESS_SUBJECT), ("erasure", ERASURE_SUBJECT), ("open", OPEN_SUBJECT)):
        new = parse_new_request(type="access" if kind == "open" else kind, email=email, regime="gdpr",
                                received=datetime.now(UTC))
        ids[kind] = request_id = service.submit(new).state.request_id
        if kind == "open":
            continue
        service.verify(request_id, method="email-code", note="seeded for the schema run")
        runner = RequestRunner(service)
        for system in runner.begin(request_id).systems:
            runner.run_system(request_id, system, service.connecting(system))
        runner.finish(request_id)
    return service, ids


class _Sink:
    """Takes every message (the codes are not needed: a generated code is wrong anyway)."""

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201 - aiosmtpd's hook
        return "250 accepted"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def seeded_api(home: Path) -> Iterator[ApiUnderTest]:
    """The API on 127.0.0.1 (a free port) over a fresh seeded ledger under `home`; stopped on exit."""
    import uvicorn
    from aiosmtpd.controller import Controller

    from doors.api.app import create_app
    from dsr.access import AccessConfig, Role, TokenEntry, new_token, token_hash
    from dsr.adapters.mail import SmtpConfig
    from dsr.adapters.storage import config_from_settings, open_store

    service, ids = _seeded_service(home)
    # The intake e-mails a code on each submission: a real SMTP server on loopback takes them.
    mail = Controller(_Sink(), hostname="127.0.0.1", port=_free_port())
    mail.start()
    smtp = SmtpConfig(host="127.0.0.1", port=mail.port, starttls=False, sender="privacy@example.com",
                      recipients=("privacy@example.com",), timeout_seconds=5)
    tokens = {"officer": new_token(), "auditor": new_token()}
    tokens["subject"], _ = service.issue_subject_token(ids["access"], ttl=timedelta(hours=1))
    access = AccessConfig(tokens=(TokenEntry(name="schema-officer", role=Role.OFFICER, sha256=token_hash(tokens["officer"])),
                                  TokenEntry(name="schema-auditor", role=Role.AUDITOR, sha256=token_hash(tokens["auditor"]))))
    app = create_app(service, access, open_store(config_from_settings(service.settings)),
                     intake_smtp=lambda: smtp)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by each accepted connection: without it every keep-alive answer waits out the client's
    # delayed ACK (40 ms a call; asyncio sets it only on sockets it binds itself).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="schema-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start on loopback")
            time.sleep(0.05)
        yield ApiUnderTest(f"http://127.0.0.1:{port}", tokens, ids)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        mail.stop()
        service.close()


# Per-operation settings, as Schemathesis' config file (TOML).
CONFIG = r"""
# OpenDSR verification: a wrong code is answered 400 (the spec's error object; the web form's
# unversioned route says it in its own words), and no schema can say which 6-digit code is the right
# one, so a well-formed wrong code is not "valid data refused".
[[operations]]
include-path-regex = "^/opendsr/(v2/)?requests/\\{request_id\\}/verify$"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

# OpenDSR cancellation: a request no longer pending cannot be cancelled, which the spec answers with
# its 400 error object (reason InvalidState); no schema can say which requests are still pending.
[[operations]]
include-name-regex = "^DELETE /opendsr/(v1/opengdpr_requests|v2/requests)/"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
"""


def schemathesis_command(api: ApiUnderTest, role: str, *, max_examples: int, seed: int, report_dir: Path,
                         workers: int = 1, exclude_path_regex: str | None = None) -> list[str]:
    """The Schemathesis CLI call that checks every operation as `role`, every check on."""
    excluded = ["--exclude-path-regex", exclude_path_regex] if exclude_path_regex else []
    config = report_dir / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
            "run", f"{api.base_url}/openapi.json",
            "--checks", "all", "--seed", str(seed), "--max-examples", str(max_examples),
            "--workers", str(workers), "--header", f"Authorization: Bearer {api.tokens[role]}",
            "--generation-database", "none", "--no-color", "--request-timeout", "10",
            "--report", "junit", "--report-junit-path", str(report_dir / f"schemathesis-{role}.xml"), *excluded]


def run_roles(api: ApiUnderTest, *, max_examples: int, seed: int, report_dir: Path, workers: int = 1,
              roles: tuple[str, ...] = ROLES, timeout: float = 1800, exclude_path_regex: str | None = None,
              at_once: bool = False) -> dict[str, subprocess.CompletedProcess[str]]:
    """One Schemathesis run per role (one after another, or `at_once`); each answer holds its exit code
    (0: no failure) and its report. Each role's files (report, Schemathesis' own state) stay in
    `report_dir/<role>`."""
    # The hooks module states the rules no JSON Schema can (see chaos/schema_hooks.py).
    env = os.environ | {"SCHEMATHESIS_HOOKS": "chaos.schema_hooks", "NO_COLOR": "1",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def run(role: str) -> subprocess.CompletedProcess[str]:
        folder = report_dir / role
        folder.mkdir(parents=True, exist_ok=True)
        excluded = [exclude_path_regex] if exclude_path_regex else []
        if role != PUBLIC_ROLE:
            excluded.append(PUBLIC_PATHS)
        command = schemathesis_command(api, role, max_examples=max_examples, seed=seed, report_dir=folder,
                                       workers=workers,
                                       exclude_path_regex="|".join(f"(?:{regex})" for regex in excluded) or None)
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False,
                              cwd=folder)

    with ThreadPoolExecutor(max_workers=len(roles) if at_once else 1) as pool:
        return dict(zip(roles, pool.map(run, roles), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=500, help="test cases per operation and role")
    parser.add_argument("--seed", type=int, default=1)
    # One worker: CPython 3.11's ast.parse (Hypothesis describes its filters with it) is not thread-safe.
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--role", choices=ROLES, action="append", help="only this role (repeatable)")
    parser.add_argument("--exclude-path-regex", help="leave out the operations whose path matches")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dsr-schema-") as tmp, seeded_api(Path(tmp)) as api:
        results = run_roles(api, max_examples=args.max_examples, seed=args.seed, report_dir=Path(tmp),
                            workers=args.workers, roles=tuple(args.role or ROLES),
                            exclude_path_regex=args.exclude_path_regex)
        for role, result in results.items():
            print(f"== schemathesis as {role}: exit {result.returncode}")
            print(result.stdout[-20_000:])
            if result.returncode != 0:
                print(result.stderr[-5_000:], file=sys.stderr)
    failed = sorted(role for role, result in results.items() if result.returncode != 0)
    print(json.dumps({"campaign": "schema", "max_examples": args.max_examples, "seed": args.seed,
                      "roles": sorted(results), "failed_roles": failed,
                      "seconds": round(time.monotonic() - started, 1)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
