"""A loopback emulator of the Salesforce REST API, for the demo, the tests and the benchmarks.

It speaks the wire formats of `shared/reference/vendor-apis.md` section 1 so that simple-salesforce,
unchanged, cannot tell it from an org (its clients reach it through a session that rewrites
``https://*.salesforce.com`` to this server, see section 0 option b):

- OAuth 2.0 token endpoint: client credentials (HTTP Basic) and JWT bearer (RS256 signature checked
  against a configured public key, plus iss/sub/aud/exp). SOAP ``login()`` is answered with the fault
  of a retired API.
- SOQL (`query/`, `queryAll/`, with or without the trailing slash): just enough of
  ``SELECT fields FROM Object [WHERE ...] [ORDER BY ...] [LIMIT n] [OFFSET n]`` with ``=``, ``!=``,
  ``<``, ``<=``, ``>``, ``>=``, ``IN``, ``NOT IN``, ``AND``, ``OR``, ``NOT`` and parentheses. String
  literals are unescaped exactly as SOQL does (``\\'``, ``\\\\``, ``\\n``...; an unknown escape is a
  MALFORMED_QUERY). Text equality is exact and case-insensitive (as Salesforce compares e-mails);
  there is no LIKE. Results come 2,000 per page with `nextRecordsUrl` as a path.
- sObject rows (GET, PATCH, DELETE), create (POST, 201), describe, describeGlobal; sObject Collections
  (`composite/sobjects`: DELETE by ids, POST create, PATCH update) with per-record results in order.
- Bulk API 2.0 ingest jobs for ``delete`` and ``hardDelete``: Open -> UploadComplete -> InProgress ->
  JobComplete, the CSV upload answering 201, and the per-record result CSVs.
- Limits: a rolling 24-hour API quota (403 REQUEST_LIMIT_EXCEEDED "TotalRequests Limit exceeded."), a
  cap on concurrent long-running calls (403 "ConcurrentPerOrgLongTxn Limit exceeded."),
  ``Sforce-Limit-Info: api-usage=N/MAX`` on every REST answer, and `limits/`.
- Faults through the kit: server errors (503, error array), throttling (the concurrency answer above),
  expired sessions (the token presented is revoked, then 401 INVALID_SESSION_ID), resets, timeouts.

Control actions (under ``/__sandbox__/``, besides the kit's stats/faults/reset):
``POST seed-demo {"seed": 7}``, ``POST refuse-delete {"ids": [...], "statusCode": "DELETE_FAILED"}``
(``{"clear": true}`` forgets them), ``POST expire-sessions``, ``GET records/<Object>``.

Sandboxes know vendor wire formats only, never the project's own code.

    python -m sandbox.salesforce --port 8766
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import io
import itertools
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import jwt  # PyJWT, which simple-salesforce depends on
import requests

from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.crm_seed import DECOY_EMAILS as _CRM_DECOYS
from sandbox.kit import (
    ControlClient,
    Request,
    Response,
    TokenStore,
    Vendor,
    WindowLimiter,
    bearer_token,
    demo_cli,
    oauth_error,
    serve_demo,
)
from sandbox.people import DEMO_START, decoy_name, new_person, random_moment

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "LOOKALIKE_EMAILS",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_DOMAIN",
    "DEMO_INSTANCE_URL",
    "DEMO_JWT_USERNAME",
    "ERASURE_SUBJECT",
    "OrgClient",
    "SalesforceSandbox",
    "to_18",
]

DEMO_DOMAIN = "precision.my"
"""The demo org's My Domain: the connector's ``auth.domain`` (client credentials need a My Domain)."""

DEMO_INSTANCE_URL = f"https://{DEMO_DOMAIN}.salesforce.com"
"""What the token endpoint answers as ``instance_url``."""

DEMO_CLIENT_ID = "3MVG9PrecisionOpticalDsrSandbox.DemoConnectedApp"
"""The demo connected app's consumer key (sandbox only)."""

DEMO_CLIENT_SECRET = "sandbox-only-demo-consumer-secret-5f1c"
"""The demo connected app's consumer secret (sandbox only; never a real credential)."""

DEMO_JWT_USERNAME = "dsr-integration@precision.example"
"""The integration user a JWT bearer assertion may name as ``sub``."""

DECOY_EMAILS: tuple[str, ...] = (*_CRM_DECOYS, "obrien@example.com")
"""Addresses that must never match a demo subject, nor ``o'brien@example.com`` (each has a Contact)."""

LOOKALIKE_EMAILS: tuple[str, ...] = ("ada.lovelace@analytical-engines.example",)
"""People with a demo subject's very name and company at another address (a Contact, a Lead and an
Individual each): a rectification or an opt-out that matched on names would change them."""

DEFAULT_DAILY_QUOTA = 15_000
PAGE_SIZE = 2_000
COLLECTION_LIMIT = 200
SUPPORTED_VERSIONS = tuple(f"{v}.0" for v in range(31, 69))  # 31.0 (Summer '14) .. 68.0 (Winter '27)

_ORG_ID = "00D8d000000PrEcEAC"
_USER_ID = "0058d000001DsRzAAK"  # the integration user every sandbox write is attributed to
_API = r"/services/data/v(?P<version>\d{2,3}\.\d)"
_TOKEN_PATH = "/services/oauth2/token"
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


# --- record ids -------------------------------------------------------------------------------------

_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def to_18(record_id: str) -> str:
    """The 18-character, case-safe form of a 15- or 18-character Salesforce id.

    An 18-character id's suffix encodes which of the first 15 characters are upper case, so an id
    whose case was lost (a spreadsheet lower-cased it) still names the same record.
    """
    base = record_id[:15]
    if len(record_id) == 18:
        chars = list(base.lower())
        for chunk, flag in enumerate(record_id[15:].upper()):
            bits = _SUFFIX_CHARS.find(flag)
            for offset in range(5):
                if bits >= 0 and bits & (1 << offset):
                    chars[chunk * 5 + offset] = chars[chunk * 5 + offset].upper()
        base = "".join(chars)
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(base[start : start + 5]) if "A" <= ch <= "Z")
        suffix += _SUFFIX_CHARS[bits]
    return base + suffix


# --- errors ------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A Salesforce REST error: answered as a JSON array of one error."""

    def __init__(self, status: int, code: str, message: str, fields: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def body(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            error["fields"] = list(self.fields)
        return [error]

    def response(self) -> Response:
        return Response.json(self.body(), self.status)


def _not_found() -> _ApiError:
    return _ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _entity_deleted() -> _ApiError:
    return _ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])


def _malformed_query(soql: str, position: int, detail: str) -> _ApiError:
    # Salesforce quotes the statement in its errors (personal data included): clients must not pass it on.
    return _ApiError(
        400, "MALFORMED_QUERY", f"\n{soql}\n{' ' * position}^\nERROR at Row:1:Column:{position + 1}\n{detail}"
    )


# --- schema -------------------------------------------------------------------------------------------

_TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "picklist", "combobox", "url"})
_ID_TYPES = frozenset({"id", "reference"})
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    type: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted: bool = False
    reference_to: tuple[str, ...] = ()
    audit: bool = False  # settable on create only with the "Set Audit Fields upon Record Creation" permission
    computed: bool = False

    @property
    def label(self) -> str:
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", self.name.removesuffix("Id") or self.name)

    def describe(self, audit_on_create: bool) -> dict[str, Any]:
        soap = {"id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "date": "xsd:date",
                "datetime": "xsd:dateTime", "int": "xsd:int", "double": "xsd:double"}.get(self.type, "xsd:string")
        return {
            "name": self.name, "label": self.label, "type": self.type, "soapType": soap,
            "length": self.length, "byteLength": self.length * 3, "digits": 9 if self.type == "int" else 0,
            "precision": 18 if self.type == "double" else 0, "scale": 0,
            "nillable": self.nillable, "createable": self.createable or (self.audit and audit_on_create),
            "updateable": self.updateable, "defaultedOnCreate": self.defaulted, "calculated": self.computed,
            "custom": False, "externalId": False, "unique": False, "filterable": True, "sortable": True,
            "idLookup": self.type == "id" or self.name == "Email",
            "referenceTo": list(self.reference_to), "relationshipName": self.name[:-2] if self.reference_to else None,
            "picklistValues": [],
        }


def _f(name: str, type_: str = "string", length: int = 0, **kwargs: Any) -> _Field:
    if not length and type_ in _TEXT_TYPES:
        length = 255
    if type_ in _ID_TYPES:
        length = 18
    return _Field(name, type_, length, **kwargs)


def _head() -> tuple[_Field, ...]:
    return (
        _f("Id", "id", nillable=False, createable=False, updateable=False, defaulted=True),
        _f("IsDeleted", "boolean", nillable=False, createable=False, updateable=False, defaulted=True),
    )


def _owner() -> _Field:
    return _f("OwnerId", "reference", nillable=False, defaulted=True, reference_to=("User",))


def _audit() -> tuple[_Field, ...]:
    fixed = {"nillable": False, "createable": False, "updateable": False, "defaulted": True}
    return (
        _f("CreatedDate", "datetime", audit=True, **fixed),
        _f("CreatedById", "reference", reference_to=("User",), audit=True, **fixed),
        _f("LastModifiedDate", "datetime", audit=True, **fixed),
        _f("LastModifiedById", "reference", reference_to=("User",), audit=True, **fixed),
        _f("SystemModstamp", "datetime", **fixed),
    )


