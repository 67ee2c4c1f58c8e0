"""The retention purge: per data category, every system, legal holds honoured, guarded.

One run is its own ledger chain (`purge-<uuid>`): `purge.started` (cutoffs, filters, holds),
`purge.guard_stopped` when the blast-radius guard trips, `purge.batch` checkpoints of the vendor
calls, `purge.left_over` where more records had expired than were counted, `purge.completed`, and a
signed run report (the evidence bundle's format) sealed over the chain.

How a run goes:
1. Cutoffs per category from the policy (months back from today, or the tax table counted from
   the end of the fiscal year). A record is governed by its category with the *longest*
   retention; each record is considered once, under that category.
2. Protected records: every record of a subject under an active legal hold or with an open
   request is found by exact discovery and skipped (PIPEDA s.8(8); DPA 2018 s.173).
3. Counting pass. A system that can count its expired records (`CountsExpired`: Salesforce, a
   COUNT() query per object; HubSpot, a search's total per object) is counted, not listed; its protected records are checked for expiry
   by id. Any other system's expired records are listed once for all categories (a connector's
   `expired_all`: every object queried once, at the cutoff of the category that governs it; else
   `expired` once per category), counted per governing category, and the ones to purge are
   spilled to a file per system and category as they stream by. If a system would lose more than
   `max_share` of its records or more than `max_count`, the run stops before deleting anything
   (`purge.guard_stopped`) until approved.
4. Purge pass, streamed, in the vendor's largest batches; nothing holds the whole set in memory.
   A counted system is listed now, while its deletes are in flight (the listing's pages hide
   behind the deletes, and a record touched since the count is no longer listed); it never
   loses more records per category than were counted and approved: expired records found beyond
   the count stay for the next run (`left_over` in the report, `purge.left_over` in the chain).
   A listed system's refs are read back from its spill files (not listed again). A connector that
   says so (`purge_workers`: Salesforce, HubSpot) gets that many batches in flight at once, all paced by its
   one shared limiter; results are recorded in the order sent. A crash loses nothing: a re-run
   finds only what is still there (already purged batches are never re-sent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from dsr.bundle import build_bundle
from dsr.config import Policy
from dsr.contract import (
    Connector,
    CountsExpired,
    CountsRecords,
    DataCategory,
    ListsExpiredOnce,
    ParallelPurge,
    RecordRef,
    RetentionSource,
    Subject,
    close_connector,
)
from dsr.files import create_exclusive
from dsr.holds import held_subjects
from dsr.models import OPEN_STATUSES
from dsr.policy import fiscal_year_end, tax_retention_end
from dsr.rights import restricted_subjects
from dsr.run.probe import CrashProbe, no_crash
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
    left_over: int = 0  # expired records found beyond the count the guard passed: left for the next run
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


class _Spill:
    """The refs the purge pass will send, per system and category, in files (memory stays flat).

    Written by the counting pass in listing order, read back by the purge pass; one line per ref
    (object, id, anchor date; an object's categories are kept once). Ids and object names only,
    no personal data; the directory goes when the run ends.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="purge-", dir=root))
        self._files: dict[tuple[str, str], Any] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._kinds: dict[tuple[str, str], tuple[str, tuple[DataCategory, ...]]] = {}

    def _path(self, system: str, category: str) -> Path:
        name = self._names.setdefault((system, category), f"{len(self._names)}.jsonl")
        return self.dir / name

    def write(self, system: str, category: str, ref: RecordRef) -> None:
        key = (system, category)
        out = self._files.get(key)
        if out is None:
            out = self._files[key] = self._path(system, category).open("w", encoding="utf-8")
        self._kinds.setdefault((system, ref.object), (ref.system, ref.categories))
        anchor = ref.anchor_date.isoformat() if ref.anchor_date else None
        out.write(json.dumps([ref.object, ref.id, anchor], separators=(",", ":")) + "\n")

    def close_writes(self) -> None:
        for out in self._files.values():
            out.close()

    def read(self, system: str, category: str) -> Iterator[RecordRef]:
        if (system, category) not in self._files:
            return
        with self._path(system, category).open(encoding="utf-8") as lines:
            for line in lines:
                obj, ident, anchor = json.loads(line)
                ref_system, categories = self._kinds[(system, obj)]
                yield RecordRef(ref_system, obj, ident, categories, date.fromisoformat(anchor) if anchor else None)

    def remove(self) -> None:
        self.close_writes()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Governing:
    """Which of the run's categories governs a record of given categories, and its cutoff (memoised)."""

    def __init__(self, every: dict[DataCategory, date], limits: dict[DataCategory, date]) -> None:
        self._every, self._limits = every, limits
        self._known: dict[tuple[DataCategory, ...], DataCategory | None] = {}

    def category(self, categories: tuple[DataCategory, ...]) -> DataCategory | None:
        """The governing category if this run purges it, else None."""
        categories = tuple(categories)
        if categories not in self._known:
            category = governing(categories, self._every)
            self._known[categories] = category if category in self._limits else None
        return self._known[categories]

    def cutoff_of(self, categories: tuple[DataCategory, ...]) -> date | None:
        category = self.category(categories)
        return self._limits[category] if category is not None else None


