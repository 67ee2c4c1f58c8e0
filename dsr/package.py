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
import queue
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
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


@dataclass
class _ObjectSpill:
    """One object's records of one export: their fields as data.json text, one a line."""

    name: str
    path: Path
    count: int = 0
    columns: dict[str, None] = field(default_factory=dict)  # CSV columns, in first-seen order


def _split(export: Path, spill_dir: Path) -> list[_ObjectSpill]:
    """One pass over an export: a spill file per object, in the order objects first appear."""
    spills: dict[str, _ObjectSpill] = {}
    handles: dict[str, IO[str]] = {}
    with contextlib.ExitStack() as stack, export.open(encoding="utf-8") as source:
        for line in source:
            if not line.strip():
                continue
            record = json.loads(line)
            obj, fields = record["object"], record["fields"]
            spill = spills.get(obj)
            if spill is None:
                spill = spills[obj] = _ObjectSpill(obj, spill_dir / f"{len(spills)}.jsonl")
                handles[obj] = stack.enter_context(open_private(spill.path, "w", encoding="utf-8", newline="\n"))
            # As data.json holds it (no newline can occur: JSON escapes them).
            handles[obj].write(_fields_text(line.rstrip("\n"), record) + "\n")
            spill.columns.update(dict.fromkeys(fields))
            spill.count += 1
    return list(spills.values())


_FIELDS_FIRST = '{"fields":'


def _fields_text(line: str, record: Mapping[str, Any]) -> str:
    """A record's fields as canonical JSON (sorted keys, compact, UTF-8 kept).

    The runner stages each record as canonical JSON, `{"fields":{...},"id":...,"object":"..."}`, so
    the fields' text is already in the line: it is cut out rather than serialised again (encoding
    was a third of packaging's own time). A line of any other shape is serialised afresh.
    """
    if len(record) == 3 and "id" in record and line.startswith(_FIELDS_FIRST):
        tail = ',"id":' + _scalar_json(record["id"]) + ',"object":' + _scalar_json(record["object"]) + "}"
        if line.endswith(tail):
            return line[len(_FIELDS_FIRST):len(line) - len(tail)]
    return canonical_json(record["fields"])


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f-\x9f\u2028\u2029]*')


def _scalar_json(value: Any) -> str:
    """`canonical_json` of an id or object name, without the encoder's call overhead where the
    spelling is obvious (an int, or a string with nothing to escape)."""
    if type(value) is int:
        return str(value)
    if type(value) is str and _PLAIN.fullmatch(value):
        return '"' + value + '"'
    return canonical_json(value)


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="\n") as handle:
        for line in handle:
            yield line.rstrip("\n")


