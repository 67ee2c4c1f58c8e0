"""The `settings:` block of a `salesforce` system: login, org, pacing and the data map (`objects`).

Validators raise ValueError("relative.path: message"); `connectors.base.validate_settings` puts the system's
config path in front, so every error names the field at fault without echoing its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import RateLimitSpec, origin_problem, origin_setting_problem, topological_order
from connectors.http import ENV_VAR_NAME, HttpSettings
from dsr.contract import RECTIFIABLE_FIELDS, DataCategory

MIN_API_VERSION = 42.0  # sObject Collections delete
API_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # Salesforce API names; they go into SOQL unquoted
_DOMAIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
ApiName = Annotated[str, Field(pattern=API_NAME)]
#: The org's origin settings and how each is checked: production is https; an override is a sandbox.
_ORIGINS = (("instance_url", partial(origin_problem, https_only=True)), ("endpoint_override", origin_problem))


class MatchSpec(BaseModel):
    """One way an object's records tie to a person."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: ApiName  # the e-mail field; or the link field (on this object, or on the parent with `reverse`)
    parent: ApiName | None = None
    reverse: bool = False  # the parent's `field` holds this record's Id (Contact.IndividualId -> Individual)

    @model_validator(mode="after")
    def _check(self) -> MatchSpec:
        if self.reverse and self.parent is None:
            raise ValueError("reverse: needs parent (the object whose field holds this record's Id)")
        return self


class ObjectSpec(BaseModel):
    """One Salesforce object of the data map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: tuple[MatchSpec, ...] = Field(min_length=1)  # one mapping, or a list (any of them matches)
    categories: tuple[DataCategory, ...] = Field(min_length=1)
    anchor_date: ApiName | None = None
    retention_fields: tuple[ApiName, ...] = Field(default=("LastModifiedDate",), min_length=1)
    anonymise: dict[str, str | int | float | bool | None] | None = None
    optional: bool = False  # the object may not exist in the org (Individual needs data protection enabled)
    # Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> this object's field.
    rectifiable: dict[str, ApiName] = Field(default_factory=dict)
    # Marketing suppression: field -> the value meaning "no marketing" (HasOptedOutOfEmail: true,
    # Individual.HasOptedOutSolicit: true...); a restore puts each changed field's old value back.
    marketing_flags: dict[ApiName, bool | str] = Field(default_factory=dict)
    # A restriction (GDPR 18) also sets these: Individual.HasOptedOutProcessing ("Don't Process").
    restriction_flags: dict[ApiName, bool | str] = Field(default_factory=dict)

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _check(self) -> ObjectSpec:
        unknown = [canonical for canonical in self.rectifiable if canonical not in RECTIFIABLE_FIELDS]
        if unknown:
            raise ValueError(f"rectifiable.{unknown[0]}: not a rectifiable field "
                             f"(one of {', '.join(RECTIFIABLE_FIELDS)})")
        if self.anonymise is not None:
            self._check_anonymise(self.anonymise)
        return self

    def _check_anonymise(self, anonymise: Mapping[str, Any]) -> None:
        if not anonymise:
            raise ValueError("anonymise: name at least one field, or leave anonymise out")
        for name in anonymise:
            if not re.match(API_NAME, name):
                raise ValueError(f"anonymise.{name}: not a Salesforce field name")
            if name.lower() == "id":
                raise ValueError("anonymise.Id: the record's Id cannot be replaced")
        replaced = {name.lower() for name in anonymise}
        for match in self.match:
            if not match.reverse and match.field.lower() not in replaced:
                # Otherwise an "anonymised" record would still be found as the person's.
                raise ValueError(f"anonymise: must replace the match field {match.field!r} (the link to the person)")


class AuthSpec(BaseModel):
    """OAuth 2.0 login; every secret by the name of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: Literal["client_credentials", "jwt"]
    domain: str | None = Field(default=None, pattern=_DOMAIN)  # login, test, or a My Domain such as acme.my
    client_id_env: str = Field(pattern=ENV_VAR_NAME)
    client_secret_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    username: str | None = Field(default=None, min_length=1)
    username_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    private_key_file: str | None = Field(default=None, min_length=1)
    private_key_file_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    private_key_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)  # the PEM itself

    @model_validator(mode="after")
    def _check(self) -> AuthSpec:
        jwt_only = ("username", "username_env", "private_key_file", "private_key_file_env", "private_key_env")
        if self.flow == "client_credentials":
            if self.domain is None or self.domain in ("login", "test"):
                raise ValueError("domain: client credentials need the org's My Domain (e.g. acme.my), not login/test")
            if self.client_secret_env is None:
                raise ValueError("client_secret_env: required for flow client_credentials")
            for name in jwt_only:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only used by flow jwt")
            return self
        if self.client_secret_env is not None:
            raise ValueError("client_secret_env: not used by flow jwt")
        if (self.username is None) == (self.username_env is None):
            raise ValueError("username: give either username or username_env")
        keys = [n for n in ("private_key_file", "private_key_file_env", "private_key_env") if getattr(self, n)]
        if len(keys) != 1:
            raise ValueError("private_key_file: give exactly one of private_key_file, private_key_file_env, "
                             "private_key_env")
        return self

    @property
    def login_domain(self) -> str:
        return self.domain or "login"


