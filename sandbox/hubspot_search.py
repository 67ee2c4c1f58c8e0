"""The HubSpot sandbox's CRM search: filters, the free-text query, sorting, and its query parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.hubspot_model import CASE_INSENSITIVE, PROPERTY_INDEX, CrmObject, epoch_millis


def is_search(path: str) -> bool:
    return path.endswith("/search") and path.startswith("/crm/")


def id_order(object_id: str) -> tuple[int, str]:
    return (int(object_id), "") if object_id.isdigit() else (1 << 62, object_id)


def int_arg(value: str | None, default: int) -> int | None:
    if value is None or value == "":
        return default
    return int(value) if value.isdigit() else None


def multi_arg(values: list[str] | None) -> list[str]:
    """A multi-value query parameter, repeated or comma-separated."""
    return [part for value in values or [] for part in value.split(",") if part]


def _kind_of(obj: CrmObject, name: str) -> str:
    meta = PROPERTY_INDEX[obj.kind].get(name)
    return meta["type"] if meta else "string"


def _comparable(obj: CrmObject, name: str, value: Any) -> Any:
    """A value in the property's own order: numbers and dates as floats, strings as they are."""
    kind = _kind_of(obj, name)
    if value is None:
        return None
    if kind in ("number",):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if kind in ("datetime", "date"):
        return epoch_millis(value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.lower() if name in CASE_INSENSITIVE else text


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^\w@.'%+-]+", text.lower()) if t]


def _matches_filter(obj: CrmObject, flt: Mapping[str, Any]) -> bool:
    name, op = flt["propertyName"], flt["operator"]
    raw = obj.value(name)
    present = raw not in (None, "")
    if op == "HAS_PROPERTY":
        return present
    if op == "NOT_HAS_PROPERTY":
        return not present
    have = _comparable(obj, name, raw) if present else None
    if op in ("IN", "NOT_IN"):
        wanted = {_comparable(obj, name, v) for v in flt.get("values", [])}
        inside = have is not None and have in wanted
        return inside if op == "IN" else not inside
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = "^" + ".*".join(re.escape(part) for part in str(flt.get("value", "")).lower().split("*")) + "$"
        found = present and any(re.match(pattern, token) for token in _tokens(str(raw)))
        return found if op == "CONTAINS_TOKEN" else not found
    value = _comparable(obj, name, flt.get("value"))
    if op == "EQ":
        return have is not None and have == value
    if op == "NEQ":
        return have != value
    if have is None or value is None:
        return False
    try:
        if op == "LT":
            return bool(have < value)
        if op == "LTE":
            return bool(have <= value)
        if op == "GT":
            return bool(have > value)
        if op == "GTE":
            return bool(have >= value)
        if op == "BETWEEN":
            high = _comparable(obj, name, flt.get("highValue"))
            return high is not None and bool(value <= have <= high)
    except TypeError:  # a number compared with text
        return False
    return False


def matches_groups(obj: CrmObject, groups: Sequence[Mapping[str, Any]]) -> bool:
    if not groups:
        return True
    return any(all(_matches_filter(obj, f) for f in group["filters"]) for group in groups)


def matches_query(obj: CrmObject, query: Any) -> bool:
    """`query`: a prefix match on the tokens of the default searchable text properties."""
    if not query:
        return True
    wanted = str(query).lower()
    fields = ("email", "firstname", "lastname", "phone", "company") if obj.kind == "contacts" else ()
    values = [obj.properties.get(f) or "" for f in fields] or [v or "" for v in obj.properties.values()]
    return any(token.startswith(wanted) for value in values for token in _tokens(value))


def sorted_objects(objects: list[CrmObject], sorts: Sequence[Any]) -> list[CrmObject]:
    result = sorted(objects, key=lambda o: id_order(o.id))
    for spec in reversed(list(sorts)):
        if isinstance(spec, str):
            name, descending = spec.lstrip("-"), spec.startswith("-")
        elif isinstance(spec, dict):
            name, descending = spec.get("propertyName", "hs_object_id"), spec.get("direction") == "DESCENDING"
        else:
            continue

        def key(obj: CrmObject, name: str = name) -> tuple[int, Any]:
            value = _comparable(obj, name, obj.value(name))
            return (1, "") if value is None else (0, value)
        try:
            result.sort(key=key, reverse=descending)
        except TypeError:
            result.sort(key=lambda o, name=name: str(o.value(name) or ""), reverse=descending)  # type: ignore[misc]
    return result
