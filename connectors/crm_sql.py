"""The company's own CRM: a SQL database reached through SQLAlchemy Core.

The data map (`settings.objects`) names each table holding personal data, how its rows tie to a
person (an e-mail column, or a link to a parent object's key, several levels deep), the data
categories it holds, the date a retention clock runs from, and what anonymising a row means.

Identity is matched exactly: ``lower(trim(column)) = :email`` with a bound parameter, never LIKE and
never SQL built from the subject's address. Table and column names come only from the validated
config, and are checked against the live schema when the connector is built.

Personal data never reaches an exception message: errors name the system, object and config path,
and the engine hides bound parameters from its own error messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchTableError, SQLAlchemyError

from connectors.base import (
    ConnectorConfigError,
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    Subject,
    chunks,
    json_friendly,
    outcome_for,
    receipt_id,
    subject_email,
    topological_order,
    unique_decisions,
    validate_settings,
)
from dsr.contract import (
    RECTIFIABLE_FIELDS,
    FieldChange,
    RightsAction,
    RightsOutcome,
    RightsReceipt,
)

KIND = "crm_sql"
VERSION = "crm_sql/1"
MAX_BATCH = 500  # rows per statement and per transaction; also under SQLite's bound-variable limit
SQLITE_BUSY_TIMEOUT_S = 15.0  # the demo and the tests share one file with the seeder

_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


# --- settings ---------------------------------------------------------------------------------------
# Validators raise ValueError("relative.path: message"); `_describe` puts the system's config path
# in front, so every error names the field at fault without echoing its value.


class MatchSpec(BaseModel):
    """How an object's rows tie to a person: one column, holding the e-mail or a parent's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    parent: str | None = Field(default=None, min_length=1)


