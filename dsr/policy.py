"""Per-record erasure decisions: regime x data category x legal basis (legal-rules.md section 2).

Erasure is decided per record, not per request. A record that the law makes us keep (tax and
accounting records) is anonymised, not deleted, and the decision carries its basis and the date
the obligation ends; once that date has passed, the exemption is gone and the record is deleted.

Connectors report facts on each `RecordRef` and this module decides from `config/policy.yaml`
alone (the tax table lives there once):

- `tax_record="document"`: an accounting document of the vendor's books (an invoice, a payment).
  A DSR never deletes one, even once its retention has ended: its personal fields are cleared
  instead (`ledger_document`).
- `tax_record="referenced"`: a record such documents reference (the customer its invoices name),
  with `anchor_date` the latest of their dates. It is anonymised and kept as long as that document
  must be, under the tax law of `jurisdiction` (`kept_for_references`).
- `jurisdiction`: whose tax law governs the record, in place of the regime's `tax_jurisdiction`.

`kept_for_references` is also what a connector asks when its vendor refuses, while erasing, to
delete a record because documents reference it that discovery did not see.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from functools import cache
from typing import Literal

from dateutil.relativedelta import relativedelta

from dsr.config import ErasureRule, Policy, TaxRetention, load_policy
from dsr.contract import ErasureAction, ErasureDecision, RecordRef
from dsr.deadlines import Regime
from dsr.settings import Settings

#: The jurisdictions whose tax-record rules legal-rules.md section 2 gives.
Jurisdiction = Literal["US", "GB", "NL", "BR", "CA"]
LEDGER_DOCUMENTS_KEPT = "transactions are never deleted by a DSR: personal fields cleared, amounts and dates kept"


def fiscal_year_end(day: date, fiscal_year_end: str) -> date:
    """The last day of the fiscal year that `day` falls in (fiscal_year_end is 'MM-DD')."""
    month, dom = (int(part) for part in fiscal_year_end.split("-"))
    end = date(day.year, month, 1) + relativedelta(day=dom)  # clamps 02-29 etc. to the month's end
    return end if day <= end else end + relativedelta(years=1, day=dom)


def retention_end(anchor: date, rule: TaxRetention, fiscal_year_end_on: str) -> date:
    """The last day a tax record dated `anchor` must be kept, counted as `rule` says: `years` from the end
    of the fiscal year, or from the next one's first day."""
    fy_end = fiscal_year_end(anchor, fiscal_year_end_on)
    if rule.starts == "start_of_next_fiscal_year":  # Brazil: CTN 173 counts from the next year's first day
        return fy_end + timedelta(days=1) + relativedelta(years=rule.years) - timedelta(days=1)
    return fy_end + relativedelta(years=rule.years)


def tax_rule(jurisdiction: str, policy: Policy) -> TaxRetention:
    """The policy's tax table entry of `jurisdiction`.

    Raises:
        ValueError: the policy has no entry for it (a connector reported a jurisdiction policy.yaml lacks).
    """
    try:
        return policy.tax_retention[jurisdiction]
    except KeyError:
        raise ValueError(f"policy tax_retention has no entry for jurisdiction {jurisdiction!r}") from None


def tax_retention_end(anchor: date, jurisdiction: str, policy: Policy) -> date:
    """The last day a tax record must be kept, counted as the jurisdiction's table says."""
    return retention_end(anchor, tax_rule(jurisdiction, policy), policy.fiscal_year_end)


@cache
def installed_policy() -> Policy:
    """The policy this installation runs with (`Settings().policy_path`), read once per process."""
    return load_policy(Settings().policy_path)


def _matching_rule(ref: RecordRef, policy: Policy) -> ErasureRule | None:
    for rule in policy.erasure.rules:
        if set(rule.categories) & set(ref.categories):
            return rule
    return None


def decide_erasure(ref: RecordRef, *, regime: Regime | str, policy: Policy, today: date) -> ErasureDecision:
    """What to do with one record of a subject who asked for erasure, from the facts its ref carries."""
    regime_policy = policy.regimes[Regime(regime)]
    jurisdiction = ref.jurisdiction or regime_policy.tax_jurisdiction
    if ref.tax_record == "referenced":
        # Without the documents' date, count from today: keeping it too long is the safe error.
        kept = kept_for_references(ErasureDecision(ref, ErasureAction.DELETE), jurisdiction=jurisdiction,
                                   latest_reference=ref.anchor_date or today, policy=policy)
        if kept.retain_until is not None and kept.retain_until >= today:
            return kept
    decision = _by_rule(ref, regime_policy.legal_obligation_basis, jurisdiction, policy, today)
    return ledger_document(decision) if ref.tax_record == "document" else decision


def _by_rule(ref: RecordRef, obligation_basis: str, jurisdiction: str, policy: Policy, today: date) -> ErasureDecision:
    """The erasure table's decision for the record's categories, its retention counted under `jurisdiction`."""
    rule = _matching_rule(ref, policy)
    if rule is None or rule.retention is None:
        return ErasureDecision(ref, rule.action if rule else policy.erasure.default)
    # Without the record's own date, count from today: keeping it too long is the safe error
    # here, deleting a record the tax office may still ask for is not.
    anchor = ref.anchor_date or today
    until = tax_retention_end(anchor, jurisdiction, policy)
    if until < today:
        return ErasureDecision(ref, ErasureAction.DELETE)
    basis = f"{obligation_basis}; {jurisdiction}: {policy.tax_retention[jurisdiction].source}"
    return ErasureDecision(ref, rule.action, basis=basis, retain_until=until)


def kept_for_references(decision: ErasureDecision, *, latest_reference: date, jurisdiction: str,
                        policy: Policy) -> ErasureDecision:
    """A record tax documents reference: anonymised and kept until the retention of the latest of them
    (dated `latest_reference`) ends under the tax law of `jurisdiction`, the country of the entity that
    issued them. The date is not checked against today: a vendor that refuses the delete keeps the
    record regardless, and anonymising it is all that is left to do."""
    rule = tax_rule(jurisdiction, policy)
    return ErasureDecision(decision.ref, ErasureAction.ANONYMISE, basis=f"{jurisdiction}: {rule.source}",
                           retain_until=retention_end(latest_reference, rule, policy.fiscal_year_end))


def ledger_document(decision: ErasureDecision) -> ErasureDecision:
    """The decision carried out for an accounting document of a system's books: a DSR never deletes one
    (tax records outlive any one retention decision), so DELETE becomes ANONYMISE and the basis says why;
    ANONYMISE and RETAIN stand."""
    if decision.action is not ErasureAction.DELETE:
        return decision
    basis = f"{decision.basis}; {LEDGER_DOCUMENTS_KEPT}" if decision.basis else LEDGER_DOCUMENTS_KEPT
    return replace(decision, action=ErasureAction.ANONYMISE, basis=basis)
