"""Deadlines as the privacy office sees them: the due date, why, and what the law refuses.

Dates come from the legal-rules worked examples and from the installed `holidays` calendars
(each holiday used below was checked against that package).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime

import holidays
import pytest
import time_machine

from dsr.deadlines import (
    DEFAULT_RULES,
    ClockEvent,
    ClockEventKind,
    Deadline,
    DeadlineError,
    DeadlineRules,
    ExtensionNotAllowed,
    PauseNotAllowed,
    Regime,
    check_extension_allowed,
    check_pause_allowed,
    compute_deadline,
    due_date,
    parse_regime,
)

K = ClockEventKind


def ev(kind: ClockEventKind, day: str, reason: str | None = None) -> ClockEvent:
    """A clock event on a local date (plain dates are the regime's local date)."""
    return ClockEvent(kind, date.fromisoformat(day), reason)


def received(day: str) -> ClockEvent:
    return ev(K.RECEIVED, day)


def d(day: str) -> date:
    return date.fromisoformat(day)


# --- the legal-rules worked examples -------------------------------------------------------------


def test_uk_worked_example_saturday_rolls_to_monday() -> None:
    deadline = compute_deadline("uk-gdpr", [received("2026-01-30")])

    assert deadline.due == d("2026-03-02")
    assert deadline.country == "GB"
    assert deadline.steps[0] == "received 2026-01-30"
    assert deadline.steps[1] == "+1 month -> 2026-02-28 (clamped to month end)"
    assert deadline.steps[-1].startswith("2026-02-28 is Saturday")
    assert deadline.steps[-1].endswith("-> 2026-03-02")


def test_gdpr_worked_example_koningsdag_rolls_to_tuesday() -> None:
    deadline = compute_deadline(Regime.GDPR, [received("2026-03-27")])

    assert deadline.due == d("2026-04-28")
    assert deadline.country == "NL"
    assert "2026-04-27 is King's Day -> 2026-04-28" in deadline.steps


# --- counting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received_on", "due"),
    [
        ("2025-01-31", "2025-02-28"),  # no 31 February: last day of the month (a Friday)
        ("2028-01-31", "2028-02-29"),  # leap year
        ("2026-03-31", "2026-04-30"),  # 30-day month
        ("2026-01-15", "2026-02-16"),  # Sunday 15 Feb -> Monday
        ("2026-02-07", "2026-03-09"),  # received on a Saturday; due Saturday 7 Mar -> Monday
    ],
)
def test_gdpr_month_counting_clamps_to_month_end_and_skips_weekends(received_on: str, due: str) -> None:
    assert due_date("gdpr", d(received_on)) == d(due)


def test_clamp_is_explained_in_the_steps() -> None:
    steps = compute_deadline("gdpr", [received("2028-01-31")]).steps

    assert "+1 month -> 2028-02-29 (clamped to month end)" in steps


@pytest.mark.parametrize(
    ("regime", "country", "received_on", "due", "holiday"),
    [
        ("gdpr", None, "2026-03-06", "2026-04-07", "Easter Monday"),
        ("gdpr", "DE", "2026-03-27", "2026-04-27", None),  # Koningsdag is Dutch only
        ("uk-gdpr", None, "2026-03-06", "2026-04-07", "Easter Monday"),
        ("uk-gdpr", None, "2026-03-27", "2026-04-27", None),  # nor is it an English bank holiday
        # Christmas Friday, Boxing Day Saturday, Sunday, Boxing Day substitute Monday.
        ("uk-gdpr", None, "2026-11-25", "2026-12-29", "Boxing Day (observed)"),
        ("lgpd", None, "2026-04-06", "2026-04-22", "Tiradentes"),
        ("lgpd", None, "2026-03-06", "2026-03-23", None),  # Saturday 21 Mar -> Monday
        # Sunday 1 July; Monday 2 July is then Canada Day by law (Holidays Act s.2(2)).
        ("pipeda", None, "2029-06-01", "2029-07-03", "Canada Day"),
        # Saturday Canada Day is a holiday itself; the package's federal calendar also keeps the
        # Monday after it as "Canada Day (observed)" (flagged for counsel: VERIFY).
        ("pipeda", None, "2028-06-01", "2028-07-04", "Canada Day"),
        ("pipeda", None, "2026-01-01", "2026-01-31", None),  # an ordinary Saturday does not roll
        ("pipeda", None, "2026-01-02", "2026-02-02", None),  # a Sunday does
        ("ccpa", None, "2026-11-19", "2027-01-03", None),  # a Sunday, but CCPA never rolls
    ],
)
def test_due_date_rolls_past_the_regimes_holidays(
    regime: str, country: str | None, received_on: str, due: str, holiday: str | None
) -> None:
    deadline = compute_deadline(regime, [received(received_on)], country=country)

    assert deadline.due == d(due)
    if holiday is not None:
        assert any(holiday in step for step in deadline.steps)


