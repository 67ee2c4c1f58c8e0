"""Day two, as an operator meets it: install from the wheel, upgrade the schema as a release step,
read JSON logs, drive every reporting command with --json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine
from typer.testing import CliRunner

from doors.cli import app
from dsr.ledger.store import _alembic_config, create_ledger_engine, migrate, schema_revisions

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: no DSR_* settings of the test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSR_", "PREFECT_"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


# -- installing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the sources (what `pip wheel .` sees, minus ignored files), installed into a fresh venv; its dependencies are
    this test venv's (a .pth line), so nothing is downloaded. Returns the venv's bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        origin, target = REPO / name, source / name
        if not origin.exists() and not origin.is_symlink():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        else:
            shutil.copy2(origin, target)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(root / "dist")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test_venv_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((root / "dist").glob("dsr_pipeline-*.whl"))
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                                "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv / "bin"


def test_the_installed_wheel_refuses_a_stray_home_and_runs_the_demo_from_an_empty_directory(
        installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _clean_env(HOME=str(tmp_path))
    where = subprocess.run([str(installed / "python"), "-c", "import dsr; print(dsr.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed.parent)), where  # the wheel's copy, not the checkout's

    listed = subprocess.run([str(installed / "dsr"), "list"], cwd=empty, env=env, capture_output=True, text=True)
    assert listed.returncode == 2
    assert f"{empty / 'var'}" in listed.stderr and "dsr init" in listed.stderr and "DSR_HOME" in listed.stderr
    assert list(empty.iterdir()) == []  # nothing created where nobody asked

    demo = subprocess.run([str(installed / "dsr"), "demo"], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=240)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    assert "evidence bundle verifies: yes" in demo.stdout
    assert (empty / "var" / "ledger.sqlite").is_file()
    listed = subprocess.run([str(installed / "dsr"), "list", "--json"], cwd=empty, env=env, capture_output=True,
                            text=True)
    assert listed.returncode == 0, listed.stderr
    assert {row["status"] for row in json.loads(listed.stdout)} == {"completed"}


def test_dsr_init_makes_an_installation_that_uses_its_own_config(installed: Path, tmp_path: Path) -> None:
    env = _clean_env(HOME=str(tmp_path), DSR_IDENTITY_KEY="init-test")
    made = subprocess.run([str(installed / "dsr"), "init", "site"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    site = tmp_path / "site"
    assert (site / "config" / "systems.yaml").is_file() and (site / "config" / "policy.yaml").is_file()
    submitted = subprocess.run([str(installed / "dsr"), "submit", "--type", "access", "--email", "ada@example.com",
                                "--regime", "gdpr", "--json"], cwd=site, env=env, capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["status"] == "awaiting_verification"
    again = subprocess.run([str(installed / "dsr"), "init", "site"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert again.returncode == 3 and "never overwrites" in again.stderr


# -- upgrading -----------------------------------------------------------------------------------


def _ledger_at(url: str, revision: str) -> None:
    engine = create_ledger_engine(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()


def test_a_fleet_process_refuses_an_older_schema_until_the_release_step_upgrades_it(
        ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ledger_at(ledger_url, "0005")
    for key, value in {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
                       "DSR_DATABASE_URL": ledger_url, "DSR_IDENTITY_KEY": "k", "DSR_SCHEMA_UPGRADE": "release"}.items():
        monkeypatch.setenv(key, value)

    refused = runner.invoke(app, ["list"])
    assert refused.exit_code == 2
    assert "dsr db upgrade" in refused.output and "0005" in refused.output

    behind = runner.invoke(app, ["db", "status", "--json"])
    assert behind.exit_code == 1
    assert json.loads(behind.output) == {"current": "0005", "head": schema_revisions(create_engine(ledger_url))[1],
                                         "up_to_date": False}

    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "(was 0005)" in upgraded.output
    assert runner.invoke(app, ["db", "status"]).exit_code == 0
    assert runner.invoke(app, ["list"]).exit_code == 0


@pytest.mark.postgres
def test_processes_starting_together_upgrade_the_schema_once(postgres_url: str) -> None:
    from sandbox.scratch_db import private_schema

    with private_schema(postgres_url, "dsr_migrate") as url:
        engines = [create_ledger_engine(url) for _ in range(4)]
        failures: list[BaseException] = []
        start = threading.Barrier(len(engines))

        def open_ledger(engine) -> None:  # noqa: ANN001
            try:
                start.wait()
                migrate(engine)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=open_ledger, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        current, head = schema_revisions(engines[0])
        for engine in engines:
            engine.dispose()
    assert failures == []
    assert current == head


# -- logs and --json -----------------------------------------------------------------------------


def test_json_logs_are_one_object_a_line_with_identities_as_keyed_hashes(tmp_path: Path) -> None:
    env = _clean_env(DSR_HOME=str(tmp_path / "var"), DSR_CONFIG_DIR=str(REPO / "config"), DSR_IDENTITY_KEY="log-key",
                     DSR_LOG_FORMAT="json", DSR_LOG_LEVEL="INFO")
    script = "import sys; from doors.cli import main; sys.argv = ['dsr', *sys.argv[1:]]; main()"
    done = subprocess.run([sys.executable, "-c", script, "submit", "--type", "erasure", "--email",
                           "Grace.Hopper@example.com", "--regime", "gdpr"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    received = [line for line in lines if "received" in line["message"]]
    assert received, done.stderr
    assert {"time", "level", "logger", "message"} <= set(received[0])
    assert "hmac-sha256:" in received[0]["message"]
    assert "hopper" not in done.stderr.lower()


def test_an_address_that_slips_into_a_log_line_is_replaced_by_its_keyed_hash() -> None:
    import logging

    from dsr.identity import identity_hash
    from dsr.logging_setup import JsonFormatter, RedactIdentities

    record = logging.LogRecord("connectors.x", logging.WARNING, __file__, 1, "no contact %s in %s",
                               ("Ada@Example.com", "crm"), None)
    record.detail = "reply for ada@example.com"
    RedactIdentities(key=lambda: b"k").filter(record)
    line = json.loads(JsonFormatter().format(record))
    expected = identity_hash("email", "ada@example.com", b"k")
    assert line["message"] == f"no contact {expected} in crm"
    assert line["detail"] == f"reply for {expected}"
    assert line["level"] == "WARNING" and line["logger"] == "connectors.x"


@pytest.fixture
def cli_env(tmp_path: Path, systems_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
                       "DSR_SYSTEMS_FILE": str(systems_file), "DSR_IDENTITY_KEY": "ops-test-key",
                       "DSR_ACCESS_FILE": str(tmp_path / "access.yaml")}.items():
        monkeypatch.setenv(key, value)


def _json(args: list[str], code: int = 0) -> object:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_every_reporting_command_answers_json(cli_env: None, tmp_path: Path) -> None:
    submitted = _json(["submit", "--type", "erasure", "--email", "ada@example.com", "--regime", "gdpr",
                       "--received", "2026-01-05", "--json"])
    assert isinstance(submitted, dict) and submitted["status"] == "awaiting_verification" and submitted["created"]
    request_id = submitted["request_id"]
    assert _json(["deadline", "gdpr", "2026-01-30", "--json"])["due"] == "2026-03-02"  # type: ignore[index]
    swept = _json(["sweep", "--at", "2026-03-01T00:00:00+00:00", "--json"])
    assert swept["checked"] == 1 and swept["raised"][0]["request_id"] == request_id  # type: ignore[index]
    verified = _json(["ledger", "verify", "--json"])
    assert verified["ok"] is True and verified["verified"][request_id] >= 2  # type: ignore[index]
    purged = _json(["purge", "--dry-run", "--json"], code=3)  # the seeded CRM trips the blast-radius guard
    assert purged["dry_run"] is True and purged["status"] == "needs_approval"  # type: ignore[index]
    assert purged["guard"] and sum(t["candidates"] for t in purged["tallies"]) > 0  # type: ignore[index]
    made = _json(["token", "create", "--role", "auditor", "--name", "ext", "--write", "--json"])
    assert made["entry"]["role"] == "auditor" and made["written_to"] == str(tmp_path / "access.yaml")  # type: ignore[index]
    assert made["entry"]["sha256"] in (tmp_path / "access.yaml").read_text()  # type: ignore[index]
    refused = runner.invoke(app, ["token", "create", "--role", "subject", "--name", "x"])
    assert refused.exit_code == 2 and "--role" in refused.output
    paused = runner.invoke(app, ["pause", request_id, "--for", "patience", "--reason", "x"])
    assert paused.exit_code == 2 and "--for" in paused.output
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("dsr-pipeline ")
    helped = runner.invoke(app, ["bundle", "--help"])
    assert "export" in helped.output and "rebuild" not in helped.output


# -- watching ------------------------------------------------------------------------------------


def _ops_client(service):  # noqa: ANN001, ANN202 - a DsrService; a TestClient
    from fastapi.testclient import TestClient

    from doors.api.app import create_app
    from dsr.access import AccessConfig
    from dsr.adapters.storage import config_from_settings, open_store

    store = open_store(config_from_settings(service.settings))
    store.ensure_ready()
    return TestClient(create_app(service, AccessConfig(tokens=()), store)), store


def test_ready_names_what_fails_and_metrics_count_requests_without_personal_data(crm_only_service) -> None:  # noqa: ANN001
    from datetime import UTC, datetime, timedelta

    from prometheus_client.parser import text_string_to_metric_families

    from dsr.models import parse_new_request

    service = crm_only_service
    now = datetime.now(UTC)
    for email, regime, received in (("late@example.com", "gdpr", now - timedelta(days=60)),
                                    ("soon@example.com", "ccpa", now - timedelta(days=40)),
                                    ("fresh@example.com", "gdpr", now)):
        service.submit(parse_new_request(type="access", email=email, regime=regime, received=received))
    client, store = _ops_client(service)
    with client:
        assert client.get("/ready").json() == {"status": "ready",
                                               "checks": {"ledger": "ok", "schema": "ok", "storage": "ok"}}
        scraped = client.get("/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(scraped.text) for s in family.samples}
        assert samples[("dsr_open_requests", (("regime", "gdpr"), ("status", "awaiting_verification")))] == 2
        assert samples[("dsr_open_requests", (("regime", "ccpa"), ("status", "awaiting_verification")))] == 1
        assert samples[("dsr_overdue_requests", ())] == 1  # gdpr, 60 days ago: past its month
        assert samples[("dsr_due_soon_requests", ())] == 1  # ccpa, 45 days from 40 days ago
        assert "example.com" not in scraped.text and "@" not in scraped.text

        store.bundle_dir.rmdir()  # evidence can no longer be written there (a file where the directory was)
        store.bundle_dir.write_bytes(b"")
        broken = client.get("/ready")
        assert broken.status_code == 503
        assert broken.json()["failed"] == ["storage"] and broken.json()["checks"]["storage"].startswith("storage: not")
        store.bundle_dir.unlink()
        store.bundle_dir.mkdir()

        with service.ledger.engine.begin() as conn:  # a ledger a release behind
            from sqlalchemy import text

            conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        behind = client.get("/ready")
        assert behind.status_code == 503
        assert behind.json()["failed"] == ["schema"] and "dsr db upgrade" in behind.json()["checks"]["schema"]


def test_vendor_traffic_and_run_durations_reach_the_metrics_by_system() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from dsr import telemetry

    registry = CollectorRegistry()
    for collector in telemetry.COLLECTORS:
        registry.register(collector)
    before = registry.get_sample_value("dsr_vendor_throttles_total", {"system": "hubspot-ops-test"}) or 0
    telemetry.record_vendor_stats("hubspot-ops-test", {"calls": 12, "throttled": 2, "retries": 3, "waited_seconds": 1.5})
    telemetry.record_run("erasure", "gdpr", "completed", 4.2)
    assert registry.get_sample_value("dsr_vendor_calls_total", {"system": "hubspot-ops-test"}) >= 12
    assert registry.get_sample_value("dsr_vendor_throttles_total", {"system": "hubspot-ops-test"}) == before + 2
    assert registry.get_sample_value("dsr_vendor_retries_total", {"system": "hubspot-ops-test"}) >= 3
    assert registry.get_sample_value("dsr_run_seconds_count",
                                     {"type": "erasure", "regime": "gdpr", "status": "completed"}) >= 1
    assert b"dsr_run_seconds_bucket" in generate_latest(registry)


# -- Prefect: retries, names, tags, artifacts -----------------------------------------------------


def test_only_failures_that_may_pass_are_retried() -> None:
    import requests

    from connectors.base import ConnectorConfigError
    from connectors.hubspot import HubSpotApiError
    from dsr.contract import ConnectorError
    from flows.observe import is_transient

    def wrapped(cause: BaseException) -> ConnectorError:
        try:
            raise ConnectorError("crm: discover failed") from cause
        except ConnectorError as exc:
            return exc

    assert is_transient(HubSpotApiError("x", status=503, category=None, policy=None))
    assert is_transient(HubSpotApiError("x", status=429, category=None, policy="TEN_SECONDLY_ROLLING"))
    assert is_transient(wrapped(requests.ConnectionError("reset")))
    assert is_transient(wrapped(TimeoutError()))
    assert not is_transient(HubSpotApiError("x", status=429, category=None, policy="DAILY"))
    assert not is_transient(HubSpotApiError("x", status=401, category=None, policy=None))
    assert not is_transient(ConnectorConfigError("systems.crm.settings.url: missing"))
    assert not is_transient(ConnectorError("subject has no e-mail address"))


@pytest.mark.prefect
def test_a_vendor_outage_that_passes_is_retried_by_prefect_and_the_run_is_named_tagged_and_reported(
        prefect_harness: None, sqlite_service, sandboxes, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from dsr.models import parse_new_request
    from flows import runtime
    from flows.request import process_request, system_step
    from sandbox.crm_seed import ERASURE_SUBJECT
    from sandbox.kit import FaultConfig

    monkeypatch.setattr(system_step, "retry_delay_seconds", [0, 0])  # the waits, not the retries, are shortened
    service = sqlite_service
    runtime.use_service(service)
    try:
        new = parse_new_request(type="erasure", email=ERASURE_SUBJECT, regime="gdpr", received=datetime.now(UTC))
        request_id = service.submit(new).state.request_id
        service.verify(request_id, method="email-code", note="code returned")
        # HubSpot answers 503 to more calls than its connector retries, then recovers.
        sandboxes["hubspot"].vendor.faults.configure(FaultConfig(error_rate=1.0, burst=6))
        result = process_request(request_id)
    finally:
        runtime.use_service(None)

    assert result["status"] == "completed", result
    hubspot = [e.type for e in service.ledger.events(request_id) if e.payload.get("system") == "hubspot"]
    assert "system.failed" in hubspot and hubspot[-1] == "system.completed"

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        run = next(r for r in runs if r.parameters.get("request_id") == request_id)
        assert run.name == f"erasure-gdpr-{request_id[:8]}"
        assert {"type:erasure", "regime:gdpr"} <= set(run.tags)
        steps = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        hubspot_step = next(t for t in steps if t.name.startswith("hubspot"))
        assert hubspot_step.run_count == 2 and hubspot_step.state.is_completed()
        table = client.read_latest_artifacts(limit=200)
    keys = {a.key: a for a in table}
    outcome = keys[f"request-{request_id}"]
    rows = json.loads(outcome.data) if isinstance(outcome.data, str) else outcome.data
    assert {row["system"]: row["status"] for row in rows}["hubspot"] == "completed"
    sealed = service.state(request_id).bundles[-1]
    assert sealed["sha256"] in keys[f"request-{request_id}-evidence"].data
    everything = json.dumps([outcome.data, keys[f"request-{request_id}-evidence"].data]).lower()
    assert ERASURE_SUBJECT.lower() not in everything


@pytest.mark.prefect
def test_scheduled_flows_are_named_by_kind_and_time_and_tagged(prefect_harness: None, crm_only_service) -> None:  # noqa: ANN001
    from prefect.client.orchestration import get_client

    from flows import runtime
    from flows.deadlines import deadline_sweep

    runtime.use_service(crm_only_service)
    try:
        deadline_sweep()
    finally:
        runtime.use_service(None)
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if r.name.startswith("deadline-sweep-")]
    assert runs and "flow:deadline-sweep" in runs[0].tags


def test_a_failure_alert_names_the_run_and_its_state_only() -> None:
    from flows.alerts import failure_notice

    notice = failure_notice("prefect.flow-run.0d1e", "erasure-gdpr-1a2b3c4d", "prefect.flow-run.Crashed")
    assert notice.subject == "dsr: flow run erasure-gdpr-1a2b3c4d crashed"
    assert notice.fields == {"kind": "flow-run-failed", "flow_run_id": "0d1e", "run_name": "erasure-gdpr-1a2b3c4d",
                             "state": "crashed"}
    assert "dsr status" in notice.body


# -- the intake's per-client limit, shared by every API process -----------------------------------


def test_api_processes_share_one_per_client_limit(ledger_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    from connectors.shared_pacing import SlotStore
    from doors.api.limits import SharedClientLimit

    # Two API processes: each its own engine on the shared database, and 3 submissions a minute per client.
    doors = [SharedClientLimit(SlotStore(ledger_url), "opendsr-submit", 3, 60.0, key=b"k") for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: doors[n % 2].retry_after("203.0.113.9"), range(12)))
    assert sum(1 for wait in answers if wait is None) == 3  # not 3 per process
    assert all(0 < wait <= 60 for wait in answers if wait is not None)
    assert doors[1].retry_after("198.51.100.7") is None  # another client has its own budget
    with doors[0].store.engine.connect() as conn:
        stored = " ".join(row[0] for row in conn.execute(text("SELECT budget FROM dsr_rate_slots")))
    assert "203.0.113.9" not in stored and "198.51.100.7" not in stored  # addresses kept as keyed hashes
    for door in doors:
        door.store.close()


def test_the_evidence_report_is_a_template_that_escapes_and_is_a_pure_function() -> None:
    from dsr.report import render_report

    hostile = {"request_id": "r-1", "type": "erasure", "channel": '<script>alert("x")</script>',
               "status": "completed", "odd": "a & b"}
    systems = {"crm<img src=x>": {"status": "completed", "records_found": 2}}
    first = render_report([], hostile, systems, {"through_seq": 4, "request_id": "r-1"})
    assert first == render_report([], dict(hostile), dict(systems), {"through_seq": 4, "request_id": "r-1"})
    assert "<script>" not in first and "&lt;script&gt;" in first
    assert "<img" not in first and "crm&lt;img src=x&gt;" in first
    assert "a &amp; b" in first  # an unknown field still shown, escaped
    assert "Sealed through ledger event #4" in first


# -- the API: /v1, pages, entity tags, private downloads ------------------------------------------


@pytest.fixture
def officer_api(crm_only_service):  # noqa: ANN001, ANN201 - (TestClient, DsrService, {kind: request id})
    from fastapi.testclient import TestClient

    from doors.api.app import create_app
    from dsr.access import AccessConfig, Role, TokenEntry, token_hash
    from dsr.adapters.storage import config_from_settings, open_store
    from sandbox.crm_seed import ACCESS_SUBJECT
    from tests.test_api import _done

    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash("o" * 40)),))
    app = create_app(crm_only_service, access, open_store(config_from_settings(crm_only_service.settings)))
    ids = {"access": _done(crm_only_service, "access", ACCESS_SUBJECT)}
    with TestClient(app, headers={"Authorization": "Bearer " + "o" * 40}) as client:
        yield client, crm_only_service, ids


def test_lists_come_a_page_at_a_time_under_v1_and_the_old_paths_still_answer(officer_api) -> None:  # noqa: ANN001
    from datetime import UTC, datetime, timedelta

    from dsr.models import parse_new_request

    client, service, ids = officer_api
    start = datetime.now(UTC) - timedelta(days=3)
    for n in range(4):
        service.submit(parse_new_request(type="access", email=f"page{n}@example.com", regime="gdpr",
                                         received=start + timedelta(minutes=n)))
    everything = [row["request_id"] for row in client.get("/v1/requests").json()]
    assert len(everything) == 5
    seen, url = [], "/v1/requests?limit=2"
    while url:
        answer = client.get(url)
        assert answer.status_code == 200 and len(answer.json()) <= 2
        seen += [row["request_id"] for row in answer.json()]
        link = answer.headers.get("link")
        url = link.split(">", 1)[0].lstrip("<") if link else None
        assert link is None or link.endswith('rel="next"') and "limit=2" in link
    assert seen == everything  # every request once, oldest first, across pages
    assert client.get("/v1/requests?after=00000000-0000-4000-8000-000000000000").status_code == 404

    events = client.get(f"/v1/requests/{ids['access']}/timeline").json()
    first = client.get(f"/v1/requests/{ids['access']}/timeline?limit=3")
    assert [e["seq"] for e in first.json()] == [1, 2, 3] and 'after=3' in first.headers["link"]
    rest = client.get(f"/v1/requests/{ids['access']}/timeline?after=3&limit=10000")
    assert [e["seq"] for e in first.json() + rest.json()] == [e["seq"] for e in events] and "link" not in rest.headers

    assert client.get("/requests").json() == client.get("/v1/requests").json()  # the first release's path
    operation = client.get("/openapi.json").json()["paths"]["/requests"]["get"]
    assert operation["deprecated"] is True


def test_a_bundle_carries_its_sealed_hash_as_etag_and_a_package_is_never_cached(officer_api) -> None:  # noqa: ANN001
    import base64
    import hashlib

    from dsr.state import EventType

    client, service, ids = officer_api
    request_id = ids["access"]
    sealed = service.state(request_id).bundles[-1]["sha256"]
    downloads = lambda: sum(1 for e in service.events(request_id) if e.type == EventType.BUNDLE_DOWNLOADED)  # noqa: E731
    before = downloads()
    bundle = client.get(f"/v1/requests/{request_id}/bundle")
    assert bundle.status_code == 200 and hashlib.sha256(bundle.content).hexdigest() == sealed
    assert bundle.headers["etag"] == f'"{sealed}"'
    assert bundle.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(sealed)).decode()}:"
    assert bundle.headers["x-content-type-options"] == "nosniff"
    again = client.get(f"/v1/requests/{request_id}/bundle", headers={"If-None-Match": f'"{sealed}"'})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == f'"{sealed}"'
    assert downloads() == before + 1  # the 304 sent nothing: not a download
    other = client.get(f"/v1/requests/{request_id}/bundle", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200 and other.content == bundle.content

    package = client.get(f"/v1/requests/{request_id}/package")
    assert package.status_code == 200
    assert package.headers["cache-control"] == "no-store" and package.headers["x-content-type-options"] == "nosniff"


def test_bundle_verify_answers_json_with_each_check(tmp_path: Path, systems_file: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from dsr.settings import Settings
    from tests.test_cli import _sealed_bundle

    for key, value in {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
                       "DSR_SYSTEMS_FILE": str(systems_file), "DSR_IDENTITY_KEY": "cli-test-key"}.items():
        monkeypatch.setenv(key, value)
    bundle = _sealed_bundle(Settings())
    intact = _json(["bundle", "verify", str(bundle), "--json"])
    assert intact["ok"] is True and intact["reason"] is None and intact["events"] > 3  # type: ignore[index]
    assert all(check["ok"] for check in intact["checks"])  # type: ignore[index]
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data.replace(b"erasure", b"access!") if item.filename == "request.json" else data)
    broken = _json(["bundle", "verify", str(tampered), "--json"], code=1)
    assert broken["ok"] is False and "request.json" in json.dumps(broken["checks"])  # type: ignore[index]


def test_json_logging_takes_over_the_root_logger_from_prefects_console(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from dsr.logging_setup import configure_logging

    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    prefects = logging.StreamHandler()  # stands in for the console handler Prefect puts on a flow run's root
    root.addHandler(prefects)
    try:
        configure_logging("json", "INFO")
        assert prefects not in root.handlers and len(root.handlers) == 1
        logging.getLogger("flows.request").warning("request r-1 ended completed")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        assert [line["logger"] for line in lines] == ["flows.request"]  # once, as JSON
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.mark.prefect
def test_dsr_run_answers_json_with_each_systems_outcome(prefect_harness: None, cli_env: None) -> None:
    from sandbox.crm_seed import ERASURE_SUBJECT

    submitted = _json(["submit", "--type", "erasure", "--email", ERASURE_SUBJECT, "--regime", "gdpr", "--json"])
    request_id = submitted["request_id"]  # type: ignore[index]
    assert runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "ok"]).exit_code == 0
    ran = runner.invoke(app, ["run", request_id, "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["request_id"] == request_id and result["status"] == "completed"
    assert {s["system"] for s in result["systems"]} >= {"crm"} and all(s["status"] == "completed"
                                                                      for s in result["systems"])
    assert result["bundle"].endswith(".zip") and ERASURE_SUBJECT not in ran.stdout
