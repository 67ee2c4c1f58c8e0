"""A vendor's rate budget shared by every process and machine that calls it (workers of a pool).

The in-process `RateLimiter` cannot see the calls of another worker, so two workers each pacing
themselves to a vendor's limit would together send twice it. Here the budget lives in a database
that every worker already reaches (the production PostgreSQL; a SQLite file on one machine), as a
GCRA slot schedule: one row per budget holds the moment its next slot is free. Taking a slot is a
single atomic upsert that moves that moment on by one interval (period / calls) and returns when the
caller's own slot starts; the caller sleeps until then. No lock is held while anyone sleeps, a
crashed worker leaves nothing to clean up (a reserved slot simply passes), and on PostgreSQL the
clock is the server's, so machines with drifting clocks still agree.

A budget whose calls hold their slot until answered (`until_answered`, HubSpot's search) keeps
one row per call instead, in `dsr_rate_calls`: a call takes a row while fewer than `calls` rows of its
budget are still out or answered less than a period ago, and its answer moves the row's end to a
period after that answer. Taking is one transaction under a lock of the budget (an advisory lock on
PostgreSQL; SQLite's write lock), answering one update: two round trips a call, which suits a small
budget. A call whose worker dies frees its row `HELD_CALL_TIMEOUT` seconds after it left.

Why this and not Prefect's `rate_limit`: measured here, its slot decay took 27.8 s for 20 calls at
5/s (prefect-notes.md); this costs one round trip per call (bench/fanout.py reports it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from dsr.pool_ping import ping_after_idle

metadata = MetaData()

# Not part of the ledger: nothing here is evidence, and losing the table only forgets a few
# seconds of pacing. Created on first use, so it needs no migration.
slots_table = Table(
    "dsr_rate_slots",
    metadata,
    Column("budget", String(300), primary_key=True),
    Column("next_free", Float, nullable=False),  # epoch seconds when the next slot starts
)

calls_table = Table(
    "dsr_rate_calls",
    metadata,
    Column("call_id", String(36), primary_key=True),
    Column("budget", String(300), nullable=False, index=True),
    Column("until", Float, nullable=False),  # epoch seconds when this call stops counting
)

#: How long a call that was never answered (its worker died) keeps its slot.
HELD_CALL_TIMEOUT = 120.0
#: How often a caller looks again while every slot is a call still out.
HELD_POLL_SECONDS = 0.05
HELD_LOCK_SPACE = 0x64737270  # "dsrp": the first key of the budgets' advisory locks

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
        engine = ping_after_idle(create_engine(url, connect_args={"timeout": 30} if dialect == "sqlite" else {}))
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

    def _clock(self) -> ColumnElement[float]:
        """Epoch seconds now, as SQL: the server's clock on PostgreSQL (workers on machines whose
        clocks drift still agree), this machine's on SQLite (one machine)."""
        if self.dialect == "postgresql":
            return literal_column("extract(epoch FROM clock_timestamp())", Float)
        return literal(time.time(), Float)

    def _now(self, conn: Connection) -> float:
        if self.dialect == "postgresql":
            return float(conn.execute(select(self._clock())).scalar_one())
        return time.time()

    def _lock_budget(self, conn: Connection, budget: str) -> None:
        if self.dialect == "postgresql":
            # The two-key form: a key space of its own, apart from the ledger's one-key locks.
            conn.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:budget))"),
                         {"space": HELD_LOCK_SPACE, "budget": budget})
        else:  # the first write takes SQLite's write lock, held to commit: the count cannot race
            conn.execute(text("DELETE FROM dsr_rate_calls WHERE call_id = ''"))

    def take_held(self, budget: str, calls: int, period: float) -> tuple[str | None, float]:
        """A row of `budget` for one call, or None and how long to wait before asking again."""
        with self.engine.begin() as conn:
            self._lock_budget(conn, budget)
            now = self._now(conn)
            conn.execute(calls_table.delete().where(calls_table.c.budget == budget, calls_table.c.until <= now))
            out, first_end = conn.execute(
                select(func.count(), func.min(calls_table.c.until)).where(calls_table.c.budget == budget)).one()
            if out < calls:
                call_id = str(uuid.uuid4())
                conn.execute(calls_table.insert().values(call_id=call_id, budget=budget,
                                                         until=now + period + HELD_CALL_TIMEOUT))
                return call_id, 0.0
        return None, min(max(float(first_end) - now, 0.0), HELD_POLL_SECONDS) if first_end else HELD_POLL_SECONDS

    def answer_held(self, call_id: str, period: float) -> None:
        """The call's answer is back: it counts for one more period from now."""
        with self.engine.begin() as conn:  # one statement: the answer is on a search's path
            conn.execute(calls_table.update().where(calls_table.c.call_id == call_id)
                         .values(until=self._clock() + period))

    def hold_off_held(self, budget: str, calls: int, seconds: float) -> None:
        """Every slot of `budget` taken until `seconds` from now (the vendor said wait)."""
        with self.engine.begin() as conn:
            self._lock_budget(conn, budget)
            now = self._now(conn)
            conn.execute(calls_table.insert(), [{"call_id": str(uuid.uuid4()), "budget": budget, "until": now + seconds}
                                                for _ in range(calls)])

    def close(self) -> None:
        self.engine.dispose()


class SharedRateLimiter:
    """At most `calls` per `period` seconds for everyone taking slots of `budget`, evenly spaced.

    Same interface as `RateLimiter`. Spacing calls evenly (rather than letting a window's worth go
    at once) is what lets workers that know nothing of each other share one budget exactly. With
    `until_answered`, a call made through `call()` holds its slot until answered and a period after,
    as `RateLimiter`'s do, across every worker of the budget.
    """

    def __init__(self, store: SlotStore, budget: str, calls: int, period: float, *, until_answered: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("rate limit: calls must be >= 1 and period > 0")
        self.calls, self.period = calls, period
        self.until_answered = until_answered
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
        """Take a slot for the call made inside the block (yields how long it waited); with
        `until_answered`, the slot counts until a period after the block ends."""
        if not self.until_answered:
            yield self.acquire()
            return
        waited = 0.0
        while True:
            call_id, wait = self._store.take_held(self.budget, self.calls, self.period)
            if call_id is not None:
                break
            self._sleep(wait)
            waited += wait
        try:
            yield waited
        finally:
            self._store.answer_held(call_id, self.period)

    def hold_off(self, seconds: float) -> None:
        if self.until_answered:
            self._store.hold_off_held(self.budget, self.calls, seconds)
        else:
            self._store.hold_off(self.budget, seconds)
