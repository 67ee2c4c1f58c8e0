"""Evidence bundles, format `dsr-evidence-bundle/2`: build, store, verify.

A bundle is a zip holding one request's evidence, sealed by an Ed25519 signature:

    manifest.json        what the seal covers (canonical JSON, signed)
    request.json         the request record, derived from the ledger by the caller
    timeline.jsonl       every ledger event up to the seal, one canonical JSON object a line
    systems/<name>.json  one per system: found, actions, receipts, re-query, exemptions
    discovered/<name>.jsonl  the refs discovery found in a system (format 2; see dsr.discovery)
    report.html          the same, readable and printable
    manifest.sig         raw 64-byte Ed25519 signature over the exact bytes of manifest.json

Format 2 adds only the `discovered/` members: a `system.discovered` event records the SHA-256 of
its refs file (`refs_sha256`) instead of the refs themselves, and the file travels in the bundle,
so the timeline stays small however much a subject owns. Verification checks each such member
against the hash in the chain. Format 1 bundles (refs inline in the timeline) still verify.

The manifest lists the SHA-256 and size of every other member, the last event's sequence and hash,
and the signer's fingerprint; the signature over the manifest therefore covers everything.

Evidence is a pure function of the ledger (DESIGN invariant 5): the same events and views give the
same bytes, with no wall clock and no randomness anywhere (Ed25519 signatures are deterministic).
It never holds personal data (invariant 4): sealing refuses anything that looks like an e-mail
address, because a stored bundle is kept for years, often on write-once storage.

Memory stays bounded by the events, not by what a subject owns: refs files are hashed, screened
and copied into the zip in chunks, and verification hashes members as a stream, keeping only the
manifest, request and timeline.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dsr.discovery import REFS_SHA256
from dsr.files import create_exclusive
from dsr.ledger.events import ChainError, LedgerEvent, canonical_json, parse_timestamp, verify_chain
from dsr.personal_text import (  # contains_email_address is re-exported: older code imports it from here
    contains_email_address,
    may_hold_email_address,
)
from dsr.report import render_report
from dsr.signing import (
    SIGNATURE_ALGORITHM,
    SIGNATURE_BYTES,
    Signer,
    public_key_fingerprint,
    verify_signature,
)

BUNDLE_FORMAT = "dsr-evidence-bundle/2"
#: Formats `verify_bundle` accepts. A bundle without `discovered/` members is still written as
#: format 1, byte for byte as before (old chains, retention runs), so it rebuilds identically.
FORMATS = ("dsr-evidence-bundle/1", BUNDLE_FORMAT)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
REQUEST = "request.json"
TIMELINE = "timeline.jsonl"
REPORT = "report.html"
SYSTEMS_DIR = "systems/"
DISCOVERED_DIR = "discovered/"
DISCOVERED_EVENT = "system.discovered"
_CHUNK = 1 << 20

# Fixed zip settings: any change here changes every rebuilt bundle's bytes, so treat them as part
# of the format. (The manifest and signature cover member contents, not the compressed stream, so a
# different zlib build changes the zip bytes but never the verdict.)
_COMPRESSION = zipfile.ZIP_DEFLATED
_COMPRESS_LEVEL = 9
_FILE_MODE = 0o100644  # regular file, rw-r--r--
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip header can hold

# A member name is a single safe path component: system names become file names.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EVIDENCE_FILE = re.compile(r"^evidence-v([1-9][0-9]*)\.zip$")

# Verification reads at most this much of any one member: a hostile zip must not exhaust memory.
_MAX_MEMBER_BYTES = 256 * 1024 * 1024
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class BundleError(Exception):
    """A bundle cannot be sealed or stored; the message says why (never quoting personal data)."""


@dataclass
class BundleVerification:
    """The verdict on one bundle, check by check.

    Attributes:
        ok: True only when every check passed.
        checks: (what was checked, passed, detail), in the order they ran.
        reason: The first failed check's name and detail; None when ok.
        request_id: The manifest's request id, when the manifest could be read.
        version: The version from an `evidence-v<N>.zip` file name; None for bytes or other names.
            It is not covered by the signature.
        events: How many timeline events verified as a chain.
        through_seq: The sequence of the timeline's last event, when it matches the signed manifest.
        last_event_hash: That event's hash (to compare with the live ledger).
    """

    ok: bool
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    reason: str | None = None
    request_id: str | None = None
    version: int | None = None
    events: int = 0
    through_seq: int | None = None
    last_event_hash: str | None = None


# --- building -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FileMember:
    """A member copied from a file in chunks; its hash and size were taken when it was screened."""

    path: Path
    sha256: str
    bytes: int


def build_bundle(
    events: Sequence[LedgerEvent],
    *,
    request_view: Mapping[str, Any],
    system_views: Mapping[str, Mapping[str, Any]],
    signer: Signer,
    discovered: Mapping[str, Path] | None = None,
) -> bytes:
    """Seal one request's evidence into a signed, reproducible zip.

    Args:
        events: One request's ledger events in sequence order, from seq 1 up to the seal point.
        request_view: The request record derived from those events (JSON-able). Written to
            request.json with its `request_id` set to the chain's (an `id` or `request_id` naming
            another request is refused).
        system_views: System name -> that system's result (JSON-able), one systems/<name>.json each.
        signer: The key that signs the manifest.
        discovered: System name -> its refs file (`dsr.discovery`), for every system whose
            `system.discovered` event records a `refs_sha256`; each becomes
            discovered/<name>.jsonl. Streamed: never held in memory.

    Returns:
        The bundle's bytes; the same inputs always give the same bytes.

    Raises:
        BundleError: No events, a chain that does not verify, a request view about another request,
            an unusable system name, a value that is not JSON-able, a refs file that is missing or
            not the one the chain recorded, or anything that looks like an e-mail address.
    """
    events = list(events)
    if not events:
        raise BundleError("cannot seal a bundle without ledger events")
    try:
        verify_chain(events)
    except ChainError as exc:
        raise BundleError(f"refusing to seal a broken chain: {exc}") from exc
    last = events[-1]
    request_id = last.request_id

    request_doc = _request_document(request_view, request_id)
    members: dict[str, bytes] = {
        REQUEST: _json_member(REQUEST, request_doc),
        TIMELINE: _timeline_member(events),
    }
    for name in [*system_views, *(discovered or {})]:
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise BundleError(f"system name {name!r} cannot be a bundle member name")
    for name in sorted(system_views):
        members[f"{SYSTEMS_DIR}{name}.json"] = _json_member(f"{SYSTEMS_DIR}{name}.json", system_views[name])
    files = _discovered_members(events, discovered or {})
    # Report on (and screen) exactly what was written, not the caller's objects before serialising.
    request_doc = json.loads(members[REQUEST])
    system_docs = {name: json.loads(members[f"{SYSTEMS_DIR}{name}.json"]) for name in sorted(system_views)}

    manifest_head = {
        "format": BUNDLE_FORMAT if files else FORMATS[0],
        "request_id": request_id,
        "through_seq": last.seq,
        "last_event_hash": last.hash,
        "generated_at": last.at,
        "signer_fingerprint": signer.fingerprint,
        "signature_algorithm": SIGNATURE_ALGORITHM,
    }
    # The report shows the seal and the hashes of the data members; it cannot show its own.
    report_summary = {**manifest_head, "members": _member_index(members, files)}
    members[REPORT] = render_report(events, request_doc, system_docs, report_summary).encode("utf-8")

    _refuse_personal_data(request_doc, system_docs, events, members[REPORT])

    manifest = {**manifest_head, "members": _member_index(members, files)}
    manifest_bytes = canonical_json(manifest).encode("utf-8")
    signature = signer.sign(manifest_bytes)

    ordered = [(MANIFEST, manifest_bytes), *_ordered_members(members, files), (SIGNATURE, signature)]
    return _zip(ordered, _zip_time(last.at))


def discovered_hashes(events: Sequence[LedgerEvent]) -> dict[str, str]:
    """System -> the refs SHA-256 its (last) `system.discovered` event recorded (format 2 events)."""
    found: dict[str, str] = {}
    for event in events:
        if event.type == DISCOVERED_EVENT and isinstance(event.payload.get(REFS_SHA256), str):
            found[str(event.payload.get("system"))] = event.payload[REFS_SHA256]
    return found


def _discovered_members(events: Sequence[LedgerEvent], files: Mapping[str, Path]) -> dict[str, _FileMember]:
    """Screen each refs file the chain names: present, the hash the chain recorded, no address."""
    recorded = discovered_hashes(events)
    extra = sorted(set(files) - set(recorded))
    if extra:
        raise BundleError(f"refs files given for {', '.join(extra)}, but the chain records no such discovery")
    members: dict[str, _FileMember] = {}
    for system, expected in sorted(recorded.items()):
        name = f"{DISCOVERED_DIR}{system}.jsonl"
        path = files.get(system)
        if path is None:
            raise BundleError(f"{name}: the chain records discovered refs for {system}, but no refs file was given")
        digest, size, number = hashlib.sha256(), 0, 0
        try:
            with Path(path).open("rb") as handle:
                # A block of whole lines at a time: one quick look at the block clears every line
                # in it (a look per line was most of sealing's time on a large refs file).
                while lines := handle.readlines(_CHUNK):
                    block = b"".join(lines)
                    digest.update(block)
                    size += len(block)
                    if may_hold_email_address(block.decode("utf-8", "replace")):
                        for offset, line in enumerate(lines, start=number + 1):
                            if contains_email_address(line.decode("utf-8", "replace")):
                                raise BundleError(f"{name} line {offset} looks like an e-mail address; evidence "
                                                  "carries only the keyed identity hash (DESIGN invariant 4)")
                    number += len(lines)
        except OSError as exc:
            raise BundleError(f"{name}: cannot read the refs file ({exc.strerror or exc})") from exc
        if digest.hexdigest() != expected:
            raise BundleError(f"{name}: the refs file is not the one the chain recorded at discovery")
        members[name] = _FileMember(Path(path), expected, size)
    return members


def _request_document(request_view: Mapping[str, Any], request_id: str) -> dict[str, Any]:
    doc = dict(request_view)
    for key in ("request_id", "id"):
        if key in doc and doc[key] is not None and str(doc[key]) != request_id:
            raise BundleError(f"request view {key} {doc[key]!r} is not the ledger's request {request_id!r}")
    # verify_bundle matches request.json to the manifest on this key.
    doc["request_id"] = request_id
    return doc


def _json_member(name: str, value: Any) -> bytes:
    try:
        return canonical_json(value).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{name}: not JSON-able ({exc})") from exc


def _timeline_member(events: Sequence[LedgerEvent]) -> bytes:
    return "".join(canonical_json(event.to_dict()) + "\n" for event in events).encode("utf-8")


def _member_index(members: Mapping[str, bytes],
                  files: Mapping[str, _FileMember] | None = None) -> dict[str, dict[str, Any]]:
    index = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
             for name, data in members.items()}
    index.update({name: {"sha256": f.sha256, "bytes": f.bytes} for name, f in (files or {}).items()})
    return index


def _ordered_members(members: Mapping[str, bytes],
                     files: Mapping[str, _FileMember] | None = None) -> list[tuple[str, bytes | _FileMember]]:
    systems = sorted(name for name in members if name.startswith(SYSTEMS_DIR))
    order: list[tuple[str, bytes | _FileMember]] = [(REQUEST, members[REQUEST]), (TIMELINE, members[TIMELINE])]
    order += [(name, members[name]) for name in systems]
    order += sorted((files or {}).items())
    order.append((REPORT, members[REPORT]))
    return order


def _zip_time(stamp: str) -> tuple[int, int, int, int, int, int]:
    # The last event's time, so `unzip -l` shows when the evidence ends; clamped to what zip can hold.
    moment = parse_timestamp(stamp)
    if moment.year < 1980:
        return _ZIP_EPOCH
    if moment.year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    # Zip stores seconds in 2-second steps; round down here so the header says what we meant.
    second = moment.second - moment.second % 2
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, second)


def _zip(members: Sequence[tuple[str, bytes | _FileMember]], date_time: tuple[int, int, int, int, int, int]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=_COMPRESSION, compresslevel=_COMPRESS_LEVEL) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = _COMPRESSION
            info.create_system = 3  # Unix, whatever the building machine is
            info.external_attr = _FILE_MODE << 16
            if isinstance(data, bytes):
                archive.writestr(info, data, compress_type=_COMPRESSION, compresslevel=_COMPRESS_LEVEL)
            else:
                _copy_file_member(archive, info, data)
    return buffer.getvalue()


def _copy_file_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: _FileMember) -> None:
    """Copy a screened file into the zip in chunks, re-hashing: it must not change in between."""
    info.file_size = member.bytes  # as writestr does: lets zipfile decide on zip64 up front
    info._compresslevel = _COMPRESS_LEVEL  # type: ignore[attr-defined]  # what writestr sets
    digest = hashlib.sha256()
    with member.path.open("rb") as src, archive.open(info, "w") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != member.sha256:
        raise BundleError(f"{info.filename}: the refs file changed while the bundle was being sealed")


def _refuse_personal_data(
    request_doc: Mapping[str, Any],
    system_views: Mapping[str, Mapping[str, Any]],
    events: Sequence[LedgerEvent],
    report: bytes,
) -> None:
    """Raise BundleError when anything looks like an e-mail address, naming where (not what)."""
    places: list[tuple[str, Any]] = [(REQUEST, request_doc)]
    places += [(f"{SYSTEMS_DIR}{name}.json", system_views[name]) for name in sorted(system_views)]
    places += [(f"{TIMELINE} seq {event.seq}", event.to_dict()) for event in events]
    for member, value in places:
        for path, text in _strings(value, ""):
            if contains_email_address(text):
                raise BundleError(
                    f"{member} at {path or '/'} looks like an e-mail address; evidence carries only the "
                    "keyed identity hash (DESIGN invariant 4)"
                )
    if contains_email_address(report.decode("utf-8")):
        raise BundleError(f"{REPORT} looks like it holds an e-mail address (DESIGN invariant 4)")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    # Keys count too: a mapping keyed by address is as much a leak as a value.
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{path}/{key}", str(key)
            yield from _strings(item, f"{path}/{key}")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}/{index}")
    elif isinstance(value, str):
        yield path, value


# --- storing ------------------------------------------------------------------------------------


def bundle_path(directory: Path, request_id: str, version: int) -> Path:
    """Where version `version` of a request's bundle lives: <dir>/<request_id>/evidence-v<N>.zip."""
    if not _SAFE_NAME.match(request_id):
        raise BundleError(f"request id {request_id!r} cannot be used as a directory name")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"bundle version must be a positive integer, not {version!r}")
    return Path(directory) / request_id / f"evidence-v{version}.zip"


