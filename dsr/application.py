"""What the application does beyond recording a request's facts: runs, purges, holds, sweeps.

`Operations` is mixed into `dsr.service.DsrService`, which makes the service the one application
object: the doors (CLI, API, pages) and the flows call these methods and never build a runner, a
purger or a connector themselves. The modules behind them are imported when first used, so a
door that only reads pays for none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from dsr.adapters.mail import Channel, Notice
    from dsr.adapters.storage import EvidenceStore
    from dsr.contract import Connector
    from dsr.holds import Hold
    from dsr.intake import Intake
    from dsr.ledger.store import IndexRow
    from dsr.models import RequestType
    from dsr.retention import Purger, PurgeReport
    from dsr.rights import LiftResult
    from dsr.run import RequestRunner, RunOutcome
    from dsr.service import DsrService
    from dsr.state import RequestState
    from dsr.sweep import SweepReport

#: `progress(done, total)` after each system of a run.
RunProgress = Callable[[int, int], None]


class ManualTask(NamedTuple):
    """A step a person does in a system without an API (its `task` as the ledger records it)."""

    request_id: str
    system: str
    task: dict[str, Any]


class Operations:
    """Running, purging, holds, restriction lifts, the deadline sweep and the intake (mixed into DsrService)."""

    # -- connecting systems ---------------------------------------------------------------------

    def connecting(self: DsrService, system: str) -> Callable[[], Connector]:
        """A builder of `system`'s connector, for the runner to call inside its error handling
        (so that a bad data-map entry is recorded as that system's failure)."""
        return lambda: self.connector(system)

    # -- running a request ----------------------------------------------------------------------

    def runner(self: DsrService) -> RequestRunner:
        """A runner over this service (each holds the leases it took; one per run or per step)."""
        from dsr.run import RequestRunner

        return RequestRunner(self)

    def check_runnable(self: DsrService, request_id: str) -> RequestState:
        """Refuse (RequestStateError, recorded) a request that may not run; its state otherwise."""
        return self.runner().check_runnable(request_id)

    def waiting_to_run(self: DsrService) -> list[IndexRow]:
        """Open requests that may run and have not started: the verified ones, and those of a type
        that runs unverified (a CCPA opt-out, `dsr.models.UNVERIFIED_TYPES`) still unverified."""
        from dsr.models import UNVERIFIED_TYPES

        unverified = {t.value for t in UNVERIFIED_TYPES}
        return [row for row in self.list(open_only=True)
                if row.status == "verified" or (row.status == "awaiting_verification" and row.type in unverified)]

    def run(self: DsrService, request_id: str, *, progress: RunProgress | None = None) -> RunOutcome:
        """Carry out a request here, system after system (each step in the ledger before the next).

        The same steps the process-request flow takes, without an orchestrator: the console's
        background runs use it. Safe to call again; refused while another run holds the request.
        """
        runner = self.runner()
        plan = runner.begin(request_id)
        done = len(plan.all_systems) - len(plan.systems)
        if progress is not None:
            progress(done, len(plan.all_systems))
        for system in plan.systems:
            runner.run_system(request_id, system, self.connecting(system), lease=plan.lease)
            done += 1
            if progress is not None:
                progress(done, len(plan.all_systems))
        return runner.finish(request_id, lease=plan.lease)

    def recorded_outcome(self: DsrService, request_id: str) -> RunOutcome:
        """A run's outcome as the ledger has it now (what `finish` returned), running nothing: for a
        run that ended in another process (a `dsr serve` took it)."""
        from dsr.run.outcome import RunOutcome, system_result

        runner = self.runner()
        state = self.state(request_id)
        bundle_path, bundle_uri = (runner.sealer.bundle_location(request_id, state.bundles[-1]) if state.bundles
                                   else (None, None))
        package_path = runner.staging.stored_package_file(request_id, state.package) if state.package else None
        return RunOutcome(request_id, state.status, state.outcome_reason,
                          tuple(system_result(state, name) for name in sorted(state.systems)),
                          bundle_path, package_path, bundle_uri)

    def sweep_staging(self: DsrService) -> list[str]:
        """Remove staging copies a crashed or cancelled run left behind; what was removed."""
        return self.runner().sweep_staging()

    # -- manual tasks ---------------------------------------------------------------------------

    def manual_tasks(self: DsrService) -> list[ManualTask]:
        """Every manual task of the open requests, done ones too, by request then system."""
        return [ManualTask(row.request_id, name, system.task)
                for row in self.list(open_only=True)
                for name, system in sorted(self.state(row.request_id).systems.items()) if system.task]

    # -- retention ------------------------------------------------------------------------------

    def purger(self: DsrService) -> Purger:
        from dsr.retention import Purger

        return Purger(self, self.connector)

    def purge(self: DsrService, **options: Any) -> PurgeReport:
        """One retention purge (`Purger.run`'s options: dry_run, systems, categories, approve, progress)."""
        return self.purger().run(**options)

    def check_purge_approval(self: DsrService, run_id: str) -> None:
        """Refuse (RequestStateError, naming it) an approval of a run that does not wait for one."""
        self.purger()._approved(run_id)  # noqa: SLF001 - the purge's own rule, asked before its thread starts

    def purge_run_ids(self: DsrService) -> list[str]:
        """The chains of the recorded purge runs (each its own chain in the ledger)."""
        from dsr.retention import PURGE_PREFIX

        return [run_id for run_id in self.ledger.request_ids() if run_id.startswith(PURGE_PREFIX)]

    # -- legal holds ----------------------------------------------------------------------------

    def place_hold(self: DsrService, *, email: str, ref: str, reason: str, actor: str | None = None) -> Hold:
        from dsr.holds import add_hold

        return add_hold(self, email=email, ref=ref, reason=reason, actor=actor)

    def release_hold(self: DsrService, *, ref: str, reason: str, actor: str | None = None) -> Hold:
        from dsr.holds import release_hold

        return release_hold(self, ref=ref, reason=reason, actor=actor)

    def reopened_by(self: DsrService, ref: str) -> list[str]:
        """The requests whose held systems the release of hold `ref` re-opened."""
        from dsr.holds import reopened_by

        return reopened_by(self, ref)

    def holds(self: DsrService, *, active_only: bool = True) -> list[Hold]:
        from dsr.holds import holds

        return holds(self, active_only=active_only)

    # -- the rights' own steps ------------------------------------------------------------------

    def lift_restriction(self: DsrService, request_id: str, *, reason: str, actor: str | None = None) -> LiftResult:
        """End a finished restriction: what its suppression changed is put back in each system."""
        from dsr.rights import lift_restriction

        return lift_restriction(self.runner(), request_id, reason=reason, actor=actor or self.settings.actor,
                                connect=self.connector)

    def open_duplicate(self: DsrService, email: str, kind: RequestType) -> str | None:
        """An open request of the same subject and type, if there is one."""
        from dsr.rights import open_duplicate

        return open_duplicate(self, email, kind)

    def corrections(self: DsrService, request_id: str) -> dict[str, str]:
        """A rectification's corrected values (personal data: for the officer's eyes only)."""
        from dsr.rights import corrections

        return corrections(self, request_id)

    # -- deadlines ------------------------------------------------------------------------------

    def escalation_channels(self: DsrService) -> Sequence[Channel]:
        """The policy's escalation channels (empty: alerts are recorded in the ledger only)."""
        return self.policy.escalation.channels.build()

    def sweep(self: DsrService, *, now: datetime | None = None,
              channels: Sequence[Channel] | None = None) -> SweepReport:
        """One deadline sweep over the open requests, alerting through the policy's channels."""
        from dsr.sweep import sweep

        return sweep(self, self.escalation_channels() if channels is None else channels, now=now)

    def alert_office(self: DsrService, notice: Notice) -> dict[str, str]:
        """Send a notice through the escalation channels: each one's result (empty: none configured)."""
        from dsr.adapters.mail import deliver

        return deliver(self.escalation_channels(), notice)

    # -- evidence -------------------------------------------------------------------------------

    def evidence_store(self: DsrService) -> EvidenceStore:
        """Where sealed bundles and subject packages are (local directories unless S3 is configured)."""
        from dsr.adapters.storage import config_from_settings, open_store

        return open_store(config_from_settings(self.settings))

    # -- intake ---------------------------------------------------------------------------------

    def intake(self: DsrService, smtp_config_provider: Callable[[], Any] | None = None, **options: Any) -> Intake:
        """The public intake (OpenDSR bodies, e-mailed codes) over this service.

        Without a provider, codes go out through the policy's intake mail settings, else its
        escalation mail; callback URL prefixes default to the policy's.
        """
        from dsr.intake import Intake

        policy = self.policy.intake
        if smtp_config_provider is None:
            def smtp_config_provider() -> Any:
                return policy.email or self.policy.escalation.channels.email
        options.setdefault("callback_url_prefixes", policy.callback_url_prefixes)
        return Intake(self, smtp_config_provider, **options)
