"""dsr.adapters.storage: local directory and S3 (moto in server mode, over HTTP on loopback), Object Lock included."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlparse, urlunparse

import pytest
import requests
from pydantic import ValidationError

from dsr.adapters.storage import (
    BundleConflict,
    EvidenceStore,
    IntegrityError,
    LocalEvidenceStore,
    ObjectNotFound,
    S3EvidenceStore,
    StorageConfig,
    StorageError,
    StoredObject,
    bundle_retain_until,
    config_from_settings,
    iter_chunks,
    open_store,
)

REQUEST_ID = "3f6c1f0e-8a51-4b0e-9d1b-2f1a0c7e5b11"
BUNDLE = b"PK\x03\x04 evidence bundle bytes " + bytes(range(256)) * 8
SECRET = b"subject-secret-content-marker"


# --- moto server, credentials, clients ----------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 as a real HTTP endpoint on a free loopback port, for the whole session."""
    ThreadedMotoServer = pytest.importorskip("moto.server", reason="the S3 tests need moto[server]").ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, and nothing read from the machine's own AWS config or a proxy."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(moto_endpoint: str, aws_env: None) -> Any:
    """A raw client on the same endpoint, playing the operator or the attacker."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def _bucket(kind: str) -> str:
    return f"dsr-{kind}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_config(moto_endpoint: str, aws_env: None, tmp_path: Path) -> Callable[..., StorageConfig]:
    def make(**overrides: Any) -> StorageConfig:
        values: dict[str, Any] = {
            "backend": "s3", "s3_endpoint_url": moto_endpoint,
            "s3_bundle_bucket": _bucket("evidence"), "s3_package_bucket": _bucket("packages"),
            "local_bundle_dir": tmp_path / "unused-bundles", "local_package_dir": tmp_path / "unused-packages",
        }
        values.update(overrides)
        return StorageConfig(**values)
    return make


@pytest.fixture
def s3_store(s3_config: Callable[..., StorageConfig]) -> S3EvidenceStore:
    store = open_store(s3_config())
    assert isinstance(store, S3EvidenceStore)
    store.ensure_ready()
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalEvidenceStore:
    store = open_store(StorageConfig(local_bundle_dir=tmp_path / "bundles", local_package_dir=tmp_path / "packages"))
    assert isinstance(store, LocalEvidenceStore)
    store.ensure_ready()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> EvidenceStore:
    return request.getfixturevalue(f"{request.param}_store")


def _package_file(tmp_path: Path, size: int = 4096, name: str = "source.zip") -> Path:
    path = tmp_path / name
    with path.open("wb") as out:
        remaining, block = size, hashlib.sha256(b"seed").digest() * 32768  # 1 MiB, not compressible to 0
        while remaining > 0:
            out.write(block[: min(remaining, len(block))])
            remaining -= len(block)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- both backends ------------------------------------------------------------------------------


def test_bundle_round_trip(store: EvidenceStore) -> None:
    assert store.bundle_versions(REQUEST_ID) == []
    stored = store.put_bundle(REQUEST_ID, 1, BUNDLE)
    assert isinstance(stored, StoredObject)
    assert stored.key == f"bundles/{REQUEST_ID}/evidence-v1.zip"
    assert stored.sha256 == hashlib.sha256(BUNDLE).hexdigest()
    assert stored.size == len(BUNDLE)
    assert store.get_bundle(REQUEST_ID, 1) == BUNDLE
    assert store.get_bundle(REQUEST_ID, 1, expected_sha256=stored.sha256) == BUNDLE
    with pytest.raises(IntegrityError, match="expected"):
        store.get_bundle(REQUEST_ID, 1, expected_sha256="0" * 64)
    store.put_bundle(REQUEST_ID, 2, BUNDLE + b"v2")
    assert store.bundle_versions(REQUEST_ID) == [1, 2]
    assert store.bundle_versions("another-request") == []
    with pytest.raises(ObjectNotFound, match="evidence-v3.zip"):
        store.get_bundle(REQUEST_ID, 3)


def test_identical_reput_is_a_no_op(store: EvidenceStore) -> None:
    first = store.put_bundle(REQUEST_ID, 1, BUNDLE)
    again = store.put_bundle(REQUEST_ID, 1, BUNDLE)
    assert again == first
    assert store.bundle_versions(REQUEST_ID) == [1]


def test_different_bytes_at_an_existing_version_are_refused(store: EvidenceStore) -> None:
    store.put_bundle(REQUEST_ID, 1, BUNDLE)
    with pytest.raises(BundleConflict, match=f"bundles/{REQUEST_ID}/evidence-v1.zip.*refusing to overwrite") as err:
        store.put_bundle(REQUEST_ID, 1, SECRET)
    assert SECRET.decode() not in str(err.value)
    assert store.get_bundle(REQUEST_ID, 1) == BUNDLE


TRICKS = ["../etc", "..", "a/b", "/abs", "%2e%2e", "..%2F..%2Fetc", "a\\b", "..\\win", "", "a..b", "x\x00y",
          ".hidden", "a" * 200]


@pytest.mark.parametrize("trick", TRICKS)
def test_path_tricks_in_request_ids_are_refused(store: EvidenceStore, trick: str, tmp_path: Path) -> None:
    source = _package_file(tmp_path)
    calls: list[Callable[[], Any]] = [
        lambda: store.put_bundle(trick, 1, BUNDLE),
        lambda: store.get_bundle(trick, 1),
        lambda: store.bundle_versions(trick),
        lambda: store.put_package(trick, source),
        lambda: store.package_link(trick),
        lambda: store.open_package(trick),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="request id"):
            call()


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0])
def test_bad_versions_are_refused(store: EvidenceStore, version: Any) -> None:
    with pytest.raises(StorageError, match="version"):
        store.put_bundle(REQUEST_ID, version, BUNDLE)


def test_package_round_trip_and_streaming_read(store: EvidenceStore, tmp_path: Path) -> None:
    source = _package_file(tmp_path, 300_000)
    stored = store.put_package(REQUEST_ID, source)
    assert stored.key == f"packages/{REQUEST_ID}/package.zip"
    assert stored.sha256 == _sha(source) and stored.size == 300_000 and stored.retain_until is None
    with store.open_package(REQUEST_ID) as stream:
        first = stream.read(1000)
        rest = stream.read()
    assert first + rest == source.read_bytes()
    assert b"".join(iter_chunks(store.open_package(REQUEST_ID), 65536)) == source.read_bytes()
    assert store.put_package(REQUEST_ID, source).sha256 == stored.sha256  # again: harmless
    with pytest.raises(ObjectNotFound):
        store.open_package("no-such-request")
    with pytest.raises(ObjectNotFound):
        store.package_link("no-such-request")


# --- local backend ------------------------------------------------------------------------------


def test_local_layout_matches_the_existing_directories(local_store: LocalEvidenceStore, tmp_path: Path) -> None:
    stored = local_store.put_bundle(REQUEST_ID, 1, BUNDLE)
    path = tmp_path / "bundles" / REQUEST_ID / "evidence-v1.zip"
    assert stored.local_path() == path.resolve() and stored.uri.startswith("file://")
    sidecar = path.with_name("evidence-v1.zip.sha256")
    assert sidecar.read_text() == f"{stored.sha256}  evidence-v1.zip\n"  # sha256sum -c format
    assert stored.version_id is None and stored.retain_until is None


def test_local_tampered_bundle_is_detected(local_store: LocalEvidenceStore, tmp_path: Path) -> None:
    local_store.put_bundle(REQUEST_ID, 1, BUNDLE)
    path = tmp_path / "bundles" / REQUEST_ID / "evidence-v1.zip"
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256") as err:
        local_store.get_bundle(REQUEST_ID, 1)
    assert "evidence-v1.zip" in str(err.value)


def test_local_bundle_without_recorded_hash_is_not_trusted(local_store: LocalEvidenceStore, tmp_path: Path) -> None:
    stored = local_store.put_bundle(REQUEST_ID, 1, BUNDLE)
    sidecar = tmp_path / "bundles" / REQUEST_ID / "evidence-v1.zip.sha256"
    sidecar.unlink()
    with pytest.raises(IntegrityError, match="sha256 is missing"):
        local_store.get_bundle(REQUEST_ID, 1)
    assert local_store.get_bundle(REQUEST_ID, 1, expected_sha256=stored.sha256) == BUNDLE  # the ledger's hash
    local_store.put_bundle(REQUEST_ID, 1, BUNDLE)  # a re-put restores the sidecar
    assert local_store.get_bundle(REQUEST_ID, 1) == BUNDLE
    sidecar.chmod(0o644)
    sidecar.write_text("f" * 64 + "  evidence-v1.zip\n")
    with pytest.raises(IntegrityError):
        local_store.put_bundle(REQUEST_ID, 1, BUNDLE)


def test_local_package_link_is_a_path_and_tampering_is_caught_at_end_of_stream(
    local_store: LocalEvidenceStore, tmp_path: Path
) -> None:
    source = _package_file(tmp_path, 10_000)
    local_store.put_package(REQUEST_ID, source)
    link = Path(local_store.package_link(REQUEST_ID))
    assert link.is_absolute() and link.read_bytes() == source.read_bytes()
    data = bytearray(link.read_bytes())
    data[-1] ^= 0xFF
    link.write_bytes(bytes(data))
    with pytest.raises(IntegrityError), local_store.open_package(REQUEST_ID) as stream:
        stream.read()
    with pytest.raises(IntegrityError):
        b"".join(iter_chunks(local_store.open_package(REQUEST_ID), 1000))


def test_local_package_already_in_place_is_hashed_not_copied(local_store: LocalEvidenceStore, tmp_path: Path) -> None:
    target = tmp_path / "packages" / REQUEST_ID / "package.zip"
    target.parent.mkdir(parents=True)
    source = _package_file(target.parent, 5000, name="package.zip")
    stored = local_store.put_package(REQUEST_ID, source)
    assert stored.local_path() == target.resolve() and stored.sha256 == _sha(target)


def test_local_backend_works_without_boto3(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "from pathlib import Path\n"
        "from dsr.adapters.storage import StorageConfig, StorageError, open_store\n"
        f"root = Path({str(tmp_path)!r})\n"
        "store = open_store(StorageConfig(local_bundle_dir=root / 'b', local_package_dir=root / 'p'))\n"
        "store.ensure_ready(); store.put_bundle('r1', 1, b'x'); assert store.get_bundle('r1', 1) == b'x'\n"
        "try:\n"
        "    open_store(StorageConfig(backend='s3', s3_bundle_bucket='dsr-evidence'))\n"
        "except StorageError as exc:\n"
        "    assert 'boto3' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('S3 store built without boto3')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr


# --- S3: object lock, encryption, checksums -----------------------------------------------------


def _client_error() -> type[Exception]:
    from botocore.exceptions import ClientError as error

    return error


def _error_code(err: pytest.ExceptionInfo[Any]) -> str:
    return str(err.value.response["Error"]["Code"])


def test_s3_bundle_is_locked_encrypted_and_checksummed(s3_store: S3EvidenceStore, s3: Any) -> None:
    before = datetime.now(UTC)
    stored = s3_store.put_bundle(REQUEST_ID, 1, BUNDLE)
    bucket, key = s3_store.bundle_bucket, stored.key
    assert stored.uri == f"s3://{bucket}/{key}" and stored.version_id

    # moto 5 has no GetObjectRetention; HeadObject carries the same retention (x-amz-object-lock-*).
    head = s3.head_object(Bucket=bucket, Key=key, VersionId=stored.version_id, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before.replace(microsecond=0) + timedelta(days=730) <= until <= datetime.now(UTC) + timedelta(days=732)
    assert stored.retain_until == until.astimezone(UTC).date()
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == hashlib.sha256(BUNDLE).hexdigest()
    assert head.get("ChecksumSHA256")  # S3 verified the body against our SHA-256 on upload


def test_s3_object_lock_refuses_delete_and_overwrite(s3_store: S3EvidenceStore, s3: Any) -> None:
    stored = s3_store.put_bundle(REQUEST_ID, 1, BUNDLE)
    bucket, key = s3_store.bundle_bucket, stored.key

    with pytest.raises(_client_error()) as err:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=stored.version_id)
    assert _error_code(err) == "AccessDenied"
    with pytest.raises(_client_error()) as err:  # COMPLIANCE: not even with the governance bypass
        s3.delete_object(Bucket=bucket, Key=key, VersionId=stored.version_id, BypassGovernanceRetention=True)
    assert _error_code(err) == "AccessDenied"

    # The store's own write is conditional: an overwrite is refused by S3 itself.
    with pytest.raises(_client_error()) as err:
        s3.put_object(Bucket=bucket, Key=key, Body=b"forged", IfNoneMatch="*",
                      ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
                      ChecksumAlgorithm="SHA256")
    assert _error_code(err) == "PreconditionFailed"

    # An unconditional write only adds a version, and a plain delete only a marker: the sealed,
    # locked version is still there and is what the store reads and refuses to replace.
    s3.put_object(Bucket=bucket, Key=key, Body=b"forged", Metadata={"sha256": hashlib.sha256(b"forged").hexdigest()},
                  ChecksumAlgorithm="SHA256")
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.get_object(Bucket=bucket, Key=key, VersionId=stored.version_id)["Body"].read() == BUNDLE
    assert s3_store.get_bundle(REQUEST_ID, 1) == BUNDLE
    assert s3_store.bundle_versions(REQUEST_ID) == [1]
    assert s3_store.put_bundle(REQUEST_ID, 1, BUNDLE).version_id == stored.version_id
    with pytest.raises(BundleConflict):
        s3_store.put_bundle(REQUEST_ID, 1, b"forged")


def test_s3_changed_body_is_caught_by_the_hash_check(s3_config: Callable[..., StorageConfig], s3: Any) -> None:
    store = open_store(s3_config(object_lock_mode="GOVERNANCE"))
    assert isinstance(store, S3EvidenceStore)
    store.ensure_ready()
    stored = store.put_bundle(REQUEST_ID, 1, BUNDLE)
    bucket, key = store.bundle_bucket, stored.key
    assert s3.head_object(Bucket=bucket, Key=key, VersionId=stored.version_id)["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(_client_error()) as err:  # governance mode still locks without the bypass
        s3.delete_object(Bucket=bucket, Key=key, VersionId=stored.version_id)
    assert _error_code(err) == "AccessDenied"

    # Someone holding s3:BypassGovernanceRetention replaces the sealed version, keeping its recorded hash.
    s3.delete_object(Bucket=bucket, Key=key, VersionId=stored.version_id, BypassGovernanceRetention=True)
    tampered = bytearray(BUNDLE)
    tampered[40] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(tampered), Metadata={"sha256": stored.sha256},
                  ChecksumAlgorithm="SHA256", ServerSideEncryption="AES256")
    with pytest.raises(IntegrityError, match=f"s3://{bucket}/{key}.*SHA-256"):
        store.get_bundle(REQUEST_ID, 1)


def test_s3_missing_hash_metadata_is_not_trusted(s3_config: Callable[..., StorageConfig], s3: Any) -> None:
    store = open_store(s3_config(object_lock_mode="GOVERNANCE"))
    store.ensure_ready()
    assert isinstance(store, S3EvidenceStore)
    key = f"bundles/{REQUEST_ID}/evidence-v1.zip"
    s3.put_object(Bucket=store.bundle_bucket, Key=key, Body=BUNDLE, ChecksumAlgorithm="SHA256")
    with pytest.raises(IntegrityError, match="no recorded SHA-256"):
        store.get_bundle(REQUEST_ID, 1)


def test_s3_bucket_without_object_lock_is_refused(s3_config: Callable[..., StorageConfig], s3: Any) -> None:
    config = s3_config()
    s3.create_bucket(Bucket=config.s3_bundle_bucket)
    with pytest.raises(StorageError, match=f"bucket {config.s3_bundle_bucket} does not have S3 Object Lock enabled"):
        open_store(config).ensure_ready()


def test_s3_ensure_ready_creates_buckets_and_is_repeatable(s3_store: S3EvidenceStore, s3: Any) -> None:
    bucket = s3_store.bundle_bucket
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    default = lock["Rule"]["DefaultRetention"]
    assert (default["Mode"], default["Days"], default.get("Years", 0)) == ("COMPLIANCE", 730, 0)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    with pytest.raises(_client_error()):  # the package bucket is never locked: packages must be erasable
        s3.get_object_lock_configuration(Bucket=s3_store.package_bucket)
    s3_store.ensure_ready()  # existing buckets: checked, not recreated
    open_store(s3_store.config).ensure_ready()


def test_s3_package_lifecycle_rule_keeps_other_rules(s3_config: Callable[..., StorageConfig], s3: Any) -> None:
    config = s3_config()
    s3.create_bucket(Bucket=config.s3_package_bucket)
    other = {"ID": "operators-rule", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 3}}
    s3.put_bucket_lifecycle_configuration(Bucket=config.s3_package_bucket,
                                          LifecycleConfiguration={"Rules": [other]})
    open_store(config).ensure_ready()
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=config.s3_package_bucket)["Rules"]}
    assert set(rules) == {"operators-rule", "dsr-subject-packages-expire"}
    mine = rules["dsr-subject-packages-expire"]
    assert mine["Status"] == "Enabled" and mine["Expiration"] == {"Days": 30}
    assert mine["Filter"] == {"Prefix": "packages/"}
    assert mine["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert mine["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    longer = config.model_copy(update={"package_retention_days": 14})
    open_store(longer).ensure_ready()
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=config.s3_package_bucket)["Rules"]}
    assert rules["dsr-subject-packages-expire"]["Expiration"] == {"Days": 14} and "operators-rule" in rules


def test_s3_shared_bucket_keeps_packages_unlocked_under_their_prefix(
    s3_config: Callable[..., StorageConfig], s3: Any, tmp_path: Path
) -> None:
    config = s3_config(s3_package_bucket=None)
    store = open_store(config)
    assert isinstance(store, S3EvidenceStore)
    store.ensure_ready()
    bucket = config.s3_bundle_bucket
    assert store.package_bucket == bucket
    bundle = store.put_bundle(REQUEST_ID, 1, BUNDLE)
    package = store.put_package(REQUEST_ID, _package_file(tmp_path))
    assert package.key.startswith("packages/") and package.uri == f"s3://{bucket}/{package.key}"
    assert s3.head_object(Bucket=bucket, Key=bundle.key)["ObjectLockMode"] == "COMPLIANCE"
    assert "ObjectLockMode" not in s3.head_object(Bucket=bucket, Key=package.key)  # no default retention
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["Filter"] for r in rules] == [{"Prefix": "packages/"}]



def test_s3_shared_bucket_with_default_retention_is_refused(s3_config: Callable[..., StorageConfig], s3: Any) -> None:
    """Default retention would lock every package (personal data) for years."""
    config = s3_config(s3_package_bucket=None)
    bucket = config.s3_bundle_bucket
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 730}}})
    with pytest.raises(StorageError, match=f"bucket {bucket} holds subject packages.*DSR_STORAGE_S3_PACKAGE_BUCKET"):
        open_store(config).ensure_ready()


def test_s3_presigned_link_downloads_the_exact_bytes(s3_store: S3EvidenceStore, tmp_path: Path) -> None:
    source = _package_file(tmp_path, 200_000)
    s3_store.put_package(REQUEST_ID, source)
    link = s3_store.package_link(REQUEST_ID)
    query = parse_qs(urlparse(link).query)
    assert query["X-Amz-Expires"] == [str(5 * 24 * 3600)]  # 5 days by default
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    answer = requests.get(link, timeout=10)
    assert answer.status_code == 200
    assert answer.content == source.read_bytes()
    assert 'filename="' + REQUEST_ID in answer.headers.get("Content-Disposition", "")


def test_s3_presigned_link_carries_a_signed_expiry(s3_store: S3EvidenceStore, tmp_path: Path) -> None:
    """S3 refuses a SigV4 link once X-Amz-Date + X-Amz-Expires has passed. moto 5 does not enforce
    that (it still served a 1-second link after 2 s when tried), so this checks what S3 enforces:
    the link expires after the seconds asked for, counted from now, and that expiry is covered by
    the signature, so nobody can stretch it by editing the URL."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    s3_store.put_package(REQUEST_ID, _package_file(tmp_path))
    link = s3_store.package_link(REQUEST_ID, expires_in=1)
    parsed = urlparse(link)
    query = parse_qs(parsed.query)
    assert query["X-Amz-Expires"] == ["1"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 5

    def signature(expires: int) -> str:
        rest = [(k, v) for k, v in parse_qsl(parsed.query, keep_blank_values=True) if not k.startswith("X-Amz-")]
        request = AWSRequest(method="GET", url=urlunparse(parsed._replace(query=urlencode(rest))))
        request.context["timestamp"] = query["X-Amz-Date"][0]
        S3SigV4QueryAuth(Credentials("testing", "testing"), "s3", "us-east-1", expires=expires).add_auth(request)
        return parse_qs(urlparse(request.url).query)["X-Amz-Signature"][0]

    assert signature(1) == query["X-Amz-Signature"][0]
    assert signature(3600) != query["X-Amz-Signature"][0]
    with pytest.raises(StorageError, match="presigned link lives"):
        s3_store.package_link(REQUEST_ID, expires_in=8 * 24 * 3600)


def test_s3_big_package_is_streamed_in_parts(
    s3_store: S3EvidenceStore, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _package_file(tmp_path, 20 * 1024 * 1024)
    expected = _sha(source)

    def no_whole_reads(self: Path) -> bytes:
        raise AssertionError(f"{self} read whole into memory")

    monkeypatch.setattr(Path, "read_bytes", no_whole_reads)
    uploads: list[str] = []
    real_upload = s3_store.client.upload_fileobj

    def spy(*args: Any, **kwargs: Any) -> Any:
        uploads.append(kwargs.get("Key") or args[2])
        return real_upload(*args, **kwargs)

    monkeypatch.setattr(s3_store.client, "upload_fileobj", spy)
    stored = s3_store.put_package(REQUEST_ID, source)
    monkeypatch.undo()

    assert uploads == [f"packages/{REQUEST_ID}/package.zip"]
    assert stored.size == 20 * 1024 * 1024 and stored.sha256 == expected
    head = s3.head_object(Bucket=s3_store.package_bucket, Key=stored.key)
    assert head["ETag"].strip('"').endswith("-3")  # three 8 MiB parts: a multipart upload
    assert head["ServerSideEncryption"] == "AES256"
    digest = hashlib.sha256()
    with s3_store.open_package(REQUEST_ID) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    assert digest.hexdigest() == expected


def test_s3_tampered_package_fails_at_end_of_stream(s3_store: S3EvidenceStore, s3: Any, tmp_path: Path) -> None:
    stored = s3_store.put_package(REQUEST_ID, _package_file(tmp_path, 5000))
    s3.put_object(Bucket=s3_store.package_bucket, Key=stored.key, Body=b"other", Metadata={"sha256": stored.sha256})
    with pytest.raises(IntegrityError), s3_store.open_package(REQUEST_ID) as stream:
        stream.read()


def test_s3_errors_name_bucket_and_key_and_unreachable_endpoint(s3_config: Callable[..., StorageConfig]) -> None:
    store = open_store(s3_config())  # buckets never created
    with pytest.raises(StorageError, match=r"s3://dsr-evidence-[0-9a-f]+/bundles/"):
        store.get_bundle(REQUEST_ID, 1)
    dead = open_store(s3_config(s3_endpoint_url="http://127.0.0.1:9"))
    started = time.monotonic()
    with pytest.raises(StorageError, match="s3://dsr-evidence-"):
        dead.bundle_versions(REQUEST_ID)
    assert time.monotonic() - started < 20


# --- configuration ------------------------------------------------------------------------------


def test_config_defaults_and_limits(tmp_path: Path) -> None:
    config = StorageConfig()
    assert (config.backend, config.object_lock_mode, config.bundle_retention_days) == ("local", "COMPLIANCE", 730)
    assert (config.package_retention_days, config.package_link_seconds, config.sse) == (30, 432000, "AES256")
    with pytest.raises(ValidationError, match="bundle_retention_days"):
        StorageConfig(bundle_retention_days=729)
    assert StorageConfig(bundle_retention_days=2555).bundle_retention_days == 2555
    with pytest.raises(ValidationError, match="s3_bundle_bucket"):
        StorageConfig(backend="s3")
    with pytest.raises(ValidationError, match="kms_key_id"):
        StorageConfig(kms_key_id="alias/x")
    with pytest.raises(ValidationError, match="package_link_seconds"):
        StorageConfig(package_link_seconds=8 * 24 * 3600)
    with pytest.raises(ValidationError, match="package_retention_days"):
        StorageConfig(package_retention_days=0)
    with pytest.raises(ValidationError, match="bucket_name"):
        StorageConfig(bucket_name="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="object_lock_mode"):
        StorageConfig(object_lock_mode="compliance-ish")  # type: ignore[arg-type]
    assert StorageConfig(backend="s3", s3_bundle_bucket="b1").package_bucket == "b1"


def test_config_from_settings(tmp_path: Path) -> None:
    class FakeSettings:
        bundles_path = tmp_path / "b"
        packages_path = tmp_path / "p"
        storage_backend = "s3"
        storage_s3_bundle_bucket = "dsr-evidence"
        storage_bundle_retention_days = 3650
        storage_kms_key_id = None

    config = config_from_settings(FakeSettings())
    assert config.backend == "s3" and config.s3_bundle_bucket == "dsr-evidence"
    assert config.bundle_retention_days == 3650 and config.local_bundle_dir == tmp_path / "b"
    assert config.local_package_dir == tmp_path / "p" and config.s3_region == "us-east-1"


def test_retention_is_never_less_than_24_calendar_months() -> None:
    # 730 days from 1 March 2027 is 28 February 2029 (2028 is a leap year): one day short.
    start = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    assert bundle_retain_until(start, 730).date() == date(2029, 3, 1)
    assert bundle_retain_until(start, 1000) == start + timedelta(days=1000)


def test_s3_store_refuses_a_local_config(aws_env: None) -> None:
    with pytest.raises(StorageError):
        S3EvidenceStore(StorageConfig())

