"""Finding a subject's rows and exporting them.

Identity is matched exactly: ``lower(trim(column)) = :email`` with a bound parameter, never LIKE and
never SQL built from the subject's address. Children are found through their parents' keys, level
by level, in data-map order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from connectors.base import Record, RecordRef, Subject, chunks, json_friendly, subject_email
from connectors.crm_sql.core import MAX_BATCH, CrmSqlCore


class CrmSqlDiscovery(CrmSqlCore):
    """`discover`, `export` and `verify_erased`."""

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
                        refs.append(self._ref(obj, row))
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

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (anonymised rows no longer do)."""
        return self.discover(subject)
