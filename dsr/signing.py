"""Ed25519 signing keys for evidence bundles.

One private key per deployment signs every bundle's manifest; auditors verify offline with the
public key alone. Ed25519 signatures are deterministic (no per-signature randomness), which is what
lets a rebuilt bundle come out byte for byte the same (DESIGN invariant 5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dsr.files import create_exclusive

SIGNATURE_ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64


class SigningKeyError(Exception):
    """A key file that cannot be used; the message names the file (never the key material)."""


def public_key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 hex of the raw 32-byte public key: what a manifest records as its signer."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


class Signer:
    """An Ed25519 private key, able to sign and to describe its public half."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        """Wrap a private key.

        Args:
            private_key: The Ed25519 key that signs manifests.
        """
        self._private_key = private_key

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, as given to `verify_signature` and `verify_bundle`."""
        return self._private_key.public_key()

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of the raw public key bytes."""
        return public_key_fingerprint(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """Sign `data`; returns the raw 64-byte signature (the same bytes every time)."""
        return self._private_key.sign(data)

    def public_key_pem(self) -> bytes:
        """The public key as PEM SubjectPublicKeyInfo, the form handed to auditors."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        # Never let a debugger or a log line print more than the public fingerprint.
        return f"Signer(fingerprint={self.fingerprint[:16]}...)"


def public_key_path(key_path: Path) -> Path:
    """Where the public key lives beside a private key file: `<path>.pub`."""
    return key_path.with_name(key_path.name + ".pub")


def load_or_create_signing_key(path: Path) -> Signer:
    """Load the PKCS8 PEM private key at `path`, creating it (mode 0600) on first use.

    The public key is (re)written beside it as `<path>.pub` when that file is missing. An existing
    key file is never overwritten, even if it is unreadable: replacing a signing key silently would
    orphan every bundle it signed.

    Args:
        path: The private key file.

    Returns:
        A signer for that key.

    Raises:
        SigningKeyError: The file exists but is not an unencrypted Ed25519 PKCS8 PEM key, or the
            `.pub` beside it holds a different public key.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # If another process won the race to create it, fall through and use theirs.
        create_exclusive(path, pem, 0o600)
    signer = Signer(_load_private_key(path))
    _ensure_public_key_file(path, signer)
    return signer


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM SubjectPublicKeyInfo Ed25519 public key.

    Raises:
        SigningKeyError: The file is missing, unreadable, or not an Ed25519 public key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read public key ({exc.strerror or exc})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `data` by `public_key`."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read signing key ({exc.strerror or exc})") from None
    try:
        # TypeError: an encrypted key (we are given no password); ValueError: not a PEM key at all.
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(
            f"{path}: not an unencrypted PKCS8 PEM private key; refusing to replace it"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key; refusing to replace it")
    return key


def _ensure_public_key_file(key_path: Path, signer: Signer) -> None:
    pub_path = public_key_path(key_path)
    pem = signer.public_key_pem()
    if create_exclusive(pub_path, pem, 0o644):
        return
    try:
        existing = load_public_key(pub_path)
    except SigningKeyError as exc:
        raise SigningKeyError(f"{exc}; it should hold the public half of {key_path}") from None
    # A stale .pub would send auditors to verify against the wrong key: say so instead.
    if public_key_fingerprint(existing) != signer.fingerprint:
        raise SigningKeyError(f"{pub_path}: does not match the private key in {key_path}")


