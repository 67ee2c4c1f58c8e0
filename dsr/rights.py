"""The rights besides access and erasure, carried out per system like an erasure.

* Rectification: the request carries corrected fields (canonical names, dsr.contract.RECTIFIABLE_FIELDS).
  The values are personal data, so the chain never holds them: they are kept beside it as one
  free text with a random nonce (so its SHA-256 in the first event cannot be confirmed by guessing),
  and each system's outcome names the fields it changed with keyed hashes (HMAC with the identity
  key) of the old and new values. A re-read proves the change; a corrected address re-keys the
  subject (`identity.rekeyed`: a new identity row and hash; the old hash stays in the chain).
* Restriction (GDPR 18), objection to direct marketing (GDPR 21(2)), withdrawn consent to marketing
  and the CCPA opt-out of sale/sharing: marketing suppressed in every system (opt-out flags set,
  unsubscribed, removed from ad audiences), re-read where the vendor can be read. A restriction
  also keeps the subject's records out of the retention purge until it is lifted; `lift` puts back
  exactly what the suppression changed.
* Legal holds against erasure: a held subject's records are retained under GDPR 17(3)(e) with the
  hold's reference in the plan and the evidence; releasing the hold re-opens those systems.

The runner (dsr.run) dispatches here; this module writes through its lease-guarded append.
"""

from __future__ import annotations

import inspect
import json
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from dsr.contract import (
    Connector,
    FieldChange,
    ManualInstructions,
    MarketingSuppressor,
    RecordRef,
    Rectifier,
    RightsAction,
    RightsOutcome,
    RightsReceipt,
    Subject,
    close_connector,
)
from dsr.identity import identity_hash
from dsr.ledger.schema import identities as identities_table
from dsr.ledger.store import LedgerError
from dsr.ledger.texts import store_texts, text_sha256
from dsr.models import SUPPRESSION_TYPES, RequestInputError, RequestType, Status
from dsr.run.codec import last_payload
from dsr.service import DsrService, RequestStateError, _evidence_text, with_free_text
from dsr.state import EventType, RequestState

if TYPE_CHECKING:
    from dsr.run.runner import RequestRunner

#: Days a person has to put marketing back in a system without an API after a restriction is lifted.
RESTORE_TASK_DAYS = 7
#: The basis that keeps a held subject's records from erasure.
HOLD_BASIS = "GDPR Art. 17(3)(e): establishment, exercise or defence of legal claims"
#: The manual step (and RightsAction) each request type needs in a system.
RECTIFY, SUPPRESS, RESTORE = RightsAction.RECTIFY.value, RightsAction.SUPPRESS.value, RightsAction.RESTORE.value
RIGHTS_STEPS = frozenset({RECTIFY, SUPPRESS, RESTORE})
_EVENT_OF = {RECTIFY: EventType.SYSTEM_RECTIFIED, SUPPRESS: EventType.SYSTEM_SUPPRESSED,
             RESTORE: EventType.SYSTEM_RESTORED}

DEFAULT_INSTRUCTIONS = {
    RECTIFY: "Correct the subject's fields named in the request (`dsr status ID --subject` shows them to an officer) in every "
             "record of the subject, and nothing else. Then: dsr task done ID SYSTEM --note '...'.",
    SUPPRESS: "Stop all marketing to the subject: unsubscribe from every list, set every opt-out flag, remove "
              "from ad audiences; keep the data. Then: dsr task done ID SYSTEM --note '...'.",
    RESTORE: "The restriction was lifted: put back the marketing settings the suppression changed (and only "
             "those). Then: dsr task done ID SYSTEM --note '...'.",
}


def step_for(kind: RequestType | str) -> str:
    """The per-system step a request type needs: export, erase, rectify or suppress."""
    kind = RequestType(kind)
    if kind in (RequestType.ACCESS, RequestType.PORTABILITY):
        return "export"
    if kind is RequestType.ERASURE:
        return "erase"
    if kind is RequestType.RECTIFICATION:
        return RECTIFY
    assert kind in SUPPRESSION_TYPES
    return SUPPRESS


