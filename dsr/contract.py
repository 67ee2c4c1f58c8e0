"""The connector contract: what every system connector offers, and the values it exchanges.

The flow never knows which vendor it talks to. It hands a connector a `Subject`, gets back
`RecordRef`s, asks for an export or an erasure decided per record by the policy, and re-queries.
These types live in the domain (not in `connectors/`) so that the service layer can drive a
connector without importing any vendor SDK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable


class DataCategory(StrEnum):
    """The privacy policy's categories of personal data (section 1 of the policy)."""

    IDENTITY = "identity"
    CONTACT = "contact"
    FINANCIAL = "financial"
    TRANSACTION = "transaction"
    TECHNICAL = "technical"
    PROFILE = "profile"
    USAGE = "usage"
    MARKETING = "marketing"  # "Marketing and Communications Data"


class ErasureAction(StrEnum):
    """What the policy decided for one record, and what the connector then did."""

    DELETE = "delete"
    ANONYMISE = "anonymise"
    RETAIN = "retain"  # kept untouched under an exemption (basis and end date recorded)


@dataclass(frozen=True, slots=True)
class Subject:
    """The person a request is about, as the connectors see them.

    `email` is already normalised (trimmed, lower-cased). `identity_hash` is the keyed hash that
    logs and evidence use in place of the address.
    """

    email: str = field(repr=False)  # a repr (in a log line, a traceback, a Prefect parameter) shows the hash only
    identity_hash: str


@dataclass(frozen=True, slots=True)
class RecordRef:
    """One record that matched the subject exactly, with the facts the policy decides on.

    `anchor_date` is the date an exemption's retention clock runs from (an order's date for tax
    records; for a `referenced` record, the date of the latest document that references it);
    connectors fill it where the data map names such a column.

    `jurisdiction` is the country whose tax law governs the record (e.g. the country of the
    subsidiary that keeps it); None leaves it to the regime's. `tax_record` says what the record is
    to tax law: "document", an accounting document of the books (an invoice, a payment);
    "referenced", a record such documents reference (the customer an invoice names). Connectors
    report these facts; `dsr.policy` decides what they mean.
    """

    system: str
    object: str
    id: str
    categories: tuple[DataCategory, ...]
    anchor_date: date | None = None
    jurisdiction: str | None = None
    tax_record: Literal["document", "referenced"] | None = None

    @property
    def key(self) -> str:
        return f"{self.system}/{self.object}/{self.id}"


@dataclass(frozen=True, slots=True)
class Record:
    """A record's fields, as exported for the subject."""

    ref: RecordRef
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ErasureDecision:
    """The policy's verdict for one record (regime x data category x legal basis)."""

    ref: RecordRef
    action: ErasureAction
    basis: str | None = None  # the legal basis that keeps (part of) the record
    retain_until: date | None = None


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What a connector did to one record."""

    ref: RecordRef
    action: ErasureAction
    done: bool  # False only when the vendor refused and the record is untouched
    already_gone: bool = False  # erasing what is already gone counts as done
    fields_cleared: tuple[str, ...] = ()
    basis: str | None = None
    retain_until: date | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A connector's answer to an erasure or purge: per-record outcomes plus the vendor's receipt."""

    system: str
    outcomes: tuple[RecordOutcome, ...] = ()
    vendor_receipt_id: str | None = None
    api_calls: int = 0

    @property
    def failed(self) -> tuple[RecordOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.done)


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """What a connector declares about itself: evidence needs its version, planning its limits."""

    system: str
    kind: str
    version: str
    # Ad audiences: erasure cannot be verified by re-query, and `erase(decisions, subject=...)`
    # takes the subject (the refs name audiences, not people).
    write_only: bool = False
    # Steps a person must do ("discover", "export", "erase"): the pipeline opens a manual task for
    # them and waits (Wistia has no delete endpoint; the website portal has no API at all).
    manual_steps: frozenset[str] = frozenset()
    rate_limit_per_second: float | None = None
    max_batch: int = 1
    objects: Sequence[str] = field(default_factory=tuple)


@runtime_checkable
class ManualInstructions(Protocol):
    """Optional: a connector with manual steps may say what the person must do, in words.

    The text goes to the assignee and into the evidence, so it names records by id only.
    """

    def manual_instructions(self, step: str, refs: Sequence[RecordRef]) -> str: ...


