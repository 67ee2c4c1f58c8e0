"""Current state, derived from a request's events (the events are the record; this is a view).

`derive_state` is a pure fold: the same events always give the same state. The CLI, the
evidence bundle and the derived index all read requests through it.

Free text (notes, reasons) is kept beside the chain (dsr.ledger.texts). Folded from the events
alone, a state names each text by its hash reference, which is what guards, deadline computations
and the evidence bundle must see; given the kept texts, it shows the words (or `[redacted]`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from dsr.deadlines import ClockEvent, ClockEventKind
from dsr.ledger.events import LedgerEvent, parse_timestamp
from dsr.ledger.texts import FREE_TEXT_FIELDS, TEXT_REDACTED_EVENT, event_texts, payload_text, resolve_references
from dsr.models import CLOSED_STATUSES, Status


class EventType(StrEnum):
    """Every kind of fact the ledger records about a request."""

    RECEIVED = "request.received"
    VERIFIED = "request.verified"
    CLOCK = "clock.event"  # ID/fee/clarification requested or received (payload.kind)
    EXTENDED = "request.extended"
    CANCELLED = "request.cancelled"
    REJECTED = "request.rejected"
    RUN_STARTED = "run.started"
    RUN_REFUSED = "run.refused"
    RUN_CLAIMED = "run.claimed"  # a run's lease: holder and until (taken, renewed or taken over)
    RUN_RELEASED = "run.released"  # the holder let go of its lease
    SYSTEM_DISCOVERED = "system.discovered"
    SYSTEM_EXPORTED = "system.exported"
    SYSTEM_ERASE_PLANNED = "system.erase_planned"
    SYSTEM_ERASED = "system.erased"
    SYSTEM_VERIFIED = "system.verified"
    SYSTEM_COMPLETED = "system.completed"
    SYSTEM_FAILED = "system.failed"
    MANUAL_ACTION_REQUIRED = "request.manual_action_required"
    PACKAGE_CREATED = "package.created"
    COMPLETED = "request.completed"
    PARTIALLY_COMPLETED = "request.partially_completed"
    BUNDLE_SEALED = "bundle.sealed"
    ACKNOWLEDGED = "request.acknowledged"
    DEADLINE_ALERT = "deadline.alert"  # a warning or escalation, raised once per key
    DEADLINE_NOTIFIED = "deadline.notified"  # what each channel did with it
    BUNDLE_DOWNLOADED = "bundle.downloaded"  # who, when, which version
    PACKAGE_DOWNLOADED = "package.downloaded"
    SUBJECT_TOKEN_ISSUED = "subject_token.issued"
    TASK_OPENED = "task.opened"  # a person must do a step in a system (no API for it)
    TASK_NOTIFIED = "task.notified"
    TASK_DONE = "task.done"
    # The other rights (dsr.rights): per system what was changed, and request-level facts.
    SYSTEM_RECTIFIED = "system.rectified"
    SYSTEM_SUPPRESSED = "system.suppressed"  # marketing stopped (restriction, objection, consent, opt-out)
    SYSTEM_RESTORED = "system.restored"  # a lifted restriction's marketing put back
    IDENTITY_REKEYED = "identity.rekeyed"  # a rectified address: new keyed hash (the old one stays)
    RESTRICTION_LIFTED = "restriction.lifted"
    REOPENED = "request.reopened"  # a released legal hold: the held systems run again
    TEXT_REDACTED = TEXT_REDACTED_EVENT  # a kept free text was nulled (payload: its hash only)


class SystemStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    AWAITING_MANUAL = "awaiting_manual"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass
class SystemState:
    """One system's part of a request, as far as the ledger knows."""

    name: str
    status: SystemStatus = SystemStatus.PENDING
    connector_version: str | None = None
    found: int = 0
    found_by_object: dict[str, int] = field(default_factory=dict)
    exported: int | None = None
    export_sha256: str | None = None
    actions: Counter[str] = field(default_factory=Counter)
    exemptions: list[dict[str, Any]] = field(default_factory=list)
    receipt_id: str | None = None
    remaining: list[str] | None = None
    proof: str | None = None
    # Write-only audiences: "confirmed" (the vendor's job or segment status said the removal finished)
    # or "requested" (the vendor only accepted it); None elsewhere.
    removal: str | None = None
    error: str | None = None
    attempts: int = 0
    steps_done: set[str] = field(default_factory=set)
    task: dict[str, Any] | None = None  # the open or done manual task (see EventType.TASK_*)

    def to_view(self) -> dict[str, Any]:
        return {
            "system": self.name,
            "status": self.status.value,
            "connector_version": self.connector_version,
            "records_found": self.found,
            "found_by_object": dict(sorted(self.found_by_object.items())),
            "records_exported": self.exported,
            "export_sha256": self.export_sha256,
            "actions": dict(sorted(self.actions.items())),
            "exemptions": self.exemptions,
            "vendor_receipt_id": self.receipt_id,
            "post_erasure_requery": {"remaining": self.remaining, "proof": self.proof},
            "audience_removal": self.removal,
            "error": self.error,
            "attempts": self.attempts,
            "manual_task": self.task,
        }


