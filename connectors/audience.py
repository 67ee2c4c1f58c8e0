"""The base of the write-only audience connectors (Google Ads user lists, LinkedIn DMP segments)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.base import (
    ConnectorError,
    ErasureAction,
    ErasureDecision,
    FieldChange,
    Receipt,
    RecordRef,
    RightsAction,
    RightsOutcome,
    RightsReceipt,
    Subject,
    subject_email,
)
from connectors.http import HttpConnector


class AudienceConnector(HttpConnector):
    """What the write-only audience connectors share (Google Ads user lists, LinkedIn DMP segments).

    An audience ref names a list, not a person: erasing it needs the subject's address, which
    `discover` keeps (`_subjects`, identity hash -> address) or `erase(..., subject=)` gives.
    Subclasses set `_subjects` and `_settings.categories`, and the class attributes `OBJECT` (the ref's
    object name) and `REFS` (what its refs are called, for errors).
    """

    OBJECT: ClassVar[str]
    REFS: ClassVar[str]
    _system: str
    _settings: Any
    _subjects: dict[str, str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.OBJECTS = (cls.OBJECT,)

    def _foreign(self, ref: RecordRef) -> str | None:
        """Why `ref` is not one of this system's audiences (another system's, another object), or None."""
        return HttpConnector._problem_with(self, ref)

    def _subject_email(self, subject: Subject | None) -> str:
        if subject is not None:
            return subject_email(subject)
        if len(self._subjects) == 1:
            return next(iter(self._subjects.values()))
        raise ConnectorError(
            f"systems.{self._system}: erase needs the subject ({self.REFS} do not say whom to remove): call "
            "discover(subject) on this connector first, or pass erase(decisions, subject=...)"
            + (" (discover saw more than one subject)" if self._subjects else ""))

    def _ref(self, audience: str) -> RecordRef:
        return RecordRef(self._system, self.OBJECT, audience, tuple(self._settings.categories))

    @property
    def confirms_removal(self) -> bool:
        """Whether a done removal means the vendor finished it (a job or segment status polled to its end)
        rather than merely accepted it; the runner records "removal confirmed" or "removal requested"."""
        return False

    # --- marketing suppression (dsr.contract.MarketingSuppressor) ---

    def erase(self, decisions: Sequence[ErasureDecision], subject: Subject | None = None) -> Receipt:
        raise NotImplementedError

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Restriction, objection, consent withdrawal, opt-out: remove the subject from every given audience.

        The same removal as an erasure (confirmed where `confirms_removal`). Each audience's change says
        what is known: membership was not readable (``old``), the removal was confirmed or only requested
        (``new``).
        """
        receipt = self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs], subject=subject)
        new = "removed (confirmed)" if self.confirms_removal else "removal requested"
        outcomes = tuple(
            RightsOutcome(o.ref, RightsAction.SUPPRESS, o.done, error=o.error,
                          changes=(FieldChange(f"audience:{o.ref.id}", f"{self.OBJECT}:{o.ref.id}",
                                               old="not readable", new=new),) if o.done else ())
            for o in receipt.outcomes)
        return RightsReceipt(self._system, RightsAction.SUPPRESS, outcomes, receipt.vendor_receipt_id,
                             receipt.api_calls)

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """A lifted restriction adds nobody back: membership was never readable, so re-adding could upload a
        person who was not a member. The audience's owner refills it from the consented source lists."""
        subject_email(subject)
        return RightsReceipt(self._system, RightsAction.RESTORE,
                             tuple(RightsOutcome(o.ref, RightsAction.RESTORE, True) for o in suppressed))

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Write-only audiences cannot be re-read: always ``[]`` (`info.write_only` says so)."""
        subject_email(subject)
        return []
