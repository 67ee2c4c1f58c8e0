"""A system with no API at all (the website's admin portal, say): a person does every step.

The pipeline opens a manual task with this system's instructions, notifies the assignee, and
waits; `dsr task done ID SYSTEM --note ... [--attach FILE]` records what the person did (and,
for an access request, attaches the export) and resumes the request.

Settings (`systems.<name>.settings`):
    instructions: {erase: "...", export: "..."}   what the person must do, in words (no personal data)
    categories: [identity, contact, ...]           what the system holds (for the evidence's scope)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import (
    ConnectorConfigError,
    ConnectorInfo,
    DataCategory,
    ErasureDecision,
    Receipt,
    Record,
    RecordRef,
    Subject,
    describe_validation_error,
    outcome_for,
)

KIND = "manual"
VERSION = "manual/1"

DEFAULT_INSTRUCTIONS = {
    "erase": "Find every record of the subject named in the request (`dsr status ID --subject` shows its "
             "address to an officer, as does the task's page in the console) and delete it; where the law "
             "keeps a record, remove the personal fields instead. "
             "Then record what you did: dsr task done ID SYSTEM --note '...'.",
    "export": "Export every record of the subject (CSV or JSON), then attach it: "
              "dsr task done ID SYSTEM --note '...' --attach FILE.",
}


class ManualSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instructions: dict[str, str] = Field(default_factory=dict)
    categories: tuple[DataCategory, ...] = ()


class ManualConnector:
    """Every step is a person's; the connector only says what to do."""

    def __init__(self, system: str, settings: ManualSettings) -> None:
        self._system, self._settings = system, settings

    @property
    def info(self) -> ConnectorInfo:
        return ConnectorInfo(system=self._system, kind=KIND, version=VERSION,
                             manual_steps=frozenset({"discover", "export", "erase"}))

    def manual_instructions(self, step: str, refs: Sequence[RecordRef]) -> str:
        return self._settings.instructions.get(step) or DEFAULT_INSTRUCTIONS.get(step, f"Do the {step} step by hand.")

    def discover(self, subject: Subject) -> list[RecordRef]:
        return []  # nothing to query: the person finds the records

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        return iter(())

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        outcomes = tuple(outcome_for(d, done=False, error="no API: done by hand (manual task)") for d in decisions)
        return Receipt(system=self._system, outcomes=outcomes)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        return []  # the person's confirmation is the proof (recorded with the task)


def create(system: str, settings: Mapping[str, Any]) -> ManualConnector:
    try:
        parsed = ManualSettings.model_validate(dict(settings))
    except ValidationError as exc:
        raise ConnectorConfigError(describe_validation_error(f"systems.{system}.settings", exc)) from None
    return ManualConnector(system, parsed)
