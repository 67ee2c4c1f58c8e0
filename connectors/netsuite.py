"""NetSuite (SuiteTalk REST web services): a subject's customers and contacts, and the transactions that keep them.

Reached with plain `requests` (NetSuite has no Python SDK), authenticated either way NetSuite offers:

- ``flow: tba``, token-based authentication: OAuth 1.0a signed by `requests_oauthlib.OAuth1` with
  HMAC-SHA256 and ``realm`` = the account id (``1234567_SB1``). Every call carries a fresh nonce and
  timestamp, including retries. NetSuite blocks *new* TBA integrations from 2027.1; existing ones keep working.
- ``flow: client_credentials``, OAuth 2.0 machine-to-machine: a JWT client assertion (header ``kid`` = the
  certificate id, PS256 by default; claims ``iss`` = client id, ``scope``, ``aud`` = the token URL, ``iat``,
  ``exp``) signed with the certificate's private key and exchanged at ``/services/rest/auth/oauth2/v1/token``
  for a one-hour bearer token, cached and fetched again a minute before it expires or on a 401.

Per operation of the contract (DESIGN.md):

- `discover`: SuiteQL (``POST /services/rest/query/v1/suiteql``, ``Prefer: transient``), paged with
  ``limit``/``offset`` while ``hasMore``: ``SELECT id, email FROM customer WHERE LOWER(email) = '<address>'``,
  the same for ``contact``. SuiteQL takes no bound parameters over REST, so the address goes in as a string
  literal built by `suiteql_string` (single quotes doubled, control characters refused) and is compared
  with ``=``, never LIKE, so ``%`` and ``_`` are ordinary characters. (SuiteQL compares text case-sensitively,
  hence ``LOWER``; the address is already lower case.) Each hit is checked again in Python. With
  `transactions` configured, the transactions whose ``entity`` is a matched customer are listed too, as
  ``transaction``/``financial`` refs with their date as `anchor_date`, for the policy to decide on.
  A query is restarted after its last id before NetSuite's 100,000-rows-per-query cap.
- `export`: ``GET /services/rest/record/v1/{type}/{id}?expandSubResources=true``, every field and sublist
  (``links`` removed); records gone since discovery are skipped.
- `erase`, per decision: DELETE sends ``DELETE /record/v1/{type}/{id}`` (204; 404 is ``already_gone``).
  NetSuite refuses to delete a customer that transactions reference (400). The connector then checks with
  SuiteQL that transactions really do reference it, anonymises the customer instead (``PATCH`` with the
  object's `anonymise` values, and `clear_sublists` emptied with ``?replace=``), and returns an ANONYMISE
  outcome whose ``basis`` and ``retain_until`` come from `tax_retention`. The retention clock starts from
  the latest referencing transaction's date, counted in the customer's subsidiary's jurisdiction as
  legal-rules.md section 2 says. The connector cannot see the policy's tax table, so the data map carries
  the same figures.
  ANONYMISE PATCHes the configured values; fields already holding them count as ``already_gone``.
  RETAIN touches nothing.
  **Transactions are never deleted by a DSR.** A DELETE decision for a transaction (the policy's, once
  its tax retention has ended) is carried out as an anonymisation: no DELETE is ever sent for a transaction type,
  whatever the decision says. ANONYMISE of a transaction PATCHes only the non-financial fields named in
  ``transactions.anonymise``, such as the e-mail copied onto an invoice or a memo.
- `verify_erased`: discovery again (an anonymised customer no longer matches).
- `expired`/`purge`: customers and contacts whose ``lastmodifieddate`` is before the cutoff, by SuiteQL;
  purge deletes them like `erase` does, anonymising customers with transactions. Transactions are never
  listed as expired and never purged here.

Pacing: NetSuite limits *concurrent* calls per account (15, plus 10 per SuiteCloud Plus licence, shared
by SOAP, REST and RESTlets, so other integrations use the same budget) and answers the excess with 429.
The connector keeps at most `max_concurrency` calls in flight and paces them with `rate_limit`. 429s,
5xx answers, resets and timeouts are retried with backoff (`connectors.pacing.vendor_retry`, honouring a
``Retry-After`` if one comes).

Personal data never reaches an exception or a log. Record URLs hold numeric ids only and the address
travels in the body of a SuiteQL call, but NetSuite's error details can echo values that were sent (a
query fragment, an invalid value). So every failure becomes a `ConnectorError` that names the system,
operation, record type, HTTP status and NetSuite's ``o:errorCode`` only. It is raised outside the
``except`` block so that nothing is chained. Secrets are read from the environment variables the settings
name and never appear in a message.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from dateutil.relativedelta import relativedelta
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from requests_oauthlib import OAuth1

from connectors.base import (
    ConnectorConfigError,
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    FieldChange,
    HttpConnector,
    RateLimitSpec,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    RightsAction,
    RightsOutcome,
    RightsReceipt,
    Subject,
    as_text,
    check_rectifiable,
    chunks,
    env_secret,
    origin_problem,
    outcome_for,
    receipt_id,
    same_text,
    subject_email,
    unique_decisions,
    validate_settings,
)
from connectors.pacing import LATENCY_MARGIN, budget_key, limiter_for, parse_retry_after, slots_for, vendor_retry
from dsr.contract import RECTIFIABLE_FIELDS

KIND = "netsuite"
TRANSACTIONS_KEPT = "transactions are never deleted by a DSR: personal fields cleared, amounts and dates kept"
VERSION = "netsuite/1"
PAGE_MAX = 1000  # SuiteQL rows per page
RESULT_CAP = 100_000  # SuiteQL rows per query
IN_LIST_MAX = 1000  # values in one IN list (Oracle's limit)
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
RECORD_PATH = "/services/rest/record/v1"
TOKEN_MARGIN = 60.0  # seconds before a bearer token's expiry at which a new one is fetched
ASSERTION_SECONDS = 300  # lifetime of a client assertion (NetSuite allows up to an hour)

ENTITY_OBJECTS = ("customer", "contact")
TRANSACTION_TYPES: Mapping[str, str] = {
    "CustInvc": "invoice",
    "CashSale": "cashSale",
    "CustCred": "creditMemo",
    "CustPymnt": "customerPayment",
    "CustRfnd": "customerRefund",
    "CustDep": "customerDeposit",
    "SalesOrd": "salesOrder",
    "RtnAuth": "returnAuthorization",
    "Estimate": "estimate",
}
"""SuiteQL ``transaction.type`` code -> REST record type."""
_TRANSACTION_RECORDS = frozenset(TRANSACTION_TYPES.values())
# Fields a DSR never rewrites on a transaction: the amounts, dates and links that make it a tax record.
_PROTECTED_TRANSACTION_FIELDS = frozenset({
    "id", "tranid", "trandate", "entity", "subsidiary", "currency", "exchangerate", "total", "subtotal", "taxtotal",
    "amount", "item", "apply", "status", "postingperiod", "account", "location", "department", "class",
    "createddate", "lastmodifieddate",
})  # fmt: skip
_READ_ONLY_ENTITY_FIELDS = frozenset({"id", "datecreated", "lastmodifieddate", "subsidiary", "isperson"})

# Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> REST field, per entity record type.
# Transactions are documents as issued (tax records): never rectified. Addresses live in the addressBook
# sublist (one line per address, each its own subrecord), so postal_address is left to a person.
DEFAULT_RECTIFIABLE: Mapping[str, Mapping[str, str]] = {
    "customer": {"first_name": "firstName", "last_name": "lastName", "email": "email", "phone": "phone",
                 "company": "companyName"},
    "contact": {"first_name": "firstName", "last_name": "lastName", "email": "email", "phone": "phone",
                "title": "title"},
}
# Marketing: globalSubscriptionStatus, a select field (Oracle NetSuite help, Subscription Management).
# A business may set the soft statuses only; the confirmed ones are the recipient's own.
SUBSCRIPTION_FIELD = "globalSubscriptionStatus"
SUBSCRIPTION_NAMES: Mapping[str, str] = {"1": "Soft Opt-In", "2": "Soft Opt-Out", "3": "Confirmed Opt-In",
                                         "4": "Confirmed Opt-Out"}
SOFT_OPT_IN, SOFT_OPT_OUT = "1", "2"
_OPTED_OUT = frozenset({"2", "4"})

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ACCOUNT_ID = re.compile(r"^\d+(?:_[A-Za-z]+\d*)?$")
_CODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")
_DIGITS = re.compile(r"^\d{1,18}$")
_INLINE_SECRETS = ("consumer_secret", "token_secret", "client_secret", "private_key", "password", "token")

Scalar = str | int | float | bool | None


# --- settings ---------------------------------------------------------------------------------------
# Validators raise ValueError("relative.path: message"); `describe_validation_error` puts the system's
# config path in front, so every error names the field at fault without echoing its value.


class AuthSpec(BaseModel):
    """How the connector logs in; every secret by the name of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: Literal["tba", "client_credentials"]
    # flow tba (OAuth 1.0a, HMAC-SHA256)
    consumer_key_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    consumer_secret_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    token_id_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    token_secret_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    # flow client_credentials (OAuth 2.0, JWT client assertion signed with the certificate's key)
    client_id_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    certificate_id_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    private_key_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)  # the PEM itself
    private_key_file_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    private_key_file: str | None = Field(default=None, min_length=1)
    algorithm: Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512"] = "PS256"
    scope: tuple[Literal["rest_webservices", "restlets", "suite_analytics"], ...] = ("rest_webservices",)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in _INLINE_SECRETS:
                if key in data:
                    raise ValueError(f"{key}: never put a secret in systems.yaml; name the environment variable "
                                     f"that holds it ({key}_env)")
        return data

    @model_validator(mode="after")
    def _check(self) -> AuthSpec:
        tba = ("consumer_key_env", "consumer_secret_env", "token_id_env", "token_secret_env")
        m2m = ("client_id_env", "certificate_id_env", "private_key_env", "private_key_file_env", "private_key_file")
        needed, unused = (tba, m2m) if self.flow == "tba" else (("client_id_env", "certificate_id_env"), tba)
        for name in needed:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required for flow {self.flow}")
        for name in unused:
            if getattr(self, name) is not None:
                raise ValueError(f"{name}: not used by flow {self.flow}")
        if self.flow == "client_credentials":
            keys = [n for n in ("private_key_env", "private_key_file_env", "private_key_file") if getattr(self, n)]
            if len(keys) != 1:
                raise ValueError("private_key_file: give exactly one of private_key_env, private_key_file_env, "
                                 "private_key_file")
            if "rest_webservices" not in self.scope:
                raise ValueError("scope: must include rest_webservices (SuiteQL and record calls need it)")
        return self


