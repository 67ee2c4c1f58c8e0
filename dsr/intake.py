"""The public intake: OpenDSR requests from the web form, verified by an e-mailed code.

The web form's backend posts OpenDSR bodies (see `OpenDsrBody`); this module turns them into
`NewRequest`s and records them with `DsrService.submit` (the clock starts on receipt, before
any verification: CCPA 11 CCR 7021), then proves the requester controls the address:

- **Code.** Six random digits, e-mailed over SMTP to the address in the request; stored only as
  HMAC-SHA256(identity key, request id + code) in `dsr_verification_codes`; valid 10 minutes and
  for 3 attempts (a conditional UPDATE counts attempts atomically, the right one included);
  compared in constant time. Every failure reads the same (wrong, expired, used up or unknown
  request). On success `DsrService.verify(method="email-code", actor="subject")`. The ledger
  records `verification.code_sent` {expires_at, code_number} and `verification.code_failed`
  {attempt, attempts_left, failures, failures_left}: never the code, never its hash. Submitting
  the same request again sends a new code when none is usable (expired, used up, or never sent),
  within the caps of `CodeLimits`: wrong codes count over all of a request's codes (5, and the
  request is cancelled), codes per request (3 a day, 5 in all) and per address whatever the
  request ids (5 a day; `dsr_code_issues`). Without SMTP configured the intake refuses (503): a
  code is never logged instead. A request signed by a configured controller is verified by that
  controller (`opendsr-controller`) and sent no code.
- **Idempotency.** One row per OpenDSR id in `dsr_intake_requests` holds a keyed hash of the
  body's content: the same id with the same content answers with the existing request (200);
  with other content, or an id another door already used, 409.
- **Duplicates.** The same subject (identity hash) asking for the same type again within the
  window (7 days by default) while the first request is open: the new request is recorded (its
  clock, its evidence), linked (`request.linked` {to: first} on it, {from: new} on the first) and
  cancelled as a duplicate, so it never runs twice; the answer names `duplicate_of`. Requests
  from other doors (officer, CLI) count as firsts too. Among OpenDSR submissions the claim is
  atomic (the primary key of `dsr_intake_primaries`), so two racing submissions cannot both run.
  Note the trade-off: `duplicate_of` tells whoever submits an address that a request for it is
  open (never whether the company holds any data on it, which intake does not look up).
- **Mapping.** `subject_request_type` access | portability | erasure, and as extensions restriction |
  objection | consent_withdrawal | opt_out (others 422); an opt_out gets no code (it needs no verification);
  `regulation` (or `regime`) gdpr | ccpa, and as extensions uk-gdpr, lgpd, pipeda (cpra is
  read as ccpa); optional `country` as for every door (both also as `extensions[<our domain>]`);
  the clock starts at our receipt (`received` is now), `submitted_time` (RFC 3339 with an offset)
  is kept as `submitted_at` (information: any age; in the future beyond a few minutes of clock
  skew, 422); channel `web-form`. Identities: exactly one `email` identity in `raw` format (a
  sha256 identity cannot be e-mailed a code: 422).

No personal data in logs: the address, the code and callback URLs never appear in a log line;
logs name the request id only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dsr.adapters.mail import Notice, NotifyError, SmtpChannel, SmtpConfig
from dsr.adapters.webhooks import (
    MAX_CALLBACK_URLS,
    check_callback_url,
    expected_completion_time,
    opendsr_status,
    register_callbacks,
    updated_time,
)
from dsr.deadlines import Regime
from dsr.identity import IdentityError, identity_hash, normalise_email
from dsr.ledger.events import LedgerEvent, canonical_json, format_timestamp, parse_timestamp
from dsr.ledger.schema import identities as identities_table
from dsr.ledger.store import LedgerError, UnknownRequest
from dsr.models import UNVERIFIED_TYPES, NewRequest, RequestInputError, RequestType, Status, parse_new_request
from dsr.service import DsrService, RequestStateError
from dsr.state import RequestState, derive_state

log = logging.getLogger(__name__)

CHANNEL = "web-form"
ACTOR = "opendsr-intake"
SUBJECT_ACTOR = "subject"
CODE_SENT = "verification.code_sent"
CODE_FAILED = "verification.code_failed"
#: Why a request is cancelled after too many wrong codes: a fixed text, no personal data.
TOO_MANY_FAILURES = ("identity not verified: too many wrong verification codes; the request is cancelled "
                     "(the subject may submit a new request)")
#: The controller of requests that arrive unsigned (the company's own web form backend).
DEFAULT_CONTROLLER_ID = "web-form"
LINKED = "request.linked"
VERIFY_METHOD = "email-code"
CONTROLLER_METHOD = "opendsr-controller"
CANCELLED_BY_CONTROLLER = "cancelled by the OpenDSR controller (DELETE while pending)"
VERIFY_NOTE = "6-digit code e-mailed to the address on file was returned"
NOT_CONFIGURED = "e-mail verification is not configured"
CODE_REFUSED = ("this code cannot be accepted: it may be wrong, expired or used up; "
                "submit the request again to receive a new code")

TYPES: dict[str, RequestType] = {
    "access": RequestType.ACCESS,
    "portability": RequestType.PORTABILITY,
    "erasure": RequestType.ERASURE,
    # Our extensions: the rights that stop a use (no corrected values to carry; a rectification
    # goes through the privacy office, which checks the new values).
    "restriction": RequestType.RESTRICTION,
    "objection": RequestType.OBJECTION,
    "consent_withdrawal": RequestType.CONSENT_WITHDRAWAL,
    "opt_out": RequestType.OPT_OUT,
}
#: OpenDSR `regulation` values to our regimes; uk-gdpr, lgpd and pipeda are our extensions.
REGULATIONS: dict[str, Regime] = {
    "gdpr": Regime.GDPR,
    "eu-gdpr": Regime.GDPR,
    "ccpa": Regime.CCPA,
    "cpra": Regime.CCPA,
    "uk-gdpr": Regime.UK_GDPR,
    "ukgdpr": Regime.UK_GDPR,
    "lgpd": Regime.LGPD,
    "pipeda": Regime.PIPEDA,
}

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_CODE = re.compile(r"^\d{6}$")
#: A claim whose request is not in the ledger yet counts as open this long (a twin still recording it).
_PENDING_CLAIM = timedelta(minutes=2)
_CLAIM_ATTEMPTS = 8

metadata = MetaData()
intake_requests = Table(
    "dsr_intake_requests", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("duplicate_of", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("controller_id", String(200), nullable=True),
)
intake_primaries = Table(
    "dsr_intake_primaries", metadata,
    Column("identity_hash", String(64), primary_key=True),
    Column("type", String(32), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("received_at", String(32), nullable=False),
    Column("claimed_at", String(32), nullable=False),
)
verification_codes = Table(
    "dsr_verification_codes", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("code_hmac", String(64), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("used_at", String(32), nullable=True),
    Column("codes_sent", Integer, nullable=False),
    Column("failures", Integer, nullable=False, server_default="0"),
)
code_issues = Table(
    "dsr_code_issues", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("identity_hash", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("issued_at", String(32), nullable=False),
)
code_identities = Table(
    "dsr_code_identities", metadata,
    Column("identity_hash", String(64), primary_key=True),
    Column("last_issued_at", String(32), nullable=False),
)

Loc = tuple[str | int, ...]


# -- errors ----------------------------------------------------------------------------------------


class IntakeInvalid(ValueError):
    """A body the intake refuses; every problem names its place in the body (422)."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, loc)) or 'body'}: {msg}" for loc, msg in self.problems))

    def detail(self) -> list[dict[str, Any]]:
        return [{"loc": ["body", *loc], "msg": msg} for loc, msg in self.problems]


