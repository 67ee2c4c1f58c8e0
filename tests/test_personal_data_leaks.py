"""No personal data or secret where it must not be: logs at DEBUG, the exception texts
the ledger keeps, the evidence bundle, the status callbacks; and config names secrets, never holds them.

One erasure (with two vendors failing first, so their errors are recorded, then finished) and one
access request, end to end without Prefect (tests/test_flow.py covers the flow; `make pii-scan`
scans Prefect's own logs and database over the demo and the whole suite).
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pii_scan_plugin import LogTap, Needles, Scanner, add_identity_key, collect_needles

from connectors.registry import build_connector
from dsr.adapters.webhooks import callback_key, register_callbacks
from dsr.identity import identity_hash
from dsr.models import Status, parse_new_request
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import FaultConfig, Request, Response, SandboxServer, Vendor

REPO = Path(__file__).resolve().parent.parent
CALLBACK_TOKEN = "cb-leak-check-7e41d09a"  # carried by the callback URL: a secret


class Receiver(Vendor):
    """The requester's status callback endpoint: keeps every call, headers and body."""

    name = "receiver"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Request] = []
        self.router.add("POST", "/status", self._hook)

    def _hook(self, request: Request) -> Response:
        self.calls.append(request)
        return Response.text("ok")


@pytest.fixture(scope="module")
def needles() -> Needles:
    return collect_needles()


@pytest.fixture
def tap(tmp_path: Path) -> Iterator[LogTap]:
    """Every log record any logger lets through while the root logger is at DEBUG."""
    root = logging.getLogger()
    level = root.level
    tap = LogTap(tmp_path / "records.jsonl")
    tap.install()
    root.setLevel(logging.DEBUG)
    try:
        yield tap
    finally:
        root.setLevel(level)
        tap.uninstall()


@pytest.fixture
def service(tmp_path: Path, systems_file: Path) -> Iterator[DsrService]:
    """The demo data map on a SQLite ledger, but the two vendors made to fail give up at once
    (their retries' back-off would only add time: what is recorded is the same)."""
    data = yaml.safe_load(systems_file.read_text())
    for name in ("salesforce", "hubspot"):
        data["systems"][name]["settings"]["retry_attempts"] = 1
    path = tmp_path / "systems-no-retry.yaml"
    path.write_text(yaml.safe_dump(data))
    svc = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                              identity_key="test-identity-key"))
    yield svc
    svc.close()


def _submit(service: DsrService, kind: str, email: str, callback: str) -> str:
    new = parse_new_request(type=kind, email=email, regime="gdpr", received=datetime.now(UTC), channel="web-form")
    state = service.submit(new).state
    register_callbacks(service, state.request_id, [callback], current_status="pending")
    service.verify(state.request_id, method="email-code", note="code returned")
    return state.request_id


def _run(service: DsrService, request_id: str):
    from dsr.run import RequestRunner

    runner = RequestRunner(service)
    for system in runner.begin(request_id).systems:
        config = service.data_map.systems[system]
        runner.run_system(request_id, system,
                          lambda s=system, c=config: build_connector(s, c.kind, c.settings))
    return runner.finish(request_id)


def _zip_text(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name).decode("utf-8", "replace") for name in archive.namelist()}


