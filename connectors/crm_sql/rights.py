"""The other rights (`dsr.contract.Rectifier`, `MarketingSuppressor`): rectify the mapped columns of
a subject's rows, and set or restore their marketing flags.

A row already holding the wanted value is left alone, so a re-run changes nothing. Old and new values
travel only in the outcomes (the runner hashes them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from connectors.base import ConnectorError, RecordRef, Subject
from connectors.crm_sql.core import CrmSqlCore, Tally
from connectors.crm_sql.schema import BoundObject
from dsr.contract import RECTIFIABLE_FIELDS, FieldChange, RightsAction, RightsOutcome, RightsReceipt


class CrmSqlRights(CrmSqlCore):
    """`rectify`, `suppress_marketing`, `restore_marketing` and their checks."""

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Set the canonical fields in `changes` on exactly these rows (each object's `rectifiable` columns).

        A row already holding a value is not changed again; a field its object does not map is
        `not_held`. Old and new values travel only in the outcome (the runner hashes them).
        """
        unknown = sorted(set(changes) - set(RECTIFIABLE_FIELDS))
        if unknown:
            raise ConnectorError(f"systems.{self._system}: not rectifiable field(s): {', '.join(unknown)}")
        tally = Tally()
        outcomes: list[RightsOutcome] = []
        with self._guard("rectify"), self._engine.begin() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                wanted = {c: col for c, col in obj.rectifiable.items() if c in changes}
                not_held = tuple(sorted(set(changes) - set(wanted)))
                rows = self._rows(conn, obj, group, tuple(wanted.values()), tally)
                for ref in group:
                    row = rows.get(ref.id)
                    if row is None:
                        outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, done=False,
                                                      error="record no longer exists"))
                        continue
                    diff = [FieldChange(c, f"{obj.name}.{col.name}", _text(row[col.name]), changes[c])
                            for c, col in wanted.items() if _text(row[col.name]) != changes[c]]
                    if diff:
                        self._update(conn, obj, ref, {obj.rectifiable[ch.field].name: changes[ch.field]
                                                      for ch in diff}, tally)
                    outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, done=True, changes=tuple(diff),
                                                  not_held=not_held))
        return RightsReceipt(self._system, RightsAction.RECTIFY, tuple(outcomes), api_calls=tally.statements)

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Re-read the rows: every one whose mapped columns do not hold the new values."""
        left: list[RecordRef] = []
        tally = Tally()
        with self._guard("verify rectification"), self._engine.connect() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                wanted = {c: col for c, col in obj.rectifiable.items() if c in changes}
                rows = self._rows(conn, obj, group, tuple(wanted.values()), tally)
                left += [ref for ref in group if ref.id not in rows
                         or any(_text(rows[ref.id][col.name]) != changes[c] for c, col in wanted.items())]
        return left

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Set every marketing flag of these rows to its "no marketing" value (`marketing_flags`)."""
        return self._set_flags(refs, RightsAction.SUPPRESS, lambda obj, _ref, flag, _now: obj.marketing[flag])

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Put back the previous value of each flag the suppression changed, and nothing else."""
        previous = {(o.ref.key, ch.field): ch.old for o in suppressed for ch in o.changes}

        def restored(obj: BoundObject, ref: RecordRef, flag: str, now: Any) -> Any:
            if (ref.key, flag) not in previous:
                return now  # the suppression left this flag alone
            return _typed(obj.table.c[flag], previous[(ref.key, flag)])

        return self._set_flags([o.ref for o in suppressed if o.changes], RightsAction.RESTORE, restored)

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Re-read the rows: every one with a marketing flag not at its "no marketing" value."""
        left: list[RecordRef] = []
        tally = Tally()
        with self._guard("verify suppression"), self._engine.connect() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                if not obj.marketing:
                    continue
                rows = self._rows(conn, obj, group, tuple(obj.table.c[f] for f in obj.marketing), tally)
                left += [ref for ref in group if ref.id in rows
                         and any(rows[ref.id][f] != v for f, v in obj.marketing.items())]
        return left

    def _set_flags(self, refs: Sequence[RecordRef], action: RightsAction,
                   value_for: Callable[[BoundObject, RecordRef, str, Any], Any]) -> RightsReceipt:
        """Set each marketing flag of these rows to `value_for(object, ref, flag, current value)`;
        a row gone since discovery is done with nothing to change."""
        outcomes: list[RightsOutcome] = []
        tally = Tally()
        with self._guard(f"{action.value} marketing"), self._engine.begin() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                rows = self._rows(conn, obj, group, tuple(obj.table.c[f] for f in obj.marketing), tally)
                for ref in group:
                    row = rows.get(ref.id)
                    if row is None:
                        outcomes.append(RightsOutcome(ref, action, done=True))  # gone: nothing to market to
                        continue
                    new = {flag: value_for(obj, ref, flag, row[flag]) for flag in obj.marketing}
                    diff = [FieldChange(flag, f"{obj.name}.{flag}", _text(row[flag]), _text(value))
                            for flag, value in new.items() if row[flag] != value]
                    if diff:
                        self._update(conn, obj, ref, {ch.field: new[ch.field] for ch in diff}, tally)
                    outcomes.append(RightsOutcome(ref, action, done=True, changes=tuple(diff)))
        return RightsReceipt(self._system, action, tuple(outcomes), api_calls=tally.statements)

    def _update(self, conn: sa.Connection, obj: BoundObject, ref: RecordRef, values: Mapping[str, Any],
                tally: Tally) -> None:
        tally.statements += 1
        conn.execute(sa.update(obj.table).where(obj.key == obj.key_value(ref.id)).values(dict(values)))


def _text(value: Any) -> str | None:
    """A column value as the contract's text: booleans as true/false, None as None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed(column: sa.Column[Any], text: str | None) -> Any:
    """A recorded flag value (text) back in its column's type."""
    if text is None:
        return None
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return text
    if python_type is bool:
        return text == "true"
    if python_type is int:
        return int(text)
    return text

