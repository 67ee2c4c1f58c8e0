"""The shared limiter and retry policy, on a fake clock (no timing in tests)."""

from __future__ import annotations

import pytest

from connectors.pacing import RateLimiter, parse_retry_after, vendor_retry


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


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
