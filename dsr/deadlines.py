"""Legal response deadlines for data-subject requests, recomputable from the request's clock events.

Pure functions, no I/O: give a regime and the clock events recorded in the ledger, get back a
`Deadline` that says when the response is due and *why* (``steps``), with the rule id and the
holiday-calendar version so that the evidence bundle can show how the date was derived.

The rules follow ``legal-rules.md`` section 1:

- ``gdpr``: one calendar month (Art. 12(3)) counted under Regulation 1182/71: the corresponding
  date of the next month, clamped to the month end; a Saturday, Sunday or public holiday of the
  member state rolls to the next working day. ID/clarification pauses are regulator practice,
  so they are switches in `DeadlineRules`.
- ``uk-gdpr``: the same counting on England & Wales bank holidays; the month starts at the latest
  of receipt, ID received and fee received (Art. 12A); clarification days do not count.
- ``ccpa``: 45 calendar days from receipt regardless of verification, no roll (11 CCR 7021(b)).
- ``lgpd``: 15 days (Art. 19 II); civil-code roll to the next business day is a switch (VERIFY).
- ``pipeda``: 30 days (s.8(3)); Interpretation Act roll past a Sunday or holiday is a switch (VERIFY).
- ``ccpa`` opt-out of sale/sharing: 15 business days from receipt, no extension, no acknowledgement
  (11 CCR 7026(f)); pass ``request_type="opt_out"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from dateutil.relativedelta import relativedelta

__all__ = [
    "DEFAULT_RULES",
    "ClockEvent",
    "ClockEventKind",
    "Deadline",
    "DeadlineError",
    "DeadlineRules",
    "ExtensionNotAllowed",
    "PauseNotAllowed",
    "Regime",
    "check_extension_allowed",
    "check_pause_allowed",
    "compute_deadline",
    "due_date",
    "parse_regime",
]


class Regime(StrEnum):
    """The privacy law a request is handled under (one per request)."""

    GDPR = "gdpr"
    UK_GDPR = "uk-gdpr"
    CCPA = "ccpa"
    LGPD = "lgpd"
    PIPEDA = "pipeda"


class ClockEventKind(StrEnum):
    """Facts that move a deadline; the ledger records them with their timestamp."""

    RECEIVED = "received"
    ID_REQUESTED = "id_requested"
    ID_RECEIVED = "id_received"
    FEE_REQUESTED = "fee_requested"
    FEE_RECEIVED = "fee_received"
    CLARIFICATION_REQUESTED = "clarification_requested"
    CLARIFICATION_RECEIVED = "clarification_received"
    EXTENDED = "extended"
    RESPONSE_SENT = "response_sent"


class DeadlineError(ValueError):
    """Input that cannot give a deadline; the message starts with the field to fix."""


class PauseNotAllowed(DeadlineError):
    """The regime (or the configured rules) does not let this event stop the clock."""


class ExtensionNotAllowed(DeadlineError):
    """No extension exists, it was already used, or it was notified too late."""


@dataclass(frozen=True)
class ClockEvent:
    """One clock event.

    Attributes:
        kind: What happened. A string is accepted and converted (ledger payloads are strings).
        at: When. A timezone-aware datetime is converted to the regime's local date; a naive
            datetime or a plain date is taken as the local date already.
        reason: Why; required for an extension (the subject must be told the reasons) and for the
            pauses that rest on regulator practice rather than statute.
    """

    kind: ClockEventKind
    at: datetime | date
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _parse_kind(self.kind))
        if not isinstance(self.at, date):
            raise DeadlineError(f"at: expected a datetime, got {type(self.at).__name__}")


def _parse_kind(value: ClockEventKind | str) -> ClockEventKind:
    try:
        return ClockEventKind(value)
    except ValueError:
        choices = ", ".join(k.value for k in ClockEventKind)
        raise DeadlineError(f"kind: {value!r} is not one of {choices}") from None


_DEFAULT_ZONES: Mapping[Regime, str] = MappingProxyType(
    {
        # The entity's office: that is where the request lands and where the working days are.
        Regime.GDPR: "Europe/Amsterdam",
        Regime.UK_GDPR: "Europe/London",
        Regime.CCPA: "America/Los_Angeles",
        Regime.LGPD: "America/Sao_Paulo",
        Regime.PIPEDA: "America/Toronto",
    }
)


@dataclass(frozen=True)
class DeadlineRules:
    """The knobs counsel may change; each one matches a point legal-rules.md marks as practice or VERIFY.

    Attributes:
        gdpr_pause_for_id: EU GDPR: days waiting for ID do not count (regulator practice, not statute).
        gdpr_pause_for_clarification: EU GDPR: days waiting for a clarification do not count.
        lgpd_roll_to_business_day: LGPD: a due date on a weekend or national holiday rolls to the
            next business day (civil-code counting; VERIFY).
        pipeda_roll_sunday_and_holiday: PIPEDA: a due date on a Sunday or federal holiday rolls to
            the next day that is neither (Interpretation Act s.26; VERIFY). Saturdays never roll.
        time_zones: Regime -> IANA zone of the entity's office; a timestamp becomes a calendar date
            there, so a request received at 23:30 UTC counts on the local date.
    """

    gdpr_pause_for_id: bool = True
    gdpr_pause_for_clarification: bool = True
    lgpd_roll_to_business_day: bool = True
    pipeda_roll_sunday_and_holiday: bool = True
    # hash=False: a mapping is unhashable, and rules are compared, not used as keys.
    time_zones: Mapping[Regime, str] = field(default_factory=lambda: _DEFAULT_ZONES, hash=False)


DEFAULT_RULES = DeadlineRules()


@dataclass(frozen=True)
class Deadline:
    """A computed deadline and its derivation, ready for the ledger and the evidence bundle.

    Attributes:
        regime: The regime it was computed under.
        country: ISO code of the holiday calendar used (NL by default for gdpr, GB, US, BR, CA).
        clock_start: The local date the period runs from (UK: moved by ID/fee received).
        base_due: The due date without extension (pauses included).
        due: The due date in force (extension applied if any).
        extended: Whether an extension was notified.
        extension_reason: The reason given with the extension notice.
        extension_available: The regime has an extension and it is not used yet.
        extension_notice_by: Last day to notify an extension (end of the first period), or None
            where the regime has no extension.
        paused: A pause (or, for uk-gdpr, a wait for ID/fee) is open as of the computation date.
        paused_days: Calendar days after ``clock_start`` that were not counted.
        acknowledge_by: CCPA only: 10 business days after receipt; None elsewhere.
        holiday_calendar: ``holidays`` package version and calendar, e.g. "holidays 0.109 NL".
        rule: Short rule id with version, e.g. "gdpr/art12(3)+reg1182/71 v1".
        steps: Human-readable derivation, one step per line.
    """

    regime: Regime
    country: str
    clock_start: date
    base_due: date
    due: date
    extended: bool
    extension_reason: str | None
    extension_available: bool
    extension_notice_by: date | None
    paused: bool
    paused_days: int
    acknowledge_by: date | None
    holiday_calendar: str
    rule: str
    steps: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: dates as ISO strings, the regime as its id, steps as a list."""

        def iso(value: date | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "regime": self.regime.value,
            "country": self.country,
            "clock_start": iso(self.clock_start),
            "base_due": iso(self.base_due),
            "due": iso(self.due),
            "extended": self.extended,
            "extension_reason": self.extension_reason,
            "extension_available": self.extension_available,
            "extension_notice_by": iso(self.extension_notice_by),
            "paused": self.paused,
            "paused_days": self.paused_days,
            "acknowledge_by": iso(self.acknowledge_by),
            "holiday_calendar": self.holiday_calendar,
            "rule": self.rule,
            "steps": list(self.steps),
        }


