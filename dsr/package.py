"""The subject package: the subject's data from every system, machine-readable, plus plain words.

Contents of `package.zip`:
- `data.json`: {"request_id", "systems": {system: {object: [records...]}}}: the portable copy.
- `csv/<system>/<object>.csv`: the same records as spreadsheets, one per object.
- `summary.html` and `summary.txt`: purposes, categories, recipients, retention and rights, in
  the words of the privacy policy, plus what was found where.

Records stream from the per-system export files into the zip; nothing holds the whole export in
memory. Each export is parsed once: one pass splits it into a spill file per object (the records'
fields already serialised for data.json) and learns each object's CSV columns; data.json is then
copied from the spill files and each CSV written from its own. (Reading the export once per
object and per CSV made packaging 28 passes over a gigabyte for the CRM's 9 objects.) The zip
is deterministic (fixed timestamps, sorted members), so its hash in the evidence bundle
identifies exactly what the subject received.

Everything written here holds the subject's data: the request's directory is private (0700) and
every file, spill files and the package itself, is created 0600. A crash mid-way leaves a
`.spill-*` directory and a `package.zip.part`; `remove_leftovers` is how the next run clears them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dsr.config import SubjectSummary
from dsr.files import open_private, private_dir, remove_tree
from dsr.ledger.events import canonical_json

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
    """One object's records of one export: their fields as data.json text, one a line."""

    name: str
    path: Path
    count: int = 0
    columns: dict[str, None] = field(default_factory=dict)  # CSV columns, in first-seen order


def _split(export: Path, spill_dir: Path) -> tuple[list[_ObjectSpill], str]:
    """One pass over an export: a spill file per object, in the order objects first appear, and
    the SHA-256 of the bytes read (so the export is checked against the ledger without a pass of
    its own)."""
    spills: dict[str, _ObjectSpill] = {}
    handles: dict[str, IO[bytes]] = {}
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack, export.open("rb") as source:
        for line in source:
            digest.update(line)
            if not line.strip():
                continue
            record = json.loads(line)
            obj, fields = record["object"], record["fields"]
            spill = spills.get(obj)
            if spill is None:
                spill = spills[obj] = _ObjectSpill(obj, spill_dir / f"{len(spills)}.jsonl")
                handles[obj] = stack.enter_context(open_private(spill.path, "wb"))
            # As data.json holds it (no newline can occur: JSON escapes them).
            handles[obj].write(_fields_text(line.rstrip(b"\n"), record) + b"\n")
            spill.columns.update(dict.fromkeys(fields))
            spill.count += 1
    return list(spills.values()), digest.hexdigest()


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


def _write_data_json(out: IO[bytes], request_id: str, splits: Mapping[str, list[_ObjectSpill]]) -> None:
    """Stream data.json: {"request_id", "systems": {system: {object: [fields...]}}}.

    A spill file is its object's records one a line, and no record's JSON holds a line feed, so
    the object's list is the file with each line feed but the last turned into ", ": copied in
    large blocks, not a line at a time.
    """
    def text(value: str) -> None:
        out.write(value.encode("utf-8"))

    text('{"request_id": ' + json.dumps(request_id) + ', "systems": {')
    for s_index, (system, spills) in enumerate(sorted(splits.items())):
        text(("" if s_index == 0 else ", ") + json.dumps(system) + ": {")
        for o_index, spill in enumerate(spills):
            text(("" if o_index == 0 else "], ") + json.dumps(spill.name) + ": [")
            with spill.path.open("rb") as handle:
                block = handle.read(_CHUNK_BYTES)
                while block:
                    following = handle.read(_CHUNK_BYTES)
                    out.write((block if following else block[:-1]).replace(b"\n", b", "))
                    block = following
        text(("" if not spills else "]") + "}")
    text("}}\n")


def _csv_field(value: Any) -> str:
    """One field as the csv module writes it here (QUOTE_MINIMAL, ``,``, ``"``, ``\n`` line ends):
    quoted when it holds a comma, a quote or a line feed, quotes doubled; other values as `str`."""
    text = value if isinstance(value, str) else str(value)
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text:
        return '"' + text + '"'
    return text


def _write_csv(out: IO[bytes], spill: _ObjectSpill) -> None:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    columns = list(spill.columns)
    if len(columns) < 2:
        # The csv module's own special cases (a row of one empty field is written as "") stay its own.
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in _json_lines(spill.path):
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
    else:
        # The same bytes as csv.DictWriter, by str operations: its writer scans every character of
        # a field in Python-level steps and was half of packaging's own time on long transcripts.
        text.write(",".join(map(_csv_field, columns)) + "\n")
        for record in _json_lines(spill.path):
            text.write(",".join([_csv_field("" if (v := record.get(c)) is None else v) for c in columns]) + "\n")
    text.flush()
    text.detach()


