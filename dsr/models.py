"""Requests as the privacy office submits them: types, statuses, and strict validation."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dsr.deadlines import DeadlineError, Regime, parse_regime
from dsr.identity import IdentityError, normalise_email


class RequestType(StrEnum):
    ACCESS = "access"
    PORTABILITY = "portability"
    ERASURE = "erasure"
    RECTIFICATION = "rectification"
    RESTRICTION = "restriction"
    OBJECTION = "objection"


#: Types the request flow carries out across systems by itself; the others wait for a person.
AUTOMATED_TYPES = frozenset({RequestType.ACCESS, RequestType.PORTABILITY, RequestType.ERASURE})
#: Types whose result is a package of the subject's data.
EXPORT_TYPES = frozenset({RequestType.ACCESS, RequestType.PORTABILITY})


class Status(StrEnum):
    RECEIVED = "received"
    AWAITING_VERIFICATION = "awaiting_verification"
    VERIFIED = "verified"
    IN_PROGRESS = "in_progress"
    AWAITING_MANUAL_ACTION = "awaiting_manual_action"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


#: A request in one of these states is finished: nothing runs, nothing escalates.
CLOSED_STATUSES = frozenset({Status.COMPLETED, Status.REJECTED, Status.CANCELLED})
OPEN_STATUSES = frozenset(Status) - CLOSED_STATUSES

_CHANNEL = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_METHOD = re.compile(r"^[a-z][a-z0-9-]{0,47}$")


#: No request can have been received before this (every regime here is younger).
EARLIEST_RECEIVED = datetime(2000, 1, 1, tzinfo=UTC)


class RequestInputError(ValueError):
    """Bad input; `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NewRequest(BaseModel):
    """A request as submitted. Validation errors always name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: RequestType
    email: Annotated[str, Field(min_length=3, max_length=320, repr=False)]  # never in a repr (logs, tracebacks)
    regime: Regime
    country: str | None = None
    received: datetime
    # When the requester says they asked (OpenDSR `submitted_time`): information only, the clock
    # starts at `received` (the server's receipt), so a caller cannot back-date the deadline.
    submitted_at: datetime | None = None
    channel: str = "cli"
    note: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return normalise_email(value)
        except IdentityError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None

    @field_validator("regime", mode="before")
    @classmethod
    def _regime(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return parse_regime(value)
            except DeadlineError as exc:
                raise ValueError(str(exc).split(": ", 1)[-1]) from None
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if value == "UK":  # common spelling; ISO says GB
            value = "GB"
        if not _COUNTRY.match(value):
            raise ValueError("must be a two-letter ISO 3166 country code, e.g. NL")
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _CHANNEL.match(value):
            raise ValueError("must be a short lower-case word such as web-form, email, phone, post")
        return value

    @field_validator("received", mode="before")
    @classmethod
    def _received_date(cls, value: object) -> object:
        # A bare date means "that day": noon UTC lands on the same calendar day in every
        # regime's time zone, so the deadline counts from the date the user typed.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(12, 0), UTC)
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return datetime.combine(date.fromisoformat(value.strip()), time(12, 0), UTC)
        return value

    @field_validator("received")
    @classmethod
    def _received_not_future(cls, value: datetime) -> datetime:
        value = value if value.tzinfo else value.replace(tzinfo=UTC)  # naive timestamps are UTC
        if value > datetime.now(UTC):
            raise ValueError("must not be in the future")
        if value < EARLIEST_RECEIVED:
            # Older than any of the regimes: a typo. (Years before 1000 would also not survive the
            # ledger's four-digit timestamps.)
            raise ValueError(f"must not be before {EARLIEST_RECEIVED.date().isoformat()}")
        return value


def validate_method(method: str) -> str:
    if not _METHOD.match(method):
        raise RequestInputError("method", "must be a short lower-case word such as email-code, id-document, account-login")
    return method


def input_error(exc: ValidationError) -> RequestInputError:
    """The first problem of a pydantic error, as 'field: message' (what a user can act on)."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "request"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "enum":
        message = f"must be one of {first['ctx']['expected']}"
    return RequestInputError(field, message)


def parse_new_request(**fields: object) -> NewRequest:
    try:
        return NewRequest(**fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise input_error(exc) from None
