"""Salesforce: a subject's Contacts, Leads, campaign memberships, Cases, activities and Individual record.

Reached through simple-salesforce (REST, Composite, sObject Collections, Bulk API 2.0) on the HTTP base
(`connectors.http`). The data map (`settings.objects`) names each object, how its records tie to a person
(the e-mail field itself, or a link to a parent object found before it: ``Case.ContactId``, ``Task.WhoId``;
or, with ``reverse``, a field on the parent that holds this record's Id: ``Contact.IndividualId``), its
data categories, the date a retention clock runs from, the fields retention compares with a cutoff, and
what anonymising a record means.

The jobs, one module each: `settings` (the data map), `session` (secrets, org sessions, the HTTP session
that paces, times out, watches the daily quota and keeps sandboxes' calls in the sandbox), `org` (login,
calls, failures, describes), `discovery` (the subject's records, expired records), `erasure` (anonymise,
delete, purge), `rights` (rectify, suppress, restore), `retention` (counting expired records); this module
composes them and adds `export`.

Login is OAuth 2.0 only, done by simple-salesforce: client credentials (``consumer_key`` +
``consumer_secret`` + a My Domain) or the JWT bearer flow (``username`` + ``consumer_key`` + a private
key). SOAP ``login()`` is being retired and is never used. An expired session is dropped and the call
repeated once after a fresh login (Bulk API 2.0 calls do not log in again by themselves). Throttling
(403 REQUEST_LIMIT_EXCEEDED), 5xx answers, connection resets and timeouts are retried with backoff.

`verify_erased` re-runs discovery with ``query`` (never ``queryAll``): a soft-deleted record sits in
the Recycle Bin, invisible to every user and integration, until Salesforce purges it (15 days), and
counts as erased here. ``queryAll`` is no better proof for hard deletes either: Salesforce documents
that purged rows may still be returned by it for a while, so it would report records that are gone.
With ``erase_mode: hard_delete`` the Bulk API job results are the evidence of the hard delete.

Personal data never reaches an exception message: simple-salesforce's exceptions and `requests`'
carry the request URL, and a SOQL URL holds the subject's address. They are replaced (not chained) by
a `VendorApiError` naming the system, operation, object, HTTP status and Salesforce error code only.
Keep the ``urllib3`` logger above DEBUG in production: at DEBUG it logs request URLs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from simple_salesforce import format_soql

from connectors.base import chunks
from connectors.salesforce.discovery import SalesforceDiscovery
from connectors.salesforce.erasure import SalesforceErasure
from connectors.salesforce.org import COMPOSITE_QUERIES, MAX_BATCH
from connectors.salesforce.retention import SalesforceRetention
from connectors.salesforce.rights import SalesforceRights
from dsr.contract import Record, RecordRef

_SOQL_URL_BUDGET = 12_000  # characters of URL-encoded SOQL per GET, well under the 16 KB URI limit
_ENCODED_ID = 27  # an id in an IN list, URL-encoded: %27 + 18 + %27 + %2C


class SalesforceConnector(SalesforceRetention, SalesforceDiscovery, SalesforceErasure, SalesforceRights):
    """Discover, export, erase and verify a subject's records in one Salesforce org; rectify and suppress them.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    """

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every field `describe` lists for the user (base64 bodies excepted), record by record.

        Fetched with SOQL, up to 200 ids per query, the queries of several objects sent together
        (`_first_pages`); single-record GETs for objects too wide for one query URL. Records come in the
        refs' object order, then the refs' order; records deleted since discovery are skipped.

        Raises:
            ConnectorError: a ref of another system or an unknown object, or Salesforce failed.
        """
        queued: list[tuple[str, list[RecordRef], str]] = []  # sent a Composite call's worth at a time
        for name, group in self._group(refs).items():
            schema = self._schema(name)
            if schema is None:
                continue
            fields = [f.name for f in schema.fields.values() if f.type != "base64"]
            listing = ", ".join(fields)
            per_query = min(MAX_BATCH, (_SOQL_URL_BUDGET - len(listing) * 2 - 200) // _ENCODED_ID)
            if per_query < 10:
                yield from self._export_queued(queued)  # the objects before it come first
                queued = []
                yield from self._export_one_by_one(name, group)
                continue
            for batch in chunks(group, per_query):
                queued.append((name, batch, format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}",
                                                        listing, name, [ref.id for ref in batch])))
                if len(queued) == COMPOSITE_QUERIES:
                    yield from self._export_queued(queued)
                    queued = []
        yield from self._export_queued(queued)

    def _export_queued(self, queued: Sequence[tuple[str, list[RecordRef], str]]) -> Iterator[Record]:
        pages = self._first_pages("export", [(name, soql) for name, _, soql in queued])
        for (name, batch, _), page in zip(queued, pages, strict=True):
            found = {r["Id"]: r for r in self._pages(page, "export", name)}
            yield from (Record(ref, _plain(found[ref.id])) for ref in batch if ref.id in found)

    def _export_one_by_one(self, name: str, group: Sequence[RecordRef]) -> Iterator[Record]:
        for ref in group:
            record = self._rest("export", name, f"sobjects/{name}/{ref.id}", missing_ok=True)
            if record is not None:
                yield Record(ref, _plain(record))


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) if isinstance(value, Mapping) else value
            for key, value in record.items() if key != "attributes"}


create = SalesforceConnector.create
