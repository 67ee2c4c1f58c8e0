"""Carrying out a verified request, one system at a time, as a write-ahead saga.

Each step appends its result to the ledger before the next one starts, and each step first
asks the ledger whether it is already done. A re-run after a crash, a failure or a finished
run therefore repeats nothing harmful: discovery and decisions are read back from the ledger,
erasure is idempotent, and completed systems are skipped.

The flow (flows/request.py) calls `begin`, then `run_system` once per system (in parallel), then
`finish`. This module knows nothing of Prefect; connectors arrive already built.

Two runs of one request at once (two workers picking it up) must not both act: `begin` takes a
*run lease* (`run.claimed`: holder and expiry) with a guarded append, so exactly one wins and the
other stops with `AlreadyRunning`. Every later append of the run is guarded by the lease, so a run
whose lease was taken over stops (`LeaseLost`) instead of forking the story. The holder is the
run, not the thread: `begin` returns it in the plan and the flow hands it to each system task. A
lease from a crashed worker can be taken over once it expires, or at once when its holder was a
process on this host that no longer exists.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from dsr import rights
from dsr.bundle import build_bundle, discovered_hashes
from dsr.contract import (
    Connector,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    Receipt,
    RecordOutcome,
    RecordRef,
    Subject,
)
from dsr.discovery import REFS_FILE, REFS_SHA256, read_refs, refs_file_name, write_refs
from dsr.files import open_private, private_dir, remove_tree
from dsr.ledger.events import LedgerEvent, canonical_json, format_timestamp, parse_timestamp
from dsr.ledger.store import ChainTampered, IdentityTampered, LedgerError
from dsr.models import AUTOMATED_TYPES, EXPORT_TYPES, UNVERIFIED_TYPES, RequestType, Status
from dsr.adapters.mail import Notice, deliver
from dsr.package import leftovers, remove_leftovers, write_package
from dsr.policy import decide_erasure
from dsr.service import DsrService, RequestStateError
from dsr.signing import load_or_create_signing_key
from dsr.state import EventType, RequestState, SystemStatus, derive_state
from dsr.adapters.storage import BundleConflict, EvidenceStore, LocalEvidenceStore, config_from_settings, open_store

log = logging.getLogger(__name__)

RUNNER = "pipeline"
PACKAGE_FILE = "package.zip"  # as written by `_package`, beside the request's staging

#: How long a run's lease lasts without renewal; each system step renews it past half-life.
LEASE_SECONDS_ENV = "DSR_RUN_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 900.0

#: Chaos testing only (chaos/): `point` or `point@n` SIGKILLs this process the n-th time the run
#: reaches that named point. Unset (always, outside chaos campaigns), `crash_point` does nothing.
CRASH_ENV = "DSR_CHAOS_CRASH_AT"
_crash_hits: Counter[str] = Counter()
_crash_lock = threading.Lock()

# The lease holder of the run this thread works for (set by run_system and finish).
_holder: ContextVar[str | None] = ContextVar("dsr_run_holder", default=None)


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup, if the chaos campaign asked for it (see CRASH_ENV)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    with _crash_lock:
        _crash_hits[name] += 1
        hit = _crash_hits[name]
    if hit >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class NotVerified(RequestStateError):
    """DESIGN invariant 2: no fan-out before the requester's identity is verified."""


class AlreadyRunning(RequestStateError):
    """Another run holds the request's lease: this one stops before doing anything."""

    def __init__(self, request_id: str, holder: str, until: str) -> None:
        super().__init__(f"request {request_id} is already running (held by {holder} until {until})")
        self.holder, self.until = holder, until


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it expired); the run stops without writing more."""


def new_holder() -> str:
    """A run's name in its lease: host and process (so a dead local holder is recognised), and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_gone(holder: str) -> bool:
    """True only when the holder was a process on this host that no longer exists. Anything
    unsure (another host, a pid reused, no permission to ask) counts as alive: waiting for the
    expiry is the safe side."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def lease_blocks(lease: dict[str, Any] | None, holder: str | None, now: datetime) -> bool:
    """Does `lease` keep `holder` (None: a caller holding no lease) from writing?"""
    if lease is None or lease["holder"] == holder:
        return False
    return parse_timestamp(lease["until"]) > now and not holder_gone(lease["holder"])


@dataclass(frozen=True)
class RunPlan:
    request_id: str
    systems: tuple[str, ...]  # systems still to do (completed ones are left out)
    all_systems: tuple[str, ...]
    action: str  # "export" or "erase"
    already_closed: bool = False
    manual_reason: str | None = None
    lease: str | None = None  # the run's lease holder: hand it to run_system and finish


@dataclass(frozen=True)
class SystemResult:
    system: str
    status: str
    records_found: int
    actions: dict[str, int] = field(default_factory=dict)
    exported: int | None = None
    remaining: int | None = None  # None: no post-erasure re-query was made
    error: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class RunOutcome:
    request_id: str
    status: Status
    reason: str | None
    systems: tuple[SystemResult, ...]
    bundle_path: Path | None  # a local file (None when bundles live in S3: see bundle_uri)
    package_path: Path | None
    bundle_uri: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.COMPLETED


def ref_to_dict(ref: RecordRef) -> dict[str, Any]:
    return {"object": ref.object, "id": ref.id, "categories": [c.value for c in ref.categories],
            "anchor_date": ref.anchor_date.isoformat() if ref.anchor_date else None}


def ref_from_dict(system: str, data: dict[str, Any]) -> RecordRef:
    anchor = data.get("anchor_date")
    return RecordRef(system, data["object"], str(data["id"]), tuple(DataCategory(c) for c in data["categories"]),
                     date.fromisoformat(anchor) if anchor else None)


def _safe_error(exc: BaseException) -> str:
    """An error for the ledger: type and message, cut short. Connectors keep personal data out
    of their messages (contract rule); the cut bounds what a vendor's error body can add."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


