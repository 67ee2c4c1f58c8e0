"""HubSpot's CRM objects as the HubSpot sandbox stores them: property metadata, timestamps, records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CASE_INSENSITIVE = frozenset({"email"})  # properties HubSpot compares without case


def iso_millis(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso_millis(datetime.now(UTC))


def epoch_millis(value: Any) -> float | None:
    """Epoch milliseconds from epoch millis (number or digits) or an ISO date/datetime; None if neither."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


# --- property metadata --------------------------------------------------------------------------------


def _prop(name: str, label: str, type_: str, field_type: str, group: str, *, read_only: bool = False,
          calculated: bool = False, options: Sequence[str] = (), order: int = -1) -> dict[str, Any]:
    return {
        "updatedAt": "2023-09-14T18:02:11.223Z",
        "createdAt": "2019-08-06T02:41:08.029Z",
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "description": f"{label}.",
        "groupName": group,
        "options": [
            {"label": option.replace("_", " ").title(), "value": option, "displayOrder": index, "hidden": False}
            for index, option in enumerate(options)
        ],
        "displayOrder": order,
        "calculated": calculated,
        "externalOptions": False,
        "hasUniqueValue": name == "hs_object_id",
        "hidden": False,
        "hubspotDefined": True,
        "modificationMetadata": {"archivable": True, "readOnlyDefinition": True, "readOnlyValue": read_only},
        "formField": not read_only and type_ != "datetime",
        "archived": False,
    }


def _common(prefix: str) -> list[dict[str, Any]]:
    return [
        _prop(f"{prefix}createdate", "Create date", "datetime", "date", "engagement", read_only=True),
        _prop(f"{prefix}lastmodifieddate", "Last modified date", "datetime", "date", "engagement", read_only=True),
        _prop("hs_object_id", "Record ID", "number", "number", "engagement", read_only=True),
        _prop("hubspot_owner_id", "Owner", "enumeration", "select", "engagement"),
        _prop("hs_timestamp", "Activity date", "datetime", "date", "engagement"),
    ]


