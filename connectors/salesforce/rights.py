"""The other rights (dsr.contract.Rectifier, MarketingSuppressor): read the records, PATCH only what differs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from simple_salesforce import format_soql

from connectors.base import check_rectifiable, chunks
from connectors.salesforce.org import MAX_BATCH, SalesforceOrg, result_code
from connectors.salesforce.schema import typed_value, value_text
from connectors.salesforce.settings import ObjectSpec
from dsr.contract import FieldChange, RecordRef, RightsAction, RightsOutcome, RightsReceipt, Subject

#: Per object, field -> (the name an outcome gives it, the value wanted as text).
Wanted = Mapping[str, tuple[str, str | None]]


class SalesforceRights(SalesforceOrg):
    """Rectification, marketing suppression and its lift, and their checks."""

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Set the canonical fields in `changes` on exactly these records (each object's `rectifiable`
        fields), read first so an unchanged field is not written; sObject Collections PATCH, 200 ids a call."""
        check_rectifiable(self._system, changes)
        return self._rights(refs, RightsAction.RECTIFY, lambda spec: {
            spec.rectifiable[c]: (c, v) for c, v in changes.items() if c in spec.rectifiable},
            not_held=lambda spec: tuple(sorted(set(changes) - set(spec.rectifiable))))

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Re-read the records: every one whose mapped fields do not show the new values."""
        return self._not_showing(refs, "verify rectification", lambda spec: {
            spec.rectifiable[c]: v for c, v in changes.items() if c in spec.rectifiable})

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef], *,
                           restrict_processing: bool = False) -> RightsReceipt:
        """Email opt-out on Contact and Lead, "Don't Market/Track/Profile" on the Individual (and, for a
        restriction, "Don't Process"), as the data map's `marketing_flags` / `restriction_flags` say."""
        return self._rights(refs, RightsAction.SUPPRESS, lambda spec: {
            f: (f, value_text(v)) for f, v in _suppression(spec, restrict_processing).items()})

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Put back the old value of each field the suppression changed; nothing else."""
        previous = {o.ref.key: {c.field: c.old for c in o.changes} for o in suppressed if o.changes}
        refs = [o.ref for o in suppressed if o.changes]
        return self._rights(refs, RightsAction.RESTORE, lambda spec: {}, per_record=lambda ref: {
            f: (f, old) for f, old in previous.get(ref.key, {}).items()})

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Re-read the records: every one with a marketing flag not at its "no marketing" value."""
        return self._not_showing(refs, "verify suppression", lambda spec: {
            f: value_text(v) for f, v in spec.marketing_flags.items()})

    def _rights(self, refs: Sequence[RecordRef], action: RightsAction, wanted_of: Callable[[ObjectSpec], Wanted], *,
                not_held: Callable[[ObjectSpec], tuple[str, ...]] = lambda spec: (),
                per_record: Callable[[RecordRef], Wanted] | None = None) -> RightsReceipt:
        """Read each record's fields, then PATCH only what differs. `wanted_of` gives, per object,
        field -> (the name the outcome uses, the value as text); `per_record` overrides it per record."""
        calls_before = self._calls()
        outcomes: dict[str, RightsOutcome] = {}
        for name, group in self._group(refs).items():
            spec = self._settings.objects[name]
            if self._schema(name) is None:
                outcomes.update({r.key: RightsOutcome(r, action, done=True) for r in group})
                continue
            for batch in chunks(group, MAX_BATCH):
                wants = {r.key: dict(per_record(r) if per_record else wanted_of(spec)) for r in batch}
                outcomes.update(self._rights_batch(name, action, batch, wants, not_held(spec)))
        ordered = tuple(outcomes[key] for key in dict.fromkeys(r.key for r in refs))
        return RightsReceipt(self._system, action, ordered, api_calls=self._calls() - calls_before)

    def _rights_batch(self, name: str, action: RightsAction, batch: list[RecordRef], wants: Mapping[str, Wanted],
                      not_held: tuple[str, ...]) -> dict[str, RightsOutcome]:
        schema = self._schema(name)
        assert schema is not None  # `_rights` skipped an object the org lacks
        fields = sorted({f for w in wants.values() for f in w}, key=str.lower)
        if not fields:
            return {r.key: RightsOutcome(r, action, done=True, not_held=not_held) for r in batch}
        soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", ", ".join(["Id", *fields]),
                           name, [r.id for r in batch])
        current = {r["Id"]: r for r in self._query(soql, action.value, name)}
        outcomes: dict[str, RightsOutcome] = {}
        todo: list[tuple[RecordRef, tuple[FieldChange, ...], dict[str, Any]]] = []
        for ref in batch:
            record = current.get(ref.id)
            if record is None:
                gone_ok = action is not RightsAction.RECTIFY  # nothing left to market to, or to restore
                outcomes[ref.key] = RightsOutcome(ref, action, done=gone_ok,
                                                  error=None if gone_ok else "record no longer exists")
                continue
            differ = {f: (label, value) for f, (label, value) in wants[ref.key].items()
                      if value_text(record.get(f)) != value}
            if differ:
                diff = tuple(FieldChange(label, f"{name}.{schema.name(f)}", value_text(record.get(f)), value)
                             for f, (label, value) in differ.items())
                todo.append((ref, diff, {schema.name(f): typed_value(schema.get(f), value)
                                         for f, (_label, value) in differ.items()}))
            else:
                outcomes[ref.key] = RightsOutcome(ref, action, done=True, not_held=not_held)
        if not todo:
            return outcomes
        payload = {"allOrNone": False,
                   "records": [{"attributes": {"type": name}, "id": ref.id, **body} for ref, _d, body in todo]}
        results = self._rest(action.value, name, "composite/sobjects", method="PATCH", data=json.dumps(payload))
        for (ref, diff, _body), result in self._paired(todo, results, action.value):
            code = result_code(result)
            outcomes[ref.key] = (
                RightsOutcome(ref, action, done=True, changes=diff, not_held=not_held) if code is None
                else RightsOutcome(ref, action, done=False, error=f"Salesforce refused the update ({code})"))
        return outcomes

    def _not_showing(self, refs: Sequence[RecordRef], operation: str,
                     wanted_of: Callable[[ObjectSpec], Mapping[str, str | None]]) -> list[RecordRef]:
        left: list[RecordRef] = []
        for name, group in self._group(refs).items():
            wanted = dict(wanted_of(self._settings.objects[name]))
            if not wanted or self._schema(name) is None:
                continue
            for batch in chunks(group, MAX_BATCH):
                soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", ", ".join(["Id", *wanted]),
                                   name, [r.id for r in batch])
                current = {r["Id"]: r for r in self._query(soql, operation, name)}
                left += [ref for ref in batch if ref.id in current
                         and any(value_text(current[ref.id].get(f)) != v for f, v in wanted.items())]
        return left


def _suppression(spec: ObjectSpec, restrict_processing: bool) -> dict[str, bool | str]:
    return {**spec.marketing_flags, **(spec.restriction_flags if restrict_processing else {})}