def test_switching_the_lgpd_and_pipeda_rolls_off_keeps_the_raw_date() -> None:
    rules = DeadlineRules(lgpd_roll_to_business_day=False, pipeda_roll_sunday_and_holiday=False)

    assert due_date("lgpd", d("2026-04-06"), rules=rules) == d("2026-04-21")  # Tiradentes
    assert due_date("pipeda", d("2026-01-02"), rules=rules) == d("2026-02-01")  # a Sunday


def test_events_in_any_order_give_the_same_deadline() -> None:
    events = [
        received("2026-03-02"),
        ev(K.ID_REQUESTED, "2026-03-03", "name does not match the account"),
        ev(K.ID_RECEIVED, "2026-03-09"),
        ev(K.EXTENDED, "2026-03-20", "complex request across eleven systems"),
    ]
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)

    assert compute_deadline("gdpr", shuffled, as_of=d("2026-04-01")) == compute_deadline(
        "gdpr", events, as_of=d("2026-04-01")
    )


# --- local dates --------------------------------------------------------------------------------


def test_utc_timestamp_counts_on_the_offices_local_date() -> None:
    late_evening_utc = datetime(2025, 1, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 Feb in Amsterdam

    deadline = compute_deadline("gdpr", [ClockEvent(K.RECEIVED, late_evening_utc)])

    assert deadline.clock_start == d("2025-02-01")
    assert deadline.due == d("2025-03-03")  # 1 Mar 2025 is a Saturday
    assert due_date("gdpr", datetime(2025, 1, 31, 23, 30)) == d("2025-02-28")  # naive: already local


def test_ccpa_counts_on_the_los_angeles_date() -> None:
    early_morning_utc = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)  # 22:00 on 31 Jan in California

    deadline = compute_deadline("ccpa", [ClockEvent(K.RECEIVED, early_morning_utc)])

    assert deadline.clock_start == d("2026-01-31")
    assert deadline.due == d("2026-03-17")


def test_time_zone_can_be_configured() -> None:
    # 17:00 on the 30th in Amsterdam, 01:00 on the 31st in Tokyo.
    afternoon_utc = ClockEvent(K.RECEIVED, datetime(2026, 1, 30, 16, 0, tzinfo=UTC))
    tokyo = DeadlineRules(time_zones={**DEFAULT_RULES.time_zones, Regime.GDPR: "Asia/Tokyo"})

    assert compute_deadline("gdpr", [afternoon_utc]).clock_start == d("2026-01-30")
    assert compute_deadline("gdpr", [afternoon_utc], rules=tokyo).clock_start == d("2026-01-31")
    with pytest.raises(DeadlineError, match="^time_zones:"):
        compute_deadline("gdpr", [afternoon_utc], rules=DeadlineRules(time_zones={"gdpr": "Mars/Olympus"}))


# --- extensions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regime", "received_on", "base_due", "extended_due"),
    [
        ("gdpr", "2026-01-30", "2026-03-02", "2026-04-30"),  # start + 3 months
        ("uk-gdpr", "2026-01-30", "2026-03-02", "2026-04-30"),
        ("ccpa", "2026-01-05", "2026-02-19", "2026-04-05"),  # 90 days in total, no roll (a Sunday)
        ("pipeda", "2026-01-05", "2026-02-04", "2026-03-06"),  # 60 days in total
    ],
)
def test_extension_moves_the_due_date_and_is_used_up(
    regime: str, received_on: str, base_due: str, extended_due: str
) -> None:
    before = compute_deadline(regime, [received(received_on)])
    after = compute_deadline(
        regime, [received(received_on), ev(K.EXTENDED, base_due, "  volume of records  ")]
    )

    assert (before.due, before.extension_notice_by) == (d(base_due), d(base_due))
    assert before.extension_available and not before.extended
    assert after.base_due == d(base_due)
    assert after.due == d(extended_due)
    assert after.extended and not after.extension_available
    assert after.extension_reason == "volume of records"
    assert due_date(regime, d(received_on), extended=True) == d(extended_due)


