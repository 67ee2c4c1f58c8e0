"""The subject package: the subject's data from every system, machine-readable, plus plain words.

Contents of `package.zip`:
- `data.json`: {"request_id", "systems": {system: {object: [records...]}}}: the portable copy.
- `csv/<system>/<object>.csv`: the same records as spreadsheets, one per object.
- `summary.html` and `summary.txt`: purposes, categories, recipients, retention and rights, in
  the words of the privacy policy, plus what was found where.

Records stream from the per-system export files into the zip; nothing holds the whole export in
memory. Each export is read once (and checked against the hash the ledger recorded as it is
read): one pass splits it by object and, as the records pass, deflates each object's list for
data.json and its spreadsheet's rows in pieces on worker threads (`dsr.zip_pieces`), so the zip is
then joined from pieces already deflated. An object whose records do not all share the columns
the first one had gets its spreadsheet written afresh from its spill file (the records' fields as
data.json text). The zip is deterministic (fixed timestamps, sorted members, pieces cut where the
objects are), so its hash in the evidence bundle identifies exactly what the subject received.

Everything written here holds the subject's data: the request's directory is private (0700) and
every file, spill files, deflated pieces and the package itself, is created 0600. A crash
mid-way leaves a `.spill-*` directory and a `package.zip.part`; `remove_leftovers` is how the next
run clears them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dsr.config import SubjectSummary
from dsr.files import open_private, private_dir, remove_tree
from dsr.ledger.events import canonical_json
from dsr.zip_pieces import DeflatePool, Piece, PieceWriter, append_member, deflate_bytes

FIXED_TIME = (2000, 1, 1, 0, 0, 0)
SPILL_PREFIX = ".spill-"
PART_SUFFIX = ".part"
# Deflate level 1: on exported prose it is ~6x faster than level 6 for ~25% more bytes, and
# compressing data.json plus the CSVs (twice the export) was 70% of packaging time (bench.export).
COMPRESS_LEVEL = 1


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    # A ZipInfo passed to ZipFile.open/writestr keeps its own level (None: zlib's 6), not the archive's.
    info._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]
    info.external_attr = 0o644 << 16
    return info


class ExportChanged(RuntimeError):
    """An export's bytes are not the ones the ledger recorded (its SHA-256 differs)."""

    def __init__(self, system: str) -> None:
        super().__init__(f"export of {system} changed since it was recorded")
        self.system = system


@dataclass
class _ObjectSpill:
    """One object's records of one export, as the split pass leaves them: their fields as data.json
    text, one a line (for a spreadsheet that must be written afresh), and two pieces being deflated
    as the records pass: the object's list in data.json, and its spreadsheet's rows."""

    name: str
    path: Path
    data: PieceWriter
    rows: PieceWriter
    count: int = 0
    columns: dict[str, None] = field(default_factory=dict)  # CSV columns, in first-seen order
    # The rows are made with the columns known so far, so they hold only while no later record
    # brings a new column (and the csv module's one-column special cases are left to it).
    rows_hold: bool = True

    def rows_complete(self) -> bool:
        return self.rows_hold and len(self.columns) >= 2


def _split(export: Path, spill_dir: Path, pool: DeflatePool) -> tuple[list[_ObjectSpill], str]:
    """One pass over an export: per object, a spill file and its data.json and spreadsheet pieces,
    in the order objects first appear; and the SHA-256 of the bytes read (so the export is checked
    against the ledger without a pass of its own)."""
    spills: dict[str, _ObjectSpill] = {}
    handles: dict[str, IO[bytes]] = {}
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        for line in _hashed_lines(export, digest):
            if not line.strip():
                continue
            record = json.loads(line.decode("utf-8"))  # strict, as the staging was written
            obj, fields = record["object"], record["fields"]
            spill = spills.get(obj)
            if spill is None:
                spill = spills[obj] = _ObjectSpill(obj, spill_dir / f"{len(spills)}.jsonl",
                                                   pool.writer(), pool.writer())
                handles[obj] = stack.enter_context(open_private(spill.path, "wb", buffering=_SPILL_BUFFER))
            # As data.json holds it (no newline can occur: JSON escapes them).
            text = _fields_text(line, record)
            handles[obj].write(text + b"\n")
            spill.data.write(text if spill.count == 0 else b", " + text)
            known = len(spill.columns)
            spill.columns.update(dict.fromkeys(fields))
            if spill.count and len(spill.columns) != known:
                spill.rows_hold = False
            if spill.rows_complete():
                spill.rows.write(_csv_row(fields, spill.columns).encode("utf-8"))
            spill.count += 1
    for spill in spills.values():
        spill.data.end()
        spill.rows.end()
    return list(spills.values()), digest.hexdigest()


#: Bytes read (and hashed) from an export at a time, and each spill file's write buffer.
_READ_BYTES = 1 << 20
_SPILL_BUFFER = 256 * 1024