def needs_person(connector: Connector, step: str) -> bool:
    """A rights step this connector cannot do by API (declared manual, or not implemented)."""
    if step in connector.info.manual_steps:
        return True
    if step == RECTIFY:
        return not isinstance(connector, Rectifier)
    if step in (SUPPRESS, RESTORE):
        return not isinstance(connector, MarketingSuppressor)
    return False


def instructions(connector: Connector, step: str, refs: Sequence[RecordRef]) -> str:
    text = connector.manual_instructions(step, refs) if isinstance(connector, ManualInstructions) else None
    return text or DEFAULT_INSTRUCTIONS.get(step) or f"Do the {step} step by hand."


# -- the corrected values, kept beside the chain --------------------------------------------------


def corrections_text(payload: dict[str, Any], changes: Mapping[str, str] | None) -> str | None:
    """Put a rectification's field names and its kept text's hash into `payload`; the text to keep."""
    if not changes:
        return None
    # The nonce makes the hash unguessable: without it, sha256 of {"first_name": "Ada"} confirms a guess.
    text = json.dumps({"nonce": secrets.token_hex(16), "changes": dict(changes)}, sort_keys=True)
    payload["changes"] = {"fields": sorted(changes), "values_sha256": text_sha256(text)}
    return text


def corrections(service: DsrService, request_id: str) -> dict[str, str]:
    """The corrected values of a rectification (checked against the hash in its first event)."""
    first = service.ledger.events(request_id, through_seq=1)[0].payload
    recorded = first.get("changes") or {}
    digest = recorded.get("values_sha256")
    if not digest:
        raise RequestStateError(f"request {request_id} names no corrected fields")
    kept = service.ledger.free_texts(request_id).get(digest)
    if kept is None or kept.text is None or text_sha256(kept.text) != digest:
        raise RequestStateError(f"request {request_id}: the corrected values are no longer held (redacted)")
    values: dict[str, str] = json.loads(kept.text)["changes"]
    return values


def value_hash(service: DsrService, field: str, value: str | None) -> str | None:
    """A field value as the evidence names it: keyed hash (HMAC with the identity key), never the value."""
    if value is None:
        return None
    return identity_hash(f"field:{field}", value, service.settings.identity_hmac_key)


# -- payloads ------------------------------------------------------------------------------------


def receipt_payload(service: DsrService, system: str, receipt: RightsReceipt) -> dict[str, Any]:
    """A rights receipt for the ledger: rectified values as keyed hashes, flag values as they are."""
    hashed = receipt.action is RightsAction.RECTIFY

    def change(c: FieldChange) -> dict[str, Any]:
        if hashed:
            return {"field": c.field, "vendor_field": c.vendor_field,
                    "old_hash": value_hash(service, c.field, c.old), "new_hash": value_hash(service, c.field, c.new)}
        return {"field": c.field, "vendor_field": c.vendor_field, "old": c.old, "new": c.new}

    actions = Counter(("changed" if o.changes else "unchanged") if o.done else "failed" for o in receipt.outcomes)
    return {
        "system": system,
        "step": receipt.action.value,
        "complete": not receipt.failed,
        "actions": dict(sorted(actions.items())),
        "fields_changed": sorted({c.field for o in receipt.outcomes for c in o.changes}),
        "outcomes": [{"record": o.ref.key, "done": o.done, "error": o.error, "not_held": list(o.not_held),
                      "changes": [change(c) for c in o.changes]} for o in receipt.outcomes],
        "vendor_receipt_id": receipt.vendor_receipt_id,
        "api_calls": receipt.api_calls,
    }


def _outcomes_from_payload(system: str, payload: Mapping[str, Any], refs: Mapping[str, RecordRef],
                           ) -> list[RightsOutcome]:
    """A recorded suppression's outcomes, as `restore_marketing` takes them."""
    out = []
    for o in payload.get("outcomes", []):
        ref = refs.get(o["record"])
        if ref is None:
            _, obj, rid = o["record"].split("/", 2)
            ref = RecordRef(system, obj, rid, ())
        changes = tuple(FieldChange(c["field"], c["vendor_field"], c.get("old"), c.get("new"))
                        for c in o.get("changes", []))
        out.append(RightsOutcome(ref, RightsAction.SUPPRESS, bool(o.get("done")), changes))
    return out


