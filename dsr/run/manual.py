"""Steps a person does: a task opened once (and the assignee told), then its result taken in.

A system that declares a step manual (Wistia has no delete endpoint; the website portal has no
API at all) gets a task with instructions and a due date; the deadline sweep chases it and
`dsr task done` closes it. A manual export's attached files become the system's export; a manual
erasure is re-queried where the system can be queried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dsr import rights
from dsr.adapters.mail import Notice, deliver
from dsr.contract import Connector, RecordRef, Subject
from dsr.files import open_private
from dsr.ledger.events import canonical_json
from dsr.run.lease import LeasedLedger
from dsr.run.staging import Staging, sha256_file
from dsr.service import DsrService
from dsr.state import EventType, RequestState


def task_due(state: RequestState, lead_days: int) -> date:
    """A task is due `lead_days` before the request (never before tomorrow)."""
    due = date.fromisoformat(state.due) - timedelta(days=lead_days) if state.due else date.today()
    return max(due, datetime.now(UTC).date() + timedelta(days=1))


class ManualSteps:
    """Opens a system's manual task and takes in what the person did."""

    def __init__(self, service: DsrService, writer: LeasedLedger, staging: Staging) -> None:
        self.service = service
        self.writer = writer
        self.staging = staging

    def done(self, request_id: str, state: RequestState, system: str, connector: Connector,
             step: str, refs: Sequence[RecordRef]) -> bool:
        """Open the system's manual task once (and tell the assignee); True once a person has done it."""
        task = state.system(system).task
        if task is not None and task.get("done"):
            if step == "export":
                self.export_attachments(request_id, state, system, task)
            return True
        if task is not None:
            return False  # still waiting; the deadline sweep chases it
        config = self.service.data_map.systems[system]
        assignee = config.assignee or config.owner
        instructions = rights.instructions(connector, step, refs)
        due = task_due(state, config.task_lead_days)
        self.writer.append(request_id, EventType.TASK_OPENED, {
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
        self.writer.append(request_id, EventType.TASK_NOTIFIED, {"system": system, "channels": results})
        return False

    def export_attachments(self, request_id: str, state: RequestState, system: str, task: dict[str, Any]) -> None:
        """An access request's manual export: the attached files become the system's export."""
        if "export" in state.system(system).steps_done and not self.staging.export_lost(request_id, state, system):
            return
        staging = self.staging.private_staging_dir(request_id) / f"{system}.jsonl"
        lines = [canonical_json({"object": "attachment", "id": a["name"],
                                 "fields": {"file": f"attachments/{system}/{a['name']}", "sha256": a["sha256"],
                                            "note": task.get("note")}}) + "\n"
                 for a in task.get("attachments", [])]
        tmp = staging.with_suffix(".part")
        with open_private(tmp, "w", encoding="utf-8") as out:
            out.write("".join(lines))
        tmp.replace(staging)
        self.writer.append(request_id, EventType.SYSTEM_EXPORTED, {
            "system": system, "records": len(lines), "sha256": sha256_file(staging), "file": staging.name,
            "manual": True,
        })

    def verify_erasure(self, request_id: str, state: RequestState, system: str, connector: Connector,
                       subject: Subject) -> None:
        """Re-query where the system can be queried (Wistia); else the person's confirmation is the proof."""
        task = state.system(system).task or {}
        if "discover" in connector.info.manual_steps:
            proof, remaining = f"confirmed by {task.get('by')} (manual task, no API to re-query)", []
        else:
            proof, remaining = "re-query after the manual erasure", [r.key for r in connector.verify_erased(subject)]
        self.writer.append(request_id, EventType.SYSTEM_VERIFIED, {
            "system": system, "proof": proof, "remaining": len(remaining), "retained_as_decided": [],
            "unexpected_remaining": remaining,
        })
        if remaining:
            raise RuntimeError(f"{len(remaining)} record(s) still match the subject in {system} after the manual task")
