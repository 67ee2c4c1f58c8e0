"""Nothing of the subject is left lying around (DESIGN invariant 7): an access request's exports
wait in private files (0700 directories, 0600 files) and are removed once the package is stored
and recorded; what a killed run leaves behind is removed by the next run; and a staging export
that went missing before packaging is simply exported again."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from chaos.probe import CRASH_ENV
from connectors.registry import build_connector
from dsr.adapters.storage import StorageConfig, open_store
from dsr.models import Status, parse_new_request
from dsr.run import RequestRunner
from dsr.service import DsrService, RequestStateError
from dsr.settings import Settings
from sandbox.crm_seed import ACCESS_SUBJECT
from tests.conftest import REPO


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _submit(service: DsrService, kind: str = "access") -> str:
    new = parse_new_request(type=kind, email=ACCESS_SUBJECT, regime="gdpr", received=datetime.now(UTC),
                            channel="web-form")
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="code returned")
    return request_id


def _connect(service: DsrService, system: str):
    config = service.data_map.systems[system]
    return lambda: build_connector(system, config.kind, config.settings)


def _run_systems(service: DsrService, request_id: str, runner: RequestRunner | None = None) -> RequestRunner:
    """Begin and run every system, not finishing: the runner keeps the request's lease (pass it on)."""
    runner = runner or RequestRunner(service)
    for system in runner.begin(request_id).systems:
        runner.run_system(request_id, system, _connect(service, system))
    return runner


def _run(service: DsrService, request_id: str, runner: RequestRunner | None = None):
    return _run_systems(service, request_id, runner).finish(request_id)


def _package_records(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        return json.loads(archive.read("data.json"))["systems"]


def test_exports_wait_in_private_files_and_are_removed_once_the_package_is_recorded(
        crm_only_service: DsrService) -> None:
    service = crm_only_service
    request_id = _submit(service)
    runner = _run_systems(service, request_id)

    staging = runner.staging_dir(request_id)
    exported = sorted(staging.iterdir())
    assert [p.name for p in exported] == ["crm.jsonl"]
    assert ACCESS_SUBJECT in exported[0].read_text()  # the subject's records, in the clear: hence private
    assert _mode(staging) == 0o700 and _mode(staging.parent) == 0o700
    assert {p.name: _mode(p) for p in exported} == {"crm.jsonl": 0o600}
    refs = sorted(runner.discovered_dir(request_id).iterdir())
    assert _mode(runner.discovered_dir(request_id)) == 0o700 and {_mode(p) for p in refs} == {0o600}

    outcome = runner.finish(request_id)
    assert outcome.ok, outcome.reason
    assert not staging.exists()
    # What stays is what the subject downloads (and its recorded hash), for the service's user only.
    assert sorted(p.name for p in staging.parent.iterdir()) == ["package.zip", "package.zip.sha256"]
    assert outcome.package_path == staging.parent / "package.zip" and _mode(outcome.package_path) == 0o600
    assert sum(len(rows) for rows in _package_records(outcome.package_path)["crm"].values()) > 0
    assert service.state(request_id).package["sha256"]


CRASHING_RUN = """
import json, sys
from chaos.probe import probe_from_env
from connectors.registry import build_connector
from dsr.run import RequestRunner
from dsr.service import DsrService, RequestStateError
from dsr.settings import Settings
from dsr.adapters.storage import StorageConfig, open_store

spec = json.loads(sys.argv[1])
service = DsrService(Settings(**spec["settings"]))
runner = RequestRunner(service, crash=probe_from_env())
for system in runner.begin(spec["request_id"]).systems:
    config = service.data_map.systems[system]
    runner.run_system(spec["request_id"], system, lambda: build_connector(system, config.kind, config.settings))
runner.finish(spec["request_id"])
"""


def _killed_run(service: DsrService, request_id: str, crash_at: str) -> None:
    """Run the request in a child that SIGKILLs itself at `crash_at` (the chaos campaign's hook)."""
    settings = service.settings
    spec = {"request_id": request_id,
            "settings": {"home": str(settings.home), "config_dir": str(settings.config_dir),
                         "systems_file": str(settings.systems_file), "identity_key": "test-identity-key"}}
    child = subprocess.run([sys.executable, "-c", CRASHING_RUN, json.dumps(spec)], cwd=REPO, timeout=120,
                           env={**os.environ, CRASH_ENV: crash_at}, capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]


def test_a_run_killed_after_exporting_leaves_nothing_once_the_next_run_completes(
        crm_only_service: DsrService) -> None:
    service = crm_only_service
    request_id = _submit(service)
    _killed_run(service, request_id, "exported-unrecorded")
    staging = RequestRunner(service).staging_dir(request_id)
    assert [p.name for p in staging.iterdir()] == ["crm.jsonl"]  # the killed run's export, unrecorded
    assert _mode(staging / "crm.jsonl") == 0o600

    outcome = _run(service, request_id)
    assert outcome.ok, outcome.reason
    assert not staging.exists()
    assert sorted(p.name for p in staging.parent.iterdir()) == ["package.zip", "package.zip.sha256"]


@pytest.mark.parametrize("recorded", [False, True], ids=["killed-while-packaging", "killed-after-recording"])
def test_the_next_run_removes_what_a_run_killed_around_packaging_left(
        crm_only_service: DsrService, recorded: bool) -> None:
    service = crm_only_service
    request_id = _submit(service)
    runner = _run_systems(service, request_id)
    staging = runner.staging_dir(request_id)
    export = (staging / "crm.jsonl").read_bytes()
    if recorded:
        assert runner.finish(request_id).ok
        # A kill between recording the package and removing the staging leaves it whole.
        staging.mkdir(mode=0o700, exist_ok=True)
        (staging / "crm.jsonl").write_bytes(export)
    # What a kill inside write_package leaves: a spill directory and a partial package.
    spill = staging.parent / ".spill-k1ll3d" / "0"
    spill.mkdir(parents=True)
    (spill / "0.jsonl").write_bytes(export)
    (staging.parent / "package.zip.part").write_bytes(b"PK\x03\x04" + export[:100])
    (staging / "hubspot.part").write_bytes(export[:100])

    outcome = _run(service, request_id, runner)
    assert outcome.ok, outcome.reason
    assert sorted(p.name for p in staging.parent.iterdir()) == ["package.zip", "package.zip.sha256"]


def test_an_export_lost_before_packaging_is_exported_again(crm_only_service: DsrService) -> None:
    service = crm_only_service
    request_id = _submit(service)
    runner = _run_systems(service, request_id)
    expected = (runner.staging_dir(request_id) / "crm.jsonl").read_text()
    for path in runner.staging_dir(request_id).iterdir():  # e.g. the run resumes on another machine
        path.unlink()

    outcome = _run(service, request_id, runner)
    assert outcome.ok, outcome.reason
    exported = [e.payload for e in service.events(request_id) if e.type == "system.exported"]
    assert len(exported) == 2 and exported[0]["sha256"] == exported[1]["sha256"]
    packaged = _package_records(outcome.package_path)["crm"]
    assert sum(len(rows) for rows in packaged.values()) == len(expected.splitlines())


def test_a_cancelled_requests_staging_goes_with_its_next_run_attempt(crm_only_service: DsrService) -> None:
    service = crm_only_service
    request_id = _submit(service)
    runner = _run_systems(service, request_id)
    service.cancel(request_id, reason="the subject withdrew the request")

    with pytest.raises(RequestStateError, match="cancelled"):
        runner.begin(request_id)
    assert not runner.staging_dir(request_id).exists()


@pytest.mark.parametrize("killed_before_removal", [False, True], ids=["removed-at-once", "removed-by-next-run"])
def test_where_the_store_keeps_packages_elsewhere_no_local_copy_stays(
        crm_only_service: DsrService, tmp_path: Path, killed_before_removal: bool) -> None:
    """S3 (or another directory): the package `_package` writes locally is one more staging copy."""
    service = crm_only_service
    store = open_store(StorageConfig(local_bundle_dir=tmp_path / "store" / "bundles",
                                     local_package_dir=tmp_path / "store" / "packages"))
    store.ensure_ready()
    request_id = _submit(service)
    runner = RequestRunner(service, store=store)
    outcome = _run(service, request_id, runner)
    assert outcome.ok, outcome.reason
    written = runner.staging_dir(request_id).parent / "package.zip"
    assert outcome.package_path == tmp_path / "store" / "packages" / request_id / "package.zip"
    assert _mode(outcome.package_path) == 0o600 and "crm" in _package_records(outcome.package_path)
    if killed_before_removal:
        written.write_bytes(outcome.package_path.read_bytes())  # as a kill before the removal leaves it
        RequestRunner(service, store=store).begin(request_id)
    assert not written.exists()
    assert not any(runner.staging_dir(request_id).parent.iterdir())


@pytest.fixture
def crm_and_portal_service(tmp_path: Path, crm_url: str) -> Iterator[DsrService]:
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    demo["systems"]["crm"]["settings"]["url"] = crm_url
    path = tmp_path / "systems-crm-portal.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {n: demo["systems"][n] for n in ("crm", "portal")}}))
    service = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                                  identity_key="test-identity-key"))
    yield service
    service.close()


