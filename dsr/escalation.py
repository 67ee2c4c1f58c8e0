"""Which deadline alerts a request is due for right now: pure decisions, no I/O.

The sweep (dsr/sweep.py) asks this module, for each open request, what to raise given the
clock and the alerts already raised. Every alert has a key that is unique for what it warns
about (threshold and due date, or the day for an overdue request), so a sweep that runs every
hour raises each alert once; an extension moves the due date and with it the keys.

Days are counted on the local calendar of the regime's office (the same zone the deadline is
counted in), so "2 days before" begins at local midnight, not at UTC midnight.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class AlertLevel(StrEnum):
    WARNING = "warning"
    ESCALATION = "escalation"


class AlertKind(StrEnum):
    DEADLINE = "deadline"
    ACKNOWLEDGEMENT = "acknowledgement"  # CCPA: 10 business days
    EXTENSION_WINDOW = "extension_window"  # an extension must be notified within the first period
    MANUAL_TASK = "manual_task"  # a person's step in a system without an API


@dataclass(frozen=True, slots=True)
class Alert:
    key: str
    level: AlertLevel
    kind: AlertKind
    due: date
    days_left: int
    summary: str


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When to warn: days before a due date (the tightest one that applies fires, once)."""

    warn_days_before: tuple[int, ...] = (7, 2)
    acknowledgement_warn_days_before: tuple[int, ...] = (2,)
    extension_warn_days_before: int = 7


def _clock_alerts(kind: AlertKind, label: str, due: date, today: date, warn_days: Sequence[int],
                  sent: Collection[str], scope: str | None = None) -> list[Alert]:
    """Alerts for one clock; `scope` tells apart several clocks of one kind (a task per system)."""
    days_left = (due - today).days
    kind_key = f"{kind.value}[{scope}]" if scope else kind.value
    if days_left < 0:
        key = f"{kind_key}:overdue:{due.isoformat()}:{today.isoformat()}"
        summary = f"{label} was due {due.isoformat()}: {-days_left} day(s) overdue"
        return [] if key in sent else [Alert(key, AlertLevel.ESCALATION, kind, due, days_left, summary)]
    if days_left == 0:
        key = f"{kind_key}:due-today:{due.isoformat()}"
        summary = f"{label} is due today ({due.isoformat()})"
        return [] if key in sent else [Alert(key, AlertLevel.ESCALATION, kind, due, 0, summary)]
    applicable = [t for t in warn_days if days_left <= t]
    if not applicable:
        return []
    threshold = min(applicable)  # only the tightest: a late first sweep does not send 7d and 2d at once
    key = f"{kind_key}:warn-{threshold}d:{due.isoformat()}"
    summary = f"{label} is due {due.isoformat()}: {days_left} day(s) left"
    return [] if key in sent else [Alert(key, AlertLevel.WARNING, kind, due, days_left, summary)]


def _extension_note(today: date, available: bool, notice_by: date | None, extended: bool) -> str:
    if notice_by is None or extended:
        return ""
    if available and today <= notice_by:
        return f"; an extension is still possible: notify the subject by {notice_by.isoformat()}"
    if today > notice_by:
        return f"; the extension window closed on {notice_by.isoformat()}"
    return ""


def due_alerts(
    *,
    today: date,
    due: date,
    paused: bool,
    acknowledge_by: date | None,
    acknowledged: bool,
    extension_available: bool,
    extension_notice_by: date | None,
    extended: bool,
    sent: Collection[str],
    thresholds: Thresholds = Thresholds(),
    tasks: Sequence[tuple[str, date]] = (),
) -> list[Alert]:
    """The alerts to raise now for one open request (none that were already raised).

    Whether an extension is still possible is said in the deadline alerts themselves when the
    window closes on the due date (every regime today: the notice is due within the first
    period); a separate extension-window alert is raised only when the two dates differ.
    """
    alerts: list[Alert] = []
    note = _extension_note(today, extension_available, extension_notice_by, extended)
    if not paused:  # a paused clock does not run towards its deadline
        alerts += [
            Alert(a.key, a.level, a.kind, a.due, a.days_left, a.summary + note)
            for a in _clock_alerts(AlertKind.DEADLINE, "response", due, today, thresholds.warn_days_before, sent)
        ]
    for system, task_due in tasks:  # open manual tasks are chased like the request itself
        alerts += _clock_alerts(AlertKind.MANUAL_TASK, f"manual task in {system}", task_due, today,
                                thresholds.warn_days_before, sent, scope=system)
    if acknowledge_by is not None and not acknowledged:
        alerts += _clock_alerts(AlertKind.ACKNOWLEDGEMENT, "acknowledgement", acknowledge_by, today,
                                thresholds.acknowledgement_warn_days_before, sent)
    if extension_notice_by is not None and extension_notice_by != due and not extended and not paused:
        days = (extension_notice_by - today).days
        if extension_available and 0 <= days <= thresholds.extension_warn_days_before:
            key = f"extension_window:closing:{extension_notice_by.isoformat()}"
            if key not in sent:
                alerts.append(Alert(key, AlertLevel.WARNING, AlertKind.EXTENSION_WINDOW, extension_notice_by, days,
                                    f"an extension is still possible: notify the subject by "
                                    f"{extension_notice_by.isoformat()} ({days} day(s) left)"))
        elif days < 0:
            key = f"extension_window:closed:{extension_notice_by.isoformat()}"
            if key not in sent:
                alerts.append(Alert(key, AlertLevel.WARNING, AlertKind.EXTENSION_WINDOW, extension_notice_by, days,
                                    f"the extension window closed on {extension_notice_by.isoformat()}: "
                                    "no extension is possible any more"))
    return alerts