def _check_mapping(mapping: Mapping[str, Scalar], protected: frozenset[str]) -> None:
    if not mapping:
        raise ValueError("anonymise: name at least one field, or leave anonymise out")
    for name, value in mapping.items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"anonymise.{name}: not a NetSuite field name")
        if name.lower() in protected:
            raise ValueError(f"anonymise.{name}: this field cannot be rewritten by an erasure")
        if name.lower() in ("email", "altemail") and value not in (None, ""):
            raise ValueError(f"anonymise.{name}: NetSuite checks e-mail syntax, so a placeholder is refused; use null")
        if isinstance(value, str) and re.sub(r"\{id\}", "", value).count("{"):
            raise ValueError(f"anonymise.{name}: the only placeholder is {{id}} (the record's internal id)")


class ObjectSpec(BaseModel):
    """One entity record type of the data map (customer or contact)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: tuple[DataCategory, ...] = Field(min_length=1)
    # REST field name -> value written when the record is anonymised; "{id}" in a string becomes the record's
    # internal id (entityId is unique per record type, so "[erased]" alone would collide on the second one).
    anonymise: dict[str, Scalar] | None = None
    clear_sublists: tuple[str, ...] = ()  # sublists emptied when anonymising (addressBook: the addresses)
    retention_field: Literal["lastmodifieddate", "datecreated"] = "lastmodifieddate"
    # canonical field -> REST field a rectification writes; unset: DEFAULT_RECTIFIABLE of the record type.
    rectifiable: dict[str, str] | None = None

    @field_validator("clear_sublists")
    @classmethod
    def _sublist_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"{name!r} is not a NetSuite sublist name")
        return value

    @model_validator(mode="after")
    def _check(self) -> ObjectSpec:
        if self.anonymise is not None:
            _check_mapping(self.anonymise, _READ_ONLY_ENTITY_FIELDS)
            if "email" not in self.anonymise:
                # Otherwise an "anonymised" record would still be found as the person's.
                raise ValueError("anonymise: must clear email (null), the link to the person")
        if self.clear_sublists and self.anonymise is None:
            raise ValueError("clear_sublists: only used with anonymise")
        for canonical, name in (self.rectifiable or {}).items():
            if canonical not in RECTIFIABLE_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a rectifiable field ({', '.join(RECTIFIABLE_FIELDS)})")
            if not _FIELD_NAME.match(name) or name.lower() in _READ_ONLY_ENTITY_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a writable NetSuite field name")
        return self


class TransactionsSpec(BaseModel):
    """The transactions that reference a subject's customers: listed, exported, never deleted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discover: bool = True  # list them in discovery (as transaction/financial refs for the policy)
    types: tuple[str, ...] = ("CustInvc", "CashSale", "CustCred", "CustPymnt", "CustRfnd", "CustDep")
    categories: tuple[DataCategory, ...] = (DataCategory.TRANSACTION, DataCategory.FINANCIAL)
    anonymise: dict[str, Scalar] | None = None  # non-financial fields only (email, memo...)

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one transaction type")
        for code in value:
            if code not in TRANSACTION_TYPES:
                raise ValueError(f"unknown transaction type {code!r} (known: {', '.join(TRANSACTION_TYPES)})")
        return value

    @field_validator("categories")
    @classmethod
    def _some_categories(cls, value: tuple[DataCategory, ...]) -> tuple[DataCategory, ...]:
        if not value:
            raise ValueError("name at least one data category")
        return value

    @model_validator(mode="after")
    def _check(self) -> TransactionsSpec:
        if self.anonymise is not None:
            _check_mapping(self.anonymise, _PROTECTED_TRANSACTION_FIELDS)
        return self


