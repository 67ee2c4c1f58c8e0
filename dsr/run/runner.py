"""Carrying out a verified request, one system at a time, as a write-ahead saga.

Each step appends its result to the ledger before the next one starts, and each step first
asks the ledger whether it is already done. A re-run after a crash, a failure or a finished
run therefore repeats nothing harmful: discovery and decisions are read back from the ledger,
erasure is idempotent, and completed systems are skipped.

The flow (flows/request.py) calls `begin`, then `run_system` once per system (in parallel), then
`finish`. This package knows nothing of Prefect; connectors arrive already built. The runner
composes its parts: the run lease (lease.py), one system's steps (saga.py), manual tasks
(manual.py), the staging (staging.py) and the package and sealed evidence (sealing.py).

Each system step reads the request's state once and hands it along; it is read again only where
the step's own appends matter (the result it reports).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

from dsr import rights
from dsr.adapters.storage import EvidenceStore
from dsr.contract import Connector, Subject, close_connector
from dsr.ledger.store import ChainTampered, IdentityTampered
from dsr.models import AUTOMATED_TYPES, EXPORT_TYPES, UNVERIFIED_TYPES, RequestType, Status
from dsr.run.codec import safe_error
from dsr.run.lease import RUNNER, AlreadyRunning, LeasedLedger, LeaseLost
from dsr.run.manual import ManualSteps, task_due
from dsr.run.outcome import RunOutcome, RunPlan, SystemResult, system_result
from dsr.run.probe import CrashProbe, no_crash
from dsr.run.saga import Saga
from dsr.run.sealing import Sealer
from dsr.run.staging import Staging, StoreSlot
from dsr.service import DsrService, RequestStateError
from dsr.state import EventType, RequestState, SystemStatus

log = logging.getLogger(__name__)

#: How long a run's lease lasts without renewal; each system step renews it past half-life.
LEASE_SECONDS_ENV = "DSR_RUN_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 900.0


class NotVerified(RequestStateError):
    """DESIGN invariant 2: no fan-out before the requester's identity is verified."""