class ConnectorError(Exception):
    """A connector failed in a way worth reporting; the message never carries personal data."""


@runtime_checkable
class Connector(Protocol):
    """The operations every system offers (see DESIGN.md, 'The connector contract')."""

    @property
    def info(self) -> ConnectorInfo: ...

    def discover(self, subject: Subject) -> list[RecordRef]:
        """Every record that matches the identity exactly."""
        ...

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """All fields of the given records, streamed."""
        ...

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Carry out per-record decisions; idempotent (what is already gone is done)."""
        ...

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-query after erasure: every record that still matches the subject.

        The service compares this with the records the policy decided to retain; anything else
        left over means the erasure is not done. (DESIGN.md says `-> int`; the refs make the proof
        of erasure say *what* is left, not just how much.)
        """
        ...


# -- the other rights: rectification, restriction, objection, consent withdrawal, opt-out ----------
#
# Erasure and export are above. The other rights the privacy policy promises need two more
# abilities, each an optional Protocol a connector implements when its vendor has the API:
#
# * `Rectifier`: change the subject's fields in exactly the records discovery matched, then prove
#   it by re-reading them. Fields are named canonically (RECTIFIABLE_FIELDS); each connector maps
#   them to its own columns or properties (per object, from the data map) and leaves alone a field
#   an object does not carry. An outcome lists every field it changed, old and new value; the
#   values are transient: the runner turns them into keyed hashes (HMAC with the identity key)
#   before anything is written, so the ledger and evidence name the fields, never the values.
# * `MarketingSuppressor`: stop every use of the subject's data for marketing (restriction under
#   GDPR 18, objection under GDPR 21(2), withdrawn consent, the CCPA opt-out of sale and sharing):
#   unsubscribe from all marketing e-mail, set the vendor's opt-out flags, remove from ad
#   audiences. Each change is reported as a FieldChange with the flag's previous value (flags are
#   not personal data: they are recorded as they are), so `restore_marketing` (when a
#   restriction is lifted) puts back exactly what the suppression changed and nothing else: a
#   person who had opted out before the restriction stays opted out.
#
# A system whose vendor has no such API declares the step in `ConnectorInfo.manual_steps`
# ("rectify", "suppress", "restore") and may explain it through `ManualInstructions`; the runner
# then opens a manual task that `dsr task done` closes. A system listed for a request type in the
# data map whose connector neither implements the Protocol nor declares the step also gets a
# manual task (the safe side: a person checks). Which systems take which types is the data map's
# `request_types`: a system with no marketing use does not list objection, say.

#: The canonical names of the fields a rectification may change (the request, the CLI's
#: `--set NAME=VALUE` and every connector's mapping use these).
RECTIFIABLE_FIELDS: tuple[str, ...] = ("first_name", "last_name", "email", "phone", "postal_address",
                                       "company", "title")


