"""The `settings:` block of a `hubspot` system, and what HubSpot holds by default (objects, categories)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import Field, model_validator

from connectors.base import RateLimitSpec
from connectors.http import ENV_VAR_NAME, HttpSettings
from dsr.contract import RECTIFIABLE_FIELDS, DataCategory

SEARCH_PAGE_MAX = 200
SEARCH_RESULT_CAP = 10_000  # HubSpot answers 400 past this many results of one query
ENGAGEMENTS = ("notes", "emails", "calls", "meetings", "tasks")
# Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> contact property (HubSpot's defaults).
DEFAULT_RECTIFIABLE: Mapping[str, str] = {
    "first_name": "firstname", "last_name": "lastname", "email": "email", "phone": "phone",
    "postal_address": "address", "company": "company", "title": "jobtitle",
}

_PROPERTY_NAME = re.compile(r"^[a-z0-9_]+$")
_EMAIL_PROPERTIES = frozenset({"email", "work_email", "hs_additional_emails"})
_NOT_WRITABLE = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_createdate", "hs_lastmodifieddate"})
_DEFAULT_RETENTION = {"contacts": "lastmodifieddate"}  # engagements: hs_lastmodifieddate
_DEFAULT_CATEGORIES: dict[str, tuple[DataCategory, ...]] = {
    "contacts": (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.MARKETING),
    "notes": (DataCategory.USAGE,),
    "emails": (DataCategory.MARKETING, DataCategory.USAGE),
    "calls": (DataCategory.USAGE,),
    "meetings": (DataCategory.USAGE,),
    "tasks": (DataCategory.USAGE,),
}


class HubSpotSettings(HttpSettings):
    """The `settings:` block of a `hubspot` system in `systems.yaml`.

    Errors name the field at fault by its path (``anonymise.email: ...``), never its value.
    """

    SECRET_KEYS = ("token", "access_token", "api_key", "hapikey")

    token_env: str = Field(pattern=ENV_VAR_NAME)
    rate_limit: RateLimitSpec = RateLimitSpec(calls=100, period_seconds=10)
    search_rate_limit: RateLimitSpec = RateLimitSpec(calls=4, period_seconds=1)
    engagements: tuple[Literal["notes", "emails", "calls", "meetings", "tasks"], ...] = (
        "notes", "emails", "calls", "meetings",
    )
    categories: dict[str, tuple[DataCategory, ...]] = Field(default_factory=dict)
    anonymise: dict[str, str | None] | None = None
    retention_property: dict[str, str] = Field(default_factory=dict)
    gdpr_delete_cascades: bool = True  # HubSpot's GDPR delete takes engagements associated only with the contact
    # canonical field -> contact property a rectification writes; unset: DEFAULT_RECTIFIABLE.
    rectifiable: dict[str, str] | None = None
    slow_down_below: int = Field(default=10, ge=0)  # X-HubSpot-RateLimit-Remaining at which calls are spaced out
    page_size: int = Field(default=SEARCH_PAGE_MAX, ge=1, le=SEARCH_PAGE_MAX)
    search_result_cap: int = Field(default=SEARCH_RESULT_CAP, ge=SEARCH_PAGE_MAX)  # HubSpot's per-query cap

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.engagements)) != len(self.engagements):
            raise ValueError("engagements: names an engagement type twice")
        objects = ("contacts", *self.engagements)
        for name, cats in self.categories.items():
            if name not in objects:
                raise ValueError(f"categories.{name}: not an object of this system (contacts or one of engagements)")
            if not cats:
                raise ValueError(f"categories.{name}: name at least one data category")
        for name, prop in self.retention_property.items():
            if name not in objects:
                raise ValueError(f"retention_property.{name}: not an object of this system")
            if not _PROPERTY_NAME.match(prop):
                raise ValueError(f"retention_property.{name}: not a HubSpot property name")
        if self.anonymise is not None:
            _check_anonymise(self.anonymise)
        for canonical, prop in (self.rectifiable or {}).items():
            if canonical not in RECTIFIABLE_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a rectifiable field ({', '.join(RECTIFIABLE_FIELDS)})")
            if not _PROPERTY_NAME.match(prop) or prop in _NOT_WRITABLE:
                raise ValueError(f"rectifiable.{canonical}: not a writable HubSpot property name")
        return self

    def categories_of(self, obj: str) -> tuple[DataCategory, ...]:
        return self.categories.get(obj) or _DEFAULT_CATEGORIES[obj]

    def retention_of(self, obj: str) -> str:
        return self.retention_property.get(obj) or _DEFAULT_RETENTION.get(obj, "hs_lastmodifieddate")

    def rectifiable_properties(self) -> Mapping[str, str]:
        """Canonical field -> the contact property a rectification writes."""
        return self.rectifiable if self.rectifiable is not None else DEFAULT_RECTIFIABLE


def _check_anonymise(mapping: Mapping[str, str | None]) -> None:
    if not mapping:
        raise ValueError("anonymise: name at least one property, or leave anonymise out")
    for prop, value in mapping.items():
        if not _PROPERTY_NAME.match(prop):
            raise ValueError(f"anonymise.{prop}: not a HubSpot property name")
        if prop in _NOT_WRITABLE:
            raise ValueError(f"anonymise.{prop}: HubSpot does not let this property be set")
        if prop in _EMAIL_PROPERTIES and value not in (None, ""):
            raise ValueError(
                f"anonymise.{prop}: HubSpot checks e-mail syntax and uniqueness, so a placeholder is "
                "refused or collides; use null (the property is cleared)")
    if "email" not in mapping:
        raise ValueError("anonymise: must clear email (null), the link to the person")
