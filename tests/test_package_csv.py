"""The subject package's spreadsheets (dsr/package.py): written by str operations for speed, they must
be byte for byte what Python's csv module writes for the same records, whatever the values hold."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from dsr.config import load_policy
from dsr.package import write_package
from tests.conftest import REPO

AWKWARD: list[dict[str, Any]] = [
    {"id": 1, "note": 'She said "no", then left.\nTwo lines', "score": 1.5, "ok": True, "gone": None},
    {"id": 2, "note": "carriage\rreturn and\ttab", "score": -0.0, "ok": False, "nested": {"a": [1, "b,c"]}},
    {"id": 3, "note": "", "score": 1e16, "big": 10**30, "nul": "a\x00b", "unicode": "Zoë, 東京"},
    {"id": 4},  # every other column missing
    {"id": 5, "note": ' leading and trailing ', "list": ["x", None]},
]
LONE: list[dict[str, Any]] = [{"only": ""}, {"only": None}, {"only": "x,y"}]


def _expected_csv(records: list[dict[str, Any]]) -> bytes:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return text.getvalue().encode("utf-8")


def test_package_spreadsheets_are_what_the_csv_module_writes(tmp_path: Path) -> None:
    export = tmp_path / "crm.jsonl"
    with export.open("w", encoding="utf-8") as out:
        for obj, records in (("tickets", AWKWARD), ("flags", LONE)):
            for number, fields in enumerate(records):
                out.write(json.dumps({"object": obj, "id": f"{obj}-{number}", "fields": fields}) + "\n")
    summary = load_policy(REPO / "config" / "policy.yaml").subject_summary
    target = tmp_path / "out" / "package.zip"
    digest, _size = write_package(target, "r-1", {"type": "access"}, {"crm": export}, summary)
    with zipfile.ZipFile(target) as archive:
        assert archive.read("csv/crm/tickets.csv") == _expected_csv(AWKWARD)
        assert archive.read("csv/crm/flags.csv") == _expected_csv(LONE)
        data = json.loads(archive.read("data.json"))
    assert data["systems"]["crm"]["tickets"] == AWKWARD
    # Deterministic: the same export gives the same bytes (its hash is sealed in the evidence).
    again, _ = write_package(tmp_path / "again" / "package.zip", "r-1", {"type": "access"}, {"crm": export}, summary)
    assert again == digest


def test_data_json_is_the_same_whether_the_export_was_staged_canonically_or_not(tmp_path: Path) -> None:
    """The runner stages canonical JSON, whose fields are copied into data.json as they stand; any
    other spelling of the same records (an older staging file, ids that need escaping) must give
    byte for byte the same data.json."""
    from dsr.ledger.events import canonical_json

    ids = ["plain", 7, 'quote"d', "tab\there", "Zoë", "line\u2028sep", None]
    records = [(f"obj{n % 2}", ids[n % len(ids)], fields) for n, fields in enumerate(AWKWARD + LONE)]
    summary = load_policy(REPO / "config" / "policy.yaml").subject_summary
    texts = []
    for name, spell in (("canonical", lambda r: canonical_json(r)), ("loose", lambda r: json.dumps(r, indent=None))):
        export = tmp_path / f"{name}.jsonl"
        export.write_text("".join(spell({"object": o, "id": i, "fields": f}) + "\n" for o, i, f in records),
                          encoding="utf-8")
        write_package(tmp_path / name / "package.zip", "r-1", {"type": "access"}, {"crm": export}, summary)
        with zipfile.ZipFile(tmp_path / name / "package.zip") as archive:
            texts.append(archive.read("data.json"))
        assert json.loads(texts[-1])["systems"]["crm"]["obj0"] == [f for o, _, f in records if o == "obj0"]
    assert texts[0] == texts[1]