# --- regime table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    base: relativedelta
    extension: relativedelta | None
    country: str
    rule: str


_SPECS: Mapping[Regime, _Spec] = MappingProxyType(
    {
        # Extensions run from the clock start, not from the first due date: "+2 further months"
        # is start + 3 months (ICO), "maximum total of 90 calendar days" (11 CCR 7021(b)).
        Regime.GDPR: _Spec(
            relativedelta(months=1), relativedelta(months=3), "NL", "gdpr/art12(3)+reg1182/71 v1"
        ),
        Regime.UK_GDPR: _Spec(
            relativedelta(months=1), relativedelta(months=3), "GB", "uk-gdpr/art12+12a+ico v1"
        ),
        Regime.CCPA: _Spec(relativedelta(days=45), relativedelta(days=90), "US", "ccpa/11ccr7021 v1"),
        Regime.LGPD: _Spec(relativedelta(days=15), None, "BR", "lgpd/art19+cc132 v1"),
        Regime.PIPEDA: _Spec(relativedelta(days=30), relativedelta(days=60), "CA", "pipeda/s8+ia26 v1"),
    }
)

# ISO 3166 codes of the 27 EU member states; the EU itself writes Greece as "EL".
_EU_MEMBERS = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
_COUNTRY_ALIASES = {"EL": "GR", "UK": "GB"}

