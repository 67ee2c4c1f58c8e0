"""Named crash points: where a run or a purge may be stopped on purpose to prove it resumes.

The runner and the retention purge call their probe at each point that matters for recovery
(between a vendor's action and its ledger record, before sealing, ...). In production the probe
does nothing; the chaos campaign (chaos/probe.py) hands in one that kills the process there.
"""

from __future__ import annotations

from typing import Protocol


class CrashProbe(Protocol):
    """Called with the point's name each time a run reaches it."""

    def __call__(self, point: str) -> None: ...


def no_crash(point: str) -> None:
    """The probe outside chaos campaigns: every point passes."""
