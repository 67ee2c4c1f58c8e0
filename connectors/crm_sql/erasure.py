"""Erasure and the retention purge: delete, anonymise or retain each row, children before parents.

Each object's decisions go in batches of `MAX_BATCH`, one transaction a batch. A batch the database
refuses in part (a foreign key still pointing at a row) is redone row by row, and a refused delete
is an anonymisation instead where the object has an `anonymise` mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from connectors.base import (
    ErasureAction,
    ErasureDecision,
    Receipt,
    RecordOutcome,
    RecordRef,
    chunks,
    outcome_for,
    receipt_id,
    unique_decisions,
)
from connectors.crm_sql.core import MAX_BATCH, CrmSqlCore, Tally
from connectors.crm_sql.schema import BoundObject


class CrmSqlErasure(CrmSqlCore):
    """`erase` and `purge`."""

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Delete, anonymise or retain each row as decided; children before parents.

        Idempotent: a row already deleted, or already holding its anonymised values, is done with
        ``already_gone=True`` and nothing more changes. Where the database refuses a delete because
        other rows still reference the record (a retained order still points at its contact), an
        object with an `anonymise` mapping is anonymised instead (legal rules, section 2), and the
        outcome says ANONYMISE; without a mapping the outcome is not done.

        Raises:
            ConnectorError: the database failed (not a refusal); re-running is safe.
        """
        tally = Tally()
        outcomes: dict[str, RecordOutcome] = {}
        grouped: dict[str, list[ErasureDecision]] = {}
        for decision in unique_decisions(decisions, outcomes):
            problem = self._problem_with(decision.ref)
            if problem is not None:
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
            else:
                grouped.setdefault(decision.ref.object, []).append(decision)
        with self._guard("erase"):
            for name in self._erase_order:
                for chunk in chunks(grouped.get(name, []), MAX_BATCH):
                    outcomes.update(self._erase_batch(self._objects[name], chunk, tally))
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(
            system=self._system,
            outcomes=ordered,
            vendor_receipt_id=receipt_id("crm-sql", ordered),
            api_calls=tally.statements,
        )

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired rows (children first, in batches); a row that a kept row still
        references is anonymised instead where the object has an `anonymise` mapping."""
        return self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs])

    def _erase_batch(
        self, obj: BoundObject, batch: list[ErasureDecision], tally: Tally
    ) -> dict[str, RecordOutcome]:
        results = {d.ref.key: outcome_for(d, done=True) for d in batch if d.action is ErasureAction.RETAIN}
        deletes = [d for d in batch if d.action is ErasureAction.DELETE]
        anonymises = [d for d in batch if d.action is ErasureAction.ANONYMISE]
        if anonymises and obj.anonymise is None:
            error = f"no anonymise mapping at systems.{self._system}.settings.objects.{obj.name}.anonymise"
            results.update({d.ref.key: outcome_for(d, done=False, error=error) for d in anonymises})
            anonymises = []
        try:
            with self._engine.begin() as conn:
                results.update(self._delete(conn, obj, deletes, tally))
                results.update(self._anonymise(conn, obj, anonymises, tally))
        except IntegrityError:
            # The database refused part of the batch and rolled all of it back: redo it row by row
            # so that one refused row does not hold up the others.
            for decision in deletes + anonymises:
                results[decision.ref.key] = self._erase_one(obj, decision, tally)
        return results

    def _erase_one(self, obj: BoundObject, decision: ErasureDecision, tally: Tally) -> RecordOutcome:
        where = f"systems.{self._system}.settings.objects.{obj.name}.anonymise"
        try:
            with self._engine.begin() as conn:
                if decision.action is ErasureAction.DELETE:
                    return self._delete(conn, obj, [decision], tally)[decision.ref.key]
                return self._anonymise(conn, obj, [decision], tally)[decision.ref.key]
        except IntegrityError:
            pass  # the database's own message may quote row values: never pass it on
        if decision.action is ErasureAction.ANONYMISE:
            return outcome_for(
                decision, done=False, error=f"the database refused the replacement values of {where}"
            )
        if obj.anonymise is None:
            return outcome_for(
                decision,
                done=False,
                error=f"the database refused the delete: other rows still reference this record "
                f"(give {where} to anonymise it instead)",
            )
        try:
            with self._engine.begin() as conn:
                return self._anonymise(conn, obj, [decision], tally)[decision.ref.key]
        except IntegrityError:
            return outcome_for(
                decision, done=False, error=f"the database refused both the delete and the values of {where}"
            )

    def _delete(
        self, conn: sa.Connection, obj: BoundObject, decisions: list[ErasureDecision], tally: Tally
    ) -> dict[str, RecordOutcome]:
        columns = tuple(obj.table.columns.keys())
        return self._change(conn, obj, decisions, tally, sa.delete(obj.table), ErasureAction.DELETE, columns)

    def _anonymise(
        self, conn: sa.Connection, obj: BoundObject, decisions: list[ErasureDecision], tally: Tally
    ) -> dict[str, RecordOutcome]:
        if not decisions:
            return {}
        assert obj.anonymise is not None  # callers route objects without a mapping elsewhere
        # Rows already holding every replacement are left alone, so a re-run changes nothing.
        differs = sa.or_(*(obj.table.c[col].is_distinct_from(value) for col, value in obj.anonymise.items()))
        update = sa.update(obj.table).values(dict(obj.anonymise))
        return self._change(conn, obj, decisions, tally, update, ErasureAction.ANONYMISE, tuple(obj.anonymise),
                            differs)

    def _change(
        self, conn: sa.Connection, obj: BoundObject, decisions: list[ErasureDecision], tally: Tally,
        statement: sa.Delete | sa.Update, action: ErasureAction, fields: tuple[str, ...],
        *still: sa.ColumnElement[bool],
    ) -> dict[str, RecordOutcome]:
        """Run `statement` on the decided rows that exist and meet `still`; the others are done
        already (``already_gone``). Outcomes say `action` and, for a changed row, `fields`."""
        if not decisions:
            return {}
        wanted = [obj.key_value(d.ref.id) for d in decisions]
        pending = set(conn.scalars(sa.select(obj.key).where(obj.key.in_(wanted), *still)))
        tally.statements += 1
        if pending:
            tally.statements += 1
            conn.execute(statement.where(obj.key.in_(pending)))
        results = {}
        for decision, key in zip(decisions, wanted, strict=True):
            gone = key not in pending
            results[decision.ref.key] = outcome_for(
                decision, action=action, done=True, already_gone=gone, fields_cleared=() if gone else fields
            )
        return results
