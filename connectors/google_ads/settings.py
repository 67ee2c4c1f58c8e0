"""The `settings:` block of a `google_ads` system: mode, accounts and lists, OAuth client, pacing."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import origin_setting_problem
from connectors.http import ENV_VAR_NAME, HttpSettings, no_inline_secrets
from dsr.contract import DataCategory

# The oldest version Google still serves: google-ads 34.0.0 ships v23..v26 (README, "Google Ads API versions").
MIN_API_VERSION = 23
_TOKEN_URL = re.compile(r"^https?://[^\s@]+$")


def token_url_problem(url: str) -> str | None:
    """Google's token endpoint has a path, so it is checked as a URL, not as an origin."""
    return None if _TOKEN_URL.match(url) else "must be an http(s) URL without credentials"


class OAuthSpec(BaseModel):
    """Google OAuth 2.0: a refresh token exchanged for access tokens at `token_url` (or `token_url_env`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: str | None = Field(default=None, min_length=1)
    token_url_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    client_id_env: str = Field(pattern=ENV_VAR_NAME)
    client_secret_env: str = Field(pattern=ENV_VAR_NAME)
    refresh_token_env: str = Field(pattern=ENV_VAR_NAME)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        return no_inline_secrets(data, ("client_id", "client_secret", "refresh_token", "access_token"),
                                 "name its environment variable with <name>_env")

    @model_validator(mode="after")
    def _check(self) -> OAuthSpec:
        problem = origin_setting_problem(self.token_url, self.token_url_env, key="token_url", check=token_url_problem)
        if problem:
            raise ValueError(problem)
        return self


class CustomerSpec(BaseModel):
    """One Google Ads client account and the Customer Match lists to remove the subject from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    user_lists: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CustomerSpec:
        if not re.fullmatch(r"\d{10}", self.customer_id):
            raise ValueError("customer_id: must be the 10-digit customer id, digits only (no dashes)")
        for index, item in enumerate(self.user_lists):
            if not re.fullmatch(r"\d{1,20}", item):
                raise ValueError(f"user_lists.{index}: must be the list's numeric id")
        if len(set(self.user_lists)) != len(self.user_lists):
            raise ValueError("user_lists: names a user list twice")
        return self


class GoogleAdsSettings(HttpSettings):
    """The `settings:` block of a `google_ads` system in `systems.yaml` (pacing and origin: `HttpSettings`)."""

    SECRET_KEYS: ClassVar[tuple[str, ...]] = ("developer_token", "client_secret", "refresh_token", "access_token",
                                              "token", "password")
    SECRET_HINT: ClassVar[str] = "name its environment variable with developer_token_env or under oauth"

    mode: Literal["offline_user_data_job", "data_manager"] = "offline_user_data_job"
    api_version: str | None = None  # the Ads API's, e.g. "v26"; required in offline_user_data_job mode
    developer_token_env: str | None = Field(default=None, pattern=ENV_VAR_NAME)
    login_customer_id: str | None = None
    oauth: OAuthSpec
    customers: tuple[CustomerSpec, ...] = Field(min_length=1)
    categories: tuple[DataCategory, ...] = Field(default=(DataCategory.MARKETING,), min_length=1)
    poll_seconds: float = Field(default=5.0, gt=0)
    poll_timeout_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _check_google(self) -> GoogleAdsSettings:
        if self.api_version is not None:
            match = re.fullmatch(r"v(\d+)", self.api_version)
            if match is None or int(match.group(1)) < MIN_API_VERSION:
                raise ValueError(f"api_version: must be a Google Ads API version v{MIN_API_VERSION} or later, e.g. v26")
        if self.login_customer_id is not None and not re.fullmatch(r"\d{10}", self.login_customer_id):
            raise ValueError("login_customer_id: must be the manager's 10-digit customer id, digits only (no dashes)")
        if self.mode == "offline_user_data_job":
            if self.api_version is None:
                raise ValueError("api_version: required in mode offline_user_data_job (e.g. v26)")
            if self.developer_token_env is None:
                raise ValueError("developer_token_env: required in mode offline_user_data_job (the Ads API's "
                                 "developer-token header)")
        seen: set[str] = set()
        for index, customer in enumerate(self.customers):
            if customer.customer_id in seen:
                raise ValueError(f"customers.{index}.customer_id: names a customer twice")
            seen.add(customer.customer_id)
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories: names a category twice")
        if self.poll_timeout_seconds < self.poll_seconds:
            raise ValueError("poll_timeout_seconds: must be at least poll_seconds")
        return self

    def resources(self) -> list[tuple[str, str, str]]:
        """(resource name, customer id, list id) of every configured list, in configuration order."""
        return [(f"customers/{c.customer_id}/userLists/{lid}", c.customer_id, lid)
                for c in self.customers for lid in c.user_lists]
