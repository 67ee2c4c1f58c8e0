"""Runtime settings, from environment variables (prefix DSR_) with embedded defaults.

The defaults are the embedded mode: everything under ./var/ of the working directory, SQLite
ledger, local bundles, keys generated on first use. Production points DSR_DATABASE_URL at
PostgreSQL and the key paths at mounted secrets.

The data map and policy come from ./config/ when it holds them (a checkout, or a directory made
by `dsr init`), else from the defaults shipped inside the package (`dsr/defaults/`, read through
importlib.resources), so an installed wheel works from any directory.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dsr.files import create_exclusive

#: How a process treats a ledger whose schema is older than its code (`dsr db upgrade`).
SchemaUpgrade = Literal["auto", "release"]


class HomeMissing(ValueError):
    """No state directory where one is expected; the message names the path and how to choose."""


def packaged_default(name: str) -> Path:
    """A default shipped as package data (systems.yaml, policy.yaml, demo/systems.yaml, prefect.yaml)."""
    return Path(str(files("dsr").joinpath("defaults", *name.split("/"))))


class Settings(BaseSettings):
    """Where things live. Every field can be set as DSR_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="DSR_", extra="ignore")

    home: Path = Field(default=Path("var"), description="Working directory for embedded mode state.")
    config_dir: Path = Field(default=Path("config"), description="Holds systems.yaml and policy.yaml.")
    systems_file: Path | None = Field(default=None, description="The data map; default config_dir/systems.yaml.")
    policy_file: Path | None = Field(default=None, description="The policy; default config_dir/policy.yaml.")
    access_file: Path | None = Field(default=None, description="API tokens (hashes); default config_dir/access.yaml.")
    database_url: str | None = Field(default=None, description="Ledger URL; default SQLite under home.")
    bundle_dir: Path | None = Field(default=None, description="Evidence bundles; default home/bundles.")
    package_dir: Path | None = Field(default=None, description="Subject packages; default home/packages.")
    signing_key_file: Path | None = Field(default=None, description="Ed25519 key; default home/keys/signing.key.")
    identity_key: SecretStr | None = Field(
        default=None, description="HMAC key for identity hashes; default a key file generated under home/keys."
    )
    actor: str = Field(default="privacy-office", description="Who the CLI records as the actor of its events.")
    callback_key: SecretStr | None = Field(
        default=None, description="HMAC key for OpenDSR status callbacks; default derived from the identity key.")
    # 64 KiB holds any OpenDSR body or form many times over; larger ones are refused (413) unread.
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024,
                                    description="Largest request body the HTTP API accepts, in bytes.")

    # The public OpenDSR door (doors.api.intake, dsr.opendsr). Forwarded headers (X-Forwarded-For) are
    # believed only from these proxies (comma-separated IPs or networks); none by default, so a caller
    # cannot pick the client address the rate limits count.
    trusted_proxies: str = Field(default="", description="Proxies whose X-Forwarded-For is believed (IPs/CIDRs).")
    opendsr_domain: str = Field(default="localhost", description="X-OpenDSR-Processor-Domain; the certificate's name.")
    opendsr_base_url: str | None = Field(
        default=None, description="Public URL of the /opendsr door (certificate and results links); default: "
                                  "the URL the request came in on.")
    opendsr_certificate_file: Path | None = Field(
        default=None, description="Processor certificate (PEM, CA-issued in production); default a self-signed "
                                  "one generated under home/keys.")
    opendsr_key_file: Path | None = Field(default=None, description="The certificate's private key (PEM).")
    opendsr_controllers_file: Path | None = Field(
        default=None, description="Controllers whose signed requests are accepted (YAML: id -> certificate_file "
                                  "or certificate_url); default config_dir/opendsr_controllers.yaml if present.")
    opendsr_require_signature: bool = Field(
        default=False, description="Refuse OpenDSR requests that carry no valid controller signature.")
    opendsr_calls_per_minute: int | None = Field(
        default=None, gt=0, description="Calls per client address a minute on each OpenDSR route family (unsigned "
                                        "callers); default 10 submissions, 20 code attempts and cancellations, "
                                        "60 reads. Raise it only for a trusted load (a test run).")

    # Evidence and package storage (dsr.adapters.storage): local directories unless DSR_STORAGE_BACKEND=s3.
    storage_backend: str | None = None
    storage_s3_bundle_bucket: str | None = None
    storage_s3_package_bucket: str | None = None
    storage_s3_endpoint_url: str | None = None
    storage_s3_region: str | None = None
    storage_object_lock_mode: str | None = None
    storage_bundle_retention_days: int | None = None
    storage_package_retention_days: int | None = None
    storage_package_link_seconds: int | None = None
    storage_sse: str | None = None
    storage_kms_key_id: str | None = None

    # A fleet upgrades the ledger's schema once, as a release step (`dsr db upgrade`), and its other
    # processes refuse an older schema ("release"); embedded mode upgrades on open ("auto").
    schema_upgrade: SchemaUpgrade = Field(
        default="auto", description="auto: upgrade the ledger schema on open (under a lock); release: refuse "
                                    "an older schema until `dsr db upgrade` has run.")
    log_format: Literal["text", "json"] = Field(default="text", description="text, or json: one object a line.")

    @property
    def ledger_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'ledger.sqlite').as_posix()}"

    def _config_file(self, name: str) -> Path:
        """config_dir/name, or the packaged default when the config directory was not chosen and lacks it."""
        chosen = self.config_dir / name
        if "config_dir" in self.model_fields_set or chosen.is_file():
            return chosen
        return packaged_default(name)

    @property
    def systems_path(self) -> Path:
        return self.systems_file or self._config_file("systems.yaml")

    @property
    def policy_path(self) -> Path:
        return self.policy_file or self._config_file("policy.yaml")

    @property
    def access_path(self) -> Path:
        """The token file: config_dir/access.yaml, or beside the state when there is no config directory
        (never inside the installed package: `dsr token create --write` adds to it)."""
        if self.access_file is not None:
            return self.access_file
        if "config_dir" in self.model_fields_set or self.config_dir.is_dir():
            return self.config_dir / "access.yaml"
        return self.home / "access.yaml"

    def require_home(self) -> None:
        """Refuse to create state in a directory nobody chose: the working directory's ./var/ is made only
        by `dsr init` or `dsr demo`, or when DSR_HOME names it (then it is created on first use)."""
        if "home" in self.model_fields_set or self.home.is_dir():
            return
        raise HomeMissing(
            f"DSR_HOME: no state directory at {self.home.resolve()} (none is created here unasked); "
            "run `dsr init DIR` and work in DIR, or set DSR_HOME to the directory to use")

    @property
    def bundles_path(self) -> Path:
        return self.bundle_dir or self.home / "bundles"

    @property
    def packages_path(self) -> Path:
        return self.package_dir or self.home / "packages"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.home / "keys" / "signing.key"

    @cached_property
    def identity_hmac_key(self) -> bytes:
        """The key behind every identity hash; generated once (0600) in embedded mode."""
        if self.identity_key is not None:
            return self.identity_key.get_secret_value().encode("utf-8")
        path = self.home / "keys" / "identity.key"
        if not path.exists():
            create_exclusive(path, secrets.token_hex(32).encode("ascii"), 0o600)  # a racing twin keeps its own
        return path.read_text().strip().encode("utf-8")