class IntakeConflict(RuntimeError):
    """The request id is taken by other content (409)."""


class IntakeUnavailable(RuntimeError):
    """The intake cannot verify anyone right now (503)."""


class CodeRefused(ValueError):
    """A code that is not accepted; one message whatever the reason (wrong, expired, used up)."""

    def __init__(self) -> None:
        super().__init__(CODE_REFUSED)


class _Raced(Exception):
    """Another submission changed a claim between our read and our write: read again."""


class _AlreadyLinked(Exception):
    pass


# -- the body --------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenDsrIdentity(_Strict):
    identity_type: Annotated[str, Field(max_length=64)]
    identity_value: Annotated[str, Field(max_length=320)]
    identity_format: Annotated[str, Field(max_length=16)] = "raw"


class OpenDsrBody(_Strict):
    """An OpenDSR request as the web form's backend posts it (OpenDSR 1.0 fields, plus extensions)."""

    subject_request_id: Annotated[str, Field(max_length=64)]
    subject_request_type: Annotated[str, Field(max_length=64)]
    submitted_time: Annotated[str, Field(max_length=64)]
    subject_identities: Annotated[list[OpenDsrIdentity], Field(min_length=1, max_length=10)]
    regulation: Annotated[str, Field(max_length=32)] | None = None
    regime: Annotated[str, Field(max_length=32)] | None = None  # our spelling, accepted as well
    country: Annotated[str, Field(max_length=8)] | None = None  # extension: the subject's jurisdiction
    status_callback_urls: Annotated[list[str], Field(max_length=MAX_CALLBACK_URLS)] = []
    api_version: Annotated[str, Field(max_length=16)] | None = None  # accepted, not used
    property_id: Annotated[str, Field(max_length=200)] | None = None  # accepted, not used
    extensions: dict[str, Any] | None = None  # accepted, not used


@dataclass(frozen=True)
class IntakeInput:
    """A checked OpenDSR body."""

    request_id: str
    new: NewRequest
    identity_hash: str
    callback_urls: tuple[str, ...]
    fingerprint: str  # keyed hash of the content: what "the same request again" means
    controller_id: str | None = None  # the signing controller; None: the default one


#: What `extensions[<our processor domain>]` may hold: our extensions to OpenDSR.
OUR_EXTENSIONS = ("country", "regime")

