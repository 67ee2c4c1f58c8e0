"""Where the subject's data waits between export and package, and its removal (DESIGN invariant 7).

Exports are staged in a private directory per request (0700, files 0600) until the package is
stored and recorded; then the staging goes. A killed run's half-written files are removed by the
next run, and the nightly purge sweeps the staging no run will package any more (a cancelled
request's, say). Discovered refs live apart from the staging: they are evidence, kept.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from dsr.adapters.storage import EvidenceStore, LocalEvidenceStore, config_from_settings, open_store
from dsr.files import private_dir, remove_tree
from dsr.ledger.store import LedgerError
from dsr.models import EXPORT_TYPES, RequestType
from dsr.package import leftovers, remove_leftovers
from dsr.service import DsrService
from dsr.state import RequestState

log = logging.getLogger(__name__)

PACKAGE_FILE = "package.zip"  # as the sealing writes it, beside the request's staging


class StoreSlot:
    """The evidence store (local directories unless S3 is configured), opened on first use."""

    def __init__(self, service: DsrService, store: EvidenceStore | None = None) -> None:
        self._service = service
        self.opened: EvidenceStore | None = store

    def get(self) -> EvidenceStore:
        if self.opened is None:
            self.opened = open_store(config_from_settings(self._service.settings))
            self.opened.ensure_ready()
        return self.opened


class Staging:
    """The request's staging, package copy and refs directories, and their clean-up."""

    def __init__(self, service: DsrService, store: StoreSlot) -> None:
        self.service = service
        self._store = store

    def staging_dir(self, request_id: str) -> Path:
        """Where exports wait to be packaged: the subject's data in the clear, so private (0700,
        files 0600) and removed once the package is stored and recorded (DESIGN invariant 7)."""
        return self.service.settings.packages_path / request_id / "staging"

    def private_staging_dir(self, request_id: str) -> Path:
        """The staging directory, created (with the request's package directory) private."""
        private_dir(self.staging_dir(request_id).parent)
        return private_dir(self.staging_dir(request_id))

    def package_file(self, request_id: str) -> Path:
        """Where the package is written before the store takes it."""
        return self.staging_dir(request_id).parent / PACKAGE_FILE

    def discovered_dir(self, request_id: str) -> Path:
        """Refs files: evidence (sealed into every bundle version), so kept apart from the package staging."""
        return self.service.settings.home / "discovered" / request_id

    def export_lost(self, request_id: str, state: RequestState, system: str) -> bool:
        """An export the ledger recorded whose staging file is gone (or not the recorded bytes)
        before the package was made: the package needs it, so the export runs again."""
        done = state.systems.get(system)
        if (done is None or "export" not in done.steps_done or state.package is not None
                or RequestType(state.type) not in EXPORT_TYPES):
            return False
        return sha256_file(self.staging_dir(request_id) / f"{system}.jsonl") != done.export_sha256

    def clear_crashed_run(self, request_id: str) -> None:
        """Remove what a killed run of this request left half-written: partial exports, package
        spill files and partial packages. Complete exports stay (a re-run resumes from them)."""
        removed = remove_leftovers(self.staging_dir(request_id).parent)
        staging = self.staging_dir(request_id)
        if staging.is_dir():
            removed += [p.name for p in staging.glob("*.part") if remove_tree(p)]
        if removed:
            log.info("request %s: removed %d file(s) left by an interrupted run", request_id, len(removed))

    @staticmethod
    def staging_needed(state: RequestState) -> bool:
        """Only an export request still to be packaged needs its staging (a re-run resumes from it)."""
        return RequestType(state.type) in EXPORT_TYPES and state.package is None and not state.closed

    def clear_unneeded(self, request_id: str) -> bool:
        """Remove the request's staging and partial files if nothing will package them any more
        (package recorded, or the request closed): a kill after recording the package left them."""
        directory = self.staging_dir(request_id).parent
        copy = None if self.keeps_local_packages() else directory / PACKAGE_FILE
        if not (directory / "staging").exists() and not leftovers(directory) and not (copy and copy.exists()):
            return False
        try:
            state = self.service.state(request_id)
        except LedgerError:
            return False  # not a request of this ledger: not ours to judge
        if self.staging_needed(state):
            return False
        remove_tree(directory / "staging")
        remove_leftovers(directory)
        if state.package:
            self.remove_local_package_copy(request_id, state.package)
        return True

    def sweep(self) -> list[str]:
        """`clear_unneeded` for every request with files under the packages directory (the
        nightly purge calls it: a cancelled request's staging waits for no run). Open requests
        keep theirs. Returns the request ids swept."""
        root = self.service.settings.packages_path
        if not root.is_dir():
            return []
        swept = [entry.name for entry in sorted(root.iterdir())
                 if entry.is_dir() and self.clear_unneeded(entry.name)]
        if swept:
            log.info("removed the staging of %d request(s) that no longer need it", len(swept))
        return swept

    def keeps_local_packages(self) -> bool:
        """Does the store keep packages where the sealing writes them (embedded mode)? Read from
        the configuration: opening an S3 store would ask the network."""
        store = self._store.opened
        if store is not None:
            if not isinstance(store, LocalEvidenceStore):
                return False
            kept = store.package_dir
        else:
            config = config_from_settings(self.service.settings)
            if config.backend != "local":
                return False
            kept = Path(config.local_package_dir)
        return kept.resolve() == self.service.settings.packages_path.resolve()

    def stored_package_file(self, request_id: str, package: dict[str, Any]) -> Path | None:
        """The stored package as a local file, or None where the store is not a directory (S3)."""
        uri = str(package.get("uri") or "")
        if uri.startswith("file:"):
            return Path(url2pathname(urlparse(uri).path))
        if uri:
            return None
        return self.service.settings.packages_path / request_id / package["file"]  # recorded before URIs

    def remove_local_package_copy(self, request_id: str, package: dict[str, Any]) -> None:
        """Where the store keeps the package elsewhere (S3), the file the sealing wrote was one more
        staging copy of the subject's data: gone once the stored one is recorded."""
        written = self.package_file(request_id)
        stored = self.stored_package_file(request_id, package) if package else None
        if package and written.exists() and (stored is None or stored.resolve() != written.resolve()):
            remove_tree(written)


def sha256_file(path: Path) -> str | None:
    """The file's SHA-256 (hex), or None when there is no such file."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
