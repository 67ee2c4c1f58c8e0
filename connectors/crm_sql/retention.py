"""The retention listing: rows whose retention date is past a cutoff, and the table sizes the
purge's blast-radius guard compares with.

Listed children first (the order the purge erases in), a page of `MAX_BATCH` rows at a time by keyset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from connectors.base import DataCategory, RecordRef
from connectors.crm_sql.core import MAX_BATCH, CrmSqlCore


class CrmSqlRetention(CrmSqlCore):
    """`expired`, `expired_all` and `total_records`."""

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Rows of every object holding `category` whose retention date is before `cutoff`.

        Streams in key order, one page at a time by keyset (`key > last`), so memory stays flat
        however many rows expire and no cursor is held open while the purge deletes.
        Objects without `retention_date` never expire here (nothing says how old they are).
        """
        wanted = DataCategory(category)
        for name in self._erase_order:
            if wanted in self._objects[name].spec.categories:
                yield from self._expired_rows(name, cutoff)

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                    ) -> Iterator[RecordRef]:
        """Expired rows of every object, each object listed once (whatever categories it holds).

        `cutoff_of(categories)` gives an object's cutoff (the retention purge: that of the category
        governing its records), or None to leave the object out. Same order and paging as `expired`.
        """
        for name in self._erase_order:
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
            yield from (self._ref(obj, row) for row in rows)
            if len(rows) < MAX_BATCH:
                break
            last = rows[-1][0]

    def total_records(self) -> int:
        """Rows in every table of the data map: the base the purge's blast-radius guard compares to."""
        total = 0
        with self._guard("counting rows"), self._engine.connect() as conn:
            for table in {obj.table for obj in self._objects.values()}:
                total += int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        return total

