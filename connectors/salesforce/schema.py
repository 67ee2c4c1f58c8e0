"""What an org's `describe` says about an object's fields, kept per process, and values as those fields take them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.process_cache import ProcessCache

#: How long an object's describe is reused by the connectors of a process. Describing every object for
#: each request would be 7 of its ~25 calls; an org's schema changes rarely, and a field added or removed
#: is seen within this time (a missing one fails the run with its config path).
DESCRIBE_TTL_SECONDS = 900.0

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "picklist", "multipicklist", "combobox", "url",
                         "encryptedstring"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class FieldInfo:
    name: str
    type: str
    length: int
    nillable: bool
    updateable: bool


@dataclass(frozen=True, slots=True)
class Schema:
    """What `describe` says about an object's fields, by lower-cased API name, in describe order."""

    fields: Mapping[str, FieldInfo]

    @classmethod
    def of(cls, answer: Mapping[str, Any]) -> Schema:
        """The schema in a describe answer (its ``fields`` list)."""
        return cls({
            str(f["name"]).lower(): FieldInfo(str(f["name"]), str(f.get("type", "")), int(f.get("length") or 0),
                                              bool(f.get("nillable")), bool(f.get("updateable")))
            for f in answer.get("fields", [])
        })

    def get(self, name: str) -> FieldInfo | None:
        return self.fields.get(name.lower())

    def name(self, name: str) -> str:
        """A field's API name as the org spells it."""
        return self.fields[name.lower()].name


#: Objects' describe answers (their field lists, or None for an object the org lacks) by org and object.
DESCRIBES: ProcessCache[tuple[str, str], Any] = ProcessCache(DESCRIBE_TTL_SECONDS)


def fit(info: FieldInfo, value: Any) -> tuple[str | None, Any]:
    """(problem, value as the field accepts it): strings cut to the field's length (Salesforce refuses
    longer ones with STRING_TOO_LONG: FirstName holds 40 characters)."""
    if not info.updateable:
        return "Salesforce does not allow updating this field", None
    if value is None:
        if info.type == "boolean":
            return None, False  # Salesforce checkboxes are never null: clearing one unticks it
        if not info.nillable:
            return "the field cannot be empty in Salesforce; give a replacement value", None
        return None, None
    if info.type in _TEXT_TYPES:
        if not isinstance(value, str):
            return "the field holds text; give a string", None
        if info.length and len(value) > info.length:
            value = value[: info.length]
        if info.type == "email" and not _EMAIL.match(value):
            return "not a valid e-mail address for an e-mail field (use null)", None
        return None, value
    if info.type == "boolean":
        return (None, value) if isinstance(value, bool) else ("the field holds true/false", None)
    if info.type in ("int", "double", "currency", "percent"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (None, value) if ok else ("the field holds a number", None)
    if info.type in ("date", "datetime"):
        return (None, value) if isinstance(value, str) else ("the field holds a date; give an ISO date string", None)
    return f"fields of type {info.type} cannot be anonymised by this connector", None


def value_text(value: Any) -> str | None:
    """A field's value as the contract's text (booleans true/false)."""
    if isinstance(value, bool):
        return str(value).lower()
    return None if value is None else str(value)


def typed_value(info: FieldInfo | None, text: str | None) -> Any:
    """Text back in the field's JSON type (a boolean flag as true/false)."""
    if text is not None and info is not None and info.type == "boolean":
        return text == "true"
    return text