# -- the steps -----------------------------------------------------------------------------------


def run_step(runner: RequestRunner, request_id: str, state: RequestState, system: str, connector: Connector,
             subject: Subject, refs: Sequence[RecordRef]) -> None:
    """Rectify or suppress in one system by API, then prove it by re-reading. Raises when not done."""
    step = step_for(state.type)
    done = state.system(system)
    if step == RECTIFY:
        assert isinstance(connector, Rectifier)
        changes = corrections(runner.service, request_id)
        if RECTIFY not in done.steps_done:
            receipt = connector.rectify(refs, changes)
            runner.writer.append(request_id, EventType.SYSTEM_RECTIFIED, receipt_payload(runner.service, system, receipt))
            if receipt.failed:
                raise RuntimeError(f"{len(receipt.failed)} record(s) could not be rectified in {system}")
        left, proof = connector.verify_rectified(refs, changes), "re-read after rectification"
    else:
        assert isinstance(connector, MarketingSuppressor)
        if SUPPRESS not in done.steps_done:
            # A restriction keeps the data unused, not only unmarketed: a vendor with a "do not process"
            # flag (Salesforce's Individual) sets it too. Connectors without such a flag take no keyword.
            restrict = (RequestType(state.type) is RequestType.RESTRICTION
                        and "restrict_processing" in inspect.signature(connector.suppress_marketing).parameters)
            receipt = (connector.suppress_marketing(subject, refs, restrict_processing=True)  # type: ignore[call-arg]
                       if restrict else connector.suppress_marketing(subject, refs))
            runner.writer.append(request_id, EventType.SYSTEM_SUPPRESSED, receipt_payload(runner.service, system, receipt))
            if receipt.failed:
                raise RuntimeError(f"marketing could not be stopped for {len(receipt.failed)} record(s) in {system}")
        if connector.info.write_only:
            left, proof = [], "write-only system: removal requested, absence cannot be re-read"
        else:
            left, proof = connector.verify_suppressed(subject, refs), "re-read after suppression"
    runner.writer.append(request_id, EventType.SYSTEM_VERIFIED, {
        "system": system, "proof": proof, "remaining": len(left), "retained_as_decided": [],
        "unexpected_remaining": sorted(r.key for r in left),
    })
    if left:
        raise RuntimeError(f"{len(left)} record(s) in {system} do not show the {step} on re-reading")


def rekey_identity(runner: RequestRunner, request_id: str, state: RequestState) -> None:
    """After a rectified address: record the subject's new keyed hash beside the old (once).

    The new address gets its own identity row the way every identity does: beside the first event
    of a chain of its own (`rekey-<request id>`, one `identity.rekeyed` event holding the new hash),
    so the ledger proves it like any other. The request's chain then records the same event naming
    that chain; its own first event, and so the old hash, stay as they were.
    """
    if RequestType(state.type) is not RequestType.RECTIFICATION:
        return
    if any(e.type == EventType.IDENTITY_REKEYED for e in runner.service.events(request_id)):
        return
    new_email = corrections(runner.service, request_id).get("email")
    if new_email is None:
        return
    digest = runner.service.identity_hash(new_email)
    if digest == state.identity_hash:
        return
    chain_id = REKEY_PREFIX + request_id
    payload = {"identity_kind": "email", "identity_hash": digest, "previous_identity_hash": state.identity_hash,
               "request_id": request_id}
    if not runner.ledger.exists(chain_id):
        try:
            runner.ledger.append(chain_id, EventType.IDENTITY_REKEYED, payload, actor="pipeline", expect_new=True,
                                 identity=("email", new_email, digest), project=False, anchor=True)
        except LedgerError:
            pass  # a twin run wrote it first: the same event
    runner.writer.append(request_id, EventType.IDENTITY_REKEYED, {**payload, "identity_chain": chain_id})


