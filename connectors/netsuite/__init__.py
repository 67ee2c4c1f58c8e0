"""NetSuite (SuiteTalk REST web services): a subject's customers and contacts, and the transactions that keep them.

Reached with plain `requests` on the HTTP base (`connectors.http`), authenticated either way NetSuite offers
(`connectors.netsuite.client`):

- ``flow: tba``, token-based authentication: OAuth 1.0a signed by `requests_oauthlib.OAuth1` with
  HMAC-SHA256 and ``realm`` = the account id (``1234567_SB1``). Every call carries a fresh nonce and
  timestamp, including retries. NetSuite blocks *new* TBA integrations from 2027.1; existing ones keep working.
- ``flow: client_credentials``, OAuth 2.0 machine-to-machine: a JWT client assertion (header ``kid`` = the
  certificate id, PS256 by default; claims ``iss`` = client id, ``scope``, ``aud`` = the token URL, ``iat``,
  ``exp``) signed with the certificate's private key and exchanged at ``/services/rest/auth/oauth2/v1/token``
  for a one-hour bearer token, kept for the process's connectors of the same account and client (one
  exchange an hour, not one a request) and fetched again a minute before it expires or on a 401.

Per operation of the contract (DESIGN.md):

- `discover`: SuiteQL (``POST /services/rest/query/v1/suiteql``, ``Prefer: transient``), paged with
  ``limit``/``offset`` while ``hasMore``: ``SELECT id, email FROM contact WHERE LOWER(email) = '<address>'``,
  the same for ``customer``. SuiteQL takes no bound parameters over REST, so the address goes in as a string
  literal built by `suiteql_string` (single quotes doubled, control characters refused) and is compared
  with ``=``, never LIKE, so ``%`` and ``_`` are ordinary characters. (SuiteQL compares text case-sensitively,
  hence ``LOWER``; the address is already lower case.) Each hit is checked again in Python. The
  transactions whose ``entity`` is a matched customer come in the customer query itself (``customer LEFT
  OUTER JOIN transaction ON transaction.entity = customer.id``, SuiteQL's ANSI join: one query, not a
  second for the transactions): a customer they reference is reported as ``tax_record="referenced"``, with
  the latest of their dates as `anchor_date` and its subsidiary's country (`tax_jurisdictions` of the data
  map) as `jurisdiction`; with `transactions` configured, those of its types are listed as
  ``transaction``/``financial`` refs, ``tax_record="document"``, with their date as `anchor_date`. The
  policy decides on these facts. A query is restarted after its last row (id; for the join, customer and
  transaction ids) before NetSuite's 100,000-rows-per-query cap.
- `export`: ``GET /services/rest/record/v1/{type}/{id}?expandSubResources=true``, every field and sublist
  (``links`` removed); records gone since discovery are skipped.
- `erase` (`connectors.netsuite.erasure`), per decision: DELETE sends ``DELETE /record/v1/{type}/{id}`` (204;
  404 is ``already_gone``). If NetSuite refuses it because transactions reference the customer (ones that
  appeared after discovery, or in a purge), the customer is anonymised instead and kept as
  `dsr.policy.kept_for_references` decides from the same facts. ANONYMISE PATCHes the configured values
  (and empties `clear_sublists` with ``?replace=``); fields already holding them count as ``already_gone``.
  RETAIN touches nothing.
  **Transactions are never deleted by a DSR** (`dsr.policy.ledger_document`): ANONYMISE of a transaction
  PATCHes only the non-financial fields named in ``transactions.anonymise``, such as the e-mail copied onto
  an invoice or a memo.
- `verify_erased`: discovery again (an anonymised customer no longer matches).
- `expired`/`purge`: customers and contacts whose ``lastmodifieddate`` is before the cutoff, by SuiteQL;
  purge deletes them like `erase` does, anonymising customers with transactions. Transactions are never
  listed as expired and never purged here.
- `rectify` and the marketing suppression: `connectors.netsuite.rights`.

Pacing: NetSuite limits *concurrent* calls per account (15, plus 10 per SuiteCloud Plus licence, shared
by SOAP, REST and RESTlets, so other integrations use the same budget) and answers the excess with 429.
The connector keeps at most `max_concurrency` calls in flight and paces them with `rate_limit`. 429s,
5xx answers, resets and timeouts are retried with backoff (honouring a ``Retry-After`` if one comes).

Personal data never reaches an exception or a log. Record URLs hold numeric ids only and the address
travels in the body of a SuiteQL call, but NetSuite's error details can echo values that were sent (a
query fragment, an invalid value). So every failure names the system, operation, record type, HTTP status
and NetSuite's ``o:errorCode`` only, and nothing is chained. Secrets are read from the environment
variables the settings name and never appear in a message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from connectors.base import subject_email
from connectors.netsuite.client import NetSuiteApiError, id_list, suiteql_string
from connectors.netsuite.erasure import NetSuiteErasure, date_or_none
from connectors.netsuite.rights import NetSuiteRights
from connectors.netsuite.settings import ENTITY_OBJECTS, TRANSACTION_TYPES, NetSuiteSettings
from dsr.contract import Record, RecordRef, Subject

__all__ = ["NetSuiteApiError", "NetSuiteConnector", "NetSuiteSettings", "create", "suiteql_string"]


class NetSuiteConnector(NetSuiteErasure, NetSuiteRights):
    """Discover, export, erase, verify and purge a subject's customers and contacts in one NetSuite account.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    `stats` counts calls, retries, throttling answers and token fetches, for benchmarks and tests.
    """

    def discover(self, subject: Subject) -> list[RecordRef]:
        """Customers and contacts whose e-mail is the subject's, then (if configured) their customers' transactions.

        Refs carry the facts `dsr.policy` decides on: a customer that transactions reference is
        ``tax_record="referenced"``, with the latest transaction's date as `anchor_date` and its
        subsidiary's country as `jurisdiction`; a transaction is ``tax_record="document"``.

        Raises:
            ConnectorError: the subject has no usable e-mail, or NetSuite failed (after retries).
        """
        email = subject_email(subject)
        literal = suiteql_string(email)
        matched: list[tuple[str, str]] = []  # (record type, id), in NetSuite's order
        subsidiaries: dict[str, str | None] = {}  # customer id -> subsidiary id
        latest: dict[str, date | None] = {}
        transactions: list[RecordRef] = []
        for name in ENTITY_OBJECTS:
            if name not in self._settings.objects:
                continue
            rows = (self._customers_with_transactions(literal) if name == "customer"
                    else self._suiteql("discover", name, "id, email", name, f"LOWER(email) = {literal}"))
            for row in rows:
                first = (name, str(row["id"])) not in matched[-1:]  # a customer's rows come together
                if str(row.get("email") or "").strip().lower() != email:
                    if first:
                        self._count("mismatches_dropped")  # belt and braces: never trust a vendor-side match blindly
                    continue
                if first:
                    matched.append((name, str(row["id"])))
                if name == "customer":
                    subsidiaries[str(row["id"])] = str(row["subsidiary"]) if row.get("subsidiary") else None
                    transactions.extend(self._transaction_of(row, latest))
        refs = [self._person_ref(name, rid, latest, subsidiaries) for name, rid in matched]
        return [*refs, *sorted(transactions, key=lambda ref: int(ref.id))]  # NetSuite's id order, as listed alone

    def _customers_with_transactions(self, literal: str) -> Iterator[Mapping[str, Any]]:
        """The customers whose e-mail is `literal`, each with the transactions (any type) that reference it, in
        one SuiteQL join: a row per (customer, transaction), or one row without a transaction."""
        select = ("customer.id AS id, customer.email AS email, customer.subsidiary AS subsidiary, "
                  "transaction.id AS transaction_id, transaction.type AS type, "
                  "TO_CHAR(transaction.trandate, 'YYYY-MM-DD') AS trandate")
        where = f"LOWER(customer.email) = {literal}"

        def query(last: Mapping[str, Any] | None) -> str:
            condition = where
            if last is not None:  # restart after the last row, in the query's order
                customer = id_list([str(last["id"])])
                after = f"customer.id > {customer}"
                if last.get("transaction_id") is not None:
                    after = (f"({after} OR (customer.id = {customer} AND transaction.id > "
                             f"{id_list([str(last['transaction_id'])])}))")
                condition = f"({where}) AND {after}"
            return (f"SELECT {select} FROM customer LEFT OUTER JOIN transaction ON transaction.entity = customer.id "
                    f"WHERE {condition} ORDER BY customer.id, transaction.id")

        return self._suiteql_rows("discover", "customer", query)

    def _transaction_of(self, row: Mapping[str, Any], latest: dict[str, date | None]) -> list[RecordRef]:
        """A joined row's transaction: its date counts toward the customer's latest (`latest`); its ref when
        `transactions.discover` lists its type."""
        if row.get("transaction_id") is None:
            return []
        day, entity = date_or_none(row.get("trandate")), str(row["id"])
        before = latest.get(entity)
        latest[entity] = day if before is None or (day is not None and day > before) else before
        transactions = self._settings.transactions
        listed = transactions.types if transactions is not None and transactions.discover else ()
        record_type = TRANSACTION_TYPES.get(str(row.get("type")))
        if transactions is None or record_type is None or row.get("type") not in listed:
            return []
        return [RecordRef(self._system, record_type, str(row["transaction_id"]), transactions.categories,
                          anchor_date=day, tax_record="document")]

    def _person_ref(self, name: str, rid: str, latest: Mapping[str, date | None],
                    subsidiaries: Mapping[str, str | None]) -> RecordRef:
        """A customer or contact's ref; a customer transactions reference carries the facts of that."""
        categories = self._settings.objects[name].categories
        if name != "customer" or rid not in latest:
            return RecordRef(self._system, name, rid, categories)
        jurisdictions = self._settings.tax_jurisdictions
        assert jurisdictions is not None  # required with objects.customer
        return RecordRef(self._system, name, rid, categories, anchor_date=latest[rid],
                         jurisdiction=jurisdictions.of(subsidiaries.get(rid)), tax_record="referenced")

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every field and sublist of each record (``expandSubResources=true``), in the order of `refs`.

        Records gone since discovery are skipped.

        Raises:
            ConnectorError: a ref of another system or an unknown record type, or NetSuite failed.
        """
        self._check_refs(refs)
        for ref in refs:
            record = self._get("export", ref.object, ref.id, expand=True)
            if record is not None:
                yield Record(ref=ref, fields=_without_links(record))

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (deleted and anonymised records no longer do)."""
        return self.discover(subject)


create = NetSuiteConnector.create


def _without_links(value: Any) -> Any:
    """`value` without NetSuite's ``links`` (its navigation URLs, no data of the subject's), at every depth."""
    if isinstance(value, list):
        return [_without_links(v) for v in value]
    return {k: _without_links(v) for k, v in value.items() if k != "links"} if isinstance(value, Mapping) else value
