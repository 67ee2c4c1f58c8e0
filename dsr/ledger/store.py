"""The ledger on a SQL database (SQLite by default, PostgreSQL in production).

Appends are the only write. Each append reads the request's chain head and inserts the next
event in one transaction; the unique (request_id, seq) constraint turns a race between two
writers into a retry instead of a fork.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from dsr.ledger.anchors import ANCHOR_EVENT_TYPES, Anchoring, Problem, SignedHead, check_head_log, check_mirror
from dsr.ledger.events import GENESIS_HASH, ChainError, LedgerEvent, format_timestamp, verify_chain
from dsr.ledger.schema import chain_heads as heads_table
from dsr.ledger.schema import events as events_table
from dsr.ledger.schema import identities as identities_table
from dsr.ledger.schema import requests as requests_table
from dsr.ledger.schema import subject_tokens as subject_tokens_table
from dsr.ledger.texts import TEXT_REDACTED_EVENT, KeptText, RedactText, TextWrite, read_texts
from dsr.pool_ping import ping_after_idle

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
APPEND_ATTEMPTS = 20
#: Locks the appends of this process are queued on, one chain always on the same one (see `append`).
CHAIN_LOCK_STRIPES = 256
#: Rows fetched at a time when a chain is streamed (verification): memory is about this many events.
VERIFY_BATCH = 1_000

#: Computes the derived index row for a request from its whole chain (new event included).
Projector = Callable[[Sequence[LedgerEvent]], Mapping[str, Any]]
#: The keyed hash of an identity, (kind, normalised value) -> "hmac-sha256:...": dsr.identity.identity_hash.
IdentityHasher = Callable[[str, str], str]
#: Serialises writers of the head log on PostgreSQL (one log, many writers): an arbitrary constant.
HEAD_LOG_LOCK = 0x64737268  # "dsrh"
#: The derived index's columns that a fold of the events must reproduce.
INDEX_COLUMNS = ("type", "regime", "status", "received_at", "due", "last_seq", "updated_at")


class LedgerError(RuntimeError):
    """The ledger could not do what was asked; the message says why."""


class UnknownRequest(LedgerError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id: no request {request_id!r} in the ledger")
        self.request_id = request_id


class ChainTampered(LedgerError):
    """A chain no longer agrees with its newest signed head (cut short, rewritten or deleted).

    Nothing more is written to it: an append would sign a new head over the damage and bless it.
    """

    def __init__(self, request_id: str, detail: str) -> None:
        super().__init__(f"the ledger of request {request_id} no longer matches its signed head: {detail}; "
                         "nothing was done (run `dsr ledger verify`)")
        self.request_id = request_id


class IdentityTampered(LedgerError):
    """The identity row of a request is not the identity its chain was received with.

    The message names the request, never an address: the row may hold anyone's.
    """

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id}: the identity row does not match the chain (its keyed hash "
                         "differs from the one recorded at request.received); nothing was done "
                         "(run `dsr ledger verify`)")
        self.request_id = request_id


@dataclass
class LedgerAudit:
    """What `Ledger.audit` found: events verified per chain, problems, and warnings.

    A warning is a weakened anchor rather than a proof of tampering (the anchor file lacks
    entries the table holds: it was cut, or a writer died between commit and mirror).
    """

    counts: dict[str, int]
    problems: list[Problem]
    warnings: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class IndexRow:
    request_id: str
    type: str
    regime: str
    status: str
    received_at: str
    due: str | None
    updated_at: str
    last_seq: int


def create_ledger_engine(url: str, *, for_writes: bool = True) -> Engine:
    """An engine tuned for the ledger.

    On SQLite (WAL mode) the write engine starts every transaction IMMEDIATE: a writer holds the
    write lock from its first read of the chain head, so two writers queue (busy timeout)
    instead of failing on a stale snapshot. The read engine never takes that lock (each
    statement reads a consistent WAL snapshot), so a reader can never block a writer.
    """
    if not url.startswith("sqlite"):
        return ping_after_idle(create_engine(url))
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we say when transactions begin, not the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    if for_writes:
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


#: Serialises schema upgrades on PostgreSQL (processes opening one ledger at once): an arbitrary constant.
SCHEMA_LOCK = 0x64737275  # "dsru"


class SchemaOutOfDate(LedgerError):
    """The ledger's schema is not the one this code needs; a release step (`dsr db upgrade`) fixes it."""


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the ledger's schema revision, or None for an empty database; the newest this code knows)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None  # the package ships its migrations
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (no-op when it is already there).

    Many processes may open one ledger at once: on PostgreSQL the upgrade runs under an advisory
    lock held to its commit, so the second one waits and then finds nothing to do (Alembic reads
    the revision again inside the lock); on SQLite the write transaction is already exclusive.
    """
    config = _alembic_config()
    current, head = schema_revisions(engine)
    if current == head:
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def require_current_schema(engine: Engine) -> None:
    """Refuse a ledger whose schema is not this code's (a fleet upgrades it once, as a release step)."""
    current, head = schema_revisions(engine)
    if current != head:
        raise SchemaOutOfDate(f"the ledger's schema is at revision {current or 'none (empty database)'}, this "
                              f"release needs {head}: run `dsr db upgrade` once (the release step), then start "
                              "this process again")


