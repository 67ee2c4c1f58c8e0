"""How a warm worker (flows/warm.py) claims scheduled runs when other workers share its pool.

Workers freed at the same moment read the same oldest scheduled runs, and the server gives each run
to one claimant. The worker that loses must take the next waiting run in the same look, not sit
idle until its next poll (5 s). The server's side (one claimant per Pending proposal) is Prefect's;
here a stand-in for the read and for the claim's answer decides which runs another worker won, so
what is checked is the worker's choice, and its runs are recorded instead of executed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from flows.warm import CLAIM_SPARE, WarmWorker

DEPLOYMENT = uuid4()


@dataclass(frozen=True)
class ScheduledRun:
    """What the worker reads of a scheduled run."""

    name: str
    id: UUID = field(default_factory=uuid4)
    deployment_id: UUID = DEPLOYMENT


class Pool:
    """The scheduled runs of a pool, oldest first, some of them won by another worker's claim."""

    def __init__(self, names: Sequence[str], *, won_elsewhere: Sequence[str] = ()) -> None:
        self.waiting = [ScheduledRun(name) for name in names]
        self.won_elsewhere = set(won_elsewhere)
        self.reads: list[int] = []  # the limit of each read

    async def get_scheduled_flow_runs_for_deployments(self, *, deployment_ids: list[UUID], scheduled_before: Any,
                                                      limit: int) -> list[ScheduledRun]:
        assert deployment_ids == [DEPLOYMENT]
        self.reads.append(limit)
        return self.waiting[:limit]

    def claim(self, run: ScheduledRun) -> bool:
        """Pending proposed: the run leaves the waiting list whoever won it."""
        self.waiting.remove(run)
        return run.name not in self.won_elsewhere


class RecordingWorker(WarmWorker):
    """A warm worker whose claims the pool answers and whose runs are held, not executed."""

    def __init__(self, pool: Pool, *, parallel_runs: int) -> None:
        super().__init__({DEPLOYMENT: object()}, parallel_runs=parallel_runs)  # type: ignore[dict-item]
        self.pool = pool
        self.started: list[str] = []
        self.release = threading.Event()

    def _open_thread_client(self) -> None:
        pass  # no Prefect API here

    async def _claim(self, client: Any, flow_run: Any) -> bool:  # type: ignore[override]
        return self.pool.claim(flow_run)

    def _execute(self, flow: Any, flow_run: Any) -> None:
        self.started.append(flow_run.name)
        self.release.wait(10)  # still running while the test looks


def look(worker: RecordingWorker) -> int:
    try:
        return asyncio.run(worker._claim_and_start(worker.pool))  # type: ignore[arg-type]
    finally:
        worker.release.set()
        worker._executor.shutdown(wait=True)


def test_a_run_another_worker_won_is_passed_over_for_the_next_in_the_same_read() -> None:
    pool = Pool(["oldest", "second", "third", "fourth"], won_elsewhere=["oldest"])
    worker = RecordingWorker(pool, parallel_runs=1)

    assert look(worker) == 1
    assert worker.started == ["second"]
    assert pool.reads == [1 + CLAIM_SPARE]  # one read of the server
    assert [run.name for run in pool.waiting] == ["third", "fourth"]  # nothing claimed beyond its free thread


def test_when_every_run_read_went_elsewhere_the_worker_reads_again_and_fills_its_threads() -> None:
    names = [f"run-{n}" for n in range(8)]
    pool = Pool(names, won_elsewhere=names[:1 + CLAIM_SPARE + 1])  # the whole first read, and one more
    worker = RecordingWorker(pool, parallel_runs=2)

    assert look(worker) == 2
    assert worker.started == names[1 + CLAIM_SPARE + 1:][:2]
    assert len(pool.reads) == 2


def test_with_nothing_lost_the_worker_reads_once_and_leaves_the_rest_waiting() -> None:
    pool = Pool(["a", "b", "c", "d", "e"])
    worker = RecordingWorker(pool, parallel_runs=2)

    assert look(worker) == 2
    assert worker.started == ["a", "b"]
    assert pool.reads == [2 + CLAIM_SPARE]
    assert [run.name for run in pool.waiting] == ["c", "d", "e"]


def test_an_empty_pool_is_one_read_and_nothing_started() -> None:
    pool = Pool([])
    worker = RecordingWorker(pool, parallel_runs=4)

    assert look(worker) == 0
    assert worker.started == [] and pool.reads == [4 + CLAIM_SPARE]