def _write_data_json(out: IO[bytes], request_id: str, splits: Mapping[str, list[_ObjectSpill]]) -> None:
    """Stream data.json: {"request_id", "systems": {system: {object: [fields...]}}}."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="\n")
    text.write('{"request_id": ' + json.dumps(request_id) + ', "systems": {')
    for s_index, (system, spills) in enumerate(sorted(splits.items())):
        text.write(("" if s_index == 0 else ", ") + json.dumps(system) + ": {")
        for o_index, spill in enumerate(spills):
            text.write(("" if o_index == 0 else "], ") + json.dumps(spill.name) + ": [")
            for r_index, fields in enumerate(_lines(spill.path)):
                text.write(fields if r_index == 0 else ", " + fields)
        text.write(("" if not spills else "]") + "}")
    text.write("}}\n")
    text.flush()
    text.detach()


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
        for line in _lines(spill.path):
            writer.writerow({k: "" if v is None else v for k, v in json.loads(line).items()})
    else:
        # The same bytes as csv.DictWriter, by str operations: its writer scans every character of
        # a field in Python-level steps and was half of packaging's own time on long transcripts.
        text.write(",".join(map(_csv_field, columns)) + "\n")
        for line in _lines(spill.path):
            record = json.loads(line)
            text.write(",".join([_csv_field("" if (v := record.get(c)) is None else v) for c in columns]) + "\n")
    text.flush()
    text.detach()


#: Bytes handed from a member's writer thread to the compressing thread at a time, and how many
#: such chunks may wait (so memory stays bounded whatever the export's size).
_CHUNK_BYTES = 1 << 20
_CHUNKS_WAITING = 8


class _ChunkSink(io.RawIOBase):
    """A writable that hands what is written, in chunks, to a queue (the zip member's writer)."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        if len(self._pending) >= _CHUNK_BYTES:
            self._chunks.put(bytes(self._pending))
            self._pending.clear()
        return len(data)

    def finish(self) -> None:
        if self._pending:
            self._chunks.put(bytes(self._pending))
            self._pending.clear()


class _MemberProducer:
    """One zip member's bytes, produced by `produce(out)` in a thread of its own into a bounded queue."""

    def __init__(self, name: str, produce: Callable[[IO[bytes]], None]) -> None:
        self.name = name
        self._chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_CHUNKS_WAITING)
        self._stop = threading.Event()
        self._produce = produce
        self._thread = threading.Thread(target=self._run, name=f"package-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sink = _ChunkSink(self._chunks)
        try:
            self._produce(sink)  # type: ignore[arg-type]
            sink.finish()
            self._chunks.put(None)
        except BaseException as exc:  # noqa: BLE001 - raised again in the writing thread
            if not self._stop.is_set():
                self._chunks.put(exc)

    def chunks(self) -> Iterator[bytes]:
        while True:
            chunk = self._chunks.get()
            if chunk is None:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk

    def close(self) -> None:
        """End the thread (after a failure elsewhere: unblock it, drop what it made)."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._chunks.get(timeout=0.1)
        self._thread.join()


def _write_members(archive: zipfile.ZipFile, members: list[tuple[str, Callable[[IO[bytes]], None]]]) -> None:
    """Write zip members in order, each member's bytes produced in a thread while this one deflates them.

    Deflating (which lets go of the GIL) then overlaps with formatting JSON and CSV (which holds
    it): packaging took about 0.6 of the time on two cores. The bytes are the same, in the same
    order, and a member in the making holds a few chunks at most, so memory stays bounded.
    """
    producers: list[_MemberProducer] = []
    try:
        for index, (name, _produce) in enumerate(members):
            # One member in the making at a time: a second one's formatting only fought the first's
            # for the GIL (measured slower than none).
            producers.append(_MemberProducer(*members[index]))
            with archive.open(_member(name), "w") as out:
                for chunk in producers[index].chunks():
                    out.write(chunk)
    finally:
        for producer in producers:
            producer.close()


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
                  names: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Write the package atomically to `target`; return (sha256 hex, size in bytes).

    `extra_files` (name in the zip -> file) carries exports a person attached to a manual task.
    `names` (`system` and `system/object` -> words, DataMap.display_names) is how the summary names them.
    """
    private_dir(target.parent)
    tmp = target.with_name(target.name + PART_SUFFIX)
    # mkdtemp makes the spill root 0700; the spill files in it are 0600 (open_private).
    with tempfile.TemporaryDirectory(prefix=SPILL_PREFIX, dir=target.parent) as spill_root:
        splits = {}
        for index, (system, path) in enumerate(sorted(exports.items())):
            spill_dir = Path(spill_root) / str(index)
            spill_dir.mkdir()
            splits[system] = _split(path, spill_dir)
        counts = {system: {spill.name: spill.count for spill in spills} for system, spills in splits.items()}
        with open_private(tmp, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            members: list[tuple[str, Callable[[IO[bytes]], None]]] = [
                ("data.json", lambda out: _write_data_json(out, request_id, splits))]
            members += [(f"csv/{system}/{spill.name}.csv", lambda out, spill=spill: _write_csv(out, spill))
                        for system, spills in sorted(splits.items()) for spill in sorted(spills, key=lambda s: s.name)]
            _write_members(archive, members)
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