@dataclass
class _Lane:
    """One system and category in the purge pass: its tally, its checkpoint, when its first batch
    went and its last answer came."""

    tally: Tally
    checkpoint: _Checkpoint
    started: float | None = None
    ended: float | None = None

    def seconds(self) -> float:
        return (self.ended - self.started) if self.started is not None and self.ended is not None else 0.0


ConnectFn = Callable[[str], Connector]
ProgressFn = Callable[[str, str, int, int], None]  # system, category, done, expected
Protected = dict[str, tuple[str, RecordRef]]  # record key -> why it stays, and the record


class Purger:
    """Runs retention purges against the systems of the data map."""

    def __init__(self, service: DsrService, connect: ConnectFn, crash: CrashProbe = no_crash) -> None:
        self.service = service
        self.connect = connect
        self.crash = crash  # called at each named crash point (chaos campaigns kill the process there)
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
                close_connector(connectors.pop(name))
        spill = None if dry_run else _Spill(self.service.settings.home / "purge-spill")
        try:
            protected = {name: self._protected(c) for name, c in connectors.items()}
            tallies = {(s, c.value): Tally(s, c.value, d.isoformat()) for s in connectors
                       for c, d in sorted(limits.items())}
            guard = self._count(connectors, limits, protected, tallies, approved, spill)
            if guard and not approved:
                for trip in guard:
                    self._append(run_id, "purge.guard_stopped", trip)
                return self._finish(run_id, dry_run, "needs_approval", tallies, guard)
            if spill is not None:
                spill.close_writes()
                self._purge(run_id, connectors, limits, spill, tallies, protected, progress)
        finally:
            if spill is not None:
                spill.remove()
            for connector in connectors.values():
                close_connector(connector)
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

    def _protected(self, connector: Connector) -> Protected:
        """Record key -> why it must stay (a hold reference, or an open request), and the record."""
        keep: Protected = {}
        subjects = [(f"hold {ref}", email) for ref, email in held_subjects(self.service)]
        # A restriction (GDPR 18) keeps the data as it is while it stands: not purged either.
        subjects += [(f"restriction {rid}", email) for rid, email in restricted_subjects(self.service)]
        for row in self.service.ledger.index(statuses=sorted(s.value for s in OPEN_STATUSES)):
            email = self.service.ledger.identity(row.request_id)
            if email:
                subjects.append((f"open request {row.request_id}", email))
        for why, email in subjects:
            subject = Subject(email=email, identity_hash=self.service.identity_hash(email))
            if "discover" in connector.info.manual_steps:
                continue
            for ref in connector.discover(subject):
                keep.setdefault(ref.key, (why, ref))
        return keep

    def _listing(self, connector: Connector, limits: dict[DataCategory, date],
                 ) -> Iterator[tuple[DataCategory, RecordRef]]:
        """Each expired record of the system once, with the category governing it (one of `limits`).

        With the connector's `expired_all` (ListsExpiredOnce), every object is listed once at the
        cutoff of its governing category; else `expired` (RetentionSource) once per category,
        keeping the records it governs. A connector with neither lists nothing.
        """
        every = self._every
        if isinstance(connector, ListsExpiredOnce):
            govern = _Governing(every, limits)
            for ref in connector.expired_all(govern.cutoff_of):
                category = govern.category(ref.categories)
                if category is not None:
                    yield category, ref
            return
        if not isinstance(connector, RetentionSource):
            return
        for category in sorted(limits):
            for ref in connector.expired(category, limits[category]):
                if governing(ref.categories, every) == category:
                    yield category, ref

    def _count(self, connectors: dict[str, Connector], limits: dict[DataCategory, date],
               protected: dict[str, Protected], tallies: dict[tuple[str, str], Tally],
               approved: dict[str, Any] | None, spill: _Spill | None) -> list[dict[str, Any]]:
        policy = self.service.policy.retention
        trips = []
        for name, connector in connectors.items():
            keep = protected[name]
            counting = _counting(connector)
            if counting is not None:
                total_candidates = self._count_without_listing(name, counting, limits, keep, tallies)
            else:
                total_candidates = self._count_listed(name, connector, limits, keep, tallies, spill)
            total = connector.total_records() if isinstance(connector, CountsRecords) else None
            share = (total_candidates / total) if total else None
            if total_candidates > policy.max_count or (share is not None and share > policy.max_share):
                trips.append({"system": name, "would_purge": total_candidates, "records": total,
                              "share": round(share, 4) if share is not None else None,
                              "max_share": policy.max_share, "max_count": policy.max_count})
        return trips

    def _count_listed(self, name: str, connector: Connector, limits: dict[DataCategory, date], keep: Protected,
                      tallies: dict[tuple[str, str], Tally], spill: _Spill | None) -> int:
        """A system's expired records listed and counted per governing category, the ones to purge spilled;
        how many the purge pass will delete."""
        total_candidates = 0
        for category, ref in self._listing(connector, limits):
            tally = tallies[(name, category.value)]
            tally.candidates += 1
            if ref.key in keep:
                tally.held_back += 1
                tally.hold_refs.add(keep[ref.key][0])
            else:
                total_candidates += 1
                if spill is not None:
                    spill.write(name, category.value, ref)
        return total_candidates

    def _count_without_listing(self, name: str, connector: CountsExpired, limits: dict[DataCategory, date],
                               keep: Protected, tallies: dict[tuple[str, str], Tally]) -> int:
        """A counting system's expired records per governing category, its protected ones among them
        held back (checked by id); how many the purge pass may delete."""
        govern = _Governing(self._every, limits)
        counted: dict[str, int] = {}
        for categories, count in connector.count_expired_all(govern.cutoff_of).items():
            category = govern.category(categories)
            if category is not None and count:
                tallies[(name, category.value)].candidates += count
                counted[category.value] = counted.get(category.value, 0) + count
        held = connector.expired_among([ref for _, ref in keep.values()], govern.cutoff_of) if keep else []
        for ref in held:
            category = govern.category(ref.categories)
            if category is not None:
                tally = tallies[(name, category.value)]
                tally.held_back += 1
                tally.hold_refs.add(keep[ref.key][0])
        return sum(max(0, tallies[(name, c)].candidates - tallies[(name, c)].held_back) for c in counted)

    def _purge(self, run_id: str, connectors: dict[str, Connector], limits: dict[DataCategory, date],
               spill: _Spill, tallies: dict[tuple[str, str], Tally], protected: dict[str, Protected],
               progress: ProgressFn | None) -> None:
        for name, connector in connectors.items():
            size = max(1, connector.info.max_batch)
            if not isinstance(connector, RetentionSource):
                continue
            purge = connector.purge
            workers = max(1, int(connector.purge_workers or 1)) if isinstance(connector, ParallelPurge) else 1
            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"purge-{name}") if workers > 1 else None
            lanes: dict[DataCategory, _Lane] = {}
            for category in sorted(limits):
                tally = tallies[(name, category.value)]
                expected = max(0, tally.candidates - tally.held_back)
                lanes[category] = _Lane(tally, _Checkpoint(every=max(CHECKPOINT_RECORDS,
                                                                     -(-expected // MAX_CHECKPOINTS))))
            try:
                if _counting(connector) is not None:
                    batches = self._listed_batches(connector, limits, protected[name], lanes, size)
                    self._send(run_id, pool, workers, purge, batches, progress)
                    for lane in lanes.values():
                        self._checkpoint(run_id, lane.tally, lane.checkpoint)
                        lane.tally.seconds += lane.seconds()
                        if lane.tally.left_over:
                            self._left_over(run_id, lane.tally)
                    continue
                for category, lane in lanes.items():
                    started = time.monotonic()
                    spilled = self._batches(spill.read(name, category.value), size)
                    self._send(run_id, pool, workers, purge, ((lane, batch) for batch in spilled), progress)
                    self._checkpoint(run_id, lane.tally, lane.checkpoint)
                    lane.tally.seconds += time.monotonic() - started
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)

    def _listed_batches(self, connector: Connector, limits: dict[DataCategory, date], keep: Protected,
                        lanes: dict[DataCategory, _Lane], size: int) -> Iterator[tuple[_Lane, list[RecordRef]]]:
        """A counted system's expired records, listed now, in batches per category; never more per
        category than the count the guard passed (the rest is counted as `left_over`). Nothing counted,
        nothing listed: what expired since is the next run's to count."""
        allowed = {category: max(0, lane.tally.candidates - lane.tally.held_back) for category, lane in lanes.items()}
        if not any(allowed.values()):
            return
        pending: dict[DataCategory, list[RecordRef]] = {category: [] for category in lanes}
        for category, ref in self._listing(connector, limits):
            if ref.key in keep:
                continue
            if not allowed[category]:
                lanes[category].tally.left_over += 1
                continue
            allowed[category] -= 1
            batch = pending[category]
            batch.append(ref)
            if len(batch) >= size:
                yield lanes[category], batch
                pending[category] = []
        for category, batch in pending.items():
            if batch:
                yield lanes[category], batch

    def _left_over(self, run_id: str, tally: Tally) -> None:
        """Expired records the purge found beyond its approved count: said in the chain, left for the next run."""
        self._append(run_id, "purge.left_over", {
            "system": tally.system, "category": tally.category, "counted": tally.candidates - tally.held_back,
            "left_over": tally.left_over, "reason": "found expired beyond the count the guard passed; the next run "
                                                    "counts them"})

    @staticmethod
    def _batches(refs: Iterator[RecordRef], size: int) -> Iterator[list[RecordRef]]:
        batch: list[RecordRef] = []
        for ref in refs:
            batch.append(ref)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _send(self, run_id: str, pool: ThreadPoolExecutor | None, workers: int,
              purge: Callable[[Sequence[RecordRef]], Any], batches: Iterator[tuple[_Lane, list[RecordRef]]],
              progress: ProgressFn | None) -> None:
        """Each batch to the vendor, one at a time or (with a pool) up to `workers` calls in flight and a
        few more queued, so none waits for the reader; each answer recorded in the order its batch was
        sent, as a sequential purge would."""
        if pool is None:
            for lane, batch in batches:
                lane.started = lane.started if lane.started is not None else time.monotonic()
                self._record(run_id, batch, purge(batch), lane, progress)
            return
        pending: deque[tuple[_Lane, list[RecordRef], Future[Any]]] = deque()
        try:
            for lane, batch in batches:
                lane.started = lane.started if lane.started is not None else time.monotonic()
                pending.append((lane, batch, pool.submit(purge, batch)))
                if len(pending) >= 2 * workers:
                    done_lane, sent, future = pending.popleft()
                    self._record(run_id, sent, future.result(), done_lane, progress)
            while pending:
                done_lane, sent, future = pending.popleft()
                self._record(run_id, sent, future.result(), done_lane, progress)
        except BaseException:
            for _, _, future in pending:
                future.cancel()  # not sent yet: the next run lists them again
            raise

    def _record(self, run_id: str, batch: list[RecordRef], receipt: Any, lane: _Lane,
                progress: ProgressFn | None) -> None:
        """One vendor batch's answer; every CHECKPOINT_RECORDS records, a ledger checkpoint."""
        tally, checkpoint = lane.tally, lane.checkpoint
        self.crash("purge-sent")  # the vendor purged, the ledger does not know yet: a re-run lists what is left
        done = sum(1 for o in receipt.outcomes if o.done)
        tally.purged += done
        tally.failed += len(receipt.outcomes) - done
        tally.api_calls += receipt.api_calls
        checkpoint.add(batch, done, len(receipt.outcomes) - done, receipt.api_calls, receipt.vendor_receipt_id)
        if checkpoint.records >= checkpoint.every:
            self._checkpoint(run_id, tally, checkpoint)
        if progress:
            progress(tally.system, tally.category, tally.purged + tally.failed, tally.candidates - tally.held_back)
        lane.ended = time.monotonic()

    def _checkpoint(self, run_id: str, tally: Tally, checkpoint: _Checkpoint) -> None:
        """What was sent since the last checkpoint: counts, receipts, a hash over the record keys.

        Checkpoints (not one event per vendor call) keep the run's chain, and the report sealed
        over it, small however many records go: memory stays flat. A crash loses nothing: the
        next run finds only what is still there.
        """
        if checkpoint.records:
            self._append(run_id, "purge.batch", {"system": tally.system, "category": tally.category,
                                                 **checkpoint.payload()})
            self.crash("purge-checkpoint")
        checkpoint.reset()

    def _finish(self, run_id: str, dry_run: bool, status: str, tallies: dict[tuple[str, str], Tally],
                guard: list[dict[str, Any]]) -> PurgeReport:
        views = [t.to_view() for t in tallies.values()]
        self.crash("purge-finishing")
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
        self.crash("purge-sealing")
        create_exclusive(target, data)
        return target

    def _append(self, run_id: str, kind: str, payload: dict[str, Any], *, new: bool = False) -> None:
        self.service.ledger.append(run_id, kind, payload, actor=ACTOR, expect_new=new, project=False,
                                   at=datetime.now(UTC))


def _counting(connector: Connector) -> CountsExpired | None:
    """The connector if the count pass counts its system's expired records (and its purge pass lists
    them), else None."""
    return connector if isinstance(connector, CountsExpired) and isinstance(connector, ListsExpiredOnce) else None
