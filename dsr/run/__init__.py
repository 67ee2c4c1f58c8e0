"""Running a request: `RequestRunner` and what it hands back (see runner.py for the parts)."""

from dsr.run.lease import AlreadyRunning, LeaseLost
from dsr.run.outcome import RunOutcome, RunPlan, SystemResult
from dsr.run.probe import CrashProbe, no_crash
from dsr.run.runner import NotVerified, RequestRunner
from dsr.run.sealing import SealConflict

__all__ = ["AlreadyRunning", "CrashProbe", "LeaseLost", "NotVerified", "RequestRunner", "RunOutcome", "RunPlan",
           "SealConflict", "SystemResult", "no_crash"]