@dataclass
class RequestState:
    """A request as its events describe it."""

    request_id: str
    type: str
    regime: str
    country: str | None
    channel: str
    received_at: str
    identity_hash: str
    status: Status
    deadline: dict[str, Any] | None = None
    clock: list[ClockEvent] = field(default_factory=list)
    verification: dict[str, Any] | None = None
    plan: list[str] = field(default_factory=list)
    systems: dict[str, SystemState] = field(default_factory=dict)
    package: dict[str, Any] | None = None
    outcome_reason: str | None = None
    cancel_reason: str | None = None
    bundles: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0
    acknowledged_at: str | None = None
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> alert (+ "delivered")
    last_seq: int = 0
    completed_through_seq: int | None = None  # seq of the completion event: where bundles seal
    lease: dict[str, Any] | None = None  # the run holding the request ({"holder", "until"}), see dsr.run.lease
    held: dict[str, list[str]] = field(default_factory=dict)  # system -> legal hold refs keeping its records
    restriction_lifted: bool = False

    @property
    def verified(self) -> bool:
        return self.verification is not None

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES

    @property
    def due(self) -> str | None:
        return self.deadline.get("due") if self.deadline else None

    def system(self, name: str) -> SystemState:
        if name not in self.systems:
            self.systems[name] = SystemState(name)
        return self.systems[name]

    def to_view(self) -> dict[str, Any]:
        """The request record for humans, the CLI's --json and the evidence bundle.

        Holds no personal data: the subject appears only as a keyed hash.
        """
        return {
            "request_id": self.request_id,
            "type": self.type,
            "regime": self.regime,
            "country": self.country,
            "channel": self.channel,
            "received_at": self.received_at,
            "subject": {"kind": "email", "identity_hash": self.identity_hash},
            "status": self.status.value,
            "verification": self.verification,
            "deadline": self.deadline,
            "clock_events": [
                {"kind": c.kind.value, "at": c.at.isoformat(), "reason": c.reason} for c in self.clock
            ],
            "systems_planned": self.plan,
            "systems": {name: s.status.value for name, s in sorted(self.systems.items())},
            "package": self.package,
            "outcome_reason": self.outcome_reason,
            "cancel_reason": self.cancel_reason,
            "bundles": self.bundles,
            "acknowledged_at": self.acknowledged_at,
            "alerts": [{k: a.get(k) for k in ("key", "level", "kind", "due", "days_left", "at", "delivered")}
                       for a in self.alerts.values()],
            "last_seq": self.last_seq,
            "legal_holds": {name: refs for name, refs in sorted(self.held.items())},
            "restriction_lifted": self.restriction_lifted,
        }


#: Hash -> kept free text (None once redacted), as `Ledger.free_texts` gives it.
Texts = Mapping[str, str | None]