#: The chain that keeps a rectified address (its identity row beside its first event).
REKEY_PREFIX = "rekey-"


class _AlreadyDone(Exception):
    pass


# -- legal holds against erasure -----------------------------------------------------------------


def holds_on(service: DsrService, identity_hash_: str) -> list[str]:
    """References of the active legal holds on this subject."""
    from dsr.holds import holds

    return sorted(h.ref for h in holds(service) if h.identity_hash == identity_hash_)


def hold_basis(refs: Sequence[str]) -> str:
    return f"{HOLD_BASIS}; legal hold {', '.join(refs)}"


def reopen_after_release(service: DsrService, identity_hash_: str, hold_ref: str, actor: str) -> list[str]:
    """A hold was released: re-open every erasure whose systems it held back (they become runnable
    again for the held records). Returns the request ids re-opened."""
    reopened = []
    for request_id in requests_of(service, identity_hash_):
        state = service.chain_state(request_id)
        if RequestType(state.type) is not RequestType.ERASURE or state.status in (Status.CANCELLED, Status.REJECTED):
            continue
        still = set(holds_on(service, identity_hash_))
        systems = sorted(name for name, refs in state.held.items() if hold_ref in refs and not (set(refs) & still))
        if not systems:
            continue

        def guard(chain: Sequence[Any], systems: list[str] = systems) -> None:
            from dsr.state import derive_state

            current = derive_state(chain)
            if not any(name in current.held for name in systems):
                raise _AlreadyDone

        try:
            service.ledger.append(request_id, EventType.REOPENED,
                                  {"systems": systems, "hold": hold_ref, "reason": f"legal hold {hold_ref} released"},
                                  actor=actor, guard=guard)
        except _AlreadyDone:
            continue
        reopened.append(request_id)
    return reopened


def requests_of(service: DsrService, identity_hash_: str) -> list[str]:
    """Every request about this subject (by keyed hash), oldest id first; holds excluded."""
    with service.ledger.read_engine.connect() as conn:
        ids = conn.execute(select(identities_table.c.request_id).where(
            identities_table.c.hash == identity_hash_, identities_table.c.kind == "email")).scalars().all()
    return sorted(i for i in ids if not i.startswith(("hold-", "purge-", REKEY_PREFIX)))


def open_duplicate(service: DsrService, email: str, kind: RequestType) -> str | None:
    """An open request of the same subject and type (the intake links such duplicates; the CLI refuses them).

    A rectification is not a duplicate of another one: it may correct other fields."""
    if kind is RequestType.RECTIFICATION:
        return None
    digest = service.identity_hash(email)
    for request_id in requests_of(service, digest):
        state = service.chain_state(request_id)
        if state.type == kind.value and not state.closed:
            return request_id
    return None


# -- restriction: the purge holds back, the lift restores ------------------------------------------


def restricted_subjects(service: DsrService) -> list[tuple[str, str]]:
    """(request id, address) of every restriction in force: the purge keeps these subjects' records."""
    out = []
    for row in service.ledger.index():
        if row.type != RequestType.RESTRICTION.value or row.status in (Status.CANCELLED.value, Status.REJECTED.value):
            continue
        state = service.chain_state(row.request_id)
        if state.restriction_lifted:
            continue
        address = service.ledger.identity(row.request_id)
        if address:
            out.append((row.request_id, address))
    return out


@dataclass(frozen=True)
class LiftResult:
    request_id: str
    restored: tuple[str, ...]  # systems whose marketing was put back by API
    tasks: tuple[str, ...]  # systems where a person must put it back (a task is open)
    failed: dict[str, str]