_CI, _AN = "contactinformation", "analyticsinformation"
PROPERTY_DEFINITIONS: dict[str, list[dict[str, Any]]] = {
    "contacts": [
        _prop("email", "Email", "string", "text", _CI, order=3),
        _prop("firstname", "First Name", "string", "text", _CI, order=0),
        _prop("lastname", "Last Name", "string", "text", _CI, order=1),
        _prop("phone", "Phone Number", "string", "phonenumber", _CI),
        _prop("mobilephone", "Mobile Phone Number", "string", "phonenumber", _CI),
        _prop("company", "Company Name", "string", "text", _CI),
        _prop("jobtitle", "Job Title", "string", "text", _CI),
        _prop("address", "Street Address", "string", "text", _CI),
        _prop("city", "City", "string", "text", _CI),
        _prop("zip", "Postal Code", "string", "text", _CI),
        _prop("country", "Country/Region", "string", "text", _CI),
        _prop("website", "Website URL", "string", "text", _CI),
        _prop("message", "Message", "string", "textarea", _CI),
        _prop("work_email", "Work email", "string", "text", _CI),
        _prop("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", _CI,
              options=("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                       "customer", "evangelist", "other")),
        _prop("hs_lead_status", "Lead Status", "enumeration", "radio", "sales_properties",
              options=("NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "CONNECTED")),
        _prop("hs_additional_emails", "Additional email addresses", "enumeration", "checkbox", _CI, read_only=True),
        _prop("hs_email_optout", "Unsubscribed from all email", "bool", "booleancheckbox", "emailinformation",
              read_only=True, options=("true", "false")),
        _prop("hs_analytics_source", "Original Source", "enumeration", "select", _AN, read_only=True,
              options=("ORGANIC_SEARCH", "PAID_SEARCH", "EMAIL_MARKETING", "SOCIAL_MEDIA", "REFERRALS",
                       "OTHER_CAMPAIGNS", "DIRECT_TRAFFIC", "OFFLINE", "PAID_SOCIAL")),
        _prop("ip_city", "IP City", "string", "text", _AN, read_only=True),
        _prop("recent_conversion_event_name", "Recent Conversion", "string", "text", "conversioninformation",
              read_only=True),
        _prop("recent_conversion_date", "Recent Conversion Date", "datetime", "date", "conversioninformation",
              read_only=True),
        _prop("num_conversion_events", "Number of Form Submissions", "number", "number", "conversioninformation",
              read_only=True, calculated=True),
        _prop("notes_last_contacted", "Last Contacted", "datetime", "date", "sales_properties", read_only=True,
              calculated=True),
        _prop("notes_last_updated", "Last Activity Date", "datetime", "date", "sales_properties", read_only=True,
              calculated=True),
        _prop("num_notes", "Number of Sales Activities", "number", "number", "sales_properties", read_only=True,
              calculated=True),
        _prop("createdate", "Create Date", "datetime", "date", _CI, read_only=True),
        _prop("lastmodifieddate", "Last Modified Date", "datetime", "date", _CI, read_only=True),
        _prop("hs_object_id", "Record ID", "number", "number", _CI, read_only=True),
    ],
    "notes": [*_common("hs_"), _prop("hs_note_body", "Note body", "string", "html", "engagement"),
              _prop("hs_attachment_ids", "Attached file IDs", "enumeration", "checkbox", "engagement")],
    "emails": [*_common("hs_"),
               _prop("hs_email_direction", "Email direction", "enumeration", "select", "engagement",
                     options=("EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL")),
               _prop("hs_email_subject", "Email subject", "string", "text", "engagement"),
               _prop("hs_email_text", "Email body", "string", "textarea", "engagement"),
               _prop("hs_email_html", "Email HTML body", "string", "html", "engagement"),
               _prop("hs_email_status", "Email send status", "enumeration", "select", "engagement",
                     options=("BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT")),
               _prop("hs_email_headers", "Email headers", "string", "textarea", "engagement"),
               _prop("hs_email_sender_email", "From", "string", "text", "engagement", read_only=True),
               _prop("hs_email_to_email", "To", "string", "text", "engagement", read_only=True)],
    "calls": [*_common("hs_"),
              _prop("hs_call_title", "Call title", "string", "text", "engagement"),
              _prop("hs_call_body", "Call notes", "string", "html", "engagement"),
              _prop("hs_call_duration", "Call duration (ms)", "number", "number", "engagement"),
              _prop("hs_call_from_number", "From number", "string", "phonenumber", "engagement"),
              _prop("hs_call_to_number", "To number", "string", "phonenumber", "engagement"),
              _prop("hs_call_status", "Call status", "enumeration", "select", "engagement",
                    options=("BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED",
                             "IN_PROGRESS", "NO_ANSWER", "QUEUED", "RINGING")),
              _prop("hs_call_direction", "Call direction", "enumeration", "select", "engagement",
                    options=("INBOUND", "OUTBOUND"))],
    "meetings": [*_common("hs_"),
                 _prop("hs_meeting_title", "Meeting name", "string", "text", "engagement"),
                 _prop("hs_meeting_body", "Meeting description", "string", "html", "engagement"),
                 _prop("hs_internal_meeting_notes", "Internal notes", "string", "html", "engagement"),
                 _prop("hs_meeting_location", "Location", "string", "text", "engagement"),
                 _prop("hs_meeting_start_time", "Start time", "datetime", "date", "engagement"),
                 _prop("hs_meeting_end_time", "End time", "datetime", "date", "engagement"),
                 _prop("hs_meeting_outcome", "Meeting outcome", "enumeration", "select", "engagement",
                       options=("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"))],
    "tasks": [*_common("hs_"),
              _prop("hs_task_subject", "Task title", "string", "text", "engagement"),
              _prop("hs_task_body", "Task notes", "string", "html", "engagement"),
              _prop("hs_task_status", "Task status", "enumeration", "select", "engagement",
                    options=("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED")),
              _prop("hs_task_priority", "Priority", "enumeration", "select", "engagement",
                    options=("NONE", "LOW", "MEDIUM", "HIGH"))],
}  # fmt: skip
PROPERTY_INDEX = {kind: {p["name"]: p for p in props} for kind, props in PROPERTY_DEFINITIONS.items()}


def date_properties(kind: str) -> tuple[str, str]:
    """(create date property, last-modified property) of an object type."""
    return ("createdate", "lastmodifieddate") if kind == "contacts" else ("hs_createdate", "hs_lastmodifieddate")


def default_properties(kind: str) -> tuple[str, ...]:
    if kind == "contacts":
        return ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
    return ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")


LEGAL_BASES = frozenset({
    "LEGITIMATE_INTEREST_PQL", "LEGITIMATE_INTEREST_CLIENT", "PERFORMANCE_OF_CONTRACT", "CONSENT_WITH_NOTICE",
    "NON_GDPR", "PROCESS_AND_STORE", "LEGITIMATE_INTEREST_OTHER",
})  # fmt: skip
"""The ``legalBasis`` values of Communication Preferences v3 (HubSpot's PublicUpdateSubscriptionStatusRequest)."""

SUBSCRIPTION_DEFINITIONS: tuple[dict[str, Any], ...] = tuple(
    {
        "id": sub_id, "name": name, "description": description, "purpose": purpose,
        "communicationMethod": "Email", "isActive": True, "isDefault": sub_id == "1190",
        "isInternal": False, "businessUnitId": 0,
        "createdAt": "2021-02-01T10:00:00.000Z", "updatedAt": "2024-05-06T09:30:00.000Z",
    }
    for sub_id, name, description, purpose in (
        ("1190", "Marketing Information", "Marketing offers and updates.", "Marketing"),
        ("1191", "Product Updates", "News about the products you use.", "Marketing"),
        ("1192", "One to One", "One to one emails from your account team.", "Sales"),
    )
)  # fmt: skip


@dataclass
class CrmObject:
    id: str
    kind: str
    properties: dict[str, str | None]
    created_at: str
    updated_at: str
    archived_at: str | None = None

    def value(self, name: str) -> str | None:
        return self.id if name == "hs_object_id" else self.properties.get(name)
