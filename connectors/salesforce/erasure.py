"""Erasure and the retention purge: anonymise, then delete children before parents.

ANONYMISE decisions go first (a retained Case may then let go of its Contact), then deletes, up to 200 ids per
sObject Collections call, or as Bulk API 2.0 hardDelete jobs with ``erase_mode: hard_delete`` (records skip
the Recycle Bin). A delete the org refuses with DELETE_FAILED (a Contact still tied to a kept Case) is
anonymised instead where the object has an `anonymise` mapping. ENTITY_IS_DELETED and NOT_FOUND count as done
(``already_gone``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from simple_salesforce import format_soql

from connectors.base import ConnectorConfigError, ConnectorError, chunks, outcome_for
from connectors.salesforce.org import MAX_BATCH, SalesforceOrg, result_code, safe_code
from connectors.salesforce.schema import fit
from dsr.contract import ErasureAction, ErasureDecision, Receipt, RecordOutcome, RecordRef

T = TypeVar("T")

BULK_JOB_MAX = 10_000  # ids per Bulk API 2.0 job
_GONE = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND"})


class Run:
    """One erase call's bookkeeping: outcomes so far, and the failure that stops the rest."""

    def __init__(self, outcomes: dict[str, RecordOutcome]) -> None:
        self.outcomes = outcomes
        self.failure: str | None = None

    def attempt(self, batch: Sequence[ErasureDecision], step: Callable[[], T], *,
                anonymising: bool = False) -> T | None:
        """Run a step for a batch; if Salesforce fails, the batch (and every later one) is not done."""
        if self.failure is None:
            try:
                return step()
            except ConnectorConfigError:
                raise
            except ConnectorError as exc:
                self.failure = str(exc)
        for decision in batch:
            if decision.ref.key not in self.outcomes:
                make = _anonymised if anonymising else outcome_for
                self.outcomes[decision.ref.key] = make(decision, done=False, error=self.failure)
        return None


