"""The connector contract: what every system connector offers, and the values it exchanges.

The flow never knows which vendor it talks to. It hands a connector a `Subject`, gets back
`RecordRef`s, asks for an export or an erasure decided per record by the policy, and re-queries.
These types live in the domain (not in `connectors/`) so that the service layer can drive a
connector without importing any vendor SDK.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


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
    """One record that matched the subject exactly.

    `anchor_date` is the date an exemption's retention clock runs from (an order's date for tax
    records); connectors fill it where the data map names such a column.
    """

    system: str
    object: str
    id: str
    categories: tuple[DataCategory, ...]
    anchor_date: date | None = None

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
