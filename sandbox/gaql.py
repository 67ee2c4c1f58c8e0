"""Just enough of the Google Ads Query Language for the Google Ads sandbox's ``googleAds:search``.

``SELECT resource.field, ... FROM resource [WHERE resource.field (=|!=|IN) literal [AND ...]] [LIMIT n]``
with literals 'string', "string", integers, ENUMS and parenthesised lists of those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Condition = tuple[str, str, Any]  # (field, operator, literal)

_GAQL = re.compile(r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<resource>\w+)(?:\s+WHERE\s+(?P<where>.+?))?"
                   r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$", re.I | re.S)
_CONDITION = re.compile(r"^\s*(?P<field>[a-z_.]+)\s*(?P<op>=|!=|\bIN\b)\s*(?P<value>.+?)\s*$", re.I | re.S)


class GaqlError(Exception):
    """A query Google refuses: its ``queryError`` code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def parse_gaql(query: str, resources: Mapping[str, Mapping[str, str]]) -> tuple[str, list[str], list[Condition],
                                                                                 int | None]:
    """(resource, fields, conditions, limit) of a query over `resources` (resource -> its known fields)."""
    match = _GAQL.match(query)
    if match is None:
        raise GaqlError("UNEXPECTED_INPUT", "Error in query: unexpected input.")
    resource = match.group("resource").lower()
    if resource not in resources:
        raise GaqlError("INVALID_RESOURCE_NAME_IN_FROM_CLAUSE", f"Error in query: unknown resource {resource}.")
    known = resources[resource]
    fields = []
    for raw in match.group("fields").split(","):
        name = raw.strip().lower()
        if not name.startswith(resource + ".") or name[len(resource) + 1:] not in known:
            raise GaqlError("UNRECOGNIZED_FIELD", f"Unrecognized field in the query: '{raw.strip()}'.")
        fields.append(name[len(resource) + 1:])
    conditions = []
    for part in re.split(r"\s+AND\s+", match.group("where") or "", flags=re.I) if match.group("where") else []:
        cond = _CONDITION.match(part)
        if cond is None:
            raise GaqlError("UNEXPECTED_INPUT", "Error in query: unexpected input in WHERE.")
        name = cond.group("field").lower()
        if not name.startswith(resource + ".") or name[len(resource) + 1:] not in known:
            raise GaqlError("UNRECOGNIZED_FIELD", "Unrecognized field in the WHERE clause.")
        value = _literal(cond.group("value"))
        if value is None:
            raise GaqlError("BAD_VALUE_IN_WHERE_CLAUSE", "Error in query: bad value in WHERE.")
        conditions.append((name[len(resource) + 1:], cond.group("op").upper(), value))
    limit = int(match.group("limit")) if match.group("limit") else None
    return resource, fields, conditions, limit


def _literal(text: str) -> Any:
    """A GAQL literal: 'string', "string", integer, ENUM, or a (list) of those; None if malformed."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        parts = re.findall(r"""'[^']*'|"[^"]*"|[^,\s]+""", text[1:-1])
        values = [_literal(p) for p in parts]
        return None if any(v is None for v in values) else tuple(values)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if re.fullmatch(r"-?\d+|[A-Z_]+", text):
        return text
    return None


def holds(values: Mapping[str, Any], condition: Condition) -> bool:
    """Whether a row's field values meet one condition (values compared as text)."""
    name, op, wanted = condition
    have = values.get(name)
    have = None if have is None else str(have)
    if op == "IN":
        return isinstance(wanted, tuple) and have in wanted
    if op == "!=":
        return have != wanted
    return have == wanted


def put_field(entity: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a (nested) JSON field; proto3 JSON leaves unset fields out."""
    if value is None:
        return
    parts = dotted.split(".")
    for part in parts[:-1]:
        entity = entity.setdefault(part, {})
    entity[parts[-1]] = value
