"""The runner's values as ledger payloads and back: record refs, erasure decisions, receipts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

from dsr.contract import DataCategory, ErasureAction, ErasureDecision, Receipt, RecordRef
from dsr.ledger.events import LedgerEvent


def ref_to_dict(ref: RecordRef) -> dict[str, Any]:
    """A ref as a payload; the policy facts `jurisdiction` and `tax_record` only when set, so the refs of
    systems that report neither keep their exact bytes."""
    data: dict[str, Any] = {"object": ref.object, "id": ref.id, "categories": [c.value for c in ref.categories],
                            "anchor_date": ref.anchor_date.isoformat() if ref.anchor_date else None}
    if ref.jurisdiction is not None:
        data["jurisdiction"] = ref.jurisdiction
    if ref.tax_record is not None:
        data["tax_record"] = ref.tax_record
    return data


def ref_from_dict(system: str, data: dict[str, Any]) -> RecordRef:
    anchor, tax_record = data.get("anchor_date"), data.get("tax_record")
    if tax_record not in (None, "document", "referenced"):
        raise ValueError(f"unknown tax_record {tax_record!r} in a recorded ref")
    return RecordRef(system, data["object"], str(data["id"]), tuple(DataCategory(c) for c in data["categories"]),
                     date.fromisoformat(anchor) if anchor else None, jurisdiction=data.get("jurisdiction"),
                     tax_record=tax_record)


def decision_to_dict(d: ErasureDecision) -> dict[str, Any]:
    return {"ref": ref_to_dict(d.ref), "action": d.action.value, "basis": d.basis,
            "retain_until": d.retain_until.isoformat() if d.retain_until else None}


def decision_from_dict(system: str, data: dict[str, Any]) -> ErasureDecision:
    until = data.get("retain_until")
    return ErasureDecision(ref_from_dict(system, data["ref"]), ErasureAction(data["action"]), data.get("basis"),
                           date.fromisoformat(until) if until else None)


def receipt_payload(system: str, receipt: Receipt) -> dict[str, Any]:
    """An erasure receipt for the ledger: counts per action, each outcome, the exemptions with their basis."""
    actions = Counter(
        ("already_gone" if o.already_gone else o.action.value) if o.done else "failed" for o in receipt.outcomes
    )
    exemptions = [
        {"record": o.ref.key, "action": o.action.value, "basis": o.basis,
         "retain_until": o.retain_until.isoformat() if o.retain_until else None,
         "fields_cleared": list(o.fields_cleared)}
        for o in receipt.outcomes if o.basis
    ]
    return {
        "system": system,
        "complete": not receipt.failed,
        "actions": dict(sorted(actions.items())),
        "outcomes": [
            {"record": o.ref.key, "action": o.action.value, "done": o.done, "already_gone": o.already_gone,
             "fields_cleared": list(o.fields_cleared), "error": o.error}
            for o in receipt.outcomes
        ],
        "exemptions": exemptions,
        "vendor_receipt_id": receipt.vendor_receipt_id,
        "api_calls": receipt.api_calls,
    }


def last_payload(events: Sequence[LedgerEvent], type: str, system: str) -> dict[str, Any] | None:
    """The payload of the newest `type` event about `system`, or None."""
    for event in reversed(events):
        if event.type == type and event.payload.get("system") == system:
            return dict(event.payload)
    return None


def safe_error(exc: BaseException) -> str:
    """An error for the ledger: type and message, cut short. Connectors keep personal data out
    of their messages (contract rule); the cut bounds what a vendor's error body can add."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"