_PAUSE_FAMILIES: Mapping[str, tuple[ClockEventKind, ClockEventKind]] = MappingProxyType(
    {
        "id": (ClockEventKind.ID_REQUESTED, ClockEventKind.ID_RECEIVED),
        "fee": (ClockEventKind.FEE_REQUESTED, ClockEventKind.FEE_RECEIVED),
        "clarification": (ClockEventKind.CLARIFICATION_REQUESTED, ClockEventKind.CLARIFICATION_RECEIVED),
    }
)
_FAMILY_OF = {kind: name for name, pair in _PAUSE_FAMILIES.items() for kind in pair}


def parse_regime(value: str) -> Regime:
    """Turn a regime id (any case, surrounding blanks ignored) into a `Regime`.

    Raises:
        DeadlineError: ``regime: 'xyz' is not one of gdpr, uk-gdpr, ccpa, lgpd, pipeda``.
    """
    if isinstance(value, Regime):
        return value
    try:
        return Regime(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(r.value for r in Regime)
        raise DeadlineError(f"regime: {value!r} is not one of {choices}") from None


# --- calendars ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Calendar:
    country: str
    label: str
    days: holidays.HolidayBase

    @property
    def evidence(self) -> str:
        return f"holidays {holidays.__version__} {self.label}"


@functools.lru_cache(maxsize=64)
def _calendar(regime: Regime, country: str) -> _Calendar:
    # Cached: building a calendar is the only slow part, and the objects grow their years lazily.
    if regime is Regime.UK_GDPR:
        # Bank holidays differ inside the UK; the UK entity counts England & Wales days.
        return _Calendar("GB", "GB-ENG", holidays.country_holidays("GB", subdiv="ENG"))
    if regime is Regime.PIPEDA:
        # The package's "public" category holds only the five nationwide days; "government" adds
        # the federal ones (Victoria Day, Thanksgiving, Remembrance Day, ...).
        categories = (holidays.PUBLIC, holidays.GOVERNMENT)
        return _Calendar("CA", "CA public+government", holidays.country_holidays("CA", categories=categories))
    return _Calendar(country, country, holidays.country_holidays(country))


def _resolve_country(regime: Regime, country: str | None) -> str:
    expected = _SPECS[regime].country
    if country is None:
        return expected
    code = str(country).strip().upper()
    code = _COUNTRY_ALIASES.get(code, code)
    if regime is Regime.GDPR:
        if code not in _EU_MEMBERS:
            hint = " (use regime uk-gdpr for the UK)" if code == "GB" else ""
            raise DeadlineError(f"country: {country!r} is not an EU member state{hint}")
        return code
    if code != expected:
        raise DeadlineError(
            f"country: {country!r} does not apply to {regime.value}, whose calendar is {expected}"
        )
    return code


def accepted_countries(regime: Regime) -> frozenset[str]:
    """The country codes a request under `regime` may name, aliases included (the API's schema says them)."""
    codes = _EU_MEMBERS if regime is Regime.GDPR else frozenset({_SPECS[regime].country})
    return codes | {alias for alias, code in _COUNTRY_ALIASES.items() if code in codes}


def _zone(regime: Regime, rules: DeadlineRules) -> ZoneInfo:
    try:
        name = rules.time_zones[regime]
    except KeyError:
        raise DeadlineError(f"time_zones: no zone configured for {regime.value}") from None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeadlineError(f"time_zones: {name!r} for {regime.value} is not an IANA time zone") from None


def _local_moment(value: date, zone: ZoneInfo) -> datetime:
    """Wall-clock time at the office; naive values and plain dates are local already."""
    if isinstance(value, datetime):
        return value.astimezone(zone).replace(tzinfo=None) if value.tzinfo is not None else value
    return datetime.combine(value, time.min)


def _local_date(value: date, zone: ZoneInfo) -> date:
    return _local_moment(value, zone).date()


# --- counting -----------------------------------------------------------------------------------


def _rest_day_test(regime: Regime, calendar: _Calendar, rules: DeadlineRules) -> Callable[[date], str | None]:
    """Return a function that names why a day cannot be the last day (or None if it can)."""

    def holiday(day: date) -> str | None:
        return calendar.days.get(day)

    def weekend_or_holiday(day: date) -> str | None:
        # The holiday name is more telling than "Sunday" (e.g. "Easter Sunday"), so it wins.
        return holiday(day) or (day.strftime("%A") if day.weekday() >= 5 else None)

    def sunday_or_holiday(day: date) -> str | None:
        # Interpretation Act s.35: Sunday is a "holiday"; Saturday is not, so it never rolls.
        return holiday(day) or ("Sunday" if day.weekday() == 6 else None)

    def never(day: date) -> str | None:
        return None

    if regime in (Regime.GDPR, Regime.UK_GDPR):
        return weekend_or_holiday
    if regime is Regime.LGPD and rules.lgpd_roll_to_business_day:
        return weekend_or_holiday
    if regime is Regime.PIPEDA and rules.pipeda_roll_sunday_and_holiday:
        return sunday_or_holiday
    return never


def _roll(day: date, rest_day: Callable[[date], str | None], steps: list[str]) -> date:
    skipped = []
    while (why := rest_day(day)) is not None:
        skipped.append(f"{day.isoformat()} is {why}")
        day += timedelta(days=1)
    if skipped:
        steps.append(f"{', '.join(skipped)} -> {day.isoformat()}")
    return day


def _describe(period: relativedelta) -> str:
    if period.months:
        return f"+{period.months} month{'s' if period.months != 1 else ''}"
    return f"+{period.days} days"


def _count(
    start: date,
    period: relativedelta,
    pauses: Sequence[tuple[date, date]],
    rest_day: Callable[[date], str | None],
    steps: list[str],
) -> tuple[date, int]:
    """Count ``period`` from ``start``, add the pause days, then roll. Returns (due, days counted)."""
    end = start + period  # relativedelta clamps: 31 Jan + 1 month = 28/29 Feb, as Reg. 1182/71 wants
    clamped = " (clamped to month end)" if period.months and end.day != start.day else ""
    steps.append(f"{_describe(period)} -> {end.isoformat()}{clamped}")
    paused = 0
    for first, last in pauses:
        # A pause opened after the deadline had passed cannot revive it.
        if first > _roll(end + timedelta(days=paused), rest_day, []):
            steps.append(f"pause from {first.isoformat()} ignored: the deadline had already passed")
            continue
        paused += (last - first).days
    if paused:
        end += timedelta(days=paused)
        steps.append(f"+{paused} paused day{'s' if paused != 1 else ''} -> {end.isoformat()}")
    return _roll(end, rest_day, steps), paused


def _merge(intervals: list[tuple[date, date]]) -> list[tuple[date, date]]:
    # ID and clarification may be awaited at the same time; a day is not counted twice.
    merged: list[tuple[date, date]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return [(a, b) for a, b in merged if b > a]


def _add_business_days(start: date, count: int, calendar: _Calendar) -> date:
    # "10 business days after receiving": the day of receipt itself is not one of them.
    day = start
    while count:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in calendar.days:
            count -= 1
    return day


# --- checks -------------------------------------------------------------------------------------


def check_pause_allowed(
    regime: Regime | str, kind: ClockEventKind | str, rules: DeadlineRules = DEFAULT_RULES
) -> None:
    """Say whether an ID, fee or clarification event may stop (or, for uk-gdpr, delay) the clock.

    Call it before telling the subject the clock is paused. Kinds that are not pauses (received,
    extended, response_sent) pass silently.

    Raises:
        PauseNotAllowed: the regime has no such pause, or `rules` switch it off.
        DeadlineError: unknown regime or kind.
    """
    reg = parse_regime(regime)
    family = _FAMILY_OF.get(_parse_kind(kind))
    if family is None:
        return
    if reg is Regime.CCPA:
        raise PauseNotAllowed(
            "ccpa: the clock runs from receipt regardless of verification; it cannot be paused"
        )
    if reg is Regime.LGPD:
        raise PauseNotAllowed("lgpd: the 15-day period of Art. 19 has no pause")
    if reg is Regime.PIPEDA:
        raise PauseNotAllowed("pipeda: the 30-day period of s.8 has no pause; extend it instead (s.8(3))")
    if reg is Regime.GDPR:
        if family == "fee":
            raise PauseNotAllowed("gdpr: a fee does not stop the clock under the EU GDPR")
        if family == "id" and not rules.gdpr_pause_for_id:
            raise PauseNotAllowed("gdpr: pausing for ID is switched off (DeadlineRules.gdpr_pause_for_id)")
        if family == "clarification" and not rules.gdpr_pause_for_clarification:
            raise PauseNotAllowed(
                "gdpr: pausing for clarification is switched off (DeadlineRules.gdpr_pause_for_clarification)"
            )


def check_extension_allowed(deadline: Deadline, on: date) -> None:
    """Say whether an extension notified on ``on`` (a local date) would be valid.

    Raises:
        ExtensionNotAllowed: the regime has none, it was already used, or ``on`` is after
            ``deadline.extension_notice_by``.
    """
    if isinstance(on, datetime):
        on = _local_date(on, _zone(deadline.regime, DEFAULT_RULES))
    if deadline.extension_notice_by is None:
        raise ExtensionNotAllowed(f"{deadline.regime.value}: the law provides no extension of the deadline")
    if deadline.extended:
        raise ExtensionNotAllowed(
            f"{deadline.regime.value}: the deadline was already extended to {deadline.due.isoformat()}; "
            "only one extension is allowed"
        )
    if on > deadline.extension_notice_by:
        raise ExtensionNotAllowed(
            f"{deadline.regime.value}: an extension must be notified by "
            f"{deadline.extension_notice_by.isoformat()} (end of the first period); "
            f"{on.isoformat()} is too late"
        )


# --- the computation ----------------------------------------------------------------------------


def compute_deadline(
    regime: Regime | str,
    events: Sequence[ClockEvent],
    *,
    country: str | None = None,
    rules: DeadlineRules = DEFAULT_RULES,
    as_of: date | None = None,
    request_type: str | None = None,
) -> Deadline:
    """Compute a request's deadline from its clock events.

    Args:
        regime: The request's regime.
        events: Its clock events, in any order; exactly one ``received``.
        country: Holiday calendar: for gdpr an EU member state (default NL); the other regimes
            have one calendar each (GB, US, BR, CA) and accept only that code or None.
        rules: The configurable legal choices.
        as_of: Local date up to which an open pause is counted (default: today at the office).
        request_type: The request's type where a regime times it apart (the CCPA opt-out).

    Returns:
        The deadline with its derivation in ``steps``.

    Raises:
        DeadlineError: missing/duplicate ``received``, an event before receipt, a bad country,
            regime or zone, or a pause that needs a reason and has none.
        PauseNotAllowed: a pause event in a regime that has no pauses (ccpa, lgpd, pipeda; gdpr fee).
            A gdpr pause switched off in `rules` is not an error: its days are simply counted, so a
            ledger recorded under the old setting can still be recomputed.
        ExtensionNotAllowed: an extension that the regime lacks, a second one, one notified after
            ``extension_notice_by``, or one without a reason.
    """
    reg = parse_regime(regime)
    if reg is Regime.CCPA and request_type == OPT_OUT:
        return _ccpa_opt_out(events, country=country, rules=rules)
    spec = _SPECS[reg]
    calendar = _calendar(reg, _resolve_country(reg, country))
    zone = _zone(reg, rules)
    today = _local_date(as_of, zone) if as_of is not None else datetime.now(zone).date()
    rest_day = _rest_day_test(reg, calendar, rules)

    # Stable sort on local wall-clock time: same-day events keep the order they were given in.
    timeline = [e for _, _, e in sorted((_local_moment(e.at, zone), i, e) for i, e in enumerate(events))]
    received = [e for e in timeline if e.kind is ClockEventKind.RECEIVED]
    if len(received) != 1:
        raise DeadlineError(f"events: exactly one 'received' event is required, got {len(received)}")
    received_on = _local_date(received[0].at, zone)
    steps = [_received_step(received[0].at, received_on, zone)]
    for event in timeline:
        on = _local_date(event.at, zone)
        if on < received_on:
            raise DeadlineError(
                f"events: {event.kind.value} on {on.isoformat()} is before the request was received "
                f"({received_on.isoformat()})"
            )

    start, pauses, paused_now = _pauses(reg, timeline, received_on, today, zone, rules, steps)

    base_due, base_paused = _count(start, spec.base, pauses, rest_day, steps)
    notice_by = base_due if spec.extension is not None else None

    extensions = [e for e in timeline if e.kind is ClockEventKind.EXTENDED]
    due, paused_days, reason = base_due, base_paused, None
    if extensions:
        reason = _check_extensions(reg, extensions, notice_by, zone)
        assert spec.extension is not None  # _check_extensions refuses regimes without one
        steps.append(f"extended on {_local_date(extensions[0].at, zone).isoformat()} ({reason}): "
                     f"from {start.isoformat()}")
        due, paused_days = _count(start, spec.extension, pauses, rest_day, steps)

    acknowledge_by = None
    if reg is Regime.CCPA:
        acknowledge_by = _add_business_days(received_on, 10, calendar)
        steps.append(f"acknowledge within 10 business days -> {acknowledge_by.isoformat()}")
    for event in timeline:
        if event.kind is ClockEventKind.RESPONSE_SENT:
            sent = _local_date(event.at, zone)
            late = (sent - due).days
            verdict = f"{late} days late" if late > 0 else "on time"
            steps.append(f"response sent {sent.isoformat()}: {verdict}")

    return Deadline(
        regime=reg,
        country=calendar.country,
        clock_start=start,
        base_due=base_due,
        due=due,
        extended=bool(extensions),
        extension_reason=reason,
        extension_available=spec.extension is not None and not extensions,
        extension_notice_by=notice_by,
        paused=paused_now,
        paused_days=paused_days,
        acknowledge_by=acknowledge_by,
        holiday_calendar=calendar.evidence,
        rule=spec.rule,
        steps=tuple(steps),
    )


#: The CCPA request type with its own clock (dsr.models.RequestType.OPT_OUT; named here, as the
#: deadline rules need no request model).
OPT_OUT = "opt_out"
CCPA_OPT_OUT_BUSINESS_DAYS = 15
CCPA_OPT_OUT_RULE = "ccpa/11ccr7026(f) v1"


def _ccpa_opt_out(events: Sequence[ClockEvent], *, country: str | None, rules: DeadlineRules) -> Deadline:
    """An opt-out of sale/sharing: "as soon as feasibly possible, but no later than 15 business days
    from the date the business receives the request" (11 CCR 7026(f)). No pause, no extension."""
    reg = Regime.CCPA
    calendar = _calendar(reg, _resolve_country(reg, country))
    zone = _zone(reg, rules)
    received = [e for e in events if e.kind is ClockEventKind.RECEIVED]
    if len(received) != 1:
        raise DeadlineError(f"events: exactly one 'received' event is required, got {len(received)}")
    for event in events:
        if event.kind is ClockEventKind.EXTENDED:
            raise ExtensionNotAllowed("ccpa: an opt-out of sale/sharing has no extension (11 CCR 7026(f))")
        if event.kind in _FAMILY_OF:
            raise PauseNotAllowed(f"ccpa: no pause of the clock ({event.kind.value})")
    received_on = _local_date(received[0].at, zone)
    due = _add_business_days(received_on, CCPA_OPT_OUT_BUSINESS_DAYS, calendar)
    steps = (_received_step(received[0].at, received_on, zone),
             f"opt-out of sale/sharing: {CCPA_OPT_OUT_BUSINESS_DAYS} business days after receipt "
             f"(weekends and {calendar.country} federal holidays not counted) -> {due.isoformat()}")
    return Deadline(regime=reg, country=calendar.country, clock_start=received_on, base_due=due, due=due,
                    extended=False, extension_reason=None, extension_available=False, extension_notice_by=None,
                    paused=False, paused_days=0, acknowledge_by=None, holiday_calendar=calendar.evidence,
                    rule=CCPA_OPT_OUT_RULE, steps=steps)


def _pauses(
    reg: Regime,
    timeline: Sequence[ClockEvent],
    received_on: date,
    today: date,
    zone: ZoneInfo,
    rules: DeadlineRules,
    steps: list[str],
) -> tuple[date, list[tuple[date, date]], bool]:
    """Read the ID/fee/clarification events. Returns (clock start, uncounted intervals, a wait is open)."""
    # Pair each "requested" with the next "received" of its family; an unmatched request is open.
    closed: dict[str, list[tuple[date, date]]] = {name: [] for name in _PAUSE_FAMILIES}
    open_since: dict[str, date] = {}
    for event in timeline:
        family = _FAMILY_OF.get(event.kind)
        if family is None:
            continue
        on = _local_date(event.at, zone)
        if not _pause_counts(reg, family, rules, steps, event, on):
            continue
        if event.kind is _PAUSE_FAMILIES[family][0]:
            open_since.setdefault(family, on)  # asking again while waiting does not restart the pause
        elif family in open_since:
            closed[family].append((open_since.pop(family), on))
        else:
            # UK Art. 12A: ID/fee only move the start "if requested"; a stray receipt changes nothing.
            steps.append(f"{event.kind.value} on {on.isoformat()} ignored: nothing was requested")

    labelled: dict[str, list[tuple[date, date, str]]] = {}
    for family in _PAUSE_FAMILIES:
        labelled[family] = [(first, last, f"received {last.isoformat()}") for first, last in closed[family]]
        if family in open_since:
            # Still waiting: count up to as_of, as if the answer came today.
            first = open_since[family]
            labelled[family].append((first, max(today, first), f"still awaited as of {today.isoformat()}"))

    start = received_on
    moves_start = ("id", "fee") if reg is Regime.UK_GDPR else ()
    for family in moves_start:
        for first, last, state in labelled[family]:
            # UK Art. 12A: the month starts at the latest of receipt, ID received and fee received;
            # while one is awaited the start is provisional (as_of).
            start = max(start, last)
            steps.append(f"{family} requested {first.isoformat()}, {state}: "
                         f"clock start no earlier than {last.isoformat()}")
    if start != received_on:
        steps.append(f"clock starts {start.isoformat()}")

    intervals: list[tuple[date, date]] = []
    for family in _PAUSE_FAMILIES:
        if family in moves_start:
            continue
        for first, last, state in labelled[family]:
            # Days before the clock starts are uncounted already; do not count them twice.
            counted_from = max(first, start)
            days = max(0, (last - counted_from).days)
            note = f" (from the clock start {start.isoformat()})" if counted_from > first else ""
            steps.append(f"{family} requested {first.isoformat()}, {state}: {days} days paused{note}")
            intervals.append((counted_from, last))
    return start, _merge(intervals), bool(open_since)


def _received_step(at: date, local: date, zone: ZoneInfo) -> str:
    if isinstance(at, datetime) and at.tzinfo is not None:
        return f"received {local.isoformat()} ({at.isoformat()} in {zone.key})"
    return f"received {local.isoformat()}"


def _pause_counts(
    reg: Regime, family: str, rules: DeadlineRules, steps: list[str], event: ClockEvent, on: date
) -> bool:
    """Whether this ID/fee/clarification event affects the clock; raises where it never may."""
    try:
        check_pause_allowed(reg, event.kind, rules)
    except PauseNotAllowed:
        if reg is Regime.GDPR and family != "fee":
            # A switch counsel may flip later: recompute without the pause instead of failing.
            if event.kind is _PAUSE_FAMILIES[family][0]:
                steps.append(f"{event.kind.value} on {on.isoformat()} not counted: pause switched off")
            return False
        raise
    opens = event.kind is _PAUSE_FAMILIES[family][0]
    # Stopping the clock rests on practice (EU) or on the clarification being really needed (UK):
    # the ledger must say why.
    needs_reason = reg is Regime.GDPR or family == "clarification"
    if opens and needs_reason and not (event.reason and event.reason.strip()):
        raise DeadlineError(f"reason: {event.kind.value} must say why the clock stops ({reg.value})")
    return True


def _check_extensions(
    reg: Regime, extensions: Sequence[ClockEvent], notice_by: date | None, zone: ZoneInfo
) -> str:
    if notice_by is None:
        raise ExtensionNotAllowed(f"{reg.value}: the law provides no extension of the deadline")
    if len(extensions) > 1:
        raise ExtensionNotAllowed(
            f"{reg.value}: extended {len(extensions)} times; only one extension is allowed"
        )
    event = extensions[0]
    on = _local_date(event.at, zone)
    if on > notice_by:
        raise ExtensionNotAllowed(
            f"{reg.value}: an extension must be notified by {notice_by.isoformat()} "
            f"(end of the first period); {on.isoformat()} is too late"
        )
    if not (event.reason and event.reason.strip()):
        raise ExtensionNotAllowed("reason: an extension notice must give the subject its reasons")
    return event.reason.strip()


def due_date(
    regime: Regime | str,
    received: date | datetime,
    *,
    country: str | None = None,
    extended: bool = False,
    rules: DeadlineRules = DEFAULT_RULES,
) -> date:
    """The due date of a request received on ``received`` with no pauses (for ``dsr deadline``).

    Args:
        regime: The request's regime.
        received: When it was received; a naive datetime or a plain date is the local date.
        country: Holiday calendar, as in `compute_deadline`.
        extended: Return the extended due date instead of the base one.
        rules: The configurable legal choices.

    Raises:
        ExtensionNotAllowed: ``extended`` for a regime without an extension (lgpd).
    """
    reg = parse_regime(regime)
    events = [ClockEvent(ClockEventKind.RECEIVED, received)]
    base = compute_deadline(reg, events, country=country, rules=rules)
    if not extended:
        return base.due
    # Notified on the first day, with a placeholder reason: only the date is wanted here.
    notice = ClockEvent(ClockEventKind.EXTENDED, base.clock_start, reason="extension (due-date query)")
    return compute_deadline(reg, [*events, notice], country=country, rules=rules).due