def test_an_erasure_and_an_access_request_leak_no_personal_data_or_secret(
        service: DsrService, sandboxes, tap: LogTap, needles: Needles) -> None:
    key = service.settings.identity_hmac_key.decode()
    add_identity_key(needles, key)
    needles.add_secret(CALLBACK_TOKEN)
    needles.add_secret(callback_key(service.settings).decode())
    signing_pem = service.settings.signing_key_path
    with SandboxServer(Receiver()) as hooks:
        callback = f"{hooks.url}/status?token={CALLBACK_TOKEN}"
        # Salesforce answers every SOQL query (which carries the address in its URL, or in a Composite
        # call's body) with a 500, HubSpot resets every connection: their errors must reach the ledger
        # without the address.
        sandboxes["salesforce"].vendor.faults.configure(FaultConfig(error_rate=1.0, path_pattern=r"/query|/composite"))
        sandboxes["hubspot"].vendor.faults.configure(FaultConfig(reset_rate=1.0))
        erasure = _submit(service, "erasure", ERASURE_SUBJECT, callback)
        first = _run(service, erasure)
        assert first.status == Status.PARTIALLY_COMPLETED
        failures = [e.payload["error"] for e in service.events(erasure) if e.type == "system.failed"]
        assert {e.payload["system"] for e in service.events(erasure) if e.type == "system.failed"} == {
            "salesforce", "hubspot"}
        for vendor in ("salesforce", "hubspot"):
            sandboxes[vendor].vendor.faults.configure(FaultConfig())
        done = _run(service, erasure)
        assert done.status == Status.COMPLETED, done.reason
        access = _submit(service, "access", ACCESS_SUBJECT, callback)
        shown = _run(service, access)
        assert shown.status == Status.COMPLETED, shown.reason
        calls = list(hooks.vendor.calls)
    for pem in (signing_pem.read_text(),):
        for line in pem.splitlines():
            if not line.startswith("-----"):
                needles.add_secret(line)
    scanner = Scanner(needles)
    tap.flush()

    # Where the scan looks: every log record, every ledger event (exception texts included),
    # every member of both evidence bundles, every callback (headers and body).
    records = [json.loads(line) for line in tap.path.read_text().splitlines()]
    places: dict[str, str] = {f"log {r['logger']} #{n}": r["text"] for n, r in enumerate(records)}
    for rid in (erasure, access):
        for event in service.events(rid):
            places[f"ledger {rid[:8]} {event.type} #{event.seq}"] = json.dumps(event.payload)
    bundles = {rid: outcome.bundle_path for rid, outcome in ((erasure, done), (access, shown))}
    for rid, path in bundles.items():
        assert path is not None
        for name, text in _zip_text(Path(path)).items():
            places[f"bundle {rid[:8]} {name}"] = text
    for n, call in enumerate(calls):
        places[f"callback #{n} headers"] = json.dumps(dict(call.headers))
        # OpenDSR requires a callback to name the URL it is sent to: the receiver's own, not a leak.
        sent = json.loads(call.body)
        assert sent.pop("status_callback_url") == callback
        places[f"callback #{n} body"] = json.dumps(sent)

    hits = [hit for where, text in places.items() for hit in scanner.hits(text, where)]
    assert hits == [], "\n".join(f"[{h.kind}] {h.source}: {h.excerpt}" for h in hits[:20])

    # The places were not empty: the run logged, failed, called back and sealed what it did.
    assert any(erasure in r["text"] and "failed" in r["text"] for r in records)
    assert failures and all(f.split(":")[0].isidentifier() for f in failures)
    assert {json.loads(c.body)["request_status"] for c in calls} >= {"in_progress", "completed"}
    # The bundle identifies the subject by the keyed hash of the address, nothing else.
    subject = identity_hash("email", ERASURE_SUBJECT, key.encode())
    erasure_bundle = "\n".join(_zip_text(Path(bundles[erasure])).values())
    assert subject in erasure_bundle
    assert identity_hash("email", ACCESS_SUBJECT, key.encode()) not in erasure_bundle
    # And the scan sees personal data where it is kept on purpose: the subject's package.
    assert shown.package_path is not None
    package = Path(shown.package_path)
    package_text = "\n".join(_zip_text(package).values()) if zipfile.is_zipfile(package) else "\n".join(
        p.read_text(errors="replace") for p in package.rglob("*") if p.is_file())
    assert {h.kind for h in scanner.hits(package_text, "package")} >= {"email"}


# -- config holds secrets by name only ----------------------------------------------------------------

CONFIG_FILES = sorted([*REPO.glob("config/*.yaml"), *REPO.glob("config/demo/*.yaml"), *REPO.glob("deployments/*.yaml")])
SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_?key|private_?key|credential|client_secret)", re.I)
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _leaves(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from _leaves(value, f"{path}[{n}]")
    else:
        yield path, node


def test_config_files_name_their_secrets_and_never_hold_them(needles: Needles) -> None:
    assert len(CONFIG_FILES) >= 4
    scanner = Scanner(needles)
    named = 0
    for path in CONFIG_FILES:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        for where, value in _leaves(data):
            last = where.rsplit(".", 1)[-1]
            if not SECRET_KEY.search(last) or value is None or isinstance(value, bool | int | float):
                continue
            # A secret's setting is an environment variable's name (`..._env: DSR_X`), or a hash
            # of a token (access.yaml's sha256), never the value.
            if last.endswith("_env") or last.endswith("_envs"):
                assert isinstance(value, str) and ENV_NAME.match(value), f"{path.name}: {where} is not an env var name"
                named += 1
            else:
                pytest.fail(f"{path.name}: {where} holds a value; name an environment variable ({last}_env) instead")
        for line in text.splitlines():
            assert not scanner.hits(line, path.name), f"{path.name}: a seeded secret or personal datum: {line[:40]}"
            # A URL with credentials in it (scheme://user:password@host).
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", line), f"{path.name}: credentials in a URL"
    assert named >= 5  # the demo data map does name its vendors' credentials


def test_objects_that_carry_the_address_do_not_show_it_in_their_repr() -> None:
    """A repr ends up in log lines, tracebacks and Prefect's parameter displays: it shows the hash."""
    from dsr.contract import Subject
    from dsr.models import parse_new_request

    subject = Subject(ERASURE_SUBJECT, "hmac-sha256:0123")
    new = parse_new_request(type="erasure", email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
    assert subject.email == new.email == ERASURE_SUBJECT  # still there for the connectors
    for text in (repr(subject), str(subject), repr(new), str(new), f"{[subject, new]}"):
        assert "lovelace" not in text.lower(), text
    assert "hmac-sha256:0123" in repr(subject)
