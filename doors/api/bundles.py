"""Sealed evidence bundles as the doors read them back: storage must return the bytes the ledger
recorded when each was sealed, and a bundle is checked the same way wherever a page or route
verifies one."""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dsr.bundle import BundleVerification, verify_bundle
from dsr.state import RequestState


class EvidenceReader(Protocol):
    """What the API and its pages need from storage (dsr.adapters.storage implements it)."""

    def get_bundle(self, request_id: str, version: int, *, expected_sha256: str | None = None) -> bytes: ...

    def open_package(self, request_id: str) -> BinaryIO: ...


def sealed_hash(state: RequestState, version: int) -> str | None:
    """The hash the ledger recorded when the bundle was sealed: what storage must give back."""
    return next((b.get("sha256") for b in state.bundles if b["version"] == version), None)


def verify_stored_bundle(evidence: EvidenceReader, state: RequestState, version: int,
                         public_key: Ed25519PublicKey) -> tuple[BundleVerification, list[dict[str, Any]]]:
    """Check a stored bundle (member hashes, manifest, hash chain, signature): the verdict and its checks
    as rows. Storage refuses bytes other than those sealed (dsr.adapters.storage.IntegrityError)."""
    data = evidence.get_bundle(state.request_id, version, expected_sha256=sealed_hash(state, version))
    result = verify_bundle(data, public_key)
    return result, [{"check": c, "passed": p, "detail": d} for c, p, d in result.checks]
