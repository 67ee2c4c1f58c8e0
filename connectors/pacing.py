"""Shared by the HTTP connectors: a client-side rate limiter and vendor-aware retries.

The limiter keeps calls under a vendor's window so that its throttling answers (HubSpot's 429,
Salesforce's 403 REQUEST_LIMIT_EXCEEDED) are the exception, not the control loop. The retry
policy (tenacity) waits what the vendor asks (`Retry-After`), else backs off exponentially with
jitter, and gives up after a bounded number of attempts so a system that is down fails the step
(recorded in the ledger) instead of hanging the request.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

T = TypeVar("T")


class RateLimiter:
    """At most `calls` in any `period` seconds; `acquire()` blocks until a slot is free.

    Thread-safe, so the tasks of one process share a vendor's budget. Connectors take theirs from
    `limiter_for`, which hands every connector of the same vendor account the same one (and, across
    processes and machines, a `SharedRateLimiter`).

    A call's slot is counted from when it leaves; the vendor counts it when it arrives, so a late
    call can still bunch with the next window's (`LATENCY_MARGIN` makes that rare). With
    `until_answered`, a call taken through `call()` holds its slot until its answer is back and then
    for a whole period: the vendor saw it arrive before that answer, so no window of the vendor's can
    ever hold more than `calls` of ours, whatever the delays between us. It costs one round trip per
    slot, which suits a small budget that is not the one binding (HubSpot's search).
    """

    def __init__(self, calls: int, period: float, *, until_answered: bool = False,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("rate limit: calls must be >= 1 and period > 0")
        self.calls, self.period = calls, period
        self.until_answered = until_answered
        self._stamps: deque[float] = deque()  # when each counted slot began (answered calls: their answer)
        self._in_flight = 0  # `until_answered` calls sent and not yet answered
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._clock, self._sleep = clock, sleep

    def acquire(self) -> float:
        """Take a slot; return how long this call waited."""
        return self._take(hold=False)

    @contextmanager
    def call(self) -> Iterator[float]:
        """Take a slot for the call made inside the block (yields how long it waited). With
        `until_answered`, the slot is counted from the block's end, when the answer is back."""
        if not self.until_answered:
            yield self._take(hold=False)
            return
        waited = self._take(hold=True)
        try:
            yield waited
        finally:
            with self._lock:
                self._in_flight -= 1
                self._stamps.append(self._clock())
                self._answered.notify_all()

    def _take(self, *, hold: bool) -> float:
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= self.period:
                    self._stamps.popleft()
                if len(self._stamps) + self._in_flight < self.calls:
                    if hold:
                        self._in_flight += 1
                    else:
                        self._stamps.append(now)
                    return waited
                if not self._stamps:
                    # Every slot is a call still out: the first answer starts a slot's period.
                    began = time.monotonic()
                    self._answered.wait()
                    waited += time.monotonic() - began
                    continue
                pause = self.period - (now - self._stamps[0])
            self._sleep(pause)
            waited += pause

    def hold_off(self, seconds: float) -> None:
        """The vendor said wait (Retry-After): no caller goes before then, and the window's
        earlier calls still count (the wait may only ever delay calls, never let more through)."""
        with self._lock:
            until = self._clock() + seconds
            # Every slot is taken until `until` at least; a slot already busy longer keeps its time.
            # Calls still out keep theirs too: they are counted again from their answers.
            floor = until - self.period
            kept = sorted(max(stamp, floor) for stamp in self._stamps)
            fill = [floor] * (self.calls - len(kept))
            self._stamps = deque(sorted(fill + kept)[-self.calls:])


class Limiter(Protocol):
    """What a connector needs of a limiter, in-process or shared."""

    calls: int
    period: float

    def acquire(self) -> float: ...

    def call(self) -> AbstractContextManager[float]: ...

    def hold_off(self, seconds: float) -> None: ...


RATE_LIMIT_URL_ENV = "DSR_RATE_LIMIT_URL"

#: Of a window, added to every vendor period: the vendor counts a call when it arrives, the limiter
#: when it leaves, and jitter must not turn an exactly paced call into the vendor's (n+1)th. 2% was
#: not enough on a loaded 2-core machine (the two-worker test saw 1-5 calls of ~300 arrive early);
#: 5% keeps the use of a limit at 0.95.
LATENCY_MARGIN = 0.05

_registry_lock = threading.Lock()
_limiters: dict[tuple[str, str, int, float, bool], Limiter] = {}
_stores: dict[str, Any] = {}


def budget_key(vendor: str, *account: str | None) -> str:
    """A vendor account's budget name: the vendor, then a hash of what identifies the account (its
    host, client id, token...), so no credential is ever written where the budget is kept."""
    digest = hashlib.sha256("\x1f".join(part or "" for part in account).encode()).hexdigest()[:20]
    return f"{vendor}:{digest}"


def limiter_for(budget: str, calls: int, period: float, *, until_answered: bool = False) -> Limiter:
    """The limiter of one vendor budget (see `budget_key`): the same object for every connector of
    this process that calls that account, so concurrent requests share the vendor's limit instead of
    each taking all of it.

    When the environment variable DSR_RATE_LIMIT_URL names a database (the production PostgreSQL,
    or a SQLite file on one machine), the budget is shared by every process and machine using that
    database: the workers of a pool together stay within the vendor's limit. `until_answered`: see
    `RateLimiter` (and `SharedRateLimiter`, which holds such slots across workers).
    """
    url = os.environ.get(RATE_LIMIT_URL_ENV, "").strip()
    key = (url, budget, calls, period, until_answered)
    with _registry_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            if url:
                from connectors.shared_pacing import SharedRateLimiter, SlotStore

                store = _stores.get(url)
                if store is None:
                    store = _stores[url] = SlotStore(url)
                # The limit is part of the name: a config change starts a fresh schedule.
                limiter = SharedRateLimiter(store, f"{budget}:{calls}/{period:g}s", calls, period,
                                            until_answered=until_answered)
            else:
                limiter = RateLimiter(calls, period, until_answered=until_answered)
            _limiters[key] = limiter
    return limiter


_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def slots_for(budget: str, size: int) -> threading.BoundedSemaphore:
    """The calls-in-flight cap of one vendor account in this process (NetSuite counts concurrent
    calls per account): shared by every connector of the process, like `limiter_for`."""
    with _registry_lock:
        slots = _slots.get((budget, size))
        if slots is None:
            slots = _slots[(budget, size)] = threading.BoundedSemaphore(size)
    return slots


_caches: list[Callable[[], None]] = []


def register_cache(clear: Callable[[], None]) -> None:
    """A connector's per-process cache of a vendor account (e.g. a login session), cleared with the limiters."""
    with _registry_lock:
        _caches.append(clear)


def forget_limiters() -> None:
    """Drop every limiter and vendor cache of this process (tests; a worker whose configuration changed)."""
    for clear in list(_caches):
        clear()
    with _registry_lock:
        _limiters.clear()
        _slots.clear()
        for store in _stores.values():
            store.close()
        _stores.clear()


class Pause:
    """Holds every caller until a moment; never shortens a pause already set.

    For a vendor's "wait N seconds" that is shorter than the limiter's window (the limiter's
    `hold_off` covers a whole window); shared by the threads of one connector.
    """

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self) -> float:
        """Sleep until the pause ends; return how long that was."""
        with self._lock:
            pause = self._until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
            return pause
        return 0.0