def derive_state(events: Sequence[LedgerEvent], texts: Texts | None = None) -> RequestState:
    """Fold a request's events, oldest first, into its current state.

    Args:
        texts: the request's kept free texts. Without them (the chain alone), free text shows as
            its `[text sha256:...]` reference; with them, as the text or `[redacted]`.
    """
    if not events or events[0].type != EventType.RECEIVED:
        raise ValueError("a request's chain must start with request.received")
    first = events[0].payload
    state = RequestState(
        request_id=events[0].request_id,
        type=first["type"],
        regime=first["regime"],
        country=first.get("country"),
        channel=first["channel"],
        received_at=first["received_at"],
        identity_hash=first["identity_hash"],
        status=Status.AWAITING_VERIFICATION,
        deadline=_deadline(first.get("deadline"), texts),
        clock=[ClockEvent(ClockEventKind.RECEIVED, datetime.fromisoformat(first["received_at"]))],
    )
    for event in events:
        _apply(state, event, texts)
        state.last_seq = event.seq
    return state


def _deadline(deadline: Any, texts: Texts | None) -> Any:
    # A deadline computed since free text left the chain names its extension reason by reference.
    return deadline if texts is None or deadline is None else resolve_references(deadline, texts)


def _apply(state: RequestState, event: LedgerEvent, texts: Texts | None) -> None:
    p: Mapping[str, Any] = event.payload
    kind = event.type

    def text(field: str) -> Any:
        return payload_text(p, field, texts)

    if kind == EventType.VERIFIED:
        state.verification = {"method": p["method"], "note": text("note"), "at": event.at, "by": event.actor}
        if state.status == Status.AWAITING_VERIFICATION:
            state.status = Status.VERIFIED
    elif kind == EventType.CLOCK:
        state.clock.append(ClockEvent(ClockEventKind(p["kind"]), parse_timestamp(event.at), text("reason")))
        state.deadline = _deadline(p["deadline"], texts) if "deadline" in p else state.deadline
    elif kind == EventType.EXTENDED:
        state.clock.append(ClockEvent(ClockEventKind.EXTENDED, parse_timestamp(event.at), text("reason")))
        state.deadline = _deadline(p["deadline"], texts) if "deadline" in p else state.deadline
    elif kind == EventType.CANCELLED:
        state.status, state.cancel_reason = Status.CANCELLED, text("reason")
    elif kind == EventType.REJECTED:
        state.status, state.outcome_reason = Status.REJECTED, text("reason")
    elif kind == EventType.RUN_STARTED:
        state.runs += 1
        state.plan = list(p.get("systems", []))
        for name in state.plan:
            state.system(name)
        state.status = Status.IN_PROGRESS
    elif kind == EventType.RUN_CLAIMED:
        state.lease = {"holder": p["holder"], "until": p["until"]}
    elif kind == EventType.RUN_RELEASED:
        if state.lease is not None and state.lease["holder"] == p.get("holder"):
            state.lease = None
    elif kind == EventType.MANUAL_ACTION_REQUIRED:
        state.status, state.outcome_reason = Status.AWAITING_MANUAL_ACTION, text("reason")
    elif kind == EventType.REOPENED:
        state.status, state.outcome_reason = Status.IN_PROGRESS, text("reason")
        for name in p.get("systems", []):
            state.systems[name] = SystemState(name)
            state.held.pop(name, None)
    elif kind == EventType.RESTRICTION_LIFTED:
        state.restriction_lifted = True
    elif kind.startswith(("system.", "task.")):
        if kind == EventType.SYSTEM_ERASE_PLANNED and p.get("held"):
            state.held[p["system"]] = list(p["held"])
        _apply_system(state.system(p["system"]), kind, p, texts)
    elif kind == EventType.PACKAGE_CREATED:
        state.package = {k: p[k] for k in ("sha256", "bytes", "file", "formats", "records", "uri") if k in p}
    elif kind == EventType.COMPLETED:
        state.status, state.outcome_reason = Status.COMPLETED, None
        state.completed_through_seq = event.seq
    elif kind == EventType.PARTIALLY_COMPLETED:
        state.status, state.outcome_reason = Status.PARTIALLY_COMPLETED, text("reason")
        state.completed_through_seq = event.seq
    elif kind == EventType.ACKNOWLEDGED:
        state.acknowledged_at = event.at
    elif kind == EventType.DEADLINE_ALERT:
        state.alerts[p["key"]] = {**p, "at": event.at, "delivered": False, "deliveries": 0}
    elif kind == EventType.DEADLINE_NOTIFIED:
        alert = state.alerts.get(p["key"])
        if alert is not None:
            alert["delivered"] = alert["delivered"] or bool(p.get("delivered"))
            alert["deliveries"] += 1
    elif kind == EventType.BUNDLE_SEALED:
        state.bundles.append({k: p[k] for k in ("version", "sha256", "through_seq", "file", "uri", "retain_until")
                              if k in p})


