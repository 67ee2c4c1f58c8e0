"""What every job of the CRM connector stands on: the engine, the bound data map, and the checks
and reads they share (whose ref is this, which rows still exist, what a failure may say).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from connectors.base import ConnectorError, ConnectorInfo, RecordRef, chunks
from connectors.crm_sql.schema import BoundObject, bound_schema
from connectors.crm_sql.settings import CrmSqlSettings

KIND = "crm_sql"
VERSION = "crm_sql/1"
MAX_BATCH = 500  # rows per statement and per transaction; also under SQLite's bound-variable limit


@dataclass(slots=True)
class Tally:
    """Statements one call has run (a receipt's `api_calls`)."""

    statements: int = 0


class CrmSqlCore:
    """The engine and the data map bound to the live schema; `close()` releases the engine."""

    def __init__(self, system: str, settings: CrmSqlSettings, engine: Engine) -> None:
        """Bind the data map to the live schema.

        Raises:
            ConnectorConfigError: a table or column of the data map is not in the database.
            ConnectorError: the database cannot be reached.
        """
        self._system = system
        self._settings = settings
        self._engine = engine
        with self._guard("reading the schema"):
            schema = bound_schema(system, settings, engine.url.render_as_string(hide_password=True), engine.connect)
        self._objects = schema.objects
        self._discover_order = schema.discover_order
        self._erase_order = schema.erase_order
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

    def _anchor(self, obj: BoundObject, key: Any, value: Any) -> date | None:
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

    def _ref(self, obj: BoundObject, row: Sequence[Any]) -> RecordRef:
        """The ref of a row selected as (key, anchor column if the object has one)."""
        anchor = self._anchor(obj, row[0], row[1]) if obj.anchor is not None else None
        return RecordRef(self._system, obj.name, str(row[0]), obj.spec.categories, anchor_date=anchor)

    def _rows(self, conn: sa.Connection, obj: BoundObject, refs: Sequence[RecordRef],
              columns: Sequence[sa.Column[Any]], tally: Tally) -> dict[str, sa.RowMapping]:
        """Ref id -> the row's `columns` (and key), for the rows that still exist."""
        found: dict[str, sa.RowMapping] = {}
        for chunk in chunks(list(refs), MAX_BATCH):
            tally.statements += 1
            query = sa.select(obj.key, *[c for c in columns if c is not obj.key]).where(
                obj.key.in_([obj.key_value(r.id) for r in chunk]))
            for row in conn.execute(query).mappings():
                found[str(row[obj.key.name])] = row
        return found

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
