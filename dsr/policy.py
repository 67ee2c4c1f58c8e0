"""Per-record erasure decisions: regime x data category x legal basis (legal-rules.md section 2).

Erasure is decided per record, not per request. A record that the law makes us keep (tax and
accounting records) is anonymised, not deleted, and the decision carries its basis and the date
the obligation ends; once that date has passed, the exemption is gone and the record is deleted.

Two more decisions are taken when a connector learns a fact only while erasing (its vendor reports
it then), so the connector reports the fact here and carries out what comes back:

- `kept_for_references`: the vendor refuses to delete a record because tax records reference it
  (a customer its invoices name). It is anonymised instead and kept as long as the latest of them.
- `ledger_document`: the record is an accounting document in the vendor's books (an invoice, a
  payment). A DSR never deletes one, even once its retention has ended: its personal fields are
  cleared instead.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Literal, Protocol

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field

from dsr.config import ErasureRule, Policy
from dsr.contract import ErasureAction, ErasureDecision, RecordRef
from dsr.deadlines import Regime

#: The jurisdictions whose tax-record rules legal-rules.md section 2 gives.
Jurisdiction = Literal["US", "GB", "NL", "BR", "CA"]
LEDGER_DOCUMENTS_KEPT = "transactions are never deleted by a DSR: personal fields cleared, amounts and dates kept"


class RetentionCount(Protocol):
    """How a tax table counts: `years` from the end of the fiscal year, or from the next one's first day."""

    @property
    def years(self) -> int: ...

    @property
    def starts(self) -> str: ...


class TaxRule(BaseModel):
    """One jurisdiction's keeping of tax records, as a system's data map states it for its entities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jurisdiction: Jurisdiction
    years: int = Field(ge=1, le=30)
    starts: Literal["end_of_fiscal_year", "start_of_next_fiscal_year"] = "end_of_fiscal_year"
    basis: str = Field(min_length=1, max_length=500)


def fiscal_year_end(day: date, fiscal_year_end: str) -> date:
    """The last day of the fiscal year that `day` falls in (fiscal_year_end is 'MM-DD')."""
    month, dom = (int(part) for part in fiscal_year_end.split("-"))
    end = date(day.year, month, 1) + relativedelta(day=dom)  # clamps 02-29 etc. to the month's end
    return end if day <= end else end + relativedelta(years=1, day=dom)


def retention_end(anchor: date, rule: RetentionCount, fiscal_year_end_on: str) -> date:
    """The last day a tax record dated `anchor` must be kept, counted as `rule` says."""
    fy_end = fiscal_year_end(anchor, fiscal_year_end_on)
    if rule.starts == "start_of_next_fiscal_year":  # Brazil: CTN 173 counts from the next year's first day
        return fy_end + timedelta(days=1) + relativedelta(years=rule.years) - timedelta(days=1)
    return fy_end + relativedelta(years=rule.years)


def tax_retention_end(anchor: date, jurisdiction: str, policy: Policy) -> date:
    """The last day a tax record must be kept, counted as the jurisdiction's table says."""
    return retention_end(anchor, policy.tax_retention[jurisdiction], policy.fiscal_year_end)


def _matching_rule(ref: RecordRef, policy: Policy) -> ErasureRule | None:
    for rule in policy.erasure.rules:
        if set(rule.categories) & set(ref.categories):
            return rule
    return None


def decide_erasure(ref: RecordRef, *, regime: Regime | str, policy: Policy, today: date) -> ErasureDecision:
    """What to do with one record of a subject who asked for erasure."""
    rule = _matching_rule(ref, policy)
    if rule is None or rule.retention is None:
        return ErasureDecision(ref, rule.action if rule else policy.erasure.default)
    regime_policy = policy.regimes[Regime(regime)]
    jurisdiction = regime_policy.tax_jurisdiction
    # Without the record's own date, count from today: keeping it too long is the safe error
    # here, deleting a record the tax office may still ask for is not.
    anchor = ref.anchor_date or today
    until = tax_retention_end(anchor, jurisdiction, policy)
    if until < today:
        return ErasureDecision(ref, ErasureAction.DELETE)
    source = policy.tax_retention[jurisdiction].source
    basis = f"{regime_policy.legal_obligation_basis}; {jurisdiction}: {source}"
    return ErasureDecision(ref, rule.action, basis=basis, retain_until=until)


def kept_for_references(decision: ErasureDecision, *, latest_reference: date, rule: TaxRule,
                        fiscal_year_end_on: str) -> ErasureDecision:
    """A record its system will not delete because tax records reference it: anonymised instead, kept
    until the retention of the latest referencing record (dated `latest_reference`) ends under `rule`,
    the tax law of the entity that issued them."""
    return ErasureDecision(decision.ref, ErasureAction.ANONYMISE, basis=f"{rule.jurisdiction}: {rule.basis}",
                           retain_until=retention_end(latest_reference, rule, fiscal_year_end_on))


def ledger_document(decision: ErasureDecision) -> ErasureDecision:
    """The decision carried out for an accounting document of a system's books: a DSR never deletes one
    (tax records outlive any one retention decision), so DELETE becomes ANONYMISE and the basis says why;
    ANONYMISE and RETAIN stand."""
    if decision.action is not ErasureAction.DELETE:
        return decision
    basis = f"{decision.basis}; {LEDGER_DOCUMENTS_KEPT}" if decision.basis else LEDGER_DOCUMENTS_KEPT
    return replace(decision, action=ErasureAction.ANONYMISE, basis=basis)
