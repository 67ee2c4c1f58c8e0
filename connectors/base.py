"""What every connector module imports: the contract types, plus the few helpers they share.

The contract itself lives in `dsr.contract` (the service layer drives connectors without
importing any of them); this module only gathers it in one place for connector authors. The HTTP
base lives in `connectors.http` and the audience base in `connectors.audience`; both build on the
helpers here, so their classes are handed out from here lazily (`__getattr__`), not imported at the top.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dsr.contract import (
    RECTIFIABLE_FIELDS,
    Connector,
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    FieldChange,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    RightsAction,
    RightsOutcome,
    RightsReceipt,
    Subject,
)
from dsr.net import is_loopback

if TYPE_CHECKING:
    from connectors.audience import AudienceConnector
    from connectors.http import HttpConnector, HttpFailure

__all__ = [
    "AudienceConnector",
    "Connector",
    "HttpConnector",
    "HttpFailure",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorInfo",
    "DataCategory",
    "ErasureAction",
    "FieldChange",
    "RightsAction",
    "RightsOutcome",
    "RightsReceipt",
    "ErasureDecision",
    "Receipt",
    "Record",
    "RecordOutcome",
    "RecordRef",
    "Subject",
    "chunks",
    "RateLimitSpec",
    "describe_validation_error",
    "env_secret",
    "is_loopback",
    "json_friendly",
    "origin_problem",
    "origin_setting_problem",
    "outcome_for",
    "receipt_id",
    "resolve_origin",
    "subject_email",
    "topological_order",
    "unique_decisions",
    "validate_settings",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Vendor client libraries log request URLs and bodies at DEBUG, and ours carry the subject's
# address (a SOQL or SuiteQL filter, a search URL). Logs must never hold personal data, so these
# loggers are held at INFO whatever the root level is; a connector logs what it does itself,
# with identity hashes only.
CHATTY_LOGGERS = ("urllib3", "requests_oauthlib", "oauthlib", "simple_salesforce", "hubspot", "requests")
for _name in CHATTY_LOGGERS:
    logging.getLogger(_name).setLevel(logging.INFO)


class ConnectorConfigError(ConnectorError, ValueError):
    """A system's settings are wrong; the message starts with the config path at fault.

    A `ValueError` too, so config loaders that catch `ValueError` see it as bad config.
    """


def json_friendly(value: Any) -> Any:
    """A field value as JSON can carry it: dates as ISO strings, decimals as strings (no float rounding).

    Args:
        value: a value as a database driver or vendor client returns it.

    Returns:
        `None`, a `str`, `int`, `float` or `bool`.
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, UUID):
        return str(value)
    return str(value)


# --- helpers every connector shares ------------------------------------------------------------


def subject_email(subject: Subject) -> str:
    """The subject's address, as matched on.

    The contract hands connectors a normalised address; normalising again costs nothing and guards
    the one case that would be a disaster: an empty identity matching every record without one.
    """
    email = subject.email.strip().lower()
    if not email:
        raise ConnectorError("subject has no e-mail address: refusing to match on an empty identity")
    return email


def outcome_for(decision: ErasureDecision, *, done: bool, **extra: Any) -> RecordOutcome:
    """The outcome of carrying out `decision`, carrying its basis and retention end forward."""
    outcome = RecordOutcome(ref=decision.ref, action=decision.action, done=done, basis=decision.basis,
                            retain_until=decision.retain_until)
    return replace(outcome, **extra) if extra else outcome


def unique_decisions(decisions: Sequence[ErasureDecision], outcomes: dict[str, RecordOutcome]) -> list[ErasureDecision]:
    """One decision per record; a record with conflicting decisions is refused (recorded in
    `outcomes` as not done), not guessed at."""
    by_key: dict[str, list[ErasureDecision]] = {}
    for decision in decisions:
        by_key.setdefault(decision.ref.key, []).append(decision)
    unique = []
    for key, group in by_key.items():
        if any(d != group[0] for d in group[1:]):
            outcomes[key] = outcome_for(group[0], done=False, error="conflicting decisions for one record")
        else:
            unique.append(group[0])
    return unique


def receipt_id(prefix: str, outcomes: Sequence[RecordOutcome | RightsOutcome]) -> str:
    """The same outcomes give the same id, so a re-run's receipt is recognisably the same erasure."""
    lines = sorted(f"{o.ref.key}\t{o.action.value}" for o in outcomes)
    return f"{prefix}:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def check_rectifiable(system: str, changes: Mapping[str, str]) -> None:
    """Refuse a rectification naming a field outside the contract's canonical names."""
    unknown = sorted(name for name in changes if name not in RECTIFIABLE_FIELDS)
    if unknown:
        raise ConnectorError(f"systems.{system}: rectify: unknown field(s) {', '.join(unknown)} (rectifiable: "
                             f"{', '.join(RECTIFIABLE_FIELDS)})")


def as_text(value: Any) -> str | None:
    """A vendor's field value as text, empty as None (vendors leave empty fields out or send "")."""
    return None if value is None or value == "" else str(value)


