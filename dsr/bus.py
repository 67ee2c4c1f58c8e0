"""The application's event bus: how the outside learns that a request changed.

The service publishes `(topic, request_id)` after a change is recorded in the ledger; whoever
follows requests subscribes: the OpenDSR status callbacks (dsr.adapters.webhooks), the bridge to
Prefect events (flows.events), `dsr serve`'s warm worker (flows.serve). The domain names no
subscriber, so it imports none of them.

A subscriber's failure is logged (topic and request id only) and never reaches the publisher: the
change is already in the ledger and must not be undone or blocked by a receiver that is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

#: `handler(topic, request_id)`; topics are ledger event types (`request.verified`...) or the ones below.
Handler = Callable[[str, str], None]

#: Published when a request's status may have changed in a way no other topic names (a run's step or end).
STATUS_CHANGED: Final = "request.status_changed"


class EventBus:
    """Subscribers called in order of subscription, synchronously, in the publisher's thread."""

    def __init__(self) -> None:
        self._handlers: list[tuple[str | None, Handler]] = []
        self._lock = threading.Lock()

    def subscribe(self, handler: Handler, *, key: str | None = None) -> Callable[[], None]:
        """Call `handler` on every publish from now on; returns the call that unsubscribes it.

        With a `key`, a second subscription under the same key is ignored: a bridge installed
        twice (a serve restarted in one process) still hears each change once.
        """
        with self._lock:
            if key is None or all(existing != key for existing, _ in self._handlers):
                self._handlers.append((key, handler))
        return lambda: self.unsubscribe(handler)

    def unsubscribe(self, handler: Handler) -> None:
        with self._lock:
            self._handlers = [(k, h) for k, h in self._handlers if h is not handler]

    def subscribed(self, key: str) -> bool:
        """Whether a subscription under `key` is in place."""
        with self._lock:
            return any(existing == key for existing, _ in self._handlers)

    def publish(self, topic: str, request_id: str) -> None:
        """Tell every subscriber; never raises."""
        with self._lock:
            handlers = [handler for _, handler in self._handlers]
        for handler in handlers:
            try:
                handler(topic, request_id)
            except Exception as exc:  # noqa: BLE001 - the change is recorded; a subscriber must not undo it
                # The type only: an exception's message may quote what it was sending (an address).
                log.warning("subscriber failed after %s on request %s (%s)", topic, request_id, type(exc).__name__)
