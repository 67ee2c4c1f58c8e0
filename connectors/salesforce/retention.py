"""Counting expired records for the retention purge's guard: COUNT() queries, not a listing.

``SELECT COUNT() FROM <object> WHERE <retention condition>`` is one call per object however many records
have expired (Salesforce answers the number in ``totalSize`` and sends no records), where listing them
takes one call per 2,000, one page after the other. With counts answering the guard, the purge pass can
list and delete together (`expired_all`, next page fetched while delete batches are in flight), and what
it deletes is checked against the cutoff at delete time, not minutes before.

The condition is discovery's own (`_retention_condition`), so a count and a listing at the same cutoff
agree record for record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any

from simple_salesforce import format_soql

from connectors.base import ConnectorError, chunks
from connectors.salesforce.discovery import SalesforceDiscovery
from connectors.salesforce.org import COMPOSITE_QUERIES, MAX_BATCH, PURGE_WORKERS
from dsr.contract import DataCategory, RecordRef

CutoffOf = Callable[[tuple[DataCategory, ...]], date | datetime | None]


class SalesforceRetention(SalesforceDiscovery):
    """`count_expired_all` and `expired_among` (the purge's `CountsExpired`)."""

    def count_expired_all(self, cutoff_of: CutoffOf) -> dict[tuple[DataCategory, ...], int]:
        """How many records have expired, per set of categories an object holds (objects holding the same
        categories add up); `cutoff_of` as in `expired_all`, and an optional object the org lacks counts
        nothing. One COUNT() query per object, sent up to `COMPOSITE_QUERIES` in one Composite call; the
        objects' describes and those calls a few in flight at once (all paced by the one limiter).

        Raises:
            ConnectorError: Salesforce failed, or answered without a count.
            ConnectorConfigError: as `expired_all`.
        """
        wanted = [(name, cutoff) for name in self._discover_order
                  if (cutoff := cutoff_of(tuple(self._settings.objects[name].categories))) is not None]
        counts: dict[tuple[DataCategory, ...], int] = {}
        if not wanted:
            return counts
        with ThreadPoolExecutor(min(PURGE_WORKERS, len(wanted)), thread_name_prefix="salesforce-count") as pool:
            conditions = list(pool.map(lambda item: self._expiry_condition(*item), wanted))
            queries = [(name, format_soql("SELECT COUNT() FROM {:literal} WHERE {:literal}", name, condition))
                       for (name, _), condition in zip(wanted, conditions, strict=True) if condition is not None]
            groups = list(chunks(queries, COMPOSITE_QUERIES))
            pages = [page for answers in pool.map(lambda group: self._first_pages("count", group), groups)
                     for page in answers]
        for (name, _), page in zip(queries, pages, strict=True):
            categories = tuple(self._settings.objects[name].categories)
            counts[categories] = counts.get(categories, 0) + _total_size(page, self._system, name)
        return counts

    def expired_among(self, refs: Sequence[RecordRef], cutoff_of: CutoffOf) -> list[RecordRef]:
        """Those of `refs` (records of this org: the purge's protected ones) that have expired, in the order
        given: one query per object and 200 ids, on the same condition as the count.

        Raises:
            ConnectorError: a ref of another system or an unknown object, or Salesforce failed.
        """
        expired: set[str] = set()
        for name, group in self._group(refs).items():
            cutoff = cutoff_of(tuple(self._settings.objects[name].categories))
            condition = None if cutoff is None else self._expiry_condition(name, cutoff)
            if condition is None:
                continue
            for batch in chunks(sorted({ref.id for ref in group}), MAX_BATCH):
                soql = format_soql("SELECT Id FROM {:literal} WHERE Id IN {} AND ({:literal})", name, batch, condition)
                expired.update(f"{name}/{record['Id']}" for record in self._query(soql, "count", name))
        return [ref for ref in refs if f"{ref.object}/{ref.id}" in expired]

    def _expiry_condition(self, name: str, cutoff: date | datetime) -> str | None:
        """The object's retention condition at `cutoff` (None: an optional object the org lacks)."""
        schema = self._schema(name)
        if schema is None:
            return None
        return self._retention_condition(name, self._settings.objects[name], schema, cutoff)


def _total_size(answer: Any, system: str, name: str) -> int:
    size = answer.get("totalSize") if isinstance(answer, Mapping) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConnectorError(f"systems.{system}: count of object {name!r} failed (Salesforce answered no totalSize)")
    return size