#: Where a NewRequest field came from in the OpenDSR body.
_NEW_REQUEST_LOC: dict[str, Loc] = {
    "submitted_at": ("submitted_time",), "regime": ("regulation",), "country": ("country",), "type": ("subject_request_type",),
}


def _pydantic_problems(exc: ValidationError) -> list[tuple[Loc, str]]:
    # Never the input itself: it may be an address.
    return [(tuple(err["loc"]), err["msg"].removeprefix("Value error, ")) for err in exc.errors()]


def parse_opendsr(body: object, *, key: bytes, now: datetime, callback_url_prefixes: Sequence[str] = (),
                  clock_skew: timedelta = timedelta(minutes=5), extension_domain: str | None = None,
                  controller_id: str | None = None) -> IntakeInput:
    """Check an OpenDSR body and map it to a `NewRequest`; IntakeInvalid names every problem.

    The clock starts at `now`, the server's receipt: `submitted_time` is the caller's word (kept in
    the received event as `submitted_at`), so a caller cannot back-date the legal deadline. The
    spec sets no age limit on it; one in the future (beyond `clock_skew`) is refused as nonsense.
    `extensions[extension_domain]` (our processor domain) may carry `country` and `regime`.
    """
    try:
        model = OpenDsrBody.model_validate(body)
    except ValidationError as exc:
        raise IntakeInvalid(_pydantic_problems(exc)) from None
    problems: list[tuple[Loc, str]] = []

    request_id = model.subject_request_id.strip().lower()
    if not _UUID.match(request_id):
        problems.append((("subject_request_id",), "must be a UUID (version 4), e.g. 7a1c7e46-3f63-4f7c-9a1e-2b0e6c1d5f3a"))

    kind = TYPES.get(model.subject_request_type.strip().lower())
    if kind is None:
        problems.append((("subject_request_type",), f"must be one of {', '.join(TYPES)}"))

    submitted: datetime | None = None
    text = model.submitted_time.strip()
    if not _RFC3339.match(text):
        problems.append((("submitted_time",), "must be an RFC 3339 time with an offset, e.g. 2026-03-02T10:00:00Z"))
    else:
        try:
            submitted = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
            submitted.astimezone(UTC)  # kept in UTC: 0001-01-01T00:00:00+04:00 would fall before year 1
        except (ValueError, OverflowError):
            submitted = None
            problems.append((("submitted_time",), "is not a real date and time (in UTC)"))
    if submitted is not None and submitted > now + clock_skew:
        problems.append((("submitted_time",), "must not be in the future"))

    ours: dict[str, Any] = {}
    for domain, value in (model.extensions or {}).items():
        if not isinstance(value, dict):
            problems.append((("extensions", domain), "must be an object (keyed by processor domain)"))
        elif extension_domain is not None and domain.strip().lower() == extension_domain:
            ours = value  # other processors' extensions are theirs, not ours to judge
    for name in sorted(set(ours) - set(OUR_EXTENSIONS)):
        problems.append((("extensions", str(extension_domain), name),
                         "not an extension of this processor (" + ", ".join(OUR_EXTENSIONS) + ")"))
    country = model.country
    for name in OUR_EXTENSIONS:
        value = ours.get(name)
        if value is not None and not isinstance(value, str):
            problems.append((("extensions", str(extension_domain), name), "must be a string"))
        elif value is not None and name == "country":
            country = value

    regime: Regime | None = None
    ext_regime = ours.get("regime") if isinstance(ours.get("regime"), str) else None
    spellings = [(name, value) for name, value in (("regulation", model.regulation), ("regime", model.regime or ext_regime))
                 if value is not None]
    if not spellings:
        problems.append((("regulation",), "required: one of " + ", ".join(sorted({r.value for r in REGULATIONS.values()}))))
    for name, value in spellings:
        found = REGULATIONS.get(value.strip().lower().replace("_", "-"))
        if found is None:
            problems.append(((name,), "must be one of " + ", ".join(sorted({r.value for r in REGULATIONS.values()}))))
        elif regime is not None and found != regime:
            problems.append(((name,), "says another regime than regulation"))
        regime = regime or found

    email: str | None = None
    email_index = 0
    for index, identity in enumerate(model.subject_identities):
        where: Loc = ("subject_identities", index)
        if identity.identity_type.strip().lower() != "email":
            problems.append(((*where, "identity_type"), "must be email (subjects are matched by e-mail address)"))
            continue
        fmt = identity.identity_format.strip().lower()
        if fmt == "sha256":
            problems.append(((*where, "identity_format"),
                             "an e-mail is needed to reach the subject: send the address raw, not hashed"))
            continue
        if fmt != "raw":
            problems.append(((*where, "identity_format"), "must be raw"))
            continue
        if email is not None:
            problems.append((where, "one e-mail identity per request"))
            continue
        try:
            email, email_index = normalise_email(identity.identity_value, field="identity_value"), index
        except IdentityError as exc:
            problems.append(((*where, "identity_value"), str(exc).split(": ", 1)[-1]))
            email = ""  # found, but bad: no "missing" complaint below
    if email is None and not any(loc[:1] == ("subject_identities",) for loc, _ in problems):
        problems.append((("subject_identities",), "must hold one identity of type email"))

    urls: list[str] = []
    for index, url in enumerate(model.status_callback_urls):
        reason = check_callback_url(url, callback_url_prefixes)
        if reason:
            problems.append((("status_callback_urls", index), reason))
        elif url not in urls:
            urls.append(url)

    if problems:
        raise IntakeInvalid(problems)
    assert kind is not None and regime is not None and submitted is not None and email
    try:
        new = parse_new_request(type=kind, email=email, regime=regime, country=country, received=now,
                                submitted_at=submitted, channel=CHANNEL)
    except RequestInputError as exc:
        loc = ("subject_identities", email_index, "identity_value") if exc.field == "email" else \
            _NEW_REQUEST_LOC.get(exc.field, (exc.field,))
        raise IntakeInvalid([(loc, str(exc).split(": ", 1)[-1])]) from None
    content = {"subject_request_id": request_id, "type": kind.value, "email": email, "regime": regime.value,
               "country": new.country, "submitted_time": format_timestamp(submitted), "callbacks": sorted(urls)}
    if controller_id is not None:  # the same id from another controller is other content
        content["controller"] = controller_id
    fingerprint = hmac.new(key, canonical_json(content).encode("utf-8"), hashlib.sha256).hexdigest()
    return IntakeInput(request_id, new, identity_hash("email", email, key), tuple(urls), fingerprint, controller_id)


