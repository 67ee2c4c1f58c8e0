"""One system's automated steps: discover, then export, or erase and verify by re-query.

Each step appends its result to the ledger before the next one starts, and first asks the ledger
whether it is already done: discovery and erasure decisions are read back, a recorded export is
kept while its staged file still has the recorded bytes, and an erasure is not asked for again
once recorded (connectors make a repeated one harmless: the window between the vendor's action
and its record is the one write-ahead cannot close).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dsr import rights
from dsr.contract import (
    ConfirmsRemoval,
    Connector,
    ErasureAction,
    ErasureDecision,
    Receipt,
    RecordOutcome,
    RecordRef,
    Subject,
)
from dsr.discovery import REFS_FILE, REFS_SHA256, read_refs, refs_file_name, write_refs
from dsr.files import open_private
from dsr.ledger.events import canonical_json
from dsr.policy import decide_erasure
from dsr.run.codec import (
    decision_from_dict,
    decision_to_dict,
    last_payload,
    receipt_payload,
    ref_from_dict,
    ref_to_dict,
)
from dsr.run.lease import LeasedLedger
from dsr.run.probe import CrashProbe
from dsr.run.staging import Staging, sha256_file
from dsr.service import DsrService, RequestStateError
from dsr.state import EventType, RequestState


def audience_removal(connector: Connector) -> str:
    """"confirmed" when the write-only connector's done outcomes mean the vendor finished the
    removal (see ConfirmsRemoval), else "requested" (the vendor only accepted it)."""
    confirmed = isinstance(connector, ConfirmsRemoval) and connector.confirms_removal is True
    return "confirmed" if confirmed else "requested"


class Saga:
    """The discover / export / erase steps of one system of one request."""

    def __init__(self, service: DsrService, writer: LeasedLedger, staging: Staging, crash: CrashProbe) -> None:
        self.service = service
        self.writer = writer
        self.staging = staging
        self.crash = crash

    def subject(self, request_id: str, state: RequestState) -> Subject:
        """The subject as the connectors see them (the address read, and checked, from the ledger)."""
        email = self.service.ledger.identity(request_id, "email")
        if email is None:
            raise RequestStateError(f"request {request_id}: the subject's identity is no longer held")
        return Subject(email=email, identity_hash=state.identity_hash)

    def discover(self, request_id: str, system: str, connector: Connector, subject: Subject) -> list[RecordRef]:
        """The system's records of the subject: as recorded, or found now and recorded."""
        recorded = last_payload(self.service.events(request_id), EventType.SYSTEM_DISCOVERED, system)
        if recorded is not None:
            if "refs" in recorded:  # recorded before refs moved to their own file
                return [ref_from_dict(system, r) for r in recorded["refs"]]
            path = self.staging.discovered_dir(request_id) / refs_file_name(system)
            return [ref_from_dict(system, r) for r in read_refs(path, recorded[REFS_SHA256])]
        refs = connector.discover(subject)
        by_object = Counter(r.object for r in refs)
        # The refs go to a file and the chain keeps its hash: inline, every later read of the
        # request would parse them again (dsr/discovery.py). The bundle seals the file.
        written = write_refs(self.staging.discovered_dir(request_id) / refs_file_name(system), map(ref_to_dict, refs))
        self.writer.append(request_id, EventType.SYSTEM_DISCOVERED, {
            "system": system,
            "connector_version": connector.info.version,
            "identifier": {"kind": "email", "identity_hash": subject.identity_hash, "match": "exact, normalised"},
            "records": len(refs),
            "by_object": dict(sorted(by_object.items())),
            REFS_FILE: written.path.name,
            REFS_SHA256: written.sha256,
        })
        return refs

    def export(self, request_id: str, state: RequestState, system: str, connector: Connector,
               refs: Sequence[RecordRef]) -> None:
        """Stream the records into the private staging, then record the file's hash."""
        staging = self.staging.private_staging_dir(request_id) / f"{system}.jsonl"
        done = state.system(system)
        if "export" in done.steps_done and staging.is_file() and sha256_file(staging) == done.export_sha256:
            return
        tmp = staging.with_suffix(".part")
        count = 0
        with open_private(tmp, "w", encoding="utf-8") as out:
            for record in connector.export(refs):  # streamed: one record in memory at a time
                out.write(canonical_json({"object": record.ref.object, "id": record.ref.id,
                                          "fields": dict(record.fields)}) + "\n")
                count += 1
        tmp.replace(staging)
        self.crash("exported-unrecorded")
        self.writer.append(request_id, EventType.SYSTEM_EXPORTED, {
            "system": system, "records": count, "sha256": sha256_file(staging), "file": staging.name,
        })

    def erase(self, request_id: str, state: RequestState, system: str, connector: Connector,
              subject: Subject, refs: Sequence[RecordRef]) -> None:
        """Plan per record (policy, or a legal hold), erase once, then prove it by re-query."""
        planned = self._plan(request_id, state, system, subject, refs)
        decisions = [decision_from_dict(system, d) for d in planned["decisions"]]
        if "erase" not in state.system(system).steps_done:
            self._erase(request_id, system, connector, subject, planned, decisions)
        self._verify(request_id, system, connector, subject, planned, decisions)

    def _plan(self, request_id: str, state: RequestState, system: str, subject: Subject,
              refs: Sequence[RecordRef]) -> dict[str, Any]:
        """The recorded erasure plan, or a new one recorded."""
        planned = last_payload(self.service.events(request_id), EventType.SYSTEM_ERASE_PLANNED, system)
        held = rights.holds_on(self.service, subject.identity_hash)
        # Plan anew after a released hold, or when a hold came before anything was erased.
        if (planned is not None and not (planned.get("held") and system not in state.held)
                and not (held and not planned.get("held") and "erase" not in state.system(system).steps_done)):
            return planned
        today = datetime.now(UTC).date()
        if held:  # legal claims keep every record as it is (GDPR 17(3)(e)); the hold's release re-opens them
            decisions = [ErasureDecision(r, ErasureAction.RETAIN, basis=rights.hold_basis(held)) for r in refs]
        else:
            decisions = [decide_erasure(r, regime=state.regime, policy=self.service.policy, today=today)
                         for r in refs]
        planned = {"system": system, "decisions": [decision_to_dict(d) for d in decisions]}
        if held:
            planned["held"] = held
        self.writer.append(request_id, EventType.SYSTEM_ERASE_PLANNED, planned)
        return planned

    def _erase(self, request_id: str, system: str, connector: Connector, subject: Subject,
               planned: dict[str, Any], decisions: Sequence[ErasureDecision]) -> None:
        if planned.get("held"):  # every record kept as it is: nothing to ask the vendor (or a person)
            receipt = Receipt(system, tuple(RecordOutcome(d.ref, d.action, True, basis=d.basis) for d in decisions))
        elif connector.info.write_only:
            # A write-only audience's refs name lists, not people: it needs the subject to remove.
            receipt = connector.erase(decisions, subject=subject)  # type: ignore[call-arg]
        else:
            receipt = connector.erase(decisions)
        # The one window write-ahead cannot close: the vendor acted, the ledger does not know yet.
        # A re-run repeats the erase; each connector makes that harmless (see chaos/README.md).
        self.crash("erased-unrecorded")
        erased = receipt_payload(system, receipt)
        if connector.info.write_only and not planned.get("held"):
            erased["removal"] = audience_removal(connector)
        self.writer.append(request_id, EventType.SYSTEM_ERASED, erased)
        self.crash("erased")  # between erase and verify
        if receipt.failed:
            raise RuntimeError(f"{len(receipt.failed)} record(s) could not be erased in {system}")

    def _verify(self, request_id: str, system: str, connector: Connector, subject: Subject,
                planned: dict[str, Any], decisions: Sequence[ErasureDecision]) -> None:
        retained = {d.ref.key for d in decisions if d.action == ErasureAction.RETAIN}
        removal: dict[str, str] = {}
        remaining: list[str]
        if planned.get("held") and (connector.info.write_only or "discover" in connector.info.manual_steps):
            proof, remaining = f"legal hold {', '.join(planned['held'])}: nothing erased, nothing to re-query", []
        elif connector.info.write_only:
            recorded = last_payload(self.service.events(request_id), EventType.SYSTEM_ERASED, system) or {}
            removal["removal"] = str(recorded.get("removal") or "requested")
            proof, remaining = (f"write-only system: removal {removal['removal']}"
                                + (" by the vendor's job status" if removal["removal"] == "confirmed" else "")
                                + ", absence cannot be re-queried"), []
        else:
            remaining = [r.key for r in connector.verify_erased(subject)]
            proof = "re-query after erasure"
        unexpected = sorted(set(remaining) - retained)
        self.writer.append(request_id, EventType.SYSTEM_VERIFIED, {
            "system": system, "proof": proof, "remaining": len(remaining),
            "retained_as_decided": sorted(set(remaining) & retained), "unexpected_remaining": unexpected,
            **removal,
        })
        if unexpected:
            raise RuntimeError(f"{len(unexpected)} record(s) still match the subject in {system} after erasure")