def _hashed_lines(path: Path, digest: Any) -> Iterator[bytes]:
    """The file's lines without their line feeds, the file's bytes fed to `digest` in large blocks
    as they are read (a hash update per line cost more than the hashing)."""
    with path.open("rb") as source:
        rest = b""
        for block in iter(lambda: source.read(_READ_BYTES), b""):
            digest.update(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


_FIELDS_FIRST = b'{"fields":'


def _fields_text(line: bytes, record: Mapping[str, Any]) -> bytes:
    """A record's fields as canonical JSON (sorted keys, compact, UTF-8 kept), as UTF-8 bytes.

    The runner stages each record as canonical JSON, `{"fields":{...},"id":...,"object":"..."}`, so
    the fields' text is already in the line: it is cut out rather than serialised again (encoding
    was a third of packaging's own time). A line of any other shape is serialised afresh.
    """
    if len(record) == 3 and "id" in record and line.startswith(_FIELDS_FIRST):
        tail = (',"id":' + _scalar_json(record["id"]) + ',"object":' + _scalar_json(record["object"]) + "}"
                ).encode("utf-8")
        if line.endswith(tail):
            return line[len(_FIELDS_FIRST):len(line) - len(tail)]
    return canonical_json(record["fields"]).encode("utf-8")


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f-\x9f\u2028\u2029]*')


def _scalar_json(value: Any) -> str:
    """`canonical_json` of an id or object name, without the encoder's call overhead where the
    spelling is obvious (an int, or a string with nothing to escape)."""
    if type(value) is int:
        return str(value)
    if type(value) is str and _PLAIN.fullmatch(value):
        return '"' + value + '"'
    return canonical_json(value)


def _json_lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        for line in handle:
            yield json.loads(line)


def _data_json_pieces(request_id: str, splits: Mapping[str, list[_ObjectSpill]]) -> list[Piece]:
    """data.json: {"request_id", "systems": {system: {object: [fields...]}}}, as the short texts
    around each object's list (deflated here) and the lists deflated as the split pass made them."""
    pieces: list[Piece] = []
    text = '{"request_id": ' + json.dumps(request_id) + ', "systems": {'
    for s_index, (system, spills) in enumerate(sorted(splits.items())):
        text += ("" if s_index == 0 else ", ") + json.dumps(system) + ": {"
        for o_index, spill in enumerate(spills):
            text += ("" if o_index == 0 else "], ") + json.dumps(spill.name) + ": ["
            pieces += [deflate_bytes(text.encode("utf-8"), COMPRESS_LEVEL), spill.data.piece()]
            text = ""
        text += ("" if not spills else "]") + "}"
    pieces.append(deflate_bytes((text + "}}\n").encode("utf-8"), COMPRESS_LEVEL))
    return pieces


def _csv_field(value: Any) -> str:
    """One field as the csv module writes it here (QUOTE_MINIMAL, ``,``, ``"``, ``\n`` line ends):
    quoted when it holds a comma, a quote or a line feed, quotes doubled; other values as `str`."""
    text = value if isinstance(value, str) else str(value)
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text:
        return '"' + text + '"'
    return text


def _csv_header(columns: Iterable[str]) -> str:
    return ",".join(map(_csv_field, columns)) + "\n"


def _csv_row(fields: Mapping[str, Any], columns: Iterable[str]) -> str:
    """A record's row as csv.DictWriter writes it (missing and null fields empty), by str operations:
    its writer scans every character of a field in Python-level steps and was half of packaging's
    own time on long transcripts."""
    return ",".join([_csv_field("" if (v := fields.get(c)) is None else v) for c in columns]) + "\n"


def _write_csv(out: IO[bytes], spill: _ObjectSpill) -> None:
    """A spreadsheet written afresh from the spill file: for an object whose rows, made as the
    split pass went, do not hold (a later record brought a column)."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    columns = list(spill.columns)
    if len(columns) < 2:
        # The csv module's own special cases (a row of one empty field is written as "") stay its own.
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in _json_lines(spill.path):
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
    else:
        text.write(_csv_header(columns))
        for record in _json_lines(spill.path):
            text.write(_csv_row(record, columns))
    text.flush()
    text.detach()


def _humane(key: str) -> str:
    """An internal key in words where the data map gives no name: `cashSale` -> cash sale, `dmp_segment` -> dmp segment."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).replace("_", " ").lower()


def _summary_text(request_id: str, view: Mapping[str, Any], summary: SubjectSummary,
                  counts: Mapping[str, Mapping[str, int]], names: Mapping[str, str] | None = None) -> str:
    names = names or {}
    lines = [f"Your personal data held by {summary.controller}", f"Request {request_id} ({view.get('type')})", ""]
    lines.append("What we found, by system:")
    for system, objects in sorted(counts.items(), key=lambda item: names.get(item[0], item[0]).lower()):
        total = sum(objects.values())
        detail = ", ".join(f"{names.get(f'{system}/{o}', _humane(o))}: {n}" for o, n in sorted(objects.items()))
        lines.append(f"  - {names.get(system, _humane(system))}: {total} record(s) ({detail or 'nothing'})")
    sections: list[tuple[str, Any]] = [
        ("Why we use it", summary.purposes),
        ("Kinds of data", [f"{k}: {v}" for k, v in summary.categories.items()]),
        ("Who receives it", summary.recipients),
        ("How long we keep it", summary.retention),
        ("Your rights", summary.rights),
    ]
    for title, items in sections:
        lines += ["", title + ":"] + [f"  - {item}" for item in items]
    lines += ["", f"Questions: {summary.contact}", "",
              "data.json holds all of it in one machine-readable file; csv/ holds one spreadsheet per kind of record."]
    return "\n".join(lines) + "\n"


