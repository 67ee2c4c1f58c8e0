"""NetSuite's record types as the NetSuite sandbox stores them: fields, SuiteQL tables, reference data, dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordField:
    name: str  # REST name (camelCase)
    kind: str  # id, text, email, bool, date, datetime, ref, number, sublist
    column: str | None = None  # SuiteQL column; None: not exposed to SuiteQL
    writable: bool = True
    ref: str | None = None  # for refs: subsidiary, currency, customer


def _f(name: str, kind: str = "text", column: str | None | bool = True, **kwargs: Any) -> RecordField:
    col = name.lower() if column is True else (column or None)
    return RecordField(name, kind, col, **kwargs)


_AUDIT = (_f("dateCreated", "datetime", writable=False), _f("lastModifiedDate", "datetime", writable=False))
_CUSTOMER = (
    _f("id", "id", writable=False), _f("entityId"), _f("isPerson", "bool"), _f("firstName"), _f("lastName"),
    _f("companyName"), _f("email", "email"), _f("altEmail", "email"), _f("phone"), _f("mobilePhone"),
    _f("comments"), _f("subsidiary", "ref", ref="subsidiary"), _f("isInactive", "bool"),
    _f("globalSubscriptionStatus", "subscription"), *_AUDIT,
    _f("addressBook", "sublist", column=False),
)  # fmt: skip
_CONTACT = (
    _f("id", "id", writable=False), _f("entityId"), _f("firstName"), _f("lastName"), _f("title"),
    _f("email", "email"), _f("phone"), _f("company", "ref", ref="customer"), _f("subsidiary", "ref", ref="subsidiary"),
    _f("comments"), _f("isInactive", "bool"), _f("globalSubscriptionStatus", "subscription"), *_AUDIT,
)  # fmt: skip


def _transaction_fields(lines: str | None) -> tuple[RecordField, ...]:
    fields = [
        _f("id", "id", writable=False), _f("tranId", writable=False), _f("tranDate", "date"),
        _f("entity", "ref", ref="customer"), _f("subsidiary", "ref", column=False, ref="subsidiary"),
        _f("currency", "ref", column=False, ref="currency"), _f("email", "email"), _f("memo"),
        _f("otherRefNum", column=False), _f("status", column=False, writable=False),
        _f("total", "number", column="foreigntotal", writable=False),
        _f("createdDate", "datetime", writable=False), _f("lastModifiedDate", "datetime", writable=False),
    ]  # fmt: skip
    if lines:
        fields.append(_f(lines, "sublist", column=False))
    return tuple(fields)


TRANSACTION_CODES = {"invoice": "CustInvc", "cashSale": "CashSale", "creditMemo": "CustCred",
                     "customerPayment": "CustPymnt", "salesOrder": "SalesOrd"}
"""REST record type -> the SuiteQL ``transaction.type`` code."""

SCHEMAS: dict[str, tuple[RecordField, ...]] = {
    "customer": _CUSTOMER,
    "contact": _CONTACT,
    **{name: _transaction_fields("apply" if name == "customerPayment" else "item") for name in TRANSACTION_CODES},
}
FIELDS_BY_NAME = {rtype: {f.name.lower(): f for f in fields} for rtype, fields in SCHEMAS.items()}
SUBSIDIARIES = {1: ("Precision Optical Technologies, Inc.", "US"), 2: ("Precision Optical UK Ltd", "GB"),
                 3: ("Precision Optical B.V.", "NL"), 4: ("Precision Optica Ltda", "BR"),
                 5: ("Precision Optical Canada Inc.", "CA")}  # fmt: skip
CURRENCIES = {1: "USA", 2: "British pound", 3: "Euro", 4: "Brazilian real", 5: "Canadian dollar"}
TRANSACTION_STATUS = {"invoice": "Paid In Full", "cashSale": "Deposited", "creditMemo": "Fully Applied",
           "customerPayment": "Deposited", "salesOrder": "Billed"}  # fmt: skip

# The SuiteQL tables: customer, contact, and transaction (every transaction type, with `type` and `recordtype`).
_TRANSACTION_COLUMNS = {"type": "text", "recordtype": "text"}


SUBSCRIPTION_STATUSES = {"1": "Soft Opt-In", "2": "Soft Opt-Out", "3": "Confirmed Opt-In", "4": "Confirmed Opt-Out"}
"""``globalSubscriptionStatus`` values (a select field: ``{"id": "2", "refName": "Soft Opt-Out"}``). A business
may set the soft ones only; the confirmed ones are the recipient's, and a Confirmed Opt-Out cannot be
changed by anyone but the recipient (Oracle NetSuite help, Subscription Management)."""
SOFT_STATUSES = frozenset({"1", "2"})
DEFAULT_SUBSCRIPTION = "1"  # "Unsubscribed to Marketing By Default" off: new records are Soft Opt-In


def _columns(table: str) -> dict[str, RecordField]:
    if table == "transaction":
        columns = {f.column: f for f in SCHEMAS["invoice"] if f.column}
        columns.update({name: RecordField(name, kind, name, writable=False) for name, kind in _TRANSACTION_COLUMNS.items()})
        return columns
    return {f.column: f for f in SCHEMAS[table] if f.column}


SUITEQL_TABLES = {table: _columns(table) for table in ("customer", "contact", "transaction")}


# --- values -----------------------------------------------------------------------------------------------


def iso_seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def us_date(day: date) -> str:
    """How SuiteQL shows a date with the default preference (M/D/YYYY)."""
    return f"{day.month}/{day.day}/{day.year}"


def now_seconds() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