def test_a_persons_attached_export_is_kept_private(crm_and_portal_service: DsrService, tmp_path: Path) -> None:
    service = crm_and_portal_service
    request_id = _submit(service)
    assert _run(service, request_id).status == Status.AWAITING_MANUAL_ACTION
    export = tmp_path / "portal.csv"
    export.write_text("account,quotes\nG. Hopper,3\n")
    service.task_done(request_id, "portal", note="exported from the admin", attachments=[export])
    stored = service.attachment_path(request_id, "portal", "portal.csv")
    assert stored.read_bytes() == export.read_bytes()
    assert (_mode(stored), _mode(stored.parent), _mode(stored.parent.parent)) == (0o600, 0o700, 0o700)

    outcome = _run(service, request_id)
    assert outcome.status == Status.COMPLETED, outcome.reason
    assert not RequestRunner(service).staging_dir(request_id).exists()
    assert _mode(outcome.package_path) == 0o600
    assert "portal" in _package_records(outcome.package_path)


def test_the_nightly_purge_removes_the_staging_of_cancelled_requests_and_keeps_open_ones(
        crm_only_service: DsrService) -> None:
    from prefect.logging import disable_run_logger

    from flows import runtime
    from flows.retention import retention_purge

    service = crm_only_service
    cancelled, still_open = _submit(service), _submit(service)
    runner = _run_systems(service, cancelled)
    _run_systems(service, still_open, runner)
    service.cancel(cancelled, reason="the subject withdrew the request")
    runtime.use_service(service)
    try:
        with disable_run_logger():
            assert retention_purge.fn(dry_run=True)["staging_swept"] == 0
            assert (runner.staging_dir(cancelled) / "crm.jsonl").is_file()  # a dry run changes nothing
            assert retention_purge.fn()["staging_swept"] == 1
    finally:
        runtime.use_service(None)
    assert not runner.staging_dir(cancelled).exists()
    assert (runner.staging_dir(still_open) / "crm.jsonl").is_file()  # its re-run resumes from it
    assert _run(service, still_open, runner).ok