def same_text(canonical: str, current: Any, wanted: str) -> bool:
    """Whether a field already holds the rectified value (e-mail addresses compare without case)."""
    have, want = as_text(current), (wanted or None)
    if have is None or want is None:
        return have == want
    return have.strip().lower() == want.strip().lower() if canonical == "email" else have == want


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of at most `size` (a vendor's batch limit)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def topological_order(
    names: Sequence[str] | Mapping[str, Any], parents: Mapping[str, set[str]]
) -> tuple[list[str], list[str]]:
    """Order names so every name comes after its parents.

    Returns:
        The order, and an empty list; or a partial order and the cycle found (``a -> b -> a``).
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str]:
        if state.get(name) == "done":
            return []
        if state.get(name) == "visiting":
            return [*path[path.index(name) :], name]
        state[name] = "visiting"
        for parent in sorted(parents.get(name, ())):
            cycle = visit(parent, [*path, name])
            if cycle:
                return cycle
        state[name] = "done"
        order.append(name)
        return []

    for name in names:
        cycle = visit(name, [])
        if cycle:
            return order, cycle
    return order, []


class RateLimitSpec(BaseModel):
    """At most `calls` in any `period_seconds` (a vendor's limit, as a connector setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calls: int = Field(ge=1)
    period_seconds: float = Field(gt=0)


def env_secret(where: str, variable: str) -> str:
    """A secret from the environment variable a setting names; the error names the setting and the
    variable, never a value."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConnectorConfigError(f"{where}: environment variable {variable} is not set or empty")
    return value


def describe_validation_error(base: str, exc: ValidationError) -> str:
    """A settings error as `systems.<name>.settings.<path>: message` (never the value itself).

    Our validators raise ValueError("relative.path: message"), so their text is appended to the
    path with a dot; pydantic's own errors get ": message".
    """
    messages = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join([base, *(str(part) for part in error["loc"])])
        cause = (error.get("ctx") or {}).get("error")
        if error["type"] == "value_error" and cause is not None:
            messages.append(f"{where}.{cause}")
        else:
            messages.append(f"{where}: {error['msg']}")
    return "; ".join(messages)


def validate_settings(model: type[M], system: str, settings: Mapping[str, Any], *,
                      describe: Callable[[str, ValidationError], str] = describe_validation_error) -> M:
    """A system's settings, validated by its connector's `model`.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``
            (`from None`: pydantic's own text may echo input values, and a value may be a secret).
    """
    raw = dict(settings) if isinstance(settings, Mapping) else settings
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConnectorConfigError(describe(f"systems.{system}.settings", exc)) from None


# --- endpoints ---------------------------------------------------------------------------------------

LOOPBACK_HOSTS = "(127.0.0.1, ::1, localhost)"


def origin_problem(url: str, *, https_only: bool = False, loopback_only: bool = False) -> str | None:
    """Why `url` is not a bare API origin (``scheme://host[:port]``), or None.

    Args:
        https_only: a vendor's production endpoint: https and a host, nothing else.
        loopback_only: a sandbox override: any scheme, but only on this machine. Otherwise plain
            http is still allowed on loopback only (the sandboxes), never across a network.
    """
    parts = urlsplit(url)
    extra = parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment
    if https_only:
        if parts.scheme != "https" or not parts.hostname:
            return "not an https:// URL"
        return "give https://host only (no credentials, path or query)" if extra else None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    if extra:
        return "give scheme, host and port only (no credentials, path or query)"
    if loopback_only and not is_loopback(parts.hostname):
        return f"overrides are for loopback sandboxes only {LOOPBACK_HOSTS}"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"plain http is for loopback sandboxes only {LOOPBACK_HOSTS}"
    return None


def origin_setting_problem(value: str | None, env: str | None, *, key: str = "base_url",
                           check: Callable[[str], str | None] = origin_problem) -> str | None:
    """For a settings model: why `key` / `key_env` are wrong (both given, or `key` fails `check`),
    as ``"<field>: <why>"``, or None."""
    if value is not None and env is not None:
        return f"{key}_env: give either {key} or {key}_env, not both"
    problem = check(value) if value is not None else None
    return f"{key}: {problem}" if problem else None


def resolve_origin(where: str, base_url: str | None, base_url_env: str | None, default: str, *,
                   key: str = "base_url", check: Callable[[str], str | None] = origin_problem) -> str:
    """The URL a connector calls: `base_url` as the settings give it (their model checked it), else
    the one in the environment variable `base_url_env` names (checked here with `check`, as it is
    read when the connector is built), else the vendor's own. `key` names the setting in errors."""
    if base_url is not None:
        return base_url.rstrip("/")
    if base_url_env is None:
        return default
    url = os.environ.get(base_url_env, "").strip()
    if not url:
        raise ConnectorConfigError(f"{where}.{key}_env: environment variable {base_url_env} is not set or empty")
    problem = check(url)
    if problem:
        raise ConnectorConfigError(f"{where}.{key}_env: environment variable {base_url_env}: {problem}")
    return url.rstrip("/")


_LATER = {"HttpConnector": "connectors.http", "HttpFailure": "connectors.http",
          "AudienceConnector": "connectors.audience"}


def __getattr__(name: str) -> Any:
    """`HttpConnector`, `HttpFailure`, `AudienceConnector` from their modules, which import this one."""
    module = _LATER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