class SalesforceErasure(SalesforceOrg):
    """`erase` and `purge`."""

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Delete, anonymise or retain each record as decided (the module docstring gives the order).

        Idempotent: a record already deleted, or already holding its anonymised values, is done with
        ``already_gone=True``. A record Salesforce refuses to change is not done, with the reason
        (its error code); the others go ahead. If Salesforce itself fails (after retries), the
        records not yet handled are not done, with that error.
        """
        calls_before = self._calls()
        outcomes, todo = self._triage(decisions)
        run = Run(outcomes)
        self._anonymise([d for d in todo if d.action is ErasureAction.ANONYMISE], run)
        deletes = sorted((d for d in todo if d.action is ErasureAction.DELETE),
                         key=lambda d: self._erase_rank[d.ref.object])
        refused = self._delete(deletes, run)
        self._anonymise(refused, run)  # deletes refused with DELETE_FAILED, for objects that say how
        return self._receipt(decisions, run.outcomes, calls_before)

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired records in the vendor's largest batches (as `erase` with DELETE decisions)."""
        return self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs])

    # --- anonymising ---

    def _anonymise(self, decisions: Sequence[ErasureDecision], run: Run) -> None:
        for name, group in _by_object(decisions).items():
            plan = run.attempt(group, partial(self._anonymise_plan, name), anonymising=True)  # may describe
            if plan is None:
                continue
            if isinstance(plan, str):
                for decision in group:
                    run.outcomes[decision.ref.key] = _anonymised(decision, done=False, error=plan)
                continue
            for batch in chunks(group, MAX_BATCH):
                run.attempt(batch, partial(self._anonymise_batch, name, batch, plan, run), anonymising=True)

    def _anonymise_batch(self, name: str, batch: list[ErasureDecision], values: Mapping[str, Any], run: Run) -> None:
        columns = ", ".join(["Id", *values])
        soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}", columns, name, [d.ref.id for d in batch])
        current = {r["Id"]: r for r in self._query(soql, "anonymise", name)}
        todo = []
        for decision in batch:
            record = current.get(decision.ref.id)
            if record is None or all(record.get(f) == v for f, v in values.items()):
                # Deleted, or already anonymised: nothing more to change.
                run.outcomes[decision.ref.key] = _anonymised(decision, done=True, already_gone=True)
            else:
                todo.append(decision)
        if not todo:
            return
        body = {"allOrNone": False,
                "records": [{"attributes": {"type": name}, "id": d.ref.id, **values} for d in todo]}
        results = self._rest("anonymise", name, "composite/sobjects", method="PATCH", data=json.dumps(body))
        for decision, result in self._paired(todo, results, "anonymise"):
            code = result_code(result)
            if code is None:
                run.outcomes[decision.ref.key] = _anonymised(decision, done=True, fields_cleared=tuple(values))
            elif code in _GONE:
                run.outcomes[decision.ref.key] = _anonymised(decision, done=True, already_gone=True)
            else:
                run.outcomes[decision.ref.key] = _anonymised(
                    decision, done=False, error=f"Salesforce refused the anonymisation ({code})")

    def _anonymise_plan(self, name: str) -> dict[str, Any] | str:
        """The replacement values as the org's fields accept them, or why they cannot be written."""
        if name in self._anonymise_plans:
            return self._anonymise_plans[name]
        spec = self._settings.objects[name]
        where = f"systems.{self._system}.settings.objects.{name}.anonymise"
        schema = self._schema(name)
        plan: dict[str, Any] | str
        if spec.anonymise is None:
            plan = f"no anonymise mapping at {where}"
        elif schema is None:
            plan = f"object {name!r} does not exist in this org"
        else:
            plan = {}
            for key, value in spec.anonymise.items():
                info = schema.get(key)
                assert info is not None  # checked when the schema was read
                problem, fitted = fit(info, value)
                if problem:
                    plan = f"{where}.{key}: {problem}"
                    break
                plan[info.name] = fitted
        self._anonymise_plans[name] = plan
        return plan

    # --- deleting ---

    def _delete(self, decisions: Sequence[ErasureDecision], run: Run) -> list[ErasureDecision]:
        """Delete in erase order; returns the DELETE_FAILED ones whose object can be anonymised instead."""
        refused: list[ErasureDecision] = []
        if self._settings.erase_mode == "hard_delete":
            for name, group in _by_object(decisions).items():
                for batch in chunks(group, BULK_JOB_MAX):
                    refused.extend(run.attempt(batch, partial(self._hard_delete, name, batch, run)) or ())
        else:
            for batch in chunks(decisions, MAX_BATCH):
                refused.extend(run.attempt(batch, partial(self._collection_delete, batch, run)) or ())
        return refused

    def _collection_delete(self, batch: list[ErasureDecision], run: Run) -> list[ErasureDecision]:
        ids = ",".join(d.ref.id for d in batch)
        results = self._rest("erase", "", "composite/sobjects", method="DELETE",
                             params={"ids": ids, "allOrNone": "false"})
        return [d for d, result in self._paired(batch, results, "erase")
                if self._record_delete(d, result_code(result), run)]

    def _hard_delete(self, name: str, batch: list[ErasureDecision], run: Run) -> list[ErasureDecision]:
        def job() -> tuple[set[str], dict[str, str]]:
            jobs = getattr(self._client().bulk2, name)
            succeeded: set[str] = set()
            failed: dict[str, str] = {}
            results = jobs.hard_delete(records=[{"Id": d.ref.id} for d in batch], wait=self._settings.bulk_poll_seconds)
            for result in results:
                job_id = result["job_id"]
                succeeded.update(row["Id"] for row in _csv_rows(jobs.get_successful_records(job_id)))
                for row in _csv_rows(jobs.get_failed_records(job_id)):
                    failed[row["Id"]] = row.get("sf__Error", "").split(":", 1)[0]
            return succeeded, failed

        succeeded, failed = self._call("hard delete (Bulk API 2.0)", name, job)
        refused = []
        for decision in batch:
            if decision.ref.id in succeeded:
                code: str | None = None
            else:
                code = failed.get(decision.ref.id, "NOT_PROCESSED") or "UNKNOWN"
            if self._record_delete(decision, code, run):
                refused.append(decision)
        return refused

    def _record_delete(self, decision: ErasureDecision, code: str | None, run: Run) -> bool:
        """Record a delete's outcome; True when it was refused with DELETE_FAILED and can be anonymised."""
        key = decision.ref.key
        if code is None:
            run.outcomes[key] = outcome_for(decision, done=True)
        elif code in _GONE:
            run.outcomes[key] = outcome_for(decision, done=True, already_gone=True)
        elif code == "DELETE_FAILED" and self._settings.objects[decision.ref.object].anonymise is not None:
            return True  # still tied to a record kept elsewhere: anonymise it instead (legal rules, section 2)
        else:
            run.outcomes[key] = outcome_for(decision, done=False,
                                            error=f"Salesforce refused the delete ({safe_code(code)})")
        return False


def _by_object(decisions: Sequence[ErasureDecision]) -> dict[str, list[ErasureDecision]]:
    by_object: dict[str, list[ErasureDecision]] = {}
    for decision in decisions:
        by_object.setdefault(decision.ref.object, []).append(decision)
    return by_object


def _anonymised(decision: ErasureDecision, *, done: bool, **extra: Any) -> RecordOutcome:
    return outcome_for(decision, done=done, action=ErasureAction.ANONYMISE, **extra)


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))
