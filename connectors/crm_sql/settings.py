"""The `settings:` block of a `crm_sql` system: where the database is, and the data map.

Validators raise ValueError("relative.path: message"); `validate_settings` puts the system's config
path in front, so every error names the field at fault without echoing its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import ArgumentError

from connectors.base import DataCategory, topological_order, validate_settings
from dsr.contract import RECTIFIABLE_FIELDS

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class MatchSpec(BaseModel):
    """How an object's rows tie to a person: one column, holding the e-mail or a parent's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    parent: str | None = Field(default=None, min_length=1)


class ObjectSpec(BaseModel):
    """One table of the data map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(min_length=1)
    key: str = Field(min_length=1)
    match: MatchSpec
    categories: tuple[DataCategory, ...] = Field(min_length=1)
    anchor_date: str | None = Field(default=None, min_length=1)
    # Retention: the column(s) whose date says how old a row is; the first that is not null
    # counts (e.g. [last_login_at, created_at]: the last login, else the creation).
    retention_date: tuple[str, ...] = ()
    anonymise: dict[str, Any] | None = None
    # Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> this table's column.
    rectifiable: dict[str, str] = Field(default_factory=dict)
    # Marketing suppression: column -> the value that means "no marketing" (restore puts the
    # previous value back, so only what the suppression changed is undone).
    marketing_flags: dict[str, str | bool | int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_rights(self) -> ObjectSpec:
        for canonical in self.rectifiable:
            if canonical not in RECTIFIABLE_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a rectifiable field (one of {', '.join(RECTIFIABLE_FIELDS)})")
        if self.key in self.rectifiable.values() or self.key in self.marketing_flags:
            raise ValueError(f"rectifiable: the key column {self.key!r} cannot be changed")
        return self

    @model_validator(mode="after")
    def _check_anonymise(self) -> ObjectSpec:
        if self.anonymise is None:
            return self
        if not self.anonymise:
            raise ValueError("anonymise: name at least one field, or leave anonymise out")
        if self.key in self.anonymise:
            raise ValueError(f"anonymise.{self.key}: the key column cannot be replaced")
        for field, value in self.anonymise.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ValueError(f"anonymise.{field}: a replacement is text, a number, true/false or null")
        if self.match.column not in self.anonymise:
            # Otherwise an "anonymised" row would still be found as the person's.
            raise ValueError(
                f"anonymise: must replace the match column {self.match.column!r} (the link to the person)"
            )
        return self


class CrmSqlSettings(BaseModel):
    """The `settings:` block of a `crm_sql` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, min_length=1)
    url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    objects: dict[str, ObjectSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CrmSqlSettings:
        if self.url is not None and self.url_env is not None:
            raise ValueError("url_env: give either url or url_env, not both")
        if self.url is None and self.url_env is None:
            raise ValueError("url: give url, or url_env naming the environment variable that holds it")
        if self.url is not None:
            _check_inline_url(self.url)
        for name, spec in self.objects.items():
            parent = spec.match.parent
            if parent is not None and parent not in self.objects:
                raise ValueError(f"objects.{name}.match.parent: unknown object {parent!r}")
        _order, cycle = topological_order(self.objects, config_parents(self.objects))
        if cycle:
            raise ValueError(
                f"objects.{cycle[0]}.match.parent: parent links form a cycle ({' -> '.join(cycle)})"
            )
        return self


def _check_inline_url(url: str) -> None:
    try:
        parsed = sa.engine.make_url(url)
    except ArgumentError:
        raise ValueError("url: not a valid SQLAlchemy database URL") from None  # its message repeats the URL
    if parsed.password is not None:
        raise ValueError("url: holds a password; put the URL in an environment variable named by url_env")


def parse_settings(system: str, settings: Mapping[str, Any]) -> CrmSqlSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(CrmSqlSettings, system, settings)


def config_parents(objects: Mapping[str, ObjectSpec]) -> dict[str, set[str]]:
    """Object name -> the parent its `match.parent` names (an empty set for a row matched by e-mail)."""
    return {name: {spec.match.parent} if spec.match.parent else set() for name, spec in objects.items()}