def _summary_html(text: str) -> str:
    from dsr.report import html_templates  # one way to write HTML: the templates, autoescaped

    blocks = []
    for block in text.strip().split("\n\n"):
        rows = block.split("\n")
        blocks.append({"head": rows[0], "bullets": [r.strip()[2:] for r in rows[1:] if r.strip().startswith("- ")],
                       "lines": [r for r in rows[1:] if not r.strip().startswith("- ")]})
    return html_templates().get_template("summary.html").render(blocks=blocks)


def write_package(target: Path, request_id: str, request_view: Mapping[str, Any],
                  exports: Mapping[str, Path], summary: SubjectSummary,
                  extra_files: Mapping[str, Path] | None = None,
                  names: Mapping[str, str] | None = None,
                  export_sha256: Mapping[str, str | None] | None = None) -> tuple[str, int]:
    """Write the package atomically to `target`; return (sha256 hex, size in bytes).

    `extra_files` (name in the zip -> file) carries exports a person attached to a manual task.
    `names` (`system` and `system/object` -> words, DataMap.display_names) is how the summary names them.
    `export_sha256` (system -> the SHA-256 the ledger recorded for its export): each export is
    checked while it is read, and ExportChanged raised, before any zip is written, for one whose
    bytes differ.
    """
    private_dir(target.parent)
    tmp = target.with_name(target.name + PART_SUFFIX)
    # mkdtemp makes the spill root 0700; the spill files in it are 0600 (open_private).
    with tempfile.TemporaryDirectory(prefix=SPILL_PREFIX, dir=target.parent) as spill_root:
        splits: dict[str, list[_ObjectSpill]] = {}
        csv_pieces: dict[str, list[Piece]] = {}
        # Deflating is most of packaging's work; the pool's threads do it on the other cores while
        # this one parses and formats (see dsr.zip_pieces).
        with DeflatePool(Path(spill_root), COMPRESS_LEVEL) as pool:
            for index, (system, path) in enumerate(sorted(exports.items())):
                spill_dir = Path(spill_root) / str(index)
                spill_dir.mkdir()
                splits[system], read_sha256 = _split(path, spill_dir, pool)
                if export_sha256 is not None and export_sha256.get(system) != read_sha256:
                    raise ExportChanged(system)
            afresh: dict[str, PieceWriter] = {}
            for system, spills in sorted(splits.items()):
                for spill in spills:
                    if not spill.rows_complete():
                        afresh[f"csv/{system}/{spill.name}.csv"] = writer = pool.writer()
                        _write_csv(writer, spill)  # type: ignore[arg-type]
                        writer.end()
            pool.join()
        for system, spills in sorted(splits.items()):
            for spill in sorted(spills, key=lambda s: s.name):
                name = f"csv/{system}/{spill.name}.csv"
                csv_pieces[name] = ([afresh[name].piece()] if name in afresh else
                                    [deflate_bytes(_csv_header(spill.columns).encode("utf-8"), COMPRESS_LEVEL),
                                     spill.rows.piece()])
        counts = {system: {spill.name: spill.count for spill in spills} for system, spills in splits.items()}
        with open_private(tmp, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            append_member(archive, _member("data.json"), _data_json_pieces(request_id, splits))
            for name, pieces in csv_pieces.items():
                append_member(archive, _member(name), pieces)
            for name, source in sorted((extra_files or {}).items()):
                with source.open("rb") as src, archive.open(_member(name), "w") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            text = _summary_text(request_id, request_view, summary, counts, names)
            archive.writestr(_member("summary.txt"), text)
            archive.writestr(_member("summary.html"), _summary_html(text))
    digest = hashlib.sha256()
    with tmp.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    size = tmp.stat().st_size
    tmp.replace(target)
    return digest.hexdigest(), size


def leftovers(directory: Path) -> list[Path]:
    """What an interrupted `write_package` (or a store's copy) left in a request's package
    directory: spill directories and partial files."""
    if not directory.is_dir():
        return []
    return [entry for entry in sorted(directory.iterdir())
            if entry.name.startswith(SPILL_PREFIX) or entry.name.endswith((PART_SUFFIX, ".tmp"))]


def remove_leftovers(directory: Path) -> list[str]:
    """Remove `leftovers(directory)`; return the names removed. Call it only while no other run of
    the request is packaging (the runner holds the request's lease, or the package is recorded)."""
    return [entry.name for entry in leftovers(directory) if remove_tree(entry)]