class RequestRunner:
    """Drives one request through its systems. Safe to call again at any point."""

    def __init__(self, service: DsrService, store: EvidenceStore | None = None,
                 lease_seconds: float | None = None) -> None:
        self.service = service
        self.ledger = service.ledger
        self._store = store
        self.lease_seconds = lease_seconds or float(os.environ.get(LEASE_SECONDS_ENV) or DEFAULT_LEASE_SECONDS)
        self._held: dict[str, str] = {}  # request id -> the lease this runner took in `begin`

    # -- the run lease ------------------------------------------------------------------------

    def _claim(self, request_id: str) -> str:
        """Take (or take over) the request's lease; AlreadyRunning if another live run holds it."""
        holder = self._held.get(request_id) or new_holder()
        now = datetime.now(UTC)
        payload: dict[str, Any] = {"holder": holder, "ttl_seconds": self.lease_seconds,
                                   "until": format_timestamp(now + timedelta(seconds=self.lease_seconds))}

        def guard(chain: Sequence[LedgerEvent]) -> None:
            lease = derive_state(chain).lease
            if lease_blocks(lease, holder, datetime.now(UTC)):
                assert lease is not None
                raise AlreadyRunning(request_id, lease["holder"], lease["until"])
            if lease is not None and lease["holder"] != holder:
                payload["took_over"] = lease["holder"]  # expired, or its process is gone

        self.ledger.append(request_id, EventType.RUN_CLAIMED, payload, actor=RUNNER, guard=guard)
        self._held[request_id] = holder
        return holder

    def _renew(self, request_id: str, holder: str | None) -> None:
        """Extend our lease when less than half of it is left (a long run keeps it)."""
        if holder is None:
            return
        lease = self.service.state(request_id).lease
        if lease is None or lease["holder"] != holder:
            raise LeaseLost(f"request {request_id}: this run's lease was taken over")
        left = (parse_timestamp(lease["until"]) - datetime.now(UTC)).total_seconds()
        if left < self.lease_seconds / 2:
            self._append(request_id, EventType.RUN_CLAIMED, {
                "holder": holder, "ttl_seconds": self.lease_seconds,
                "until": format_timestamp(datetime.now(UTC) + timedelta(seconds=self.lease_seconds))})

    def _release(self, request_id: str, holder: str | None) -> None:
        if holder is None or (self.service.state(request_id).lease or {}).get("holder") != holder:
            return
        self._append(request_id, EventType.RUN_RELEASED, {"holder": holder})
        self._held.pop(request_id, None)

    @contextmanager
    def _as_holder(self, request_id: str, lease: str | None) -> Iterator[str | None]:
        holder = lease or self._held.get(request_id)
        token = _holder.set(holder)
        try:
            yield holder
        finally:
            _holder.reset(token)

    def _append(self, request_id: str, type: str, payload: dict[str, Any],
                check: Callable[[RequestState], None] | None = None) -> LedgerEvent:
        """Append as the current run: refused (LeaseLost / AlreadyRunning) once another run holds
        the lease, checked inside the append's transaction so it cannot race."""
        holder = _holder.get()

        def guard(chain: Sequence[LedgerEvent]) -> None:
            state = derive_state(chain)
            lease = state.lease
            if holder is not None and (lease is None or lease["holder"] != holder):
                raise LeaseLost(f"request {request_id}: this run's lease was taken over"
                                + (f" by {lease['holder']}" if lease else " and released"))
            if lease_blocks(lease, holder, datetime.now(UTC)):
                assert lease is not None
                raise AlreadyRunning(request_id, lease["holder"], lease["until"])
            if check is not None:
                check(state)

        return self.ledger.append(request_id, type, payload, actor=RUNNER, guard=guard)

    @property
    def store(self) -> EvidenceStore:
        """Where bundles and packages go (local directories unless S3 is configured)."""
        if self._store is None:
            self._store = open_store(config_from_settings(self.service.settings))
            self._store.ensure_ready()
        return self._store

    # -- begin --------------------------------------------------------------------------------

    def check_runnable(self, request_id: str) -> RequestState:
        """Refuse a request that may not run (recording why); callers use it before paying for
        an orchestrator start-up, and `begin` uses it again inside the run."""
        state = self.service.state(request_id)
        # The address a run acts on must be the one its chain was received with, and the chain
        # must still match its signed head: the ledger's read raises (IdentityTampered,
        # ChainTampered) before any connector is built, and nothing is recorded as done.
        self.ledger.identity(request_id)
        if state.status in (Status.CANCELLED, Status.REJECTED):
            raise RequestStateError(f"request {request_id} is {state.status.value}; it will not run")
        # A CCPA opt-out is the one request that runs unverified (11 CCR 7026(d)): it only stops a use.
        if not state.verified and state.status != Status.COMPLETED and RequestType(state.type) not in UNVERIFIED_TYPES:
            reason = "identity not verified: run `dsr verify` first (DESIGN invariant 2)"
            self.ledger.append(request_id, EventType.RUN_REFUSED, {"reason": reason}, actor=RUNNER)
            raise NotVerified(f"request {request_id}: {reason}")
        return state

    def begin(self, request_id: str) -> RunPlan:
        """Check the request may run, take its lease and record the run's start; say which
        systems remain. Raises AlreadyRunning when another live run holds the request."""
        self._clear_unneeded_staging(request_id)  # before a cancelled request is refused, too
        state = self.check_runnable(request_id)
        systems = tuple(sorted(
            name for name, cfg in self.service.data_map.enabled().items()
            if RequestType(state.type) in cfg.request_types
        ))
        action = rights.step_for(state.type)
        if state.status == Status.COMPLETED and any(b["through_seq"] == state.completed_through_seq
                                                    for b in state.bundles):
            return RunPlan(request_id, (), systems, action, already_closed=True)  # nothing left to write
        if not systems and RequestType(state.type) in AUTOMATED_TYPES and state.status != Status.COMPLETED:
            raise RequestStateError("systems.yaml: no enabled system handles this request type")
        holder = self._claim(request_id)
        self._clear_crashed_run(request_id)  # under the lease: no other live run of it is writing
        with self._as_holder(request_id, holder):
            if state.status == Status.COMPLETED:  # completed but not sealed (a crash while sealing)
                return RunPlan(request_id, (), systems, action, already_closed=True, lease=holder)

            def not_closed(current: RequestState) -> None:
                if current.closed:
                    raise RequestStateError(f"request {request_id} closed while starting")

            self._append(request_id, EventType.RUN_STARTED, {"systems": list(systems), "action": action},
                         not_closed)
        crash_point("fanout")
        self.service.status_changed(request_id)
        todo = tuple(s for s in systems if state.systems.get(s) is None
                     or state.systems[s].status != SystemStatus.COMPLETED or self._export_lost(request_id, state, s))
        return RunPlan(request_id, todo, systems, action, lease=holder)

    # -- one system ---------------------------------------------------------------------------

    def run_system(self, request_id: str, system: str, connect: Callable[[], Connector],
                   lease: str | None = None) -> SystemResult:
        """Discover, then export or erase and verify, in one system.

        `connect` builds the connector; it is called only when there is work to do, and a
        failure to build it (bad settings, missing credentials) is recorded like any other.
        Never raises for a system's failure: it records it and reports the system as failed.
        `lease` is the plan's (a runner other than the one that began passes it); it raises
        LeaseLost / AlreadyRunning when another run holds the request.
        """
        with self._as_holder(request_id, lease) as holder:
            self._renew(request_id, holder)
            return self._run_system(request_id, system, connect)

    def _run_system(self, request_id: str, system: str, connect: Callable[[], Connector]) -> SystemResult:
        state = self.service.state(request_id)
        if state.status == Status.CANCELLED:
            return SystemResult(system, "cancelled", 0, skipped=True)
        if state.system(system).status == SystemStatus.COMPLETED and not self._export_lost(request_id, state, system):
            return self._result(state, system, skipped=True)
        connector: Connector | None = None
        try:
            subject = self._subject(request_id, state)
            connector = connect()
            manual = connector.info.manual_steps
            step = rights.step_for(state.type)
            refs = [] if "discover" in manual else self._discover(request_id, state, system, connector, subject)
            crash_point("discovered")
            by_person = step in manual or (step in rights.RIGHTS_STEPS and rights.needs_person(connector, step))
            if step == "erase" and rights.holds_on(self.service, subject.identity_hash):
                by_person = False  # held: nothing is erased, by API or by hand (see _erase)
            if by_person and not refs and "discover" not in manual:
                pass  # discovery found nothing: no task for a person, nothing to do
            elif by_person:
                if not self._manual_step_done(request_id, state, system, connector, step, refs):
                    return self._result(self.service.state(request_id), system)
                if step == "erase":
                    self._verify_manual_erasure(request_id, state, system, connector, subject)
            elif step == "export":
                self._export(request_id, state, system, connector, refs)
            elif step == "erase":
                self._erase(request_id, state, system, connector, subject, refs)
            else:
                rights.run_step(self, request_id, state, system, connector, subject, refs)
            self._append(request_id, EventType.SYSTEM_COMPLETED, {"system": system})
        except (LeaseLost, AlreadyRunning):
            raise  # another run holds the request: it is not this system's failure to record
        except (IdentityTampered, ChainTampered):
            raise  # the record was edited: the run stops, writing nothing more to it
        except Exception as exc:  # a system's failure is the request's fact, not the flow's crash
            log.warning("request %s: system %s failed: %s", request_id, system, type(exc).__name__)
            self._append(request_id, EventType.SYSTEM_FAILED, {"system": system, "error": _safe_error(exc)})
        finally:
            close = getattr(connector, "close", None)
            if callable(close):
                close()
        return self._result(self.service.state(request_id), system)

    # -- manual steps -------------------------------------------------------------------------

    def _manual_step_done(self, request_id: str, state: RequestState, system: str, connector: Connector,
                          step: str, refs: Sequence[RecordRef]) -> bool:
        """Open the system's manual task once (and tell the assignee); True once a person has done it."""
        task = state.system(system).task
        if task is not None and task.get("done"):
            if step == "export":
                self._export_attachments(request_id, system, task)
            return True
        if task is not None:
            return False  # still waiting; the deadline sweep chases it
        config = self.service.data_map.systems[system]
        assignee = config.assignee or config.owner
        instructions = rights.instructions(connector, step, refs)
        due = self.task_due(state, config.task_lead_days)
        self._append(request_id, EventType.TASK_OPENED, {
            "system": system, "step": step, "assignee": assignee, "instructions": instructions,
            "due": due.isoformat(), "records": [r.key for r in refs],
        })
        notice = Notice(
            subject=f"[DSR task] request {request_id}: {step} in {system} by {due.isoformat()}",
            body="\n".join([f"Request {request_id} ({state.type}, {state.regime}) needs a person in {system}.",
                            f"Assigned to: {assignee}. Due: {due.isoformat()} (the request is due {state.due}).",
                            "", instructions, "",
                            f"When done: dsr task done {request_id} {system} --note '...'"]),
            fields={"request_id": request_id, "system": system, "step": step, "assignee": assignee,
                    "due": due.isoformat()},
        )
        results = deliver(self.service.policy.escalation.channels.build(), notice)
        self._append(request_id, EventType.TASK_NOTIFIED, {"system": system, "channels": results})
        return False

    @staticmethod
    def task_due(state: RequestState, lead_days: int) -> date:
        """A task is due `lead_days` before the request (never before tomorrow)."""
        due = date.fromisoformat(state.due) - timedelta(days=lead_days) if state.due else date.today()
        return max(due, datetime.now(UTC).date() + timedelta(days=1))

    def _export_attachments(self, request_id: str, system: str, task: dict[str, Any]) -> None:
        """An access request's manual export: the attached files become the system's export."""
        state = self.service.state(request_id)
        if "export" in state.system(system).steps_done and not self._export_lost(request_id, state, system):
            return
        staging = self.private_staging_dir(request_id) / f"{system}.jsonl"
        lines = [canonical_json({"object": "attachment", "id": a["name"],
                                 "fields": {"file": f"attachments/{system}/{a['name']}", "sha256": a["sha256"],
                                            "note": task.get("note")}}) + "\n"
                 for a in task.get("attachments", [])]
        tmp = staging.with_suffix(".part")
        with open_private(tmp, "w", encoding="utf-8") as out:
            out.write("".join(lines))
        tmp.replace(staging)
        self._append(request_id, EventType.SYSTEM_EXPORTED, {
            "system": system, "records": len(lines), "sha256": _sha256_file(staging), "file": staging.name,
            "manual": True,
        })

    def _verify_manual_erasure(self, request_id: str, state: RequestState, system: str, connector: Connector,
                               subject: Subject) -> None:
        """Re-query where the system can be queried (Wistia); else the person's confirmation is the proof."""
        task = state.system(system).task or {}
        if "discover" in connector.info.manual_steps:
            proof, remaining = f"confirmed by {task.get('by')} (manual task, no API to re-query)", []
        else:
            proof, remaining = "re-query after the manual erasure", [r.key for r in connector.verify_erased(subject)]
        self._append(request_id, EventType.SYSTEM_VERIFIED, {
            "system": system, "proof": proof, "remaining": len(remaining), "retained_as_decided": [],
            "unexpected_remaining": remaining,
        })
        if remaining:
            raise RuntimeError(f"{len(remaining)} record(s) still match the subject in {system} after the manual task")

    def _subject(self, request_id: str, state: RequestState) -> Subject:
        email = self.ledger.identity(request_id, "email")
        if email is None:
            raise RequestStateError(f"request {request_id}: the subject's identity is no longer held")
        return Subject(email=email, identity_hash=state.identity_hash)

    def _discover(self, request_id: str, state: RequestState, system: str, connector: Connector,
                  subject: Subject) -> list[RecordRef]:
        recorded = _last_payload(self.service.events(request_id), EventType.SYSTEM_DISCOVERED, system)
        if recorded is not None:
            if "refs" in recorded:  # recorded before refs moved to their own file
                return [ref_from_dict(system, r) for r in recorded["refs"]]
            path = self.discovered_dir(request_id) / refs_file_name(system)
            return [ref_from_dict(system, r) for r in read_refs(path, recorded[REFS_SHA256])]
        refs = connector.discover(subject)
        by_object = Counter(r.object for r in refs)
        # The refs go to a file and the chain keeps its hash: inline, every later read of the
        # request would parse them again (dsr/discovery.py). The bundle seals the file.
        written = write_refs(self.discovered_dir(request_id) / refs_file_name(system), map(ref_to_dict, refs))
        self._append(request_id, EventType.SYSTEM_DISCOVERED, {
            "system": system,
            "connector_version": connector.info.version,
            "identifier": {"kind": "email", "identity_hash": subject.identity_hash, "match": "exact, normalised"},
            "records": len(refs),
            "by_object": dict(sorted(by_object.items())),
            REFS_FILE: written.path.name,
            REFS_SHA256: written.sha256,
        })
        return refs

    def _export(self, request_id: str, state: RequestState, system: str, connector: Connector,
                refs: Sequence[RecordRef]) -> None:
        staging = self.private_staging_dir(request_id) / f"{system}.jsonl"
        done = state.system(system)
        if "export" in done.steps_done and staging.is_file() and _sha256_file(staging) == done.export_sha256:
            return
        tmp = staging.with_suffix(".part")
        count = 0
        with open_private(tmp, "w", encoding="utf-8") as out:
            for record in connector.export(refs):  # streamed: one record in memory at a time
                out.write(canonical_json({"object": record.ref.object, "id": record.ref.id,
                                          "fields": dict(record.fields)}) + "\n")
                count += 1
        tmp.replace(staging)
        crash_point("exported-unrecorded")
        self._append(request_id, EventType.SYSTEM_EXPORTED, {
            "system": system, "records": count, "sha256": _sha256_file(staging), "file": staging.name,
        })

    def _erase(self, request_id: str, state: RequestState, system: str, connector: Connector,
               subject: Subject, refs: Sequence[RecordRef]) -> None:
        done = state.system(system)
        events = self.service.events(request_id)
        planned = _last_payload(events, EventType.SYSTEM_ERASE_PLANNED, system)
        held = rights.holds_on(self.service, subject.identity_hash)
        # Plan anew after a released hold, or when a hold came before anything was erased.
        if (planned is None or (planned.get("held") and system not in state.held)
                or (held and not planned.get("held") and "erase" not in done.steps_done)):
            today = datetime.now(UTC).date()
            if held:  # legal claims keep every record as it is (GDPR 17(3)(e)); the hold's release re-opens them
                decisions = [ErasureDecision(r, ErasureAction.RETAIN, basis=rights.hold_basis(held)) for r in refs]
            else:
                decisions = [decide_erasure(r, regime=state.regime, policy=self.service.policy, today=today)
                             for r in refs]
            planned = {"system": system, "decisions": [_decision_to_dict(d) for d in decisions]}
            if held:
                planned["held"] = held
            self._append(request_id, EventType.SYSTEM_ERASE_PLANNED, planned)
        decisions = [_decision_from_dict(system, d) for d in planned["decisions"]]
        if "erase" not in done.steps_done:
            # A write-only audience's refs name lists, not people: it needs the subject to remove.
            if planned.get("held"):  # every record kept as it is: nothing to ask the vendor (or a person)
                receipt = Receipt(system, tuple(RecordOutcome(d.ref, d.action, True, basis=d.basis) for d in decisions))
            else:
                receipt = (connector.erase(decisions, subject=subject)  # type: ignore[call-arg]
                           if connector.info.write_only else connector.erase(decisions))
            # The one window write-ahead cannot close: the vendor acted, the ledger does not know yet.
            # A re-run repeats the erase; each connector makes that harmless (see chaos/README.md).
            crash_point("erased-unrecorded")
            erased = _receipt_payload(system, receipt)
            if connector.info.write_only and not planned.get("held"):
                erased["removal"] = _audience_removal(connector)
            self._append(request_id, EventType.SYSTEM_ERASED, erased)
            crash_point("erased")  # between erase and verify
            if receipt.failed:
                raise RuntimeError(f"{len(receipt.failed)} record(s) could not be erased in {system}")
        retained = {d.ref.key for d in decisions if d.action == ErasureAction.RETAIN}
        removal: dict[str, str] = {}
        if planned.get("held") and (connector.info.write_only or "discover" in connector.info.manual_steps):
            proof, remaining = f"legal hold {', '.join(planned['held'])}: nothing erased, nothing to re-query", []
        elif connector.info.write_only:
            recorded = _last_payload(self.service.events(request_id), EventType.SYSTEM_ERASED, system) or {}
            removal["removal"] = str(recorded.get("removal") or "requested")
            proof, remaining = (f"write-only system: removal {removal['removal']}"
                                + (" by the vendor's job status" if removal["removal"] == "confirmed" else "")
                                + ", absence cannot be re-queried"), []
        else:
            remaining = [r.key for r in connector.verify_erased(subject)]
            proof = "re-query after erasure"
        unexpected = sorted(set(remaining) - retained)
        self._append(request_id, EventType.SYSTEM_VERIFIED, {
            "system": system, "proof": proof, "remaining": len(remaining),
            "retained_as_decided": sorted(set(remaining) & retained), "unexpected_remaining": unexpected,
            **removal,
        })
        if unexpected:
            raise RuntimeError(f"{len(unexpected)} record(s) still match the subject in {system} after erasure")

    # -- finish -------------------------------------------------------------------------------

    def finish(self, request_id: str, lease: str | None = None) -> RunOutcome:
        """Close the run: package for the subject, completion (or what is left), sealed evidence;
        then let go of the lease."""
        with self._as_holder(request_id, lease) as holder:
            outcome = self._finish(request_id)
            crash_point("sealed")
            self._release(request_id, holder)
        self.service.status_changed(request_id)
        return outcome

    def _finish(self, request_id: str) -> RunOutcome:
        state = self.service.state(request_id)
        package_path: Path | None = None
        # Only a run with a plan is finished here (a rectification waiting for the office is not).
        if state.plan and state.status in (Status.IN_PROGRESS, Status.PARTIALLY_COMPLETED,
                                           Status.AWAITING_MANUAL_ACTION):
            unfinished = {n: s for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED}
            waiting = {n: s for n, s in unfinished.items() if s.status == SystemStatus.AWAITING_MANUAL}
            if unfinished and len(waiting) == len(unfinished):
                reason = "manual task(s) open: " + "; ".join(
                    f"{n} ({(s.task or {}).get('step')}, {(s.task or {}).get('assignee')}, due {(s.task or {}).get('due')})"
                    for n, s in sorted(waiting.items()))
                if not (state.status == Status.AWAITING_MANUAL_ACTION and state.outcome_reason == reason):
                    self._append(request_id, EventType.MANUAL_ACTION_REQUIRED,
                                 {"reason": reason, "open_systems": sorted(waiting)})
            elif unfinished:
                reason = "; ".join(f"{n}: {s.error or s.status.value}" for n, s in sorted(unfinished.items()))
                if not (state.status == Status.PARTIALLY_COMPLETED and state.outcome_reason == reason):
                    self._append(request_id, EventType.PARTIALLY_COMPLETED,
                                 {"reason": reason, "open_systems": sorted(unfinished)})
            else:
                if RequestType(state.type) in EXPORT_TYPES and state.package is None:
                    self._package(request_id, state)
                crash_point("finishing")
                rights.rekey_identity(self, request_id, state)
                self._append(request_id, EventType.COMPLETED, {
                    "systems": sorted(state.systems), "response": "sent to the privacy office for delivery",
                })
        state = self.service.state(request_id)
        bundle_path, bundle_uri = self._seal(request_id, state)
        state = self.service.state(request_id)
        if state.package:
            package_path = self._stored_package_file(request_id, state.package)
        results = tuple(self._result(state, name) for name in sorted(state.systems))
        return RunOutcome(request_id, state.status, state.outcome_reason, results, bundle_path, package_path,
                          bundle_uri)

    def _package(self, request_id: str, state: RequestState) -> None:
        exports = {name: self.staging_dir(request_id) / f"{name}.jsonl" for name in sorted(state.systems)}
        for name, path in exports.items():
            if _sha256_file(path) != state.systems[name].export_sha256:
                raise RuntimeError(f"export of {name} changed since it was recorded; re-run the request")
        target = self.staging_dir(request_id).parent / PACKAGE_FILE
        attachments = {
            f"attachments/{name}/{a['name']}": self.service.attachment_path(request_id, name, a["name"])
            for name, system in sorted(state.systems.items()) if system.task and system.task.get("step") == "export"
            for a in system.task.get("attachments", [])
        }
        digest, size = write_package(target, request_id, state.to_view(), exports,
                                     self.service.policy.subject_summary, extra_files=attachments,
                                     names=self.service.data_map.display_names())
        stored = self.store.put_package(request_id, target)
        self._append(request_id, EventType.PACKAGE_CREATED, {
            "sha256": digest, "bytes": size, "file": target.name, "uri": stored.uri,
            "formats": ["json", "csv", "html"], "records": sum(s.exported or 0 for s in state.systems.values()),
        })
        # Stored and its hash in the chain: the staging copies are no longer needed by anything
        # (a crash before this line is cleared by the next run's `begin`).
        remove_tree(self.staging_dir(request_id))
        self._remove_local_package_copy(request_id, self.service.state(request_id).package or {})

    def _seal(self, request_id: str, state: RequestState) -> tuple[Path | None, str | None]:
        """Seal evidence of the events up to the latest outcome, once per outcome."""
        through = state.completed_through_seq
        if through is None:
            return None, None
        for sealed in state.bundles:
            if sealed["through_seq"] == through:
                return self._bundle_location(request_id, sealed)
        version = len(state.bundles) + 1
        # The same events give the same bytes, so a re-run after a crash here rewrites the very
        # file it left (the store accepts identical bytes) and records it once.
        try:
            stored = self.store.put_bundle(request_id, version, self.build_bundle_bytes(request_id, through))
        except BundleConflict:
            # The events up to `through` no longer build the bundle sealed as this version: the
            # ledger lost or changed events after it was sealed (a truncated tail, say).
            raise SealConflict(request_id, version, through) from None
        crash_point("sealing")
        sealed = {"version": version, "sha256": stored.sha256, "through_seq": through,
                  "file": stored.key.rsplit("/", 1)[-1], "uri": stored.uri,
                  "retain_until": stored.retain_until.isoformat() if stored.retain_until else None}

        def not_sealed_yet(current: RequestState) -> None:
            if any(b["through_seq"] == through for b in current.bundles) or len(current.bundles) + 1 != version:
                raise _SealedMeanwhile()

        try:
            self._append(request_id, EventType.BUNDLE_SEALED, sealed, not_sealed_yet)
        except _SealedMeanwhile:
            return self._seal(request_id, self.service.state(request_id))
        return self._bundle_location(request_id, sealed)

    def _bundle_location(self, request_id: str, sealed: dict[str, Any]) -> tuple[Path | None, str]:
        """(local file or None, URI) of a sealed bundle; S3 bundles have no local file."""
        uri = str(sealed.get("uri") or "")
        if uri.startswith("s3://"):
            return None, uri
        local = self.service.settings.bundles_path / request_id / sealed["file"]
        return local, uri or local.resolve().as_uri()

    def build_bundle_bytes(self, request_id: str, through_seq: int) -> bytes:
        """The bundle is a pure function of the ledger up to `through_seq` (DESIGN invariant 5)."""
        events = self.ledger.events(request_id, through_seq=through_seq)
        state = derive_state(events)
        signer = load_or_create_signing_key(self.service.settings.signing_key_path)
        refs = {name: self.discovered_dir(request_id) / refs_file_name(name) for name in discovered_hashes(events)}
        return build_bundle(events, request_view=state.to_view(),
                            system_views={n: s.to_view() for n, s in sorted(state.systems.items())},
                            signer=signer, discovered=refs)

    def staging_dir(self, request_id: str) -> Path:
        """Where exports wait to be packaged: the subject's data in the clear, so private (0700,
        files 0600) and removed once the package is stored and recorded (DESIGN invariant 7)."""
        return self.service.settings.packages_path / request_id / "staging"

    def private_staging_dir(self, request_id: str) -> Path:
        """The staging directory, created (with the request's package directory) private."""
        private_dir(self.staging_dir(request_id).parent)
        return private_dir(self.staging_dir(request_id))

    def _export_lost(self, request_id: str, state: RequestState, system: str) -> bool:
        """An export the ledger recorded whose staging file is gone (or not the recorded bytes)
        before the package was made: the package needs it, so the export runs again."""
        done = state.systems.get(system)
        if (done is None or "export" not in done.steps_done or state.package is not None
                or RequestType(state.type) not in EXPORT_TYPES):
            return False
        return _sha256_file(self.staging_dir(request_id) / f"{system}.jsonl") != done.export_sha256

    def _clear_crashed_run(self, request_id: str) -> None:
        """Remove what a killed run of this request left half-written: partial exports, package
        spill files and partial packages. Complete exports stay (a re-run resumes from them)."""
        removed = remove_leftovers(self.staging_dir(request_id).parent)
        staging = self.staging_dir(request_id)
        if staging.is_dir():
            removed += [p.name for p in staging.glob("*.part") if remove_tree(p)]
        if removed:
            log.info("request %s: removed %d file(s) left by an interrupted run", request_id, len(removed))

    @staticmethod
    def _staging_needed(state: RequestState) -> bool:
        """Only an export request still to be packaged needs its staging (a re-run resumes from it)."""
        return RequestType(state.type) in EXPORT_TYPES and state.package is None and not state.closed

    def _clear_unneeded_staging(self, request_id: str) -> bool:
        """Remove the request's staging and partial files if nothing will package them any more
        (package recorded, or the request closed): a kill after recording the package left them."""
        directory = self.staging_dir(request_id).parent
        copy = None if self._store_keeps_local_packages() else directory / PACKAGE_FILE
        if not (directory / "staging").exists() and not leftovers(directory) and not (copy and copy.exists()):
            return False
        try:
            state = self.service.state(request_id)
        except LedgerError:
            return False  # not a request of this ledger: not ours to judge
        if self._staging_needed(state):
            return False
        remove_tree(directory / "staging")
        remove_leftovers(directory)
        if state.package:
            self._remove_local_package_copy(request_id, state.package)
        return True

    def _store_keeps_local_packages(self) -> bool:
        """Does the store keep packages where `_package` writes them (embedded mode)? Read from
        the configuration: opening an S3 store would ask the network."""
        if self._store is not None:
            if not isinstance(self._store, LocalEvidenceStore):
                return False
            kept = self._store.package_dir
        else:
            config = config_from_settings(self.service.settings)
            if config.backend != "local":
                return False
            kept = Path(config.local_package_dir)
        return kept.resolve() == self.service.settings.packages_path.resolve()

    def _stored_package_file(self, request_id: str, package: dict[str, Any]) -> Path | None:
        """The stored package as a local file, or None where the store is not a directory (S3)."""
        uri = str(package.get("uri") or "")
        if uri.startswith("file:"):
            return Path(url2pathname(urlparse(uri).path))
        if uri:
            return None
        return self.service.settings.packages_path / request_id / package["file"]  # recorded before URIs

    def _remove_local_package_copy(self, request_id: str, package: dict[str, Any]) -> None:
        """Where the store keeps the package elsewhere (S3), the file `_package` wrote was one more
        staging copy of the subject's data: gone once the stored one is recorded."""
        written = self.staging_dir(request_id).parent / PACKAGE_FILE
        stored = self._stored_package_file(request_id, package) if package else None
        if package and written.exists() and (stored is None or stored.resolve() != written.resolve()):
            remove_tree(written)

    def sweep_staging(self) -> list[str]:
        """`_clear_unneeded_staging` for every request with files under the packages directory
        (the nightly purge calls it: a cancelled request's staging waits for no run). Open
        requests keep theirs. Returns the request ids swept."""
        root = self.service.settings.packages_path
        if not root.is_dir():
            return []
        swept = [entry.name for entry in sorted(root.iterdir())
                 if entry.is_dir() and self._clear_unneeded_staging(entry.name)]
        if swept:
            log.info("removed the staging of %d request(s) that no longer need it", len(swept))
        return swept

    def discovered_dir(self, request_id: str) -> Path:
        """Refs files: evidence (sealed into every bundle version), so kept apart from the package staging."""
        return self.service.settings.home / "discovered" / request_id

    @staticmethod
    def _result(state: RequestState, system: str, *, skipped: bool = False) -> SystemResult:
        s = state.system(system)
        return SystemResult(system, s.status.value, s.found, dict(s.actions), s.exported,
                            None if s.remaining is None else len(s.remaining), s.error, skipped)


