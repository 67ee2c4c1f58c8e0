"""The human-readable page inside an evidence bundle: `report.html`.

One self-contained, printable HTML page for an auditor: the request, what each system held and what
was done to it, the exemptions, and the timeline. It is a pure function of its inputs (no "generated
now"), so it does not disturb a bundle's reproducibility, and it loads nothing from outside: inline
CSS only, no scripts, no fonts or images, and a Content-Security-Policy that forbids them anyway.

Free text (notes, reasons) is not in the report, nor anywhere in the bundle: events and views name it
by its SHA-256 (`[text sha256:...]`), shown here as "kept beside the ledger" with the hash's start.
On purpose: a bundle is kept for years, often on write-once storage, while a note may have to be
redacted later (it held a name, an address that slipped past the detector); sealing the words would
make that impossible, and would make the bundle depend on a table that is not the chain. Chains from
before this carry notes in the clear; those are shown as they are (sealing screened them already).

The views are produced elsewhere and their keys may drift, so every lookup is forgiving: a missing
or unexpected value shows as a dash, never as a crash. Request fields this page does not know are
still listed under "Further request details" rather than silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import jinja2

from dsr.ledger.events import LedgerEvent, canonical_json
from dsr.ledger.texts import reference_digests, text_reference

DASH = "—"
_VALUE_LIMIT = 60  # characters of one payload value shown in the timeline
_SUMMARY_LIMIT = 220  # characters of one timeline row's payload summary
_RECORDS_SHOWN = 3  # record keys listed per exemption group before "and N more"

# Header rows: label, then the request-view paths that may carry it (first present wins). Dotted
# paths reach into nested mappings (`dsr.state.RequestState.to_view` nests the deadline and subject).
_HEADER_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Request", ("request_id", "id")),
    ("Type", ("type", "types", "request_type", "request_types")),
    ("Regime", ("regime", "deadline.regime")),
    ("Rule", ("deadline.rule", "rule_version", "rule")),
    ("Country", ("country", "deadline.country")),
    ("Channel", ("channel",)),
    ("Received", ("received_at", "received", "submitted_at")),
    ("Status", ("status",)),
    ("Outcome", ("outcome_reason", "cancel_reason")),
    ("Subject (keyed hash)", ("subject.identity_hash", "identity_hash", "subject_hash")),
    ("Due", ("deadline.due", "due_date", "due", "due_at")),
    ("Holiday calendar", ("deadline.holiday_calendar", "holiday_calendar_version", "calendar_version",
                          "holiday_calendar")),
    ("Systems in scope", ("systems_planned",)),
    ("Response package (SHA-256)", ("package.sha256",)),
)
# Shown in the header whether present or not, so an absent fact is visibly absent.
_ALWAYS = frozenset({"Request", "Type", "Regime", "Channel", "Received", "Status", "Due"})
# Top-level request-view keys that have a section of their own (or are the per-system table).
_OWN_SECTION = frozenset({"verification", "deadline", "clock_events", "exemptions", "systems", "subject"})
_DEADLINE_FIELDS: tuple[tuple[str, str], ...] = (
    ("Clock start", "clock_start"), ("Due without extension", "base_due"), ("Due", "due"),
    ("Extended", "extended"), ("Extension reason", "extension_reason"),
    ("Extension notice by", "extension_notice_by"), ("Paused (days)", "paused_days"),
    ("Acknowledge by", "acknowledge_by"), ("Holiday calendar", "holiday_calendar"), ("Rule", "rule"),
)
_SYSTEM_FOUND = ("records_found", "found", "found_count", "discovered", "records")
_SYSTEM_BY_OBJECT = ("found_by_object", "by_object")
_SYSTEM_ACTIONS = ("actions", "action_counts")
_SYSTEM_RECEIPT = ("vendor_receipt_id", "receipt_id", "receipt", "receipts", "receipt_ids")
_SYSTEM_REQUERY = ("post_erasure_requery", "requery", "re_query", "verify_erased", "proof_of_erasure",
                   "remaining")
_EXEMPTION_BASIS = ("basis", "legal_basis")
_EXEMPTION_UNTIL = ("retain_until", "until", "retention_until", "retention_end")
_EXEMPTION_SCOPE = ("record", "records", "count", "categories", "category", "objects")

def render_report(
    events: Sequence[LedgerEvent],
    request_view: Mapping[str, Any],
    system_views: Mapping[str, Mapping[str, Any]],
    manifest_summary: Mapping[str, Any],
) -> str:
    """Render the bundle's one-page HTML report (template `dsr/templates/report.html`, autoescaped).

    Args:
        events: The request's ledger events, in sequence order.
        request_view: The request record derived from those events (opaque mapping).
        system_views: System name -> that system's result (opaque mapping).
        manifest_summary: What the seal says: format, request_id, through_seq, last_event_hash,
            generated_at, signer_fingerprint and, optionally, members (name -> sha256/bytes) of the
            other bundle members. The report cannot list its own hash.

    Returns:
        A complete HTML document; the same inputs always give the same text (the template is read
        from the package, and nothing in it depends on the time, the locale or the machine).
    """
    request_view = _mapping(request_view)
    summary = _mapping(manifest_summary)
    request_id = _first(request_view, ("request_id", "id")) or summary.get("request_id") or (
        events[0].request_id if events else None
    )
    return _template().render(
        title=f"Evidence report — request {_text(request_id)}",
        through_seq=_text(summary.get("through_seq")),
        generated_at=_text(summary.get("generated_at")),
        request=_request_section(request_view),
        deadline=_deadline_section(request_view),
        systems=_systems_section(system_views),
        exemptions=_exemptions_section(request_view, system_views),
        timeline=_timeline_section(events),
        seal=_seal_section(summary),
    )


@cache
def html_templates() -> jinja2.Environment:
    """The templates of the HTML the domain writes (dsr/templates: the evidence report, the subject
    package's summary): one way to write HTML in the product, as the pages (Jinja2, autoescaped).
    Strict: a name a template uses and its caller does not give is an error, not an empty cell."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("dsr", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["t"] = _text
    return env


def _template() -> jinja2.Template:
    return html_templates().get_template("report.html")


# --- sections (the data each part of the template shows; all values text) ------------------------


def _request_section(view: Mapping[str, Any]) -> dict[str, Any]:
    used: set[str] = set(_OWN_SECTION)
    rows = []
    for label, paths in _HEADER_FIELDS:
        path = _first_path(view, paths)
        if path is None:
            if label in _ALWAYS:
                rows.append((label, DASH))
            continue
        top = path.split(".", 1)[0]
        if "." not in path:
            # An alias carrying the same value (a view with both "id" and "request_id") is shown once.
            used.update(alias for alias in paths if alias in view and view[alias] == view[path])
        elif top == "package":
            used.add(top)
        rows.append((label, _short(_lookup(view, path), limit=160)))
    verification = _mapping(view.get("verification"))
    if verification:
        rows.append(("Identity verified", _verification(verification)))
    elif "verification" in view:
        rows.append(("Identity verified", "not verified"))
    extra_rows = [(str(key), _short(view[key], limit=160)) for key in sorted(view, key=str)
                  if key not in used and view[key] not in (None, "", [], {})]
    return {"rows": rows, "extra": extra_rows}


def _deadline_section(view: Mapping[str, Any]) -> dict[str, Any] | None:
    deadline = _mapping(view.get("deadline"))
    clock = [item for item in _items(view.get("clock_events")) if isinstance(item, Mapping)]
    if not deadline and not clock:
        return None
    rows = [(label, _short(deadline.get(key), limit=160)) for label, key in _DEADLINE_FIELDS
            if deadline.get(key) is not None]
    steps = [_short(str(step), limit=200) for step in _items(deadline.get("steps"))]
    clock_rows = [(_display_time(str(item.get("at") or "")), _short(item.get("kind")),
                   _short(item.get("reason"), limit=160)) for item in clock]
    return {"rows": rows if deadline else None, "steps": steps, "clock": clock_rows}


def _systems_section(system_views: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    views = _mapping(system_views)
    rows = []
    for name in sorted(views, key=str):
        view = _mapping(views[name])
        status = _short(view.get("status"))
        if view.get("error"):
            status = f"{status}: {_short(view.get('error'), limit=120)}"
        rows.append({"name": str(name), "connector": _short(view.get("connector_version")), "found": _found(view),
                     "actions": _actions(view), "status": status,
                     "receipt": _receipts(_first(view, _SYSTEM_RECEIPT)),
                     "requery": _requery(_first(view, _SYSTEM_REQUERY))})
    return rows


def _exemptions_section(
    request_view: Mapping[str, Any], system_views: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str, str, str, str, str]]:
    found: list[tuple[str, Any]] = [(DASH, item) for item in _items(request_view.get("exemptions"))]
    views = _mapping(system_views)
    for name in sorted(views, key=str):
        found.extend((str(name), item) for item in _items(_mapping(views[name]).get("exemptions")))
    # Exemptions come per record; one row per (system, action, basis, end date) keeps the page short.
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for system, item in found:
        entry = _mapping(item) if isinstance(item, Mapping) else {"basis": item}
        key = (system, _short(entry.get("action")), _short(_first(entry, _EXEMPTION_BASIS), limit=200),
               _short(_first(entry, _EXEMPTION_UNTIL)))
        scope = _first(entry, _EXEMPTION_SCOPE)
        groups.setdefault(key, [])
        if scope is not None:
            groups[key].append(_short(scope, limit=80))
    rows = []
    for (system, action, basis, until), scopes in sorted(groups.items()):
        shown = ", ".join(scopes[:_RECORDS_SHOWN])
        if len(scopes) > _RECORDS_SHOWN:
            shown += f" and {len(scopes) - _RECORDS_SHOWN} more"
        rows.append((system, basis, until, action, str(len(scopes) or DASH), shown or DASH))
    return rows


def _timeline_section(events: Sequence[LedgerEvent]) -> list[tuple[str, str, str, str, str]]:
    return [(str(event.seq), _display_time(event.at), str(event.actor), str(event.type), _summarise(event.payload))
            for event in events]


def _seal_section(summary: Mapping[str, Any]) -> dict[str, Any]:
    rows = [
        ("Format", _short(summary.get("format"))),
        ("Request", _short(summary.get("request_id"))),
        ("Through event", _short(summary.get("through_seq"))),
        ("Last event hash", _short(summary.get("last_event_hash"), limit=200)),
        ("Sealed at (last event)", _short(summary.get("generated_at"))),
        ("Signer fingerprint (SHA-256)", _short(summary.get("signer_fingerprint"), limit=200)),
    ]
    members = _mapping(summary.get("members"))
    member_rows = [(str(name), _short(_mapping(members[name]).get("bytes")),
                    _short(_mapping(members[name]).get("sha256"), limit=200)) for name in sorted(members, key=str)]
    return {"rows": rows, "members": member_rows}


# --- value helpers ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None or value == "":
        return DASH
    return _kept_beside(str(value))


def _kept_beside(text: str) -> str:
    """Free-text references as a reader can take them: what they are, and enough hash to find them."""
    for digest in reference_digests(text):
        text = text.replace(text_reference(digest), f"[kept beside the ledger, SHA-256 {digest[:12]}…]")
    return text


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        # A mapping of basis -> details is as plausible as a list; keep it readable either way.
        return [
            {"basis": key, **detail} if isinstance(detail, Mapping) else {"basis": key, "note": detail}
            for key, detail in sorted(value.items(), key=lambda kv: str(kv[0]))
        ]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _lookup(view: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any step is missing or not a mapping."""
    value: Any = view
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _first_path(view: Mapping[str, Any], paths: Iterable[str]) -> str | None:
    for path in paths:
        if _lookup(view, path) not in (None, ""):
            return path
    return None


def _first(view: Mapping[str, Any], paths: Iterable[str]) -> Any:
    path = _first_path(view, paths)
    return None if path is None else _lookup(view, path)


def _short(value: Any, *, limit: int = _VALUE_LIMIT) -> str:
    """One value as at most `limit` characters of text."""
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
        text = ", ".join(str(v) for v in value) if value else DASH
    elif isinstance(value, (Mapping, list, tuple)):
        try:
            text = canonical_json(value)
        except (TypeError, ValueError):
            text = str(value)
    else:
        text = str(value)
    text = _kept_beside(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _verification(verification: Mapping[str, Any]) -> str:
    method = _short(verification.get("method"))
    note = verification.get("note")
    by, at = verification.get("by"), verification.get("at")
    text = method + (f" — {_short(note, limit=100)}" if note else "")
    if by or at:
        text += f" ({'by ' + str(by) if by else ''}{' ' if by and at else ''}{'at ' + str(at) if at else ''})"
    return _short(text, limit=200)


def _found(view: Mapping[str, Any]) -> str:
    """Records found, with the per-object split when the view has one."""
    total: Any = _first(view, _SYSTEM_FOUND)
    by_object: Mapping[str, Any] = _mapping(_first(view, _SYSTEM_BY_OBJECT))
    if isinstance(total, Mapping) and not by_object:
        total, by_object = None, total
    split = {str(k): v for k, v in by_object.items() if _is_count(v)}
    if not _is_count(total):
        if isinstance(total, (list, tuple)):
            total = len(total)
        elif split:
            total = sum(split.values())
        else:
            return _short(total)
    if len(split) > 1 or (split and set(split.values()) != {total}):
        detail = ", ".join(f"{key} {split[key]}" for key in sorted(split))
        return _short(f"{total} ({detail})", limit=160)
    return str(total)


def _actions(view: Mapping[str, Any]) -> str:
    """Action counts as "delete 3, anonymise 1", plus the export when there was one."""
    value = _first(view, _SYSTEM_ACTIONS)
    counts: Counter[str] = Counter()
    if isinstance(value, Mapping):
        for key, count in value.items():
            counts[str(key)] += len(count) if isinstance(count, (list, tuple)) else (
                count if _is_count(count) else 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Mapping):
                name = str(_first(item, ("action", "type", "strategy")) or "?")
                counts[name] += item["count"] if _is_count(item.get("count")) else 1
            else:
                counts[str(item)] += 1
    elif value is not None:
        return _short(value)
    parts = [f"{key} {counts[key]}" for key in sorted(counts)]
    exported = view.get("records_exported")
    if _is_count(exported):
        parts.insert(0, f"exported {exported}")
    if not parts:
        return "none" if value is not None else DASH
    return _short(", ".join(parts), limit=160)


def _receipts(value: Any) -> str:
    if isinstance(value, Mapping):
        return _short(_first(value, ("id", "receipt_id", "reference")) or value, limit=80)
    if isinstance(value, (list, tuple)):
        ids = [_receipts(item) for item in value]
        return _short(", ".join(ids) if ids else DASH, limit=120)
    return _short(value, limit=80)


def _requery(value: Any) -> str:
    """The proof-of-erasure re-query: what it was, and what was unexpectedly left."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "nothing left" if value else "records remain"
    if _is_count(value):
        return f"{value} left"
    if not isinstance(value, Mapping):
        return _short(value, limit=120)
    remaining = _first(value, ("remaining", "unexpected_remaining", "left", "count"))
    if isinstance(remaining, (list, tuple)):
        remaining = len(remaining)
    proof = _first(value, ("proof", "reason", "note", "detail"))
    at = _first(value, ("at", "checked_at"))
    if value.get("checkable", value.get("verifiable")) is False:
        text = "not checkable" + (f": {proof}" if proof else "")
    elif _is_count(remaining):
        # Name the method first: "0 left" means little without knowing how it was looked for.
        text = (f"{proof}: " if proof else "") + f"{remaining} unexpected left"
    elif proof:
        text = str(proof)
    else:
        return DASH if not value else _short(value, limit=120)
    return _short(text + (f" at {at}" if at else ""), limit=160)


def _summarise(payload: Mapping[str, Any]) -> str:
    """A few key: value pairs of a payload, never a raw dump of a large one."""
    if not isinstance(payload, Mapping) or not payload:
        return DASH
    parts = []
    for key in sorted(payload, key=str):
        value = payload[key]
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, Mapping):
            flat = all(not isinstance(v, (Mapping, list, tuple)) for v in value.values())
            inline = ", ".join(f"{k} {_short(value[k], limit=20)}" for k in sorted(value, key=str))
            shown = inline if flat and len(value) <= 4 and len(inline) <= 60 else _plural(len(value), "field")
        elif isinstance(value, (list, tuple)):
            scalars = all(not isinstance(v, (Mapping, list, tuple)) for v in value)
            shown = _short(value, limit=40) if scalars and len(value) <= 4 else _plural(len(value), "item")
        else:
            shown = _short(value)
        parts.append(f"{key}: {shown}")
    text = "; ".join(parts) or DASH
    return text if len(text) <= _SUMMARY_LIMIT else text[: _SUMMARY_LIMIT - 1] + "…"


def _plural(count: int, noun: str) -> str:
    text = f"{count} {noun}{'' if count == 1 else 's'}"
    return f"{{{text}}}" if noun == "field" else f"[{text}]"


def _display_time(stamp: str) -> str:
    # Ledger stamps are "YYYY-MM-DDTHH:MM:SS.ffffffZ"; seconds are enough on paper, the
    # exact value stays in timeline.jsonl.
    if len(stamp) >= 19 and stamp[10:11] == "T":
        return f"{stamp[:10]} {stamp[11:19]}"
    return stamp or DASH
