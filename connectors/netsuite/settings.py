"""The `settings:` block of a `netsuite` system (its data map), and the record types it names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import origin_problem, origin_setting_problem
from connectors.http import ENV_VAR_NAME, HttpSettings, no_inline_secrets
from dsr.contract import RECTIFIABLE_FIELDS, DataCategory
from dsr.policy import Jurisdiction

PAGE_MAX = 1000  # SuiteQL rows per page
RESULT_CAP = 100_000  # SuiteQL rows per query

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
TRANSACTION_RECORDS = frozenset(TRANSACTION_TYPES.values())
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

FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
ACCOUNT_ID = re.compile(r"^\d+(?:_[A-Za-z]+\d*)?$")
DIGITS = re.compile(r"^\d{1,18}$")
_INLINE_SECRETS = ("consumer_secret", "token_secret", "client_secret", "private_key", "password", "token")

Scalar = str | int | float | bool | None

# Validators raise ValueError("relative.path: message"); `describe_validation_error` puts the system's
# config path in front, so every error names the field at fault without echoing its value.


class AuthSpec(BaseModel):
    """How the connector logs in; every secret by the name of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: Literal["tba", "client_credentials"]
    # flow tba (OAuth 1.0a, HMAC-SHA256)
    consumer_key_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    consumer_secret_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    token_id_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    token_secret_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    # flow client_credentials (OAuth 2.0, JWT client assertion signed with the certificate's key)
    client_id_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    certificate_id_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    private_key_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)  # the PEM itself
    private_key_file_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    private_key_file: str | None = Field(default=None, min_length=1)
    algorithm: Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512"] = "PS256"
    scope: tuple[Literal["rest_webservices", "restlets", "suite_analytics"], ...] = ("rest_webservices",)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        return no_inline_secrets(data, _INLINE_SECRETS, "name the environment variable that holds it (the same "
                                                        "key ending in _env)")

    @model_validator(mode="after")
    def _check(self) -> Self:
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
        if not FIELD_NAME.match(name):
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
            if not FIELD_NAME.match(name):
                raise ValueError(f"{name!r} is not a NetSuite sublist name")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
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
            if not FIELD_NAME.match(name) or name.lower() in _READ_ONLY_ENTITY_FIELDS:
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
    def _check(self) -> Self:
        if self.anonymise is not None:
            _check_mapping(self.anonymise, _PROTECTED_TRANSACTION_FIELDS)
        return self


class TaxJurisdictions(BaseModel):
    """Whose tax law governs a customer's records: the country of its subsidiary (OneWorld), else `default`.

    Only the facts: how long each country keeps tax records, from when and on what basis is
    `config/policy.yaml`'s `tax_retention`, which `dsr.policy` decides with.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Jurisdiction
    by_subsidiary: dict[str, Jurisdiction] = Field(default_factory=dict)  # subsidiary internal id -> country

    @model_validator(mode="after")
    def _check(self) -> Self:
        for key in self.by_subsidiary:
            if not DIGITS.match(key):
                raise ValueError(f"by_subsidiary.{key}: not a subsidiary internal id")
        return self

    def of(self, subsidiary: str | None) -> str:
        """The jurisdiction of a subsidiary (by internal id): its own, else the default."""
        return self.by_subsidiary.get(subsidiary or "", self.default)


def https_origin(url: str) -> str | None:
    """Why `url` is not an https origin fit for NetSuite's own host, or None."""
    return origin_problem(url, https_only=True)


class NetSuiteSettings(HttpSettings):
    """The `settings:` block of a `netsuite` system in `systems.yaml`.

    `base_url`, or the one in the variable `base_url_env` names (default: the account's own
    ``https://<account>.suitetalk.api.netsuite.com``), must be https; a sandbox is reached through
    `base_url_override` or `base_url_override_env` (loopback only) instead.
    """

    SECRET_KEYS = _INLINE_SECRETS
    SECRET_HINT = "name its environment variable under auth"

    account_id: str | None = Field(default=None, pattern=ACCOUNT_ID.pattern)
    account_id_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    # Sandboxes only: send every call to this loopback emulator instead.
    base_url_override: str | None = Field(default=None, min_length=1)
    base_url_override_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    auth: AuthSpec
    # Calls in flight at once. NetSuite's account-wide limit (15, plus 10 per SuiteCloud Plus licence) is
    # shared with every other integration, so take a share of it.
    max_concurrency: int = Field(default=4, ge=1, le=100)
    page_size: int = Field(default=PAGE_MAX, ge=1, le=PAGE_MAX)
    result_cap: int = Field(default=RESULT_CAP, ge=1, le=RESULT_CAP)
    timeout_seconds: float = Field(default=60.0, gt=0, le=900)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    retry_max_wait: float = Field(default=60.0, ge=0, le=600)
    objects: dict[str, ObjectSpec] = Field(min_length=1)
    transactions: TransactionsSpec | None = None
    tax_jurisdictions: TaxJurisdictions | None = None

    @property
    def transaction_records(self) -> tuple[str, ...]:
        """The REST record types of the configured transaction types (none without `transactions`)."""
        types = self.transactions.types if self.transactions else ()
        return tuple(dict.fromkeys(TRANSACTION_TYPES[code] for code in types))

    @property
    def record_types(self) -> tuple[str, ...]:
        """Every record type this system reads: its entities (customer, contact), then its transactions."""
        return (*(o for o in ENTITY_OBJECTS if o in self.objects), *self.transaction_records)

    def record_type_problem(self, obj: str, system: str) -> str | None:
        """Why `obj` is not a record type system `system` reads, or None."""
        if obj in self.record_types:
            return None
        if obj in TRANSACTION_RECORDS:
            return f"record type {obj!r} is not among systems.{system}.settings.transactions.types"
        return f"unknown record type {obj!r} in systems.{system}"

    @model_validator(mode="after")
    def _check_origin(self) -> Self:  # replaces the base's: NetSuite's own host is https only
        for problem in (origin_setting_problem(self.base_url, self.base_url_env, check=https_origin),
                        origin_setting_problem(self.base_url_override, self.base_url_override_env,
                                               key="base_url_override",
                                               check=lambda url: origin_problem(url, loopback_only=True))):
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.account_id is None) == (self.account_id_env is None):
            raise ValueError("account_id: give either account_id or account_id_env")
        for name in self.objects:
            if name not in ENTITY_OBJECTS:
                raise ValueError(f"objects.{name}: not a record type this connector reads (customer, contact)")
        if self.result_cap < self.page_size:
            raise ValueError("result_cap: must be at least page_size")
        if "customer" in self.objects and self.tax_jurisdictions is None:
            raise ValueError("tax_jurisdictions: required with objects.customer: a customer that transactions "
                             "reference is kept under the tax law of its subsidiary's country")
        return self
