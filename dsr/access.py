"""Who may do what: API tokens per role, stored only as hashes, compared in constant time.

Roles (DESIGN.md):
- officer: submit, verify, extend, cancel; read everything; download subject packages.
- auditor: list requests, read timelines, download and verify evidence bundles; never personal data.
- subject: their own request's status and package, with a single-use, expiring token.

Officer and auditor tokens live in `config/access.yaml` as SHA-256 hashes (`dsr token create`
prints a new token once, and the line to add). Subject tokens are issued per request and
recorded in the ledger as hashes; downloading the package uses one up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dsr.config import ConfigError

TOKEN_BYTES = 32


class Role(StrEnum):
    OFFICER = "officer"
    AUDITOR = "auditor"
    SUBJECT = "subject"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a named officer or auditor token, or a subject token for one request."""

    name: str
    role: Role
    request_id: str | None = None  # subjects only


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """SHA-256 is enough here: tokens are 256 random bits, not passwords a person chose."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")]
    role: Role
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class AccessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenEntry, ...] = ()

    def authenticate(self, token: str) -> Principal | None:
        """The officer/auditor behind a token, or None. Every entry is compared, in constant time,
        so the time taken says nothing about which entry (if any) nearly matched."""
        digest = token_hash(token)
        found: TokenEntry | None = None
        for entry in self.tokens:
            if same_hash(entry.sha256, digest) and entry.role != Role.SUBJECT:
                found = entry
        return Principal(found.name, found.role) if found else None


def load_access(path: Path) -> AccessConfig:
    if not path.is_file():
        return AccessConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return AccessConfig.model_validate(data)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
