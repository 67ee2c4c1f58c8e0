"""The service layer: the one place where the rules of a request's life live.

The CLI, the HTTP API and the flows call `DsrService`, the one application object, built once
from settings; they only parse and present. It records a request's life here and runs, purges,
holds and sweeps through `dsr.application.Operations`. Every change is a ledger event appended
with a guard that re-checks the state inside the append's transaction, so two doors acting at once
cannot both succeed where only one may; after it, the change is published on the service's event
bus (`dsr.bus`), where the OpenDSR callbacks and the orchestrator hear of it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from dsr.access import Principal, Role, new_token, token_hash
from dsr.adapters import webhooks
from dsr.application import Operations
from dsr.bus import STATUS_CHANGED, EventBus
from dsr.config import DataMap, Policy, load_data_map, load_policy
from dsr.contract import Connector
from dsr.deadlines import (
    ClockEvent,
    ClockEventKind,
    Deadline,
    DeadlineError,
    check_extension_allowed,
    check_pause_allowed,
    compute_deadline,
)
from dsr.files import open_private, private_dir
from dsr.identity import identity_hash
from dsr.ledger.anchors import Anchoring
from dsr.ledger.events import LedgerEvent, format_timestamp
from dsr.ledger.store import IndexRow, Ledger
from dsr.ledger.texts import (
    REDACTION_REASON_MAX,
    FreeTextError,
    event_texts,
    is_sha256,
    store_texts,
    text_reference,
)
from dsr.ledger.texts import text_sha256 as sha256_of_text
from dsr.models import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    UNVERIFIED_TYPES,
    NewRequest,
    RequestInputError,
    Status,
    validate_method,
)
from dsr.personal_text import contains_email_address, redact
from dsr.settings import Settings
from dsr.state import EventType, RequestState, derive_state, index_row

log = logging.getLogger(__name__)


def _evidence_text(field: str, value: str | None, *, required: str | None = None) -> str | None:
    """Free text kept as evidence: required where asked, never an address.

    Kept beside the chain (only its hash is in an event), so it can be redacted later; but an
    address should never get that far: refuse it at the door, where the person can still fix it.
    """
    text = (value or "").strip()
    if not text:
        if required:
            raise RequestInputError(field, required)
        return None
    if contains_email_address(text):
        raise RequestInputError(field, "must not contain an e-mail address (it is kept as evidence)")
    return text


def with_free_text(payload: dict[str, Any], field: str, text: str | None) -> dict[str, Any]:
    """`payload` referencing `text` by hash (`<field>_sha256`): the words stay out of the chain.

    Pass the same texts to `Ledger.append(texts=store_texts(...))` so they are kept beside it.
    """
    if text is None:
        payload[field] = None
    else:
        payload[f"{field}_sha256"] = sha256_of_text(text)
    return payload


#: What a clock can wait for: (the event that pauses it, the event that resumes it).
PAUSES: dict[str, tuple[ClockEventKind, ClockEventKind]] = {
    "id": (ClockEventKind.ID_REQUESTED, ClockEventKind.ID_RECEIVED),
    "clarification": (ClockEventKind.CLARIFICATION_REQUESTED, ClockEventKind.CLARIFICATION_RECEIVED),
    "fee": (ClockEventKind.FEE_REQUESTED, ClockEventKind.FEE_RECEIVED),
}


def _safe_file_name(name: str) -> str:
    """An attachment's name as stored: no directories, no dot-files, nothing a shell or zip would mind."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "attachment"
    return cleaned[:120]


def _open_pauses(clock: Sequence[ClockEvent]) -> set[ClockEventKind]:
    """Pause kinds requested and not yet received."""
    waiting: set[ClockEventKind] = set()
    for event in clock:
        for start, end in PAUSES.values():
            if event.kind == start:
                waiting.add(start)
            elif event.kind == end:
                waiting.discard(start)
    return waiting


class RequestStateError(RuntimeError):
    """The request is not in a state that allows this; the message says what it is in."""


#: Builds a system's connector from its name, kind and settings (connectors.registry.build_connector).
ConnectorBuilder = Callable[[str, str, Any], Connector]


@dataclass(frozen=True)
class Submitted:
    state: RequestState
    created: bool  # False when an idempotent re-submission found the request already there


