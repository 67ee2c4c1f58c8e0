"""Aggregates across requests for auditors (legal-rules.md section 4 item 11).

Counts by type and by outcome, the share answered on time, and the median days to close. Pure
functions over ledger events: the same events and the same `today` always give the same numbers.

Definitions (shown to auditors on the page as well):

- **Outcome** is the request's current status (`dsr.models.Status`).
- **Closed** means answered for good: `completed` or `rejected`. `cancelled` requests (withdrawn, or
  stopped by the privacy office) are counted among the outcomes but owe no answer, so they are left
  out of the on-time share and of the median. `partially_completed` is still open: a later run
  finishes it and records `request.completed` then.
- **Closed at** is the time of the ledger event that closed the request (`request.completed` or
  `request.rejected`).
- **On time** means the closing event's date, in UTC, is on or before `deadline.due` as it stood
  when the request closed (so a lawful extension counts). A closed request without a due date is
  neither on time nor late and is left out of the share.
- **Days to close** is the elapsed time from `received_at` to the closing event, in days (fractional;
  the median is of those values).
- **Overdue** (open requests only): today, in UTC, is after `deadline.due`.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from dsr.ledger.events import LedgerEvent, parse_timestamp
from dsr.models import Status
from dsr.state import EventType, derive_state

#: Statuses that answer a request for good; see the module docstring.
ANSWERED = frozenset({Status.COMPLETED.value, Status.REJECTED.value})
_CLOSING_EVENT = {Status.COMPLETED.value: EventType.COMPLETED.value,
                  Status.REJECTED.value: EventType.REJECTED.value}
_FINISHED = frozenset({Status.COMPLETED.value, Status.REJECTED.value, Status.CANCELLED.value})


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the aggregates need of one request; no personal data (the subject is not in here)."""

    request_id: str
    type: str
    regime: str
    status: str
    received_at: datetime
    due: date | None
    closed_at: datetime | None = None  # set only for ANSWERED requests

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def on_time(self) -> bool | None:
        """True/False for a closed request with a due date, None otherwise."""
        if self.closed_at is None or self.due is None:
            return None
        return self.closed_at.date() <= self.due

    @property
    def days_to_close(self) -> float | None:
        if self.closed_at is None:
            return None
        return (self.closed_at - self.received_at).total_seconds() / 86400

    def overdue(self, today: date) -> bool:
        """An open (not finished) request whose due date has passed."""
        return self.status not in _FINISHED and self.due is not None and today > self.due


def request_facts(events: Sequence[LedgerEvent]) -> RequestFacts:
    """The facts of one request from its events, oldest first."""
    state = derive_state(events)
    closed_at: datetime | None = None
    closing = _CLOSING_EVENT.get(state.status.value)
    if closing is not None:
        for event in events:  # the latest closing event wins (there is normally exactly one)
            if event.type == closing:
                closed_at = parse_timestamp(event.at)
    return RequestFacts(
        request_id=state.request_id,
        type=state.type,
        regime=state.regime,
        status=state.status.value,
        received_at=_aware(state.received_at),
        due=date.fromisoformat(state.due) if state.due else None,
        closed_at=closed_at,
    )


def _aware(stamp: str) -> datetime:
    try:
        return parse_timestamp(stamp)
    except ValueError:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Metrics:
    """Aggregates over a set of requests."""

    total: int
    by_type: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)
    closed: int = 0  # answered: completed or rejected
    with_due: int = 0  # closed requests that had a due date (the on-time share's base)
    on_time: int = 0
    late: int = 0
    open_overdue: int = 0
    median_days_to_close: float | None = None

    @property
    def on_time_percent(self) -> float | None:
        """Share of closed requests (with a due date) answered on or before it; None when none."""
        return None if not self.with_due else 100.0 * self.on_time / self.with_due


def aggregate(requests: Iterable[RequestFacts], *, today: date) -> Metrics:
    """Counts by type and outcome, on-time share and median days to close (see the module docstring).

    Args:
        requests: The requests to count (already filtered as the caller wants).
        today: The date (UTC) against which open requests are judged overdue.
    """
    rows = list(requests)
    closed = [r for r in rows if r.closed]
    judged = [r for r in closed if r.on_time is not None]
    on_time = sum(1 for r in judged if r.on_time)
    days = [d for r in closed if (d := r.days_to_close) is not None]
    return Metrics(
        total=len(rows),
        by_type=dict(sorted(Counter(r.type for r in rows).items())),
        by_outcome=dict(sorted(Counter(r.status for r in rows).items())),
        closed=len(closed),
        with_due=len(judged),
        on_time=on_time,
        late=len(judged) - on_time,
        open_overdue=sum(1 for r in rows if r.overdue(today)),
        median_days_to_close=statistics.median(days) if days else None,
    )
