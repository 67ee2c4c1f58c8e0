"""The retention purge: per data category, every system, legal holds honoured, guarded.

One run is its own ledger chain (`purge-<uuid>`): `purge.started` (cutoffs, filters, holds),
`purge.guard_stopped` when the blast-radius guard trips, one `purge.batch` per vendor call,
`purge.completed`, and a signed run report (the evidence bundle's format) sealed over the chain.

How a run goes:
1. Cutoffs per category from the policy (months back from today, or the tax table counted from
   the end of the fiscal year). A record is governed by its category with the *longest*
   retention; each record is considered once, under that category.
2. Protected records: every record of a subject under an active legal hold or with an open
   request is found by exact discovery and skipped (PIPEDA s.8(8); DPA 2018 s.173).
3. Counting pass: if a system would lose more than `max_share` of its records or more than
   `max_count`, the run stops before deleting anything (`purge.guard_stopped`) until approved.
4. Purge pass, streamed: refs come from the connector page by page and go back in the vendor's
   largest batches; nothing holds the whole set in memory. A crash loses nothing: a re-run
   finds only what is still there (already purged batches are never re-sent).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from dsr.bundle import build_bundle
from dsr.config import Policy
from dsr.contract import Connector, DataCategory, RecordRef, Subject
from dsr.execution import crash_point
from dsr.files import create_exclusive
from dsr.holds import held_subjects
from dsr.models import OPEN_STATUSES
from dsr.policy import fiscal_year_end, tax_retention_end
from dsr.service import DsrService, RequestStateError
from dsr.signing import load_or_create_signing_key

log = logging.getLogger(__name__)

PURGE_PREFIX = "purge-"
ACTOR = "retention-purge"


def tax_cutoff(policy: Policy, today: date) -> date:
    """The first anchor date whose tax retention has NOT ended: anchors before it may go."""
    jurisdictions = (list(policy.tax_retention) if policy.retention.tax_jurisdiction == "longest"
                     else [policy.retention.tax_jurisdiction])
    # Walk fiscal year ends backwards until every jurisdiction's retention of that year has ended.
    end = fiscal_year_end(today, policy.fiscal_year_end)
    for _ in range(60):
        if all(tax_retention_end(end, j, policy) < today for j in jurisdictions):
            return end + timedelta(days=1)
        end = fiscal_year_end(end - relativedelta(years=1), policy.fiscal_year_end)
    return date.min


def cutoffs(policy: Policy, today: date) -> dict[DataCategory, date]:
    """Per category: records whose retention date is before this day have expired."""
    result: dict[DataCategory, date] = {}
    for category, rule in policy.retention.rules.items():
        result[category] = tax_cutoff(policy, today) if rule.tax else today - relativedelta(months=rule.keep_months)
    return result


def governing(categories: Sequence[DataCategory], limits: dict[DataCategory, date]) -> DataCategory | None:
    """The category whose retention ends last (earliest cutoff); None if any category has no rule
    (then nothing says the record may go, so it stays)."""
    if not categories or any(c not in limits for c in categories):
        return None
    return min(categories, key=lambda c: (limits[c], c.value))


@dataclass
class Tally:
    """One system and category of one run: what the run report shows."""

    system: str
    category: str
    cutoff: str
    candidates: int = 0
    held_back: int = 0
    hold_refs: set[str] = field(default_factory=set)
    purged: int = 0
    failed: int = 0
    api_calls: int = 0
    seconds: float = 0.0

    def to_view(self) -> dict[str, Any]:
        view = asdict(self)
        view["hold_refs"] = sorted(self.hold_refs)
        view["seconds"] = round(self.seconds, 3)
        return view


@dataclass
class PurgeReport:
    run_id: str
    dry_run: bool
    status: str  # completed | needs_approval | completed_with_failures
    tallies: list[Tally]
    guard: list[dict[str, Any]]
    report_path: Path | None = None

    @property
    def purged(self) -> int:
        return sum(t.purged for t in self.tallies)


# A ledger checkpoint every CHECKPOINT_RECORDS records, or fewer checkpoints for a big run (at most
# MAX_CHECKPOINTS per system and category), so the run's chain, and the report sealed over it, stay
# the same size however many records go. A crash can leave at most one checkpoint's worth of
# purged records out of the ledger (they are gone from the vendor all the same).
CHECKPOINT_RECORDS = 2_000
MAX_CHECKPOINTS = 50


class _Checkpoint:
    """Accumulates vendor batches between two ledger checkpoints."""

    def __init__(self, every: int = CHECKPOINT_RECORDS) -> None:
        self.every = every
        self.reset()

    def reset(self) -> None:
        self.records = self.purged = self.failed = self.api_calls = self.calls = 0
        self.receipts: list[str] = []
        self.digest = hashlib.sha256()
        self.first: str | None = None
        self.last: str | None = None

    def add(self, batch: Sequence[RecordRef], purged: int, failed: int, api_calls: int, receipt: str | None) -> None:
        keys = sorted(r.key for r in batch)
        self.first = self.first or keys[0]
        self.last = keys[-1]
        self.digest.update("\n".join(keys).encode() + b"\n")
        self.records += len(batch)
        self.purged += purged
        self.failed += failed
        self.api_calls += api_calls
        self.calls += 1
        if receipt and len(self.receipts) < 5:  # a sample; the count of calls says the rest
            self.receipts.append(receipt)

    def payload(self) -> dict[str, Any]:
        return {"records": self.records, "purged": self.purged, "failed": self.failed, "vendor_calls": self.calls,
                "api_calls": self.api_calls, "vendor_receipt_ids": self.receipts, "first": self.first,
                "last": self.last, "keys_sha256": self.digest.hexdigest()}


ConnectFn = Callable[[str], Connector]
ProgressFn = Callable[[str, str, int, int], None]  # system, category, done, expected


class Purger:
    """Runs retention purges against the systems of the data map."""

    def __init__(self, service: DsrService, connect: ConnectFn) -> None:
        self.service = service
        self.connect = connect
        self._every: dict[DataCategory, date] = {}

    def run(self, *, dry_run: bool = False, systems: Sequence[str] | None = None,
            categories: Sequence[str] | None = None, approve: str | None = None, today: date | None = None,
            progress: ProgressFn | None = None) -> PurgeReport:
        policy = self.service.policy
        today = today or datetime.now(ZoneInfo(policy.retention.timezone)).date()
        chosen_systems = self._systems(systems)
        every = cutoffs(policy, today)
        # `categories` narrows which governing categories this run purges; the governing category
        # of a record is still decided against every rule.
        limits = {c: d for c, d in every.items() if not categories or c.value in categories}
        self._every = every
        if categories:
            unknown = set(categories) - {c.value for c in policy.retention.rules}
            if unknown:
                raise RequestStateError(f"category: no retention rule for {', '.join(sorted(unknown))}")
        approved = self._approved(approve)
        run_id = PURGE_PREFIX + str(uuid.uuid4())
        self._append(run_id, "purge.started", {
            "dry_run": dry_run, "today": today.isoformat(), "systems": chosen_systems,
            "cutoffs": {c.value: d.isoformat() for c, d in sorted(limits.items())},
            "approves": approve, "guard": {"max_share": policy.retention.max_share,
                                           "max_count": policy.retention.max_count},
        }, new=True)
        connectors = {name: self.connect(name) for name in chosen_systems}
        # A system where deleting takes a person (Wistia) is left to its owner, and said so.
        by_hand = sorted(n for n, c in connectors.items() if "erase" in c.info.manual_steps)
        if by_hand:
            self._append(run_id, "purge.skipped", {"systems": by_hand, "reason": "no delete API: done by hand"})
            for name in by_hand:
                close = getattr(connectors.pop(name), "close", None)
                if callable(close):
                    close()
        try:
            protected = {name: self._protected(c) for name, c in connectors.items()}
            tallies = {(s, c.value): Tally(s, c.value, d.isoformat()) for s in connectors
                       for c, d in sorted(limits.items())}
            guard = self._count(connectors, limits, protected, tallies, approved)
            if guard and not approved:
                for trip in guard:
                    self._append(run_id, "purge.guard_stopped", trip)
                return self._finish(run_id, dry_run, "needs_approval", tallies, guard)
            if not dry_run:
                self._purge(run_id, connectors, limits, protected, tallies, progress)
        finally:
            for connector in connectors.values():
                close = getattr(connector, "close", None)
                if callable(close):
                    close()
        failed = any(t.failed for t in tallies.values())
        return self._finish(run_id, dry_run, "completed_with_failures" if failed else "completed", tallies, guard)

    # -- steps ------------------------------------------------------------------------------------

    def _systems(self, wanted: Sequence[str] | None) -> list[str]:
        known = self.service.data_map.enabled()
        if wanted:
            unknown = set(wanted) - set(known)
            if unknown:
                raise RequestStateError(f"system: not in the data map: {', '.join(sorted(unknown))}")
        names = list(wanted) if wanted else list(known)
        # Only systems whose connector can list expired records take part.
        return sorted(n for n in names if known[n].kind != "manual")

    def _approved(self, approve: str | None) -> dict[str, Any] | None:
        if approve is None:
            return None
        if not approve.startswith(PURGE_PREFIX) or not self.service.ledger.exists(approve):
            raise RequestStateError(f"approve: no purge run {approve}")
        events = self.service.ledger.events(approve)
        if not any(e.type == "purge.guard_stopped" for e in events):
            raise RequestStateError(f"approve: run {approve} did not stop at the guard; nothing to approve")
        return {"run": approve, "trips": [e.payload for e in events if e.type == "purge.guard_stopped"]}

    def _protected(self, connector: Connector) -> dict[str, str]:
        """Record key -> why it must stay (a hold reference, or an open request)."""
        keep: dict[str, str] = {}
        subjects = [(f"hold {ref}", email) for ref, email in held_subjects(self.service)]
        for row in self.service.ledger.index(statuses=sorted(s.value for s in OPEN_STATUSES)):
            email = self.service.ledger.identity(row.request_id)
            if email:
                subjects.append((f"open request {row.request_id}", email))
        for why, email in subjects:
            subject = Subject(email=email, identity_hash=self.service.identity_hash(email))
            if "discover" in connector.info.manual_steps:
                continue
            for ref in connector.discover(subject):
                keep.setdefault(ref.key, why)
        return keep

    def _candidates(self, connector: Connector, category: DataCategory, limits: dict[DataCategory, date],
                    ) -> Iterator[RecordRef]:
        expired = getattr(connector, "expired", None)
        if not callable(expired):
            return iter(())
        return (ref for ref in expired(category, limits[category])
                if governing(ref.categories, self._every) == category)

    def _count(self, connectors: dict[str, Connector], limits: dict[DataCategory, date],
               protected: dict[str, dict[str, str]], tallies: dict[tuple[str, str], Tally],
               approved: dict[str, Any] | None) -> list[dict[str, Any]]:
        policy = self.service.policy.retention
        trips = []
        for name, connector in connectors.items():
            total_candidates = 0
            for category in sorted(limits):
                tally = tallies[(name, category.value)]
                for ref in self._candidates(connector, category, limits):
                    tally.candidates += 1
                    if ref.key in protected[name]:
                        tally.held_back += 1
                        tally.hold_refs.add(protected[name][ref.key])
                    else:
                        total_candidates += 1
            counter = getattr(connector, "total_records", None)
            total = counter() if callable(counter) else None
            share = (total_candidates / total) if total else None
            if total_candidates > policy.max_count or (share is not None and share > policy.max_share):
                trips.append({"system": name, "would_purge": total_candidates, "records": total,
                              "share": round(share, 4) if share is not None else None,
                              "max_share": policy.max_share, "max_count": policy.max_count})
        return trips

    def _purge(self, run_id: str, connectors: dict[str, Connector], limits: dict[DataCategory, date],
               protected: dict[str, dict[str, str]], tallies: dict[tuple[str, str], Tally],
               progress: ProgressFn | None) -> None:
        for name, connector in connectors.items():
            size = max(1, connector.info.max_batch)
            purge = getattr(connector, "purge", None)
            if not callable(purge):
                continue
            for category in sorted(limits):
                tally = tallies[(name, category.value)]
                started = time.monotonic()
                expected = max(0, tally.candidates - tally.held_back)
                checkpoint = _Checkpoint(every=max(CHECKPOINT_RECORDS, -(-expected // MAX_CHECKPOINTS)))
                batch: list[RecordRef] = []
                for ref in self._candidates(connector, category, limits):
                    if ref.key in protected[name]:
                        continue
                    batch.append(ref)
                    if len(batch) >= size:
                        self._send(run_id, purge, batch, tally, checkpoint, progress)
                        batch = []
                if batch:
                    self._send(run_id, purge, batch, tally, checkpoint, progress)
                self._checkpoint(run_id, tally, checkpoint)
                tally.seconds += time.monotonic() - started

    def _send(self, run_id: str, purge: Callable[[Sequence[RecordRef]], Any], batch: list[RecordRef],
              tally: Tally, checkpoint: _Checkpoint, progress: ProgressFn | None) -> None:
        """One vendor batch; every CHECKPOINT_RECORDS records, a ledger checkpoint."""
        receipt = purge(batch)
        crash_point("purge-sent")  # the vendor purged, the ledger does not know yet: a re-run lists what is left
        done = sum(1 for o in receipt.outcomes if o.done)
        tally.purged += done
        tally.failed += len(receipt.outcomes) - done
        tally.api_calls += receipt.api_calls
        checkpoint.add(batch, done, len(receipt.outcomes) - done, receipt.api_calls, receipt.vendor_receipt_id)
        if checkpoint.records >= checkpoint.every:
            self._checkpoint(run_id, tally, checkpoint)
        if progress:
            progress(tally.system, tally.category, tally.purged + tally.failed, tally.candidates - tally.held_back)

    def _checkpoint(self, run_id: str, tally: Tally, checkpoint: _Checkpoint) -> None:
        """What was sent since the last checkpoint: counts, receipts, a hash over the record keys.

        Checkpoints (not one event per vendor call) keep the run's chain, and the report sealed
        over it, small however many records go: memory stays flat. A crash loses nothing: the
        next run finds only what is still there.
        """
        if checkpoint.records:
            self._append(run_id, "purge.batch", {"system": tally.system, "category": tally.category,
                                                 **checkpoint.payload()})
            crash_point("purge-checkpoint")
        checkpoint.reset()

    def _finish(self, run_id: str, dry_run: bool, status: str, tallies: dict[tuple[str, str], Tally],
                guard: list[dict[str, Any]]) -> PurgeReport:
        views = [t.to_view() for t in tallies.values()]
        crash_point("purge-finishing")
        self._append(run_id, "purge.completed", {"status": status, "dry_run": dry_run, "tallies": views})
        report = PurgeReport(run_id, dry_run, status, list(tallies.values()), guard)
        report.report_path = self._seal(run_id, dry_run, status, tallies)
        return report

    def _seal(self, run_id: str, dry_run: bool, status: str, tallies: dict[tuple[str, str], Tally]) -> Path:
        """The signed run report: the evidence bundle's format, over the run's own chain."""
        events = self.service.ledger.events(run_id)
        by_system: dict[str, dict[str, Any]] = {}
        for tally in tallies.values():
            by_system.setdefault(tally.system, {"system": tally.system, "categories": []})["categories"].append(
                tally.to_view())
        summary = {"request_id": run_id, "type": "retention-purge", "status": status, "dry_run": dry_run,
                   "purged": sum(t.purged for t in tallies.values()),
                   "held_back": sum(t.held_back for t in tallies.values()),
                   "failed": sum(t.failed for t in tallies.values())}
        signer = load_or_create_signing_key(self.service.settings.signing_key_path)
        data = build_bundle(events, request_view=summary, system_views=by_system, signer=signer)
        target = self.service.settings.home / "purge-reports" / f"{run_id}.zip"
        crash_point("purge-sealing")
        create_exclusive(target, data)
        return target

    def _append(self, run_id: str, kind: str, payload: dict[str, Any], *, new: bool = False) -> None:
        self.service.ledger.append(run_id, kind, payload, actor=ACTOR, expect_new=new, project=False,
                                   at=datetime.now(UTC))