def write_bundle(directory: Path, data: bytes, request_id: str, version: int) -> Path:
    """Store a bundle atomically, never replacing a different one.

    Writing the same bytes again is a no-op that returns the same path, so a re-run of the seal step
    is harmless.

    Args:
        directory: The bundle store's root.
        data: The bundle, as returned by `build_bundle`.
        request_id: The request the bundle is about.
        version: The bundle's version number (1, 2, ...).

    Returns:
        The stored file's path.

    Raises:
        BundleError: An unusable request id or version, or a different file already at that path.
    """
    target = bundle_path(directory, request_id, version)
    if target.exists() or not create_exclusive(target, data, 0o644):
        return _same_or_refuse(target, data)
    return target


def _same_or_refuse(target: Path, data: bytes) -> Path:
    if target.read_bytes() == data:
        return target
    raise BundleError(f"{target} already exists with different contents; refusing to overwrite it")


# --- verifying ----------------------------------------------------------------------------------


class _Checks:
    """Collects check lines; the first failure becomes the reason."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, bool, str]] = []

    def add(self, what: str, passed: bool, detail: str) -> bool:
        self.lines.append((what, passed, detail))
        return passed

    @property
    def reason(self) -> str | None:
        for what, passed, detail in self.lines:
            if not passed:
                return f"{what}: {detail}"
        return None


def verify_bundle(source: Path | bytes, public_key: Ed25519PublicKey) -> BundleVerification:
    """Check a bundle offline: signature, member hashes, chain, and that they all agree.

    Never raises for a bad bundle: every problem becomes a failed check, and checks that do not
    depend on a failed one still run, so an auditor sees everything that is wrong at once.

    Args:
        source: A bundle file, or its bytes.
        public_key: The signer's Ed25519 public key (see `dsr.signing.load_public_key`).

    Returns:
        The verdict with one line per check.

    Raises:
        TypeError: `public_key` is not an Ed25519 public key (a caller's mistake, not a bad bundle).
    """
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"public_key must be an Ed25519PublicKey, not {type(public_key).__name__}")
    checks = _Checks()
    result = BundleVerification(ok=False)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        match = _EVIDENCE_FILE.match(path.name)
        result.version = int(match.group(1)) if match else None
        try:
            data = path.read_bytes()
        except OSError as exc:
            checks.add("bundle readable", False, f"cannot read {path}: {exc.strerror or exc}")
            return _finish(result, checks)
    else:
        data = bytes(source)
    try:
        _verify(data, public_key, checks, result)
    except Exception as exc:  # noqa: BLE001 - the contract is a verdict, never a traceback
        checks.add("bundle structure", False, f"unexpected {type(exc).__name__}: {exc}")
    return _finish(result, checks)


def _finish(result: BundleVerification, checks: _Checks) -> BundleVerification:
    result.checks = checks.lines
    result.reason = checks.reason
    result.ok = bool(checks.lines) and result.reason is None
    return result


def _verify(data: bytes, public_key: Ed25519PublicKey, checks: _Checks, result: BundleVerification) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        checks.add("zip readable", False, f"not a readable zip ({exc})")
        return
    names = [info.filename for info in infos]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        # Two entries under one name: different tools would show different contents.
        checks.add("zip readable", False, f"duplicate member names: {', '.join(duplicates)}")
        return
    checks.add("zip readable", True, f"{len(infos)} members")
    by_name = {info.filename: info for info in infos}

    # Manifest.
    manifest_bytes, problem = _read_member(archive, by_name, MANIFEST, _MAX_MANIFEST_BYTES)
    manifest: Any = None
    if manifest_bytes is not None:
        try:
            manifest = json.loads(manifest_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            problem = f"not JSON ({exc})"
        else:
            problem = _manifest_shape_problem(manifest)
    if not checks.add("manifest", problem is None, problem or "present and well-formed"):
        return
    assert manifest_bytes is not None
    request_id = manifest["request_id"]
    result.request_id = request_id

    fmt = manifest["format"]
    checks.add("format", fmt in FORMATS, fmt if fmt in FORMATS else f"unknown format {fmt!r}")

    # Signer and signature: the signature over the manifest is what makes every hash trustworthy.
    given = public_key_fingerprint(public_key)
    claimed = manifest["signer_fingerprint"]
    checks.add(
        "signer",
        claimed == given,
        f"fingerprint {given}" if claimed == given
        else f"signed by key {claimed[:16]}..., not the given key {given[:16]}...",
    )
    signature, problem = _read_member(archive, by_name, SIGNATURE, SIGNATURE_BYTES)
    if signature is not None and len(signature) != SIGNATURE_BYTES:
        problem = f"{len(signature)} bytes, expected {SIGNATURE_BYTES}"
    if problem is None and signature is not None:
        valid = verify_signature(public_key, signature, manifest_bytes)
        problem = None if valid else "does not verify over manifest.json with the given public key"
    checks.add("signature", problem is None, problem or "Ed25519 signature over manifest.json verifies")

    # Members: each present, the right size, the right hash. Only the members parsed below are
    # kept in memory; the others (refs files can be large) are hashed as a stream.
    listed: dict[str, Mapping[str, Any]] = manifest["members"]
    contents: dict[str, bytes] = {}
    intact: set[str] = set()
    for name in sorted(listed):
        expected = listed[name]
        if name in (REQUEST, TIMELINE):
            content, problem = _read_member(archive, by_name, name, min(expected["bytes"], _MAX_MEMBER_BYTES))
            digest, size = (hashlib.sha256(content).hexdigest(), len(content)) if content is not None else ("", 0)
        else:
            content = None
            digest, size, problem = _hash_member(archive, by_name, name, expected["bytes"])
        if problem is None:
            if size != expected["bytes"]:
                problem = f"{size} bytes, manifest says {expected['bytes']}"
            elif digest != expected["sha256"]:
                problem = "SHA-256 differs from the manifest (content altered)"
            else:
                intact.add(name)
                if content is not None:
                    contents[name] = content
        checks.add(f"member {name}", problem is None, problem or f"sha256 {expected['sha256'][:16]}..., "
                   f"{expected['bytes']} bytes")

    unlisted = sorted(set(by_name) - set(listed) - {MANIFEST, SIGNATURE})
    missing_core = [name for name in (REQUEST, TIMELINE, REPORT) if name not in listed]
    if unlisted:
        checks.add("no unlisted members", False, f"not in the manifest: {', '.join(unlisted)}")
    elif missing_core:
        checks.add("no unlisted members", False, f"manifest does not list {', '.join(missing_core)}")
    else:
        checks.add("no unlisted members", True, "every member is in the manifest")

    # Timeline: a chain of its own, ending exactly where the manifest says the seal is.
    if TIMELINE in contents:
        events, problem = _parse_timeline(contents[TIMELINE])
        if problem is None:
            try:
                result.events = verify_chain(events, request_id=request_id)
            except ChainError as exc:
                problem = str(exc)
        checks.add("timeline chain", problem is None,
                   problem or f"{result.events} events, hash chain intact")
        if problem is None:
            last = events[-1] if events else None
            mismatch = _seal_mismatch(manifest, last)
            checks.add("timeline matches manifest", mismatch is None,
                       mismatch or f"through seq {manifest['through_seq']}, last hash matches")
            if mismatch is None and last is not None:
                result.through_seq, result.last_event_hash = last.seq, last.hash
            if fmt != FORMATS[0]:
                problem = _discovered_mismatch(events, listed, intact)
                checks.add("discovered refs match the timeline", problem is None,
                           problem or _discovered_detail(listed))
    else:
        checks.add("timeline chain", False, f"{TIMELINE} missing or altered")

    # request.json is about the request the manifest names.
    if REQUEST in contents:
        problem = None
        try:
            request_doc = json.loads(contents[REQUEST].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            problem = f"not JSON ({exc})"
        else:
            found = None
            if isinstance(request_doc, dict):
                found = request_doc.get("request_id", request_doc.get("id"))
            if found != request_id:
                problem = f"request_id {found!r}, manifest says {request_id!r}"
        checks.add("request matches manifest", problem is None, problem or f"request {request_id}")
    else:
        checks.add("request matches manifest", False, f"{REQUEST} missing or altered")


def _read_member(
    archive: zipfile.ZipFile, by_name: Mapping[str, zipfile.ZipInfo], name: str, limit: int
) -> tuple[bytes | None, str | None]:
    """A member's bytes (at most limit + 1 of them), or why they cannot be had."""
    info = by_name.get(name)
    if info is None:
        return None, "missing"
    if info.file_size > limit:
        return None, f"{info.file_size} bytes, more than expected ({limit})"
    try:
        with archive.open(info) as handle:
            return handle.read(limit + 1), None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            NotImplementedError, zlib.error) as exc:
        # A flipped byte in the compressed stream lands here (bad CRC, invalid deflate data).
        return None, f"unreadable ({exc})"
    except Exception as exc:  # noqa: BLE001 - a hostile zip must make a verdict, never a traceback
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def _hash_member(
    archive: zipfile.ZipFile, by_name: Mapping[str, zipfile.ZipInfo], name: str, limit: int
) -> tuple[str, int, str | None]:
    """(sha256, size, problem) of a member read in chunks: memory does not grow with its size."""
    info = by_name.get(name)
    if info is None:
        return "", 0, "missing"
    if info.file_size > limit:
        return "", 0, f"{info.file_size} bytes, more than expected ({limit})"
    digest, size = hashlib.sha256(), 0
    try:
        with archive.open(info) as handle:
            while size <= limit:
                chunk = handle.read(_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            NotImplementedError, zlib.error) as exc:
        return "", 0, f"unreadable ({exc})"
    except Exception as exc:  # noqa: BLE001 - a hostile zip must make a verdict, never a traceback
        return "", 0, f"unreadable ({type(exc).__name__}: {exc})"
    return digest.hexdigest(), size, None


