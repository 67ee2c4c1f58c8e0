"""Erasure and the retention purge in NetSuite: carry out what `dsr.policy` decided from the facts discovery reported.

Discovery marks a customer that transactions reference (``tax_record="referenced"``, the latest
transaction's date, its subsidiary's country), so the policy decides to anonymise and keep it; a
transaction is an accounting document (``tax_record="document"``), never deleted. As a safeguard, a
DELETE decision for a transaction type is carried out as `dsr.policy.ledger_document` says (an
anonymisation), so no DELETE is ever sent for one.

NetSuite refuses to delete a customer that transactions reference (400). When it refuses a DELETE
decision (transactions appeared after discovery, or the purge, which lists expired customers without
asking the policy), the connector checks with SuiteQL that transactions really do reference the
customer and asks `dsr.policy.kept_for_references` with the facts (the latest of their dates, the
country of the customer's subsidiary) and the installed policy: the customer is anonymised and kept
as it says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from connectors.base import ConnectorConfigError, ConnectorError, outcome_for
from connectors.netsuite.client import PER_RECORD, RECORD_PATH, NetSuiteClient, error_code, id_list, suiteql_string
from connectors.netsuite.settings import ENTITY_OBJECTS, ObjectSpec, Scalar
from dsr.contract import DataCategory, ErasureAction, ErasureDecision, Receipt, RecordOutcome, RecordRef
from dsr.policy import installed_policy, kept_for_references, ledger_document


class NetSuiteErasure(NetSuiteClient):
    """`erase`, `expired` and `purge` of customers, contacts and (anonymised only) transactions."""

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Delete, anonymise or retain each record as decided; transactions are never deleted.

        Idempotent: a record already deleted, or already holding its anonymised values, is done with
        ``already_gone=True``. A record NetSuite refuses to change is not done, with the reason (its
        error code); the others go ahead. If NetSuite itself fails (after retries), the records not yet
        handled are not done, with that error.
        """
        calls_before = self._calls()
        outcomes, todo = self._triage(decisions)
        failure: str | None = None
        for decision in todo:
            key = decision.ref.key
            if failure is not None:
                outcomes[key] = outcome_for(decision, done=False, error=failure)
                continue
            if decision.ref.object in self._transaction_objects:
                decision = ledger_document(decision)
            try:
                outcomes[key] = self._carry_out(decision)
            except ConnectorConfigError:
                raise
            except ConnectorError as exc:
                failure = str(exc)
                outcomes[key] = outcome_for(decision, done=False, error=failure)
        return self._receipt(decisions, outcomes, calls_before)

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Customers and contacts holding `category` whose `retention_field` is before `cutoff`.

        A date cutoff means midnight; a datetime is compared as given (NetSuite keeps dates in the
        account's time zone). Refs carry that date as `anchor_date`. Transactions are never listed: a DSR
        pipeline does not purge tax records. Each record type is read completely before its refs are
        yielded, so purging while iterating does not shift the offsets of pages still to come.

        Raises:
            ConnectorError: an unknown category, or NetSuite failed.
        """
        try:
            wanted = DataCategory(category)
        except ValueError:
            raise ConnectorError(f"systems.{self._system}: unknown data category {category!r}") from None
        moment = cutoff if isinstance(cutoff, datetime) else datetime(cutoff.year, cutoff.month, cutoff.day)
        literal = suiteql_string(moment.strftime("%Y-%m-%d %H:%M:%S"))
        for name in ENTITY_OBJECTS:
            spec = self._settings.objects.get(name)
            if spec is None or wanted not in spec.categories:
                continue
            column = spec.retention_field
            where = f"{column} < TO_DATE({literal}, 'YYYY-MM-DD HH24:MI:SS')"
            rows = list(self._suiteql("expired", name, f"id, TO_CHAR({column}, 'YYYY-MM-DD') AS anchor", name, where))
            for row in rows:
                yield RecordRef(self._system, name, str(row["id"]), spec.categories,
                                anchor_date=date_or_none(row.get("anchor")))

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired records (as `erase` with DELETE decisions: customers with transactions are anonymised)."""
        return self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs])

    def _carry_out(self, decision: ErasureDecision) -> RecordOutcome:
        obj = decision.ref.object
        if obj in self._transaction_objects:  # ANONYMISE: `erase` asked the policy about a DELETE
            transactions = self._settings.transactions
            assert transactions is not None
            return self._anonymise(decision, transactions.anonymise, (), "transactions.anonymise")
        spec = self._settings.objects[obj]
        if decision.action is ErasureAction.ANONYMISE:
            return self._anonymise(decision, spec.anonymise, spec.clear_sublists, f"objects.{obj}.anonymise")
        answer = self._rest("erase", obj, "DELETE", f"{RECORD_PATH}/{obj}/{decision.ref.id}", expect=PER_RECORD)
        if answer.status_code == 204:
            return outcome_for(decision, done=True)
        if answer.status_code == 404:
            return outcome_for(decision, done=True, already_gone=True)
        code = error_code(answer) or "UNKNOWN"
        if answer.status_code == 400 and obj == "customer":
            dates = self._transaction_dates(decision.ref.id)
            if dates:
                return self._keep_for_transactions(decision, max(dates), spec)
            return outcome_for(decision, done=False,
                               error=f"NetSuite refused the delete ({answer.status_code} {code}); no transaction "
                               "references the customer")
        return outcome_for(decision, done=False, error=f"NetSuite refused the delete ({answer.status_code} {code})")

    def _keep_for_transactions(self, decision: ErasureDecision, latest: date, spec: ObjectSpec) -> RecordOutcome:
        """A customer NetSuite keeps for its transactions: anonymised and kept as `dsr.policy` decides from the
        latest transaction's date and the country of the customer's subsidiary."""
        jurisdictions = self._settings.tax_jurisdictions
        assert jurisdictions is not None  # required with objects.customer
        current = self._get("erase", "customer", decision.ref.id, expand=bool(spec.clear_sublists))
        subsidiary = current.get("subsidiary") if current else None
        jurisdiction = jurisdictions.of(str(subsidiary.get("id")) if isinstance(subsidiary, Mapping) else None)
        try:
            kept = kept_for_references(decision, latest_reference=latest, jurisdiction=jurisdiction,
                                       policy=installed_policy())
        except ValueError as exc:  # the policy cannot be read, or has no entry for the jurisdiction
            return outcome_for(decision, done=False, error=f"NetSuite refused the delete: transactions reference "
                               f"the customer, and the policy cannot say how long to keep it ({exc})")
        return self._anonymise(kept, spec.anonymise, spec.clear_sublists, "objects.customer.anonymise",
                               current=current, fetched=True)

    def _anonymise(self, decision: ErasureDecision, mapping: Mapping[str, Scalar] | None, sublists: Sequence[str],
                   where: str, *, current: Mapping[str, Any] | None = None, fetched: bool = False) -> RecordOutcome:
        """PATCH the configured values (fields already holding them count as ``already_gone``) and empty
        `sublists` with ``?replace=``."""
        def anonymised(done: bool, **extra: Any) -> RecordOutcome:
            return outcome_for(decision, done=done, action=ErasureAction.ANONYMISE, **extra)

        obj, rid = decision.ref.object, decision.ref.id
        if mapping is None:
            return anonymised(False, error=f"no anonymise mapping at systems.{self._system}.settings.{where}")
        if not fetched:
            current = self._get("erase", obj, rid, expand=bool(sublists))
        if current is None:
            return anonymised(True, already_gone=True)
        values = {name: value.replace("{id}", rid) if isinstance(value, str) else value
                  for name, value in mapping.items()}
        changes = {name: value for name, value in values.items() if not _same(current.get(name), value)}
        to_clear = [name for name in sublists if _sublist_items(current.get(name))]
        if not changes and not to_clear:
            return anonymised(True, already_gone=True)
        body: dict[str, Any] = dict(changes)
        body.update({name: {"items": []} for name in to_clear})
        params = {"replace": ",".join(to_clear)} if to_clear else None
        answer = self._rest("erase", obj, "PATCH", f"{RECORD_PATH}/{obj}/{rid}", body=body, params=params,
                            expect=PER_RECORD)
        if answer.status_code == 404:
            return anonymised(True, already_gone=True)
        if answer.status_code != 204:
            return anonymised(False, error=f"NetSuite refused the values of systems.{self._system}.settings.{where} "
                              f"({answer.status_code} {error_code(answer) or 'UNKNOWN'})")
        return anonymised(True, fields_cleared=tuple(sorted([*changes, *to_clear])))

    def _transaction_dates(self, customer_id: str) -> list[date]:
        """The dates of every transaction (of any type) that references the customer."""
        select = "id, TO_CHAR(trandate, 'YYYY-MM-DD') AS trandate"
        rows = self._suiteql("erase", "transaction", select, "transaction", f"entity = {id_list([customer_id])}")
        return [day for day in (date_or_none(row.get("trandate")) for row in rows) if day is not None]


def date_or_none(value: Any) -> date | None:
    """A SuiteQL ``YYYY-MM-DD`` column as a date (None when empty or not a date)."""
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _same(current: Any, wanted: Scalar) -> bool:
    """Whether a field already holds the anonymised value (NetSuite leaves empty fields out of a record)."""
    if wanted is None or wanted == "":
        return current is None or current == ""
    return bool(current == wanted)


def _sublist_items(value: Any) -> list[Any]:
    items = value.get("items") if isinstance(value, Mapping) else None
    return items if isinstance(items, list) else []