def parse_retry_after(value: str | None, *, default: float | None = None, cap: float = 120.0) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return default
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return min(max(moment.timestamp() - time.time(), 0.0), cap)


def vendor_retry(
    *,
    retryable: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
    attempts: int = 5,
    max_wait: float = 60.0,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A tenacity decorator: retry `retryable` failures, waiting what the vendor asked if it did.

    Args:
        retryable: which exceptions are worth another attempt (throttling, 5xx, resets, timeouts).
        retry_after: the wait the vendor asked for, read from the exception, if any.
        attempts: total attempts, the first included.
        max_wait: cap on any single wait.
        on_retry: called with the exception and the wait before each retry (metrics, limiter hold-off).
    """
    backoff = wait_exponential_jitter(multiplier=0.5, max=max_wait, jitter=0.5)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after(exc) if exc is not None else None
        return min(asked, max_wait) if asked is not None else backoff(state)

    def before_sleep(state: RetryCallState) -> None:
        # Only called when another attempt will really follow (not after the last one).
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and exc is not None and state.next_action is not None:
            on_retry(exc, state.next_action.sleep)

    decorator: Any = retry(
        retry=retry_if_exception(retryable),
        wait=wait,
        stop=stop_after_attempt(attempts),
        before_sleep=before_sleep,
        reraise=True,
    )
    return decorator  # type: ignore[no-any-return]
