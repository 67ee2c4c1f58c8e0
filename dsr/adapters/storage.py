"""Where sealed evidence bundles and subject packages are kept: a local directory, or S3.

Two kinds of object, two very different lives:

- **Evidence bundles** (`bundles/<request_id>/evidence-v<N>.zip`) are written once and kept for
  years. Locally `dsr.bundle.write_bundle` publishes them without ever replacing a file, with a
  `<file>.sha256` sidecar (`sha256sum -c` format) beside each. On S3 each one is written with
  Object Lock (COMPLIANCE by default, retained at least 24 months: CCPA, 11 CCR 7101), server-side
  encryption, an S3-verified SHA-256 checksum and an `x-amz-meta-sha256` of the content, and only
  if no object is at the key yet (`If-None-Match: *`). A read always takes the key's *first*
  version, the one that was sealed and is locked: a later version written over it, or a delete
  marker hiding it, changes nothing. Every read hashes the content and compares it with the
  recorded hash (`IntegrityError` when they differ).
- **Subject packages** (`packages/<request_id>/package.zip`) hold personal data, so they are kept
  briefly: a lifecycle rule expires them (30 days by default), they are never under Object Lock,
  and they are handed out through an expiring presigned link (5 days by default) or, in embedded
  mode, a local path. Uploads stream from disk (multipart above 8 MiB).

The S3 client (boto3) is imported only when the S3 backend is chosen, so the local backend needs
nothing beyond the standard library. Error messages name the bucket and key, never content.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dsr.bundle import BundleError, bundle_path, write_bundle
from dsr.files import create_exclusive, fsync_directory

log = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundles/"
PACKAGE_PREFIX = "packages/"
PACKAGE_NAME = "package.zip"
SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256
PACKAGE_LIFECYCLE_RULE_ID = "dsr-subject-packages-expire"

MIN_BUNDLE_RETENTION_DAYS = 730  # CCPA regulations, 11 CCR 7101: records kept at least 24 months
MIN_BUNDLE_RETENTION_MONTHS = 24
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live

_CHUNK = 1 << 20
_MULTIPART_THRESHOLD = 8 * 1024 * 1024
_MULTIPART_CHUNKSIZE = 8 * 1024 * 1024
_EVIDENCE_FILE = re.compile(r"^evidence-v([1-9][0-9]*)\.zip$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --- errors and results -------------------------------------------------------------------------


class StorageError(Exception):
    """Storage refused or failed; the message names the bucket/key or path, never the content."""


class IntegrityError(StorageError):
    """The content read back is not what was stored: its SHA-256 differs from the recorded one."""


class ObjectNotFound(StorageError):
    """No such bundle version or package."""


class BundleConflict(StorageError):
    """A different bundle is already stored at that version; it is never replaced."""


@dataclass(frozen=True)
class StoredObject:
    """One stored bundle or package.

    Attributes:
        key: `bundles/<request_id>/evidence-v<N>.zip` or `packages/<request_id>/package.zip`, the same
            on both backends.
        uri: `s3://bucket/key`, or a `file://` URI on the local backend.
        sha256: Hex SHA-256 of the content.
        size: Bytes.
        retain_until: The Object Lock retain-until date (UTC) of an S3 bundle; None for local
            objects and for packages, which are never locked.
        version_id: The S3 version id; None locally.
    """

    key: str
    uri: str
    sha256: str
    size: int
    retain_until: date | None
    version_id: str | None

    def local_path(self) -> Path | None:
        """The file behind a `file://` URI; None for S3 objects."""
        if not self.uri.startswith("file://"):
            return None
        return Path(unquote(urlparse(self.uri).path))


# --- configuration ------------------------------------------------------------------------------


class StorageConfig(BaseModel):
    """Where bundles and packages go. The lead's Settings fill it from DSR_STORAGE_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "s3"] = "local"
    local_bundle_dir: Path = Path("var/bundles")
    local_package_dir: Path = Path("var/packages")
    s3_bundle_bucket: str | None = None
    s3_package_bucket: str | None = Field(
        default=None, description="Defaults to the bundle bucket; keys are under packages/ either way."
    )
    s3_endpoint_url: str | None = Field(default=None, description="For S3-compatible servers (moto, MinIO).")
    s3_region: str = "us-east-1"
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    bundle_retention_days: int = MIN_BUNDLE_RETENTION_DAYS
    package_retention_days: int = 30
    package_link_seconds: int = 5 * 24 * 3600
    sse: Literal["AES256", "aws:kms"] = "AES256"
    kms_key_id: str | None = None

    @field_validator("bundle_retention_days")
    @classmethod
    def _at_least_24_months(cls, value: int) -> int:
        if value < MIN_BUNDLE_RETENTION_DAYS:
            raise ValueError(
                f"bundle_retention_days is {value}; evidence must be kept at least {MIN_BUNDLE_RETENTION_DAYS} "
                "days (24 months, CCPA 11 CCR 7101)"
            )
        return value

    @field_validator("package_retention_days")
    @classmethod
    def _package_days_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"package_retention_days is {value}; it must be at least 1 day")
        return value

    @field_validator("package_link_seconds")
    @classmethod
    def _presign_limit(cls, value: int) -> int:
        if not 1 <= value <= MAX_PRESIGNED_SECONDS:
            raise ValueError(
                f"package_link_seconds is {value}; a presigned link lives 1 to {MAX_PRESIGNED_SECONDS} seconds (7 days)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StorageConfig:
        if self.backend == "s3" and not self.s3_bundle_bucket:
            raise ValueError("s3_bundle_bucket is required when backend is 's3'")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id is only used with sse='aws:kms'")
        return self

    @property
    def bundle_bucket(self) -> str:
        if not self.s3_bundle_bucket:
            raise StorageError("no S3 bundle bucket configured (s3_bundle_bucket)")
        return self.s3_bundle_bucket

    @property
    def package_bucket(self) -> str:
        return self.s3_package_bucket or self.bundle_bucket

    @property
    def shared_bucket(self) -> bool:
        return self.package_bucket == self.bundle_bucket


def config_from_settings(settings: Any) -> StorageConfig:
    """A StorageConfig from a Settings-like object: `storage_<field>` attributes that are set
    (DSR_STORAGE_<FIELD> in the environment), with the local directories defaulting to the
    settings' `bundles_path` and `packages_path`."""
    values: dict[str, Any] = {}
    for name in StorageConfig.model_fields:
        value = getattr(settings, f"storage_{name}", None)
        if value is not None:
            values[name] = value
    values.setdefault("local_bundle_dir", getattr(settings, "bundles_path", Path("var/bundles")))
    values.setdefault("local_package_dir", getattr(settings, "packages_path", Path("var/packages")))
    return StorageConfig(**values)


# --- keys ---------------------------------------------------------------------------------------


def check_request_id(request_id: str) -> str:
    """Refuse a request id that could escape its directory or key prefix.

    The rules of `dsr.bundle.bundle_path` (one safe path component: letters, digits, `.`, `_`, `-`,
    starting with a letter or digit, at most 128 characters), plus no `..` anywhere. That rules out
    `../`, `/`, backslashes, `%2e%2e` and other encodings, NUL, and the empty string.
    """
    if not isinstance(request_id, str):
        raise StorageError(f"request id must be a string, not {type(request_id).__name__}")
    try:
        bundle_path(Path("."), request_id, 1)
    except BundleError as exc:
        raise StorageError(f"unusable request id {request_id[:80]!r}: {exc}") from None
    if ".." in request_id:
        raise StorageError(f"unusable request id {request_id[:80]!r}: '..' is not allowed in a request id")
    return request_id


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StorageError(f"bundle version must be a positive integer, not {version!r}")
    return version


def bundle_key(request_id: str, version: int) -> str:
    return f"{BUNDLE_PREFIX}{check_request_id(request_id)}/evidence-v{_check_version(version)}.zip"


def package_key(request_id: str) -> str:
    return f"{PACKAGE_PREFIX}{check_request_id(request_id)}/{PACKAGE_NAME}"


def bundle_retain_until(now: datetime, days: int) -> datetime:
    """`days` after `now`, and never less than 24 calendar months (730 days can fall a day short
    of 24 months across a 29 February)."""
    return max(now + timedelta(days=days), now + relativedelta(months=MIN_BUNDLE_RETENTION_MONTHS))


# --- the protocol -------------------------------------------------------------------------------


@runtime_checkable
class EvidenceStore(Protocol):
    def put_bundle(self, request_id: str, version: int, data: bytes) -> StoredObject: ...

    def get_bundle(self, request_id: str, version: int, *, expected_sha256: str | None = None) -> bytes: ...

    def bundle_versions(self, request_id: str) -> list[int]: ...

    def put_package(self, request_id: str, source: Path) -> StoredObject: ...

    def package_link(self, request_id: str, *, expires_in: int | None = None) -> str: ...

    def open_package(self, request_id: str) -> BinaryIO: ...

    def ensure_ready(self) -> None: ...


def open_store(config: StorageConfig) -> EvidenceStore:
    """The store the configuration names. Call `ensure_ready()` once at start-up."""
    if config.backend == "s3":
        return S3EvidenceStore(config)
    return LocalEvidenceStore(config)


# --- hashing helpers ----------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_expected(where: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected.lower():
        raise IntegrityError(f"{where}: SHA-256 of the stored content differs from the expected one")


class _VerifyingReader(io.RawIOBase):
    """Streams a body and, at its end, compares the SHA-256 of everything read with the recorded one.

    A mismatch raises IntegrityError from the read that reaches the end, so a streamed download is
    cut short instead of completing with altered content.
    """

    def __init__(self, raw: Any, expected_sha256: str | None, where: str, close: Any = None) -> None:
        super().__init__()
        self._raw = raw
        self._expected = expected_sha256
        self._where = where
        self._digest = hashlib.sha256()
        self._close = close or getattr(raw, "close", None)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._raw.read(len(view))
        if not chunk:
            self._finish()
            return 0
        view[: len(chunk)] = chunk
        self._digest.update(chunk)
        return len(chunk)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._expected is not None and self._digest.hexdigest() != self._expected:
            raise IntegrityError(f"{self._where}: SHA-256 of the content read differs from the stored one")

    def close(self) -> None:
        if not self.closed and callable(self._close):
            with contextlib.suppress(Exception):
                self._close()
        super().close()


# --- local directory ----------------------------------------------------------------------------


class LocalEvidenceStore:
    """Bundles and packages on local disk: embedded mode, tests, single-machine installs."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.bundle_dir = Path(config.local_bundle_dir)
        self.package_dir = Path(config.local_package_dir)

    def ensure_ready(self) -> None:
        for directory in (self.bundle_dir, self.package_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create storage directory {directory}: {exc.strerror or exc}") from exc

    # bundles

    def _bundle_file(self, request_id: str, version: int) -> Path:
        bundle_key(request_id, version)  # validates both
        return bundle_path(self.bundle_dir, request_id, version)

    def put_bundle(self, request_id: str, version: int, data: bytes) -> StoredObject:
        target = self._bundle_file(request_id, version)
        key = bundle_key(request_id, version)
        digest = hashlib.sha256(data).hexdigest()
        try:
            write_bundle(self.bundle_dir, data, request_id, version)
        except BundleError as exc:
            raise BundleConflict(
                f"{key} ({target}) already holds a different bundle; refusing to overwrite it"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot write {key} ({target}): {exc.strerror or exc}") from exc
        sidecar = _sidecar(target)
        line = f"{digest}  {target.name}\n".encode("ascii")
        try:
            created = create_exclusive(sidecar, line, 0o444)
        except OSError as exc:
            raise StorageError(f"cannot write {key}.sha256 ({sidecar}): {exc.strerror or exc}") from exc
        if not created:
            recorded = _read_sidecar(sidecar, key)
            if recorded != digest:
                raise IntegrityError(
                    f"{key}: the recorded SHA-256 ({sidecar.name}) does not match the bundle file; "
                    "one of them was altered"
                )
        return StoredObject(key, target.resolve().as_uri(), digest, len(data), None, None)

    def get_bundle(self, request_id: str, version: int, *, expected_sha256: str | None = None) -> bytes:
        target = self._bundle_file(request_id, version)
        key = bundle_key(request_id, version)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key}: no such bundle ({target})") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} ({target}): {exc.strerror or exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        sidecar = _sidecar(target)
        if sidecar.exists():
            if _read_sidecar(sidecar, key) != digest:
                raise IntegrityError(f"{key}: SHA-256 of {target} differs from the one recorded in {sidecar.name}")
        elif expected_sha256 is None:
            raise IntegrityError(f"{key}: no recorded SHA-256 ({sidecar.name} is missing); cannot verify {target}")
        _check_expected(key, digest, expected_sha256)
        return data

    def bundle_versions(self, request_id: str) -> list[int]:
        check_request_id(request_id)
        directory = self.bundle_dir / request_id
        if not directory.is_dir():
            return []
        versions = []
        for entry in directory.iterdir():
            match = _EVIDENCE_FILE.match(entry.name)
            if match and entry.is_file():
                versions.append(int(match.group(1)))
        return sorted(versions)

    # packages

    def _package_file(self, request_id: str) -> Path:
        return self.package_dir / check_request_id(request_id) / PACKAGE_NAME

    def put_package(self, request_id: str, source: Path) -> StoredObject:
        target = self._package_file(request_id)
        key = package_key(request_id)
        source = Path(source)
        if not source.is_file():
            raise StorageError(f"{key}: package source {source} is not a file")
        try:
            same = target.exists() and os.path.samefile(source, target)
        except OSError:
            same = False
        try:
            if same:
                digest, size = _sha256_file(target)
            else:
                digest, size = _copy_atomically(source, target)
            _replace_small(_sidecar(target), f"{digest}  {target.name}\n".encode("ascii"))
        except OSError as exc:
            raise StorageError(f"cannot store {key} ({target}): {exc.strerror or exc}") from exc
        return StoredObject(key, target.resolve().as_uri(), digest, size, None, None)

    def package_link(self, request_id: str, *, expires_in: int | None = None) -> str:
        target = self._package_file(request_id)
        if not target.is_file():
            raise ObjectNotFound(f"{package_key(request_id)}: no package stored ({target})")
        return str(target.resolve())

    def open_package(self, request_id: str) -> BinaryIO:
        target = self._package_file(request_id)
        key = package_key(request_id)
        try:
            handle = target.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key}: no package stored ({target})") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} ({target}): {exc.strerror or exc}") from exc
        sidecar = _sidecar(target)
        expected = _read_sidecar(sidecar, key) if sidecar.exists() else None
        return io.BufferedReader(_VerifyingReader(handle, expected, key), buffer_size=_CHUNK)  # type: ignore[return-value]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(sidecar: Path, key: str) -> str:
    try:
        text = sidecar.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{key}: the recorded SHA-256 ({sidecar.name}) cannot be read") from exc
    recorded = text.split()[0].lower() if text else ""
    if not _HEX64.match(recorded):
        raise IntegrityError(f"{key}: the recorded SHA-256 ({sidecar.name}) is malformed")
    return recorded


def _copy_atomically(source: Path, target: Path) -> tuple[str, int]:
    """Stream `source` into `target` (replacing it), hashing as it goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            os.fchmod(out.fileno(), 0o600)  # personal data
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return digest.hexdigest(), size


def _replace_small(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp_name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


# --- S3 -----------------------------------------------------------------------------------------


class S3EvidenceStore:
    """Bundles under S3 Object Lock, packages with a short lifecycle and presigned links.

    Credentials come from boto3's usual chain (environment, shared config, instance or task role);
    the configuration never holds them.
    """

    def __init__(self, config: StorageConfig, *, client: Any = None) -> None:
        if config.backend != "s3" or not config.s3_bundle_bucket:
            raise StorageError("S3EvidenceStore needs backend='s3' and s3_bundle_bucket")
        self.config = config
        self.bundle_bucket = config.bundle_bucket
        self.package_bucket = config.package_bucket
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StorageError(
                "the S3 storage backend needs boto3: install it (pip install 'boto3>=1.34')"
            ) from exc
        self._client_error: type[Exception] = ClientError
        self._boto_error: type[Exception] = BotoCoreError
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_THRESHOLD, multipart_chunksize=_MULTIPART_CHUNKSIZE,
            max_concurrency=4, use_threads=True,
        )
        if client is None:
            s3_options: dict[str, Any] = {}
            if config.s3_endpoint_url:
                s3_options["addressing_style"] = "path"  # S3-compatible servers on an IP or a plain host
            client = boto3.session.Session().client(
                "s3",
                region_name=config.s3_region,
                endpoint_url=config.s3_endpoint_url,
                config=Config(signature_version="s3v4", s3=s3_options,
                              retries={"mode": "standard", "max_attempts": 5},
                              connect_timeout=10, read_timeout=60),
            )
        self.client = client

    # errors

    def _code(self, exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        code = str(error.get("Code", ""))
        if not code:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
            code = str(status or "")
        return code

    def _fail(self, what: str, bucket: str, key: str | None, exc: Exception) -> StorageError:
        where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        if isinstance(exc, self._client_error):
            code = self._code(exc)
            if code == "NoSuchBucket":
                return StorageError(f"{what} {where} failed: bucket {bucket} does not exist (ensure_ready creates it)")
            kind = ObjectNotFound if code in ("NoSuchKey", "404", "NoSuchVersion") else StorageError
            return kind(f"{what} {where} failed: S3 answered {code or 'an error'}")
        return StorageError(f"{what} {where} failed: {type(exc).__name__}: {exc}")

    def _errors(self) -> tuple[type[Exception], ...]:
        return (self._client_error, self._boto_error)

    def _sse_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"ServerSideEncryption": self.config.sse}
        if self.config.sse == "aws:kms" and self.config.kms_key_id:
            args["SSEKMSKeyId"] = self.config.kms_key_id
        return args

    # setup

    def ensure_ready(self) -> None:
        """Create missing buckets, or check existing ones; refuse an evidence bucket without Object Lock."""
        bucket = self.bundle_bucket
        if self._bucket_exists(bucket):
            self._check_object_lock(bucket)
        else:
            self._create_bucket(bucket, object_lock=True)
        if not self.config.shared_bucket:
            self._set_default_retention(bucket)
            if not self._bucket_exists(self.package_bucket):
                self._create_bucket(self.package_bucket, object_lock=False)
        self._refuse_default_retention_on_packages(self.package_bucket)
        self._ensure_package_lifecycle(self.package_bucket)

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except self._client_error as exc:
            if self._code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise self._fail("checking bucket", bucket, None, exc) from exc
        except self._boto_error as exc:
            raise self._fail("checking bucket", bucket, None, exc) from exc

    def _create_bucket(self, bucket: str, *, object_lock: bool) -> None:
        args: dict[str, Any] = {"Bucket": bucket}
        if object_lock:
            args["ObjectLockEnabledForBucket"] = True
        if self.config.s3_region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.config.s3_region}
        try:
            self.client.create_bucket(**args)
            if object_lock:
                self.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        except self._errors() as exc:
            if self._code(exc) == "BucketAlreadyOwnedByYou":  # created meanwhile by a twin process
                if object_lock:
                    self._check_object_lock(bucket)
                return
            raise self._fail("creating bucket", bucket, None, exc) from exc
        # Hardening that some S3-compatible servers do not implement: wanted, not required
        # (every object is written with its own SSE header anyway).
        default_sse: dict[str, Any] = {"SSEAlgorithm": self.config.sse}
        if self.config.sse == "aws:kms" and self.config.kms_key_id:
            default_sse["KMSMasterKeyID"] = self.config.kms_key_id
        for what, call, args in (
            ("blocking public access to", self.client.put_public_access_block, {"PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True, "IgnorePublicAcls": True,
                "BlockPublicPolicy": True, "RestrictPublicBuckets": True}}),
            ("setting default encryption on", self.client.put_bucket_encryption, {
                "ServerSideEncryptionConfiguration": {"Rules": [{"ApplyServerSideEncryptionByDefault": default_sse}]}}),
        ):
            try:
                call(Bucket=bucket, **args)
            except self._client_error as exc:
                if self._code(exc) not in ("NotImplemented", "501"):
                    raise self._fail(what, bucket, None, exc) from exc
                log.warning("S3 endpoint does not support %s bucket %s; skipped", what, bucket)
            except self._boto_error as exc:
                raise self._fail(what, bucket, None, exc) from exc
        log.info("created S3 bucket %s (object lock %s)", bucket, "on" if object_lock else "off")

    def _object_lock_configuration(self, bucket: str) -> dict[str, Any] | None:
        try:
            answer = self.client.get_object_lock_configuration(Bucket=bucket)
        except self._client_error as exc:
            if self._code(exc) in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
                return None
            raise self._fail("reading the object lock configuration of", bucket, None, exc) from exc
        except self._boto_error as exc:
            raise self._fail("reading the object lock configuration of", bucket, None, exc) from exc
        config = answer.get("ObjectLockConfiguration") or {}
        return config if config.get("ObjectLockEnabled") == "Enabled" else None

    def _check_object_lock(self, bucket: str) -> None:
        if self._object_lock_configuration(bucket) is None:
            raise StorageError(
                f"bucket {bucket} does not have S3 Object Lock enabled; evidence bundles must be stored "
                "write-once. Use a bucket created with Object Lock (or enable Object Lock on it) and "
                "set DSR_STORAGE_S3_BUNDLE_BUCKET to it"
            )
        try:
            versioning = self.client.get_bucket_versioning(Bucket=bucket).get("Status")
        except self._errors() as exc:
            raise self._fail("reading the versioning status of", bucket, None, exc) from exc
        if versioning != "Enabled":
            raise StorageError(f"bucket {bucket} has Object Lock but versioning is {versioning or 'off'}")

    def _set_default_retention(self, bucket: str) -> None:
        """A dedicated bundle bucket also locks, by default, whatever is written without a lock."""
        current = self._object_lock_configuration(bucket) or {}
        if current.get("Rule"):
            return  # an operator's rule stands; every bundle carries its own retention anyway
        try:
            self.client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": self.config.object_lock_mode,
                                              "Days": self.config.bundle_retention_days}},
            })
        except self._errors() as exc:
            raise self._fail("setting default retention on", bucket, None, exc) from exc

    def _refuse_default_retention_on_packages(self, bucket: str) -> None:
        rule = (self._object_lock_configuration(bucket) or {}).get("Rule")
        if rule:
            raise StorageError(
                f"bucket {bucket} holds subject packages but has a default Object Lock retention "
                f"({rule.get('DefaultRetention')}); packages hold personal data and must expire after "
                f"{self.config.package_retention_days} days. Set DSR_STORAGE_S3_PACKAGE_BUCKET to a separate "
                "bucket, or remove the default retention rule (bundles carry their own retention)"
            )

    def _ensure_package_lifecycle(self, bucket: str) -> None:
        rule = {
            "ID": PACKAGE_LIFECYCLE_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": PACKAGE_PREFIX},
            "Expiration": {"Days": self.config.package_retention_days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except self._client_error as exc:
            if self._code(exc) != "NoSuchLifecycleConfiguration":
                raise self._fail("reading the lifecycle rules of", bucket, None, exc) from exc
            rules = []
        except self._boto_error as exc:
            raise self._fail("reading the lifecycle rules of", bucket, None, exc) from exc
        mine = [r for r in rules if r.get("ID") == PACKAGE_LIFECYCLE_RULE_ID]
        if len(mine) == 1 and _same_rule(mine[0], rule):
            return
        others = [r for r in rules if r.get("ID") != PACKAGE_LIFECYCLE_RULE_ID]
        try:
            self.client.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [*others, rule]}
            )
        except self._errors() as exc:
            raise self._fail("setting the package lifecycle rule on", bucket, None, exc) from exc

    # bundles

    def _sealed_version(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The key's first (oldest) version: the one the seal wrote. None if the key was never written.

        S3 lists a key's versions newest first; anything after the first write (a new version or a
        delete marker) cannot replace it while it is locked, and is ignored here.
        """
        versions: list[dict[str, Any]] = []
        try:
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                versions += [v for v in page.get("Versions", []) if v.get("Key") == key]
        except self._errors() as exc:
            raise self._fail("listing versions of", bucket, key, exc) from exc
        if not versions:
            return None
        if len(versions) > 1:
            log.warning("s3://%s/%s has %d versions; reading the first (sealed) one", bucket, key, len(versions))
        return versions[-1]

    def _head(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            return dict(self.client.head_object(**args))
        except self._errors() as exc:
            raise self._fail("reading", bucket, key, exc) from exc

    def _stored(self, bucket: str, key: str, head: dict[str, Any]) -> StoredObject:
        until = head.get("ObjectLockRetainUntilDate")
        return StoredObject(
            key=key, uri=f"s3://{bucket}/{key}",
            sha256=(head.get("Metadata") or {}).get(SHA256_METADATA, ""),
            size=int(head.get("ContentLength", 0)),
            retain_until=until.astimezone(UTC).date() if isinstance(until, datetime) else None,
            version_id=head.get("VersionId"),
        )

    def _existing_bundle(self, key: str, digest: str) -> StoredObject | None:
        sealed = self._sealed_version(self.bundle_bucket, key)
        if sealed is None:
            return None
        head = self._head(self.bundle_bucket, key, sealed.get("VersionId"))
        recorded = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if recorded != digest:
            raise BundleConflict(
                f"s3://{self.bundle_bucket}/{key} already holds a different bundle; refusing to overwrite it"
            )
        return self._stored(self.bundle_bucket, key, head)

    def put_bundle(self, request_id: str, version: int, data: bytes) -> StoredObject:
        key = bundle_key(request_id, version)
        digest = hashlib.sha256(data).hexdigest()
        existing = self._existing_bundle(key, digest)
        if existing is not None:
            return existing
        now = datetime.now(UTC)
        until = bundle_retain_until(now, self.config.bundle_retention_days)
        try:
            answer = self.client.put_object(
                Bucket=self.bundle_bucket, Key=key, Body=data,
                ContentType="application/zip",
                Metadata={SHA256_METADATA: digest},
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode("ascii"),
                ObjectLockMode=self.config.object_lock_mode,
                ObjectLockRetainUntilDate=until,
                IfNoneMatch="*",  # never a second version, even when two seals race
                **self._sse_args(),
            )
        except self._client_error as exc:
            if self._code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                existing = self._existing_bundle(key, digest)  # a concurrent writer got there first
                if existing is not None:
                    return existing
            raise self._fail("writing", self.bundle_bucket, key, exc) from exc
        except self._boto_error as exc:
            raise self._fail("writing", self.bundle_bucket, key, exc) from exc
        return StoredObject(key, f"s3://{self.bundle_bucket}/{key}", digest, len(data),
                            until.date(), answer.get("VersionId"))

    def get_bundle(self, request_id: str, version: int, *, expected_sha256: str | None = None) -> bytes:
        key = bundle_key(request_id, version)
        bucket = self.bundle_bucket
        sealed = self._sealed_version(bucket, key)
        if sealed is None:
            raise ObjectNotFound(f"s3://{bucket}/{key}: no such bundle")
        args: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if sealed.get("VersionId") and sealed["VersionId"] != "null":
            args["VersionId"] = sealed["VersionId"]
        try:
            answer = self.client.get_object(**args)
            with contextlib.closing(answer["Body"]) as body:
                data = body.read()
        except self._client_error as exc:
            raise self._fail("reading", bucket, key, exc) from exc
        except self._boto_error as exc:
            if "checksum" in type(exc).__name__.lower() or "checksum" in str(exc).lower():
                raise IntegrityError(f"s3://{bucket}/{key}: the body does not match its S3 checksum") from exc
            raise self._fail("reading", bucket, key, exc) from exc
        digest = hashlib.sha256(data).hexdigest()
        recorded = (answer.get("Metadata") or {}).get(SHA256_METADATA)
        if recorded is None:
            raise IntegrityError(f"s3://{bucket}/{key}: no recorded SHA-256 (x-amz-meta-sha256); cannot verify it")
        if digest != recorded.lower():
            raise IntegrityError(f"s3://{bucket}/{key}: SHA-256 of the content differs from the recorded one")
        checksum = answer.get("ChecksumSHA256")
        if checksum and "-" not in checksum and _b64_to_hex(checksum) not in (None, digest):
            raise IntegrityError(f"s3://{bucket}/{key}: SHA-256 of the content differs from its S3 checksum")
        _check_expected(f"s3://{bucket}/{key}", digest, expected_sha256)
        return data

    def bundle_versions(self, request_id: str) -> list[int]:
        prefix = f"{BUNDLE_PREFIX}{check_request_id(request_id)}/"
        found: set[int] = set()
        try:
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bundle_bucket, Prefix=prefix):
                for entry in page.get("Versions", []):
                    match = _EVIDENCE_FILE.match(entry["Key"][len(prefix):])
                    if match:
                        found.add(int(match.group(1)))
        except self._errors() as exc:
            raise self._fail("listing", self.bundle_bucket, prefix, exc) from exc
        return sorted(found)

    # packages

    def put_package(self, request_id: str, source: Path) -> StoredObject:
        key = package_key(request_id)
        bucket = self.package_bucket
        source = Path(source)
        if not source.is_file():
            raise StorageError(f"{key}: package source {source} is not a file")
        digest, size = _sha256_file(source)  # a streaming pass; the upload is a second one
        with contextlib.suppress(ObjectNotFound):
            head = self._head(bucket, key)
            if (head.get("Metadata") or {}).get(SHA256_METADATA) == digest:
                return self._stored(bucket, key, head)
        extra = {
            "ContentType": "application/zip",
            "Metadata": {SHA256_METADATA: digest},
            "ChecksumAlgorithm": "SHA256",
            **self._sse_args(),
        }
        try:
            with source.open("rb") as handle:
                self.client.upload_fileobj(handle, bucket, key, ExtraArgs=extra, Config=self._transfer)
        except self._errors() as exc:
            raise self._fail("uploading", bucket, key, exc) from exc
        except Exception as exc:  # s3transfer wraps failures in its own exception types
            if type(exc).__module__.startswith(("boto3", "s3transfer")):
                raise StorageError(f"uploading s3://{bucket}/{key} failed: {type(exc).__name__}") from exc
            raise
        return self._stored(bucket, key, self._head(bucket, key))

    def package_link(self, request_id: str, *, expires_in: int | None = None) -> str:
        key = package_key(request_id)
        bucket = self.package_bucket
        self._head(bucket, key)  # a link to nothing helps nobody
        seconds = self.config.package_link_seconds if expires_in is None else expires_in
        if not 1 <= seconds <= MAX_PRESIGNED_SECONDS:
            raise StorageError(f"a presigned link lives 1 to {MAX_PRESIGNED_SECONDS} seconds, not {seconds}")
        try:
            return str(self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key,
                        "ResponseContentDisposition": f'attachment; filename="{request_id}-package.zip"'},
                ExpiresIn=seconds,
            ))
        except self._errors() as exc:
            raise self._fail("signing a link to", bucket, key, exc) from exc

    def open_package(self, request_id: str) -> BinaryIO:
        key = package_key(request_id)
        bucket = self.package_bucket
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except self._errors() as exc:
            raise self._fail("reading", bucket, key, exc) from exc
        expected = (answer.get("Metadata") or {}).get(SHA256_METADATA)
        raw = _VerifyingReader(answer["Body"], expected, f"s3://{bucket}/{key}")
        return io.BufferedReader(raw, buffer_size=_CHUNK)  # type: ignore[return-value]


def _b64_to_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _same_rule(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(current.get(name) == value for name, value in wanted.items())


def iter_chunks(stream: BinaryIO, size: int = _CHUNK) -> Iterator[bytes]:
    """Read a package stream in chunks (for a streaming HTTP response); closes it at the end."""
    try:
        yield from iter(lambda: stream.read(size), b"")
    finally:
        stream.close()