class DsrService(Operations):
    """Submit, verify, extend, cancel, read, run and purge. Holds no state beyond its ledger."""

    def __init__(self, settings: Settings | None = None, ledger: Ledger | None = None, *,
                 build_connector: ConnectorBuilder | None = None) -> None:
        self.settings = settings or Settings()
        self._build_connector = build_connector
        self.ledger = ledger or Ledger(self.settings.ledger_url, projector=index_row,
                                       auto_migrate=self.settings.schema_upgrade == "auto", require_current=True)
        # The record cannot be made to lie (DESIGN invariant 6): the ledger signs and mirrors chain
        # heads with this deployment's key, and proves every identity it hands out against the chain.
        if self.ledger.anchoring is None:
            self.ledger.anchoring = Anchoring.under_home(self.settings.home, self.settings.signing_key_path)
        if self.ledger.identity_hasher is None:
            key = self.settings.identity_hmac_key
            self.ledger.identity_hasher = lambda kind, value: identity_hash(kind, value, key)
        # How the doors and the orchestrator learn of a recorded change (a Prefect event on
        # verification) without the domain importing them; the status callbacks are always on.
        self.bus = EventBus()
        webhooks.subscribe(self)

    def connector(self, system: str) -> Connector:
        """A freshly built connector for one system of the data map (its kind and settings).

        Raises:
            KeyError: the data map has no such system.
            ConnectorError: its settings are wrong (a `ValueError` too), naming the setting at fault.
        """
        config = self.data_map.systems[system]
        build = self._build_connector
        if build is None:  # the registry imports a connector module only when its kind is used
            from connectors.registry import build_connector

            build = build_connector
        return build(system, config.kind, config.settings)

    def status_changed(self, request_id: str) -> None:
        """Publish that a request's status may have changed (a run's step or end) on the bus, where
        its OpenDSR callbacks hear it.

        Never raises: a receiver that is down must not fail the run or the officer's action."""
        self.bus.publish(STATUS_CHANGED, request_id)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.settings.policy_path)

    @cached_property
    def data_map(self) -> DataMap:
        return load_data_map(self.settings.systems_path)

    def close(self) -> None:
        self.ledger.close()

    # -- reading ----------------------------------------------------------------------------

    def events(self, request_id: str) -> list[LedgerEvent]:
        return self.ledger.events(request_id)

    def state(self, request_id: str, *, for_auditor: bool = False) -> RequestState:
        """The request with its free text shown (auditors: e-mail addresses in it redacted).

        Never build an event's payload from this state: it holds the words, which stay out of
        the chain; `chain_state` names them by hash.
        """
        return derive_state(self.ledger.events(request_id), self.texts(request_id, for_auditor=for_auditor))

    def chain_state(self, request_id: str) -> RequestState:
        """The request from its chain alone: free text by hash reference (what payloads may hold)."""
        return derive_state(self.ledger.events(request_id))

    def texts(self, request_id: str, *, for_auditor: bool = False) -> dict[str, str | None]:
        """Hash -> the request's kept free text, None once redacted (auditors: addresses redacted)."""
        kept = {digest: row.text for digest, row in self.ledger.free_texts(request_id).items()}
        if for_auditor:
            return {digest: None if text is None else redact(text) for digest, text in kept.items()}
        return kept

    def free_text_list(self, request_id: str) -> list[dict[str, Any]]:
        """Every free text the request's events reference: where, its hash, and whether it is redacted."""
        kept = self.ledger.free_texts(request_id)
        listed = []
        for event in self.ledger.events(request_id):
            for field, digest in event_texts(event.payload).items():
                row = kept.get(digest)
                listed.append({"seq": event.seq, "type": event.type, "field": field, "sha256": digest,
                               "kept": row is not None and row.text is not None,
                               "redacted_at": row.redacted_at if row else None})
        return listed

    def list(self, *, open_only: bool = False) -> list[IndexRow]:
        statuses = sorted(s.value for s in OPEN_STATUSES) if open_only else None
        return self.ledger.index(statuses=statuses)

    def identity_hash(self, email: str) -> str:
        return identity_hash("email", email, self.settings.identity_hmac_key)

    def deadline(self, state: RequestState, *, extra: Sequence[ClockEvent] = (), as_of: date | None = None) -> Deadline:
        """Recompute the deadline from the request's clock events (and any not yet recorded)."""
        return compute_deadline(
            state.regime, [*state.clock, *extra], country=state.country,
            rules=self.policy.deadlines.rules(), as_of=as_of, request_type=state.type,
        )

    # -- changing ---------------------------------------------------------------------------

    def submit(self, new: NewRequest, *, actor: str | None = None, request_id: str | None = None) -> Submitted:
        """Record a new request; its clock starts now (at `new.received`)."""
        request_id = request_id or str(uuid.uuid4())
        digest = self.identity_hash(new.email)
        if request_id and self.ledger.exists(request_id):
            existing = self.state(request_id)
            if existing.identity_hash != digest or existing.type != new.type.value:
                raise RequestInputError("request_id", f"{request_id} already exists with other contents")
            return Submitted(existing, created=False)
        try:
            deadline = compute_deadline(
                new.regime, [ClockEvent(ClockEventKind.RECEIVED, new.received)], country=new.country,
                rules=self.policy.deadlines.rules(), request_type=new.type.value,
            )
        except DeadlineError as exc:
            field, _, message = str(exc).partition(": ")
            raise RequestInputError(field if message else "country", message or str(exc)) from None
        payload = {
            "type": new.type.value,
            "regime": new.regime.value,
            "country": deadline.country,
            "channel": new.channel,
            "received_at": format_timestamp(new.received),
            "identity_kind": "email",
            "identity_hash": digest,
            "deadline": deadline.to_dict(),
        }
        self.policy.check_right(new.regime, new.type)  # a type the regime does not offer: field `type`
        note = _evidence_text("note", new.note)
        with_free_text(payload, "note", note)
        # A rectification's corrected values are personal data: kept beside the chain (like a
        # note), the event names the fields and the kept text's hash (dsr.rights).
        from dsr.rights import corrections_text
        corrections = corrections_text(payload, new.changes)
        if new.submitted_at is not None:  # the requester's own time, kept as information
            payload["submitted_at"] = format_timestamp(new.submitted_at)
        self.ledger.append(request_id, EventType.RECEIVED, payload, actor=actor or self.settings.actor,
                           identity=("email", new.email, digest), expect_new=True,
                           texts=store_texts([note, corrections]))
        log.info("request %s received (%s, %s, subject %s)", request_id, new.type.value, new.regime.value, digest)
        if new.type in UNVERIFIED_TYPES:  # runnable as received (11 CCR 7026): start it as a verified one starts
            self.bus.publish(EventType.VERIFIED, request_id)
        return Submitted(self.state(request_id), created=True)

    def verify(self, request_id: str, *, method: str, note: str, actor: str | None = None) -> RequestState:
        """Record that the privacy office verified the requester's identity."""
        method = validate_method(method)
        note = _evidence_text("note", note, required="say what was checked (it goes into the evidence)") or ""

        def guard(chain: Sequence[LedgerEvent]) -> None:
            state = derive_state(chain)
            if state.closed:
                raise RequestStateError(f"request {request_id} is {state.status.value}; nothing to verify")
            if state.verified:
                raise RequestStateError(f"request {request_id} is already verified")

        self.ledger.append(request_id, EventType.VERIFIED, with_free_text({"method": method}, "note", note),
                           actor=actor or self.settings.actor, guard=guard, texts=store_texts([note]))
        log.info("request %s verified by %s", request_id, method)
        self.bus.publish(EventType.VERIFIED, request_id)  # a status change too: the callbacks hear it
        return self.state(request_id)

    def extend(self, request_id: str, *, reason: str, actor: str | None = None,
               at: datetime | None = None) -> RequestState:
        """Extend the deadline as the regime allows; refused where it does not, or too late."""
        reason = _evidence_text("reason", reason, required="the subject must be told why (it goes into the notice)") or ""
        now = at or datetime.now(UTC)
        today = now.date()

        def guard(chain: Sequence[LedgerEvent]) -> None:
            state = derive_state(chain)
            if state.closed:
                raise RequestStateError(f"request {request_id} is {state.status.value}; nothing to extend")
            check_extension_allowed(self.deadline(state), today)

        state = self.chain_state(request_id)
        # The deadline names the reason by reference: the words stay out of the chain.
        extension = ClockEvent(ClockEventKind.EXTENDED, now, text_reference(sha256_of_text(reason)))
        new_deadline = self.deadline(state, extra=[extension])
        payload = {"deadline": new_deadline.to_dict(), "notice": "extension notice to the subject queued"}
        self.ledger.append(request_id, EventType.EXTENDED, with_free_text(payload, "reason", reason),
                           actor=actor or self.settings.actor, at=now, guard=guard, texts=store_texts([reason]))
        return self.state(request_id)

    PAUSES = PAUSES

    def pause(self, request_id: str, *, wait_for: str, reason: str, actor: str | None = None,
              at: datetime | None = None) -> RequestState:
        """Stop the clock while waiting for the subject (ID, clarification, fee), where the regime allows."""
        return self._clock(request_id, wait_for, 0, reason, actor, at)

    def resume(self, request_id: str, *, wait_for: str, actor: str | None = None,
               at: datetime | None = None) -> RequestState:
        """What the clock waited for has arrived; the deadline moves by the days paused."""
        return self._clock(request_id, wait_for, 1, None, actor, at)

    def _clock(self, request_id: str, wait_for: str, index: int, reason: str | None, actor: str | None,
               at: datetime | None) -> RequestState:
        if wait_for not in self.PAUSES:
            raise RequestInputError("wait_for", f"must be one of {', '.join(self.PAUSES)}")
        kind = self.PAUSES[wait_for][index]
        if index == 0:
            reason = _evidence_text("reason", reason, required="say what is needed from the subject, and why")
        now = at or datetime.now(UTC)
        state = self.chain_state(request_id)
        check_pause_allowed(state.regime, kind, self.policy.deadlines.rules())
        open_kinds = _open_pauses(state.clock)
        if index == 0 and self.PAUSES[wait_for][0] in open_kinds:
            raise RequestStateError(f"request {request_id} is already waiting for {wait_for}")
        if index == 1 and self.PAUSES[wait_for][0] not in open_kinds:
            raise RequestStateError(f"request {request_id} is not waiting for {wait_for}")
        event = ClockEvent(kind, now, text_reference(sha256_of_text(reason)) if reason else None)
        deadline = self.deadline(state, extra=[event], as_of=now.date())

        def guard(chain: Sequence[LedgerEvent]) -> None:
            if derive_state(chain).closed:
                raise RequestStateError(f"request {request_id} is closed; its clock no longer runs")

        payload = with_free_text({"kind": kind.value, "deadline": deadline.to_dict()}, "reason", reason)
        self.ledger.append(request_id, EventType.CLOCK, payload,
                           actor=actor or self.settings.actor, at=now, guard=guard, texts=store_texts([reason]))
        return self.state(request_id)

    def acknowledge(self, request_id: str, *, note: str = "acknowledgement sent to the subject",
                    actor: str | None = None, at: datetime | None = None) -> RequestState:
        """Record that receipt was acknowledged to the subject (CCPA: within 10 business days)."""
        note = _evidence_text("note", note, required="say how it was acknowledged") or ""

        def guard(chain: Sequence[LedgerEvent]) -> None:
            if derive_state(chain).acknowledged_at is not None:
                raise RequestStateError(f"request {request_id} was already acknowledged")

        self.ledger.append(request_id, EventType.ACKNOWLEDGED, with_free_text({}, "note", note),
                           actor=actor or self.settings.actor, at=at, guard=guard, texts=store_texts([note]))
        return self.state(request_id)

    # -- manual tasks -------------------------------------------------------------------------

    def attachment_path(self, request_id: str, system: str, name: str) -> Path:
        return self.settings.home / "attachments" / request_id / system / name

    def task_done(self, request_id: str, system: str, *, note: str, attachments: Sequence[Path] = (),
                  actor: str | None = None) -> RequestState:
        """Record what a person did for a system's manual task (files kept; their hashes in the ledger)."""
        note = _evidence_text("note", note, required="say what was done (it is kept as evidence)") or ""
        state = self.state(request_id)
        current = state.systems.get(system)
        task = current.task if current is not None else None
        if task is None:
            raise RequestStateError(f"request {request_id} has no manual task in {system!r}")
        if task.get("done"):
            raise RequestStateError(f"the manual task in {system} is already done")
        stored = []
        for source in attachments:
            if not source.is_file():
                raise RequestInputError("attach", f"no file at {source}")
            name = _safe_file_name(source.name)
            target = self.attachment_path(request_id, system, name)
            private_dir(target.parent.parent)  # the request's attachments: the subject's data
            private_dir(target.parent)
            digest = hashlib.sha256()
            with source.open("rb") as src, open_private(target, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            stored.append({"name": name, "sha256": digest.hexdigest(), "bytes": target.stat().st_size})
        by = actor or self.settings.actor

        def guard(chain: Sequence[LedgerEvent]) -> None:
            current = derive_state(chain).systems.get(system)
            if current is None or current.task is None or current.task.get("done"):
                raise RequestStateError(f"the manual task in {system} is not open any more")

        payload = with_free_text({"system": system, "by": by, "attachments": stored}, "note", note)
        self.ledger.append(request_id, EventType.TASK_DONE, payload, actor=by, guard=guard, texts=store_texts([note]))
        return self.state(request_id)

    # -- downloads and subject tokens ---------------------------------------------------------

    def record_download(self, request_id: str, what: str, *, by: str, role: str, version: int | None = None) -> None:
        """Every download of evidence or a package is itself a ledger event (who, when, which)."""
        kind = EventType.BUNDLE_DOWNLOADED if what == "bundle" else EventType.PACKAGE_DOWNLOADED
        payload: dict[str, object] = {"by": by, "role": role}
        if version is not None:
            payload["version"] = version
        self.ledger.append(request_id, kind, payload, actor=by)

    def issue_subject_token(self, request_id: str, *, ttl: timedelta = timedelta(days=5),
                            actor: str | None = None) -> tuple[str, datetime]:
        """A single-use, expiring token for the subject's own status and package (shown once)."""
        state = self.state(request_id)
        if state.status != Status.COMPLETED or state.package is None:
            raise RequestStateError(f"request {request_id} has no package to deliver yet")
        token = new_token()
        expires = datetime.now(UTC) + ttl
        digest = token_hash(token)
        self.ledger.append(request_id, EventType.SUBJECT_TOKEN_ISSUED,
                           {"token_sha256": digest, "expires_at": format_timestamp(expires)},
                           actor=actor or self.settings.actor)
        self.ledger.add_subject_token(request_id, digest, format_timestamp(expires))
        return token, expires

    def subject_principal(self, token: str) -> Principal | None:
        """The subject behind a token, while it has not expired (used tokens still show status)."""
        found = self.ledger.subject_token(token_hash(token))
        if found is None:
            return None
        request_id, expires_at, _used = found
        if expires_at <= format_timestamp(datetime.now(UTC)):
            return None
        return Principal("subject", Role.SUBJECT, request_id)

    def spend_subject_token(self, token: str) -> bool:
        return self.ledger.use_subject_token(token_hash(token), format_timestamp(datetime.now(UTC)))

    def cancel(self, request_id: str, *, reason: str = "cancelled by the privacy office",
               actor: str | None = None) -> RequestState:
        reason = _evidence_text("reason", reason, required="say why (it is kept as evidence)") or ""

        def guard(chain: Sequence[LedgerEvent]) -> None:
            state = derive_state(chain)
            # Allowed while a run is in progress: the runner re-reads the state before every
            # system step and stops there, so a stuck run can always be cancelled.
            if state.status in CLOSED_STATUSES:
                raise RequestStateError(f"request {request_id} is already {state.status.value}")

        self.ledger.append(request_id, EventType.CANCELLED, with_free_text({}, "reason", reason),
                           actor=actor or self.settings.actor, guard=guard, texts=store_texts([reason]))
        self.bus.publish(EventType.CANCELLED, request_id)
        return self.state(request_id)

    # -- free text ------------------------------------------------------------------------------

    def redact_text(self, request_id: str, *, text_sha256: str, reason: str, actor: str | None = None) -> None:
        """Null one of a request's kept free texts (a note that should never have been written).

        The events keep the text's hash, so the chain and sealed bundles still verify; a
        `text.redacted` event (hash only) records who did it and when, the reason stays beside it.
        """
        digest = (text_sha256 or "").strip().lower()
        if not is_sha256(digest):
            raise RequestInputError("text_sha256", "must be a SHA-256 (64 hex digits), as `dsr texts ID` lists")
        why = _evidence_text("reason", reason, required="say why the text is redacted") or ""
        if len(why) > REDACTION_REASON_MAX:
            raise RequestInputError("reason", f"at most {REDACTION_REASON_MAX} characters")
        chain = self.ledger.events(request_id)
        if not any(digest in event_texts(e.payload).values() for e in chain):
            raise RequestInputError("text_sha256", f"no event of request {request_id} references this text")
        try:
            # Legal holds and other chains that are not requests keep no index row.
            self.ledger.redact_text(request_id, digest, why, actor=actor or self.settings.actor,
                                    project=chain[0].type == EventType.RECEIVED)
        except FreeTextError as exc:
            raise RequestStateError(str(exc).split(": ", 1)[-1]) from None
        log.info("request %s: a free text was redacted", request_id)