class ObjectSpec(BaseModel):
    """One table of the data map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(min_length=1)
    key: str = Field(min_length=1)
    match: MatchSpec
    categories: tuple[DataCategory, ...] = Field(min_length=1)
    anchor_date: str | None = Field(default=None, min_length=1)
    # Retention: the column(s) whose date says how old a row is; the first that is not null
    # counts (e.g. [last_login_at, created_at]: the last login, else the creation).
    retention_date: tuple[str, ...] = ()
    anonymise: dict[str, Any] | None = None
    # Rectification: canonical field (dsr.contract.RECTIFIABLE_FIELDS) -> this table's column.
    rectifiable: dict[str, str] = Field(default_factory=dict)
    # Marketing suppression: column -> the value that means "no marketing" (restore puts the
    # previous value back, so only what the suppression changed is undone).
    marketing_flags: dict[str, str | bool | int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_rights(self) -> ObjectSpec:
        for canonical in self.rectifiable:
            if canonical not in RECTIFIABLE_FIELDS:
                raise ValueError(f"rectifiable.{canonical}: not a rectifiable field (one of {', '.join(RECTIFIABLE_FIELDS)})")
        if self.key in self.rectifiable.values() or self.key in self.marketing_flags:
            raise ValueError(f"rectifiable: the key column {self.key!r} cannot be changed")
        return self

    @model_validator(mode="after")
    def _check_anonymise(self) -> ObjectSpec:
        if self.anonymise is None:
            return self
        if not self.anonymise:
            raise ValueError("anonymise: name at least one field, or leave anonymise out")
        if self.key in self.anonymise:
            raise ValueError(f"anonymise.{self.key}: the key column cannot be replaced")
        for field, value in self.anonymise.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ValueError(f"anonymise.{field}: a replacement is text, a number, true/false or null")
        if self.match.column not in self.anonymise:
            # Otherwise an "anonymised" row would still be found as the person's.
            raise ValueError(
                f"anonymise: must replace the match column {self.match.column!r} (the link to the person)"
            )
        return self


class CrmSqlSettings(BaseModel):
    """The `settings:` block of a `crm_sql` system in `systems.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, min_length=1)
    url_env: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    objects: dict[str, ObjectSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CrmSqlSettings:
        if self.url is not None and self.url_env is not None:
            raise ValueError("url_env: give either url or url_env, not both")
        if self.url is None and self.url_env is None:
            raise ValueError("url: give url, or url_env naming the environment variable that holds it")
        if self.url is not None:
            _check_inline_url(self.url)
        for name, spec in self.objects.items():
            parent = spec.match.parent
            if parent is not None and parent not in self.objects:
                raise ValueError(f"objects.{name}.match.parent: unknown object {parent!r}")
        _order, cycle = topological_order(self.objects, _config_parents(self.objects))
        if cycle:
            raise ValueError(
                f"objects.{cycle[0]}.match.parent: parent links form a cycle ({' -> '.join(cycle)})"
            )
        return self


def _check_inline_url(url: str) -> None:
    try:
        parsed = sa.engine.make_url(url)
    except ArgumentError:
        raise ValueError("url: not a valid SQLAlchemy database URL") from None  # its message repeats the URL
    if parsed.password is not None:
        raise ValueError("url: holds a password; put the URL in an environment variable named by url_env")


def parse_settings(system: str, settings: Mapping[str, Any]) -> CrmSqlSettings:
    """Validate a system's settings.

    Raises:
        ConnectorConfigError: naming every field at fault by its path under ``systems.<system>.settings``.
    """
    return validate_settings(CrmSqlSettings, system, settings)


def _config_parents(objects: Mapping[str, ObjectSpec]) -> dict[str, set[str]]:
    return {name: {spec.match.parent} if spec.match.parent else set() for name, spec in objects.items()}


# --- construction -----------------------------------------------------------------------------------


def create(system: str, settings: Mapping[str, Any]) -> CrmSqlConnector:
    """Build the connector for one system (the registry's entry point).

    Args:
        system: the system's name in `systems.yaml`.
        settings: its `settings:` block (see `CrmSqlSettings`).

    Raises:
        ConnectorConfigError: bad settings, a missing environment variable, or a data map that does
            not fit the database's schema.
        ConnectorError: the database cannot be reached.
    """
    parsed = parse_settings(system, settings)
    url, field = _resolve_url(system, parsed)
    engine = _make_engine(system, url, field)
    try:
        return CrmSqlConnector(system, parsed, engine)
    except BaseException:
        engine.dispose()
        raise


def _resolve_url(system: str, settings: CrmSqlSettings) -> tuple[str, str]:
    if settings.url is not None:
        return settings.url, "url"
    assert settings.url_env is not None  # the model requires exactly one of the two
    url = os.environ.get(settings.url_env, "").strip()
    if not url:
        raise ConnectorConfigError(
            f"systems.{system}.settings.url_env: environment variable {settings.url_env} is not set or empty"
        )
    return url, "url_env"


def _make_engine(system: str, url: str, field: str) -> Engine:
    where = f"systems.{system}.settings.{field}"
    try:
        parsed: URL = sa.engine.make_url(url)
    except ArgumentError:
        raise ConnectorConfigError(f"{where}: not a valid SQLAlchemy database URL") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    database = parsed.database or ""
    on_disk = is_sqlite and database not in ("", ":memory:") and not database.startswith("file:")
    # SQLite would silently create an empty file, and every table would then look "missing".
    if on_disk and not Path(database).is_file():
        raise ConnectorConfigError(f"{where}: the SQLite database file {database!r} does not exist")
    try:
        engine = sa.create_engine(
            parsed,
            hide_parameters=True,  # the subject's e-mail is a bound parameter: keep it out of error text
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S} if is_sqlite else {},
        )
    except ArgumentError:  # also an unknown dialect or a missing driver
        raise ConnectorConfigError(
            f"{where}: no SQLAlchemy dialect or driver for {parsed.drivername!r}"
        ) from None
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_foreign_keys_on)
    return engine


def _sqlite_foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:
    # SQLite enforces foreign keys only when asked, per connection; erasure order relies on them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


@dataclass(frozen=True, slots=True)
class _Object:
    """An object of the data map, bound to its reflected table."""

    name: str
    spec: ObjectSpec
    table: sa.Table
    key: sa.Column[Any]
    match: sa.Column[Any]
    anchor: sa.Column[Any] | None
    anonymise: Mapping[str, Any] | None  # replacements converted to the columns' Python types
    retention: tuple[sa.Column[Any], ...] = ()
    rectifiable: Mapping[str, sa.Column[Any]] = dataclass_field(default_factory=dict)  # canonical -> column
    marketing: Mapping[str, Any] = dataclass_field(default_factory=dict)  # column -> suppressed value (typed)

    def key_value(self, ref_id: str) -> Any:
        """A ref's id as the key column's type (ids travel as strings)."""
        try:
            python_type = self.key.type.python_type
        except NotImplementedError:
            return ref_id
        return python_type(ref_id) if python_type in (int, Decimal) else ref_id


@dataclass(slots=True)
class _Tally:
    statements: int = 0


class CrmSqlConnector:
    """Discover, export, erase and verify a subject's rows in the CRM database.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    """

    def __init__(self, system: str, settings: CrmSqlSettings, engine: Engine) -> None:
        """Bind the data map to the live schema.

        Raises:
            ConnectorConfigError: a table or column of the data map is not in the database.
            ConnectorError: the database cannot be reached.
        """
        self._system = system
        self._settings = settings
        self._engine = engine
        self._objects = self._bind_objects()
        self._discover_order, _ = topological_order(settings.objects, _config_parents(settings.objects))
        self._erase_order = self._children_first()
        self._info = ConnectorInfo(
            system=system, kind=KIND, version=VERSION, max_batch=MAX_BATCH, objects=tuple(settings.objects)
        )

    @property
    def info(self) -> ConnectorInfo:
        """Kind, version, batch size and the objects of the data map."""
        return self._info

    def close(self) -> None:
        """Release the engine's pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> CrmSqlConnector:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """Every row tied to the subject's e-mail, directly or through parent links.

        Returns:
            Refs in data-map order (parents before children), rows by key within an object.

        Raises:
            ConnectorError: the subject has no e-mail, or the database failed.
        """
        email = subject_email(subject)
        refs: list[RecordRef] = []
        keys: dict[str, list[Any]] = {}
        with self._guard("discover"), self._engine.connect() as conn:
            for name in self._discover_order:
                obj = self._objects[name]
                columns = [obj.key] if obj.anchor is None else [obj.key, obj.anchor]
                if obj.spec.match.parent is None:
                    matched = sa.func.lower(sa.func.trim(obj.match)) == sa.bindparam("email", email)
                    queries = [sa.select(*columns).where(matched)]
                else:
                    parent_keys = keys[obj.spec.match.parent]
                    queries = [sa.select(*columns).where(obj.match.in_(c)) for c in chunks(parent_keys, MAX_BATCH)]
                found: list[Any] = []
                for query in queries:
                    for row in conn.execute(query.order_by(obj.key)):
                        found.append(row[0])
                        anchor = self._anchor(obj, row[0], row[1]) if obj.anchor is not None else None
                        refs.append(
                            RecordRef(
                                self._system, name, str(row[0]), obj.spec.categories, anchor_date=anchor
                            )
                        )
                keys[name] = found
        return refs

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every column of each row, JSON-friendly, fetched `MAX_BATCH` rows at a time.

        Rows erased since discovery are skipped. Records come object by object, by key.

        Raises:
            ConnectorError: a ref of another system or an unknown object, or the database failed.
        """
        for name, group in self._group(refs).items():
            obj = self._objects[name]
            for chunk in chunks(group, MAX_BATCH):
                by_key = {obj.key_value(ref.id): ref for ref in chunk}
                query = sa.select(obj.table).where(obj.key.in_(list(by_key))).order_by(obj.key)
                # Fetch the batch, then let the connection go before yielding to a slow consumer.
                with self._guard("export", name), self._engine.connect() as conn:
                    rows = conn.execute(query).mappings().all()
                for row in rows:
                    fields = {column: json_friendly(value) for column, value in row.items()}
                    yield Record(ref=by_key[row[obj.key.name]], fields=fields)

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """Delete, anonymise or retain each row as decided; children before parents.

        Idempotent: a row already deleted, or already holding its anonymised values, is done with
        ``already_gone=True`` and nothing more changes. Where the database refuses a delete because
        other rows still reference the record (a retained order still points at its contact), an
        object with an `anonymise` mapping is anonymised instead (legal rules, section 2), and the
        outcome says ANONYMISE; without a mapping the outcome is not done.

        Raises:
            ConnectorError: the database failed (not a refusal); re-running is safe.
        """
        tally = _Tally()
        outcomes: dict[str, RecordOutcome] = {}
        grouped: dict[str, list[ErasureDecision]] = {}
        for decision in unique_decisions(decisions, outcomes):
            problem = self._problem_with(decision.ref)
            if problem is not None:
                outcomes[decision.ref.key] = outcome_for(decision, done=False, error=problem)
            else:
                grouped.setdefault(decision.ref.object, []).append(decision)
        with self._guard("erase"):
            for name in self._erase_order:
                for chunk in chunks(grouped.get(name, []), MAX_BATCH):
                    outcomes.update(self._erase_batch(self._objects[name], chunk, tally))
        ordered = tuple(outcomes[key] for key in dict.fromkeys(d.ref.key for d in decisions))
        return Receipt(
            system=self._system,
            outcomes=ordered,
            vendor_receipt_id=receipt_id("crm-sql", ordered),
            api_calls=tally.statements,
        )

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (anonymised rows no longer do)."""
        return self.discover(subject)

    # --- the other rights (dsr.contract.Rectifier, MarketingSuppressor) ---

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Set the canonical fields in `changes` on exactly these rows (each object's `rectifiable` columns).

        A row already holding a value is not changed again; a field its object does not map is
        `not_held`. Old and new values travel only in the outcome (the runner hashes them).
        """
        unknown = sorted(set(changes) - set(RECTIFIABLE_FIELDS))
        if unknown:
            raise ConnectorError(f"systems.{self._system}: not rectifiable field(s): {', '.join(unknown)}")
        tally = _Tally()
        outcomes: list[RightsOutcome] = []
        with self._guard("rectify"), self._engine.begin() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                wanted = {c: col for c, col in obj.rectifiable.items() if c in changes}
                not_held = tuple(sorted(set(changes) - set(wanted)))
                rows = self._rows(conn, obj, group, tuple(wanted.values()), tally)
                for ref in group:
                    row = rows.get(ref.id)
                    if row is None:
                        outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, done=False,
                                                      error="record no longer exists"))
                        continue
                    diff = [FieldChange(c, f"{obj.name}.{col.name}", _text(row[col.name]), changes[c])
                            for c, col in wanted.items() if _text(row[col.name]) != changes[c]]
                    if diff:
                        tally.statements += 1
                        conn.execute(sa.update(obj.table).where(obj.key == obj.key_value(ref.id)).values(
                            {obj.rectifiable[ch.field].name: changes[ch.field] for ch in diff}))
                    outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, done=True, changes=tuple(diff),
                                                  not_held=not_held))
        return RightsReceipt(self._system, RightsAction.RECTIFY, tuple(outcomes), api_calls=tally.statements)

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Re-read the rows: every one whose mapped columns do not hold the new values."""
        left: list[RecordRef] = []
        tally = _Tally()
        with self._guard("verify rectification"), self._engine.connect() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                wanted = {c: col for c, col in obj.rectifiable.items() if c in changes}
                rows = self._rows(conn, obj, group, tuple(wanted.values()), tally)
                left += [ref for ref in group if ref.id not in rows
                         or any(_text(rows[ref.id][col.name]) != changes[c] for c, col in wanted.items())]
        return left

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Set every marketing flag of these rows to its "no marketing" value (`marketing_flags`)."""
        return self._set_flags(refs, RightsAction.SUPPRESS, lambda obj, flag, _old: obj.marketing[flag])

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Put back the previous value of each flag the suppression changed, and nothing else."""
        previous = {(o.ref.key, ch.field): ch.old for o in suppressed for ch in o.changes}
        refs = [o.ref for o in suppressed if o.changes]

        outcomes: list[RightsOutcome] = []
        tally = _Tally()
        with self._guard("restore marketing"), self._engine.begin() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                rows = self._rows(conn, obj, group, tuple(obj.table.c[f] for f in obj.marketing), tally)
                for ref in group:
                    if ref.id not in rows:
                        outcomes.append(RightsOutcome(ref, RightsAction.RESTORE, done=True))  # gone: nothing to restore
                        continue
                    diff = []
                    for flag in obj.marketing:
                        if (ref.key, flag) not in previous:
                            continue
                        target = _typed(obj.table.c[flag], previous[(ref.key, flag)])
                        if rows[ref.id][flag] != target:
                            diff.append(FieldChange(flag, f"{obj.name}.{flag}", _text(rows[ref.id][flag]),
                                                    _text(target)))
                    if diff:
                        tally.statements += 1
                        conn.execute(sa.update(obj.table).where(obj.key == obj.key_value(ref.id)).values(
                            {ch.field: _typed(obj.table.c[ch.field], previous[(ref.key, ch.field)]) for ch in diff}))
                    outcomes.append(RightsOutcome(ref, RightsAction.RESTORE, done=True, changes=tuple(diff)))
        return RightsReceipt(self._system, RightsAction.RESTORE, tuple(outcomes), api_calls=tally.statements)

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Re-read the rows: every one with a marketing flag not at its "no marketing" value."""
        left: list[RecordRef] = []
        tally = _Tally()
        with self._guard("verify suppression"), self._engine.connect() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                if not obj.marketing:
                    continue
                rows = self._rows(conn, obj, group, tuple(obj.table.c[f] for f in obj.marketing), tally)
                left += [ref for ref in group if ref.id in rows
                         and any(rows[ref.id][f] != v for f, v in obj.marketing.items())]
        return left

    def _set_flags(self, refs: Sequence[RecordRef], action: RightsAction,
                   value_for: Callable[[_Object, str, Any], Any]) -> RightsReceipt:
        outcomes: list[RightsOutcome] = []
        tally = _Tally()
        with self._guard(f"{action.value} marketing"), self._engine.begin() as conn:
            for name, group in self._group(refs).items():
                obj = self._objects[name]
                rows = self._rows(conn, obj, group, tuple(obj.table.c[f] for f in obj.marketing), tally)
                for ref in group:
                    if ref.id not in rows:
                        outcomes.append(RightsOutcome(ref, action, done=True))  # gone: nothing to market to
                        continue
                    diff = []
                    for flag in obj.marketing:
                        old = rows[ref.id][flag]
                        new = value_for(obj, flag, old)
                        if old != new:
                            diff.append(FieldChange(flag, f"{obj.name}.{flag}", _text(old), _text(new)))
                    if diff:
                        tally.statements += 1
                        conn.execute(sa.update(obj.table).where(obj.key == obj.key_value(ref.id)).values(
                            {ch.field: obj.marketing[ch.field] for ch in diff}))
                    outcomes.append(RightsOutcome(ref, action, done=True, changes=tuple(diff)))
        return RightsReceipt(self._system, action, tuple(outcomes), api_calls=tally.statements)

    def _rows(self, conn: sa.Connection, obj: _Object, refs: Sequence[RecordRef],
              columns: Sequence[sa.Column[Any]], tally: _Tally) -> dict[str, Mapping[str, Any]]:
        """Ref id -> the row's `columns` (and key), for the rows that still exist."""
        found: dict[str, Mapping[str, Any]] = {}
        for chunk in chunks(list(refs), MAX_BATCH):
            tally.statements += 1
            query = sa.select(obj.key, *[c for c in columns if c is not obj.key]).where(
                obj.key.in_([obj.key_value(r.id) for r in chunk]))
            for row in conn.execute(query).mappings():
                found[str(row[obj.key.name])] = row
        return found

    # --- erasure ---

    # --- retention ---

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Rows of every object holding `category` whose retention date is before `cutoff`.

        Streams in key order, one page at a time by keyset (`key > last`), so memory stays flat
        however many rows expire and no cursor is held open while the purge deletes.
        Objects without `retention_date` never expire here (nothing says how old they are).
        """
        wanted = DataCategory(category)
        for name in self._children_first():
            if wanted in self._objects[name].spec.categories:
                yield from self._expired_rows(name, cutoff)

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                    ) -> Iterator[RecordRef]:
        """Expired rows of every object, each object listed once (whatever categories it holds).

        `cutoff_of(categories)` gives an object's cutoff (the retention purge: that of the category
        governing its records), or None to leave the object out. Same order and paging as `expired`.
        """
        for name in self._children_first():
            cutoff = cutoff_of(tuple(self._objects[name].spec.categories))
            if cutoff is not None:
                yield from self._expired_rows(name, cutoff)

    def _expired_rows(self, name: str, cutoff: date | datetime) -> Iterator[RecordRef]:
        bound = cutoff if isinstance(cutoff, datetime) else datetime.combine(cutoff, datetime.min.time())
        obj = self._objects[name]
        if not obj.retention:
            return
        age = sa.func.coalesce(*obj.retention) if len(obj.retention) > 1 else obj.retention[0]
        columns = [obj.key] + ([obj.anchor] if obj.anchor is not None else [])
        last: Any = None
        while True:
            query = sa.select(*columns).where(age.is_not(None), age < bound)
            if obj.anonymise is not None:
                # A row anonymised in place (kept for a record that still needs it) has no
                # person left in it: it is not purged again every night.
                erased = obj.anonymise[obj.spec.match.column]
                query = query.where(obj.match.is_not(None) if erased is None else
                                    sa.or_(obj.match.is_(None), obj.match != erased))
            if last is not None:
                query = query.where(obj.key > last)
            query = query.order_by(obj.key).limit(MAX_BATCH)
            with self._guard("finding expired rows", name), self._engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                anchor = self._anchor(obj, row[0], row[1]) if obj.anchor is not None else None
                yield RecordRef(self._system, name, str(row[0]), obj.spec.categories, anchor)
            if len(rows) < MAX_BATCH:
                break
            last = rows[-1][0]

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Delete expired rows (children first, in batches); a row that a kept row still
        references is anonymised instead where the object has an `anonymise` map."""
        return self.erase([ErasureDecision(ref, ErasureAction.DELETE) for ref in refs])

    def total_records(self) -> int:
        """Rows in every table of the data map: the base the purge's blast-radius guard compares to."""
        total = 0
        with self._guard("counting rows"), self._engine.connect() as conn:
            for table in {obj.table for obj in self._objects.values()}:
                total += int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        return total

    def _erase_batch(
        self, obj: _Object, batch: list[ErasureDecision], tally: _Tally
    ) -> dict[str, RecordOutcome]:
        results = {d.ref.key: outcome_for(d, done=True) for d in batch if d.action is ErasureAction.RETAIN}
        deletes = [d for d in batch if d.action is ErasureAction.DELETE]
        anonymises = [d for d in batch if d.action is ErasureAction.ANONYMISE]
        if anonymises and obj.anonymise is None:
            error = f"no anonymise mapping at systems.{self._system}.settings.objects.{obj.name}.anonymise"
            results.update({d.ref.key: outcome_for(d, done=False, error=error) for d in anonymises})
            anonymises = []
        try:
            with self._engine.begin() as conn:
                results.update(self._delete(conn, obj, deletes, tally))
                results.update(self._anonymise(conn, obj, anonymises, tally))
        except IntegrityError:
            # The database refused part of the batch and rolled all of it back: redo it row by row
            # so that one refused row does not hold up the others.
            for decision in deletes + anonymises:
                results[decision.ref.key] = self._erase_one(obj, decision, tally)
        return results

    def _erase_one(self, obj: _Object, decision: ErasureDecision, tally: _Tally) -> RecordOutcome:
        where = f"systems.{self._system}.settings.objects.{obj.name}.anonymise"
        try:
            with self._engine.begin() as conn:
                if decision.action is ErasureAction.DELETE:
                    return self._delete(conn, obj, [decision], tally)[decision.ref.key]
                return self._anonymise(conn, obj, [decision], tally)[decision.ref.key]
        except IntegrityError:
            pass  # the database's own message may quote row values: never pass it on
        if decision.action is ErasureAction.ANONYMISE:
            return outcome_for(
                decision, done=False, error=f"the database refused the replacement values of {where}"
            )
        if obj.anonymise is None:
            return outcome_for(
                decision,
                done=False,
                error=f"the database refused the delete: other rows still reference this record "
                f"(give {where} to anonymise it instead)",
            )
        try:
            with self._engine.begin() as conn:
                return self._anonymise(conn, obj, [decision], tally)[decision.ref.key]
        except IntegrityError:
            return outcome_for(
                decision, done=False, error=f"the database refused both the delete and the values of {where}"
            )

    def _delete(
        self, conn: sa.Connection, obj: _Object, decisions: list[ErasureDecision], tally: _Tally
    ) -> dict[str, RecordOutcome]:
        if not decisions:
            return {}
        wanted = [obj.key_value(d.ref.id) for d in decisions]
        present = set(conn.scalars(sa.select(obj.key).where(obj.key.in_(wanted))))
        tally.statements += 1
        if present:
            tally.statements += 1
            conn.execute(sa.delete(obj.table).where(obj.key.in_(present)))
        columns = tuple(obj.table.columns.keys())
        results = {}
        for decision, key in zip(decisions, wanted, strict=True):
            gone = key not in present
            results[decision.ref.key] = outcome_for(
                decision, done=True, already_gone=gone, fields_cleared=() if gone else columns
            )
        return results

    def _anonymise(
        self, conn: sa.Connection, obj: _Object, decisions: list[ErasureDecision], tally: _Tally
    ) -> dict[str, RecordOutcome]:
        if not decisions:
            return {}
        assert obj.anonymise is not None  # callers route objects without a mapping elsewhere
        wanted = [obj.key_value(d.ref.id) for d in decisions]
        # Rows already holding every replacement are left alone, so a re-run changes nothing.
        differs = sa.or_(*(obj.table.c[col].is_distinct_from(value) for col, value in obj.anonymise.items()))
        pending = set(conn.scalars(sa.select(obj.key).where(obj.key.in_(wanted), differs)))
        tally.statements += 1
        if pending:
            tally.statements += 1
            conn.execute(sa.update(obj.table).where(obj.key.in_(pending)).values(dict(obj.anonymise)))
        fields = tuple(obj.anonymise)
        results = {}
        for decision, key in zip(decisions, wanted, strict=True):
            gone = key not in pending
            results[decision.ref.key] = outcome_for(
                decision,
                action=ErasureAction.ANONYMISE,
                done=True,
                already_gone=gone,
                fields_cleared=() if gone else fields,
            )
        return results

    # --- helpers ---

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        obj = self._objects.get(ref.object)
        if obj is None:
            return f"unknown object {ref.object!r} in systems.{self._system}"
        try:
            obj.key_value(ref.id)
        except (ValueError, ArithmeticError):
            return f"id is not a valid key of object {ref.object!r}"
        return None

    def _group(self, refs: Sequence[RecordRef]) -> dict[str, list[RecordRef]]:
        grouped: dict[str, list[RecordRef]] = {}
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                raise ConnectorError(f"systems.{self._system}: {problem}")
            grouped.setdefault(ref.object, []).append(ref)
        return grouped

    def _anchor(self, obj: _Object, key: Any, value: Any) -> date | None:
        if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
            return value
        if isinstance(value, datetime):
            return value.date()
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            raise ConnectorError(
                f"systems.{self._system}/{obj.name}/{key}: anchor_date column "
                f"{obj.spec.anchor_date!r} holds no date"
            ) from None

    @contextmanager
    def _guard(self, operation: str, obj: str | None = None) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            where = f" of object {obj!r}" if obj else ""
            # The engine hides bound parameters, so the chained error carries SQL text but no e-mail.
            raise ConnectorError(
                f"systems.{self._system}: {operation}{where} failed ({type(exc).__name__})"
            ) from exc

    def _bind_objects(self) -> dict[str, _Object]:
        metadata = sa.MetaData()
        tables: dict[str, sa.Table] = {}
        bound: dict[str, _Object] = {}
        with self._guard("reading the schema"), self._engine.connect() as conn:
            for name, spec in self._settings.objects.items():
                where = f"systems.{self._system}.settings.objects.{name}"
                if spec.table not in tables:
                    try:
                        tables[spec.table] = sa.Table(spec.table, metadata, autoload_with=conn)
                    except NoSuchTableError:
                        raise ConnectorConfigError(
                            f"{where}.table: no table {spec.table!r} in the database"
                        ) from None
                table = tables[spec.table]

                def column(
                    path: str, column_name: str, table: sa.Table = table, where: str = where
                ) -> sa.Column[Any]:
                    if column_name not in table.c:
                        raise ConnectorConfigError(
                            f"{where}.{path}: no column {column_name!r} in table {table.name!r}"
                        )
                    return table.c[column_name]

                anonymise = None
                if spec.anonymise is not None:
                    anonymise = {
                        field: _replacement(
                            f"{where}.anonymise.{field}", column(f"anonymise.{field}", field), value
                        )
                        for field, value in spec.anonymise.items()
                    }
                bound[name] = _Object(
                    name=name,
                    spec=spec,
                    table=table,
                    key=column("key", spec.key),
                    match=column("match.column", spec.match.column),
                    anchor=column("anchor_date", spec.anchor_date) if spec.anchor_date else None,
                    anonymise=anonymise,
                    retention=tuple(column(f"retention_date.{i}", c) for i, c in enumerate(spec.retention_date)),
                    rectifiable={canonical: column(f"rectifiable.{canonical}", name_)
                                 for canonical, name_ in spec.rectifiable.items()},
                    marketing={flag: _replacement(f"{where}.marketing_flags.{flag}",
                                                  column(f"marketing_flags.{flag}", flag), value)
                               for flag, value in spec.marketing_flags.items()},
                )
        return bound

    def _children_first(self) -> tuple[str, ...]:
        """Erasure order: children before parents, by the data map and by the schema's foreign keys.

        A table that references another through a foreign key but matches by e-mail (a chat
        transcript pointing at its contact) must still be erased before what it references.
        """
        parents = _config_parents(self._settings.objects)
        by_table: dict[str, list[str]] = {}
        for name, obj in self._objects.items():
            by_table.setdefault(obj.table.name, []).append(name)
        with_fks = {name: set(deps) for name, deps in parents.items()}
        for name, obj in self._objects.items():
            for fk in obj.table.foreign_keys:
                referenced = fk.column.table.name
                if referenced != obj.table.name:
                    with_fks[name].update(by_table.get(referenced, ()))
        order, cycle = topological_order(self._settings.objects, with_fks)
        if cycle:  # foreign keys in a loop: fall back to the data map's links, which are acyclic
            order, _ = topological_order(self._settings.objects, parents)
        return tuple(reversed(order))


def _text(value: Any) -> str | None:
    """A column value as the contract's text: booleans as true/false, None as None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed(column: sa.Column[Any], text: str | None) -> Any:
    """A recorded flag value (text) back in its column's type."""
    if text is None:
        return None
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return text
    if python_type is bool:
        return text == "true"
    if python_type is int:
        return int(text)
    return text


def _replacement(where: str, column: sa.Column[Any], value: Any) -> Any:
    """An anonymise value as its column's Python type, checked once at load instead of on every erase."""
    if value is None:
        if not column.nullable:
            raise ConnectorConfigError(f"{where}: column is NOT NULL, so it cannot be replaced by null")
        return None
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    try:
        if python_type is datetime and isinstance(value, str):
            return datetime.fromisoformat(value)
        if python_type is date and isinstance(value, str):
            return date.fromisoformat(value)
        if python_type is Decimal and not isinstance(value, bool):
            return Decimal(str(value))
    except (ValueError, InvalidOperation):
        raise ConnectorConfigError(f"{where}: replacement does not fit the column's type") from None
    if python_type in (int, float, str, bool) and not isinstance(value, python_type):
        raise ConnectorConfigError(
            f"{where}: replacement does not fit the column's type ({python_type.__name__})"
        )
    return value