# -- outcomes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeNotice:
    """What happened about a code on this call."""

    request_id: str  # the request the code is for (the first one, for a duplicate)
    sent: bool  # a new code went out on this call
    expires_at: str | None  # of the usable code, if there is one
    #: Why no code went out although none is usable: request_limit, identity_limit, too_many_failures.
    withheld: str | None = None


@dataclass(frozen=True)
class IntakeOutcome:
    state: RequestState
    created: bool  # False: the same request was submitted before (idempotent answer)
    duplicate_of: str | None
    code: CodeNotice | None


SmtpConfigProvider = Callable[[], SmtpConfig | None]


@dataclass(frozen=True)
class CodeLimits:
    """How many codes, and how many wrong guesses, the public intake allows.

    A guess has a one-in-a-million chance; these caps keep the chance of verifying someone else's
    request by guessing at `failures_per_request` in a million (5e-6 by default), however often the
    request (or a new one for the same address) is submitted again.

    Attributes:
        code_lifetime: How long an e-mailed code is valid.
        attempts_per_code: Wrong guesses one code takes before it is used up.
        failures_per_request: Wrong guesses a request takes over all its codes; the last one
            cancels the request (recorded in the ledger, reason without personal data).
        codes_per_request: Codes one request is ever sent.
        codes_per_request_per_window: Codes one request is sent within `window`.
        codes_per_identity_per_window: Codes one subject (identity hash) is sent within `window`,
            over every request id that names the address: new ids buy no new codes.
        window: The sliding window of the two caps above.
    """

    code_lifetime: timedelta = timedelta(minutes=10)
    attempts_per_code: int = 3
    failures_per_request: int = 5
    codes_per_request: int = 5
    codes_per_request_per_window: int = 3
    codes_per_identity_per_window: int = 5
    window: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        for name in ("attempts_per_code", "failures_per_request", "codes_per_request",
                     "codes_per_request_per_window", "codes_per_identity_per_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.code_lifetime <= timedelta(0) or self.window <= timedelta(0):
            raise ValueError("code_lifetime, window: must be positive")


class Intake:
    """The public intake over a `DsrService` (the HTTP door in doors.api.intake is a thin shell)."""

    def __init__(self, service: DsrService, smtp_config_provider: SmtpConfigProvider, *,
                 duplicate_window: timedelta = timedelta(days=7),
                 code_lifetime: timedelta = timedelta(minutes=10),
                 max_attempts: int = 3,
                 max_codes: int = 5,
                 limits: CodeLimits | None = None,
                 callback_url_prefixes: Sequence[str] = (),
                 clock_skew: timedelta = timedelta(minutes=5),
                 default_controller_id: str = DEFAULT_CONTROLLER_ID) -> None:
        self.service = service
        self.smtp_config_provider = smtp_config_provider
        self.duplicate_window = duplicate_window
        self.limits = limits or CodeLimits(code_lifetime=code_lifetime, attempts_per_code=max_attempts,
                                           codes_per_request=max_codes)
        self.callback_url_prefixes = tuple(callback_url_prefixes)
        self.clock_skew = clock_skew
        self.default_controller_id = default_controller_id

    @property
    def code_lifetime(self) -> timedelta:
        return self.limits.code_lifetime

    @property
    def max_attempts(self) -> int:
        return self.limits.attempts_per_code

    @property
    def _key(self) -> bytes:
        return self.service.settings.identity_hmac_key

    @property
    def _engine(self) -> Any:
        return self.service.ledger.engine

    @property
    def _read_engine(self) -> Any:
        return self.service.ledger.read_engine

    def _smtp(self) -> SmtpConfig:
        config = self.smtp_config_provider()
        if config is None:
            raise IntakeUnavailable(NOT_CONFIGURED)
        return config

    # -- submit ----------------------------------------------------------------------------------

    def submit(self, body: object, *, controller_id: str | None = None,
               extension_domain: str | None = None) -> IntakeOutcome:
        """Record an OpenDSR request (idempotent on its id), link it if a duplicate, send a code.

        `controller_id`: the controller whose signature the body carried (None: the default one,
        the company's web form). A signing controller has verified its subject itself (the
        controller's role in OpenDSR): its request is recorded as verified by it, and no code is
        e-mailed. Unsigned requests are verified by the e-mailed code (our extension).
        """
        config: SmtpConfig | None = None
        unavailable: IntakeUnavailable | None = None
        if controller_id is None:
            try:
                config = self._smtp()
            except IntakeUnavailable as exc:
                unavailable = exc  # codes need mail; an opt-out needs no code, so it is taken without
        now = datetime.now(UTC)
        try:
            parsed = parse_opendsr(body, key=self._key, now=now, callback_url_prefixes=self.callback_url_prefixes,
                                   clock_skew=self.clock_skew, extension_domain=extension_domain,
                                   controller_id=controller_id)
        except IntakeInvalid:
            if unavailable is not None:
                raise unavailable from None
            raise
        if unavailable is not None and parsed.new.type not in UNVERIFIED_TYPES:
            raise unavailable
        request_id = parsed.request_id
        duplicate_of = self._record_intake(parsed, now)
        try:
            submitted = self.service.submit(parsed.new, actor=ACTOR, request_id=request_id)
            state, created = submitted.state, submitted.created
        except RequestInputError as exc:
            if not self.service.ledger.exists(request_id):
                self._release(parsed)
            if "already exists" in str(exc):
                raise IntakeConflict(f"subject_request_id {request_id} is already used by another request") from None
            raise IntakeInvalid([(_NEW_REQUEST_LOC.get(exc.field, (exc.field,)), str(exc).split(": ", 1)[-1])]) from None
        except LedgerError:
            if not self.service.ledger.exists(request_id):
                raise
            state, created = self.service.state(request_id), False  # a twin POST recorded it first
        register_callbacks(self.service, request_id, parsed.callback_urls, current_status=opendsr_status(state))
        code: CodeNotice | None = None
        if duplicate_of is not None:
            state = self._link_duplicate(request_id, duplicate_of)
            if config is not None and parsed.new.type not in UNVERIFIED_TYPES:
                code = self._code_if_needed(duplicate_of, config)
        elif parsed.new.type in UNVERIFIED_TYPES:
            pass  # a CCPA opt-out "need not be a verifiable consumer request" (11 CCR 7026): no code
        elif config is not None:
            code = self._code_if_needed(request_id, config)
        else:
            state = self._attested(request_id, str(controller_id))
        return IntakeOutcome(state, created, duplicate_of, code)

    def _attested(self, request_id: str, controller_id: str) -> RequestState:
        """A signed controller's request: verified by that controller (idempotent)."""
        state = self.service.state(request_id)
        if state.verified or state.closed:
            return state
        try:
            return self.service.verify(request_id, method=CONTROLLER_METHOD, actor=f"controller:{controller_id}"[:64],
                                       note="identity verified by the OpenDSR controller that signed the request")
        except RequestStateError:
            return self.service.state(request_id)  # a twin submission verified it first

    def cancel_pending(self, request_id: str) -> RequestState:
        """The controller withdraws a request (OpenDSR section 9): allowed while it is pending only.

        Raises UnknownRequest for an id this door did not take, RequestStateError once it has
        started (in progress or closed): the office cancels those, with a reason.
        """
        if self._intake_row(request_id) is None:
            raise UnknownRequest(request_id)
        state = self.service.state(request_id)
        if opendsr_status(state) != "pending":
            raise RequestStateError(f"request {request_id} is {opendsr_status(state)}; only a pending request can "
                                    "be cancelled by its controller")
        state = self.service.cancel(request_id, reason=CANCELLED_BY_CONTROLLER, actor=ACTOR)
        log.info("request %s cancelled by its controller", request_id)
        return state

    def controller_id(self, request_id: str) -> str:
        row = self._intake_row(request_id)
        return str((row or {}).get("controller_id") or self.default_controller_id)

    def _intake_row(self, request_id: str) -> Mapping[str, Any] | None:
        with self._read_engine.connect() as conn:
            row = conn.execute(select(intake_requests).where(intake_requests.c.request_id == request_id)).mappings().first()
        return dict(row) if row is not None else None

    def is_intake_request(self, request_id: str) -> bool:
        return self._intake_row(request_id) is not None

    def _record_intake(self, parsed: IntakeInput, now: datetime) -> str | None:
        """Claim the id (and, for a first request, the subject+type); returns what it duplicates."""
        request_id, t = parsed.request_id, intake_primaries
        for _ in range(_CLAIM_ATTEMPTS):
            row = self._intake_row(request_id)
            if row is not None:
                if not hmac.compare_digest(row["fingerprint"], parsed.fingerprint):
                    raise IntakeConflict(f"subject_request_id {request_id} was already submitted with other content")
                return row["duplicate_of"]
            if self.service.ledger.exists(request_id):
                raise IntakeConflict(f"subject_request_id {request_id} is already used by another request")
            first, seen = self._duplicate_target(parsed, now)
            stamp = format_timestamp(now)
            try:
                with self._engine.begin() as conn:
                    if first is None:  # this request becomes the one later duplicates link to
                        claim = {"request_id": request_id, "received_at": format_timestamp(parsed.new.received),
                                 "claimed_at": stamp}
                        if seen is None:
                            conn.execute(insert(t).values(identity_hash=parsed.identity_hash,
                                                          type=parsed.new.type.value, **claim))
                        elif conn.execute(update(t).where(
                                t.c.identity_hash == parsed.identity_hash, t.c.type == parsed.new.type.value,
                                t.c.request_id == seen).values(**claim)).rowcount != 1:
                            raise _Raced
                    conn.execute(insert(intake_requests).values(
                        request_id=request_id, fingerprint=parsed.fingerprint, duplicate_of=first, created_at=stamp,
                        controller_id=parsed.controller_id))
                return first
            except (IntegrityError, _Raced):
                continue
        raise LedgerError("could not record the request (too many concurrent submissions); try again")

    def _release(self, parsed: IntakeInput) -> None:
        """Undo a claim whose request the ledger refused (so the id can be submitted again, fixed)."""
        t = intake_primaries
        with self._engine.begin() as conn:
            conn.execute(delete(intake_requests).where(intake_requests.c.request_id == parsed.request_id))
            conn.execute(delete(t).where(t.c.identity_hash == parsed.identity_hash, t.c.type == parsed.new.type.value,
                                         t.c.request_id == parsed.request_id))

    def _duplicate_target(self, parsed: IntakeInput, now: datetime) -> tuple[str | None, str | None]:
        """(the open request of the same subject and type within the window, the current claim)."""
        t, kind, received = intake_primaries, parsed.new.type.value, parsed.new.received
        with self._read_engine.connect() as conn:
            primary = conn.execute(select(t).where(t.c.identity_hash == parsed.identity_hash,
                                                   t.c.type == kind)).mappings().first()
            others = set(conn.execute(select(identities_table.c.request_id).where(
                identities_table.c.hash == parsed.identity_hash, identities_table.c.kind == "email")).scalars())
        seen = primary["request_id"] if primary is not None else None
        candidates: list[tuple[datetime, str]] = []
        if seen is not None:
            others.add(seen)
            if not self.service.ledger.exists(seen):  # claimed by a submission still being recorded
                first_received = parse_timestamp(primary["received_at"])  # type: ignore[index]
                if (now - parse_timestamp(primary["claimed_at"]) <= _PENDING_CLAIM  # type: ignore[index]
                        and abs(received - first_received) <= self.duplicate_window):
                    candidates.append((first_received, seen))
        for other in sorted(others - {parsed.request_id}):
            if not self.service.ledger.exists(other):
                continue
            state = self.service.state(other)
            first_received = parse_timestamp(state.received_at)
            if state.type == kind and not state.closed and abs(received - first_received) <= self.duplicate_window:
                candidates.append((first_received, other))
        return (min(candidates)[1] if candidates else None), seen

    def _link_duplicate(self, request_id: str, first: str) -> RequestState:
        """Link a duplicate to the first request and cancel it (idempotent)."""

        def once(chain: Sequence[LedgerEvent]) -> None:
            if any(e.type == LINKED and e.payload.get("to") for e in chain):
                raise _AlreadyLinked

        days = self.duplicate_window.days or round(self.duplicate_window.total_seconds() / 86400, 2)
        try:
            self.service.ledger.append(request_id, LINKED, {"to": first, "reason": "duplicate", "window_days": days},
                                       actor=ACTOR, guard=once)
        except _AlreadyLinked:
            pass
        else:
            def once_back(chain: Sequence[LedgerEvent]) -> None:
                if any(e.type == LINKED and e.payload.get("from") == request_id for e in chain):
                    raise _AlreadyLinked

            try:
                self.service.ledger.append(first, LINKED, {"from": request_id, "reason": "duplicate"},
                                           actor=ACTOR, guard=once_back)
            except (_AlreadyLinked, UnknownRequest):
                pass
            log.info("request %s is a duplicate of %s: linked and cancelled", request_id, first)
        state = self.service.state(request_id)
        if not state.closed:
            try:
                state = self.service.cancel(
                    request_id, actor=ACTOR,
                    reason=f"duplicate of request {first}: the same subject asked for the same {state.type} within "
                           f"{days} days while it was open; only the first is carried out")
            except RequestStateError:
                state = self.service.state(request_id)
        return state

    # -- codes -----------------------------------------------------------------------------------

    def _code_hmac(self, request_id: str, code: str) -> str:
        return hmac.new(self._key, f"opendsr-code:{request_id}:{code}".encode(), hashlib.sha256).hexdigest()

    def _code_if_needed(self, request_id: str, config: SmtpConfig) -> CodeNotice | None:
        """A code for an unverified, open web-form request that has no usable one (else None or the live one)."""
        if not self.is_intake_request(request_id) or not self.service.ledger.exists(request_id):
            return None  # another door's request (the officer verifies it), or one still being recorded
        state = self.service.state(request_id)
        if state.verified or state.closed:
            return None
        return self.issue_code(request_id, config)

    def issue_code(self, request_id: str, config: SmtpConfig | None = None) -> CodeNotice:
        """E-mail a new code unless a usable one exists, or a cap says no (see `CodeLimits`)."""
        config = config or self._smtp()
        limits = self.limits
        now = datetime.now(UTC)
        stamp, expires = format_timestamp(now), now + limits.code_lifetime
        expires_at, window_start = format_timestamp(expires), format_timestamp(now - limits.window)
        code = f"{secrets.randbelow(1_000_000):06d}"
        digest = self._code_hmac(request_id, code)
        subject = self.service.state(request_id).identity_hash
        t = verification_codes
        try:
            with self._engine.begin() as conn:
                # Written first: concurrent issuers for one subject queue here, so the counts below hold.
                if conn.execute(update(code_identities).where(code_identities.c.identity_hash == subject)
                                .values(last_issued_at=stamp)).rowcount != 1:
                    conn.execute(insert(code_identities).values(identity_hash=subject, last_issued_at=stamp))
                row = conn.execute(select(t).where(t.c.request_id == request_id)).mappings().first()
                if row is not None:
                    live = row["used_at"] is None and row["attempts"] < limits.attempts_per_code \
                        and row["expires_at"] > stamp and row["failures"] < limits.failures_per_request
                    if live or row["used_at"] is not None:
                        return CodeNotice(request_id, sent=False, expires_at=row["expires_at"] if live else None)
                    if row["failures"] >= limits.failures_per_request:
                        return CodeNotice(request_id, sent=False, expires_at=None, withheld="too_many_failures")
                    if row["codes_sent"] >= limits.codes_per_request:
                        return CodeNotice(request_id, sent=False, expires_at=None, withheld="request_limit")
                issued = code_issues.c
                recent_here = conn.execute(select(func.count()).where(
                    issued.request_id == request_id, issued.issued_at > window_start)).scalar_one()
                recent_subject = conn.execute(select(func.count()).where(
                    issued.identity_hash == subject, issued.issued_at > window_start)).scalar_one()
                if recent_here >= limits.codes_per_request_per_window:
                    log.info("request %s: no new code (%d sent in the window)", request_id, recent_here)
                    return CodeNotice(request_id, sent=False, expires_at=None, withheld="request_limit")
                if recent_subject >= limits.codes_per_identity_per_window:
                    log.info("request %s: no new code (subject %s had %d in the window)", request_id, subject,
                             recent_subject)
                    return CodeNotice(request_id, sent=False, expires_at=None, withheld="identity_limit")
                if row is None:
                    conn.execute(insert(t).values(request_id=request_id, code_hmac=digest, expires_at=expires_at,
                                                  attempts=0, used_at=None, codes_sent=1, failures=0))
                    number = 1
                else:
                    number = row["codes_sent"] + 1
                    # attempts restart with the new code; failures (the request's whole budget) do not.
                    if conn.execute(update(t).where(t.c.request_id == request_id,
                                                    t.c.codes_sent == row["codes_sent"]).values(
                            code_hmac=digest, expires_at=expires_at, attempts=0, codes_sent=number)).rowcount != 1:
                        return CodeNotice(request_id, sent=False, expires_at=None)  # a twin just issued one
                conn.execute(insert(code_issues).values(identity_hash=subject, request_id=request_id,
                                                        issued_at=stamp))
        except IntegrityError:
            return CodeNotice(request_id, sent=False, expires_at=None)  # a twin just issued the first
        address = self.service.ledger.identity(request_id)
        try:
            if not address:
                raise NotifyError("email: no address on file")
            self._send(config, address, request_id, code, expires)
        except NotifyError as exc:
            with self._engine.begin() as conn:  # a code nobody received must not be usable, nor block a new one
                conn.execute(update(t).where(t.c.request_id == request_id, t.c.code_hmac == digest)
                             .values(expires_at=stamp))
            log.warning("verification code for request %s not sent: %s", request_id, exc)
            return CodeNotice(request_id, sent=False, expires_at=None)
        self.service.ledger.append(request_id, CODE_SENT, {"expires_at": expires_at, "code_number": number,
                                                           "channel": "email"}, actor=ACTOR)
        log.info("verification code %d for request %s sent (valid until %s)", number, request_id, expires_at)
        return CodeNotice(request_id, sent=True, expires_at=expires_at)

    def _send(self, config: SmtpConfig, address: str, request_id: str, code: str, expires: datetime) -> None:
        kind = self.service.state(request_id).type
        what = {"access": "send you a copy of", "portability": "send you a portable copy of",
                "erasure": "erase"}.get(kind, "act on")
        minutes = int(self.code_lifetime.total_seconds() // 60)
        body = (
            f"We received a request to {what} the personal data we hold about this e-mail address.\n\n"
            f"Your verification code: {code}\n\n"
            f"Enter it on the request page within {minutes} minutes (before {expires:%H:%M} UTC); "
            f"{self.max_attempts} attempts are allowed.\n"
            f"Request reference: {request_id}\n\n"
            "If you did not make this request, ignore this message: nothing is done with your data "
            "without this code.\n"
        )
        # The channel sends to the config's recipients: here, the subject alone.
        channel = SmtpChannel(config.model_copy(update={"recipients": (address,)}))
        channel.send(Notice(subject="Your verification code", body=body, fields={}))

    def verify_code(self, request_id: str, code: object) -> RequestState:
        """Check a code (atomic attempt count, constant-time compare); on success the request is verified.

        Every wrong guess counts twice: against the code (`attempts_per_code`) and against the
        request over all its codes (`failures_per_request`); the guess that spends the request's
        budget cancels it.
        """
        if not isinstance(code, str) or not _CODE.match(code.strip()):
            raise IntakeInvalid([(("code",), "must be the 6 digits from the e-mail")])
        digest = self._code_hmac(request_id, code.strip())
        stamp = format_timestamp(datetime.now(UTC))
        limits, t = self.limits, verification_codes
        with self._engine.begin() as conn:
            row = conn.execute(select(t.c.code_hmac, t.c.used_at, t.c.codes_sent)
                               .where(t.c.request_id == request_id)).first()
            matches = row is not None and hmac.compare_digest(row.code_hmac, digest)
            counted = False
            if row is not None:
                # codes_sent pins the code compared above: a new one issued meanwhile makes this a no-op.
                usable = (t.c.request_id == request_id, t.c.codes_sent == row.codes_sent, t.c.used_at.is_(None),
                          t.c.attempts < limits.attempts_per_code, t.c.failures < limits.failures_per_request,
                          t.c.expires_at > stamp)
                change = {"attempts": t.c.attempts + 1, "used_at": stamp} if matches else \
                    {"attempts": t.c.attempts + 1, "failures": t.c.failures + 1}
                counted = conn.execute(update(t).where(*usable).values(**change)).rowcount == 1
            after = conn.execute(select(t.c.attempts, t.c.failures).where(t.c.request_id == request_id)).first()
        if matches and (counted or row.used_at is not None):  # type: ignore[union-attr]
            if not counted:  # the same right code again (a double submit): the answer it had
                return self.service.state(request_id)
            try:
                state = self.service.verify(request_id, method=VERIFY_METHOD, note=VERIFY_NOTE, actor=SUBJECT_ACTOR)
            except RequestStateError:
                state = self.service.state(request_id)
                if state.closed:
                    raise
            log.info("request %s verified by e-mailed code", request_id)
            return state
        if counted and after is not None:
            failures_left = max(limits.failures_per_request - after.failures, 0)
            self.service.ledger.append(request_id, CODE_FAILED, {
                "attempt": after.attempts,
                "attempts_left": min(max(limits.attempts_per_code - after.attempts, 0), failures_left),
                "failures": after.failures, "failures_left": failures_left}, actor=ACTOR)
            log.info("request %s: verification code attempt %d failed (%d in all)", request_id, after.attempts,
                     after.failures)
            if failures_left == 0:
                self._cancel_unverified(request_id)
        raise CodeRefused()

    def _cancel_unverified(self, request_id: str) -> None:
        """The request's guessing budget is spent: cancel it (the reason holds no personal data)."""
        try:
            self.service.cancel(request_id, reason=TOO_MANY_FAILURES, actor=ACTOR)
        except RequestStateError:
            return  # already closed (a twin guess got here first, or the office closed it)
        log.warning("request %s cancelled: too many wrong verification codes", request_id)

    # -- status ----------------------------------------------------------------------------------

    def public_status(self, request_id: str) -> dict[str, Any]:
        """A web-form request's OpenDSR status: no personal data, no free text."""
        row = self._intake_row(request_id)
        if row is None:
            raise UnknownRequest(request_id)
        events = self.service.events(request_id)
        state = derive_state(events)
        view: dict[str, Any] = {
            "subject_request_id": request_id,
            "request_status": opendsr_status(state),
            "subject_request_type": state.type,
            "regulation": state.regime,
            "received_time": state.received_at,
            "updated_time": updated_time(events),
            "expected_completion_time": expected_completion_time(state, self._zones()),
        }
        if row["duplicate_of"]:
            view["request_status_reason"] = "duplicate"
            view["duplicate_of"] = row["duplicate_of"]
        elif state.status == Status.AWAITING_VERIFICATION:
            view["request_status_reason"] = "need_user_verification"
        return view

    def _zones(self) -> Mapping[Regime, str]:
        return self.service.policy.deadlines.rules().time_zones

    def valid_request_id(self, request_id: str) -> bool:
        return bool(_UUID.match(request_id))


def new_request_id() -> str:
    """A fresh OpenDSR id (for clients and tests)."""
    return str(uuid.uuid4())