def test_lgpd_has_no_extension() -> None:
    deadline = compute_deadline("lgpd", [received("2026-04-06")])

    assert not deadline.extension_available and deadline.extension_notice_by is None
    with pytest.raises(ExtensionNotAllowed, match="lgpd"):
        compute_deadline("lgpd", [received("2026-04-06"), ev(K.EXTENDED, "2026-04-07", "busy")])
    with pytest.raises(ExtensionNotAllowed, match="lgpd"):
        check_extension_allowed(deadline, d("2026-04-07"))
    with pytest.raises(ExtensionNotAllowed):
        due_date("lgpd", d("2026-04-06"), extended=True)


def test_second_extension_is_refused() -> None:
    events = [received("2026-01-30"), ev(K.EXTENDED, "2026-02-10", "complex")]

    with pytest.raises(ExtensionNotAllowed, match="only one extension"):
        compute_deadline("gdpr", [*events, ev(K.EXTENDED, "2026-02-20", "still complex")])
    with pytest.raises(ExtensionNotAllowed, match="already extended"):
        check_extension_allowed(compute_deadline("gdpr", events), d("2026-02-20"))


def test_extension_notified_after_the_first_month_is_refused() -> None:
    # First month ends Saturday 28 Feb -> Monday 2 Mar: notice on the 2nd is in time, on the 3rd it is not.
    assert compute_deadline(
        "gdpr", [received("2026-01-30"), ev(K.EXTENDED, "2026-03-02", "complex")]
    ).due == d("2026-04-30")
    with pytest.raises(ExtensionNotAllowed, match="notified by 2026-03-02"):
        compute_deadline("gdpr", [received("2026-01-30"), ev(K.EXTENDED, "2026-03-03", "complex")])

    deadline = compute_deadline("ccpa", [received("2026-01-05")])
    check_extension_allowed(deadline, d("2026-02-19"))
    with pytest.raises(ExtensionNotAllowed, match="too late"):
        check_extension_allowed(deadline, d("2026-02-20"))


def test_extension_without_reasons_is_refused() -> None:
    with pytest.raises(ExtensionNotAllowed, match="^reason:"):
        compute_deadline("pipeda", [received("2026-01-05"), ev(K.EXTENDED, "2026-01-10")])


# --- pauses and the UK start --------------------------------------------------------------------


def test_uk_month_starts_when_the_requested_id_arrives() -> None:
    deadline = compute_deadline(
        "uk-gdpr", [received("2026-01-30"), ev(K.ID_REQUESTED, "2026-02-02"), ev(K.ID_RECEIVED, "2026-02-10")]
    )

    assert deadline.clock_start == d("2026-02-10")
    assert deadline.due == d("2026-03-10")
    assert deadline.paused_days == 0 and not deadline.paused


def test_uk_month_starts_at_the_latest_of_id_and_fee() -> None:
    deadline = compute_deadline(
        "uk-gdpr",
        [
            received("2026-01-30"),
            ev(K.ID_REQUESTED, "2026-02-02"),
            ev(K.FEE_REQUESTED, "2026-02-02"),
            ev(K.ID_RECEIVED, "2026-02-10"),
            ev(K.FEE_RECEIVED, "2026-02-12"),
        ],
    )

    assert (deadline.clock_start, deadline.due) == (d("2026-02-12"), d("2026-03-12"))


def test_uk_id_that_nobody_asked_for_does_not_move_the_start() -> None:
    deadline = compute_deadline("uk-gdpr", [received("2026-01-30"), ev(K.ID_RECEIVED, "2026-02-10")])

    assert (deadline.clock_start, deadline.due) == (d("2026-01-30"), d("2026-03-02"))


def test_uk_awaited_id_gives_a_provisional_start_as_of_today() -> None:
    deadline = compute_deadline(
        "uk-gdpr", [received("2026-01-30"), ev(K.ID_REQUESTED, "2026-02-02")], as_of=d("2026-02-20")
    )

    assert deadline.paused
    assert (deadline.clock_start, deadline.due) == (d("2026-02-20"), d("2026-03-20"))


def test_uk_clarification_days_are_not_counted() -> None:
    deadline = compute_deadline(
        "uk-gdpr",
        [
            received("2026-01-30"),
            ev(K.CLARIFICATION_REQUESTED, "2026-02-03", "which of the two accounts"),
            ev(K.CLARIFICATION_RECEIVED, "2026-02-13"),
        ],
    )

    assert deadline.paused_days == 10
    assert deadline.due == d("2026-03-10")  # 28 Feb + 10 days
    assert deadline.extension_notice_by == d("2026-03-10")


