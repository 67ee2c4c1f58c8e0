"""The data map (`systems.yaml`) and the policy (`policy.yaml`), validated when loaded.

Every error names the file and the path inside it, e.g.
`config/policy.yaml: tax_retention.NL.years: Input should be greater than 0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsr.adapters.mail import ChannelsConfig, SmtpConfig
from dsr.contract import DataCategory, ErasureAction
from dsr.deadlines import DeadlineRules, Regime
from dsr.escalation import Thresholds
from dsr.models import RequestInputError, RequestType


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SystemConfig(_Strict):
    """One system of the data map. `settings` belongs to its connector, which validates it."""

    kind: str
    title: str
    # What the subject reads (the package summary): the privacy policy's name for the system and
    # for each kind of record in it, instead of internal keys (`crm`, `cashSale`).
    display_name: str | None = None
    object_names: dict[str, str] = Field(default_factory=dict)
    owner: str = "privacy-office"
    enabled: bool = True
    request_types: tuple[RequestType, ...] = (RequestType.ACCESS, RequestType.PORTABILITY, RequestType.ERASURE)
    # Manual tasks in this system: who does them (default: the owner), and how many days before
    # the request's deadline they are due, so the privacy office has time to answer.
    assignee: str | None = None
    task_lead_days: Annotated[int, Field(ge=0, le=60)] = 5
    settings: dict[str, Any] = Field(default_factory=dict)


class DataMap(_Strict):
    version: Literal[1] = 1
    systems: dict[str, SystemConfig]

    @field_validator("systems")
    @classmethod
    def _names(cls, systems: dict[str, SystemConfig]) -> dict[str, SystemConfig]:
        for name in systems:
            if not name.replace("_", "").replace("-", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"system name {name!r} must be letters, digits, '-' or '_'")
        return systems

    def enabled(self) -> dict[str, SystemConfig]:
        return {name: s for name, s in self.systems.items() if s.enabled}

    def display_names(self) -> dict[str, str]:
        """`system` and `system/object` -> the name the subject reads (only those the data map gives)."""
        names: dict[str, str] = {}
        for system, config in self.systems.items():
            if config.display_name:
                names[system] = config.display_name
            names.update({f"{system}/{obj}": name for obj, name in config.object_names.items()})
        return names


class TaxRetention(_Strict):
    years: Annotated[int, Field(gt=0, le=30)]
    starts: Literal["end_of_fiscal_year", "start_of_next_fiscal_year"] = "end_of_fiscal_year"
    source: str


class RegimePolicy(_Strict):
    tax_jurisdiction: str
    legal_obligation_basis: str
    # The rights (request types) this regime gives; a request of another type is refused at the door.
    rights: tuple[RequestType, ...] = tuple(RequestType)


class ErasureRule(_Strict):
    """Records with any of `categories` get `action`; `retention` names the clock that keeps them."""

    categories: tuple[DataCategory, ...]
    action: ErasureAction
    retention: Literal["tax"] | None = None

    @model_validator(mode="after")
    def _retention_needed(self) -> ErasureRule:
        if self.action in (ErasureAction.ANONYMISE, ErasureAction.RETAIN) and self.retention is None:
            raise ValueError("an anonymise or retain rule needs a retention clock (e.g. retention: tax)")
        return self


class ErasurePolicy(_Strict):
    default: ErasureAction = ErasureAction.DELETE
    rules: tuple[ErasureRule, ...] = ()


class DeadlinePolicy(_Strict):
    gdpr_pause_for_id: bool = True
    gdpr_pause_for_clarification: bool = True
    lgpd_roll_to_business_day: bool = True
    pipeda_roll_sunday_and_holiday: bool = True

    def rules(self) -> DeadlineRules:
        return DeadlineRules(**self.model_dump())


class EscalationPolicy(_Strict):
    """When the deadline sweep warns and escalates, and through which channels."""

    owner: str = "privacy-office"
    warn_days_before: tuple[Annotated[int, Field(gt=0)], ...] = (7, 2)
    acknowledgement_warn_days_before: tuple[Annotated[int, Field(gt=0)], ...] = (2,)
    extension_warn_days_before: Annotated[int, Field(ge=0)] = 7
    channels: ChannelsConfig = ChannelsConfig()

    def thresholds(self) -> Thresholds:
        return Thresholds(self.warn_days_before, self.acknowledgement_warn_days_before,
                          self.extension_warn_days_before)


class RetentionRule(_Strict):
    """How long one data category is kept: months after the record's retention date, or the
    tax table (counted from the end of the fiscal year the record belongs to)."""

    keep_months: Annotated[int, Field(gt=0, le=600)] | None = None
    tax: bool = False
    note: str = ""

    @model_validator(mode="after")
    def _one_clock(self) -> RetentionRule:
        if (self.keep_months is None) == (not self.tax):
            raise ValueError("set exactly one of keep_months or tax: true")
        return self


class RetentionPolicy(_Strict):
    """The nightly purge: per-category rules, the blast-radius guard, the tax jurisdiction."""

    timezone: str = "Europe/Amsterdam"
    max_share: Annotated[float, Field(gt=0, le=1)] = 0.05
    max_count: Annotated[int, Field(gt=0)] = 10_000
    # Whose tax table keeps financial records: a jurisdiction, or the longest of them all (the
    # group's records serve several entities, so the safe default keeps them the longest).
    tax_jurisdiction: str = "longest"
    rules: dict[DataCategory, RetentionRule] = Field(default_factory=dict)


class IntakePolicy(_Strict):
    """The public OpenDSR intake (`/opendsr/...`): codes by e-mail, duplicates, callbacks."""

    email: SmtpConfig | None = None  # where codes are sent from (recipients unused: codes go to the subject)
    duplicate_window_days: Annotated[int, Field(gt=0, le=365)] = 7
    callback_url_prefixes: tuple[str, ...] = ()  # allowed status_callback_urls (empty: public https only)
    # Guessing budget and code caps (dsr.intake.CodeLimits; docs/reliability.md "Public intake").
    failures_per_request: Annotated[int, Field(ge=1, le=20)] = 5  # wrong codes over all codes; then cancelled
    codes_per_request: Annotated[int, Field(ge=1, le=20)] = 5
    codes_per_request_per_day: Annotated[int, Field(ge=1, le=20)] = 3
    codes_per_identity_per_day: Annotated[int, Field(ge=1, le=50)] = 5  # per address, whatever the request ids


class SubjectSummary(_Strict):
    """Plain-language text for the subject package, drawn from the privacy policy."""

    controller: str
    purposes: tuple[str, ...]
    categories: dict[str, str]
    recipients: tuple[str, ...]
    retention: tuple[str, ...]
    rights: tuple[str, ...]
    contact: str


class Policy(_Strict):
    version: Literal[1] = 1
    fiscal_year_end: Annotated[str, Field(pattern=r"^\d{2}-\d{2}$")] = "12-31"
    tax_retention: dict[str, TaxRetention]
    regimes: dict[Regime, RegimePolicy]
    erasure: ErasurePolicy = ErasurePolicy()
    deadlines: DeadlinePolicy = DeadlinePolicy()
    escalation: EscalationPolicy = EscalationPolicy()
    retention: RetentionPolicy = RetentionPolicy()
    intake: IntakePolicy = IntakePolicy()
    subject_summary: SubjectSummary

    def check_right(self, regime: Regime | str, type: RequestType | str) -> None:
        """Refuse (field `type`) a request type the regime does not give a right to."""
        offered = self.regimes[Regime(regime)].rights
        if RequestType(type) not in offered:
            raise RequestInputError("type", f"{Regime(regime).value} gives no {RequestType(type).value} right; "
                                    f"one of {', '.join(t.value for t in offered)}")

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        missing = [r.value for r in Regime if r not in self.regimes]
        if missing:
            raise ValueError(f"regimes: no policy for {', '.join(missing)}")
        if self.retention.tax_jurisdiction not in ("longest", *self.tax_retention):
            raise ValueError(f"retention.tax_jurisdiction: {self.retention.tax_jurisdiction!r} has no tax_retention entry")
        for regime, rp in self.regimes.items():
            if rp.tax_jurisdiction not in self.tax_retention:
                raise ValueError(
                    f"regimes.{regime.value}.tax_jurisdiction: {rp.tax_jurisdiction!r} has no tax_retention entry")
        return self


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (set DSR_CONFIG_DIR, or DSR_SYSTEMS_FILE / DSR_POLICY_FILE)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def _validate(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}{more}") from None


def load_data_map(path: Path) -> DataMap:
    data_map: DataMap = _validate(DataMap, _load_yaml(path), path)
    return data_map


def load_policy(path: Path) -> Policy:
    policy: Policy = _validate(Policy, _load_yaml(path), path)
    return policy
