"""Free text (notes, reasons) kept beside the hash chain, referenced from it by SHA-256.

An event never carries an officer's free text, only its hash (`note_sha256`, `reason_sha256`);
the text lives in `dsr_free_texts`, keyed by (request id, hash) and written in the same
transaction as the event. Text that should never have been written (an address that got past the
detector, a name) can then be redacted: the row's text is nulled and a `text.redacted` event
(hash only) records that it was, while every event hash, and so the chain, stays as it was.

Views name a text by a reference, `[text sha256:<hex>]`, wherever the chain alone is read (the
evidence bundle, guards, deadline computations), and swap in the text (or `[redacted]`) where a
person reads it. Chains written before this carried `note`/`reason` in the clear; they are read as
they are.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, insert, select, update

from dsr.ledger.schema import free_texts as free_texts_table

#: Payload fields that hold free text; an event carries `<field>_sha256` in their place.
FREE_TEXT_FIELDS = ("note", "reason")
TEXT_REDACTED_EVENT = "text.redacted"
#: What a reader sees for a text that was redacted (or is missing from the table).
REDACTED_TEXT = "[redacted]"
REDACTION_REASON_MAX = 200  # the column's width

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REFERENCE = re.compile(r"\[text sha256:([0-9a-f]{64})\]")


class FreeTextError(LookupError):
    """A text cannot be redacted: unknown to the request, or already redacted."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


def text_reference(digest: str) -> str:
    """How a view built from the chain alone names a free text: by its hash, never its words."""
    return f"[text sha256:{digest}]"


def reference_digests(value: str) -> list[str]:
    return _REFERENCE.findall(value)


def resolve_references(value: Any, texts: Mapping[str, str | None]) -> Any:
    """`value` (JSON-like) with each `[text sha256:...]` replaced by its text, or `[redacted]`."""
    if isinstance(value, str):
        if "[text sha256:" not in value:
            return value
        return _REFERENCE.sub(lambda m: _text_or_redacted(texts, m.group(1)), value)
    if isinstance(value, Mapping):
        return {key: resolve_references(item, texts) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_references(item, texts) for item in value]
    return value


def _text_or_redacted(texts: Mapping[str, str | None], digest: str) -> str:
    text = texts.get(digest)
    return text if text is not None else REDACTED_TEXT


def payload_text(payload: Mapping[str, Any], field: str, texts: Mapping[str, str | None] | None) -> Any:
    """A payload's free-text field as a reader sees it.

    New events: the text (`texts` given), `[redacted]` (given, but redacted or missing) or the
    reference (`texts` None: the chain alone). Old events: the clear text they carry.
    """
    digest = payload.get(f"{field}_sha256")
    if not isinstance(digest, str):
        return payload.get(field)
    if texts is None:
        return text_reference(digest)
    return _text_or_redacted(texts, digest)


def event_texts(payload: Mapping[str, Any]) -> dict[str, str]:
    """Field -> hash of the free texts an event references."""
    return {field: payload[f"{field}_sha256"] for field in FREE_TEXT_FIELDS
            if isinstance(payload.get(f"{field}_sha256"), str)}


# --- writes, inside the event's own transaction ----------------------------------------------------


class TextWrite(Protocol):
    """Something done to `dsr_free_texts` in the transaction that appends an event."""

    def apply(self, conn: Connection, request_id: str, at: str) -> None: ...


@dataclass(frozen=True)
class StoreTexts:
    """Keep these texts for the request (a text already kept, or redacted, is left as it is)."""

    texts: tuple[str, ...]

    def apply(self, conn: Connection, request_id: str, at: str) -> None:
        for text in dict.fromkeys(self.texts):
            digest = text_sha256(text)
            # A redacted text stays redacted even if the same words are written again.
            if _row(conn, request_id, digest) is None:
                conn.execute(insert(free_texts_table).values(request_id=request_id, sha256=digest, text=text))


@dataclass(frozen=True)
class RedactText:
    """Null one kept text, recording when and why (the reason must hold no personal data)."""

    sha256: str
    reason: str

    def apply(self, conn: Connection, request_id: str, at: str) -> None:
        row = _row(conn, request_id, self.sha256)
        if row is None:
            raise FreeTextError(f"text_sha256: request {request_id} keeps no text with this hash")
        if row["text"] is None:
            raise FreeTextError(f"text_sha256: this text of request {request_id} is already redacted")
        conn.execute(update(free_texts_table).where(
            free_texts_table.c.request_id == request_id, free_texts_table.c.sha256 == self.sha256,
        ).values(text=None, redacted_at=at, redacted_reason=self.reason))


def store_texts(texts: Iterable[str | None]) -> StoreTexts | None:
    kept = tuple(t for t in texts if t)
    return StoreTexts(kept) if kept else None


def _row(conn: Connection, request_id: str, digest: str) -> Mapping[str, Any] | None:
    row = conn.execute(select(free_texts_table).where(
        free_texts_table.c.request_id == request_id, free_texts_table.c.sha256 == digest)).mappings().first()
    return dict(row) if row is not None else None


# --- reads ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeptText:
    sha256: str
    text: str | None  # None once redacted
    redacted_at: str | None
    redacted_reason: str | None


def read_texts(conn: Connection, request_id: str) -> dict[str, KeptText]:
    rows = conn.execute(select(free_texts_table).where(free_texts_table.c.request_id == request_id)).mappings()
    return {r["sha256"]: KeptText(r["sha256"], r["text"], r["redacted_at"], r["redacted_reason"]) for r in rows}