#: Bytes a member's writer gathers before deflating them (memory stays bounded whatever the size).
_CHUNK_BYTES = 1 << 20


class _DeflatingSink(io.RawIOBase):
    """A writable that deflates what is written, as a zip member's data, into a file of its own.

    The same compressor as zipfile's for a ZIP_DEFLATED member (raw deflate at COMPRESS_LEVEL),
    and deflate's output does not depend on how its input is cut, so the bytes are the ones
    `ZipFile.open(info, "w")` would write.
    """

    def __init__(self, target: IO[bytes]) -> None:
        super().__init__()
        self._target = target
        self._compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15)
        self._pending = bytearray()
        self.crc = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        if len(self._pending) >= _CHUNK_BYTES:
            self._deflate()
        return len(data)

    def _deflate(self) -> None:
        # zlib lets go of the GIL in crc32 and compress: another member's thread runs meanwhile.
        self.crc = zlib.crc32(self._pending, self.crc)
        self.size += len(self._pending)
        self._target.write(self._compressor.compress(self._pending))
        self._pending.clear()

    def finish(self) -> None:
        self._deflate()
        self._target.write(self._compressor.flush())


@dataclass(frozen=True)
class _Deflated:
    """A member's deflated data in a file, with what its zip headers need."""

    path: Path
    crc: int
    size: int


def _deflate_member(produce: Callable[[IO[bytes]], None], path: Path) -> _Deflated:
    with open_private(path, "wb") as target:
        sink = _DeflatingSink(target)
        produce(sink)  # type: ignore[arg-type]
        sink.finish()
    return _Deflated(path, sink.crc, sink.size)


def _append_deflated(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: _Deflated) -> None:
    """Add an already deflated member, as `ZipFile.open(info, "w")` would have written it on a
    seekable file: a local header with the final CRC and sizes (no data descriptor), the data,
    and the member in the central directory. zipfile has no public call for this; the steps are
    those of its own writer."""
    info.flag_bits = 0
    info.CRC, info.file_size, info.compress_size = member.crc, member.size, member.path.stat().st_size
    archive._writecheck(info)  # type: ignore[attr-defined]  # duplicate names, zip64 counts
    archive._didModify = True  # type: ignore[attr-defined]
    archive.fp.seek(archive.start_dir)  # type: ignore[union-attr]
    info.header_offset = archive.fp.tell()  # type: ignore[union-attr]
    archive.fp.write(info.FileHeader())  # type: ignore[union-attr]  # zip64 extra only when the sizes need it
    with member.path.open("rb") as source:
        shutil.copyfileobj(source, archive.fp, _CHUNK_BYTES)  # type: ignore[misc]
    archive.start_dir = archive.fp.tell()  # type: ignore[union-attr]
    archive.filelist.append(info)
    archive.NameToInfo[info.filename] = info


def _write_members(archive: zipfile.ZipFile, members: list[tuple[str, Callable[[IO[bytes]], None]]],
                   work_dir: Path) -> None:
    """Write zip members in order, each produced and deflated in a worker thread into a file of its
    own, then joined into the zip as it stands.

    Deflating is most of packaging's work and lets go of the GIL, so members deflate side by side
    on as many cores as there are (data.json with the spreadsheets), while the JSON and CSV
    formatting (which holds the GIL) interleaves with them. The zip's bytes are the same as one
    member at a time would make; each member's data waits deflated (a quarter of its size or
    less) in the private spill directory.
    """
    workers = max(1, min(len(members), os.cpu_count() or 1, _MAX_WORKERS))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="package")
    try:
        futures = [pool.submit(_deflate_member, produce, work_dir / f"{index}.deflate")
                   for index, (_name, produce) in enumerate(members)]
        for (name, _produce), future in zip(members, futures, strict=True):
            deflated = future.result()
            _append_deflated(archive, _member(name), deflated)
            deflated.path.unlink()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: Members deflated at once at most: more threads than cores only fight for the GIL.
_MAX_WORKERS = 4


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
        splits = {}
        for index, (system, path) in enumerate(sorted(exports.items())):
            spill_dir = Path(spill_root) / str(index)
            spill_dir.mkdir()
            splits[system], digest = _split(path, spill_dir)
            if export_sha256 is not None and export_sha256.get(system) != digest:
                raise ExportChanged(system)
        counts = {system: {spill.name: spill.count for spill in spills} for system, spills in splits.items()}
        with open_private(tmp, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            members: list[tuple[str, Callable[[IO[bytes]], None]]] = [
                ("data.json", lambda out: _write_data_json(out, request_id, splits))]
            members += [(f"csv/{system}/{spill.name}.csv", lambda out, spill=spill: _write_csv(out, spill))
                        for system, spills in sorted(splits.items()) for spill in sorted(spills, key=lambda s: s.name)]
            _write_members(archive, members, Path(spill_root))
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
