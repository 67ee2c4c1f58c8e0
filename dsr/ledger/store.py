"""The ledger on a SQL database (SQLite by default, PostgreSQL in production).

Appends are the only write. Each append reads the request's chain head and inserts the next
event in one transaction; the unique (request_id, seq) constraint turns a race between two
writers into a retry instead of a fork.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from dsr.ledger.events import GENESIS_HASH, LedgerEvent, format_timestamp, verify_chain
from dsr.ledger.schema import events as events_table
from dsr.ledger.schema import identities as identities_table
from dsr.ledger.schema import requests as requests_table
from dsr.ledger.schema import subject_tokens as subject_tokens_table

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
APPEND_ATTEMPTS = 20
#: Rows fetched at a time when a chain is streamed (verification): memory is about this many events.
VERIFY_BATCH = 1_000

#: Computes the derived index row for a request from its whole chain (new event included).
Projector = Callable[[Sequence[LedgerEvent]], Mapping[str, Any]]


class LedgerError(RuntimeError):
    """The ledger could not do what was asked; the message says why."""


class UnknownRequest(LedgerError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id: no request {request_id!r} in the ledger")
        self.request_id = request_id


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
        return create_engine(url, pool_pre_ping=True)
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


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (no-op when it is already there)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


class Ledger:
    """Append-only, hash-chained events per request, plus a derived index for listing."""

    def __init__(self, url: str, *, projector: Projector | None = None, auto_migrate: bool = True) -> None:
        self.url = url
        self.engine = create_ledger_engine(url)
        self.read_engine = create_ledger_engine(url, for_writes=False) if url.startswith("sqlite") else self.engine
        self._projector = projector
        if auto_migrate:
            migrate(self.engine)

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
        """
        last_error: Exception | None = None
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    # Only the head is needed to chain; the whole chain only for a guard or the index.
                    whole = guard is not None or (self._projector is not None and project)
                    chain = self._load(conn, request_id) if whole else self._load_head(conn, request_id)
                    if expect_new and chain:
                        raise LedgerError(f"request_id: request {request_id!r} already exists")
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
                    if whole and project:
                        self._project(conn, [*chain, new], exists=bool(chain))
                    return new
            except (IntegrityError, OperationalError) as exc:
                # A concurrent writer took this seq, or held the lock too long: read the new head
                # and retry. Any other database error is real and goes straight up.
                if isinstance(exc, OperationalError) and not _is_contention(exc):
                    raise
                last_error = exc
                time.sleep(min(0.005 * (2**attempt), 0.25))
        raise LedgerError(f"could not append to request {request_id!r} after {APPEND_ATTEMPTS} attempts") from last_error

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

    def exists(self, request_id: str) -> bool:
        with self.read_engine.connect() as conn:
            return conn.execute(select(events_table.c.id).where(
                events_table.c.request_id == request_id).limit(1)).first() is not None

    def identity(self, request_id: str, kind: str = "email") -> str | None:
        with self.read_engine.connect() as conn:
            return conn.execute(select(identities_table.c.value).where(
                identities_table.c.request_id == request_id, identities_table.c.kind == kind)).scalar()

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
        """Verify one request's chain, streamed; raises ChainError naming the first bad event."""
        with contextlib.closing(self.iter_events(request_id)) as events:  # a broken chain releases the cursor at once
            count = verify_chain(events, request_id)
        if count == 0:
            raise UnknownRequest(request_id)
        return count

    def verify_all(self) -> dict[str, int]:
        return {rid: self.verify(rid) for rid in self.request_ids()}


def _is_contention(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(word in text for word in ("locked", "busy", "deadlock", "could not serialize"))


def now_stamp() -> str:
    return format_timestamp(datetime.now(UTC))