def test_uk_clarification_while_waiting_for_id_is_not_counted_twice() -> None:
    deadline = compute_deadline(
        "uk-gdpr",
        [
            received("2026-01-30"),
            ev(K.ID_REQUESTED, "2026-02-02"),
            ev(K.CLARIFICATION_REQUESTED, "2026-02-05", "which of the two accounts"),
            ev(K.ID_RECEIVED, "2026-02-10"),
            ev(K.CLARIFICATION_RECEIVED, "2026-02-15"),
        ],
    )

    # The month runs from 10 Feb; only 10-15 Feb of the clarification wait falls inside it.
    assert (deadline.clock_start, deadline.paused_days) == (d("2026-02-10"), 5)
    assert deadline.due == d("2026-03-16")  # 10 Mar + 5 = Sunday 15 Mar -> Monday


def test_pause_that_stops_the_clock_needs_a_reason() -> None:
    with pytest.raises(DeadlineError, match="^reason:"):
        compute_deadline(
            "uk-gdpr", [received("2026-01-30"), ev(K.CLARIFICATION_REQUESTED, "2026-02-03")]
        )
    with pytest.raises(DeadlineError, match="^reason:"):
        compute_deadline("gdpr", [received("2026-01-30"), ev(K.ID_REQUESTED, "2026-02-03")])


@pytest.mark.parametrize(
    ("events", "due", "paused_days"),
    [
        ([ev(K.ID_REQUESTED, "2026-03-03", "doubt"), ev(K.ID_RECEIVED, "2026-03-09")], "2026-04-08", 6),
        (
            [
                ev(K.ID_REQUESTED, "2026-03-03", "doubt"),
                ev(K.CLARIFICATION_REQUESTED, "2026-03-05", "which shop"),
                ev(K.ID_RECEIVED, "2026-03-09"),
                ev(K.CLARIFICATION_RECEIVED, "2026-03-12"),
            ],
            "2026-04-13",  # overlapping waits count once: 9 days -> Saturday 11 Apr -> Monday
            9,
        ),
        # Asked after the deadline had passed: it cannot revive the clock.
        ([ev(K.CLARIFICATION_REQUESTED, "2026-04-10", "late"), ev(K.CLARIFICATION_RECEIVED, "2026-04-20")],
         "2026-04-02", 0),
    ],
)
def test_gdpr_pauses_add_the_days_waited(events: list[ClockEvent], due: str, paused_days: int) -> None:
    deadline = compute_deadline("gdpr", [received("2026-03-02"), *events])

    assert (deadline.due, deadline.paused_days, deadline.paused) == (d(due), paused_days, False)


def test_gdpr_pause_switched_off_counts_every_day() -> None:
    events = [
        received("2026-03-02"),
        ev(K.ID_REQUESTED, "2026-03-03", "doubt"),
        ev(K.ID_RECEIVED, "2026-03-09"),
    ]
    rules = DeadlineRules(gdpr_pause_for_id=False)

    deadline = compute_deadline("gdpr", events, rules=rules)

    assert (deadline.due, deadline.paused_days) == (d("2026-04-02"), 0)
    check_pause_allowed("gdpr", K.ID_REQUESTED)
    with pytest.raises(PauseNotAllowed, match="gdpr_pause_for_id"):
        check_pause_allowed("gdpr", K.ID_REQUESTED, rules)
    with pytest.raises(PauseNotAllowed, match="gdpr_pause_for_clarification"):
        check_pause_allowed(
            "gdpr", "clarification_requested", DeadlineRules(gdpr_pause_for_clarification=False)
        )


def test_open_pause_counts_up_to_as_of() -> None:
    events = [received("2026-03-02"), ev(K.ID_REQUESTED, "2026-03-03", "doubt")]

    deadline = compute_deadline("gdpr", events, as_of=d("2026-03-13"))

    assert deadline.paused and deadline.paused_days == 10
    assert deadline.due == d("2026-04-13")  # 2 Apr + 10 = Sunday 12 Apr -> Monday
    with time_machine.travel(datetime(2026, 3, 13, 12, 0, tzinfo=UTC), tick=False):
        assert compute_deadline("gdpr", events) == deadline


@pytest.mark.parametrize("regime", ["ccpa", "lgpd", "pipeda"])
@pytest.mark.parametrize("kind", [K.ID_REQUESTED, K.FEE_REQUESTED, K.CLARIFICATION_REQUESTED])
def test_regimes_without_pauses_refuse_them(regime: str, kind: ClockEventKind) -> None:
    with pytest.raises(PauseNotAllowed, match=f"^{regime}:"):
        check_pause_allowed(regime, kind)
    with pytest.raises(PauseNotAllowed):
        compute_deadline(regime, [received("2026-01-05"), ev(kind, "2026-01-06", "verify")])