class Ledger:
    """Append-only, hash-chained events per request, plus a derived index for listing."""

    def __init__(self, url: str, *, projector: Projector | None = None, auto_migrate: bool = True,
                 anchoring: Anchoring | None = None, identity_hasher: IdentityHasher | None = None,
                 require_current: bool = False) -> None:
        """Open (and migrate) the ledger at `url`.

        Args:
            projector: computes a request's index row from its events (dsr.state.index_row).
            anchoring: signs chain heads and mirrors them outside the database; without it no
                head is written and signatures are not checked (the service always sets one).
            identity_hasher: recomputes an identity's keyed hash, so that `identity` and `audit`
                catch an identity row whose value was swapped (dsr.identity.identity_hash).
        """
        self.url = url
        self.engine = create_ledger_engine(url)
        self.read_engine = create_ledger_engine(url, for_writes=False) if url.startswith("sqlite") else self.engine
        self._projector = projector
        self.anchoring = anchoring
        self.identity_hasher = identity_hasher
        self._chain_locks = tuple(threading.RLock() for _ in range(CHAIN_LOCK_STRIPES))
        if auto_migrate:
            migrate(self.engine)
        elif require_current:  # raises SchemaOutOfDate naming `dsr db upgrade`
            try:
                require_current_schema(self.engine)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()

    # -- writes ---------------------------------------------------------------------------

    def append(
        self,
        request_id: str,
        type: str,
        payload: Mapping[str, Any],
        *,
        actor: str,
        at: datetime | None = None,
        identity: tuple[str, str, str] | None = None,
        expect_new: bool = False,
        guard: Callable[[Sequence[LedgerEvent]], None] | None = None,
        project: bool = True,
        anchor: bool | None = None,
        texts: TextWrite | None = None,
    ) -> LedgerEvent:
        """Append one event to a request's chain and return it as stored.

        Args:
            identity: (kind, value, hash) to store beside the first event of a new request.
            expect_new: refuse when the request already has events (idempotent intake).
            guard: called with the current chain inside the transaction, before the append;
                it may raise to refuse (a state check that cannot race with another writer).
            project: keep the request index up to date (off for chains that are not requests:
                retention runs, legal holds); then only the chain's head is read, so long chains
                append in constant time.
            anchor: sign the new head into the head log (with anchoring set). Default: every
                append of a request chain (project), and the closing events of other chains
                (ANCHOR_EVENT_TYPES), so a purge of millions of events signs a handful of heads.
            texts: free text the event references by hash, kept (or redacted) beside the chain in
                the same transaction (dsr.ledger.texts).

        Raises ChainTampered, writing nothing, when the chain disagrees with its newest signed head.
        """
        if anchor is None:
            anchor = project or type in ANCHOR_EVENT_TYPES
        # Threads of this process writing one chain (a request's systems run side by side) take
        # turns here. Racing in the database instead, each would wait on the other's uncommitted
        # row of the same seq, fail on its unique key, sleep and redo the whole append (profiled
        # at volume: most of a batch run's ledger time). Other processes still race and retry.
        with self._chain_locks[zlib.crc32(request_id.encode()) % CHAIN_LOCK_STRIPES]:
            return self._append(request_id, type, payload, actor=actor, at=at, identity=identity,
                                expect_new=expect_new, guard=guard, project=project, anchor=anchor, texts=texts)

    def _append(self, request_id: str, type: str, payload: Mapping[str, Any], *, actor: str,
                at: datetime | None, identity: tuple[str, str, str] | None, expect_new: bool,
                guard: Callable[[Sequence[LedgerEvent]], None] | None, project: bool, anchor: bool,
                texts: TextWrite | None) -> LedgerEvent:
        signed: SignedHead | None = None
        last_error: Exception | None = None
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    # Only the head is needed to chain; the whole chain only for a guard or the index.
                    whole = guard is not None or (self._projector is not None and project)
                    # The signed head before the chain: on PostgreSQL each statement sees the latest
                    # commits, and a chain read first could look short of a head signed meanwhile.
                    head = self._newest_head(conn, request_id)
                    chain = self._load(conn, request_id) if whole else self._load_head(conn, request_id)
                    if expect_new and chain:
                        raise LedgerError(f"request_id: request {request_id!r} already exists")
                    self._check_head(conn, head, chain)
                    if not expect_new and not chain:
                        raise UnknownRequest(request_id)
                    if guard is not None:
                        guard(chain)
                    prev = chain[-1] if chain else None
                    new = LedgerEvent.create(
                        request_id=request_id,
                        seq=(prev.seq + 1) if prev else 1,
                        at=at or datetime.now(UTC),
                        actor=actor,
                        type=type,
                        payload=payload,
                        prev_hash=prev.hash if prev else GENESIS_HASH,
                    )
                    conn.execute(insert(events_table).values(
                        request_id=new.request_id, seq=new.seq, at=new.at, actor=new.actor, type=new.type,
                        payload=json.dumps(new.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                        prev_hash=new.prev_hash, hash=new.hash,
                    ))
                    if identity is not None:
                        kind, value, digest = identity
                        conn.execute(insert(identities_table).values(
                            request_id=request_id, kind=kind, value=value, hash=digest))
                    if texts is not None:
                        texts.apply(conn, request_id, new.at)
                    if whole and project:
                        self._project(conn, [*chain, new], exists=bool(chain))
                    if anchor and self.anchoring is not None:
                        signed = self._sign_head(conn, new, self.anchoring)
                self._mirror(signed)
                return new
            except (IntegrityError, OperationalError) as exc:
                # A concurrent writer took this seq, or held the lock too long: read the new head
                # and retry. Any other database error is real and goes straight up.
                if isinstance(exc, OperationalError) and not _is_contention(exc):
                    raise
                last_error = exc
                time.sleep(min(0.005 * (2**attempt), 0.25))
        raise LedgerError(f"could not append to request {request_id!r} after {APPEND_ATTEMPTS} attempts") from last_error

    # -- signed heads -------------------------------------------------------------------------

    @staticmethod
    def _newest_head(conn: Connection, request_id: str) -> SignedHead | None:
        row = conn.execute(select(heads_table).where(heads_table.c.request_id == request_id)
                           .order_by(heads_table.c.position.desc()).limit(1)).mappings().first()
        return SignedHead.from_dict(row) if row else None

    def _check_head(self, conn: Connection, head: SignedHead | None, chain: Sequence[LedgerEvent]) -> None:
        """Refuse to write to a chain that is shorter than, or differs from, its newest signed head."""
        if head is None:
            return
        problem = self._head_problem(conn, head, chain)
        if problem is not None:
            log.error("request %s: %s; refusing to append", head.request_id, problem)
            raise ChainTampered(head.request_id, problem)

    @classmethod
    def _head_problem(cls, conn: Connection, head: SignedHead, chain: Sequence[LedgerEvent]) -> str | None:
        """How `chain` (its head at least, or all of it) disagrees with `head`, or None."""
        if not chain:
            return f"its newest signed head is seq {head.seq} but it has no events (deleted)"
        last = chain[-1]
        if last.seq < head.seq:
            return f"its chain ends at seq {last.seq}, short of its newest signed head, seq {head.seq} (cut)"
        signed = next((e for e in chain if e.seq == head.seq), None)
        if signed is None:  # only the chain's head was loaded: fetch the signed event itself
            row = conn.execute(select(events_table).where(events_table.c.request_id == head.request_id,
                                                          events_table.c.seq == head.seq)).mappings().first()
            signed = cls._event(row) if row else None
        if signed is None or signed.hash != head.hash:
            return f"event seq {head.seq} is not the one its signed head names (rewritten)"
        return None

    def _sign_head(self, conn: Connection, new: LedgerEvent, anchoring: Anchoring,
                   reason: str | None = None) -> SignedHead:
        if conn.dialect.name == "postgresql":
            # One log, many writers: queue them (until commit) instead of letting them collide on
            # a position and redo their whole append. SQLite writers are already serialised.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": HEAD_LOG_LOCK})
        row = conn.execute(select(heads_table).order_by(heads_table.c.position.desc()).limit(1)).mappings().first()
        head = SignedHead.create(SignedHead.from_dict(row) if row else None, request_id=new.request_id,
                                 seq=new.seq, hash=new.hash, at=now_stamp(), reason=reason or new.type,
                                 signer=anchoring.signer)
        conn.execute(heads_table.insert(), head.to_dict())  # parameters apart: the statement compiles once
        return head

    def adopt_unsigned(self) -> tuple[list[str], list[Problem]]:
        """Sign the current head of every chain no signed head covers yet: chains written before
        signed heads existed (or by a ledger without a signing key). Trust on first use: it vouches
        for what is there now, so run it once, right after the upgrade. Chains with any other
        problem are left alone; returns (chains signed, those problems).
        """
        if self.anchoring is None:
            raise LedgerError("no signing key configured: nothing can be signed")
        found = self.audit()
        unsigned = "covered by no signed head"
        problems = [p for p in found.problems if unsigned not in p.what]
        broken = {p.subject for p in problems}
        adopted: list[str] = []
        for request_id in sorted(found.counts):
            if request_id in broken:
                continue
            with self.engine.begin() as conn:
                head = self._newest_head(conn, request_id)
                last = self._load_head(conn, request_id)
                if not last or (head is not None and head.seq >= last[-1].seq):
                    continue
                signed = self._sign_head(conn, last[-1], self.anchoring, reason="adopted")
            self._mirror(signed)
            adopted.append(request_id)
        return adopted, problems

    def _mirror(self, head: SignedHead | None) -> None:
        """Copy a committed head to the anchor file. The event stands whatever happens here: a
        failure is logged (and `audit` will say the file lacks the entry), never raised, since
        the caller would otherwise retry an append that succeeded."""
        if head is None or self.anchoring is None or self.anchoring.mirror is None:
            return
        try:
            self.anchoring.mirror.append(head)
        except OSError as exc:
            log.error("head log entry #%d not mirrored to %s: %s", head.position, self.anchoring.mirror.path,
                      exc.strerror or exc)

    def _project(self, conn: Connection, chain: Sequence[LedgerEvent], *, exists: bool) -> None:
        if self._projector is None:
            return
        row = dict(self._projector(chain))
        row.update(last_seq=chain[-1].seq, updated_at=chain[-1].at)
        if exists:
            conn.execute(update(requests_table).where(
                requests_table.c.request_id == chain[-1].request_id).values(**row))
        else:
            conn.execute(insert(requests_table).values(request_id=chain[-1].request_id, **row))

    def rebuild_index(self) -> int:
        """Recompute every index row from the events (the events are the record)."""
        count = 0
        with self.engine.begin() as conn:
            conn.execute(requests_table.delete())
            ids = conn.execute(select(events_table.c.request_id).distinct()).scalars().all()
            for request_id in ids:
                chain = self._load(conn, request_id)
                if chain and chain[0].type == "request.received":
                    self._project(conn, chain, exists=False)
                    count += 1
        return count

    # -- reads ----------------------------------------------------------------------------

    @classmethod
    def _load_head(cls, conn: Connection, request_id: str) -> list[LedgerEvent]:
        row = conn.execute(select(events_table).where(events_table.c.request_id == request_id)
                           .order_by(events_table.c.seq.desc()).limit(1)).mappings().first()
        return [cls._event(row)] if row else []

    @staticmethod
    def _event(r: Any) -> LedgerEvent:
        return LedgerEvent(r["request_id"], r["seq"], r["at"], r["actor"], r["type"], json.loads(r["payload"]),
                           r["prev_hash"], r["hash"])

    @classmethod
    def _load(cls, conn: Connection, request_id: str, through_seq: int | None = None) -> list[LedgerEvent]:
        query = select(events_table).where(events_table.c.request_id == request_id)
        if through_seq is not None:
            query = query.where(events_table.c.seq <= through_seq)
        rows = conn.execute(query.order_by(events_table.c.seq)).mappings().all()
        return [cls._event(r) for r in rows]

    def events(self, request_id: str, *, through_seq: int | None = None) -> list[LedgerEvent]:
        with self.read_engine.connect() as conn:
            chain = self._load(conn, request_id, through_seq)
        if not chain:
            raise UnknownRequest(request_id)
        return chain

    # -- free text beside the chain (dsr.ledger.texts) ------------------------------------------

    def free_texts(self, request_id: str) -> dict[str, KeptText]:
        """Hash -> the request's kept free text (text None once redacted)."""
        with self.read_engine.connect() as conn:
            return read_texts(conn, request_id)

    def redact_text(self, request_id: str, sha256: str, reason: str, *, actor: str,
                    project: bool = True) -> LedgerEvent:
        """Null a kept text and record `text.redacted` (its hash only); the chain still verifies."""
        return self.append(request_id, TEXT_REDACTED_EVENT, {"sha256": sha256}, actor=actor, project=project,
                           texts=RedactText(sha256, reason))

    def exists(self, request_id: str) -> bool:
        with self.read_engine.connect() as conn:
            return conn.execute(select(events_table.c.id).where(
                events_table.c.request_id == request_id).limit(1)).first() is not None

    def identity(self, request_id: str, kind: str = "email") -> str | None:
        """The address (or other identity) a chain is about, checked against the chain before use.

        The row lives outside the chain (so it can be destroyed), which is why every read proves
        it: the chain must verify and agree with its newest signed head, the row's hash must be
        the `identity_hash` recorded by the chain's first event, and (with an identity hasher)
        the value must hash to it. Anything else raises IdentityTampered or ChainTampered, so
        no caller acts on someone else's address. None when the row is gone (retention).
        """
        with self.read_engine.connect() as conn:
            row = conn.execute(select(identities_table).where(
                identities_table.c.request_id == request_id, identities_table.c.kind == kind)).mappings().first()
            if row is None:
                return None
            head = self._newest_head(conn, request_id)  # before the chain: a chain only grows meanwhile
            chain = self._load(conn, request_id)
            head_problem = self._head_problem(conn, head, chain) if head is not None else None
        try:
            verify_chain(chain, request_id)
        except ChainError as exc:
            head_problem = head_problem or str(exc)
        if head is not None and head_problem is None and self.anchoring is not None:
            head_problem = head.problem(self.anchoring.public_key)
        if head_problem is not None:
            log.error("request %s: %s; its identity is not used", request_id, head_problem)
            raise ChainTampered(request_id, head_problem)
        if self._identity_problem(chain, kind, row["value"], row["hash"]) is not None:
            log.error("request %s: the identity row does not match the chain; it is not used", request_id)
            raise IdentityTampered(request_id)
        return str(row["value"])

    def _identity_problem(self, chain: Sequence[LedgerEvent], kind: str, value: str, digest: str) -> str | None:
        if not chain:
            return "an identity row without a chain"
        recorded = chain[0].payload.get("identity_hash")
        if recorded != digest:
            return "the identity row does not match the chain (its hash is not the one at seq 1)"
        if self.identity_hasher is not None and self.identity_hasher(kind, value) != digest:
            return "the identity row does not match the chain (its value does not hash to its hash)"
        return None

    def index(self, *, statuses: Sequence[str] | None = None) -> list[IndexRow]:
        query = select(requests_table).order_by(requests_table.c.received_at, requests_table.c.request_id)
        if statuses is not None:
            query = query.where(requests_table.c.status.in_(list(statuses)))
        with self.read_engine.connect() as conn:
            return [IndexRow(**dict(r)) for r in conn.execute(query).mappings()]

    def request_ids(self) -> list[str]:
        with self.read_engine.connect() as conn:
            return list(conn.execute(select(events_table.c.request_id).distinct()).scalars())

    # -- subject tokens ---------------------------------------------------------------------

    def add_subject_token(self, request_id: str, digest: str, expires_at: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(subject_tokens_table).values(
                token_sha256=digest, request_id=request_id, expires_at=expires_at, used_at=None))

    def subject_token(self, digest: str) -> tuple[str, str, str | None] | None:
        """(request id, expires at, used at) for a token hash, or None."""
        with self.read_engine.connect() as conn:
            row = conn.execute(select(subject_tokens_table).where(
                subject_tokens_table.c.token_sha256 == digest)).mappings().first()
        return (row["request_id"], row["expires_at"], row["used_at"]) if row else None

    def use_subject_token(self, digest: str, now: str) -> bool:
        """Spend a token: True for exactly one caller, however many race (conditional UPDATE)."""
        with self.engine.begin() as conn:
            result = conn.execute(update(subject_tokens_table).where(
                subject_tokens_table.c.token_sha256 == digest,
                subject_tokens_table.c.used_at.is_(None),
                subject_tokens_table.c.expires_at > now,
            ).values(used_at=now))
            return bool(result.rowcount == 1)

    def iter_events(self, request_id: str, *, batch: int = VERIFY_BATCH) -> Generator[LedgerEvent, None, None]:
        """A request's events in sequence order, fetched `batch` rows at a time.

        Memory stays constant however long the chain (a retention run's can reach millions of
        events): PostgreSQL reads through a server-side cursor, SQLite steps its cursor as rows
        are consumed. Reads one consistent snapshot (a single statement).
        """
        query = (select(events_table).where(events_table.c.request_id == request_id)
                 .order_by(events_table.c.seq))
        with self.read_engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for partition in result.mappings().partitions():
                for row in partition:
                    yield self._event(row)

    def verify(self, request_id: str) -> int:
        """Verify one request's chain, streamed, and everything `audit` checks about it; raises
        ChainError naming the first problem."""
        found = self.audit(request_id)
        if found.problems:
            raise ChainError(str(found.problems[0]))
        if not found.counts.get(request_id):
            raise UnknownRequest(request_id)
        return found.counts[request_id]

    def verify_all(self) -> dict[str, int]:
        found = self.audit()
        if found.problems:
            raise ChainError("; ".join(str(p) for p in found.problems[:5]))
        return found.counts

    def audit(self, request_id: str | None = None) -> LedgerAudit:
        """Check everything a database edit could have bent; never raises for what it finds.

        Per chain: the hash chain (streamed); its newest signed head, from the table and from
        the anchor file (a chain cut short, rewritten, or deleted outright); events of a request
        no signed head covers (written around the ledger); its derived index row against the
        fold of its events; its identity rows against the chain. Once: the head log itself (a
        gap, a broken link, an edited or forged entry) and the anchor file against it.
        """
        public_key = self.anchoring.public_key if self.anchoring is not None else None
        mirror = self.anchoring.mirror if self.anchoring is not None else None
        # The file before the table, the table before the chains: each is only appended to after
        # the one before it, so a live ledger never looks cut.
        mirror_entries = list(mirror.entries()) if mirror is not None else []
        with self.read_engine.connect() as conn:
            heads = (SignedHead.from_dict(r) for r in conn.execution_options(stream_results=True, yield_per=VERIFY_BATCH)
                     .execute(select(heads_table).order_by(heads_table.c.position)).mappings())
            newest, table_hashes, problems = check_head_log(heads, public_key)
            index_rows = {r["request_id"]: dict(r) for r in conn.execute(
                select(requests_table).where(*([requests_table.c.request_id == request_id] if request_id else []))
            ).mappings()}
            identity_rows: dict[str, list[dict[str, Any]]] = {}
            for r in conn.execute(select(identities_table).where(
                    *([identities_table.c.request_id == request_id] if request_id else []))).mappings():
                identity_rows.setdefault(r["request_id"], []).append(dict(r))
        warnings: list[Problem] = []
        mirrored: dict[str, SignedHead] = {}
        if mirror is not None:
            mirrored, mirror_problems, warnings = check_mirror(mirror, mirror_entries, table_hashes, public_key)
            problems += mirror_problems
            if warnings:  # heads committed while the table was read are mirrored a moment after: look again
                time.sleep(0.05)
                warnings = check_mirror(mirror, list(mirror.entries()), table_hashes, public_key)[2]
        ids = ({request_id} if request_id else
               set(self.request_ids()) | set(newest) | set(mirrored) | set(index_rows) | set(identity_rows))
        counts: dict[str, int] = {}
        for rid in sorted(ids):
            signed = [h for h in (newest.get(rid), mirrored.get(rid)) if h is not None]
            count, chain_problems = self._audit_chain(rid, signed, index_rows.get(rid), identity_rows.get(rid, []))
            if count:
                counts[rid] = count
            for problem in chain_problems:
                if problem not in problems:
                    problems.append(problem)
        return LedgerAudit(counts, problems, warnings)

    def _index_differences(self, chain: Sequence[LedgerEvent], row: Mapping[str, Any] | None) -> list[str]:
        if not chain or self._projector is None:
            return []
        if row is None:
            return ["it has no row in the request index (deleted)"]
        expected = {**self._projector(chain), "last_seq": chain[-1].seq, "updated_at": chain[-1].at}
        return [f"index row says {column}={row.get(column)!r}, its events say {expected.get(column)!r} (edited)"
                for column in INDEX_COLUMNS if row.get(column) != expected.get(column)]

    def _chain_and_index_row(self, request_id: str) -> tuple[list[LedgerEvent], dict[str, Any] | None]:
        """A request's events and index row from one snapshot (SQLite: the write lock, briefly)."""
        engine = self.engine
        options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
        with engine.connect().execution_options(**options) as conn, conn.begin():
            chain = self._load(conn, request_id)
            row = conn.execute(select(requests_table).where(
                requests_table.c.request_id == request_id)).mappings().first()
        return chain, dict(row) if row else None

    def _signed_since(self, request_id: str, last: LedgerEvent) -> bool:
        """Was `last` signed after the head log was read (an append while auditing)?"""
        with self.read_engine.connect() as conn:
            head = self._newest_head(conn, request_id)
        return head is not None and head.seq >= last.seq

    def _audit_chain(self, request_id: str, signed: Sequence[SignedHead], index_row: Mapping[str, Any] | None,
                     identity_rows: Sequence[Mapping[str, Any]]) -> tuple[int, list[Problem]]:
        problems: list[Problem] = []

        def found(what: str) -> None:
            problems.append(Problem(request_id, what))

        wanted = {h.seq for h in signed}
        hashes: dict[int, str] = {}
        kept: list[LedgerEvent] | None = None  # a request's events (short chains), for the fold
        count, last = 0, None

        def watch(events: Iterator[LedgerEvent]) -> Iterator[LedgerEvent]:
            nonlocal kept, last
            for e in events:
                if e.seq == 1 and e.type == "request.received":
                    kept = []
                if kept is not None:
                    kept.append(e)
                if e.seq in wanted:
                    hashes[e.seq] = e.hash
                last = e
                yield e

        with contextlib.closing(self.iter_events(request_id)) as events:  # a broken chain releases the cursor at once
            try:
                count = verify_chain(watch(events), request_id)
            except ChainError as exc:
                found(str(exc).removeprefix(f"request {request_id}: "))
                return 0, problems
        for head in signed:
            if count == 0:
                found(f"its newest signed head is seq {head.seq} but it has no events (deleted)")
            elif last is not None and last.seq < head.seq:
                found(f"its chain ends at seq {last.seq}, short of its newest signed head, seq {head.seq} (cut)")
            elif hashes.get(head.seq) != head.hash:
                found(f"event seq {head.seq} is not the one its signed head names (rewritten)")
        if (self.anchoring is not None and kept and last is not None
                and (not signed or max(h.seq for h in signed) < last.seq)
                and not self._signed_since(request_id, last)):
            # Every append of a request is signed: events past the newest head came around the ledger.
            first = max((h.seq for h in signed), default=0) + 1
            found(f"events seq {first}..{last.seq} are covered by no signed head (written around the ledger)")
        if kept and self._projector is not None:
            differences = self._index_differences(kept, index_row)
            if differences:  # or an append between the two reads: look again at both at once
                differences = self._index_differences(*self._chain_and_index_row(request_id))
            for difference in differences:
                found(difference)
        elif index_row is not None and count == 0:
            found("an index row without events")
        for row in identity_rows:
            problem = self._identity_problem(kept or ([] if count == 0 else self.events(request_id, through_seq=1)),
                                             row["kind"], row["value"], row["hash"])
            if problem is not None:
                found(problem)
        return count, problems


def _is_contention(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(word in text for word in ("locked", "busy", "deadlock", "could not serialize"))


def now_stamp() -> str:
    return format_timestamp(datetime.now(UTC))
