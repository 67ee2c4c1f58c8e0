"""The limiters and the retry policy, on a fake clock where timing matters. The tests of slots held
until answered let a vendor's window judge real threads instead: their outcome holds whatever the
timing, since no late arrival may ever be refused."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import pytest

from connectors.pacing import Limiter, RateLimiter, parse_retry_after, vendor_retry
from sandbox.kit import WindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def late_calls(vendor: WindowLimiter, limiters: Sequence[Limiter], *, calls_each: int,
               seed: int) -> tuple[list[float], int]:
    """One thread per limiter, each making `calls_each` calls through it that reach `vendor` up to
    40 ms after leaving and answer up to 40 ms later (a loaded machine); what the vendor refused
    (its waits) and how many calls were made."""
    rng = random.Random(seed)
    plans = [[(rng.uniform(0, 0.04), rng.uniform(0, 0.04)) for _ in range(calls_each)] for _ in limiters]
    refused: list[float] = []
    made: list[int] = []

    def caller(limiter: Limiter, plan: list[tuple[float, float]]) -> None:
        for arrive, answer in plan:
            with limiter.call():
                time.sleep(arrive)
                allowed, wait, _ = vendor.acquire()
                if not allowed:
                    refused.append(wait)
                made.append(1)
                time.sleep(answer)

    threads = [threading.Thread(target=caller, args=pair) for pair in zip(limiters, plans, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return refused, len(made)


def test_limiter_lets_a_window_through_then_waits_for_the_oldest_slot() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire() == pytest.approx(10.0)
    assert clock.now == pytest.approx(10.0)


def test_limiter_hold_off_makes_the_next_caller_wait_what_the_vendor_asked() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, 1.0, clock=clock, sleep=clock.sleep)
    limiter.hold_off(7.0)
    assert limiter.acquire() == pytest.approx(7.0)


def test_an_answered_call_counts_from_its_answer_not_from_when_it_left() -> None:
    """A call that took 5 s to answer still fills its slot for a whole period after the answer:
    the vendor may have counted it at any moment of those 5 s."""
    clock = FakeClock()
    limiter = RateLimiter(2, 1.0, until_answered=True, clock=clock, sleep=clock.sleep)
    with limiter.call() as waited:
        clock.now += 5.0  # the answer comes back 5 s after the call left
    assert waited == 0.0
    with limiter.call() as waited:
        pass
    assert waited == 0.0
    with limiter.call() as waited:  # both slots taken until 6.0, a period after the answers
        pass
    assert waited == pytest.approx(1.0) and clock.now == pytest.approx(6.0)


def test_calls_held_until_answered_never_overrun_the_vendors_window_however_late_they_arrive() -> None:
    """Threads whose calls reach the vendor anywhere up to 40 ms after leaving (a loaded machine)
    and answer up to 40 ms later: the vendor's own sliding window of 3 per 0.2 s never refuses one."""
    limiter = RateLimiter(3, 0.2, until_answered=True)
    refused, made = late_calls(WindowLimiter(3, 0.2), [limiter] * 4, calls_each=8, seed=7)
    assert refused == [] and made == 32


