"""Per-record erasure decisions: regime x data category x legal basis (legal-rules.md section 2).

Erasure is decided per record, not per request. A record that the law makes us keep (tax and
accounting records) is anonymised, not deleted, and the decision carries its basis and the date
the obligation ends; once that date has passed, the exemption is gone and the record is deleted.
"""

from __future__ import annotations

from datetime import date, timedelta

from dateutil.relativedelta import relativedelta

from dsr.config import ErasureRule, Policy
from dsr.contract import ErasureAction, ErasureDecision, RecordRef
from dsr.deadlines import Regime


def fiscal_year_end(day: date, fiscal_year_end: str) -> date:
    """The last day of the fiscal year that `day` falls in (fiscal_year_end is 'MM-DD')."""
    month, dom = (int(part) for part in fiscal_year_end.split("-"))
    end = date(day.year, month, 1) + relativedelta(day=dom)  # clamps 02-29 etc. to the month's end
    return end if day <= end else end + relativedelta(years=1, day=dom)


def tax_retention_end(anchor: date, jurisdiction: str, policy: Policy) -> date:
    """The last day a tax record must be kept, counted as the jurisdiction's table says."""
    rule = policy.tax_retention[jurisdiction]
    fy_end = fiscal_year_end(anchor, policy.fiscal_year_end)
    if rule.starts == "start_of_next_fiscal_year":  # Brazil: CTN 173 counts from the next year's first day
        return fy_end + timedelta(days=1) + relativedelta(years=rule.years) - timedelta(days=1)
    return fy_end + relativedelta(years=rule.years)


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