def test_ccpa_refusal_says_the_clock_runs_regardless_of_verification() -> None:
    with pytest.raises(PauseNotAllowed, match="regardless of verification"):
        check_pause_allowed(Regime.CCPA, K.ID_REQUESTED)
    with pytest.raises(PauseNotAllowed, match="fee"):
        check_pause_allowed("gdpr", K.FEE_REQUESTED)
    check_pause_allowed("uk-gdpr", K.FEE_REQUESTED)
    check_pause_allowed("ccpa", K.RESPONSE_SENT)  # not a pause: nothing to refuse


# --- CCPA acknowledgement -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received_on", "acknowledge_by"),
    [
        ("2026-11-19", "2026-12-04"),  # Thanksgiving (26 Nov) is not a business day
        ("2026-01-05", "2026-01-20"),  # nor is Martin Luther King Jr. Day (19 Jan)
    ],
)
def test_ccpa_acknowledge_within_ten_business_days(received_on: str, acknowledge_by: str) -> None:
    assert compute_deadline("ccpa", [received(received_on)]).acknowledge_by == d(acknowledge_by)


def test_only_ccpa_has_an_acknowledgement_deadline() -> None:
    assert compute_deadline("gdpr", [received("2026-11-19")]).acknowledge_by is None


# --- errors -------------------------------------------------------------------------------------


def test_bad_regime_names_the_field() -> None:
    with pytest.raises(DeadlineError) as caught:
        parse_regime("xyz")

    assert str(caught.value) == "regime: 'xyz' is not one of gdpr, uk-gdpr, ccpa, lgpd, pipeda"
    assert parse_regime(" UK-GDPR ") is Regime.UK_GDPR
    with pytest.raises(DeadlineError, match="^regime:"):
        due_date("hipaa", d("2026-01-05"))


@pytest.mark.parametrize(
    ("regime", "country", "message"),
    [
        ("gdpr", "XX", "country: 'XX' is not an EU member state"),
        ("gdpr", "GB", "use regime uk-gdpr"),
        ("gdpr", "CH", "not an EU member state"),
        ("ccpa", "GB", "country: 'GB' does not apply to ccpa"),
    ],
)
def test_country_outside_the_regime_names_the_field(regime: str, country: str, message: str) -> None:
    with pytest.raises(DeadlineError, match=message):
        compute_deadline(regime, [received("2026-01-05")], country=country)


def test_country_codes_are_normalised() -> None:
    assert compute_deadline("gdpr", [received("2026-01-05")], country=" de ").country == "DE"
    assert compute_deadline("gdpr", [received("2026-01-05")], country="EL").country == "GR"
    assert compute_deadline("uk-gdpr", [received("2026-01-05")], country="UK").country == "GB"


@pytest.mark.parametrize(
    "events",
    [
        [],
        [received("2026-01-05"), received("2026-01-06")],
        [received("2026-01-05"), ev(K.RESPONSE_SENT, "2026-01-04")],
    ],
)
def test_events_must_hold_one_receipt_that_comes_first(events: list[ClockEvent]) -> None:
    with pytest.raises(DeadlineError, match="^events:"):
        compute_deadline("gdpr", events)


def test_event_kind_from_a_ledger_string() -> None:
    assert ClockEvent("received", date(2026, 1, 5)).kind is K.RECEIVED
    with pytest.raises(DeadlineError, match="^kind: 'paid'"):
        ClockEvent("paid", date(2026, 1, 5))


# --- evidence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regime", "label"),
    [("gdpr", "NL"), ("uk-gdpr", "GB-ENG"), ("ccpa", "US"), ("lgpd", "BR"), ("pipeda", "CA")],
)
def test_holiday_calendar_records_the_package_version(regime: str, label: str) -> None:
    deadline = compute_deadline(regime, [received("2026-01-05")])

    assert deadline.holiday_calendar.startswith(f"holidays {holidays.__version__} {label}")
    assert deadline.rule.startswith(f"{regime}/") and " v" in deadline.rule


def test_to_dict_is_json_ready() -> None:
    deadline = compute_deadline(
        "uk-gdpr",
        [received("2026-01-30"), ev(K.EXTENDED, "2026-02-10", "complex"), ev(K.RESPONSE_SENT, "2026-05-04")],
    )

    data = json.loads(json.dumps(deadline.to_dict()))

    assert data["regime"] == "uk-gdpr"
    assert (data["base_due"], data["due"]) == ("2026-03-02", "2026-04-30")
    assert data["extension_notice_by"] == "2026-03-02"
    assert data["acknowledge_by"] is None
    assert data["steps"][-1] == "response sent 2026-05-04: 4 days late"
    assert set(data) == {f.name for f in Deadline.__dataclass_fields__.values()}
