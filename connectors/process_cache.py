"""Answers a process's connectors share for a while: an org's describes, an account's property
lists, a database's reflected schema. A connector is built per request and step; what rarely
changes is fetched once per process and kept `ttl` seconds, and cleared with the limiters
(`connectors.pacing.forget_limiters`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from connectors.pacing import register_cache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessCache(Generic[K, V]):
    """Values by key, each kept `ttl` seconds from when it was put; thread-safe."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        register_cache(self.clear)

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value): a value may itself be None (an org without the object)."""
        with self._lock:
            entry = self._values.get(key)
        if entry is None or entry[0] < self.clock():
            return False, None
        return True, entry[1]

    def get(self, key: K) -> V | None:
        return self.lookup(key)[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = (self.clock() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