def _apply_system(system: SystemState, kind: str, p: Mapping[str, Any], texts: Texts | None) -> None:
    if kind == EventType.SYSTEM_DISCOVERED:
        system.status = SystemStatus.IN_PROGRESS
        system.connector_version = p.get("connector_version")
        system.found = int(p.get("records", 0))
        system.found_by_object = dict(p.get("by_object", {}))
        system.steps_done.add("discover")
    elif kind == EventType.SYSTEM_EXPORTED:
        system.exported = int(p.get("records", 0))
        system.export_sha256 = p.get("sha256")
        system.steps_done.add("export")
    elif kind == EventType.SYSTEM_ERASE_PLANNED:
        system.steps_done.add("plan")
    elif kind == EventType.SYSTEM_ERASED:
        system.actions = Counter(p.get("actions", {}))
        system.exemptions = list(p.get("exemptions", []))
        system.receipt_id = p.get("vendor_receipt_id")
        if p.get("complete"):
            system.steps_done.add("erase")
    elif kind in (EventType.SYSTEM_RECTIFIED, EventType.SYSTEM_SUPPRESSED, EventType.SYSTEM_RESTORED):
        system.actions = Counter(p.get("actions", {}))
        system.receipt_id = p.get("vendor_receipt_id")
        if p.get("complete"):
            system.steps_done.add(p["step"])
    elif kind == EventType.SYSTEM_VERIFIED:
        system.remaining = list(p.get("unexpected_remaining", []))
        system.proof = p.get("proof")
        system.removal = p.get("removal")
        system.steps_done.add("verify")
    elif kind == EventType.SYSTEM_COMPLETED:
        system.status, system.error = SystemStatus.COMPLETED, None
    elif kind == EventType.SYSTEM_FAILED:
        system.status, system.error = SystemStatus.FAILED, p.get("error")
        system.attempts += 1
    elif kind == EventType.TASK_OPENED:
        system.status = SystemStatus.AWAITING_MANUAL
        system.task = {k: p.get(k) for k in ("step", "assignee", "instructions", "due")} | {"done": False}
    elif kind == EventType.TASK_DONE and system.task is not None:
        system.task = {**system.task, "done": True, "note": payload_text(p, "note", texts), "by": p.get("by"),
                       "attachments": p.get("attachments", [])}
        # A restore task belongs to a restriction's lift, after the run: done is the system's end.
        system.status = SystemStatus.COMPLETED if system.task.get("step") == "restore" else SystemStatus.IN_PROGRESS


def index_row(events: Sequence[LedgerEvent]) -> dict[str, Any]:
    """The derived index row the ledger keeps for listing (see Ledger projector)."""
    state = derive_state(events)
    return {"type": state.type, "regime": state.regime, "status": state.status.value,
            "received_at": state.received_at, "due": state.due}


def timeline_with_texts(events: Sequence[LedgerEvent], texts: Texts) -> list[dict[str, Any]]:
    """Events as chained (`to_dict`), each with `free_text`: field -> the text it references, or `[redacted]`.

    Only events that reference kept text (`note_sha256`...) get the key; the payload stays as hashed.
    """
    timeline = []
    for event in events:
        row = event.to_dict()
        referenced = event_texts(event.payload)
        if referenced:
            row["free_text"] = {name: payload_text(event.payload, name, texts) for name in referenced}
        timeline.append(row)
    return timeline


def payload_with_texts(payload: Mapping[str, Any], texts: Texts) -> dict[str, Any]:
    """A payload as a person reads it: `note` (the kept text, or `[redacted]`) in place of `note_sha256`."""
    shown = dict(payload)
    for name in FREE_TEXT_FIELDS:
        if isinstance(shown.pop(f"{name}_sha256", None), str):
            shown[name] = payload_text(payload, name, texts)
    return shown
