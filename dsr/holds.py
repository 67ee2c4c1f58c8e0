"""Legal holds: a complaint or a prospect of litigation freezes a subject's data.

Each hold is its own ledger chain (`hold-<ref>`): who placed it, why, when it was released. The
reasons are free text, kept beside the chain and referenced by hash (dsr.ledger.texts).
The subject's address is kept beside the chain (like a request's), so the purge can find the
subject's records by exact discovery and leave them alone; the chain holds only its keyed hash.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dsr.identity import normalise_email
from dsr.ledger.events import LedgerEvent
from dsr.ledger.store import LedgerError
from dsr.ledger.texts import payload_text, store_texts
from dsr.models import RequestInputError
from dsr.service import DsrService, RequestStateError

HOLD_PREFIX = "hold-"
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADDED, RELEASED = "hold.added", "hold.released"


@dataclass(frozen=True, slots=True)
class Hold:
    ref: str
    identity_hash: str
    reason: str
    since: str
    by: str
    released: bool


def _chain_id(ref: str) -> str:
    if not _REF.match(ref):
        raise RequestInputError("ref", "letters, digits, '.', '_' or '-' (up to 64), e.g. LIT-2026-014")
    return HOLD_PREFIX + ref


def add_hold(service: DsrService, *, email: str, ref: str, reason: str, actor: str | None = None) -> Hold:
    """Place a hold on a subject's data (refused if the reference is already used)."""
    from dsr.service import _evidence_text, with_free_text  # one rule for free text that becomes evidence

    address = normalise_email(email)
    text = _evidence_text("reason", reason, required="say why (complaint, litigation...)") or ""
    digest = service.identity_hash(address)
    try:
        service.ledger.append(_chain_id(ref), ADDED, with_free_text({"ref": ref, "identity_hash": digest}, "reason", text),
                              actor=actor or service.settings.actor, expect_new=True,
                              identity=("email", address, digest), project=False, texts=store_texts([text]))
    except LedgerError:
        raise RequestStateError(f"hold {ref} already exists") from None
    return _load(service, ref)


def release_hold(service: DsrService, *, ref: str, reason: str, actor: str | None = None) -> Hold:
    from dsr.service import _evidence_text, with_free_text

    text = _evidence_text("reason", reason, required="say why the hold ends") or ""
    chain_id = _chain_id(ref)
    if not service.ledger.exists(chain_id):
        raise RequestStateError(f"no hold {ref}")

    def guard(chain: Sequence[LedgerEvent]) -> None:
        if _hold(chain).released:
            raise RequestStateError(f"hold {ref} is already released")

    service.ledger.append(chain_id, RELEASED, with_free_text({"ref": ref}, "reason", text),
                          actor=actor or service.settings.actor, guard=guard, project=False, texts=store_texts([text]))
    hold = _load(service, ref)
    # What the hold kept from erasure becomes runnable again (`dsr run ID` erases it now).
    from dsr.rights import reopen_after_release

    reopen_after_release(service, hold.identity_hash, ref, actor or service.settings.actor)
    return hold


def reopened_by(service: DsrService, ref: str) -> list[str]:
    """The requests whose held systems the release of hold `ref` re-opened."""
    from dsr.rights import requests_of
    from dsr.state import EventType

    hold = _load(service, ref)
    return [rid for rid in requests_of(service, hold.identity_hash)
            if any(e.type == EventType.REOPENED and e.payload.get("hold") == ref for e in service.events(rid))]


def _hold(chain: Sequence[LedgerEvent], texts: dict[str, str | None] | None = None) -> Hold:
    """A hold from its chain; its reason is the kept text when `texts` are given, else its reference."""
    first = chain[0]
    return Hold(ref=first.payload["ref"], identity_hash=first.payload["identity_hash"],
                reason=str(payload_text(first.payload, "reason", texts)),
                since=first.at, by=first.actor, released=any(e.type == RELEASED for e in chain))


def _load(service: DsrService, ref: str) -> Hold:
    chain_id = _chain_id(ref)
    return _hold(service.ledger.events(chain_id), service.texts(chain_id))


def holds(service: DsrService, *, active_only: bool = True) -> list[Hold]:
    found = [_hold(service.ledger.events(chain_id), service.texts(chain_id)) for chain_id in service.ledger.request_ids()
             if chain_id.startswith(HOLD_PREFIX)]
    return sorted((h for h in found if not (active_only and h.released)), key=lambda h: h.since)


def held_subjects(service: DsrService) -> list[tuple[str, str]]:
    """(hold ref, address) of every active hold: the purge discovers these subjects' records."""
    out = []
    for hold in holds(service):
        address = service.ledger.identity(HOLD_PREFIX + hold.ref)
        if address:
            out.append((hold.ref, address))
    return out
