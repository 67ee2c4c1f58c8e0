"""The deadline sweep: no open request ever silently passes its legal deadline.

For every open request: recompute the deadline from its clock events, ask `dsr.escalation`
which alerts are due, record each alert in the ledger (once per key, guarded inside the append
so two sweeps at once cannot both raise it), then deliver it and record what each channel did.
An alert that no channel delivered is retried by the next sweep. The ledger, not Prefect and
not the mail server, is the record that an escalation happened: it lands in the evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from dsr.adapters.mail import Channel, Notice, deliver
from dsr.deadlines import DeadlineError, Regime
from dsr.escalation import Alert, AlertKind, AlertLevel, due_alerts
from dsr.ledger.events import LedgerEvent
from dsr.models import OPEN_STATUSES, Status
from dsr.service import DsrService
from dsr.state import EventType, RequestState, SystemStatus, derive_state

log = logging.getLogger(__name__)

SWEEPER = "deadline-sweep"
MAX_DELIVERY_ATTEMPTS = 24  # one a sweep: a day of hourly retries, then it stays recorded as undelivered


class _AlreadyRaised(Exception):
    pass


@dataclass
class SweepReport:
    checked: int = 0
    raised: list[tuple[str, str, str]] = field(default_factory=list)  # (request id, level, summary)
    delivered: int = 0
    undelivered: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (request id, why)


def what_is_open(state: RequestState) -> list[str]:
    """What still stands between the request and its answer, in words for the owner."""
    items: list[str] = []
    if not state.verified:
        items.append("identity verification")
    if state.status == Status.AWAITING_MANUAL_ACTION and state.outcome_reason:
        items.append(state.outcome_reason)
    for name, system in sorted(state.systems.items()):
        if system.task and not system.task.get("done"):
            items.append(f"{name} (manual task for {system.task.get('assignee')}, due {system.task.get('due')})")
        elif system.status != SystemStatus.COMPLETED:
            items.append(f"{name} ({system.status.value}{': ' + system.error if system.error else ''})")
    if state.status == Status.VERIFIED and not state.systems:
        items.append("the run (`dsr run`) has not started")
    return items or ["the response to the subject"]


def _notice(service: DsrService, state: RequestState, alert: Alert, owners: Sequence[str]) -> Notice:
    open_items = what_is_open(state)
    tag = "DSR ESCALATION" if alert.level == "escalation" else "DSR warning"
    subject = f"[{tag}] request {state.request_id}: {alert.summary}"
    body = "\n".join([
        f"Request {state.request_id} ({state.type}, {state.regime}) received {state.received_at[:10]}.",
        f"{alert.summary[0].upper()}{alert.summary[1:]}.",
        f"Still open: {'; '.join(open_items)}.",
        f"Owner: {', '.join(owners)}.",
        f"See: dsr status {state.request_id}",
    ])
    fields = {"request_id": state.request_id, "type": state.type, "regime": state.regime, "status": state.status.value,
              "level": alert.level.value, "kind": alert.kind.value, "due": alert.due.isoformat(),
              "days_left": alert.days_left, "open": open_items, "owners": list(owners), "key": alert.key}
    return Notice(subject, body, fields)


def _owners(service: DsrService, state: RequestState) -> list[str]:
    owners = [service.policy.escalation.owner]
    systems = service.data_map.systems if state.systems else {}
    for name, system in sorted(state.systems.items()):
        if system.status != SystemStatus.COMPLETED and name in systems:
            config = systems[name]
            for who in (config.owner, config.assignee if system.task else None):
                if who and who not in owners:
                    owners.append(who)
    return owners


def sweep(service: DsrService, channels: Sequence[Channel], *, now: datetime | None = None) -> SweepReport:
    """One pass over every open request; safe to run as often as wanted."""
    now = now or datetime.now(UTC)
    report = SweepReport()
    rules = service.policy.deadlines.rules()
    thresholds = service.policy.escalation.thresholds()
    open_statuses = sorted(s.value for s in OPEN_STATUSES)
    for row in service.ledger.index(statuses=open_statuses):
        report.checked += 1
        state = service.state(row.request_id)
        today = now.astimezone(ZoneInfo(rules.time_zones[Regime(state.regime)])).date()
        try:
            deadline = service.deadline(state, as_of=today)
        except DeadlineError as exc:
            report.skipped.append((state.request_id, f"deadline cannot be computed: {exc}"))
            log.error("request %s: deadline cannot be computed: %s", state.request_id, exc)
            continue
        alerts = due_alerts(
            today=today, due=deadline.due, paused=deadline.paused,
            acknowledge_by=deadline.acknowledge_by, acknowledged=state.acknowledged_at is not None,
            extension_available=deadline.extension_available, extension_notice_by=deadline.extension_notice_by,
            extended=deadline.extended, sent=set(state.alerts), thresholds=thresholds,
            tasks=[(name, date.fromisoformat(system.task["due"])) for name, system in sorted(state.systems.items())
                   if system.task and not system.task.get("done") and system.task.get("due")],
        )
        owners = _owners(service, state)
        for alert in alerts:
            if _raise(service, state.request_id, alert, owners, now):
                report.raised.append((state.request_id, alert.level.value, alert.summary))
        # Deliver what is recorded but not yet delivered (this sweep's alerts and earlier failures).
        state = service.state(row.request_id)
        for key, recorded in state.alerts.items():
            if recorded["delivered"] or recorded["deliveries"] >= MAX_DELIVERY_ATTEMPTS:
                continue
            alert = Alert(key, AlertLevel(recorded["level"]), AlertKind(recorded["kind"]),
                          date.fromisoformat(recorded["due"]), recorded["days_left"], recorded["summary"])
            results = deliver(channels, _notice(service, state, alert, recorded.get("owners", owners)))
            delivered = not channels or any(r == "sent" for r in results.values())
            service.ledger.append(state.request_id, EventType.DEADLINE_NOTIFIED,
                                  {"key": key, "channels": results, "delivered": delivered}, actor=SWEEPER, at=now)
            if delivered:
                report.delivered += 1
            else:
                report.undelivered += 1
    return report


def _raise(service: DsrService, request_id: str, alert: Alert, owners: Sequence[str], now: datetime) -> bool:
    def guard(chain: Sequence[LedgerEvent]) -> None:
        if alert.key in derive_state(chain).alerts:
            raise _AlreadyRaised()

    try:
        service.ledger.append(request_id, EventType.DEADLINE_ALERT, {
            "key": alert.key, "level": alert.level.value, "kind": alert.kind.value, "due": alert.due.isoformat(),
            "days_left": alert.days_left, "summary": alert.summary, "owners": list(owners),
        }, actor=SWEEPER, at=now, guard=guard)
    except _AlreadyRaised:
        return False
    log.warning("request %s: %s %s", request_id, alert.level.value, alert.summary)
    return True
