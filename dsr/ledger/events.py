"""Ledger events and their hash chain: pure functions, no database.

Each request has its own chain (sequence 1, 2, 3...), so a request's evidence bundle carries a
chain that verifies on its own. An event's hash covers every field that matters and the previous
event's hash; changing, dropping or reordering any event breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept as is.

    Hashes, signatures and reproducible bundles all depend on this being stable.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if hasattr(value, "isoformat"):  # date, time
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot put a {type(value).__name__} into a ledger event")


def format_timestamp(moment: datetime) -> str:
    """UTC with microseconds and a 'Z': the ledger's only time format."""
    if moment.tzinfo is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class ChainError(ValueError):
    """The chain does not verify; the message says which event and why."""


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One fact about a request, as recorded."""

    request_id: str
    seq: int
    at: str  # format_timestamp()
    actor: str
    type: str
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str

    @staticmethod
    def compute_hash(
        request_id: str, seq: int, at: str, actor: str, type: str, payload: Mapping[str, Any], prev_hash: str
    ) -> str:
        body = canonical_json(
            {"request_id": request_id, "seq": seq, "at": at, "actor": actor, "type": type,
             "payload": payload, "prev_hash": prev_hash}
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    @classmethod
    def create(
        cls, request_id: str, seq: int, at: datetime, actor: str, type: str,
        payload: Mapping[str, Any], prev_hash: str,
    ) -> LedgerEvent:
        stamp = format_timestamp(at)
        # Round-trip the payload through canonical JSON so what we hash is exactly what we store.
        clean = json.loads(canonical_json(payload))
        digest = cls.compute_hash(request_id, seq, stamp, actor, type, clean, prev_hash)
        return cls(request_id, seq, stamp, actor, type, clean, prev_hash, digest)

    @property
    def timestamp(self) -> datetime:
        return parse_timestamp(self.at)

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "seq": self.seq, "at": self.at, "actor": self.actor,
                "type": self.type, "payload": dict(self.payload), "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEvent:
        return cls(str(data["request_id"]), int(data["seq"]), str(data["at"]), str(data["actor"]),
                   str(data["type"]), dict(data["payload"]), str(data["prev_hash"]), str(data["hash"]))


def verify_chain(events: Iterable[LedgerEvent], request_id: str | None = None) -> int:
    """Check one request's chain from its first event; return how many events verified.

    Raises ChainError naming the first event that does not fit: a recomputed hash that differs
    (an edited event), a gap or repeat in the sequence (a dropped or inserted event), or a
    previous-hash link that points elsewhere (a reordered or forked chain).
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    for event in events:
        if request_id is not None and event.request_id != request_id:
            raise ChainError(f"event seq {event.seq} belongs to request {event.request_id}, not {request_id}")
        request_id = event.request_id
        if event.seq != expected_seq:
            raise ChainError(f"request {request_id}: expected event seq {expected_seq}, found {event.seq}")
        if event.prev_hash != expected_prev:
            raise ChainError(f"request {request_id}: event seq {event.seq} does not link to the previous event")
        recomputed = LedgerEvent.compute_hash(
            event.request_id, event.seq, event.at, event.actor, event.type, event.payload, event.prev_hash
        )
        if recomputed != event.hash:
            raise ChainError(f"request {request_id}: event seq {event.seq} ({event.type}) was altered")
        expected_prev = event.hash
        expected_seq += 1
        count += 1
    return count
