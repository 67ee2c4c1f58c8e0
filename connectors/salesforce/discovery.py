"""Finding records: a subject's (by e-mail, then through parent links) and those past their retention date.

Identity is matched exactly: SOQL is built only through simple-salesforce's `format_soql`, so quotes,
backslashes and ``%``/``_`` in an address stay inside one string literal, and ``=`` never widens the way
LIKE would. (Salesforce compares text case-insensitively, which is what a normalised address wants.)
Object and field names come only from the validated config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from datetime import time as dt_time
from typing import Any

from simple_salesforce import format_soql

from connectors.base import ConnectorConfigError, ConnectorError, chunks, subject_email
from connectors.salesforce.org import MAX_BATCH, PURGE_WORKERS, SalesforceOrg
from connectors.salesforce.schema import Schema
from connectors.salesforce.settings import MatchSpec, ObjectSpec
from dsr.contract import DataCategory, RecordRef, Subject


class SalesforceDiscovery(SalesforceOrg):
    """`discover`, `verify_erased`, `expired` and `expired_all`."""

    def discover(self, subject: Subject) -> list[RecordRef]:
        """Every record tied to the subject's e-mail, directly or through parent links.

        Returns:
            Refs in data-map order (parents before children), records in query order within an object.

        Raises:
            ConnectorError: the subject has no e-mail, or Salesforce failed after retries.
            ConnectorConfigError: the data map names an object or field the org does not have.
        """
        return self._find(subject_email(subject))

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (anonymised records no longer do; the package docstring
        says why the Recycle Bin is not searched)."""
        return self.discover(subject)

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Records of every object holding `category` whose retention date is before `cutoff`.

        An object's `retention_fields` are tried in order: the first one that has a value decides
        (``[LastActivityDate, LastModifiedDate]``: the last activity, else the last change).
        A date cutoff means midnight UTC for datetime fields; a naive datetime is taken as UTC.

        Raises:
            ConnectorError: an unknown category, or Salesforce failed.
            ConnectorConfigError: a retention field that is not a date or datetime field.
        """
        try:
            wanted = DataCategory(category)
        except ValueError:
            raise ConnectorError(f"systems.{self._system}: unknown data category {category!r}") from None
        for name in self._discover_order:
            if wanted in self._settings.objects[name].categories:
                yield from self._expired_records(name, cutoff)

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                    ) -> Iterator[RecordRef]:
        """Expired records of every object, each object queried once (whatever categories it holds).

        `cutoff_of(categories)` gives an object's cutoff (the retention purge: that of the category
        governing its records), or None to leave the object out. Otherwise as `expired`.
        """
        wanted = [(name, cutoff) for name in self._discover_order
                  if (cutoff := cutoff_of(tuple(self._settings.objects[name].categories))) is not None]
        if not wanted:
            return
        # Every object's describe and first query page at once (a few calls in flight, all paced by
        # the one limiter), not one round trip after the other; records still come object by object.
        with ThreadPoolExecutor(min(PURGE_WORKERS, len(wanted)), thread_name_prefix="salesforce-expired") as pool:
            opened = [(name, pool.submit(self._expired_open, name, cutoff)) for name, cutoff in wanted]
            for name, future in opened:
                yield from self._expired_refs(name, future.result())

    def _expired_open(self, name: str, cutoff: date | datetime) -> tuple[ObjectSpec, Schema, Any] | None:
        """The object's spec, schema and first page of its expired records (None: an optional object the org lacks)."""
        spec = self._settings.objects[name]
        schema = self._schema(name)
        if schema is None:
            return None
        condition = self._retention_condition(name, spec, schema, cutoff)
        columns = self._columns(name, schema, with_links=False)
        soql = format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal}", columns, name, condition)
        return spec, schema, self._first_page("expired", name, soql)

    def _expired_records(self, name: str, cutoff: date | datetime) -> Iterator[RecordRef]:
        yield from self._expired_refs(name, self._expired_open(name, cutoff))

    def _expired_refs(self, name: str, first: tuple[ObjectSpec, Schema, Any] | None) -> Iterator[RecordRef]:
        if first is None:
            return
        spec, schema, page = first
        for record in self._pages(page, "expired", name, prefetch=True):
            yield self._ref(name, spec, schema, record)

    # --- discovery ---

    def _find(self, email: str) -> list[RecordRef]:
        """The subject's records, one dependency level at a time: every query whose parents are found goes
        out together (`_first_pages`: the e-mail matches first, then the links from the records found)."""
        columns: dict[str, str] = {}
        found: dict[str, list[str]] = {}
        links: dict[tuple[str, str], list[str]] = {}
        records_of: dict[str, dict[str, Mapping[str, Any]]] = {}
        answers: dict[tuple[str, int], list[list[Mapping[str, Any]]]] = {}
        waiting: list[tuple[str, int, MatchSpec]] = []
        for name in self._discover_order:
            schema = self._schema(name)
            if schema is None:
                records_of[name], found[name] = {}, []
                continue
            columns[name] = self._columns(name, schema, with_links=True)
            waiting.extend((name, index, match) for index, match in enumerate(self._settings.objects[name].match))
        while waiting:
            ready = [entry for entry in waiting if entry[2].parent is None or entry[2].parent in records_of]
            assert ready, "the data map's parent links form a cycle"  # refused when the settings were read
            waiting = [entry for entry in waiting if entry not in ready]
            queries = [(name, index, soql) for name, index, match in ready
                       for soql in self._match_queries(name, match, columns[name], email, found, links)]
            pages = self._first_pages("discover", [(name, soql) for name, _, soql in queries])
            for (name, index, _), page in zip(queries, pages, strict=True):
                answers.setdefault((name, index), []).append(list(self._pages(page, "discover", name)))
            pending = {name for name, _, _ in waiting}
            for name in self._discover_order:
                if name in columns and name not in records_of and name not in pending:
                    self._found(name, answers, records_of, found, links)
        refs: list[RecordRef] = []
        for name in self._discover_order:
            if name in columns:
                spec, schema = self._settings.objects[name], self._schema(name)
                assert schema is not None
                refs.extend(self._ref(name, spec, schema, record) for record in records_of[name].values())
        return refs

    def _found(self, name: str, answers: Mapping[tuple[str, int], list[list[Mapping[str, Any]]]],
               records_of: dict[str, dict[str, Mapping[str, Any]]], found: dict[str, list[str]],
               links: dict[tuple[str, str], list[str]]) -> None:
        """An object whose every match has been queried: its records (match by match, each query's in its
        order, a record once), their ids and the links its children follow."""
        records: dict[str, Mapping[str, Any]] = {}
        for index in range(len(self._settings.objects[name].match)):
            for answer in answers.get((name, index), []):
                for record in answer:
                    records.setdefault(record["Id"], record)
        records_of[name], found[name] = records, list(records)
        schema = self._schema(name)
        assert schema is not None
        for link in self._reverse_links[name]:
            canonical = schema.name(link)
            links[(name, link)] = [str(r[canonical]) for r in records.values() if r.get(canonical)]

    def _match_queries(
        self, name: str, match: MatchSpec, columns: str, email: str,
        found: Mapping[str, list[str]], links: Mapping[tuple[str, str], list[str]],
    ) -> Iterator[str]:
        if match.parent is None:
            yield format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal} = {}", columns, name, match.field,
                              email)
            return
        if match.reverse:
            field, ids = "Id", links.get((match.parent, match.field), [])
        else:
            field, ids = match.field, found.get(match.parent, [])
        for batch in chunks(sorted(set(ids)), MAX_BATCH):
            yield format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal} IN {}", columns, name, field, batch)

    def _columns(self, name: str, schema: Schema, *, with_links: bool) -> str:
        spec = self._settings.objects[name]
        wanted = ["Id"]
        if spec.anchor_date:
            wanted.append(spec.anchor_date)
        if with_links:
            wanted.extend(self._reverse_links[name])
        return ", ".join(dict.fromkeys(schema.name(field) for field in wanted))

    def _ref(self, name: str, spec: ObjectSpec, schema: Schema, record: Mapping[str, Any]) -> RecordRef:
        anchor = None
        if spec.anchor_date:
            value = record.get(schema.name(spec.anchor_date))
            if value:
                try:
                    anchor = date.fromisoformat(str(value)[:10])
                except ValueError:
                    raise ConnectorError(
                        f"systems.{self._system}/{name}/{record['Id']}: anchor_date field "
                        f"{spec.anchor_date!r} holds no date"
                    ) from None
        return RecordRef(self._system, name, str(record["Id"]), spec.categories, anchor_date=anchor)

    def _retention_condition(self, name: str, spec: ObjectSpec, schema: Schema, cutoff: date | datetime) -> str:
        parts = []
        for index, field in enumerate(spec.retention_fields):
            info = schema.get(field)
            assert info is not None  # checked when the schema was read
            if info.type == "date":
                literal: date | datetime = cutoff.date() if isinstance(cutoff, datetime) else cutoff
            elif info.type == "datetime":
                literal = _as_utc(cutoff)
            else:
                raise ConnectorConfigError(
                    f"systems.{self._system}.settings.objects.{name}.retention_fields.{index}: "
                    f"{info.name!r} is a {info.type} field, not a date or datetime"
                )
            parts.append((info.name, literal))
        condition = format_soql("{:literal} < {}", *parts[-1])
        for field, literal in reversed(parts[:-1]):  # the first field with a value decides
            condition = format_soql("({:literal} < {} OR ({:literal} = null AND {:literal}))", field, literal,
                                    field, condition)
        return condition


def _as_utc(moment: date | datetime) -> datetime:
    if not isinstance(moment, datetime):
        return datetime.combine(moment, dt_time(0, 0), tzinfo=UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
