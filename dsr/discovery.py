"""What discovery found, kept beside the chain: one JSON Lines file of record refs per system.

A subject can own hundreds of thousands of records. Their refs used to sit inside the
`system.discovered` event, so every read of the request (each state fold, each guarded append)
parsed them again: about 1 KB of memory per record, 626 MiB for a 1 GB access request. The refs
now go to a file written once, and the event records its SHA-256 and line count instead. The
evidence is the same: the hash is in the chain (so what was found cannot change afterwards
without the chain saying so), and the file itself is sealed into the evidence bundle as
`discovered/<system>.jsonl`, where `verify_bundle` checks it against that hash.

Each line is one ref as canonical JSON (`{"anchor_date", "categories", "id", "object"}`, plus
`"jurisdiction"` and `"tax_record"` on the refs a connector reports them for, as
`dsr.run.codec.ref_to_dict` writes it); the line order is the connector's. The file holds record
identifiers and the policy's facts about them, never field values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsr.files import open_private, private_dir
from dsr.ledger.events import canonical_json

#: Keys of a `system.discovered` payload that point at the refs file.
REFS_SHA256 = "refs_sha256"
REFS_FILE = "refs_file"
_CHUNK = 1 << 20


class DiscoveryError(RuntimeError):
    """A refs file is missing or is not the one the ledger recorded."""


@dataclass(frozen=True, slots=True)
class RefsFile:
    path: Path
    sha256: str
    count: int


def refs_file_name(system: str) -> str:
    return f"{system}.refs.jsonl"


def write_refs(path: Path, refs: Iterable[Mapping[str, Any]]) -> RefsFile:
    """Write refs (already as dicts) atomically, hashing as they go; one ref in memory at a time."""
    private_dir(path.parent)  # record identifiers of one person: the service's user only
    tmp = path.with_name(path.name + ".part")
    digest, count = hashlib.sha256(), 0
    with open_private(tmp, "wb") as out:
        for ref in refs:
            line = (canonical_json(ref) + "\n").encode("utf-8")
            digest.update(line)
            out.write(line)
            count += 1
        out.flush()
        os.fsync(out.fileno())  # the ledger is about to point at these bytes
    tmp.replace(path)
    return RefsFile(path, digest.hexdigest(), count)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_refs(path: Path, sha256: str) -> None:
    """Raise DiscoveryError unless `path` exists and hashes to what the ledger recorded."""
    if not path.is_file():
        raise DiscoveryError(f"discovered refs {path.name} are missing (the ledger recorded sha256 {sha256[:16]}...)")
    if file_sha256(path) != sha256:
        raise DiscoveryError(f"discovered refs {path.name} changed since discovery was recorded")


def read_refs(path: Path, sha256: str) -> Iterator[dict[str, Any]]:
    """The refs of a file the ledger recorded, streamed.

    The bytes are hashed as they are read and the generator raises DiscoveryError at the end if
    they are not what the ledger recorded, so a caller that collects the refs (as a re-run does)
    never acts on a changed file.
    """
    if not path.is_file():
        raise DiscoveryError(f"discovered refs {path.name} are missing (the ledger recorded sha256 {sha256[:16]}...)")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for line in handle:
            digest.update(line)
            if line.strip():
                yield json.loads(line)
    if digest.hexdigest() != sha256:
        raise DiscoveryError(f"discovered refs {path.name} changed since discovery was recorded")