class RequestRunner:
    """Drives one request through its systems. Safe to call again at any point.

    `crash` is called at each named crash point (chaos campaigns kill the process there); by
    default it does nothing.
    """

    def __init__(self, service: DsrService, store: EvidenceStore | None = None,
                 lease_seconds: float | None = None, crash: CrashProbe = no_crash) -> None:
        self.service = service
        self.ledger = service.ledger
        self.crash = crash
        seconds = lease_seconds or float(os.environ.get(LEASE_SECONDS_ENV) or DEFAULT_LEASE_SECONDS)
        self.writer = LeasedLedger(service.ledger, seconds)
        self._store = StoreSlot(service, store)
        self.staging = Staging(service, self._store)
        self.saga = Saga(service, self.writer, self.staging, crash)
        self.manual = ManualSteps(service, self.writer, self.staging)
        self.sealer = Sealer(service, self.writer, self.staging, self._store, crash)

    @property
    def lease_seconds(self) -> float:
        return self.writer.lease_seconds

    @property
    def store(self) -> EvidenceStore:
        """Where bundles and packages go (local directories unless S3 is configured)."""
        return self._store.get()

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
        self.staging.clear_unneeded(request_id)  # before a cancelled request is refused, too
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
        holder = self.writer.claim(request_id)
        self.staging.clear_crashed_run(request_id)  # under the lease: no other live run of it is writing
        with self.writer.holding(request_id, holder):
            if state.status == Status.COMPLETED:  # completed but not sealed (a crash while sealing)
                return RunPlan(request_id, (), systems, action, already_closed=True, lease=holder)

            def not_closed(current: RequestState) -> None:
                if current.closed:
                    raise RequestStateError(f"request {request_id} closed while starting")

            self.writer.append(request_id, EventType.RUN_STARTED, {"systems": list(systems), "action": action},
                               not_closed)
        self.crash("fanout")
        self.service.status_changed(request_id)
        todo = tuple(s for s in systems if state.systems.get(s) is None
                     or state.systems[s].status != SystemStatus.COMPLETED
                     or self.staging.export_lost(request_id, state, s))
        return RunPlan(request_id, todo, systems, action, lease=holder)

    # -- one system ---------------------------------------------------------------------------

    def run_system(self, request_id: str, system: str, connect: Callable[[], Connector],
                   lease: str | None = None, *,
                   on_failure: Callable[[BaseException], None] | None = None) -> SystemResult:
        """Discover, then export or erase and verify, in one system.

        `connect` builds the connector; it is called only when there is work to do, and a
        failure to build it (bad settings, missing credentials) is recorded like any other.
        Never raises for a system's failure: it records it (as a safe message), reports the
        system as failed and hands the exception to `on_failure` (the flow decides from it
        whether a retry may help). `lease` is the plan's (a runner other than the one that
        began passes it); it raises LeaseLost / AlreadyRunning when another run holds the request.
        """
        with self.writer.holding(request_id, lease) as holder:
            state = self.service.state(request_id)
            self.writer.renew(request_id, holder, state)
            return self._run_system(request_id, state, system, connect, on_failure)

    def _run_system(self, request_id: str, state: RequestState, system: str,
                    connect: Callable[[], Connector],
                    on_failure: Callable[[BaseException], None] | None = None) -> SystemResult:
        if state.status == Status.CANCELLED:
            return SystemResult(system, "cancelled", 0, skipped=True)
        if (state.system(system).status == SystemStatus.COMPLETED
                and not self.staging.export_lost(request_id, state, system)):
            return system_result(state, system, skipped=True)
        connector: Connector | None = None
        try:
            subject = self.saga.subject(request_id, state)
            connector = connect()
            if not self._step(request_id, state, system, connector, subject):
                return system_result(self.service.state(request_id), system)
            self.writer.append(request_id, EventType.SYSTEM_COMPLETED, {"system": system})
        except (LeaseLost, AlreadyRunning):
            raise  # another run holds the request: it is not this system's failure to record
        except (IdentityTampered, ChainTampered):
            raise  # the record was edited: the run stops, writing nothing more to it
        except Exception as exc:  # a system's failure is the request's fact, not the flow's crash
            log.warning("request %s: system %s failed: %s", request_id, system, type(exc).__name__)
            self.writer.append(request_id, EventType.SYSTEM_FAILED, {"system": system, "error": safe_error(exc)})
            if on_failure is not None:
                on_failure(exc)
        finally:
            close_connector(connector)
        return system_result(self.service.state(request_id), system)

    def _step(self, request_id: str, state: RequestState, system: str, connector: Connector,
              subject: Subject) -> bool:
        """The system's step, by API or by a person; False while a person's task is still open."""
        manual = connector.info.manual_steps
        step = rights.step_for(state.type)
        refs = [] if "discover" in manual else self.saga.discover(request_id, system, connector, subject)
        self.crash("discovered")
        by_person = step in manual or (step in rights.RIGHTS_STEPS and rights.needs_person(connector, step))
        if step == "erase" and rights.holds_on(self.service, subject.identity_hash):
            by_person = False  # held: nothing is erased, by API or by hand (see Saga.erase)
        if by_person and not refs and "discover" not in manual:
            pass  # discovery found nothing: no task for a person, nothing to do
        elif by_person:
            if not self.manual.done(request_id, state, system, connector, step, refs):
                return False
            if step == "erase":
                self.manual.verify_erasure(request_id, state, system, connector, subject)
        elif step == "export":
            self.saga.export(request_id, state, system, connector, refs)
        elif step == "erase":
            self.saga.erase(request_id, state, system, connector, subject, refs)
        else:
            rights.run_step(self, request_id, state, system, connector, subject, refs)
        return True

    # -- finish -------------------------------------------------------------------------------

    def finish(self, request_id: str, lease: str | None = None) -> RunOutcome:
        """Close the run: package for the subject, completion (or what is left), sealed evidence;
        then let go of the lease."""
        with self.writer.holding(request_id, lease) as holder:
            outcome = self._finish(request_id)
            self.crash("sealed")
            self.writer.release(request_id, holder)
        self.service.status_changed(request_id)
        return outcome

    def _finish(self, request_id: str) -> RunOutcome:
        state = self.service.state(request_id)
        if self._close_outcome(request_id, state):
            state = self.service.state(request_id)  # the outcome just recorded is what gets sealed
        bundle_path, bundle_uri = self.sealer.seal(request_id, state)
        # Sealing adds only the bundle: status, systems and package are as `state` has them.
        package_path = self.staging.stored_package_file(request_id, state.package) if state.package else None
        results = tuple(system_result(state, name) for name in sorted(state.systems))
        return RunOutcome(request_id, state.status, state.outcome_reason, results, bundle_path, package_path,
                          bundle_uri)

    def _close_outcome(self, request_id: str, state: RequestState) -> bool:
        """Record the run's outcome (completed, partially completed or waiting for a person) unless
        already recorded as it is; True when something was appended."""
        # Only a run with a plan is finished here (a rectification waiting for the office is not).
        if not state.plan or state.status not in (Status.IN_PROGRESS, Status.PARTIALLY_COMPLETED,
                                                  Status.AWAITING_MANUAL_ACTION):
            return False
        unfinished = {n: s for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED}
        waiting = {n: s for n, s in unfinished.items() if s.status == SystemStatus.AWAITING_MANUAL}
        if unfinished and len(waiting) == len(unfinished):
            reason = "manual task(s) open: " + "; ".join(
                f"{n} ({(s.task or {}).get('step')}, {(s.task or {}).get('assignee')}, due {(s.task or {}).get('due')})"
                for n, s in sorted(waiting.items()))
            if state.status == Status.AWAITING_MANUAL_ACTION and state.outcome_reason == reason:
                return False
            self.writer.append(request_id, EventType.MANUAL_ACTION_REQUIRED,
                               {"reason": reason, "open_systems": sorted(waiting)})
            return True
        if unfinished:
            reason = "; ".join(f"{n}: {s.error or s.status.value}" for n, s in sorted(unfinished.items()))
            if state.status == Status.PARTIALLY_COMPLETED and state.outcome_reason == reason:
                return False
            self.writer.append(request_id, EventType.PARTIALLY_COMPLETED,
                               {"reason": reason, "open_systems": sorted(unfinished)})
            return True
        if RequestType(state.type) in EXPORT_TYPES and state.package is None:
            self.sealer.package(request_id, state)
        self.crash("finishing")
        rights.rekey_identity(self, request_id, state)
        self.writer.append(request_id, EventType.COMPLETED, {
            "systems": sorted(state.systems), "response": "sent to the privacy office for delivery",
        })
        return True

    # -- the parts' public faces --------------------------------------------------------------

    def build_bundle_bytes(self, request_id: str, through_seq: int) -> bytes:
        """The bundle is a pure function of the ledger up to `through_seq` (DESIGN invariant 5)."""
        return self.sealer.build_bundle_bytes(request_id, through_seq)

    def staging_dir(self, request_id: str) -> Path:
        """Where exports wait to be packaged (private; removed once the package is stored)."""
        return self.staging.staging_dir(request_id)

    def private_staging_dir(self, request_id: str) -> Path:
        """The staging directory, created (with the request's package directory) private."""
        return self.staging.private_staging_dir(request_id)

    def discovered_dir(self, request_id: str) -> Path:
        """Where the request's discovered refs files are kept (evidence)."""
        return self.staging.discovered_dir(request_id)

    def sweep_staging(self) -> list[str]:
        """Remove the staging of every request that no longer needs it; the request ids swept."""
        return self.staging.sweep()

    @staticmethod
    def task_due(state: RequestState, lead_days: int) -> date:
        """A task is due `lead_days` before the request (never before tomorrow)."""
        return task_due(state, lead_days)