class TaxRule(BaseModel):
    """How long one jurisdiction's tax law keeps the records (legal-rules.md section 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jurisdiction: Literal["US", "GB", "NL", "BR", "CA"]
    years: int = Field(ge=1, le=30)
    starts: Literal["end_of_fiscal_year", "start_of_next_fiscal_year"] = "end_of_fiscal_year"
    basis: str = Field(min_length=1, max_length=500)


class TaxRetention(TaxRule):
    """The default rule, the fiscal year end, and other rules for OneWorld subsidiaries under other tax laws."""

    fiscal_year_end: str = Field(default="12-31", pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
    by_subsidiary: dict[str, TaxRule] = Field(default_factory=dict)  # subsidiary internal id -> rule

    @model_validator(mode="after")
    def _check(self) -> TaxRetention:
        month, day = (int(p) for p in self.fiscal_year_end.split("-"))
        try:
            date(2001, month, day)  # a year without 29 February: a fiscal year cannot end on a leap day
        except ValueError:
            raise ValueError("fiscal_year_end: not a day of the year") from None
        for key in self.by_subsidiary:
            if not _DIGITS.match(key):
                raise ValueError(f"by_subsidiary.{key}: not a subsidiary internal id")
        return self

    def rule_for(self, subsidiary: str | None) -> TaxRule:
        return self.by_subsidiary.get(subsidiary or "", self)


class NetSuiteSettings(BaseModel):
    """The `settings:` block of a `netsuite` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: str | None = Field(default=None, pattern=_ACCOUNT_ID.pattern)
    account_id_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    base_url: str | None = Field(default=None, min_length=1)  # default https://<account>.suitetalk.api.netsuite.com
    # Sandboxes only: send every call to this loopback emulator instead.
    base_url_override: str | None = Field(default=None, min_length=1)
    base_url_override_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    auth: AuthSpec
    rate_limit: RateLimitSpec = RateLimitSpec(calls=10, period_seconds=1.0)
    # Calls in flight at once. NetSuite's account-wide limit (15, plus 10 per SuiteCloud Plus licence) is
    # shared with every other integration, so take a share of it.
    max_concurrency: int = Field(default=4, ge=1, le=100)
    page_size: int = Field(default=PAGE_MAX, ge=1, le=PAGE_MAX)
    result_cap: int = Field(default=RESULT_CAP, ge=1, le=RESULT_CAP)
    timeout_seconds: float = Field(default=60.0, gt=0, le=900)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_max_wait: float = Field(default=60.0, ge=0, le=600)
    objects: dict[str, ObjectSpec] = Field(min_length=1)
    transactions: TransactionsSpec | None = None
    tax_retention: TaxRetention | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in _INLINE_SECRETS:
                if key in data:
                    raise ValueError(f"{key}: never put a secret in systems.yaml; name its environment variable "
                                     "under auth")
        return data

    @model_validator(mode="after")
    def _check(self) -> NetSuiteSettings:
        if (self.account_id is None) == (self.account_id_env is None):
            raise ValueError("account_id: give either account_id or account_id_env")
        if self.base_url_override is not None and self.base_url_override_env is not None:
            raise ValueError("base_url_override_env: give either base_url_override or base_url_override_env")
        if self.base_url is not None:
            problem = origin_problem(self.base_url, https_only=True)
            if problem:
                raise ValueError(f"base_url: {problem}")
        if self.base_url_override is not None:
            problem = origin_problem(self.base_url_override, loopback_only=True)
            if problem:
                raise ValueError(f"base_url_override: {problem}")
        for name in self.objects:
            if name not in ENTITY_OBJECTS:
                raise ValueError(f"objects.{name}: not a record type this connector reads (customer, contact)")
        if self.result_cap < self.page_size:
            raise ValueError("result_cap: must be at least page_size")
        if "customer" in self.objects and self.tax_retention is None:
            raise ValueError("tax_retention: required with objects.customer: a customer that transactions "
                             "reference is anonymised and kept under tax law, with its basis and end date")
        return self


def parse_settings(system: str, settings: Mapping[str, Any]) -> NetSuiteSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(NetSuiteSettings, system, settings)


# --- SuiteQL literals ---------------------------------------------------------------------------------


def suiteql_string(value: str) -> str:
    """`value` as a SuiteQL (Oracle) string literal: single quotes doubled, nothing else special.

    SuiteQL over REST takes no bound parameters, so this is the only way a value reaches a query. Control
    characters are refused (no address holds one, and none should reach a query); backslashes, ``%`` and
    ``_`` need no escaping in an Oracle literal compared with ``=``.

    Raises:
        ConnectorError: the value holds a control character (the message does not repeat the value).
    """
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ConnectorError("refusing a value with control characters in a SuiteQL literal")
    return "'" + value.replace("'", "''") + "'"


def _id_list(ids: Sequence[str]) -> str:
    if not ids or not all(_DIGITS.match(i) for i in ids):
        raise ConnectorError("internal ids must be digits")
    return ", ".join(ids)


# --- retention ----------------------------------------------------------------------------------------


def _fiscal_year_end(day: date, month_day: str) -> date:
    """The last day of the fiscal year that `day` falls in (same counting as `dsr.policy.fiscal_year_end`)."""
    month, dom = (int(part) for part in month_day.split("-"))
    end = date(day.year, month, 1) + relativedelta(day=dom)
    return end if day <= end else end + relativedelta(years=1, day=dom)