def lift_restriction(runner: RequestRunner, request_id: str, *, reason: str, actor: str,
                     connect: Callable[[str], Connector]) -> LiftResult:
    """End a restriction: put back what its suppression changed in each system, with evidence.

    Refused (RequestStateError) unless the request is a finished restriction not lifted yet.
    A system whose restore fails keeps the restriction unlifted (run it again).
    """
    service = runner.service
    text = _evidence_text("reason", reason, required="say why the restriction ends (it goes into the evidence)")
    state = service.chain_state(request_id)
    if RequestType(state.type) is not RequestType.RESTRICTION:
        raise RequestStateError(f"request {request_id} is a {state.type} request, not a restriction")
    if state.restriction_lifted:
        raise RequestStateError(f"the restriction of request {request_id} is already lifted")
    if state.status not in (Status.COMPLETED, Status.PARTIALLY_COMPLETED):
        raise RequestStateError(f"request {request_id} is {state.status.value}; only a carried-out restriction "
                                "can be lifted")
    email = service.ledger.identity(request_id)
    if email is None:
        raise RequestStateError(f"request {request_id}: the subject's identity is no longer held")
    subject = Subject(email=email, identity_hash=state.identity_hash)
    events = service.events(request_id)
    restored: list[str] = []
    tasks: list[str] = []
    failed: dict[str, str] = {}
    for system in sorted(state.systems):
        current = state.systems[system]
        if RESTORE in current.steps_done:
            restored.append(system)
            continue
        suppressed = last_payload(events, EventType.SYSTEM_SUPPRESSED, system)
        was_manual = current.task is not None and current.task.get("step") == SUPPRESS
        if suppressed is None and not was_manual:
            continue  # nothing was changed there (no records)
        connector: Connector | None = None
        try:
            connector = connect(system)
            if was_manual or needs_person(connector, RESTORE):
                if not (current.task and current.task.get("step") == RESTORE):
                    # A lift has no legal deadline of its own: a week is the office's working rule.
                    due = datetime.now(UTC).date() + timedelta(days=RESTORE_TASK_DAYS)
                    runner.writer.append(request_id, EventType.TASK_OPENED, {
                        "system": system, "step": RESTORE, "assignee": _assignee(service, system),
                        "instructions": instructions(connector, RESTORE, []), "due": due.isoformat(), "records": []})
                tasks.append(system)
                continue
            assert isinstance(connector, MarketingSuppressor) and suppressed is not None
            receipt = connector.restore_marketing(subject, _outcomes_from_payload(system, suppressed, {}))
            runner.writer.append(request_id, EventType.SYSTEM_RESTORED, receipt_payload(service, system, receipt))
            if receipt.failed:
                failed[system] = f"{len(receipt.failed)} record(s) could not be restored"
            else:
                restored.append(system)
        except Exception as exc:  # one system's failure is reported; the others still restore
            failed[system] = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            close_connector(connector)
    if failed:
        return LiftResult(request_id, tuple(restored), tuple(tasks), failed)
    payload = with_free_text({"restored": restored, "tasks": tasks}, "reason", text)

    def once(chain: Sequence[Any]) -> None:
        if any(e.type == EventType.RESTRICTION_LIFTED for e in chain):
            raise RequestStateError(f"the restriction of request {request_id} is already lifted")

    runner.ledger.append(request_id, EventType.RESTRICTION_LIFTED, payload, actor=actor, guard=once,
                         texts=store_texts([text]))
    # A new outcome event so the evidence is sealed again with the lift in it.
    runner.ledger.append(request_id, EventType.COMPLETED, {"systems": sorted(state.systems),
                                                           "response": "restriction lifted; subject to be told"},
                         actor="pipeline")
    runner.sealer.seal(request_id, service.state(request_id))
    return LiftResult(request_id, tuple(restored), tuple(tasks), {})


def _assignee(service: DsrService, system: str) -> str:
    config = service.data_map.systems.get(system)
    return (config.assignee or config.owner) if config else "privacy-office"



def parse_set_options(options: Sequence[str] | None) -> dict[str, str] | None:
    """`--set FIELD=VALUE` options as a rectification's changes (checked by the request model)."""
    if not options:
        return None
    changes: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        name = name.strip()
        if not sep or not name:
            raise RequestInputError("set", "write FIELD=VALUE, e.g. --set first_name=Ada")
        if name in changes:
            raise RequestInputError(f"changes.{name}", "given twice")
        changes[name] = value
    return changes