class SalesforceSettings(HttpSettings):
    """The `settings:` block of a `salesforce` system in `systems.yaml`.

    The org is `instance_url` (else whatever instance the login answers for), never `base_url`: logins go to
    the `auth.domain`, calls to the instance the login names.
    """

    instance_url: str | None = Field(default=None, min_length=1)
    instance_url_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    # Sandboxes only: send every Salesforce URL to this loopback emulator instead (connectors.salesforce.session).
    endpoint_override: str | None = Field(default=None, min_length=1)
    endpoint_override_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    api_version: str = Field(default="62.0", pattern=r"^\d{2,3}\.0$")
    auth: AuthSpec
    rate_limit: RateLimitSpec = RateLimitSpec(calls=25, period_seconds=1.0)
    quota_slowdown_at: float = Field(default=0.8, gt=0, lt=1)  # share of the daily API quota used
    bulk_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    erase_mode: Literal["delete", "hard_delete"] = "delete"
    objects: dict[str, ObjectSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> SalesforceSettings:
        if self.base_url is not None or self.base_url_env is not None:
            raise ValueError("base_url: not a Salesforce setting (instance_url names the org)")
        for key, check in _ORIGINS:
            problem = origin_setting_problem(getattr(self, key), getattr(self, f"{key}_env"), key=key, check=check)
            if problem:
                raise ValueError(problem)
        if float(self.api_version) < MIN_API_VERSION:
            raise ValueError(f"api_version: {MIN_API_VERSION} or later is needed (sObject Collections)")
        for name, spec in self.objects.items():
            if not re.match(API_NAME, name):
                raise ValueError(f"objects.{name}: not a Salesforce object name")
            for index, match in enumerate(spec.match):
                if match.parent is not None and match.parent not in self.objects:
                    raise ValueError(f"objects.{name}.match.{index}.parent: unknown object {match.parent!r}")
        _order, cycle = topological_order(self.objects, discovery_parents(self.objects))
        if cycle:
            raise ValueError(f"objects.{cycle[0]}.match: parent links form a cycle ({' -> '.join(cycle)})")
        return self


def discovery_parents(objects: Mapping[str, ObjectSpec]) -> dict[str, set[str]]:
    """Object -> the objects whose records must be found before its own (the parents its links name)."""
    return {name: {m.parent for m in spec.match if m.parent} for name, spec in objects.items()}


def erase_after(objects: Mapping[str, ObjectSpec]) -> dict[str, set[str]]:
    """Object -> objects whose records must be erased before its own.

    A child (Case via ContactId) goes before its parent; a reverse-linked record (the Individual a
    Contact points at) goes after the records that point at it.
    """
    after: dict[str, set[str]] = {name: set() for name in objects}
    for name, spec in objects.items():
        for match in spec.match:
            if match.parent is None:
                continue
            if match.reverse:
                after[name].add(match.parent)
            elif match.parent != name:
                after[match.parent].add(name)
    return after
