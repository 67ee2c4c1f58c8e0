"""OpenDSR signatures: the processor's certificate and key, and checking controllers' signatures.

The specification (sections 4.1, 4.2, 7.3, 8.3, 8.6) has the processor sign its responses and
callbacks with the key of an X.509 certificate issued to its domain, per FIPS 186-4, and send the
signature Base64-encoded in `X-OpenDSR-Signature`. Here:

- **Algorithm.** RSA (2048 bits or more) with PKCS#1 v1.5 and SHA-256 ("SHA256withRSA", what the
  ecosystem's controller SDKs verify), or ECDSA P-256/P-384 with SHA-256 (DER signature) if the
  configured key is an EC key. Both are FIPS 186-4 schemes. Verification accepts either.
- **What is signed.** The exact bytes of the HTTP body: a receiver verifies over the bytes it
  received before parsing them (spec 8.8).
- **Certificate.** `DSR_OPENDSR_CERTIFICATE_FILE` and `DSR_OPENDSR_KEY_FILE` in production: a
  certificate from a trusted CA for `DSR_OPENDSR_DOMAIN` (spec 4.1 forbids self-signed ones).
  Without them (embedded mode, tests) a self-signed certificate for the domain is generated on
  first use under home/keys (key file 0600, written once, atomically), so that everything else
  works and is testable; `processor_identity(...).self_signed` says which one is in use.
- **Controllers.** A controller's signature over a request body is checked against certificates
  configured per controller (`DSR_OPENDSR_CONTROLLERS_FILE`, YAML): a PEM file, inline PEM, or an
  https URL (fetched on first use, cached an hour; only the URLs configured there are ever fetched,
  so a request cannot make the processor fetch an address of its choosing).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from dsr.config import ConfigError
from dsr.files import create_exclusive
from dsr.net import is_loopback

RSA_BITS = 2048
CERT_DAYS = 825  # the longest validity browsers accept for a leaf: a sane bound for a generated one
CERT_FETCH_TIMEOUT = 5.0
CERT_CACHE_SECONDS = 3600.0
MAX_CERT_BYTES = 64 * 1024

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class OpenDsrKeyError(ConfigError):
    """A certificate or key that cannot be used; the message names the setting or file, never key material.

    A configuration problem (the CLI answers it with exit 2, naming the setting)."""


# -- signing and verifying -------------------------------------------------------------------------


def sign_bytes(key: PrivateKey, data: bytes) -> str:
    """Base64 signature of `data` (SHA-256; RSA PKCS#1 v1.5 or ECDSA per the key)."""
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode("ascii")


def verify_bytes(certificate: x509.Certificate, data: bytes, signature: str | None) -> bool:
    """Whether `signature` (Base64, whitespace allowed) is the certificate key's signature of `data`."""
    if not signature:
        return False
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    public = certificate.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(raw, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def load_certificate(pem: bytes, *, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise OpenDsrKeyError(f"{where}: not a PEM X.509 certificate") from None


# -- the processor's own certificate ---------------------------------------------------------------


@dataclass(frozen=True)
class ProcessorIdentity:
    """The processor's signing key and the certificate that vouches for it."""

    domain: str
    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    self_signed: bool

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, data: bytes) -> str:
        return sign_bytes(self.key, data)

    def verify(self, data: bytes, signature: str | None) -> bool:
        return verify_bytes(self.certificate, data, signature)


_identities: dict[tuple[str, str, str], ProcessorIdentity] = {}
_identities_lock = threading.Lock()


def processor_identity(settings: Any) -> ProcessorIdentity:
    """The configured certificate and key, or the generated self-signed pair (cached per files)."""
    domain = str(settings.opendsr_domain).strip().lower()
    if not domain:
        raise OpenDsrKeyError("opendsr_domain: must name the processor's domain")
    configured_cert, configured_key = settings.opendsr_certificate_file, settings.opendsr_key_file
    if (configured_cert is None) != (configured_key is None):
        raise OpenDsrKeyError("opendsr_certificate_file, opendsr_key_file: set both or neither")
    keys = Path(settings.home) / "keys"
    cert_path = Path(configured_cert) if configured_cert else keys / f"opendsr-{_file_safe(domain)}.pem"
    key_path = Path(configured_key) if configured_key else keys / "opendsr-processor.key"
    cache_key = (domain, str(cert_path), str(key_path))
    with _identities_lock:
        found = _identities.get(cache_key)
        if found is None:
            if configured_cert is None:
                _ensure_generated(domain, cert_path, key_path)
            found = _load(domain, cert_path, key_path, generated=configured_cert is None)
            _identities[cache_key] = found
        return found


def _file_safe(domain: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in domain)[:100]


def _ensure_generated(domain: str, cert_path: Path, key_path: Path) -> None:
    if not key_path.exists():
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        create_exclusive(key_path, pem, 0o600)  # a racing twin keeps its own; both read the winner's below
    if not cert_path.exists():
        key = _read_key(key_path, "opendsr key")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain[:64]),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsr-pipeline (self-signed: development only)")])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CERT_DAYS))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        create_exclusive(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _read_key(path: Path, what: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise OpenDsrKeyError(f"{what}: no file at {path}") from None
    except (ValueError, TypeError):
        raise OpenDsrKeyError(f"{what}: {path} is not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_BITS:
            raise OpenDsrKeyError(f"{what}: {path} is RSA-{key.key_size}; FIPS 186-4 signing needs 2048 bits or more")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
        return key
    raise OpenDsrKeyError(f"{what}: {path} must be an RSA or an ECDSA P-256/P-384/P-521 key")


def _load(domain: str, cert_path: Path, key_path: Path, *, generated: bool) -> ProcessorIdentity:
    try:
        pem = cert_path.read_bytes()
    except FileNotFoundError:
        raise OpenDsrKeyError(f"opendsr_certificate_file: no file at {cert_path}") from None
    certificate = load_certificate(pem, where="opendsr_certificate_file")
    key = _read_key(key_path, "opendsr_key_file")
    ours = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        raise OpenDsrKeyError(f"opendsr_key_file: {key_path} is not the key of the certificate {cert_path}")
    return ProcessorIdentity(domain, certificate, key, self_signed=generated or certificate.issuer == certificate.subject)


# -- controllers' certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class ControllerEntry:
    controller_id: str
    certificate_file: Path | None = None
    certificate_pem: str | None = None
    certificate_url: str | None = None


class Controllers:
    """The controllers whose signatures are accepted, with their certificates (cached)."""

    def __init__(self, entries: list[ControllerEntry], *, fetch_timeout: float = CERT_FETCH_TIMEOUT,
                 cache_seconds: float = CERT_CACHE_SECONDS) -> None:
        self.entries = {e.controller_id: e for e in entries}
        self.fetch_timeout, self.cache_seconds = fetch_timeout, cache_seconds
        self._cache: dict[str, tuple[float, x509.Certificate]] = {}
        self._lock = threading.Lock()

    def certificate(self, controller_id: str) -> x509.Certificate:
        entry = self.entries[controller_id]
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(controller_id)
            if cached is not None and now - cached[0] < self.cache_seconds:
                return cached[1]
        where = f"opendsr controllers: {controller_id}"
        if entry.certificate_pem:
            cert = load_certificate(entry.certificate_pem.encode("ascii", "replace"), where=where)
        elif entry.certificate_file:
            try:
                cert = load_certificate(entry.certificate_file.read_bytes(), where=where)
            except FileNotFoundError:
                raise OpenDsrKeyError(f"{where}: no certificate file at {entry.certificate_file}") from None
        else:
            cert = load_certificate(_fetch(str(entry.certificate_url), self.fetch_timeout), where=where)
        with self._lock:
            self._cache[controller_id] = (now, cert)
        return cert

    def identify(self, body: bytes, signature: str | None) -> str | None:
        """The controller whose certificate verifies `signature` over `body`, or None."""
        if not signature:
            return None
        for controller_id in sorted(self.entries):
            try:
                cert = self.certificate(controller_id)
            except (OpenDsrKeyError, requests.RequestException):
                continue  # that controller's certificate is out of reach now; others may still match
            if verify_bytes(cert, body, signature):
                return controller_id
        return None


def _fetch(url: str, timeout: float) -> bytes:
    """GET a certificate from a configured URL: https (plain http to loopback only), no redirects, size-capped."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
        raise OpenDsrKeyError("certificate_url: must be https (plain http only to this machine)")
    with requests.get(url, timeout=timeout, allow_redirects=False, stream=True) as answer:
        if answer.status_code != 200:
            raise OpenDsrKeyError(f"certificate_url: answered HTTP {answer.status_code}")
        data = answer.raw.read(MAX_CERT_BYTES + 1, decode_content=True)
    if len(data) > MAX_CERT_BYTES:
        raise OpenDsrKeyError("certificate_url: larger than a certificate")
    return bytes(data)


def load_controllers(settings: Any) -> Controllers:
    """Controllers from `opendsr_controllers_file` (or config_dir/opendsr_controllers.yaml, if present).

    The file::

        controllers:
          acme-web:                       # the controller_id answered in responses and callbacks
            certificate_file: /run/secrets/acme.pem
          partner:
            certificate_url: https://privacy.partner.example/opendsr/cert.pem
    """
    path = settings.opendsr_controllers_file or Path(settings.config_dir) / "opendsr_controllers.yaml"
    if settings.opendsr_controllers_file is None and not Path(path).exists():
        return Controllers([])
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise OpenDsrKeyError(f"opendsr_controllers_file: no file at {path}") from None
    except yaml.YAMLError:
        raise OpenDsrKeyError(f"opendsr_controllers_file: {path} is not valid YAML") from None
    section = data.get("controllers") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise OpenDsrKeyError(f"opendsr_controllers_file: {path} must hold a 'controllers' mapping")
    entries: list[ControllerEntry] = []
    for controller_id, spec in section.items():
        where = f"opendsr_controllers_file: controllers.{controller_id}"
        if not isinstance(spec, dict):
            raise OpenDsrKeyError(f"{where}: must be a mapping")
        given = [k for k in ("certificate_file", "certificate_pem", "certificate_url") if spec.get(k)]
        if len(given) != 1 or set(spec) - {"certificate_file", "certificate_pem", "certificate_url"}:
            raise OpenDsrKeyError(f"{where}: give exactly one of certificate_file, certificate_pem, certificate_url")
        file = spec.get("certificate_file")
        entries.append(ControllerEntry(str(controller_id), certificate_file=Path(file) if file else None,
                                       certificate_pem=spec.get("certificate_pem"),
                                       certificate_url=spec.get("certificate_url")))
    return Controllers(entries)