def _computed(name: str, type_: str, length: int = 0) -> _Field:
    return _f(name, type_, length, createable=False, updateable=False, computed=True)


@dataclass(frozen=True, slots=True)
class _Object:
    name: str
    prefix: str
    label_plural: str
    fields: tuple[_Field, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    by_name: Mapping[str, _Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> _Field | None:
        """A field by its API name, which Salesforce matches case-insensitively."""
        return self.by_name.get(name.lower())


_OBJECTS: tuple[_Object, ...] = (
    _Object("Contact", "003", "Contacts", (
        *_head(), _owner(),
        _f("LastName", length=80, nillable=False), _f("FirstName", length=40), _f("Salutation", "picklist", 40),
        _computed("Name", "string", 121),
        _f("MailingStreet", "textarea"), _f("MailingCity", length=40), _f("MailingPostalCode", length=20),
        _f("MailingCountry", length=80), _f("Phone", "phone", 40), _f("MobilePhone", "phone", 40),
        _f("Email", "email", 80), _f("Title", length=128), _f("Department", length=80),
        _f("LeadSource", "picklist"), _f("Description", "textarea", 32000),
        _f("HasOptedOutOfEmail", "boolean", nillable=False, defaulted=True),
        _f("DoNotCall", "boolean", nillable=False, defaulted=True), _f("Birthdate", "date"),
        _f("IndividualId", "reference", reference_to=("Individual",)),
        _computed("LastActivityDate", "date"), *_audit(),
    )),
    _Object("Lead", "00Q", "Leads", (
        *_head(), _owner(),
        _f("LastName", length=80, nillable=False), _f("FirstName", length=40), _f("Salutation", "picklist", 40),
        _computed("Name", "string", 121), _f("Title", length=128), _f("Company", nillable=False),
        _f("Street", "textarea"), _f("City", length=40), _f("PostalCode", length=20), _f("Country", length=80),
        _f("Phone", "phone", 40), _f("MobilePhone", "phone", 40), _f("Email", "email", 80), _f("Website", "url"),
        _f("LeadSource", "picklist"), _f("Status", "picklist", nillable=False, defaulted=True),
        _f("Industry", "picklist"), _f("Description", "textarea", 32000),
        _f("HasOptedOutOfEmail", "boolean", nillable=False, defaulted=True),
        _f("IsConverted", "boolean", nillable=False, defaulted=True),
        _f("IndividualId", "reference", reference_to=("Individual",)),
        _computed("LastActivityDate", "date"), *_audit(),
    ), {"Status": "Open - Not Contacted"}),
    _Object("Campaign", "701", "Campaigns", (
        *_head(), _owner(), _f("Name", length=80, nillable=False), _f("Type", "picklist"),
        _f("Status", "picklist"), _f("StartDate", "date"), _f("EndDate", "date"),
        _f("IsActive", "boolean", nillable=False, defaulted=True), _f("Description", "textarea", 32000), *_audit(),
    )),
    _Object("CampaignMember", "00v", "Campaign Members", (
        *_head(),
        _f("CampaignId", "reference", nillable=False, updateable=False, reference_to=("Campaign",)),
        _f("LeadId", "reference", updateable=False, reference_to=("Lead",)),
        _f("ContactId", "reference", updateable=False, reference_to=("Contact",)),
        _f("Status", "picklist", 40, defaulted=True), _computed("HasResponded", "boolean"),
        _f("FirstRespondedDate", "date"), *_audit(),
    ), {"Status": "Sent"}),
    _Object("Case", "500", "Cases", (
        *_head(), _owner(), _f("CaseNumber", length=30, createable=False, updateable=False, defaulted=True),
        _f("ContactId", "reference", reference_to=("Contact",)),
        _f("SuppliedName", length=80), _f("SuppliedEmail", "email", 80), _f("SuppliedPhone", length=40),
        _f("SuppliedCompany", length=80), _f("Subject"), _f("Description", "textarea", 32000),
        _f("Status", "picklist", defaulted=True), _f("Origin", "picklist"), _f("Priority", "picklist", defaulted=True),
        _f("Reason", "picklist"), _computed("IsClosed", "boolean"), *_audit(),
    ), {"Status": "New", "Priority": "Medium"}),
    _Object("Task", "00T", "Tasks", (
        *_head(), _owner(), _f("WhoId", "reference", reference_to=("Contact", "Lead")),
        _f("WhatId", "reference", reference_to=("Campaign", "Case")), _f("Subject", "combobox"),
        _f("ActivityDate", "date"), _f("Status", "picklist", nillable=False, defaulted=True),
        _f("Priority", "picklist", nillable=False, defaulted=True), _f("Description", "textarea", 32000),
        _f("TaskSubtype", "picklist"), _f("CallDurationInSeconds", "int"), _computed("IsClosed", "boolean"),
        *_audit(),
    ), {"Status": "Not Started", "Priority": "Normal"}),
    _Object("Event", "00U", "Events", (
        *_head(), _owner(), _f("WhoId", "reference", reference_to=("Contact", "Lead")),
        _f("WhatId", "reference", reference_to=("Campaign", "Case")), _f("Subject", "combobox"),
        _f("Location"), _f("StartDateTime", "datetime"), _f("EndDateTime", "datetime"), _f("ActivityDate", "date"),
        _f("DurationInMinutes", "int"), _f("Description", "textarea", 32000), *_audit(),
    )),
    _Object("Individual", "0PK", "Individuals", (
        *_head(), _owner(),
        _f("LastName", length=80, nillable=False), _f("FirstName", length=40), _f("Salutation", "picklist", 40),
        _computed("Name", "string", 121), _f("BirthDate", "date"),
        *(_f(flag, "boolean", nillable=False, defaulted=True) for flag in (
            "HasOptedOutTracking", "HasOptedOutProfiling", "HasOptedOutProcessing", "HasOptedOutSolicit",
            "HasOptedOutGeoTracking", "ShouldForget", "SendIndividualData", "CanStorePiiElsewhere")),
        *_audit(),
    )),
)  # fmt: skip


# --- values -------------------------------------------------------------------------------------------


def _sf_datetime(moment: datetime) -> str:
    """A datetime as Salesforce's JSON writes it: ``2024-05-01T10:00:00.000+0000``."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _parse_datetime(text: str) -> datetime:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    match = re.match(r"^(.*[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2})(\d{2})$", value)
    if match:  # +0000 -> +00:00
        value = f"{match.group(1)}{match.group(2)}:{match.group(3)}"
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> str:
    return _sf_datetime(datetime.now(UTC))


def _check_value(spec: _Field, value: Any) -> Any:
    """A value as stored, or an `_ApiError` as Salesforce answers a bad one."""
    if value is None or (value == "" and spec.type in _TEXT_TYPES):
        if spec.type == "boolean":
            return False
        if not spec.nillable and not spec.defaulted:
            raise _ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]", [spec.name])
        return None
    label = spec.label
    bad = _ApiError(
        400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {spec.type} from {type(value).__name__} value"
    )
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise bad
        return value
    if spec.type in ("int", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return int(value) if spec.type == "int" else float(value)
    if not isinstance(value, str):
        raise bad
    if spec.type == "date":
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise bad from None
    if spec.type == "datetime":
        try:
            return _sf_datetime(_parse_datetime(value))
        except ValueError:
            raise bad from None
    if spec.type in _ID_TYPES:
        if not _ID_RE.match(value):
            raise _ApiError(400, "MALFORMED_ID", f"{label}: id value of incorrect type: {value}", [spec.name])
        return to_18(value)
    if spec.length and len(value) > spec.length:
        raise _ApiError(
            400, "STRING_TOO_LONG", f"{label}: data value too large: {value} (max length={spec.length})", [spec.name]
        )
    if spec.type == "email" and not _EMAIL_RE.match(value):
        raise _ApiError(400, "INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}", [spec.name])
    return value


# --- SOQL ---------------------------------------------------------------------------------------------

_SOQL_ESCAPES = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t", "b": "\b", "B": "\b",
                 "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\"}  # fmt: skip
_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc",
                       "nulls", "first", "last", "limit", "offset", "true", "false", "null", "includes", "excludes"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, datetime, date, number, op, punct, name, keyword, end
    value: Any
    position: int


def _tokenize(soql: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(soql):
        if soql[position] == "'":
            text, position_after = _string_literal(soql, position)
            tokens.append(_Token("string", text, position))
            position = position_after
            continue
        match = _TOKEN_RE.match(soql, position)
        if match is None:
            raise _malformed_query(soql, position, f"unexpected token: '{soql[position]}'")
        kind = match.lastgroup or ""
        if kind != "space":
            value: Any = match.group()
            if kind == "name" and value.lower() in _KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append(_Token(kind, value, position))
        position = match.end()
    tokens.append(_Token("end", None, len(soql)))
    return tokens


def _string_literal(soql: str, start: int) -> tuple[str, int]:
    """A quoted SOQL string from `start` (the opening quote): its value and the position after it."""
    chars: list[str] = []
    position = start + 1
    while position < len(soql):
        char = soql[position]
        if char == "\\":
            escaped = soql[position + 1 : position + 2]
            if escaped not in _SOQL_ESCAPES:
                raise _malformed_query(
                    soql, position, f"Invalid string literal '{soql[start:position + 2]}'. Illegal character "
                    f"sequence '\\{escaped}' in string literal."
                )
            chars.append(_SOQL_ESCAPES[escaped])
            position += 2
        elif char == "'":
            return "".join(chars), position + 1
        else:
            chars.append(char)
            position += 1
    raise _malformed_query(soql, start, "unexpected token: unterminated string literal")


@dataclass(frozen=True, slots=True)
class _Compare:
    field: _Field
    op: str  # = != < <= > >= in notin
    values: tuple[_Token, ...]


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # and, or, not
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Query:
    obj: _Object
    fields: tuple[_Field, ...]
    where: Any
    order: tuple[tuple[_Field, bool, bool], ...]  # field, descending, nulls last
    limit: int | None
    offset: int


class _Parser:
    def __init__(self, soql: str, objects: Mapping[str, _Object]) -> None:
        self.soql, self.objects = soql, objects
        self.tokens = _tokenize(soql)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def fail(self, detail: str | None = None, token: _Token | None = None) -> _ApiError:
        token = token or self.token
        shown = "EOF" if token.kind == "end" else str(token.value)
        return _malformed_query(self.soql, token.position, detail or f"unexpected token: '{shown}'")

    def take(self, kind: str, value: str | None = None) -> _Token:
        token = self.token
        if token.kind != kind or (value is not None and token.value != value):
            raise self.fail()
        self.index += 1
        return token

    def accept(self, kind: str, value: str | None = None) -> _Token | None:
        token = self.token
        if token.kind == kind and (value is None or token.value == value):
            self.index += 1
            return token
        return None

    def parse(self) -> _Query:
        self.take("keyword", "select")
        names = [self.take("name")]
        while self.accept("punct", ","):
            names.append(self.take("name"))
        self.take("keyword", "from")
        obj_token = self.take("name")
        obj = self.objects.get(str(obj_token.value).lower())
        if obj is None:
            raise _ApiError(400, "INVALID_TYPE", f"\n{self.soql}\n{' ' * obj_token.position}^\nERROR at Row:1:Column:"
                            f"{obj_token.position + 1}\nsObject type '{obj_token.value}' is not supported.")
        fields: list[_Field] = []
        for token in names:
            spec = self.field(obj, token)
            if spec in fields:
                raise self.fail(f"duplicate field selected: {spec.name}", token)
            fields.append(spec)
        where = None
        if self.accept("keyword", "where"):
            where = self.condition(obj)
        order: list[tuple[_Field, bool, bool]] = []
        if self.accept("keyword", "order"):
            self.take("keyword", "by")
            while True:
                spec = self.field(obj, self.take("name"))
                descending = self.accept("keyword", "desc") is not None
                if not descending:
                    self.accept("keyword", "asc")
                nulls_last = descending  # SOQL's default: nulls first ascending, last descending
                if self.accept("keyword", "nulls"):
                    nulls_last = self.accept("keyword", "last") is not None
                    if not nulls_last:
                        self.take("keyword", "first")
                order.append((spec, descending, nulls_last))
                if not self.accept("punct", ","):
                    break
        limit = int(self.take("number").value) if self.accept("keyword", "limit") else None
        offset = int(self.take("number").value) if self.accept("keyword", "offset") else 0
        self.take("end")
        return _Query(obj, tuple(fields), where, tuple(order), limit, offset)

    def field(self, obj: _Object, token: _Token) -> _Field:
        spec = obj.field(str(token.value))
        if spec is None:
            raise _ApiError(400, "INVALID_FIELD", f"\n{self.soql}\n{' ' * token.position}^\nERROR at Row:1:Column:"
                            f"{token.position + 1}\nNo such column '{token.value}' on entity '{obj.name}'. If you are "
                            "attempting to use a custom field, be sure to append the '__c' after the custom field "
                            "name. Please reference your WSDL or the describe call for the appropriate names.")
        return spec

    def condition(self, obj: _Object) -> Any:
        first = self.unary(obj)
        joiner = self.token.value if self.token.kind == "keyword" and self.token.value in ("and", "or") else None
        if joiner is None:
            return first
        parts = [first]
        while self.accept("keyword", joiner):
            parts.append(self.unary(obj))
        if self.token.kind == "keyword" and self.token.value in ("and", "or"):
            raise self.fail()  # SOQL needs parentheses to mix AND and OR
        return _Bool(joiner, tuple(parts))

    def unary(self, obj: _Object) -> Any:
        if self.accept("keyword", "not"):
            return _Bool("not", (self.unary(obj),))
        if self.accept("punct", "("):
            inner = self.condition(obj)
            self.take("punct", ")")
            return inner
        spec = self.field(obj, self.take("name"))
        if self.accept("keyword", "like"):
            raise self.fail("LIKE is not supported by this sandbox")
        negated = bool(self.accept("keyword", "not"))
        if self.accept("keyword", "in"):
            self.take("punct", "(")
            values = [self.literal(spec)]
            while self.accept("punct", ","):
                values.append(self.literal(spec))
            self.take("punct", ")")
            return _Compare(spec, "notin" if negated else "in", tuple(values))
        if negated:
            raise self.fail()
        op = self.take("op").value
        return _Compare(spec, "!=" if op == "<>" else op, (self.literal(spec),))

    def literal(self, spec: _Field) -> _Token:
        token = self.token
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            self.index += 1
            kind = "null" if token.value == "null" else "boolean"
            return _Token(kind, None if kind == "null" else token.value == "true", token.position)
        if token.kind not in ("string", "number", "date", "datetime"):
            raise self.fail()
        self.index += 1
        expected = {"boolean": "boolean", "date": "date", "datetime": "datetime", "int": "number",
                    "double": "number"}.get(spec.type, "string")  # fmt: skip
        if token.kind != expected:
            detail = f"value of filter criterion for field '{spec.name}' must be of type {spec.type}"
            if token.kind == "string":
                detail += " and should not be enclosed in quotes"
            raise self.filter_error(token, detail)
        if token.kind == "datetime":
            return _Token("datetime", _parse_datetime(token.value), token.position)
        if token.kind == "date":
            return _Token("date", date.fromisoformat(token.value), token.position)
        if token.kind == "number":
            return _Token("number", float(token.value), token.position)
        if spec.type in _ID_TYPES and token.value:
            if not _ID_RE.match(token.value):
                raise self.filter_error(token, f"invalid ID field: {token.value}")
            return _Token("string", to_18(token.value), token.position)
        return token

    def filter_error(self, token: _Token, detail: str) -> _ApiError:
        return _ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"\n{self.soql}\n{' ' * token.position}^\n"
                         f"ERROR at Row:1:Column:{token.position + 1}\n{detail}")


def _comparable(spec: _Field, value: Any) -> Any:
    """A stored value as the query compares it (None stays None)."""
    if value is None:
        return None
    if spec.type == "datetime":
        return _parse_datetime(value)
    if spec.type == "date":
        return date.fromisoformat(value)
    if spec.type in _ID_TYPES:
        return value  # stored 18-character, and literals are made 18-character too
    if spec.type in ("int", "double"):
        return float(value)
    if isinstance(value, str):
        return value.casefold()  # text compares case-insensitively, as Salesforce does
    return value


def _literal_value(spec: _Field, token: _Token) -> Any:
    if token.kind == "null" or (token.kind == "string" and token.value == ""):
        return None  # Salesforce stores no empty strings: '' is null
    if token.kind == "string" and spec.type not in _ID_TYPES:
        return token.value.casefold()
    return token.value


def _matches(node: Any, value_of: Callable[[_Field], Any]) -> bool:
    if node is None:
        return True
    if isinstance(node, _Bool):
        if node.op == "and":
            return all(_matches(part, value_of) for part in node.parts)
        if node.op == "or":
            return any(_matches(part, value_of) for part in node.parts)
        return not _matches(node.parts[0], value_of)
    spec: _Field = node.field
    have = _comparable(spec, value_of(spec))
    wanted = [_literal_value(spec, token) for token in node.values]
    if node.op in ("in", "notin"):
        found = have in wanted
        return found if node.op == "in" else not found
    target = wanted[0]
    if node.op == "=":
        return have == target
    if node.op == "!=":
        return have != target  # a null field is != any non-null value, as in SOQL
    if have is None or target is None:
        return False
    try:
        return bool({"<": have < target, "<=": have <= target, ">": have > target, ">=": have >= target}[node.op])
    except TypeError:
        return False


# --- Bulk API 2.0 ---------------------------------------------------------------------------------------


@dataclass
class _Job:
    id: str
    operation: str
    object: str
    api_version: str
    created: str
    state: str = "Open"
    rows: list[str] = field(default_factory=list)  # the uploaded ids, in order
    header_error: str | None = None
    polls_left: int = 0
    succeeded: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # id, "CODE:message:fields"
    error_message: str | None = None
    modified: str = ""

    def json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.object, "createdById": _USER_ID,
            "createdDate": self.created, "systemModstamp": self.modified or self.created, "state": self.state,
            "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version),
            "jobType": "V2Ingest", "contentUrl": f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches",
            "lineEnding": "LF", "columnDelimiter": "COMMA",
        }
        if self.state in ("JobComplete", "Failed", "Aborted", "InProgress"):
            answer.update({
                "numberRecordsProcessed": len(self.succeeded) + len(self.failed),
                "numberRecordsFailed": len(self.failed), "retries": 0, "totalProcessingTime": 12,
                "apiActiveProcessingTime": 8, "apexProcessingTime": 0,
            })
        if self.error_message:
            answer["errorMessage"] = self.error_message
        return answer


def _csv(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


# --- the vendor -------------------------------------------------------------------------------------------


class SalesforceSandbox(Vendor):
    """An in-memory Salesforce org behind the REST API (see the module docstring).

    Args:
        client_id, client_secret: the connected app's consumer key and secret.
        domain: the org's My Domain (``precision.my``); ``instance_url`` defaults to ``https://<domain>.salesforce.com``.
        jwt_public_key: PEM public key that JWT bearer assertions must be signed for (None: JWT login refused).
        jwt_usernames: the users a JWT assertion may name as ``sub``.
        daily_quota: API calls allowed in any 24 hours.
        max_long_calls: concurrent long-running calls allowed (None: no cap); a call is "long" once it has
            run `long_call_seconds` (Salesforce: 20 s; tests lower it).
        page_size: records per query page.
        bulk_polls_in_progress: job polls that still see ``InProgress`` before a job completes.
        session_seconds: access tokens expire after this long (None: only when revoked).
        audit_fields_on_create: the org grants "Set Audit Fields upon Record Creation" (CreatedDate,
            LastModifiedDate... may be given on create; the tests use it to age records).
        individual_enabled: the org has data protection (the Individual object) enabled.
    """

    name = "salesforce"

    def __init__(
        self,
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        domain: str = DEMO_DOMAIN,
        instance_url: str | None = None,
        jwt_public_key: str | bytes | None = None,
        jwt_usernames: Iterable[str] = (DEMO_JWT_USERNAME,),
        daily_quota: int = DEFAULT_DAILY_QUOTA,
        max_long_calls: int | None = 25,
        long_call_seconds: float = 20.0,
        page_size: int = PAGE_SIZE,
        bulk_polls_in_progress: int = 1,
        session_seconds: float | None = None,
        audit_fields_on_create: bool = True,
        individual_enabled: bool = True,
    ) -> None:
        super().__init__()
        if daily_quota < 1 or page_size < 1:
            raise ValueError("daily_quota and page_size must be at least 1")
        self.client_id, self.client_secret = client_id, client_secret
        self.domain = domain
        self.instance_url = instance_url or f"https://{domain}.salesforce.com"
        self.jwt_public_key = jwt_public_key
        self.jwt_usernames = frozenset(jwt_usernames)
        self.daily_quota = daily_quota
        self.max_long_calls, self.long_call_seconds = max_long_calls, long_call_seconds
        self.page_size = page_size
        self.bulk_polls_in_progress = bulk_polls_in_progress
        self.session_seconds = session_seconds
        self.audit_fields_on_create = audit_fields_on_create
        self.objects = {o.name.lower(): o for o in _OBJECTS if individual_enabled or o.name != "Individual"}
        self._by_prefix = {o.prefix: o for o in self.objects.values()}

        self._lock = threading.RLock()  # the store, cursors, jobs and refusals
        self._rows: dict[str, dict[str, dict[str, Any]]] = {o.name: {} for o in self.objects.values()}
        self._purged: set[str] = set()
        self._counter = itertools.count(1)
        self._version = 0
        self._activity_cache: tuple[int, dict[str, str]] = (-1, {})
        self._cursors: dict[str, tuple[list[dict[str, Any]], str]] = {}
        self._jobs: dict[str, _Job] = {}
        self._refusals: dict[str, tuple[str, str]] = {}

        self._tokens = TokenStore()
        self._quota = WindowLimiter(daily_quota, 86_400)
        self._used = 0
        self._routes()
        self._controls()

    # --- kit hooks ---

    def handle(self, request: Request) -> Response | None:
        response = super().handle(request)
        if response is not None:
            self.decorate(request, response)  # every REST answer, errors too, carries the API usage
        return response

    def concurrency_cap(self, request: Request) -> tuple[int | None, float] | None:
        if not request.path.startswith("/services/data/v"):
            return None
        return self.max_long_calls, self.long_call_seconds

    def authenticate(self, request: Request) -> Response | None:
        if not request.path.startswith("/services/data/v"):
            return None  # the token endpoint, SOAP and the versions list need no session
        if self._session_of(request) is None:
            return Response.json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401)
        return None

    def limit(self, request: Request) -> Response | None:
        if not request.path.startswith("/services/data/v"):
            return None
        allowed, _wait, remaining = self._quota.acquire()
        self._used = self.daily_quota - remaining if allowed else self.daily_quota  # shown in Sforce-Limit-Info
        if allowed:
            return None
        return Response.json([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)

    def decorate(self, request: Request, response: Response) -> None:
        if request.path.startswith("/services/data/v"):
            response.headers["Sforce-Limit-Info"] = f"api-usage={self._used}/{self.daily_quota}"

    def throttled(self, request: Request) -> Response:
        if not request.path.startswith("/services/data/"):
            return _unavailable_page()
        return Response.json(
            [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403
        )

    def expired(self, request: Request) -> Response:
        if not request.path.startswith("/services/data/"):
            return _unavailable_page()
        self._tokens.revoke(_bearer(request))  # the session really ends: the client must log in again
        return Response.json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401)

    def server_error(self, request: Request) -> Response:
        if not request.path.startswith("/services/data/"):
            return _unavailable_page()
        return Response.json(
            [{"message": "Service temporarily unavailable; please try again later.", "errorCode": "SERVER_UNAVAILABLE"}],
            503,
        )

    def not_found(self, request: Request) -> Response:
        return _not_found().response()

    def method_not_allowed(self, request: Request) -> Response:
        return Response.json([{"errorCode": "METHOD_NOT_ALLOWED", "message": "HTTP Method not allowed"}], 405)

    def reset_state(self) -> None:
        self._quota.reset()
        self._used = 0
        with self._lock:
            self._refusals.clear()
            self._cursors.clear()

    def _controls(self) -> None:
        def refuse_delete(body: dict[str, Any], _: object) -> dict[str, Any]:
            if body.get("clear"):
                with self._lock:
                    self._refusals.clear()
            self.refuse_delete(body.get("ids") or [], body.get("statusCode", "DELETE_FAILED"), body.get("message"))
            return {"refusing": len(self._refusals)}

        def records(_: object, params: dict[str, str]) -> Response | dict[str, Any]:
            obj = self.objects.get(params["object"].lower())
            if obj is None:
                return Response.json({"error": "unknown object"}, 404)
            return {"records": self.records(obj.name, include_deleted=True)}

        on = self.on_control
        on("POST", "seed-demo", lambda body, _: {"seeded": self.seed_demo(int(body.get("seed", 7)))})
        on("POST", "refuse-delete", refuse_delete)
        on("POST", "expire-sessions", lambda body, _: {"expired": self._tokens.expire_all()})
        on("GET", "records/(?P<object>.+)", records)

    # --- test and demo API (in-process) ---

    def seed_demo(self, seed: int = 7) -> dict[str, int]:
        """Forget every record and load the demo org: the two subjects, the decoys, ~50 other people.

        Returns:
            Live records per object.
        """
        with self._lock:
            for rows in self._rows.values():
                rows.clear()
            self._purged.clear()
            self._cursors.clear()
            self._jobs.clear()
            self._refusals.clear()
            self._counter = itertools.count(1)
            self._version += 1
            _Seeder(self, random.Random(seed)).run()
            return {name: len(rows) for name, rows in self._rows.items()}

    def refuse_delete(self, ids: Iterable[str], status_code: str = "DELETE_FAILED", message: str | None = None) -> None:
        """Make deletes of these ids fail (single, collection and bulk) with `status_code`."""
        text = message or "Your attempt to delete this record could not be completed because it is associated with " \
            "other records or is locked."
        with self._lock:
            for record_id in ids:
                if _ID_RE.match(record_id):
                    self._refusals[to_18(record_id)] = (status_code, text)

    def record(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        """One stored record with every field (deleted ones too: `IsDeleted` says), or None."""
        with self._lock:
            obj = self._object(object_name)
            row = self._rows[obj.name].get(to_18(record_id)) if _ID_RE.match(record_id) else None
            return None if row is None else self._render(obj, row, obj.fields, "62.0")

    def records(self, object_name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every stored record of an object."""
        with self._lock:
            obj = self._object(object_name)
            return [self._render(obj, row, obj.fields, "62.0") for row in self._rows[obj.name].values()
                    if include_deleted or not row["IsDeleted"]]

    def is_purged(self, record_id: str) -> bool:
        """True when the id was hard-deleted (gone from the Recycle Bin too)."""
        with self._lock:
            return to_18(record_id) in self._purged

    # --- store ---

    def _object(self, name: str) -> _Object:
        obj = self.objects.get(name.lower())
        if obj is None:
            raise _not_found()
        return obj

    def _new_id(self, obj: _Object) -> str:
        return to_18(f"{obj.prefix}8d{next(self._counter):010d}")

    def _create(self, obj: _Object, values: Mapping[str, Any], *, trusted: bool = False) -> str:
        """Validate and store a new record (caller holds the lock)."""
        row: dict[str, Any] = {}
        for key, value in values.items():
            if key == "attributes":
                continue
            spec = obj.field(key)
            if spec is None:
                raise _ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [])
            if not trusted and not (spec.createable or (spec.audit and self.audit_fields_on_create)):
                raise _ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {spec.name}. "
                                "Please check the security settings of this field and verify that it is read/write "
                                "for your profile or permission set.", [spec.name])
            row[spec.name] = _check_value(spec, value)
        for name, value in obj.defaults.items():
            if row.get(name) is None:
                row[name] = value
        missing = [s.name for s in obj.fields
                   if not s.nillable and not s.defaulted and s.createable and row.get(s.name) is None]
        if missing:
            raise _ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                            missing)
        self._check_references(obj, row, creating=True)
        now = _now()
        record_id = self._new_id(obj)
        for spec in obj.fields:
            if spec.type == "boolean" and row.get(spec.name) is None and not spec.computed:
                row[spec.name] = False
        row.update({"Id": record_id, "IsDeleted": False})
        row.setdefault("CreatedDate", now)
        row.setdefault("LastModifiedDate", row["CreatedDate"])
        row["SystemModstamp"] = row["LastModifiedDate"]
        row.setdefault("CreatedById", _USER_ID)
        row.setdefault("LastModifiedById", _USER_ID)
        if obj.field("OwnerId") is not None:
            row.setdefault("OwnerId", _USER_ID)
        if obj.name == "Case":
            row["CaseNumber"] = f"{1000 + len(self._rows['Case']) + 1:08d}"
        self._rows[obj.name][record_id] = row
        self._version += 1
        return record_id

    def _check_references(self, obj: _Object, values: Mapping[str, Any], *, creating: bool) -> None:
        """The lookups being written must point at live records of the right objects."""
        for spec in obj.fields:
            value = values.get(spec.name)
            if spec.type != "reference" or value is None or "User" in spec.reference_to:
                continue
            target = self._by_prefix.get(value[:3])
            live = target is not None and target.name in spec.reference_to and \
                not self._rows[target.name].get(value, {"IsDeleted": True})["IsDeleted"]
            if not live:
                raise _ApiError(400, "INVALID_CROSS_REFERENCE_KEY", f"{spec.label}: id value of incorrect type: {value}",
                                [spec.name])
        if creating and obj.name == "CampaignMember" and not (values.get("ContactId") or values.get("LeadId")):
            raise _ApiError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ContactId, LeadId]",
                            ["ContactId", "LeadId"])

    def _update(self, obj: _Object, record_id: str, values: Mapping[str, Any]) -> None:
        """Validate and apply an update (caller holds the lock)."""
        row = self._live_row(obj, record_id)
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("attributes", "id", "Id"):
                continue
            spec = obj.field(key)
            if spec is None:
                raise _ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [])
            if not spec.updateable:
                raise _ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {spec.name}. "
                                "Please check the security settings of this field and verify that it is read/write "
                                "for your profile or permission set.", [spec.name])
            checked = _check_value(spec, value)
            if checked is None and not spec.nillable:
                raise _ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]",
                                [spec.name])
            changes[spec.name] = checked
        self._check_references(obj, changes, creating=False)
        row.update(changes)
        row["LastModifiedDate"] = row["SystemModstamp"] = _now()
        row["LastModifiedById"] = _USER_ID
        self._version += 1

    def _live_row(self, obj: _Object, record_id: str) -> dict[str, Any]:
        if not _ID_RE.match(record_id):
            raise _not_found()
        row = self._rows[obj.name].get(to_18(record_id))
        if row is None:
            raise _not_found()
        if row["IsDeleted"]:
            raise _entity_deleted()
        return row

    def _delete(self, record_id: str, *, hard: bool, expect: str | None = None) -> tuple[bool, str, str]:
        """Delete one record; (done, statusCode, message) as a DeleteResult reports it (caller holds the lock)."""
        if not _ID_RE.match(record_id):
            return False, "MALFORMED_ID", f"malformed id {record_id}"
        rid = to_18(record_id)
        obj = self._by_prefix.get(rid[:3])
        if obj is None or (expect is not None and obj.name != expect):
            return False, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
        row = self._rows[obj.name].get(rid)
        if row is None:
            if rid in self._purged:
                return False, "ENTITY_IS_DELETED", "entity is deleted"
            return False, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
        if row["IsDeleted"]:
            return False, "ENTITY_IS_DELETED", "entity is deleted"
        if rid in self._refusals:
            code, message = self._refusals[rid]
            return False, code, message
        if obj.name == "Contact":
            cases = [c["CaseNumber"] for c in self._rows["Case"].values()
                     if c.get("ContactId") == rid and not c["IsDeleted"]]
            if cases:
                return False, "DELETE_FAILED", (
                    "Your attempt to delete this contact could not be completed because it is associated with the "
                    f"following cases.: {', '.join(cases)}"
                )
        if hard:
            del self._rows[obj.name][rid]
            self._purged.add(rid)
        else:
            row["IsDeleted"] = True
            row["SystemModstamp"] = _now()
        self._version += 1
        return True, "", ""

    def _value(self, obj: _Object, row: Mapping[str, Any], spec: _Field) -> Any:
        if not spec.computed:
            return row.get(spec.name)
        if spec.name == "Name":
            return " ".join(part for part in (row.get("FirstName"), row.get("LastName")) if part) or None
        if spec.name == "LastActivityDate":
            return self._activity_dates().get(row["Id"])
        if spec.name == "HasResponded":
            return row.get("Status") == "Responded"
        if spec.name == "IsClosed":
            return row.get("Status") in ("Closed", "Completed")
        return None

    def _activity_dates(self) -> dict[str, str]:
        """Contact/Lead id -> latest ActivityDate of its live Tasks and Events (recomputed after writes)."""
        version, cached = self._activity_cache
        if version == self._version:
            return cached
        latest: dict[str, str] = {}
        for name in ("Task", "Event"):
            for row in self._rows[name].values():
                who, day = row.get("WhoId"), row.get("ActivityDate")
                if who and day and not row["IsDeleted"] and day > latest.get(who, ""):
                    latest[who] = day
        self._activity_cache = (self._version, latest)
        return latest

    def _render(self, obj: _Object, row: Mapping[str, Any], fields: Sequence[_Field], version: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {"type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{row['Id']}"}
        }
        for spec in fields:
            record[spec.name] = self._value(obj, row, spec)
        return record

    # --- sessions ---

    def _session_of(self, request: Request) -> str | None:
        token = _bearer(request)
        return token if self._tokens.problem(token) is None else None

    def _issue_token(self, extra: Mapping[str, Any]) -> Response:
        token = self._tokens.issue(f"{_ORG_ID}!{secrets.token_urlsafe(48)}", self.session_seconds)
        issued = str(int(time.time() * 1000))
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), f"{self.instance_url}{issued}".encode(), hashlib.sha256).digest()
        ).decode()
        self.count("logins")
        return Response.json({
            "access_token": token, "signature": signature, "instance_url": self.instance_url,
            "id": f"https://login.salesforce.com/id/{_ORG_ID}/{_USER_ID}", "token_type": "Bearer",
            "issued_at": issued, "scope": "api", **extra,
        })

    # --- routes ---

    def _routes(self) -> None:
        add = self.router.add
        add("POST", _TOKEN_PATH, self._token)
        add("POST", r"/services/Soap/u/(?P<version>[\d.]+)", _soap_login_retired)
        add("GET", r"/services/data/?", self._versions)
        add("GET", rf"{_API}/?", self._api(self._resources))
        add("GET", rf"{_API}/limits/?", self._api(self._limits))
        add("GET", rf"{_API}/sobjects/?", self._api(self._describe_global))
        add("GET", rf"{_API}/sobjects/(?P<object>\w+)/describe/?", self._api(self._describe))
        add("GET", rf"{_API}/sobjects/(?P<object>\w+)/?", self._api(self._object_info))
        add("POST", rf"{_API}/sobjects/(?P<object>\w+)/?", self._api(self._create_one))
        add("GET", rf"{_API}/sobjects/(?P<object>\w+)/(?P<id>\w+)/?", self._api(self._get_one))
        add("PATCH", rf"{_API}/sobjects/(?P<object>\w+)/(?P<id>\w+)/?", self._api(self._update_one))
        add("DELETE", rf"{_API}/sobjects/(?P<object>\w+)/(?P<id>\w+)/?", self._api(self._delete_one))
        add("GET", rf"{_API}/(?P<kind>query|queryAll)/?", self._api(self._query))
        add("GET", rf"{_API}/(?P<kind>query|queryAll)/(?P<cursor>01g\w+)-(?P<offset>\d+)/?", self._api(self._query_more))
        add("DELETE", rf"{_API}/composite/sobjects/?", self._api(self._collection_delete))
        add("POST", rf"{_API}/composite/sobjects/?", self._api(self._collection_create))
        add("PATCH", rf"{_API}/composite/sobjects/?", self._api(self._collection_update))
        add("POST", rf"{_API}/jobs/ingest/?", self._api(self._job_create))
        add("GET", rf"{_API}/jobs/ingest/?", self._api(self._job_list))
        add("GET", rf"{_API}/jobs/ingest/(?P<job>750\w+)/?", self._api(self._job_get))
        add("PATCH", rf"{_API}/jobs/ingest/(?P<job>750\w+)/?", self._api(self._job_patch))
        add("DELETE", rf"{_API}/jobs/ingest/(?P<job>750\w+)/?", self._api(self._job_delete))
        add("PUT", rf"{_API}/jobs/ingest/(?P<job>750\w+)/batches/?", self._api(self._job_upload))
        add("GET", rf"{_API}/jobs/ingest/(?P<job>750\w+)/(?P<results>successfulResults|failedResults|"
                   r"(?i:unprocessedrecords))/?", self._api(self._job_results))

    def _api(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            if request.params.get("version") not in SUPPORTED_VERSIONS:
                return _not_found().response()
            try:
                with self._lock:
                    return handler(request)
            except _ApiError as error:
                return error.response()
        return guarded

    def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = request.header("authorization", "") or ""
            if basic.lower().startswith("basic "):
                try:
                    client_id, _, secret = base64.b64decode(basic[6:]).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    client_id = secret = None
            if not client_id or not hmac.compare_digest(client_id.encode(), self.client_id.encode()):
                return oauth_error("invalid_client_id", "client identifier invalid")
            if not secret or not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
                return oauth_error("invalid_client", "invalid client credentials")
            return self._issue_token({"token_format": "opaque"})
        if grant == _JWT_GRANT:
            return self._jwt_login(form.get("assertion") or "")
        if grant is None:
            return oauth_error("invalid_request", "grant type not specified")
        return oauth_error("unsupported_grant_type", "grant type not supported")

    def _jwt_login(self, assertion: str) -> Response:
        if self.jwt_public_key is None:
            return oauth_error("invalid_client", "no certificate is configured for this connected app")
        audiences = ["https://login.salesforce.com", "https://test.salesforce.com", f"https://{self.domain}.salesforce.com"]
        try:
            claims = jwt.decode(
                assertion, self.jwt_public_key, algorithms=["RS256"], audience=audiences, issuer=self.client_id,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            return oauth_error("invalid_grant", "expired JWT assertion")
        except jwt.InvalidAudienceError:
            return oauth_error("invalid_grant", "audience is invalid")
        except jwt.InvalidIssuerError:
            return oauth_error("invalid_client_id", "client identifier invalid")
        except jwt.PyJWTError:
            return oauth_error("invalid_grant", "invalid assertion")
        if claims.get("sub") not in self.jwt_usernames:
            return oauth_error("invalid_grant", "invalid assertion")
        return self._issue_token({})

    def _versions(self, request: Request) -> Response:
        return Response.json([{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
                              for v in SUPPORTED_VERSIONS])

    def _resources(self, request: Request) -> Response:
        base = f"/services/data/v{request.params['version']}"
        return Response.json({name: f"{base}/{name}" for name in ("sobjects", "query", "queryAll", "limits",
                                                                   "composite", "jobs")})

    def _limits(self, request: Request) -> Response:
        used, quota = self._used, self.daily_quota
        return Response.json({
            "DailyApiRequests": {"Max": quota, "Remaining": max(quota - used, 0)},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 5120, "Remaining": 5100},
        })

    def _describe_global(self, request: Request) -> Response:
        return Response.json({"encoding": "UTF-8", "maxBatchSize": COLLECTION_LIMIT, "sobjects": [
            self._object_summary(o, request.params["version"]) for o in self.objects.values()
        ]})

    def _object_summary(self, obj: _Object, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{obj.name}"
        return {"name": obj.name, "label": obj.name, "labelPlural": obj.label_plural, "keyPrefix": obj.prefix,
                "custom": False, "createable": True, "deletable": True, "updateable": True, "queryable": True,
                "retrieveable": True, "undeletable": True, "searchable": True,
                "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}}

    def _describe(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        return Response.json({**self._object_summary(obj, request.params["version"]),
                              "fields": [f.describe(self.audit_fields_on_create) for f in obj.fields],
                              "childRelationships": [], "recordTypeInfos": []})

    def _object_info(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        return Response.json({"objectDescribe": self._object_summary(obj, request.params["version"]),
                              "recentItems": []})

    def _create_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        record_id = self._create(obj, _json_object(request))
        self.count("created")
        return Response.json({"id": record_id, "success": True, "errors": []}, 201)

    def _get_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        record_id = request.params["id"]
        if not _ID_RE.match(record_id):
            raise _not_found()
        row = self._rows[obj.name].get(to_18(record_id))
        if row is None:
            raise _not_found()
        if row["IsDeleted"]:
            raise _entity_deleted()
        wanted = request.arg("fields")
        fields = obj.fields
        if wanted:
            fields = tuple(self._field_or_400(obj, name.strip()) for name in wanted.split(",") if name.strip())
        return Response.json(self._render(obj, row, fields, request.params["version"]))

    def _field_or_400(self, obj: _Object, name: str) -> _Field:
        spec = obj.field(name)
        if spec is None:
            raise _ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'.")
        return spec

    def _update_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        self._update(obj, request.params["id"], _json_object(request))
        return Response.empty(204)

    def _delete_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        self._live_row(obj, request.params["id"])  # 404 NOT_FOUND, or 404 ENTITY_IS_DELETED from the Recycle Bin
        done, code, message = self._delete(request.params["id"], hard=False, expect=obj.name)
        if not done:
            raise _ApiError(400, code, message, [])
        self.count("deleted")
        return Response.empty(204)

    # --- queries ---

    def _query(self, request: Request) -> Response:
        soql = request.arg("q")
        if not soql:
            raise _ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        if len(soql) > 100_000:
            raise _ApiError(400, "MALFORMED_QUERY", "Query too complicated or too long (100000 characters at most)")
        query = _Parser(soql, self.objects).parse()
        include_deleted = request.params["kind"] == "queryAll"
        rows = [row for row in self._rows[query.obj.name].values() if include_deleted or not row["IsDeleted"]]

        def value_of(row: Mapping[str, Any]) -> Callable[[_Field], Any]:
            return lambda spec: self._value(query.obj, row, spec)

        rows = [row for row in rows if _matches(query.where, value_of(row))]
        for spec, descending, nulls_last in reversed(query.order):  # stable sorts, last key first

            def key(row: Mapping[str, Any], spec: _Field = spec) -> Any:
                return _comparable(spec, self._value(query.obj, row, spec))

            present = [r for r in rows if self._value(query.obj, r, spec) is not None]
            absent = [r for r in rows if self._value(query.obj, r, spec) is None]
            present.sort(key=key, reverse=descending)
            rows = present + absent if nulls_last else absent + present
        rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        version = request.params["version"]
        records = [self._render(query.obj, row, query.fields, version) for row in rows]
        self.count("query")
        if len(records) <= self.page_size:
            return Response.json({"totalSize": len(records), "done": True, "records": records})
        cursor = to_18(f"01g8d{next(self._counter):010d}")
        self._cursors[cursor] = (records, version)
        while len(self._cursors) > 64:  # Salesforce keeps a bounded number of open cursors per user
            self._cursors.pop(next(iter(self._cursors)))
        return Response.json(self._page(cursor, 0))

    def _page(self, cursor: str, offset: int) -> dict[str, Any]:
        records, version = self._cursors[cursor]
        page = records[offset : offset + self.page_size]
        done = offset + self.page_size >= len(records)
        answer: dict[str, Any] = {"totalSize": len(records), "done": done}
        if not done:
            answer["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{offset + self.page_size}"
        answer["records"] = page
        return answer

    def _query_more(self, request: Request) -> Response:
        cursor, offset = request.params["cursor"], int(request.params["offset"])
        if cursor not in self._cursors or offset >= len(self._cursors[cursor][0]):
            raise _ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        self.count("query_more")
        return Response.json(self._page(cursor, offset))

    # --- sObject Collections ---

    def _collection_delete(self, request: Request) -> Response:
        raw = request.arg("ids")
        if not raw:
            raise _ApiError(400, "MISSING_ARGUMENT", "ids parameter is required", [])
        ids = [i for i in raw.split(",") if i]
        if len(ids) > COLLECTION_LIMIT:
            raise _ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                            "into this call", [])
        all_or_none = (request.arg("allOrNone") or "false").lower() == "true"
        self.count("collection_delete")
        return self._collection_apply(ids, all_or_none, self._delete_or_raise)

    def _delete_or_raise(self, record_id: str) -> str:
        done, code, message = self._delete(record_id, hard=False)
        if not done:
            raise _ApiError(400, code, message, [])
        return to_18(record_id)

    def _collection_records(self, request: Request) -> tuple[list[Any], bool]:
        body = _json_object(request)
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise _ApiError(400, "INVALID_FIELD", "records: a non-empty list is required", [])
        if len(records) > COLLECTION_LIMIT:
            raise _ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                            "into this call", [])
        return records, bool(body.get("allOrNone", False))

    def _collection_create(self, request: Request) -> Response:
        records, all_or_none = self._collection_records(request)
        return self._collection_apply(records, all_or_none, self._create_from_collection)

    def _collection_update(self, request: Request) -> Response:
        records, all_or_none = self._collection_records(request)
        return self._collection_apply(records, all_or_none, self._update_from_collection)

    def _create_from_collection(self, record: Any) -> str:
        kind = (record.get("attributes") or {}).get("type") if isinstance(record, dict) else None
        if not kind:
            raise _ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.", [])
        obj = self.objects.get(str(kind).lower())
        if obj is None:
            raise _ApiError(400, "INVALID_TYPE", f"sObject type '{kind}' is not supported.", [])
        return self._create(obj, record)

    def _update_from_collection(self, record: Any) -> str:
        record_id = str(record.get("id") or record.get("Id") or "") if isinstance(record, dict) else ""
        if not _ID_RE.match(record_id):
            raise _ApiError(400, "MALFORMED_ID", f"malformed id {record_id}", [])
        obj = self._by_prefix.get(to_18(record_id)[:3])
        if obj is None:
            raise _ApiError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        self._update(obj, record_id, record)
        return to_18(record_id)

    def _collection_apply(self, items: Sequence[Any], all_or_none: bool, apply: Callable[[Any], str]) -> Response:
        """Per-item results in order; with allOrNone, one failure rolls every change of the call back."""
        snapshot = None
        if all_or_none:
            snapshot = ({name: {rid: dict(row) for rid, row in rows.items()} for name, rows in self._rows.items()},
                        set(self._purged))
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                results.append(_result(apply(item), True, "", ""))
            except _ApiError as error:
                results.append(_result("", False, error.code, error.message, error.fields))
        if snapshot is not None and not all(r["success"] for r in results):
            self._rows, self._purged = snapshot
            self._version += 1
            rolled_back = ("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were "
                           "valid and the request was using AllOrNone header")
            results = [_result("", False, *rolled_back) if r["success"] else r for r in results]
        return Response.json(results)

    # --- Bulk API 2.0 ---

    def _job(self, request: Request) -> _Job:
        job = self._jobs.get(request.params["job"])
        if job is None:
            raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _job_create(self, request: Request) -> Response:
        body = _json_object(request)
        operation, object_name = body.get("operation"), str(body.get("object") or "")
        if operation not in ("delete", "hardDelete"):
            raise _ApiError(400, "FEATURENOTENABLED", "this sandbox runs delete and hardDelete ingest jobs only")
        obj = self.objects.get(object_name.lower())
        if obj is None:
            raise _ApiError(400, "INVALIDENTITY", f"Entity '{object_name}' is not supported by the Bulk API.")
        if body.get("contentType", "CSV") != "CSV" or body.get("columnDelimiter", "COMMA") != "COMMA":
            raise _ApiError(400, "FEATURENOTENABLED", "this sandbox reads COMMA-delimited CSV only")
        job = _Job(to_18(f"7508d{next(self._counter):010d}"), operation, obj.name, request.params["version"], _now())
        self._jobs[job.id] = job
        self.count("bulk_jobs")
        return Response.json(job.json())

    def _job_list(self, request: Request) -> Response:
        return Response.json({"done": True, "records": [j.json() for j in self._jobs.values()], "nextRecordsUrl": None})

    def _job_get(self, request: Request) -> Response:
        job = self._job(request)
        if job.state in ("UploadComplete", "InProgress"):
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                self._run_job(job)
        return Response.json(job.json())

    def _run_job(self, job: _Job) -> None:
        if job.header_error:
            job.state, job.error_message = "Failed", job.header_error
            return
        for record_id in job.rows:
            done, code, message = self._delete(record_id, hard=job.operation == "hardDelete", expect=job.object)
            if done:
                job.succeeded.append(record_id)
            else:
                job.failed.append((record_id, f"{code}:{message}:--"))
        job.state, job.modified = "JobComplete", _now()

    def _job_patch(self, request: Request) -> Response:
        job = self._job(request)
        state = _json_object(request).get("state")
        if state == "UploadComplete" and job.state == "Open":
            job.state, job.polls_left = "UploadComplete", self.bulk_polls_in_progress
        elif state == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            job.state = "Aborted"
        else:
            raise _ApiError(400, "INVALIDJOBSTATE", f"Cannot change the state of a job from {job.state} to {state}")
        job.modified = _now()
        return Response.json(job.json())

    def _job_delete(self, request: Request) -> Response:
        job = self._job(request)
        if job.state in ("Open", "InProgress"):
            raise _ApiError(400, "INVALIDJOBSTATE", f"Cannot delete a job in state {job.state}")
        del self._jobs[job.id]
        return Response.empty(204)

    def _job_upload(self, request: Request) -> Response:
        job = self._job(request)
        if job.state != "Open":
            raise _ApiError(409, "INVALIDJOBSTATE", f"Cannot upload data to a job in state {job.state}")
        if not (request.header("content-type") or "").lower().startswith("text/csv"):
            raise _ApiError(400, "INVALIDCONTENTTYPE", "Content-Type must be text/csv")
        rows = list(csv.reader(io.StringIO(request.body.decode("utf-8-sig"))))
        if not rows:
            raise _ApiError(400, "ClientInputError", "The uploaded CSV is empty")
        header = [name.strip() for name in rows[0]]
        if [h.lower() for h in header] != ["id"]:
            job.header_error = f"InvalidBatch : Field name not found : {','.join(header)}"
        else:
            job.rows.extend(row[0].strip() for row in rows[1:] if row and row[0].strip())
        return Response.empty(201)

    def _job_results(self, request: Request) -> Response:
        job = self._job(request)
        kind = request.params["results"].lower()
        if kind == "successfulresults":
            body = _csv([("sf__Id", "sf__Created", "Id"), *((i, "false", i) for i in job.succeeded)])
        elif kind == "failedresults":
            body = _csv([("sf__Id", "sf__Error", "Id"), *((i, error, i) for i, error in job.failed)])
        else:
            pending = job.rows if job.state in ("Aborted", "Failed") else []
            body = _csv([("Id",), *((i,) for i in pending)])
        return Response.text(body, 200, "text/csv")


def _result(
    record_id: str, done: bool, code: str, message: str, fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """A SaveResult/DeleteResult as sObject Collections answer it."""
    if done:
        return {"id": record_id, "success": True, "errors": []}
    # Failed entries carry no id (as in Salesforce's documented examples): results match the request by position.
    return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": list(fields or [])}]}


def _bearer(request: Request) -> str:
    return bearer_token(request, ("bearer", "oauth"))


def _json_body(request: Request) -> Any:
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError):
        raise _ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None


def _json_object(request: Request) -> dict[str, Any]:
    body = _json_body(request)
    if not isinstance(body, dict):
        raise _ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


def _unavailable_page() -> Response:
    # The login servers answer an outage with an HTML page, not JSON.
    return Response.text("<html><body><h1>Service Unavailable</h1></body></html>", 503, "text/html")


def _soap_login_retired(request: Request) -> Response:
    fault = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
        'envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault><faultcode>'
        "sf:UNSUPPORTED_API_VERSION</faultcode><faultstring>UNSUPPORTED_API_VERSION: SOAP login() is retired; use "
        "OAuth 2.0</faultstring><detail><sf:UnexpectedErrorFault><sf:exceptionCode>UNSUPPORTED_API_VERSION"
        "</sf:exceptionCode><sf:exceptionMessage>SOAP login() is retired; use OAuth 2.0</sf:exceptionMessage>"
        "</sf:UnexpectedErrorFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response.text(fault, 500, "text/xml")


# --- a client for tests and the demo ------------------------------------------------------------------


class OrgClient(ControlClient):
    """Adds and reads records over the wire, as any Salesforce client would (plain `requests`).

    Records go in through the vendor's own create endpoints (``POST sobjects/{Object}/`` and sObject
    Collections), so they pass the same validation as anything a connector writes. The sandbox's
    control API (faults, refusals, stats, seeding) is wrapped too.
    """

    def __init__(self, base_url: str, *, client_id: str = DEMO_CLIENT_ID, client_secret: str = DEMO_CLIENT_SECRET,
                 version: str = "62.0", timeout: float = 10.0) -> None:
        super().__init__(base_url, timeout=timeout)
        self.version = version
        self._client_id, self._client_secret = client_id, client_secret
        self._token: str | None = None

    @property
    def api(self) -> str:
        return f"{self.base_url}/services/data/v{self.version}"

    def token(self, *, fresh: bool = False) -> str:
        """An access token from the client-credentials flow (HTTP Basic, as simple-salesforce sends it)."""
        if self._token is None or fresh:
            answer = self._http.post(f"{self.base_url}{_TOKEN_PATH}", data={"grant_type": "client_credentials"},
                                     auth=(self._client_id, self._client_secret), timeout=self.timeout)
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        return self._token

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One REST call under ``/services/data/vXX.X`` (or a full path starting with ``/services/``)."""
        url = f"{self.base_url}{path}" if path.startswith("/services/") else f"{self.api}/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self._http.request(method, url, headers=headers, timeout=self.timeout, **kwargs)

    def create(self, object_name: str, fields: Mapping[str, Any]) -> str:
        """Create one record (``POST sobjects/{Object}/`` -> 201); its id."""
        answer = self.call("POST", f"sobjects/{object_name}/", json=dict(fields))
        if answer.status_code != 201:
            raise RuntimeError(f"create {object_name} failed: {answer.status_code} {answer.text}")
        return str(answer.json()["id"])

    def create_many(self, object_name: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create records 200 at a time through sObject Collections (all or none per call); their ids."""
        ids: list[str] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = [{"attributes": {"type": object_name}, **r} for r in records[start : start + COLLECTION_LIMIT]]
            answer = self.call("POST", "composite/sobjects", json={"allOrNone": True, "records": chunk})
            results = answer.json()
            if answer.status_code != 200 or not all(r["success"] for r in results):
                raise RuntimeError(f"create {object_name} failed: {answer.status_code} {answer.text[:500]}")
            ids.extend(str(r["id"]) for r in results)
        return ids

    def query(self, soql: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of a SOQL query, following nextRecordsUrl."""
        answer = self.call("GET", "queryAll/" if include_deleted else "query/", params={"q": soql})
        answer.raise_for_status()
        page = answer.json()
        records = list(page["records"])
        while not page["done"]:
            answer = self.call("GET", page["nextRecordsUrl"])
            answer.raise_for_status()
            page = answer.json()
            records.extend(page["records"])
        return records


# --- demo seed ------------------------------------------------------------------------------------------

_CASE_SUBJECTS = ("QSFP28 LR4 link flaps on Arista 7050X", "DOM readings missing on SFP28 LR",
                  "Wrong MPO polarity on delivered trunk", "RMA request: dead 400G DR4 module",
                  "Invoice shows the wrong VAT number")
_TASK_SUBJECTS = ("Call back about lead time", "Send 100G compatibility matrix", "Follow up on quote",
                  "Email: webinar recording", "Confirm delivery address")
_EVENT_SUBJECTS = ("Datacenter site visit", "Quarterly business review", "Webinar: 400G migration")


class _Seeder:
    """Builds the demo org from a seeded generator and fixed dates (never the clock)."""

    def __init__(self, vendor: SalesforceSandbox, rng: random.Random) -> None:
        self.vendor, self.rng = vendor, rng
        self.individuals = "individual" in vendor.objects

    def add(self, obj: str, values: Mapping[str, Any]) -> str:
        return self.vendor._create(self.vendor.objects[obj.lower()], values, trusted=True)

    def moment(self, after: datetime = DEMO_START) -> datetime:
        return random_moment(self.rng, after)

    def audit(self, created: datetime, modified: datetime | None = None) -> dict[str, str]:
        modified = modified or min(created + timedelta(days=self.rng.randint(0, 400)), datetime(2026, 6, 30, tzinfo=UTC))
        return {"CreatedDate": _sf_datetime(created), "LastModifiedDate": _sf_datetime(modified)}

    def run(self) -> None:
        self.campaigns = [
            self.add("Campaign", {"Name": name, "Type": kind, "Status": "Completed", "IsActive": False,
                                  **self.audit(datetime(2024, 1, 10, tzinfo=UTC))})
            for name, kind in (("OFC 2025 booth scans", "Trade Show"), ("Datacenter insights newsletter", "Email"),
                               ("Webinar: 400G migration", "Webinar"), ("QSFP-DD launch", "Advertisement"))
        ]
        self.person("Ada", "Lovelace", "Ada.Lovelace@Example.com", "Analytical Engines Ltd", "United Kingdom",
                    datetime(2015, 11, 3, 9, 12, tzinfo=UTC), lead_email="ADA.LOVELACE@example.com",
                    cases=2, tasks=3, events=2, members=2, supplied_case=True)
        self.person("Grace", "Hopper", "grace.hopper@example.org", "Harvard Computation Lab", "United States",
                    datetime(2020, 2, 11, 11, 30, tzinfo=UTC), lead_email="Grace.Hopper@Example.org",
                    cases=1, tasks=2, events=1, members=1)
        for number, email in enumerate(DECOY_EMAILS):
            first, last = decoy_name(number)
            self.person(first, last, email, "Decoy Systems", "Netherlands",
                        datetime(2021, 3, 1 + number, 10, 0, tzinfo=UTC), lead_email=email,
                        cases=1, tasks=1, events=1, members=1, supplied_case=True)
        self.lookalikes()
        used: set[str] = set()
        for _ in range(50):
            first, last, company, email = new_person(self.rng, used)
            self.person(first, last, email, company, self.rng.choice(("Germany", "Brazil", "Canada", "United States")),
                        self.moment(), lead_email=email if self.rng.random() < 0.3 else None,
                        cases=self.rng.choice((0, 0, 1, 2)), tasks=self.rng.randint(0, 4),
                        events=self.rng.choice((0, 0, 1)), members=self.rng.choice((0, 1)),
                        individual=self.rng.random() < 0.3)

    def lookalikes(self) -> None:
        """Ada's namesakes: nothing done for Ada may touch them. Their own
        generator, so the rest of the org is seeded exactly as before."""
        rng, self.rng = self.rng, random.Random(1815)
        for email in LOOKALIKE_EMAILS:
            self.person("Ada", "Lovelace", email, "Analytical Engines Ltd", "United Kingdom",
                        datetime(2016, 1, 4, 9, 0, tzinfo=UTC), lead_email=email, cases=0, tasks=0, events=0,
                        members=0)
        self.rng = rng

    def person(self, first: str, last: str, email: str, company: str, country: str, created: datetime, *,
               lead_email: str | None, cases: int, tasks: int, events: int, members: int,
               supplied_case: bool = False, individual: bool = True) -> None:
        rng = self.rng
        individual_id = None
        if individual and self.individuals:
            individual_id = self.add("Individual", {"FirstName": first, "LastName": last, "HasOptedOutSolicit": True,
                                                    "HasOptedOutTracking": rng.random() < 0.5, **self.audit(created)})
        contact = self.add("Contact", {
            "FirstName": first, "LastName": last, "Email": email, "Title": rng.choice(("Network Engineer", "CTO",
                                                                                       "Procurement Manager")),
            "Phone": f"+44 20 7946 {rng.randint(1000, 9999)}", "MailingStreet": f"{rng.randint(1, 240)} High St",
            "MailingCity": rng.choice(("London", "Leeds", "Austin", "Berlin")), "MailingCountry": country,
            "LeadSource": rng.choice(("Web", "Trade Show", "Webinar")), "HasOptedOutOfEmail": rng.random() < 0.3,
            "IndividualId": individual_id, **self.audit(created),
        })
        lead = None
        if lead_email is not None:
            lead = self.add("Lead", {"FirstName": first, "LastName": last, "Email": lead_email, "Company": company,
                                     "Country": country, "LeadSource": "Web", "IndividualId": individual_id,
                                     **self.audit(created - timedelta(days=14))})
        for index in range(members):
            link = {"LeadId": lead} if lead is not None and index % 2 == 1 else {"ContactId": contact}
            self.add("CampaignMember", {"CampaignId": self.campaigns[index % len(self.campaigns)],
                                        "Status": rng.choice(("Sent", "Responded")), **link,
                                        **self.audit(self.moment(created))})
        for index in range(cases):
            extra = {"SuppliedEmail": email.lower(), "SuppliedName": f"{first} {last}"} \
                if supplied_case and index == 0 else {}
            self.add("Case", {"ContactId": contact, "Subject": rng.choice(_CASE_SUBJECTS), "Origin": "Web",
                              "Status": rng.choice(("New", "Closed")), "Description": f"Reported by {first}.",
                              **extra, **self.audit(self.moment(created))})
        for index in range(tasks):
            when = self.moment(created)
            who = lead if lead is not None and index == tasks - 1 and tasks > 1 else contact
            self.add("Task", {"WhoId": who, "Subject": rng.choice(_TASK_SUBJECTS), "ActivityDate": when.date()
                              .isoformat(), "Status": "Completed", "Description": f"Spoke with {first}.",
                              **self.audit(when, when)})
        for _ in range(events):
            when = self.moment(created)
            self.add("Event", {"WhoId": contact, "Subject": rng.choice(_EVENT_SUBJECTS), "Location": "Video call",
                               "StartDateTime": _sf_datetime(when), "EndDateTime": _sf_datetime(when + timedelta(hours=1)),
                               "ActivityDate": when.date().isoformat(), "DurationInMinutes": 60,
                               **self.audit(when, when)})


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.salesforce --port N`: serve a seeded demo org until interrupted."""
    parser = demo_cli("salesforce", main.__doc__)
    parser.add_argument("--no-seed", action="store_true", help="start with an empty org")
    parser.add_argument("--daily-quota", type=int, default=DEFAULT_DAILY_QUOTA, help="API calls per 24 hours")
    parser.add_argument("--jwt-public-key", help="PEM file of the public key JWT bearer assertions are signed for")
    args = parser.parse_args(argv)
    public_key = None
    if args.jwt_public_key:
        with open(args.jwt_public_key, "rb") as handle:
            public_key = handle.read()
    vendor = SalesforceSandbox(daily_quota=args.daily_quota, jwt_public_key=public_key)
    return serve_demo(vendor, args.port, None if args.no_seed else args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
