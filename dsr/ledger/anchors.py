"""Signed chain heads: what an edit of the database cannot forge.

The hash chain shows an edited event, but not a chain cut short at its end, nor a request whose
every event was deleted: what is left still verifies. So the ledger also keeps a log of *signed
heads* (table `dsr_chain_heads`): each entry says "request R's chain had seq S with hash H",
is signed with the deployment's Ed25519 key and links to the previous entry by hash. Whoever can
edit tables cannot sign, so a chain shorter than (or different from) its newest signed head, or
a signed head whose chain is gone, is caught.

The newest entries of that log could still be deleted from the table, leaving a shorter log that
verifies. Each entry is therefore mirrored, after its commit, to an append-only file outside the
database (`<home>/anchors/heads.jsonl`, O_APPEND + fsync); verification checks that every
mirrored entry is still in the table.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dsr.ledger.events import GENESIS_HASH, canonical_json
from dsr.signing import Signer, public_key_fingerprint, verify_signature

#: Chains that are not requests (retention runs, legal holds) anchor only at these events, so a
#: purge of millions of events does not sign millions of heads. Request chains anchor every append.
ANCHOR_EVENT_TYPES = frozenset({
    "request.completed", "request.partially_completed", "request.cancelled", "request.rejected",
    "bundle.sealed", "run.released",
    "hold.added", "hold.released",
    "purge.started", "purge.guard_stopped", "purge.completed",
})


@dataclass(frozen=True, slots=True)
class SignedHead:
    """One entry of the head log: a chain's head at a moment, signed and linked to the entry before."""

    position: int  # 1, 2, 3... with no gap: a deleted entry in the middle shows
    request_id: str
    seq: int
    hash: str
    at: str
    reason: str  # the event type that was appended
    prev_entry_hash: str
    key_fingerprint: str
    entry_hash: str = ""
    signature: str = ""  # hex of the Ed25519 signature over the entry's body

    def body(self) -> bytes:
        """What the entry hash and the signature cover: every field but those two."""
        return canonical_json({
            "position": self.position, "request_id": self.request_id, "seq": self.seq, "hash": self.hash,
            "at": self.at, "reason": self.reason, "prev_entry_hash": self.prev_entry_hash,
            "key_fingerprint": self.key_fingerprint,
        }).encode("utf-8")

    @classmethod
    def create(cls, previous: SignedHead | None, *, request_id: str, seq: int, hash: str, at: str, reason: str,
               signer: Signer) -> SignedHead:
        unsigned = cls(position=previous.position + 1 if previous else 1, request_id=request_id, seq=seq,
                       hash=hash, at=at, reason=reason[:64],
                       prev_entry_hash=previous.entry_hash if previous else GENESIS_HASH,
                       key_fingerprint=signer.fingerprint)
        body = unsigned.body()
        return cls(**{**asdict(unsigned), "entry_hash": hashlib.sha256(body).hexdigest(),
                      "signature": signer.sign(body).hex()})

    def problem(self, public_key: Ed25519PublicKey | None) -> str | None:
        """Why this entry cannot be trusted on its own (hash or signature), or None."""
        body = self.body()
        if hashlib.sha256(body).hexdigest() != self.entry_hash:
            return "its content differs from its hash (edited)"
        if public_key is None:
            return None
        if self.key_fingerprint != public_key_fingerprint(public_key):
            return f"signed by an unknown key {self.key_fingerprint[:16]}..."
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return "its signature is not hex"
        if not verify_signature(public_key, signature, body):
            return "its signature does not verify (forged)"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SignedHead:
        return cls(position=int(data["position"]), request_id=str(data["request_id"]), seq=int(data["seq"]),
                   hash=str(data["hash"]), at=str(data["at"]), reason=str(data["reason"]),
                   prev_entry_hash=str(data["prev_entry_hash"]), key_fingerprint=str(data["key_fingerprint"]),
                   entry_hash=str(data["entry_hash"]), signature=str(data["signature"]))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing `ledger verify` found wrong: which chain (or the head log) and what."""

    subject: str  # a request id, or "head log" / "anchor file"
    what: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.what}"


class AnchorFile:
    """The head log's mirror outside the database: one JSON line per entry, only ever appended.

    Lines are written with O_APPEND (whole lines, whatever other processes write at once), those
    that close something fsync'd before the append returns. A line may be missing if a process
    dies between the database commit and this write; verification reports that as a warning (it
    cannot tell it from a cut).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, head: SignedHead) -> None:
        """Add the entry's line; fsync'd when it closes something (a seal, a run's end, a close,
        a chain's first event). Other lines are left to the page cache: a process that dies
        loses none of them, only the machine's crash can, and a lost line is a warning at worst,
        while an fsync per event would cost more than the append itself."""
        line = (canonical_json(head.to_dict()) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write of one line: O_APPEND keeps concurrent writers' lines whole
            if head.reason in ANCHOR_EVENT_TYPES or head.seq == 1:
                os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> Iterator[SignedHead | int]:
        """Each mirrored entry, or the line number of a line that is not one (garbled or edited)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    yield SignedHead.from_dict(json.loads(raw))
                except (ValueError, KeyError, TypeError):
                    yield number


@dataclass
class Anchoring:
    """How a ledger signs and mirrors its chain heads (the service builds it from its settings)."""

    signing_key_path: Path
    mirror: AnchorFile | None = None
    _signer: Signer | None = field(default=None, repr=False)

    @classmethod
    def under_home(cls, home: Path, signing_key_path: Path) -> Anchoring:
        return cls(Path(signing_key_path), AnchorFile(Path(home) / "anchors" / "heads.jsonl"))

    @property
    def signer(self) -> Signer:
        if self._signer is None:  # loaded once: appends must not read a key file each time
            from dsr.signing import load_or_create_signing_key

            self._signer = load_or_create_signing_key(self.signing_key_path)
        return self._signer

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signer.public_key


def check_head_log(entries: Iterable[SignedHead], public_key: Ed25519PublicKey | None,
                   ) -> tuple[dict[str, SignedHead], dict[int, str], list[Problem]]:
    """Walk the head log in position order.

    Returns the newest trusted head of each chain, the entry hash at each position (to compare
    with the anchor file) and the problems: a gap, a broken link, an edited or forged entry.
    """
    newest: dict[str, SignedHead] = {}
    hashes: dict[int, str] = {}
    problems: list[Problem] = []
    expected_position, expected_prev = 1, GENESIS_HASH
    for head in entries:
        hashes[head.position] = head.entry_hash
        where = f"entry #{head.position} (request {head.request_id}, seq {head.seq})"
        if head.position != expected_position:
            problems.append(Problem("head log", f"entries #{expected_position}..#{head.position - 1} are missing "
                                    "(deleted from the table)"))
        elif head.prev_entry_hash != expected_prev:
            problems.append(Problem("head log", f"{where} does not link to the entry before it"))
        why = head.problem(public_key)
        if why is not None:
            problems.append(Problem("head log", f"{where}: {why}"))
        else:
            newest[head.request_id] = head
        expected_position, expected_prev = head.position + 1, head.entry_hash
    return newest, hashes, problems


def check_mirror(mirror: AnchorFile, entries: Iterable[SignedHead | int], table_hashes: dict[int, str],
                 public_key: Ed25519PublicKey | None) -> tuple[dict[str, SignedHead], list[Problem], list[Problem]]:
    """Compare the anchor file with the table's head log.

    Returns the newest head per chain the file vouches for (a chain must reach it too), the
    problems (an entry the file holds that the table lost or changed: rows deleted or edited; a
    line that is not a signed entry) and the warnings (entries of the table the file lacks: the
    file was cut, or a writer died between its commit and the mirror).
    """
    problems: list[Problem] = []
    newest: dict[str, SignedHead] = {}
    seen: set[int] = set()
    name = f"anchor file {mirror.path}"
    for item in entries:  # read before the table: the file is written after each commit
        if isinstance(item, int):
            problems.append(Problem(name, f"line {item} is not a head log entry (garbled or edited)"))
            continue
        why = item.problem(public_key)
        if why is not None:
            problems.append(Problem(name, f"entry #{item.position}: {why}"))
            continue
        seen.add(item.position)
        stored = table_hashes.get(item.position)
        if stored is None:
            problems.append(Problem("head log", f"entry #{item.position} (request {item.request_id}, seq {item.seq}) "
                                    "is in the anchor file but not in the table (deleted)"))
        elif stored != item.entry_hash:
            problems.append(Problem("head log", f"entry #{item.position} differs from the anchor file (replaced)"))
        current = newest.get(item.request_id)
        if current is None or item.position > current.position:
            newest[item.request_id] = item
    missing = sorted(set(table_hashes) - seen)
    warnings = []
    if missing:
        warnings.append(Problem(name, f"lacks {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} of the head "
                                f"log (#{missing[0]}..#{missing[-1]}): it was cut or edited, or a writer died "
                                "between commit and mirror"))
    return newest, problems, warnings
