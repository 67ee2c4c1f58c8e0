"""The crash probe a chaos child hands to the runner and the purge: SIGKILL at a named point.

`DSR_CHAOS_CRASH_AT=point` or `point@n` kills the process, at once and without cleanup, the n-th
time a run reaches that point (counted across the process's threads). Unset, the probe is the
runner's own no-op.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Mapping

from dsr.run.probe import CrashProbe, no_crash

CRASH_ENV = "DSR_CHAOS_CRASH_AT"


class KillAt:
    """SIGKILLs this process the `nth` time `point` is reached."""

    def __init__(self, point: str, nth: int = 1) -> None:
        self.point, self.nth = point, nth
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self._hits[point] += 1
            hit = self._hits[point]
        if hit >= self.nth:
            os.kill(os.getpid(), signal.SIGKILL)


def probe_from_env(environ: Mapping[str, str] = os.environ) -> CrashProbe:
    """The probe CRASH_ENV asks for (`point` or `point@n`), or the no-op when it is unset."""
    wanted = environ.get(CRASH_ENV)
    if not wanted:
        return no_crash
    point, _, nth = wanted.partition("@")
    return KillAt(point, int(nth or 1))
