"""What a run says back: the plan `begin` makes, each system's result, the run's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsr.models import Status
from dsr.state import RequestState


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


def system_result(state: RequestState, system: str, *, skipped: bool = False) -> SystemResult:
    """One system's result as `state` records it."""
    s = state.system(system)
    return SystemResult(system, s.status.value, s.found, dict(s.actions), s.exported,
                        None if s.remaining is None else len(s.remaining), s.error, skipped)