def retention_end(anchor: date, rule: TaxRule, fiscal_year_end: str) -> date:
    """The last day a tax record dated `anchor` must be kept (same counting as `dsr.policy.tax_retention_end`)."""
    fy_end = _fiscal_year_end(anchor, fiscal_year_end)
    if rule.starts == "start_of_next_fiscal_year":  # Brazil: counted from the next fiscal year's first day
        return fy_end + timedelta(days=1) + relativedelta(years=rule.years) - timedelta(days=1)
    return fy_end + relativedelta(years=rule.years)


# --- construction -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Credentials:
    """Secrets read from the environment (never printed; `repr` hides them)."""

    consumer_key: str = ""
    consumer_secret: str = ""
    token_id: str = ""
    token_secret: str = ""
    client_id: str = ""
    certificate_id: str = ""
    private_key: Any = None

    def __repr__(self) -> str:
        return "_Credentials(<hidden>)"


def create(system: str, settings: Mapping[str, Any]) -> NetSuiteConnector:
    """Build the connector for one system (the registry's entry point). Makes no call to NetSuite.

    Raises:
        ConnectorConfigError: bad settings, an environment variable they name is unset or malformed, or
            the private key cannot be read.
    """
    parsed = parse_settings(system, settings)
    where = f"systems.{system}.settings"
    account = parsed.account_id or env_secret(f"{where}.account_id_env", parsed.account_id_env or "")
    if not _ACCOUNT_ID.match(account):
        raise ConnectorConfigError(f"{where}.account_id_env: not a NetSuite account id (such as 1234567 or "
                                   "1234567_SB1)")
    account = account.upper()  # the realm is upper case with an underscore; the host lower case with a hyphen
    override = parsed.base_url_override
    if override is None and parsed.base_url_override_env is not None:
        override = env_secret(f"{where}.base_url_override_env", parsed.base_url_override_env)
        problem = origin_problem(override, loopback_only=True)
        if problem:
            raise ConnectorConfigError(f"{where}.base_url_override_env: {problem}")
    base_url = (override or parsed.base_url or
                f"https://{account.lower().replace('_', '-')}.suitetalk.api.netsuite.com").rstrip("/")
    return NetSuiteConnector(system, parsed, account_id=account, base_url=base_url,
                             credentials=_credentials(f"{where}.auth", parsed.auth))


def _credentials(where: str, auth: AuthSpec) -> _Credentials:
    if auth.flow == "tba":
        return _Credentials(
            consumer_key=env_secret(f"{where}.consumer_key_env", auth.consumer_key_env or ""),
            consumer_secret=env_secret(f"{where}.consumer_secret_env", auth.consumer_secret_env or ""),
            token_id=env_secret(f"{where}.token_id_env", auth.token_id_env or ""),
            token_secret=env_secret(f"{where}.token_secret_env", auth.token_secret_env or ""),
        )
    client_id = env_secret(f"{where}.client_id_env", auth.client_id_env or "")
    certificate_id = env_secret(f"{where}.certificate_id_env", auth.certificate_id_env or "")
    if auth.private_key_env is not None:
        field, pem = "private_key_env", env_secret(f"{where}.private_key_env", auth.private_key_env).encode()
    else:
        field = "private_key_file" if auth.private_key_file else "private_key_file_env"
        path = auth.private_key_file or env_secret(f"{where}.private_key_file_env", auth.private_key_file_env or "")
        try:
            pem = Path(path).read_bytes()
        except OSError:
            raise ConnectorConfigError(f"{where}.{field}: the private key file cannot be read") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConnectorConfigError(f"{where}.{field}: not an unencrypted PEM private key") from None
    return _Credentials(client_id=client_id, certificate_id=certificate_id, private_key=key)


# --- errors -------------------------------------------------------------------------------------------


class NetSuiteApiError(ConnectorError):
    """NetSuite answered with an error; the message names the HTTP status and NetSuite's error code only."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _Answer(Exception):
    """An HTTP answer the caller did not expect (internal; never leaves the module)."""

    def __init__(self, status: int, code: str | None, retry_after: float | None) -> None:
        super().__init__(status)
        self.status, self.code, self.retry_after = status, code, retry_after


def _error_code(response: requests.Response) -> str | None:
    """NetSuite's ``o:errorCode`` (or an OAuth ``error``), if it looks like a code; never free text."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = None
    if isinstance(body, Mapping):
        details = body.get("o:errorDetails")
        if isinstance(details, list) and details and isinstance(details[0], Mapping):
            code = details[0].get("o:errorCode")
        elif isinstance(body.get("error"), str):
            code = body["error"]
    return code if isinstance(code, str) and _CODE.match(code) else None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _Answer):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, _Answer) else None


# --- OAuth 2.0 ------------------------------------------------------------------------------------------


class _BearerAuth(requests.auth.AuthBase):
    def __init__(self, tokens: _TokenSource) -> None:
        self._tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._tokens.get()}"
        return request


