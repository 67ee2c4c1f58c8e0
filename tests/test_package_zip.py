"""The subject package as a zip (dsr/package.py, dsr/zip_pieces.py): its members are deflated in
pieces on worker threads and joined afterwards, so the archive must still be a standard zip that
any tool reads, holding exactly the members the records make; and an export that is not the one
the ledger recorded is refused before anything is packaged."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import subprocess
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.registry import build_connector
from dsr.config import load_policy
from dsr.models import parse_new_request
from dsr.package import ExportChanged, write_package
from dsr.run import RequestRunner
from dsr.service import DsrService
from dsr.zip_pieces import crc32_combine
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


def test_the_package_holds_each_member_whole_and_zipfile_reads_it(tmp_path: Path) -> None:
    target = _package(tmp_path, _export(tmp_path / "crm.jsonl"))
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None  # every member inflates, and to its recorded CRC-32
        names = archive.namelist()
        contents = {name: archive.read(name) for name in names}
    assert names[0] == "data.json"
    assert [n for n in names if n.startswith("csv/")] == sorted(
        f"csv/{system}/object_{n}.csv" for system in ("crm", "shop") for n in range(5))
    assert max(len(data) for data in contents.values()) > 1 << 20  # deflated in several chunks
    records = json.loads(contents["data.json"])["systems"]
    assert records["crm"] == records["shop"]
    assert [r["id"] for r in records["crm"]["object_3"]] == list(range(3, 400, 5))
    rows = list(csv.DictReader(io.StringIO(contents["csv/shop/object_3.csv"].decode("utf-8"))))
    assert [int(row["id"]) for row in rows] == list(range(3, 400, 5))
    assert rows[1]["note"] == records["shop"]["object_3"][1]["note"]
    # Deterministic: the same exports give the same bytes (the package's hash is sealed).
    again = _package(tmp_path / "again", _export(tmp_path / "crm.jsonl"))
    assert again.read_bytes() == target.read_bytes()


UNIFORM: list[dict[str, Any]] = [
    {"id": 1, "note": 'She said "no", then left.\nTwo lines', "score": 1.5, "ok": True, "gone": None},
    {"id": 2, "note": "carriage\rreturn and\ttab", "score": -0.0, "ok": False, "gone": {"a": [1, "b,c"]}},
    {"id": 3, "note": "", "score": 1e16, "ok": None, "gone": "Zoë, 東京 a\x00b"},
    {"id": 10**30, "note": " leading and trailing ", "score": None, "ok": "", "gone": ["x", None]},
]


def test_spreadsheets_made_as_records_pass_are_what_the_csv_module_writes(tmp_path: Path) -> None:
    """Records that all have the same fields get their rows as the split pass reads them (others
    are written afresh afterwards): the same bytes as csv.DictWriter either way."""
    export = tmp_path / "crm.jsonl"
    export.write_text("".join(json.dumps({"object": "tickets", "id": n, "fields": fields}) + "\n"
                              for n, fields in enumerate(UNIFORM * 50)), encoding="utf-8")
    target = _package(tmp_path, export)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(UNIFORM[0]), lineterminator="\n")
    writer.writeheader()
    for fields in UNIFORM * 50:
        writer.writerow({k: "" if v is None else v for k, v in fields.items()})
    with zipfile.ZipFile(target) as archive:
        assert archive.read("csv/crm/tickets.csv") == text.getvalue().encode("utf-8")
        assert json.loads(archive.read("data.json"))["systems"]["crm"]["tickets"] == UNIFORM * 50


def test_crc32_of_joined_pieces_is_the_crc32_of_the_whole() -> None:
    rng = random.Random(5)
    for _ in range(50):
        first, second = rng.randbytes(rng.randint(0, 5000)), rng.randbytes(rng.randint(0, 5000))
        assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)
    big = rng.randbytes(3_000_001)
    assert crc32_combine(zlib.crc32(b"head"), zlib.crc32(big), len(big)) == zlib.crc32(b"head" + big)


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
        runner.run_system(request_id, system, lambda system=system, config=config: build_connector(system, config.kind, config.settings))
    staged = runner.staging_dir(request_id) / "crm.jsonl"
    staged.write_bytes(staged.read_bytes().replace(b'"object":', b'"object" :', 1))

    with pytest.raises(RuntimeError, match="export of crm changed since it was recorded"):
        runner.finish(request_id)
    assert service.state(request_id).package is None
    assert not runner.staging_dir(request_id).parent.joinpath("package.zip").exists()


def test_the_members_are_the_same_whichever_deflater_makes_the_pieces(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """ISA-L deflates the pieces; zlib in its place makes the same standard members (only the
    compressed bytes may differ), so any inflater reads the package."""
    import dsr.zip_pieces

    export = _export(tmp_path / "crm.jsonl")
    packages = [_package(tmp_path / "fast", export)]
    monkeypatch.setattr(dsr.zip_pieces, "_deflate", zlib)
    packages.append(_package(tmp_path / "zlib", export))
    with zipfile.ZipFile(packages[0]) as fast, zipfile.ZipFile(packages[1]) as plain:
        assert fast.namelist() == plain.namelist()
        for name in fast.namelist():
            assert fast.read(name) == plain.read(name), name
