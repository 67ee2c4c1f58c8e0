"""HubSpot CRM through the official `hubspot-api-client` (12.0.0): contacts and their engagements.

What it does, per operation of the contract (DESIGN.md):

- `discover`: a typed ``EQ`` filter on ``email`` in ``POST /crm/v3/objects/contacts/search`` (never a
  free-text ``query``), paged; each hit is checked again (trimmed, lower-cased, equal) so a vendor-side
  fuzzy match can never reach an erasure. Then the contacts' engagements (notes, e-mails, calls, meetings;
  configurable): one ``GET /crm/v3/objects/contacts/{id}?associations=notes,emails,...`` per contact for all
  types (HubSpot pages a type's associations there past 100: such a type is listed through v4 associations).
- `export`: the object type's property list once (``GET /crm/v3/properties/{type}``, kept per process for
  `PROPERTIES_TTL_SECONDS`), then every record with all its properties through ``batch/read`` (100 per
  call: a POST body holds hundreds of property names, where a GET's query string would not), streamed.
- `erase`: DELETE of a contact is HubSpot's GDPR delete (``basic_api.purge``, ``idProperty=email`` with
  the address read from the record, by id if it has none): one call removes the contact for good,
  blocklists the address, and (per HubSpot) takes along the engagements associated only with it.
  DELETE of an engagement archives what is still there afterwards (``batch/archive``; HubSpot has no
  GDPR delete for engagements, and archived records are purged by HubSpot after 90 days). ANONYMISE of
  a contact PATCHes the configured properties; e-mail properties are only ever cleared, never set to a
  placeholder (HubSpot validates e-mail syntax and uniqueness: Fides' "[erased]" was refused). A
  contact whose GDPR delete would take a RETAINED engagement with it is anonymised instead (with a
  mapping), as the legal rules say for refused deletions. Idempotent: what is gone is done.
- `verify_erased`: discovery again.
- `expired`/`purge`: search ``<retention property> LT cutoff`` per object holding the category, in keyset
  order (``hs_object_id``), restarting the query before HubSpot's 10,000-results-per-query cap; purge with
  ``batch/archive`` in 100s, two batches in flight. The purge's guard counts instead of listing
  (`count_expired_all`: the same search with ``limit: 1``, read for its ``total``; `expired_among`: the
  protected records' retention property through ``batch/read``), so its purge pass lists on the search
  budget while the archives go out on the account's.
- `opt_out` (marketing objection): unsubscribe the address from every e-mail subscription type through
  communication preferences v3. The contact is kept.
- rectification and restriction of marketing: `connectors.hubspot.rights`.

Pacing, retries and HubSpot's failures: `connectors.hubspot.client` on `connectors.http` (100 calls per
10 s and 4 searches a second by default). Credentials: a private-app token, read from the environment
variable named by `token_env`. Private-app tokens do not expire and cannot be refreshed: a 401
(``EXPIRED_AUTHENTICATION`` for a rotated or expired one, ``INVALID_AUTHENTICATION`` for a revoked or
wrong one) is a clear `ConnectorError` asking for a new token, never retried. Errors name the system, the
operation, the object and HubSpot's status and category only, never personal data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest
from hubspot.crm.contacts import PublicGdprDeleteInput
from hubspot.crm.objects import Filter, SimplePublicObjectInput

from connectors.base import Record, Subject, chunks, json_friendly, outcome_for, receipt_id, subject_email
from connectors.hubspot.client import MAX_BATCH, PROPERTIES_TTL_SECONDS, HubSpotApiError, id_order
from connectors.hubspot.rights import SUBSCRIPTIONS_OBJECT, HubSpotRights
from connectors.hubspot.settings import HubSpotSettings
from dsr.contract import DataCategory, ErasureAction, ErasureDecision, Receipt, RecordOutcome, RecordRef

#: Two: one archive on the way while the next is queued, and the listing's searches alongside; more
#: would only wait on the account's budget (100 calls per 10 s), which the archives alone fill.
PURGE_WORKERS = 2

__all__ = ["PROPERTIES_TTL_SECONDS", "HubSpotApiError", "HubSpotConnector", "HubSpotSettings", "create"]


class HubSpotConnector(HubSpotRights):
    """Discover, export, erase, verify, purge and opt out a subject's HubSpot contacts and engagements.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done.
    `stats` counts calls, retries, throttling answers, slowdowns and waits, for benchmarks and tests.
    """

    #: Archive batches in flight at once in the retention purge (`ParallelPurge`).
    purge_workers = PURGE_WORKERS

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """The subject's contacts (exact e-mail match), then their engagements, each object by id.

        Raises:
            ConnectorError: the subject has no e-mail, or HubSpot failed (after retries).
        """
        contact_ids = self._find_contacts(subject_email(subject))
        refs = [self._ref("contacts", cid) for cid in contact_ids]
        engagements = self._settings.engagements
        found: dict[str, set[str]] = {obj: set() for obj in engagements}
        for cid in contact_ids:
            for obj, ids in self._engagements_of(cid, engagements).items():
                found[obj].update(ids)
        for obj in engagements:
            refs.extend(self._ref(obj, eid) for eid in sorted(found[obj], key=id_order))
        return refs

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """Every property of each record, 100 records per call; records gone since discovery are skipped.

        Records come object by object, in the order of `refs` within an object.
        """
        for obj, group in self._group(refs).items():
            names = self._all_properties(obj)
            for chunk in chunks(group, MAX_BATCH):
                found = self._read_batch("export", obj, [r.id for r in chunk], names)
                for ref in chunk:
                    properties = found.get(ref.id)
                    if properties is not None:
                        yield Record(ref=ref, fields={k: json_friendly(v) for k, v in sorted(properties.items())})

    def erase(self, decisions: Sequence[ErasureDecision]) -> Receipt:
        """GDPR-delete contacts, archive engagements, anonymise or retain, per decision; idempotent.

        Raises:
            ConnectorError: HubSpot failed in a way that is not a refusal of one record (network,
                authentication, still throttled after retries); re-running is safe.
        """
        calls_before = self._calls()
        outcomes, todo = self._triage(decisions)
        # Deletes first, then anonymisations (a stable sort keeps the decisions' order within each).
        contacts = sorted((d for d in todo if d.ref.object == "contacts"),
                          key=lambda d: d.action is ErasureAction.ANONYMISE)
        engagements: dict[str, list[ErasureDecision]] = {}
        for d in todo:
            if d.ref.object == "contacts":
                continue
            if d.action is ErasureAction.ANONYMISE:
                outcomes[d.ref.key] = outcome_for(
                    d, done=False, error=f"no anonymise mapping for object {d.ref.object!r} in systems."
                    f"{self._system} (HubSpot engagements can only be deleted)")
            else:
                engagements.setdefault(d.ref.object, []).append(d)
        wanted = list(dict.fromkeys(["email", *(self._settings.anonymise or {})]))
        current = self._read_batch("erase", "contacts", [d.ref.id for d in contacts], wanted)
        before = {obj: set(self._read_batch("erase", obj, [d.ref.id for d in group], ["hs_object_id"]))
                  for obj, group in engagements.items()}
        retained = {(d.ref.object, d.ref.id) for d in decisions if d.action is ErasureAction.RETAIN
                    and d.ref.system == self._system and d.ref.object != "contacts"}
        for decision in contacts:
            outcomes[decision.ref.key] = self._erase_contact(decision, current.get(decision.ref.id), retained)
        for obj, group in engagements.items():
            outcomes.update(self._archive_engagements(obj, group, before[obj]))
        return self._receipt(decisions, outcomes, calls_before)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Re-run discovery: what still matches (GDPR-deleted and anonymised contacts no longer do)."""
        return self.discover(subject)

    def expired(self, category: DataCategory | str, cutoff: date | datetime) -> Iterator[RecordRef]:
        """Records of every object holding `category` whose retention property is before `cutoff`.

        The retention property is `retention_property.<object>` (default ``lastmodifieddate`` for
        contacts, ``hs_lastmodifieddate`` for engagements); a date cutoff means midnight UTC. Refs carry
        the property's date as `anchor_date`. Pages in ``hs_object_id`` order, so records purged while
        iterating do not make it skip others.
        """
        wanted = DataCategory(category)
        for obj in self._objects:
            if wanted in self._settings.categories_of(obj):
                yield from self._expired_hits(obj, cutoff)

    def expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                    ) -> Iterator[RecordRef]:
        """Expired records of every object, each object searched once (whatever categories it holds).

        `cutoff_of(categories)` gives an object's cutoff (the retention purge: that of the category
        governing its records), or None to leave the object out. Otherwise as `expired`.
        """
        for obj in self._objects:
            cutoff = cutoff_of(tuple(self._settings.categories_of(obj)))
            if cutoff is not None:
                yield from self._expired_hits(obj, cutoff)

    def count_expired_all(self, cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None],
                          ) -> dict[tuple[DataCategory, ...], int]:
        """How many records have expired, per set of categories an object holds (objects holding the
        same categories add up): per object, one search on the listing's own filter, read for its
        `total`. The purge's guard decides on these counts, and its purge pass lists while it archives."""
        counts: dict[tuple[DataCategory, ...], int] = {}
        for obj in self._objects:
            categories = tuple(self._settings.categories_of(obj))
            cutoff = cutoff_of(categories)
            if cutoff is not None:
                counts[categories] = counts.get(categories, 0) + self._count_hits(
                    "expired", obj, self._expired_filters(obj, cutoff))
        return counts

    def expired_among(self, refs: Sequence[RecordRef],
                      cutoff_of: Callable[[tuple[DataCategory, ...]], date | datetime | None]) -> list[RecordRef]:
        """Those of `refs` (the purge's protected records) that have expired, in the order given: their
        retention property read 100 at a time (batch/read), on the same condition as the listing."""
        expired: set[tuple[str, str]] = set()
        for obj, group in self._group(refs).items():
            cutoff = cutoff_of(tuple(self._settings.categories_of(obj)))
            if cutoff is None:
                continue
            prop, limit = self._settings.retention_of(obj), _epoch_millis(cutoff)
            found = self._read_batch("expired", obj, [r.id for r in group], [prop])
            expired.update((obj, object_id) for object_id, properties in found.items()
                           if (moment := _millis_of(properties.get(prop))) is not None and moment < limit)
        return [ref for ref in refs if (ref.object, ref.id) in expired]

    def purge(self, refs: Sequence[RecordRef]) -> Receipt:
        """Archive the records, 100 per call (HubSpot's batch/archive; restorable by HubSpot for 90 days).

        Thread-safe (`purge_workers` batches in flight: the archives, on the account's budget, go out
        while the purge pass lists on the search budget). HubSpot's batch/archive answers 204 whether
        or not an id still exists, so `already_gone` is never claimed here.
        """
        calls_before = self._calls()
        outcomes: list[RecordOutcome] = []
        for obj, group in self._group(refs).items():
            for chunk in chunks(group, MAX_BATCH):
                self._archive("purge", obj, [r.id for r in chunk])
                outcomes.extend(RecordOutcome(ref=r, action=ErasureAction.DELETE, done=True) for r in chunk)
        return self._receipt_of(outcomes, calls_before)

    def opt_out(self, subject: Subject) -> Receipt:
        """Marketing objection: unsubscribe the address from every e-mail subscription type; keep the contact.

        One outcome per subscription type (object ``email_subscriptions``): done, or already gone when
        HubSpot says the address is already unsubscribed.
        """
        email = subject_email(subject)
        calls_before = self._calls()
        statuses = self._sdk("opt_out", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info, email)
        outcomes = []
        for status in statuses.subscription_statuses or []:
            ref = RecordRef(self._system, SUBSCRIPTIONS_OBJECT, str(status.id), (DataCategory.MARKETING,))
            request = PublicUpdateSubscriptionStatusRequest(email_address=email, subscription_id=str(status.id))
            try:
                self._sdk("opt_out", SUBSCRIPTIONS_OBJECT, self._status_api.unsubscribe_with_http_info, request)
            except HubSpotApiError as exc:
                if exc.status == 400 and status.status != "SUBSCRIBED":
                    # HubSpot refuses to unsubscribe an address that already is: nothing to do.
                    outcomes.append(RecordOutcome(ref, ErasureAction.DELETE, done=True, already_gone=True))
                    continue
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
                    outcomes.append(RecordOutcome(ref, ErasureAction.DELETE, done=False, error=str(exc)))
                    continue
                raise
            outcomes.append(RecordOutcome(ref, ErasureAction.DELETE, done=True, fields_cleared=("status",)))
        return self._receipt_of(outcomes, calls_before)

    # --- discovery and retention ---

    def _find_contacts(self, email: str) -> list[str]:
        filters = [Filter(property_name="email", operator="EQ", value=email)]
        ids = []
        for hit in self._search_all("discover", "contacts", filters, ["email"]):
            stored = ((hit.properties or {}).get("email") or "").strip().lower()
            if stored == email:  # belt and braces: never trust a vendor-side match blindly
                ids.append(str(hit.id))
        return sorted(set(ids), key=id_order)

    def _expired_filters(self, obj: str, cutoff: date | datetime) -> list[Filter]:
        return [Filter(property_name=self._settings.retention_of(obj), operator="LT", value=str(_epoch_millis(cutoff)))]

    def _expired_hits(self, obj: str, cutoff: date | datetime) -> Iterator[RecordRef]:
        prop = self._settings.retention_of(obj)
        for hit in self._search_all("expired", obj, self._expired_filters(obj, cutoff), [prop]):
            yield replace(self._ref(obj, hit.id), anchor_date=_date_of((hit.properties or {}).get(prop)))

    # --- erasure ---

    def _erase_contact(self, decision: ErasureDecision, current: Mapping[str, Any] | None,
                       retained: set[tuple[str, str]]) -> RecordOutcome:
        """GDPR delete, or anonymisation (asked for, or because the delete would take a retained engagement)."""
        if decision.action is ErasureAction.ANONYMISE:
            return self._anonymise(decision, current)
        if current is None or not self._purge_would_take(decision.ref.id, retained):
            return self._gdpr_delete(decision, current)
        if self._settings.anonymise is None:
            return outcome_for(decision, done=False, error="HubSpot's GDPR delete would also delete a retained "
                               f"engagement of this contact; give systems.{self._system}.settings.anonymise to "
                               "anonymise it instead")
        return self._anonymise(decision, current)

    def _purge_would_take(self, contact_id: str, retained: set[tuple[str, str]]) -> bool:
        """Whether the contact's GDPR delete would take a retained engagement along."""
        if not retained or not self._settings.gdpr_delete_cascades:
            return False
        types = sorted({o for o, _ in retained} & set(self._settings.engagements))
        linked = self._engagements_of(contact_id, types)  # one read for every type
        return any((obj, eid) in retained for obj in types for eid in linked[obj])

    def _gdpr_delete(self, decision: ErasureDecision, current: Mapping[str, Any] | None) -> RecordOutcome:
        if current is None:
            return outcome_for(decision, done=True, already_gone=True)
        email = (current.get("email") or "").strip()
        body = (PublicGdprDeleteInput(id_property="email", object_id=email) if email
                else PublicGdprDeleteInput(object_id=decision.ref.id))
        try:
            self._sdk("erase", "contacts", self._contacts_api.purge_with_http_info, body)
        except HubSpotApiError as exc:
            if exc.status == 404:
                return outcome_for(decision, done=True, already_gone=True)
            if exc.status == 400:
                return outcome_for(decision, done=False, error=str(exc))
            raise
        return outcome_for(decision, done=True, fields_cleared=tuple(self._all_properties("contacts", "erase")))

    def _anonymise(self, decision: ErasureDecision, current: Mapping[str, Any] | None) -> RecordOutcome:
        mapping = self._settings.anonymise
        if mapping is None:
            return outcome_for(decision, done=False, action=ErasureAction.ANONYMISE,
                               error=f"no anonymise mapping at systems.{self._system}.settings.anonymise")
        if current is None:
            return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, already_gone=True)
        changes = {prop: ("" if value is None else value) for prop, value in mapping.items()
                   if (current.get(prop) or "") != (value or "")}
        if not changes:  # anonymised already
            return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, already_gone=True)
        try:
            self._sdk("erase", "contacts", self._basic_api.update_with_http_info, "contacts", decision.ref.id,
                      SimplePublicObjectInput(properties=changes))
        except HubSpotApiError as exc:
            if exc.status == 404:
                return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, already_gone=True)
            if exc.status in (400, 409):
                return outcome_for(decision, done=False, action=ErasureAction.ANONYMISE,
                                   error=f"HubSpot refused the values of systems.{self._system}.settings.anonymise "
                                   f"({exc.status} {exc.category or 'error'})")
            raise
        return outcome_for(decision, done=True, action=ErasureAction.ANONYMISE, fields_cleared=tuple(sorted(changes)))

    def _archive_engagements(self, obj: str, group: Sequence[ErasureDecision],
                             present_before: set[str]) -> dict[str, RecordOutcome]:
        """Archive what of `group` is still there (the contacts' GDPR deletes may have taken some along);
        those absent before the erasure began are already gone."""
        still = set(self._read_batch("erase", obj, sorted(present_before, key=id_order), ["hs_object_id"]))
        for chunk in chunks(sorted(still, key=id_order), MAX_BATCH):
            self._archive("erase", obj, chunk)
        cleared = tuple(self._all_properties(obj, "erase")) if present_before else ()
        outcomes = {}
        for decision in group:
            gone = decision.ref.id not in present_before
            outcomes[decision.ref.key] = outcome_for(decision, done=True, already_gone=gone,
                                                     fields_cleared=() if gone else cleared)
        return outcomes

    def _receipt_of(self, outcomes: Sequence[RecordOutcome], calls_before: int) -> Receipt:
        result = tuple(outcomes)
        return Receipt(system=self._system, outcomes=result, vendor_receipt_id=receipt_id(self.KIND, result),
                       api_calls=self._calls() - calls_before)


def _epoch_millis(cutoff: date | datetime) -> int:
    if isinstance(cutoff, datetime):
        moment = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    else:
        moment = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _moment_of(value: Any) -> datetime | None:
    """A date-time property as HubSpot answers it: epoch milliseconds or ISO 8601."""
    if value in (None, ""):
        return None
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _millis_of(value: Any) -> int | None:
    """A date-time property as HubSpot compares it in a filter: epoch milliseconds."""
    text = str(value)
    if text.isdigit():
        return int(text)  # exact, not through a float
    moment = _moment_of(value)
    if moment is None:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _date_of(value: Any) -> date | None:
    moment = _moment_of(value)
    return None if moment is None else moment.date()


create = HubSpotConnector.create
