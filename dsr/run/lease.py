"""The run lease: one run of a request at a time, and every write of the run guarded by it.

`claim` takes the lease (`run.claimed`: holder and expiry) with a guarded append, so of two runs
starting at once exactly one wins and the other stops with `AlreadyRunning`. Every later append
of the run checks, inside its own transaction, that the run still holds the lease, so a run
whose lease was taken over stops (`LeaseLost`) instead of forking the story. The holder is the
run, not the thread: the flow hands it to each system task, which works `holding` it. A lease
from a crashed worker can be taken over once it expires, or at once when its holder was a
process on this host that no longer exists.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

from dsr.ledger.events import LedgerEvent, format_timestamp, parse_timestamp
from dsr.ledger.store import Ledger
from dsr.service import RequestStateError
from dsr.state import EventType, RequestState, derive_state

#: The actor of every event a run writes.
RUNNER = "pipeline"

# The lease holder of the run this thread works for (set by `LeasedLedger.holding`).
_holder: ContextVar[str | None] = ContextVar("dsr_run_holder", default=None)


class AlreadyRunning(RequestStateError):
    """Another run holds the request's lease: this one stops before doing anything."""

    def __init__(self, request_id: str, holder: str, until: str) -> None:
        super().__init__(f"request {request_id} is already running (held by {holder} until {until})")
        self.holder, self.until = holder, until


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it expired); the run stops without writing more."""


class _NotHeld(Exception):
    """The lease to release is no longer this run's: there is nothing to let go of."""


def new_holder() -> str:
    """A run's name in its lease: host and process (so a dead local holder is recognised), and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_gone(holder: str) -> bool:
    """True only when the holder was a process on this host that no longer exists. Anything
    unsure (another host, a pid reused, no permission to ask) counts as alive: waiting for the
    expiry is the safe side."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def lease_blocks(lease: dict[str, Any] | None, holder: str | None, now: datetime) -> bool:
    """Does `lease` keep `holder` (None: a caller holding no lease) from writing?"""
    if lease is None or lease["holder"] == holder:
        return False
    return parse_timestamp(lease["until"]) > now and not holder_gone(lease["holder"])


def lease_of(chain: Sequence[LedgerEvent]) -> dict[str, Any] | None:
    """The chain's current lease, folded from its first event and its lease events only: the
    same fold as `RequestState.lease` (only these events touch it), without the rest of the chain."""
    lease_events = [e for e in chain[1:] if e.type in (EventType.RUN_CLAIMED, EventType.RUN_RELEASED)]
    return derive_state([chain[0], *lease_events]).lease


class LeasedLedger:
    """A run's writes to request chains: claimed, renewed and released leases, guarded appends."""

    def __init__(self, ledger: Ledger, lease_seconds: float) -> None:
        self.ledger = ledger
        self.lease_seconds = lease_seconds
        self._held: dict[str, str] = {}  # request id -> the lease this runner took in `claim`

    def claim(self, request_id: str) -> str:
        """Take (or take over) the request's lease; AlreadyRunning if another live run holds it."""
        holder = self._held.get(request_id) or new_holder()
        payload = self._lease_payload(holder)

        def guard(chain: Sequence[LedgerEvent]) -> None:
            lease = lease_of(chain)
            if lease_blocks(lease, holder, datetime.now(UTC)):
                assert lease is not None
                raise AlreadyRunning(request_id, lease["holder"], lease["until"])
            if lease is not None and lease["holder"] != holder:
                payload["took_over"] = lease["holder"]  # expired, or its process is gone

        self.ledger.append(request_id, EventType.RUN_CLAIMED, payload, actor=RUNNER, guard=guard)
        self._held[request_id] = holder
        return holder

    def renew(self, request_id: str, holder: str | None, state: RequestState) -> None:
        """Extend our lease (as `state` shows it) when less than half of it is left: a long run keeps it."""
        if holder is None:
            return
        lease = state.lease
        if lease is None or lease["holder"] != holder:
            raise LeaseLost(f"request {request_id}: this run's lease was taken over")
        left = (parse_timestamp(lease["until"]) - datetime.now(UTC)).total_seconds()
        if left < self.lease_seconds / 2:
            self.append(request_id, EventType.RUN_CLAIMED, self._lease_payload(holder))

    def release(self, request_id: str, holder: str | None) -> None:
        """Let go of our lease; nothing to do when it is no longer ours (taken over, or released)."""
        if holder is None:
            return

        def ours(chain: Sequence[LedgerEvent]) -> None:
            if (lease_of(chain) or {}).get("holder") != holder:
                raise _NotHeld

        try:
            self.ledger.append(request_id, EventType.RUN_RELEASED, {"holder": holder}, actor=RUNNER, guard=ours)
        except _NotHeld:
            return
        self._held.pop(request_id, None)

    @contextmanager
    def holding(self, request_id: str, lease: str | None) -> Iterator[str | None]:
        """Work as the run holding `lease` (default: the one this runner claimed) for the block."""
        holder = lease or self._held.get(request_id)
        token = _holder.set(holder)
        try:
            yield holder
        finally:
            _holder.reset(token)

    def append(self, request_id: str, type: str, payload: dict[str, Any],
               check: Callable[[RequestState], None] | None = None) -> LedgerEvent:
        """Append as the current run: refused (LeaseLost / AlreadyRunning) once another run holds
        the lease, checked inside the append's transaction so it cannot race. `check` sees the
        request's state there too (and may raise to refuse)."""
        holder = _holder.get()

        def guard(chain: Sequence[LedgerEvent]) -> None:
            state = derive_state(chain) if check is not None else None
            lease = state.lease if state is not None else lease_of(chain)
            if holder is not None and (lease is None or lease["holder"] != holder):
                raise LeaseLost(f"request {request_id}: this run's lease was taken over"
                                + (f" by {lease['holder']}" if lease else " and released"))
            if lease_blocks(lease, holder, datetime.now(UTC)):
                assert lease is not None
                raise AlreadyRunning(request_id, lease["holder"], lease["until"])
            if check is not None and state is not None:
                check(state)

        return self.ledger.append(request_id, type, payload, actor=RUNNER, guard=guard)

    def _lease_payload(self, holder: str) -> dict[str, Any]:
        until = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        return {"holder": holder, "ttl_seconds": self.lease_seconds, "until": format_timestamp(until)}