def _discovered_mismatch(events: Sequence[LedgerEvent], listed: Mapping[str, Mapping[str, Any]],
                         intact: set[str]) -> str | None:
    """Every refs hash in the chain has its intact member, and every refs member its event."""
    recorded = discovered_hashes(events)
    members = {name for name in listed if name.startswith(DISCOVERED_DIR)}
    for system, expected in sorted(recorded.items()):
        name = f"{DISCOVERED_DIR}{system}.jsonl"
        if name not in listed:
            return f"the timeline records discovered refs for {system}, but {name} is not in the bundle"
        if listed[name]["sha256"] != expected:
            return f"{name} is not the refs file the timeline recorded at discovery"
        if name not in intact:
            return f"{name} missing or altered"
    strays = sorted(members - {f"{DISCOVERED_DIR}{system}.jsonl" for system in recorded})
    if strays:
        return f"no discovery in the timeline for {', '.join(strays)}"
    return None


def _discovered_detail(listed: Mapping[str, Mapping[str, Any]]) -> str:
    count = sum(1 for name in listed if name.startswith(DISCOVERED_DIR))
    return f"{count} refs file(s), each the one its system.discovered event hashed" if count else "no refs files"


def _manifest_shape_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return "not a JSON object"
    expected = {"format": str, "request_id": str, "through_seq": int, "last_event_hash": str,
                "generated_at": str, "signer_fingerprint": str, "members": dict}
    for key, kind in expected.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            return f"field {key!r} missing or not a {kind.__name__}"
    for name, entry in manifest["members"].items():
        if name in (MANIFEST, SIGNATURE):
            return f"lists {name}, which cannot hash itself"
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int) and not isinstance(entry.get("bytes"), bool)
                and entry["bytes"] >= 0):
            return f"member entry {name!r} needs sha256 and bytes"
    return None


def _parse_timeline(content: bytes) -> tuple[list[LedgerEvent], str | None]:
    events = []
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        return [], f"not UTF-8 ({exc})"
    for number, line in enumerate(lines, start=1):
        try:
            events.append(LedgerEvent.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            return [], f"line {number} is not a ledger event ({type(exc).__name__}: {exc})"
    if not events:
        return [], "no events"
    return events, None


def _seal_mismatch(manifest: Mapping[str, Any], last: LedgerEvent | None) -> str | None:
    if last is None:
        return "timeline is empty"
    if last.seq != manifest["through_seq"]:
        return f"timeline ends at seq {last.seq}, manifest says {manifest['through_seq']}"
    if last.hash != manifest["last_event_hash"]:
        return "last event hash differs from the manifest's last_event_hash"
    if last.at != manifest["generated_at"]:
        return f"last event at {last.at}, manifest generated_at {manifest['generated_at']}"
    return None