@pytest.mark.parametrize("header, seconds", [("3", 3.0), ("0.5", 0.5), ("999", 120.0), ("soon", None), (None, None)])
def test_retry_after_parsing(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_waits_what_the_vendor_asked_and_gives_up_after_the_budget() -> None:
    waits: list[float] = []
    calls = {"n": 0}

    class Throttled(Exception):
        pass

    @vendor_retry(retryable=lambda e: isinstance(e, Throttled), retry_after=lambda e: 0.0, attempts=3,
                  on_retry=lambda e, s: waits.append(s))
    def always_throttled() -> None:
        calls["n"] += 1
        raise Throttled()

    with pytest.raises(Throttled):
        always_throttled()
    assert calls["n"] == 3 and waits == [0.0, 0.0]


def test_non_retryable_errors_are_raised_at_once() -> None:
    calls = {"n": 0}

    @vendor_retry(retryable=lambda e: False)
    def broken() -> None:
        calls["n"] += 1
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        broken()
    assert calls["n"] == 1


def test_hold_off_never_lets_more_calls_into_a_window() -> None:
    """100 calls in the first second, then a 1 s Retry-After: the next call still waits for the window."""
    clock = FakeClock()
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.acquire()
    clock.now = 1.0
    limiter.hold_off(1.0)
    limiter.acquire()
    assert clock.now >= 10.0


# --- one budget per vendor account: in-process registry and the cross-process slot store ------------

import multiprocessing  # noqa: E402

from connectors.pacing import budget_key, forget_limiters, limiter_for  # noqa: E402
from connectors.shared_pacing import SharedRateLimiter, SlotStore  # noqa: E402


def test_connectors_of_one_vendor_account_share_one_limiter_and_other_accounts_do_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSR_RATE_LIMIT_URL", raising=False)
    forget_limiters()
    acme = budget_key("hubspot", "https://api.hubapi.com", "token-a")
    other = budget_key("hubspot", "https://api.hubapi.com", "token-b")
    assert limiter_for(acme, 100, 10.0) is limiter_for(acme, 100, 10.0)
    assert limiter_for(acme, 100, 10.0) is not limiter_for(other, 100, 10.0)
    assert "token-a" not in acme  # the budget's name never carries a credential


def test_two_hubspot_connectors_in_one_process_pace_against_one_budget(sandboxes, monkeypatch) -> None:
    """Two requests running at once must not each get the vendor's whole limit."""
    monkeypatch.delenv("DSR_RATE_LIMIT_URL", raising=False)
    from connectors.hubspot import create

    settings = {"token_env": "DSR_HUBSPOT_TOKEN", "base_url_env": "DSR_HUBSPOT_URL",
                "rate_limit": {"calls": 3, "period_seconds": 60}, "search_rate_limit": {"calls": 3, "period_seconds": 60}}
    first, second = create("hubspot", settings), create("hubspot", settings)
    assert first._limiter is second._limiter and first._search_limiter is second._search_limiter


def _reserve_many(url: str, budget: str, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = SharedRateLimiter(SlotStore(url), budget, calls=1, period=1.0, sleep=lambda _s: None)
    starts = []
    for _ in range(count):
        now = time.time()
        starts.append(now + limiter.acquire())
    out.put(starts)


def test_a_shared_budget_spaces_the_slots_of_two_processes_one_interval_apart(ledger_url: str) -> None:
    """Two workers, each taking 8 slots of a 1-call-per-second budget as fast as they can, get 16
    distinct slots a second apart: together they never exceed the vendor's limit."""
    SlotStore(ledger_url).close()  # create the table once, as a first worker would
    budget = budget_key("salesforce", "acme.my.salesforce.com")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_reserve_many, args=(ledger_url, budget, 8, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    starts = sorted(out.get(timeout=60) + out.get(timeout=60))
    for worker in workers:
        worker.join(timeout=30)
    assert len(starts) == 16
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) > 0.9, gaps  # never two calls in one interval (clock reads differ by ms)
    assert starts[-1] - starts[0] < 15 + 5  # and no slot is wasted: 16 slots take ~15 intervals


def test_a_vendor_wait_holds_every_worker_of_the_budget(ledger_url: str) -> None:
    store = SlotStore(ledger_url)
    waits: list[float] = []
    limiter = SharedRateLimiter(store, "hubspot:x", calls=10, period=1.0, sleep=waits.append)
    assert limiter.acquire() == 0.0
    SharedRateLimiter(store, "hubspot:x", calls=10, period=1.0).hold_off(30.0)  # another worker was told to wait
    assert limiter.acquire() == pytest.approx(30.0, abs=2.0)
    store.close()


def test_two_workers_holding_search_slots_until_answered_never_overrun_the_vendor(ledger_url: str) -> None:
    """Two workers (each its own store) share a budget whose calls hold their slot until answered;
    their calls reach the vendor up to 40 ms late and answer up to 40 ms later: the vendor's sliding
    window of 3 per 0.3 s refuses none, and every call is made."""
    stores = [SlotStore(ledger_url), SlotStore(ledger_url)]
    budget = budget_key("hubspot-search", "acme")
    workers = [SharedRateLimiter(store, budget, calls=3, period=0.3, until_answered=True) for store in stores]
    refused, made = late_calls(WindowLimiter(3, 0.3), workers * 2, calls_each=6, seed=11)
    for store in stores:
        store.close()
    assert refused == [] and made == 24


def test_a_vendor_wait_holds_every_worker_of_a_held_budget(ledger_url: str) -> None:
    store = SlotStore(ledger_url)
    limiter = SharedRateLimiter(store, "hubspot-search:x", calls=4, period=1.0, until_answered=True)
    SharedRateLimiter(store, "hubspot-search:x", calls=4, period=1.0, until_answered=True).hold_off(0.5)
    with limiter.call() as waited:
        pass
    store.close()
    assert 0.4 <= waited < 2.0


def test_shared_limits_refuse_a_database_they_cannot_use() -> None:
    with pytest.raises(ValueError, match="DSR_RATE_LIMIT_URL"):
        SlotStore("mysql+pymysql://nobody@127.0.0.1/none")
