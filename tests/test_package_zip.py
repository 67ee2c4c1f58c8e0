"""The subject package as a zip (dsr/package.py): its members are deflated side by side and joined
into the archive afterwards, so the archive must still be a standard zip that any tool reads, byte
for byte what zipfile writes for the same members one at a time; and an export that is not the
one the ledger recorded is refused before anything is packaged."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.registry import build_connector
from dsr.config import load_policy
from dsr.models import parse_new_request
from dsr.package import ExportChanged, _member, write_package
from dsr.run import RequestRunner
from dsr.service import DsrService
from sandbox.crm_seed import ACCESS_SUBJECT
from tests.conftest import REPO


def _export(path: Path, objects: int = 5, records: int = 400) -> Path:
    """An export of several objects, interleaved as a connector streams them, some of them larger
    than a deflate chunk so that members are deflated in several steps."""
    with path.open("w", encoding="utf-8") as out:
        for number in range(records):
            obj = f"object_{number % objects}"
            fields = {"id": number, "note": f"line {number}, " + "lorem ipsum dolor " * (number % 7 * 900),
                      "when": f"2024-01-{number % 28 + 1:02d}", "amount": number * 1.25}
            out.write(json.dumps({"object": obj, "id": f"{obj}-{number}", "fields": fields}) + "\n")
    return path


def _package(tmp_path: Path, export: Path) -> Path:
    summary = load_policy(REPO / "config" / "policy.yaml").subject_summary
    target = tmp_path / "out" / "package.zip"
    write_package(target, "r-1", {"type": "access"}, {"crm": export, "shop": export}, summary)
    return target


def test_the_package_is_the_zip_zipfile_writes_member_by_member(tmp_path: Path) -> None:
    target = _package(tmp_path, _export(tmp_path / "crm.jsonl"))
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        contents = [(name, archive.read(name)) for name in names]
    assert names[0] == "data.json"
    assert [n for n in names if n.startswith("csv/")] == sorted(
        f"csv/{system}/object_{n}.csv" for system in ("crm", "shop") for n in range(5))
    assert max(len(data) for _name, data in contents) > 1 << 20  # deflated in several steps
    reference = io.BytesIO()
    with zipfile.ZipFile(reference, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents:
            archive.writestr(_member(name), data)
    assert target.read_bytes() == reference.getvalue()
    records = json.loads(dict(contents)["data.json"])["systems"]["crm"]["object_3"]
    assert [r["id"] for r in records] == list(range(3, 400, 5))


@pytest.mark.skipif(shutil.which("unzip") is None, reason="needs the unzip tool")
def test_unzip_reads_and_tests_every_member(tmp_path: Path) -> None:
    target = _package(tmp_path, _export(tmp_path / "crm.jsonl"))
    tested = subprocess.run(["unzip", "-t", str(target)], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout
    shown = subprocess.run(["unzip", "-p", str(target), "csv/shop/object_1.csv"], capture_output=True, check=True)
    with zipfile.ZipFile(target) as archive:
        assert shown.stdout == archive.read("csv/shop/object_1.csv")


def test_an_export_that_is_not_the_recorded_one_is_refused_before_packaging(tmp_path: Path) -> None:
    export = _export(tmp_path / "crm.jsonl", records=20)
    summary = load_policy(REPO / "config" / "policy.yaml").subject_summary
    target = tmp_path / "out" / "package.zip"
    with pytest.raises(ExportChanged) as refused:
        write_package(target, "r-1", {"type": "access"}, {"crm": export}, summary, export_sha256={"crm": "0" * 64})
    assert refused.value.system == "crm"
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no package, no spill, no part


def test_finish_refuses_a_staged_export_altered_after_it_was_recorded(crm_only_service: DsrService) -> None:
    service = crm_only_service
    new = parse_new_request(type="access", email=ACCESS_SUBJECT, regime="gdpr", received=datetime.now(UTC),
                            channel="web-form")
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="code returned")
    runner = RequestRunner(service)
    for system in runner.begin(request_id).systems:
        config = service.data_map.systems[system]
        runner.run_system(request_id, system, lambda: build_connector(system, config.kind, config.settings))
    staged = runner.staging_dir(request_id) / "crm.jsonl"
    staged.write_bytes(staged.read_bytes().replace(b'"object":', b'"object" :', 1))

    with pytest.raises(RuntimeError, match="export of crm changed since it was recorded"):
        runner.finish(request_id)
    assert service.state(request_id).package is None
    assert not runner.staging_dir(request_id).parent.joinpath("package.zip").exists()
