"""The end of a run: the subject's package, and the evidence bundle sealed once per outcome.

The bundle is a pure function of the ledger up to the outcome it seals (DESIGN invariant 5): a
re-run after a crash while sealing rebuilds the very bytes it stored, and the store accepts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsr.adapters.storage import BundleConflict
from dsr.bundle import build_bundle, discovered_hashes
from dsr.discovery import refs_file_name
from dsr.files import remove_tree
from dsr.ledger.store import LedgerError
from dsr.package import ExportChanged, write_package
from dsr.run.lease import LeasedLedger
from dsr.run.probe import CrashProbe
from dsr.run.staging import Staging, StoreSlot
from dsr.service import DsrService
from dsr.signing import load_or_create_signing_key
from dsr.state import EventType, RequestState, derive_state


class SealConflict(LedgerError):
    """The ledger no longer builds the bundle already sealed under a version: it was edited."""

    def __init__(self, request_id: str, version: int, through: int) -> None:
        super().__init__(
            f"the ledger of request {request_id} no longer matches its sealed bundle v{version}: the events "
            f"through seq {through} build a different bundle from the one stored, so events were removed or "
            "changed after it was sealed; nothing was sealed (run `dsr ledger verify`, and "
            f"`dsr bundle verify FILE --request {request_id}` on the stored bundle)")
        self.request_id, self.version = request_id, version


class _SealedMeanwhile(Exception):
    """Another writer sealed this outcome first (an unleased finish racing one)."""


class Sealer:
    """Packages a request's exports for the subject and seals its evidence."""

    def __init__(self, service: DsrService, writer: LeasedLedger, staging: Staging, store: StoreSlot,
                 crash: CrashProbe) -> None:
        self.service = service
        self.writer = writer
        self.staging = staging
        self.store = store
        self.crash = crash

    def package(self, request_id: str, state: RequestState) -> None:
        """Package every system's recorded export (and a manual export's attachments), store it,
        record it, and remove the staging copies."""
        exports = {name: self.staging.staging_dir(request_id) / f"{name}.jsonl" for name in sorted(state.systems)}
        for name, path in exports.items():
            if not path.is_file():
                raise RuntimeError(f"export of {name} changed since it was recorded; re-run the request")
        target = self.staging.package_file(request_id)
        attachments = {
            f"attachments/{name}/{a['name']}": self.service.attachment_path(request_id, name, a["name"])
            for name, system in sorted(state.systems.items()) if system.task and system.task.get("step") == "export"
            for a in system.task.get("attachments", [])
        }
        try:
            # Each export is checked against the hash the ledger recorded as packaging reads it
            # (a gigabyte read once, not twice), before any package is written.
            digest, size = write_package(target, request_id, state.to_view(), exports,
                                         self.service.policy.subject_summary, extra_files=attachments,
                                         names=self.service.data_map.display_names(),
                                         export_sha256={name: state.systems[name].export_sha256 for name in exports})
        except ExportChanged as exc:
            raise RuntimeError(f"{exc}; re-run the request") from None
        stored = self.store.get().put_package(request_id, target)
        package = {
            "sha256": digest, "bytes": size, "file": target.name, "uri": stored.uri,
            "formats": ["json", "csv", "html"], "records": sum(s.exported or 0 for s in state.systems.values()),
        }
        self.writer.append(request_id, EventType.PACKAGE_CREATED, package)
        # Stored and its hash in the chain: the staging copies are no longer needed by anything
        # (a crash before this line is cleared by the next run's `begin`).
        remove_tree(self.staging.staging_dir(request_id))
        self.staging.remove_local_package_copy(request_id, package)

    def seal(self, request_id: str, state: RequestState) -> tuple[Path | None, str | None]:
        """Seal evidence of the events up to the latest outcome, once per outcome."""
        through = state.completed_through_seq
        if through is None:
            return None, None
        for sealed in state.bundles:
            if sealed["through_seq"] == through:
                return self.bundle_location(request_id, sealed)
        version = len(state.bundles) + 1
        # The same events give the same bytes, so a re-run after a crash here rewrites the very
        # file it left (the store accepts identical bytes) and records it once.
        try:
            stored = self.store.get().put_bundle(request_id, version, self.build_bundle_bytes(request_id, through))
        except BundleConflict:
            # The events up to `through` no longer build the bundle sealed as this version: the
            # ledger lost or changed events after it was sealed (a truncated tail, say).
            raise SealConflict(request_id, version, through) from None
        self.crash("sealing")
        sealed = {"version": version, "sha256": stored.sha256, "through_seq": through,
                  "file": stored.key.rsplit("/", 1)[-1], "uri": stored.uri,
                  "retain_until": stored.retain_until.isoformat() if stored.retain_until else None}

        def not_sealed_yet(current: RequestState) -> None:
            if any(b["through_seq"] == through for b in current.bundles) or len(current.bundles) + 1 != version:
                raise _SealedMeanwhile()

        try:
            self.writer.append(request_id, EventType.BUNDLE_SEALED, sealed, not_sealed_yet)
        except _SealedMeanwhile:
            return self.seal(request_id, self.service.state(request_id))
        return self.bundle_location(request_id, sealed)

    def bundle_location(self, request_id: str, sealed: dict[str, Any]) -> tuple[Path | None, str]:
        """(local file or None, URI) of a sealed bundle; S3 bundles have no local file."""
        uri = str(sealed.get("uri") or "")
        if uri.startswith("s3://"):
            return None, uri
        local = self.service.settings.bundles_path / request_id / sealed["file"]
        return local, uri or local.resolve().as_uri()

    def build_bundle_bytes(self, request_id: str, through_seq: int) -> bytes:
        """The bundle is a pure function of the ledger up to `through_seq` (DESIGN invariant 5)."""
        events = self.service.ledger.events(request_id, through_seq=through_seq)
        state = derive_state(events)
        signer = load_or_create_signing_key(self.service.settings.signing_key_path)
        refs = {name: self.staging.discovered_dir(request_id) / refs_file_name(name)
                for name in discovered_hashes(events)}
        return build_bundle(events, request_view=state.to_view(),
                            system_views={n: s.to_view() for n, s in sorted(state.systems.items())},
                            signer=signer, discovered=refs)
