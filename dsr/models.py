"""Requests as the privacy office submits them: types, statuses, and strict validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsr.contract import RECTIFIABLE_FIELDS
from dsr.deadlines import DeadlineError, Regime, parse_regime
from dsr.identity import IdentityError, normalise_email


class RequestType(StrEnum):
    ACCESS = "access"
    PORTABILITY = "portability"
    ERASURE = "erasure"
    RECTIFICATION = "rectification"
    RESTRICTION = "restriction"
    OBJECTION = "objection"  # to direct marketing (GDPR 21(2)): absolute, so carried out as asked
    CONSENT_WITHDRAWAL = "consent_withdrawal"  # of consent to marketing, "at any time" (the policy)
    OPT_OUT = "opt_out"  # CCPA: of the sale or sharing of personal information


#: Types the request flow carries out across systems by itself (a system without the API gets
#: a manual task); every type the privacy policy promises is one.
AUTOMATED_TYPES = frozenset(RequestType)
#: Types whose result is a package of the subject's data.
EXPORT_TYPES = frozenset({RequestType.ACCESS, RequestType.PORTABILITY})
#: Types carried out by stopping every marketing use of the subject's data in every system.
SUPPRESSION_TYPES = frozenset({RequestType.RESTRICTION, RequestType.OBJECTION, RequestType.CONSENT_WITHDRAWAL,
                               RequestType.OPT_OUT})
#: Types that run without verifying the requester's identity: a CCPA opt-out "need not be a
#: verifiable consumer request" (11 CCR 7026(d)); anyone may stop a sale, nobody learns anything.
UNVERIFIED_TYPES = frozenset({RequestType.OPT_OUT})

#: Canonical fields a rectification may set (dsr.contract.RECTIFIABLE_FIELDS) and how long each may be.
RECTIFICATION_MAX_CHARS = 300
_PHONE = re.compile(r"^\+?[0-9 ()./-]{3,40}$")


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
    # Rectification only: canonical field -> its corrected value (personal data: kept beside the
    # chain, never in an event; see dsr.rights).
    changes: dict[str, str] | None = Field(default=None, repr=False)

    @field_validator("changes")
    @classmethod
    def _changes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else validate_changes(value)

    @model_validator(mode="after")
    def _changes_only_for_rectification(self) -> NewRequest:
        if self.type is RequestType.RECTIFICATION and not self.changes:
            raise RequestInputError("changes", "a rectification names at least one corrected field, "
                                    f"e.g. --set first_name=Ada (fields: {', '.join(RECTIFIABLE_FIELDS)})")
        if self.type is not RequestType.RECTIFICATION and self.changes:
            raise RequestInputError("changes", "only a rectification carries corrected fields")
        return self

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


def validate_changes(changes: Mapping[str, object]) -> dict[str, str]:
    """A rectification's corrected fields, checked; errors name `changes.<field>`."""
    out: dict[str, str] = {}
    for name, raw in changes.items():
        where = f"changes.{name}"
        if name not in RECTIFIABLE_FIELDS:
            raise RequestInputError(where, f"not a field that can be corrected (one of {', '.join(RECTIFIABLE_FIELDS)})")
        if not isinstance(raw, str):
            raise RequestInputError(where, "must be text")
        value = " ".join(raw.split())  # no newlines or tabs: every system stores one line
        if not value:
            raise RequestInputError(where, "must not be empty (erasure removes a field; rectification corrects it)")
        if len(value) > RECTIFICATION_MAX_CHARS:
            raise RequestInputError(where, f"must be at most {RECTIFICATION_MAX_CHARS} characters")
        if name == "email":
            try:
                value = normalise_email(value)
            except IdentityError as exc:
                raise RequestInputError(where, str(exc).split(": ", 1)[-1]) from None
        elif name == "phone" and not _PHONE.match(value):
            raise RequestInputError(where, "must be a telephone number: digits, spaces, + ( ) . / -")
        out[name] = value
    return dict(sorted(out.items()))


#: How a requester's identity can have been checked (the evidence names one; anything else is a typo).
VERIFICATION_METHODS = ("email-code", "email-link", "account-login", "id-document", "phone-callback",
                        "knowledge-check", "signed-letter", "in-person", "authorised-agent", "opendsr-controller")


def validate_method(method: str) -> str:
    if not _METHOD.match(method) or method not in VERIFICATION_METHODS:
        raise RequestInputError("method", f"must be one of {', '.join(VERIFICATION_METHODS)}")
    return method


def input_error(exc: ValidationError) -> RequestInputError:
    """The first problem of a pydantic error, as 'field: message' (what a user can act on)."""
    first = exc.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, RequestInputError):  # a validator that names its own field (changes.email)
        return RequestInputError(cause.field, str(cause).split(": ", 1)[-1])
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
