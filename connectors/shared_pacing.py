"""A vendor's rate budget shared by every process and machine that calls it (workers of a pool).

The in-process `RateLimiter` cannot see the calls of another worker, so two workers each pacing
themselves to a vendor's limit would together send twice it. Here the budget lives in a database
that every worker already reaches (the production PostgreSQL; a SQLite file on one machine), as a
GCRA slot schedule: one row per budget holds the moment its next slot is free. Taking a slot is a
single atomic upsert that moves that moment on by one interval (period / calls) and returns when the
caller's own slot starts; the caller sleeps until then. No lock is held while anyone sleeps, a
crashed worker leaves nothing to clean up (a reserved slot simply passes), and on PostgreSQL the
clock is the server's, so machines with drifting clocks still agree.

Why this and not Prefect's `rate_limit`: measured here, its slot decay took 27.8 s for 20 calls at
5/s (prefect-notes.md); this costs one round trip per call (bench/fanout.py reports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Column, Float, MetaData, String, Table, create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

metadata = MetaData()

# Not part of the ledger: nothing here is evidence, and losing the table only forgets a few
# seconds of pacing. Created on first use, so it needs no migration.
slots_table = Table(
    "dsr_rate_slots",
    metadata,
    Column("budget", String(300), primary_key=True),
    Column("next_free", Float, nullable=False),  # epoch seconds when the next slot starts
)

_RESERVE = {
    # The server's clock: every worker measures against the same one.
    "postgresql": """
        INSERT INTO dsr_rate_slots AS s (budget, next_free)
        VALUES (:budget, extract(epoch FROM clock_timestamp()) + :interval)
        ON CONFLICT (budget) DO UPDATE
           SET next_free = GREATEST(s.next_free, extract(epoch FROM clock_timestamp())) + :interval
        RETURNING next_free - :interval - extract(epoch FROM clock_timestamp())
    """,
    # One machine: its clock is passed in.
    "sqlite": """
        INSERT INTO dsr_rate_slots (budget, next_free) VALUES (:budget, :now + :interval)
        ON CONFLICT (budget) DO UPDATE SET next_free = max(next_free, :now) + :interval
        RETURNING next_free - :interval - :now
    """,
}

_HOLD_OFF = {
    "postgresql": """
        INSERT INTO dsr_rate_slots AS s (budget, next_free)
        VALUES (:budget, extract(epoch FROM clock_timestamp()) + :seconds)
        ON CONFLICT (budget) DO UPDATE
           SET next_free = GREATEST(s.next_free, extract(epoch FROM clock_timestamp()) + :seconds)
    """,
    "sqlite": """
        INSERT INTO dsr_rate_slots (budget, next_free) VALUES (:budget, :now + :seconds)
        ON CONFLICT (budget) DO UPDATE SET next_free = max(next_free, :now + :seconds)
    """,
}


class SlotStore:
    """The table of budgets, on PostgreSQL or SQLite (other databases are refused by name)."""

    def __init__(self, url: str) -> None:
        try:
            dialect = make_url(url).get_backend_name()
        except ArgumentError as exc:
            raise ValueError("DSR_RATE_LIMIT_URL: not a database URL") from exc
        if dialect not in _RESERVE:
            raise ValueError(f"DSR_RATE_LIMIT_URL: shared rate limits need PostgreSQL or SQLite, not {dialect}")
        engine = create_engine(url, pool_pre_ping=True, connect_args={"timeout": 30} if dialect == "sqlite" else {})
        self.engine: Engine = engine
        self.dialect = dialect
        try:
            metadata.create_all(engine, checkfirst=True)
        except DBAPIError:
            # Two workers starting at once may both try to create it; the loser finds it there.
            metadata.create_all(engine, checkfirst=True)

    def reserve(self, budget: str, interval: float) -> float:
        """Take the next slot of `budget`; return seconds until it starts (0 when free now)."""
        params = {"budget": budget, "interval": interval, "now": time.time()}
        with self.engine.begin() as conn:
            wait = conn.execute(text(_RESERVE[self.dialect]), params).scalar_one()
        return max(float(wait), 0.0)

    def hold_off(self, budget: str, seconds: float) -> None:
        """No slot of `budget` starts before `seconds` from now (the vendor said wait)."""
        params = {"budget": budget, "seconds": seconds, "now": time.time()}
        with self.engine.begin() as conn:
            conn.execute(text(_HOLD_OFF[self.dialect]), params)

    def close(self) -> None:
        self.engine.dispose()


class SharedRateLimiter:
    """At most `calls` per `period` seconds for everyone taking slots of `budget`, evenly spaced.

    Same interface as `RateLimiter`. Spacing calls evenly (rather than letting a window's worth go
    at once) is what lets workers that know nothing of each other share one budget exactly.
    """

    def __init__(self, store: SlotStore, budget: str, calls: int, period: float, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("rate limit: calls must be >= 1 and period > 0")
        self.calls, self.period = calls, period
        self.budget = budget
        self._interval = period / calls
        self._store = store
        self._sleep = sleep

    def acquire(self) -> float:
        """Take a slot; return how long this call waited."""
        wait = self._store.reserve(self.budget, self._interval)
        if wait > 0:
            self._sleep(wait)
        return wait

    @contextmanager
    def call(self) -> Iterator[float]:
        """Take a slot for the call made inside the block: evenly spaced slots need no answer."""
        yield self.acquire()

    def hold_off(self, seconds: float) -> None:
        self._store.hold_off(self.budget, seconds)