class _TokenSource:
    """Bearer tokens from the client-credentials flow: fetched on first use, cached until a minute before expiry."""

    def __init__(self, fetch: Callable[[], tuple[str, float]]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, lifetime = self._fetch()
                # A minute early, or half-way through a token that lives less than two minutes.
                self._renew_at = time.monotonic() + lifetime - min(TOKEN_MARGIN, lifetime / 2)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


# --- the connector --------------------------------------------------------------------------------------


class NetSuiteConnector(HttpConnector):
    """Discover, export, erase, verify and purge a subject's customers and contacts in one NetSuite account.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    `stats` counts calls, retries, throttling answers and token fetches, for benchmarks and tests.
    """

    def __init__(self, system: str, settings: NetSuiteSettings, *, account_id: str, base_url: str,
                 credentials: _Credentials) -> None:
        self._system = system
        self._settings = settings
        self._account_id = account_id
        self._base_url = base_url
        self._credentials = credentials
        self._timeout = (settings.connect_timeout_seconds, settings.timeout_seconds)
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._slots = slots_for(budget_key("netsuite", account_id), settings.max_concurrency)
        self._limiter = limiter_for(budget_key("netsuite", account_id), settings.rate_limit.calls,
                                    settings.rate_limit.period_seconds * (1 + LATENCY_MARGIN))
        self._session = requests.Session()
        self._tokens: _TokenSource | None = None
        self._auth: requests.auth.AuthBase
        if settings.auth.flow == "tba":
            self._auth = OAuth1(credentials.consumer_key, credentials.consumer_secret, credentials.token_id,
                                credentials.token_secret, signature_method=SIGNATURE_HMAC_SHA256, realm=account_id)
        else:
            self._tokens = _TokenSource(self._fetch_token)
            self._auth = _BearerAuth(self._tokens)
        self._retry = vendor_retry(retryable=_retryable, retry_after=_retry_after,
                                   attempts=settings.retry_attempts, max_wait=settings.retry_max_wait,
                                   on_retry=self._on_retry)
        transactions = settings.transactions
        self._transaction_objects = tuple(dict.fromkeys(TRANSACTION_TYPES[code] for code in transactions.types)) \
            if transactions else ()
        self._objects = (*(o for o in ENTITY_OBJECTS if o in settings.objects), *self._transaction_objects)
        rate = settings.rate_limit.calls / settings.rate_limit.period_seconds
        self._info = ConnectorInfo(system=system, kind=KIND, version=VERSION, rate_limit_per_second=rate,
                                   max_batch=1, objects=self._objects)

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """Customers and contacts whose e-mail is the subject's, then (if configured) their customers' transactions.

        Raises:
            ConnectorError: the subject has no usable e-mail, or NetSuite failed (after retries).
        """
        email = subject_email(subject)
        literal = suiteql_string(email)
        refs: list[RecordRef] = []
        customers: list[str] = []
        for name in ENTITY_OBJECTS:
            spec = self._settings.objects.get(name)
            if spec is None:
                continue
            for row in self._suiteql("discover", name, "id, email", name, f"LOWER(email) = {literal}"):
                if str(row.get("email") or "").strip().lower() != email:
                    self._count("mismatches_dropped")  # belt and braces: never trust a vendor-side match blindly
                    continue
                refs.append(RecordRef(self._system, name, str(row["id"]), spec.categories))
                if name == "customer":
                    customers.append(str(row["id"]))
        transactions = self._settings.transactions
        if transactions is not None and transactions.discover and customers:
            types = ", ".join(suiteql_string(code) for code in transactions.types)
            for batch in chunks(customers, IN_LIST_MAX):
                where = f"entity IN ({_id_list(batch)}) AND type IN ({types})"
                for row in self._suiteql("discover", "transaction",
                                         "id, type, TO_CHAR(trandate, 'YYYY-MM-DD') AS trandate", "transaction", where):
                    record_type = TRANSACTION_TYPES.get(str(row.get("type")))
                    if record_type is None:
                        continue
                    refs.append(RecordRef(self._system, record_type, str(row["id"]), transactions.categories,
                                          anchor_date=_date_or_none(row.get("trandate"))))
        return refs

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every field and sublist of each record (``expandSubResources=true``), in the order of `refs`.

        Records gone since discovery are skipped.

        Raises:
            ConnectorError: a ref of another system or an unknown record type, or NetSuite failed.
        """
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")
        for ref in refs:
            record = self._get("export", ref.object, ref.id, expand=True)
            if record is not None:
                yield Record(ref=ref, fields=_without_links(record))

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Delete, anonymise or retain each record as decided; transactions are never deleted.

        Idempotent: a record already deleted, or already holding its anonymised values, is done with
        ``already_gone=True``. A record NetSuite refuses to change is not done, with the reason (its
        error code); the others go ahead. If NetSuite itself fails (after retries), the records not yet
        handled are not done, with that error.
        """
        calls_before = self._calls()
        outcomes: dict[str, RecordOutcome] = {}
        failure: str | None = None
        for decision in unique_decisions(decisions, outcomes):
            key = decision.ref.key
            problem = self._problem_with(decision.ref)
            if problem is not None:
                outcomes[key] = outcome_for(decision, done=False, error=problem)
            elif decision.action is ErasureAction.RETAIN:
                outcomes[key] = outcome_for(decision, done=True)
            elif failure is not None:
                outcomes[key] = outcome_for(decision, done=False, error=failure)
            else:
                if decision.ref.object in self._transaction_objects and decision.action is ErasureAction.DELETE:
                    # Transactions are never deleted by a DSR (tax records outlive any one retention
                    # decision): their personal fields are cleared instead, and the outcome says so.
                    decision = replace(decision, action=ErasureAction.ANONYMISE,
                                       basis=f"{decision.basis}; {TRANSACTIONS_KEPT}" if decision.basis
                                       else TRANSACTIONS_KEPT)
                try:
                    outcomes[key] = self._carry_out(decision)
                except ConnectorConfigError:
                    raise
                except ConnectorError as exc:
                    failure = str(exc)
                    outcomes[key] = outcome_for(decision, done=False, error=failure)
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(system=self._system, outcomes=ordered, vendor_receipt_id=receipt_id(KIND, ordered),
                       api_calls=self._calls() - calls_before)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (deleted and anonymised records no longer do)."""
        return self.discover(subject)

    # --- rectification (dsr.contract.Rectifier) ---

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """PATCH the changed fields of each customer and contact (only what differs); transactions are left as
        issued (every field `not_held`).

        A record NetSuite refuses to change (a required name emptied, an invalid e-mail) is not done, with
        its error code; a record gone since discovery is not done either. If NetSuite itself fails (after
        retries), the records not yet handled are not done, with that error.

        Raises:
            ConnectorError: `changes` names a field that is not a canonical rectifiable field.
        """
        check_rectifiable(self._system, changes)
        calls_before = self._calls()
        outcomes: list[RightsOutcome] = []
        failure: str | None = None
        for ref in refs:
            mapping = self._rectifiable(ref.object)
            held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
            not_held = tuple(canonical for canonical in changes if canonical not in mapping)
            problem = self._problem_with(ref) or failure
            if problem is not None:
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held, error=problem))
                continue
            if not held:
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held))
                continue
            try:
                outcomes.append(self._rectify_one(ref, held, changes, not_held))
            except ConnectorConfigError:
                raise
            except ConnectorError as exc:
                failure = str(exc)
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held, error=failure))
        return RightsReceipt(self._system, RightsAction.RECTIFY, tuple(outcomes),
                             receipt_id(KIND, tuple(outcomes)), self._calls() - calls_before)

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Read each customer and contact again: those whose rectifiable fields do not show the new values.

        A record deleted meanwhile holds no old value either, so it is not listed.
        """
        check_rectifiable(self._system, changes)
        wrong: list[RecordRef] = []
        for ref in refs:
            mapping = self._rectifiable(ref.object)
            held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
            if not held or self._problem_with(ref) is not None:
                continue
            current = self._get("verify", ref.object, ref.id, expand=False)
            if current is not None and any(not same_text(canonical, current.get(name), changes[canonical])
                                           for canonical, name in held.items()):
                wrong.append(ref)
        return wrong

    def _rectifiable(self, obj: str) -> Mapping[str, str]:
        spec = self._settings.objects.get(obj) if obj in ENTITY_OBJECTS else None
        if spec is None:
            return {}
        return spec.rectifiable if spec.rectifiable is not None else DEFAULT_RECTIFIABLE[obj]

    def _rectify_one(self, ref: RecordRef, held: Mapping[str, str], changes: Mapping[str, str],
                     not_held: tuple[str, ...]) -> RightsOutcome:
        current = self._get("rectify", ref.object, ref.id, expand=False)
        if current is None:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error="the record no longer exists in NetSuite")
        diffs = tuple(FieldChange(canonical, f"{ref.object}.{name}", old=as_text(current.get(name)),
                                  new=changes[canonical])
                      for canonical, name in held.items() if not same_text(canonical, current.get(name),
                                                                             changes[canonical]))
        if not diffs:
            return RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held)
        body = {held[d.field]: (d.new or None) for d in diffs}  # an empty value clears the field
        answer = self._call("rectify", ref.object, "PATCH", f"{RECORD_PATH}/{ref.object}/{ref.id}", body=body,
                            expect=frozenset({204, 400, 403, 404}))
        if answer.status_code == 404:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error="the record no longer exists in NetSuite")
        if answer.status_code != 204:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error=f"NetSuite refused the new values ({answer.status_code} "
                                       f"{_error_code(answer) or 'UNKNOWN'})")
        return RightsOutcome(ref, RightsAction.RECTIFY, True, changes=diffs, not_held=not_held)

    # --- marketing (dsr.contract.MarketingSuppressor) ---

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Set each customer's and contact's ``globalSubscriptionStatus`` to Soft Opt-Out (NetSuite then
        unsubscribes it from every campaign subscription category). Records already Soft or Confirmed Opt-Out
        are done without a change; transactions carry no marketing status."""
        subject_email(subject)
        return self._set_subscriptions(RightsAction.SUPPRESS, [
            (ref, SOFT_OPT_OUT, None) for ref in refs])

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Put back the status each suppression changed, on records still at the Soft Opt-Out it set.

        A record the recipient (or anyone) changed since is left alone. A Confirmed Opt-In cannot be set by a
        business: it comes back as Soft Opt-In (campaigns reach the person again; NetSuite may ask them to
        confirm).
        """
        subject_email(subject)
        wanted: list[tuple[RecordRef, str, str | None]] = []
        for outcome in suppressed:
            old = next((c.old for c in outcome.changes if c.field == SUBSCRIPTION_FIELD), None)
            if old is None:
                wanted.append((outcome.ref, "", None))  # nothing was changed: nothing to restore
                continue
            back = next((sid for sid, name in SUBSCRIPTION_NAMES.items() if name == old), SOFT_OPT_IN)
            wanted.append((outcome.ref, SOFT_OPT_IN if back == "3" else back, SOFT_OPT_OUT))
        return self._set_subscriptions(RightsAction.RESTORE, wanted)

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Customers and contacts whose status still lets campaigns reach them (Soft or Confirmed Opt-In)."""
        subject_email(subject)
        open_to_marketing = []
        for ref in refs:
            if ref.object not in ENTITY_OBJECTS or self._problem_with(ref) is not None:
                continue
            current = self._get("verify", ref.object, ref.id, expand=False)
            if current is not None and _subscription(current) not in _OPTED_OUT:
                open_to_marketing.append(ref)
        return open_to_marketing

    def _set_subscriptions(self, action: RightsAction,
                           wanted: Sequence[tuple[RecordRef, str, str | None]]) -> RightsReceipt:
        """Per record: set `globalSubscriptionStatus` to the wanted id. For a suppression (`only_from` None)
        a record already opted out is left; for a restore only a record still at `only_from` is changed."""
        calls_before = self._calls()
        outcomes: list[RightsOutcome] = []
        failure: str | None = None
        for ref, target, only_from in wanted:
            problem = self._problem_with(ref) or failure
            if problem is not None:
                outcomes.append(RightsOutcome(ref, action, False, error=problem))
                continue
            if ref.object not in ENTITY_OBJECTS or not target:
                outcomes.append(RightsOutcome(ref, action, True))
                continue
            try:
                outcomes.append(self._set_subscription(ref, action, target, only_from))
            except ConnectorConfigError:
                raise
            except ConnectorError as exc:
                failure = str(exc)
                outcomes.append(RightsOutcome(ref, action, False, error=failure))
        return RightsReceipt(self._system, action, tuple(outcomes), receipt_id(KIND, tuple(outcomes)),
                             self._calls() - calls_before)

    def _set_subscription(self, ref: RecordRef, action: RightsAction, target: str,
                          only_from: str | None) -> RightsOutcome:
        current = self._get(action.value, ref.object, ref.id, expand=False)
        if current is None:
            # Suppressing a record that is gone: nothing left to market to. Restoring it: nothing to restore.
            return RightsOutcome(ref, action, True)
        status = _subscription(current)
        if status == target or (only_from is None and status in _OPTED_OUT) or \
                (only_from is not None and status != only_from):
            return RightsOutcome(ref, action, True)
        answer = self._call(action.value, ref.object, "PATCH", f"{RECORD_PATH}/{ref.object}/{ref.id}",
                            body={SUBSCRIPTION_FIELD: {"id": target}}, expect=frozenset({204, 400, 403, 404}))
        if answer.status_code == 404:
            return RightsOutcome(ref, action, True)
        if answer.status_code != 204:
            return RightsOutcome(ref, action, False, error=f"NetSuite refused the subscription status "
                                                           f"({answer.status_code} {_error_code(answer) or 'UNKNOWN'})")
        change = FieldChange(SUBSCRIPTION_FIELD, f"{ref.object}.{SUBSCRIPTION_FIELD}",
                             old=SUBSCRIPTION_NAMES.get(status, status), new=SUBSCRIPTION_NAMES[target])
        return RightsOutcome(ref, action, True, changes=(change,))

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
                                anchor_date=_date_or_none(row.get("anchor")))

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired records (as `erase` with DELETE decisions: customers with transactions are anonymised)."""
        return self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs])

    # --- erasure ---

    def _carry_out(self, decision: ErasureDecision) -> RecordOutcome:
        obj = decision.ref.object
        if obj in self._transaction_objects:  # ANONYMISE (DELETE was refused before any call)
            transactions = self._settings.transactions
            assert transactions is not None
            return self._anonymise(decision, transactions.anonymise, (), "transactions.anonymise")
        spec = self._settings.objects[obj]
        where = f"objects.{obj}.anonymise"
        if decision.action is ErasureAction.ANONYMISE:
            return self._anonymise(decision, spec.anonymise, spec.clear_sublists, where)
        answer = self._call("erase", obj, "DELETE", f"{RECORD_PATH}/{obj}/{decision.ref.id}",
                            expect=frozenset({204, 400, 403, 404}))
        if answer.status_code == 204:
            return outcome_for(decision, done=True)
        if answer.status_code == 404:
            return outcome_for(decision, done=True, already_gone=True)
        code = _error_code(answer) or "UNKNOWN"
        if answer.status_code == 400 and obj == "customer":
            dates = self._transaction_dates(decision.ref.id)
            if dates:
                # NetSuite keeps a customer that transactions reference: anonymise it, kept under tax law.
                return self._anonymise_for_tax(decision, max(dates), spec)
            return outcome_for(decision, done=False,
                               error=f"NetSuite refused the delete ({answer.status_code} {code}); no transaction "
                               "references the customer")
        return outcome_for(decision, done=False, error=f"NetSuite refused the delete ({answer.status_code} {code})")

    def _anonymise_for_tax(self, decision: ErasureDecision, latest: date, spec: ObjectSpec) -> RecordOutcome:
        tax = self._settings.tax_retention
        assert tax is not None  # required with objects.customer
        current = self._get("erase", "customer", decision.ref.id, expand=bool(spec.clear_sublists))
        subsidiary = current.get("subsidiary") if current else None
        rule = tax.rule_for(str(subsidiary.get("id")) if isinstance(subsidiary, Mapping) else None)
        kept = ErasureDecision(decision.ref, ErasureAction.ANONYMISE, basis=f"{rule.jurisdiction}: {rule.basis}",
                               retain_until=retention_end(latest, rule, tax.fiscal_year_end))
        return self._anonymise(kept, spec.anonymise, spec.clear_sublists, "objects.customer.anonymise",
                               current=current, fetched=True)

    def _anonymise(self, decision: ErasureDecision, mapping: Mapping[str, Scalar] | None, sublists: Sequence[str],
                   where: str, *, current: Mapping[str, Any] | None = None, fetched: bool = False) -> RecordOutcome:
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
        answer = self._call("erase", obj, "PATCH", f"{RECORD_PATH}/{obj}/{rid}", body=body, params=params,
                            expect=frozenset({204, 400, 403, 404}))
        if answer.status_code == 404:
            return anonymised(True, already_gone=True)
        if answer.status_code != 204:
            return anonymised(False, error=f"NetSuite refused the values of systems.{self._system}.settings.{where} "
                              f"({answer.status_code} {_error_code(answer) or 'UNKNOWN'})")
        return anonymised(True, fields_cleared=tuple(sorted([*changes, *to_clear])))

    def _transaction_dates(self, customer_id: str) -> list[date]:
        """The dates of every transaction (of any type) that references the customer."""
        select = "id, TO_CHAR(trandate, 'YYYY-MM-DD') AS trandate"
        rows = self._suiteql("erase", "transaction", select, "transaction", f"entity = {_id_list([customer_id])}")
        return [day for day in (_date_or_none(row.get("trandate")) for row in rows) if day is not None]

    # --- reading ---

    def _get(self, operation: str, obj: str, rid: str, *, expand: bool) -> dict[str, Any] | None:
        params = {"expandSubResources": "true"} if expand else None
        answer = self._call(operation, obj, "GET", f"{RECORD_PATH}/{obj}/{rid}", params=params,
                            expect=frozenset({200, 404}))
        if answer.status_code == 404:
            return None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ConnectorError(f"systems.{self._system}: {operation} of {obj!r} failed (NetSuite answered a "
                                 "body that is not a JSON object)")
        return body

    def _suiteql(self, operation: str, obj: str, select: str, table: str, where: str) -> Iterator[Mapping[str, Any]]:
        """Every row of ``SELECT select FROM table WHERE where ORDER BY id``.

        Pages with limit/offset while ``hasMore``; before the per-query cap (100,000 rows) it restarts the
        query after the last id seen, so any number of rows can be read.
        """
        limit = self._settings.page_size
        last_id: str | None = None
        while True:
            condition = where if last_id is None else f"({where}) AND id > {_id_list([last_id])}"
            query = f"SELECT {select} FROM {table} WHERE {condition} ORDER BY id"
            offset = 0
            while True:
                answer = self._call(operation, obj, "POST", SUITEQL_PATH, params={"limit": limit, "offset": offset},
                                    body={"q": query}, headers={"Prefer": "transient"})
                page = _json_object(answer, self._system, operation, obj)
                items = page.get("items")
                if not isinstance(items, list):
                    raise ConnectorError(f"systems.{self._system}: {operation} of {obj!r} failed (NetSuite answered "
                                         "a SuiteQL page without items)")
                for item in items:
                    if not isinstance(item, Mapping) or not _DIGITS.match(str(item.get("id", ""))):
                        raise ConnectorError(f"systems.{self._system}: {operation} of {obj!r} failed (a SuiteQL "
                                             "row without an internal id)")
                    last_id = str(item["id"])
                    yield item
                self._count("suiteql_pages")
                if not items or not page.get("hasMore"):
                    return
                offset += limit
                if offset + limit > self._settings.result_cap:
                    self._count("suiteql_restarts")
                    break  # the next page would cross the cap: restart after the last id

    # --- calling NetSuite ---

    def _call(self, operation: str, obj: str, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              body: Any = None, headers: Mapping[str, str] | None = None,
              expect: frozenset[int] = frozenset({200})) -> requests.Response:
        """One call: paced, retried, re-authenticated once on a 401 with OAuth 2.0; PII-free errors."""
        send = partial(self._send, method, path, params, body, headers, expect)
        failure: ConnectorError | None = None
        for attempt in (1, 2):
            try:
                return self._retry(send)()
            except ConnectorError:
                raise
            except _Answer as exc:
                if exc.status == 401 and self._tokens is not None and attempt == 1:
                    self._count("relogins")  # the bearer token was revoked or expired early: fetch another
                    self._tokens.invalidate()
                    continue
                failure = self._failure(operation, obj, exc)
            except (requests.RequestException, ValueError) as exc:
                failure = self._failure(operation, obj, exc)
            break
        # Raised here, outside the `except` blocks, so that nothing of the original is chained.
        assert failure is not None
        raise failure

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any,
              headers: Mapping[str, str] | None, expect: frozenset[int]) -> requests.Response:
        if self._tokens is not None:
            self._tokens.get()  # fetched (if need be) before taking a slot: the fetch is a call of its own
        with self._slots:
            self._limiter.acquire()
            self._count("calls")
            answer = self._session.request(method, f"{self._base_url}{path}", params=params, json=body,
                                           headers=dict(headers or {}), auth=self._auth, timeout=self._timeout)
        if answer.status_code in expect:
            return answer
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        raise _Answer(answer.status_code, _error_code(answer), retry_after)

    def _fetch_token(self) -> tuple[str, float]:
        """A bearer token (and its lifetime) for a freshly signed client assertion."""
        creds, auth = self._credentials, self._settings.auth
        url = f"{self._base_url}{TOKEN_PATH}"
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": creds.client_id, "scope": list(auth.scope), "aud": url, "iat": now, "exp": now + ASSERTION_SECONDS},
            creds.private_key, algorithm=auth.algorithm, headers={"kid": creds.certificate_id, "typ": "JWT"},
        )
        form = {"grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}

        def attempt() -> requests.Response:
            # Not under a concurrency slot: a call holding one may be the one that needs the token.
            self._limiter.acquire()
            self._count("calls")
            self._count("token_requests")
            answer = self._session.post(url, data=form, timeout=self._timeout)
            if answer.status_code == 200:
                return answer
            raise _Answer(answer.status_code, _error_code(answer), parse_retry_after(answer.headers.get("Retry-After")))

        failure: ConnectorError | None = None
        try:
            answer = self._retry(attempt)()
            data = answer.json()
            token, lifetime = data["access_token"], float(data.get("expires_in") or 3600)
            if not isinstance(token, str) or not token:
                raise ValueError("no token")
            return token, lifetime
        except _Answer as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                failure = NetSuiteApiError(
                    f"systems.{self._system}: NetSuite refused the OAuth 2.0 client credentials ({exc.status} "
                    f"{exc.code or 'error'}); check the client id, the certificate id and the private key named by "
                    f"systems.{self._system}.settings.auth, and the certificate mapping in NetSuite",
                    status=exc.status, code=exc.code)
            else:
                failure = self._failure("login", "token", exc)
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            failure = self._failure("login", "token", exc)
        assert failure is not None
        raise failure

    def _failure(self, operation: str, obj: str, exc: BaseException) -> ConnectorError:
        where = f"systems.{self._system}: {operation} of {obj!r}"
        attempts = self._settings.retry_attempts
        if not isinstance(exc, _Answer):
            if isinstance(exc, requests.Timeout):
                return ConnectorError(f"{where} failed: NetSuite timed out, after {attempts} attempts")
            if isinstance(exc, requests.ConnectionError):
                return ConnectorError(f"{where} failed: NetSuite unreachable ({type(exc).__name__}), after "
                                      f"{attempts} attempts")
            return ConnectorError(f"{where} failed: unexpected {type(exc).__name__}")
        status, code = exc.status, exc.code or "UNKNOWN"
        auth = self._settings.auth
        if status == 401 and auth.flow == "tba":
            names = ", ".join(str(n) for n in (auth.consumer_key_env, auth.consumer_secret_env, auth.token_id_env,
                                                auth.token_secret_env))
            message = (f"{where} failed: NetSuite refused the login (401 {code}). Check the token-based "
                       f"authentication credentials in the environment variables {names} and the account id "
                       "(the OAuth realm); NetSuite's Login Audit Trail says why")
        elif status == 401:
            message = (f"{where} failed: NetSuite refused the OAuth 2.0 access token (401 {code}), even a freshly "
                       "fetched one; check the integration record's role and the certificate mapping")
        elif status == 403:
            message = f"{where} failed: the integration's role lacks a permission this call needs (403 {code})"
        elif status == 429:
            message = (f"{where} failed: still throttled by NetSuite (429 {code}) after {attempts} attempts; the "
                       "account's concurrency limit is shared with every other integration (lower max_concurrency)")
        elif status >= 500:
            message = f"{where} failed: NetSuite server error {status} after {attempts} attempts"
        else:
            message = f"{where} failed: NetSuite answered {status} {code}"
        return NetSuiteApiError(message, status=status, code=exc.code)

    def _on_retry(self, exc: BaseException, wait: float) -> None:
        self._count("retries")
        if isinstance(exc, _Answer) and exc.status == 429:
            self._count("throttled")
            if wait >= self._limiter.period:  # shorter, hold_off could let a burst through
                self._limiter.hold_off(wait)
        elif isinstance(exc, _Answer):
            self._count("server_errors")
        else:
            self._count("network_errors")

    # --- helpers ---

    def _calls(self) -> int:
        with self._stats_lock:
            return int(self._stats["calls"])

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        if ref.object not in self._objects:
            if ref.object in _TRANSACTION_RECORDS:
                return (f"record type {ref.object!r} is not among systems.{self._system}.settings.transactions.types")
            return f"unknown record type {ref.object!r} in systems.{self._system}"
        if not _DIGITS.match(ref.id):
            return f"id is not a NetSuite internal id (record type {ref.object!r})"
        return None


# --- module helpers ---------------------------------------------------------------------------------------


def _json_object(answer: requests.Response, system: str, operation: str, obj: str) -> Mapping[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        raise ConnectorError(f"systems.{system}: {operation} of {obj!r} failed (NetSuite answered a body that is not "
                             "a JSON object)")
    return body


def _same(current: Any, wanted: Scalar) -> bool:
    """Whether a field already holds the anonymised value (NetSuite leaves empty fields out of a record)."""
    if wanted is None or wanted == "":
        return current is None or current == ""
    return bool(current == wanted)



def _subscription(record: Mapping[str, Any]) -> str:
    """A record's ``globalSubscriptionStatus`` id; NetSuite leaves an empty field out (the default, Soft Opt-In)."""
    value = record.get(SUBSCRIPTION_FIELD)
    status = value.get("id") if isinstance(value, Mapping) else value
    return str(status) if status is not None else SOFT_OPT_IN


def _sublist_items(value: Any) -> list[Any]:
    items = value.get("items") if isinstance(value, Mapping) else None
    return items if isinstance(items, list) else []


def _date_or_none(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _without_links(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_links(v) for k, v in value.items() if k != "links"}
    if isinstance(value, list):
        return [_without_links(v) for v in value]
    return value

