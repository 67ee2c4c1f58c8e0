"""The Salesforce sandbox's org model: record ids, the REST error shape, sObject schemas, field values,
Bulk API 2.0 jobs."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sandbox.kit import Response

USER_ID = "0058d000001DsRzAAK"  # the integration user every sandbox write is attributed to

# --- record ids -------------------------------------------------------------------------------------

ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
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


class ApiError(Exception):
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


def not_found_error() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def entity_deleted_error() -> ApiError:
    return ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])


def malformed_query(soql: str, position: int, detail: str) -> ApiError:
    # Salesforce quotes the statement in its errors (personal data included): clients must not pass it on.
    return ApiError(
        400, "MALFORMED_QUERY", f"\n{soql}\n{' ' * position}^\nERROR at Row:1:Column:{position + 1}\n{detail}"
    )


# --- schema -------------------------------------------------------------------------------------------

TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "picklist", "combobox", "url"})
ID_TYPES = frozenset({"id", "reference"})
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
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


def _f(name: str, type_: str = "string", length: int = 0, **kwargs: Any) -> FieldSpec:
    if not length and type_ in TEXT_TYPES:
        length = 255
    if type_ in ID_TYPES:
        length = 18
    return FieldSpec(name, type_, length, **kwargs)


def _head() -> tuple[FieldSpec, ...]:
    return (
        _f("Id", "id", nillable=False, createable=False, updateable=False, defaulted=True),
        _f("IsDeleted", "boolean", nillable=False, createable=False, updateable=False, defaulted=True),
    )


def _owner() -> FieldSpec:
    return _f("OwnerId", "reference", nillable=False, defaulted=True, reference_to=("User",))


def _audit() -> tuple[FieldSpec, ...]:
    fixed = {"nillable": False, "createable": False, "updateable": False, "defaulted": True}
    return (
        _f("CreatedDate", "datetime", audit=True, **fixed),
        _f("CreatedById", "reference", reference_to=("User",), audit=True, **fixed),
        _f("LastModifiedDate", "datetime", audit=True, **fixed),
        _f("LastModifiedById", "reference", reference_to=("User",), audit=True, **fixed),
        _f("SystemModstamp", "datetime", **fixed),
    )


def _computed(name: str, type_: str, length: int = 0) -> FieldSpec:
    return _f(name, type_, length, createable=False, updateable=False, computed=True)


@dataclass(frozen=True, slots=True)
class SObject:
    name: str
    prefix: str
    label_plural: str
    fields: tuple[FieldSpec, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    by_name: Mapping[str, FieldSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> FieldSpec | None:
        """A field by its API name, which Salesforce matches case-insensitively."""
        return self.by_name.get(name.lower())


OBJECTS: tuple[SObject, ...] = (
    SObject("Contact", "003", "Contacts", (
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
    SObject("Lead", "00Q", "Leads", (
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
    SObject("Campaign", "701", "Campaigns", (
        *_head(), _owner(), _f("Name", length=80, nillable=False), _f("Type", "picklist"),
        _f("Status", "picklist"), _f("StartDate", "date"), _f("EndDate", "date"),
        _f("IsActive", "boolean", nillable=False, defaulted=True), _f("Description", "textarea", 32000), *_audit(),
    )),
    SObject("CampaignMember", "00v", "Campaign Members", (
        *_head(),
        _f("CampaignId", "reference", nillable=False, updateable=False, reference_to=("Campaign",)),
        _f("LeadId", "reference", updateable=False, reference_to=("Lead",)),
        _f("ContactId", "reference", updateable=False, reference_to=("Contact",)),
        _f("Status", "picklist", 40, defaulted=True), _computed("HasResponded", "boolean"),
        _f("FirstRespondedDate", "date"), *_audit(),
    ), {"Status": "Sent"}),
    SObject("Case", "500", "Cases", (
        *_head(), _owner(), _f("CaseNumber", length=30, createable=False, updateable=False, defaulted=True),
        _f("ContactId", "reference", reference_to=("Contact",)),
        _f("SuppliedName", length=80), _f("SuppliedEmail", "email", 80), _f("SuppliedPhone", length=40),
        _f("SuppliedCompany", length=80), _f("Subject"), _f("Description", "textarea", 32000),
        _f("Status", "picklist", defaulted=True), _f("Origin", "picklist"), _f("Priority", "picklist", defaulted=True),
        _f("Reason", "picklist"), _computed("IsClosed", "boolean"), *_audit(),
    ), {"Status": "New", "Priority": "Medium"}),
    SObject("Task", "00T", "Tasks", (
        *_head(), _owner(), _f("WhoId", "reference", reference_to=("Contact", "Lead")),
        _f("WhatId", "reference", reference_to=("Campaign", "Case")), _f("Subject", "combobox"),
        _f("ActivityDate", "date"), _f("Status", "picklist", nillable=False, defaulted=True),
        _f("Priority", "picklist", nillable=False, defaulted=True), _f("Description", "textarea", 32000),
        _f("TaskSubtype", "picklist"), _f("CallDurationInSeconds", "int"), _computed("IsClosed", "boolean"),
        *_audit(),
    ), {"Status": "Not Started", "Priority": "Normal"}),
    SObject("Event", "00U", "Events", (
        *_head(), _owner(), _f("WhoId", "reference", reference_to=("Contact", "Lead")),
        _f("WhatId", "reference", reference_to=("Campaign", "Case")), _f("Subject", "combobox"),
        _f("Location"), _f("StartDateTime", "datetime"), _f("EndDateTime", "datetime"), _f("ActivityDate", "date"),
        _f("DurationInMinutes", "int"), _f("Description", "textarea", 32000), *_audit(),
    )),
    SObject("Individual", "0PK", "Individuals", (
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


def sf_datetime(moment: datetime) -> str:
    """A datetime as Salesforce's JSON writes it: ``2024-05-01T10:00:00.000+0000``."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    match = re.match(r"^(.*[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2})(\d{2})$", value)
    if match:  # +0000 -> +00:00
        value = f"{match.group(1)}{match.group(2)}:{match.group(3)}"
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def now_iso() -> str:
    return sf_datetime(datetime.now(UTC))


def check_value(spec: FieldSpec, value: Any) -> Any:
    """A value as stored, or an `ApiError` as Salesforce answers a bad one."""
    if value is None or (value == "" and spec.type in TEXT_TYPES):
        if spec.type == "boolean":
            return False
        if not spec.nillable and not spec.defaulted:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]", [spec.name])
        return None
    label = spec.label
    bad = ApiError(
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
            return sf_datetime(parse_datetime(value))
        except ValueError:
            raise bad from None
    if spec.type in ID_TYPES:
        if not ID_RE.match(value):
            raise ApiError(400, "MALFORMED_ID", f"{label}: id value of incorrect type: {value}", [spec.name])
        return to_18(value)
    if spec.length and len(value) > spec.length:
        raise ApiError(
            400, "STRING_TOO_LONG", f"{label}: data value too large: {value} (max length={spec.length})", [spec.name]
        )
    if spec.type == "email" and not EMAIL_RE.match(value):
        raise ApiError(400, "INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}", [spec.name])
    return value


# --- Bulk API 2.0 ---------------------------------------------------------------------------------------


@dataclass
class BulkJob:
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
            "id": self.id, "operation": self.operation, "object": self.object, "createdById": USER_ID,
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


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        writer.writerow(row)
    return out.getvalue()
