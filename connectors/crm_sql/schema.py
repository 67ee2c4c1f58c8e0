"""The data map bound to the live schema: each object's reflected table and columns, and the order
rows are erased in.

Table and column names come only from the validated settings; a name the database does not have is
a config error naming its path, found when the connector is built rather than at the first request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError

from connectors.base import ConnectorConfigError, topological_order
from connectors.crm_sql.settings import CrmSqlSettings, ObjectSpec, config_parents
from connectors.process_cache import ProcessCache

#: How long the connectors of a process reuse a database's reflected schema. Reflecting the data map's
#: tables is nearly all of building the connector (about 27 ms of CPU for the demo's 9 tables on
#: SQLite, a dozen catalogue queries per table), and a connector is built for every request and step.
#: A migration is seen within this time; until then a dropped table or column fails the step with the
#: database's error, and the run can be retried.
SCHEMA_TTL_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class BoundObject:
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


@dataclass(frozen=True, slots=True)
class BoundSchema:
    """The data map bound to the live schema, and the orders its jobs walk the objects in."""

    objects: Mapping[str, BoundObject]
    discover_order: tuple[str, ...]  # parents before children
    erase_order: tuple[str, ...]  # children before parents


#: Bound schemas by system, database and data map (its settings as JSON).
SCHEMAS: ProcessCache[tuple[str, str, str], BoundSchema] = ProcessCache(SCHEMA_TTL_SECONDS)


def bound_schema(system: str, settings: CrmSqlSettings, url: str, conn: Callable[[], sa.Connection]) -> BoundSchema:
    """The process's binding of the data map to the database at `url`, or a new one read through
    `conn()` (a context-managed connection) and kept `SCHEMA_TTL_SECONDS`.

    Raises:
        ConnectorConfigError: as `bind_objects`.
    """
    key = (system, url, settings.model_dump_json())
    schema = SCHEMAS.get(key)
    if schema is None:
        with conn() as connection:
            objects = bind_objects(system, settings, connection)
        discover_order, _ = topological_order(settings.objects, config_parents(settings.objects))
        schema = BoundSchema(objects, tuple(discover_order), children_first(settings, objects))
        SCHEMAS.put(key, schema)
    return schema


def bind_objects(system: str, settings: CrmSqlSettings, conn: sa.Connection) -> dict[str, BoundObject]:
    """Reflect each table of the data map once and bind every object to its columns.

    Raises:
        ConnectorConfigError: a table or column is not in the database, or an anonymise or
            marketing value does not fit its column.
    """
    metadata = sa.MetaData()
    tables: dict[str, sa.Table] = {}
    bound: dict[str, BoundObject] = {}
    for name, spec in settings.objects.items():
        where = f"systems.{system}.settings.objects.{name}"
        if spec.table not in tables:
            try:
                tables[spec.table] = sa.Table(spec.table, metadata, autoload_with=conn)
            except NoSuchTableError:
                raise ConnectorConfigError(f"{where}.table: no table {spec.table!r} in the database") from None
        bound[name] = _bind(where, name, spec, tables[spec.table])
    return bound


def _bind(where: str, name: str, spec: ObjectSpec, table: sa.Table) -> BoundObject:
    def column(path: str, column_name: str) -> sa.Column[Any]:
        if column_name not in table.c:
            raise ConnectorConfigError(f"{where}.{path}: no column {column_name!r} in table {table.name!r}")
        return table.c[column_name]

    anonymise = None
    if spec.anonymise is not None:
        anonymise = {
            field: _replacement(f"{where}.anonymise.{field}", column(f"anonymise.{field}", field), value)
            for field, value in spec.anonymise.items()
        }
    return BoundObject(
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
        marketing={flag: _replacement(f"{where}.marketing_flags.{flag}", column(f"marketing_flags.{flag}", flag), value)
                   for flag, value in spec.marketing_flags.items()},
    )


def children_first(settings: CrmSqlSettings, objects: Mapping[str, BoundObject]) -> tuple[str, ...]:
    """Erasure order: children before parents, by the data map and by the schema's foreign keys.

    A table that references another through a foreign key but matches by e-mail (a chat
    transcript pointing at its contact) must still be erased before what it references.
    """
    parents = config_parents(settings.objects)
    by_table: dict[str, list[str]] = {}
    for name, obj in objects.items():
        by_table.setdefault(obj.table.name, []).append(name)
    with_fks = {name: set(deps) for name, deps in parents.items()}
    for name, obj in objects.items():
        for fk in obj.table.foreign_keys:
            referenced = fk.column.table.name
            if referenced != obj.table.name:
                with_fks[name].update(by_table.get(referenced, ()))
    order, cycle = topological_order(settings.objects, with_fks)
    if cycle:  # foreign keys in a loop: fall back to the data map's links, which are acyclic
        order, _ = topological_order(settings.objects, parents)
    return tuple(reversed(order))


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