class SealConflict(LedgerError):
    """The ledger no longer builds the bundle already sealed under a version: it was edited."""

    def __init__(self, request_id: str, version: int, through: int) -> None:
        super().__init__(
            f"the ledger of request {request_id} no longer matches its sealed bundle v{version}: the events "
            f"through seq {through} build a different bundle from the one stored, so events were removed or "
            "changed after it was sealed; nothing was sealed (run `dsr ledger verify`, and "
            f"`dsr bundle verify FILE --request {request_id}` on the stored bundle)")
        self.request_id, self.version = request_id, version


class _SealedMeanwhile(Exception):
    """Another writer sealed this outcome first (an unleased finish racing one)."""


def _last_payload(events: Sequence[LedgerEvent], type: str, system: str) -> dict[str, Any] | None:
    for event in reversed(events):
        if event.type == type and event.payload.get("system") == system:
            return dict(event.payload)
    return None


def _decision_to_dict(d: ErasureDecision) -> dict[str, Any]:
    return {"ref": ref_to_dict(d.ref), "action": d.action.value, "basis": d.basis,
            "retain_until": d.retain_until.isoformat() if d.retain_until else None}


def _decision_from_dict(system: str, data: dict[str, Any]) -> ErasureDecision:
    until = data.get("retain_until")
    return ErasureDecision(ref_from_dict(system, data["ref"]), ErasureAction(data["action"]), data.get("basis"),
                           date.fromisoformat(until) if until else None)


def _audience_removal(connector: Connector) -> str:
    """"confirmed" when the write-only connector's done outcomes mean the vendor finished the removal
    (a job or segment status polled to its end), else "requested" (the vendor only accepted it).

    Read from the connector's optional `confirms_removal` (connectors.base.AudienceConnector); the
    domain does not import connectors, so it is asked by name.
    """
    return "confirmed" if getattr(connector, "confirms_removal", False) is True else "requested"


def _receipt_payload(system: str, receipt: Receipt) -> dict[str, Any]:
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


def _sha256_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