class RightsAction(StrEnum):
    """What a rights step did to a record (the manual step of the same name opens a task)."""

    RECTIFY = "rectify"
    SUPPRESS = "suppress"  # marketing stopped: opt-outs set, unsubscribed, removed from audiences
    RESTORE = "restore"  # a lifted restriction: the suppression's changes put back


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field a rights step changed in one record.

    `field` is the canonical name for a rectification (RECTIFIABLE_FIELDS) and the vendor's flag
    for a suppression (e.g. "HasOptedOutOfEmail", "marketing_opt_in", "audience:1234").
    `vendor_field` is the system's own name (the column, property or object.field), for the
    evidence. For a rectification `old` and `new` are personal data: they live only in memory
    until the runner hashes them. For a suppression they are the flag's values as text
    ("true"/"false", "member"/"removed"), kept as they are so a restore can put `old` back.
    """

    field: str
    vendor_field: str
    # dataclasses.field spelled out: the attribute named `field` shadows the import in this body.
    old: str | None = dataclasses.field(default=None, repr=False)
    new: str | None = dataclasses.field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RightsOutcome:
    """What a connector did to one record for a rectification, suppression or restore."""

    ref: RecordRef
    action: RightsAction
    done: bool  # False only when the vendor refused and the record is untouched
    changes: tuple[FieldChange, ...] = ()  # what changed; empty with done=True: nothing needed changing
    not_held: tuple[str, ...] = ()  # rectify: canonical fields this record does not carry (left alone)
    error: str | None = None  # never personal data


@dataclass(frozen=True, slots=True)
class RightsReceipt:
    """A connector's answer to a rights step: per-record outcomes plus the vendor's receipt."""

    system: str
    action: RightsAction
    outcomes: tuple[RightsOutcome, ...] = ()
    vendor_receipt_id: str | None = None
    api_calls: int = 0

    @property
    def failed(self) -> tuple[RightsOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.done)


@runtime_checkable
class Rectifier(Protocol):
    """A system that can correct the subject's fields through its API."""

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Set the canonical fields in `changes` on exactly `refs` (each object's own mapping).

        Idempotent: a field that already has the new value is not a change. A field an object
        does not carry goes into `not_held`. An unknown canonical name is a ConnectorError.
        """
        ...

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Re-read `refs`: every record whose carried fields do not yet show the new values (empty: done)."""
        ...


@runtime_checkable
class MarketingSuppressor(Protocol):
    """A system that uses personal data for marketing and can stop (and resume) that use by API."""

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Unsubscribe from all marketing e-mail, set every opt-out flag, remove from ad audiences.

        Idempotent: a flag already set is not a change. `subject` is for write-only systems (ad
        audiences are removed from by the identity's hash, not by a record id).
        """
        ...

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Undo exactly the changes `suppressed` (the suppression's outcomes, as recorded) made:
        each FieldChange's `vendor_field` back to its `old` value. Flags the suppression did not
        change are left alone."""
        ...

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Re-read `refs`: every record still open to marketing (empty: done). Write-only systems
        (ConnectorInfo.write_only) cannot re-read and return []."""
        ...


# -- what a connector may offer besides the operations above -------------------------------------
#
# The runner and the retention purge ask for these with `isinstance`: a connector that lacks one
# simply does not take part in what it serves (nothing to close, no retention listing, ...).


@runtime_checkable
class Closeable(Protocol):
    """A connector holding a resource (a connection pool, a session, a limiter thread) until closed."""

    def close(self) -> None:
        """Let go of the resource; the runner and the purge call it once they are done with the connector."""
        ...


@runtime_checkable
class ConfirmsRemoval(Protocol):
    """A write-only (audience) connector that can say whether a done removal was confirmed.

    True: the vendor finished the removal (a job or segment status polled to its end), and the
    evidence says "removal confirmed"; False: the vendor only accepted it ("removal requested").
    """

    @property
    def confirms_removal(self) -> bool: ...


@runtime_checkable
class RetentionSource(Protocol):
    """A system the retention purge can list expired records of and delete them from."""

    def expired(self, category: DataCategory, cutoff: date) -> Iterator[RecordRef]:
        """Every record holding `category` whose retention date is before `cutoff`, streamed."""
        ...

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired records, in one of the vendor's batches (at most `info.max_batch`)."""
        ...


@runtime_checkable
class ListsExpiredOnce(Protocol):
    """A retention source that lists every object once, each at the cutoff of its own categories."""

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | None]) -> Iterator[RecordRef]:
        """Expired records of every object; `cutoff_of(categories)` is an object's cutoff (None: leave it out)."""
        ...


@runtime_checkable
class CountsExpired(Protocol):
    """A retention source that counts its expired records without listing them (a vendor's count query).

    The purge's guard then decides on counts, and its purge pass lists (`expired_all`) while it deletes.
    Both methods take `cutoff_of` as `expired_all` does and must agree with its listing at the same cutoffs.
    """

    def count_expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | None],
                          ) -> dict[tuple[DataCategory, ...], int]:
        """How many records have expired, per set of categories their object holds."""
        ...

    def expired_among(self, refs: Sequence[RecordRef],
                      cutoff_of: Callable[[tuple[DataCategory, ...]], date | None]) -> list[RecordRef]:
        """Those of `refs` (this system's records, e.g. the ones a legal hold protects) that have expired."""
        ...


@runtime_checkable
class CountsRecords(Protocol):
    """A system that can count all its records: the base of the purge's blast-radius guard."""

    def total_records(self) -> int: ...


@runtime_checkable
class ParallelPurge(Protocol):
    """A retention source whose `purge` is thread-safe: that many batches may be in flight at once."""

    purge_workers: int


def close_connector(connector: object) -> None:
    """Close `connector` if it holds anything (see Closeable); anything else needs no closing."""
    if isinstance(connector, Closeable):
        connector.close()
