"""Long operations started from the console (a request's run, a retention purge) in background threads.

A page starts a job and returns at once; the browser polls the job's JSON (doors.api.console) and
shows its progress. The work itself is the application's, as the CLI and the flows call it:
`DsrService.run` (begin, each system, finish) and `DsrService.purge`. A request's run holds the
request's lease in the ledger, so a run started here and one the orchestrator started on
verification cannot both act: the second stops with "already running".
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dsr.service import DsrService, RequestStateError

log = logging.getLogger(__name__)

#: Finished jobs kept for their pages to read (the oldest are forgotten past this).
KEEP_FINISHED = 200


@dataclass
class Job:
    """One long operation: what it is, how far it got, how it ended."""

    id: str
    kind: str  # "run" or "purge"
    key: str  # the request id, or "purge"
    started_at: str
    state: str = "running"  # running | done | failed
    message: str = ""
    progress: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> {"done", "total"}
    result: dict[str, Any] = field(default_factory=dict)

    def to_view(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "key": self.key, "started_at": self.started_at,
                "state": self.state, "message": self.message, "progress": self.progress, "result": self.result}


class Jobs:
    """The jobs of one app, in memory (a restart forgets them; the ledger keeps what they did)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, key: str, work: Callable[[Job], str]) -> Job:
        """Start `work(job)` in a thread unless a job with this key is running (then that one is returned).

        `work` returns the closing message; a `RequestStateError` or `ValueError` it raises becomes
        the job's message as it is (it names the state or the field); anything else is reported by
        its type only, so no stack trace and no personal data reaches a page.
        """
        with self._lock:
            for job in self._jobs.values():
                if job.key == key and job.state == "running":
                    return job
            job = Job(str(uuid.uuid4()), kind, key, datetime.now(UTC).isoformat(timespec="seconds"))
            self._jobs[job.id] = job
            self._forget_old()

        def target() -> None:
            try:
                job.message = work(job)
                job.state = "done"
            except (RequestStateError, ValueError) as exc:
                job.state, job.message = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - a background thread: report, never crash the server
                log.warning("%s job %s failed: %s", kind, job.id, type(exc).__name__)
                job.state, job.message = "failed", f"the {kind} stopped with an internal error ({type(exc).__name__})"

        threading.Thread(target=target, name=f"console-{kind}-{key[:16]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def latest(self, key: str) -> Job | None:
        found = [j for j in list(self._jobs.values()) if j.key == key]
        return found[-1] if found else None

    def recent(self, kind: str) -> list[Job]:
        return [j for j in reversed(list(self._jobs.values())) if j.kind == kind]

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state != "running"]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[key]


def run_request(service: DsrService, request_id: str, job: Job) -> str:
    """Carry out a verified request, system by system, as the flow does (each step in the ledger first)."""

    def progress(done: int, total: int) -> None:
        job.progress["systems"] = {"done": done, "total": total}

    outcome = service.run(request_id, progress=progress)
    job.result = {"status": outcome.status.value, "reason": outcome.reason}
    return f"the run ended: {outcome.status.value.replace('_', ' ')}" + (f" ({outcome.reason})" if outcome.reason else "")


def purge(service: DsrService, job: Job, *, dry_run: bool, approve: str | None = None) -> str:
    """A retention purge (or its dry run), reporting per system and category as it goes."""
    def progress(system: str, category: str, done: int, expected: int) -> None:
        job.progress[f"{system} · {category}"] = {"done": done, "total": max(done, expected)}

    report = service.purge(dry_run=dry_run, approve=approve, progress=progress)
    job.result = {"run_id": report.run_id, "status": report.status, "purged": report.purged}
    if report.status == "needs_approval":
        return f"{report.run_id}: stopped at the blast-radius guard, nothing deleted; approve it below to go ahead"
    verb = "would go" if dry_run else "purged"
    count = sum(t.candidates - t.held_back for t in report.tallies) if dry_run else report.purged
    return f"{report.run_id}: {report.status.replace('_', ' ')}; {count} record(s) {verb}"
