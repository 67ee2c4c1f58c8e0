"""The subject's other rights in HubSpot: rectification of contacts, and restriction of marketing (suppression
and its lift) through Communication Preferences v3, what SDK 12 exposes (v4's single ``unsubscribe-all`` is
not in it). Subscription statuses are per address in HubSpot, so they apply whether or not a contact holds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest
from hubspot.crm.objects import SimplePublicObjectInput

from connectors.base import as_text, check_rectifiable, receipt_id, same_text, subject_email
from connectors.hubspot.client import HubSpotApiError, HubSpotClient
from dsr.contract import FieldChange, RecordRef, RightsAction, RightsOutcome, RightsReceipt, Subject

SUBSCRIPTIONS_OBJECT = "email_subscriptions"  # object name of opt-out outcomes; what suppression errors name
# Why a lifted restriction subscribes an address again (HubSpot records it with the legal basis).
RESTORE_EXPLANATION = "Restriction of processing lifted (GDPR Art. 18): subscription restored as it was"
_SUBSCRIBED = re.compile(r"^SUBSCRIBED(?: \((?P<basis>[A-Z_]{2,64})\))?$")
_LEGAL_BASIS = re.compile(r"^[A-Z_]{2,64}$")
_GONE = "the contact no longer exists in HubSpot"


class HubSpotRights(HubSpotClient):
    """Rectify contacts; suppress and restore an address's e-mail subscriptions."""

    # --- rectification (dsr.contract.Rectifier) ---

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """Update the changed properties of each contact (``PATCH /crm/v3/objects/contacts/{id}`` through the
        SDK's ``basic_api.update``); engagements hold no rectifiable field (every field `not_held`).

        A contact HubSpot refuses to change (an address that is not valid or another contact's: 400/409)
        is not done with HubSpot's category; one gone since discovery is not done either.

        Raises:
            ConnectorError: `changes` names a field that is not a canonical rectifiable field, or HubSpot
                failed (network, token, throttled after retries).
        """
        check_rectifiable(self._system, changes)
        calls_before = self._calls()
        mapping = self._settings.rectifiable_properties()
        held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
        not_held = tuple(canonical for canonical in changes if canonical not in mapping)
        contacts = self._contacts(refs)
        current = self._read_batch("rectify", "contacts", [r.id for r in contacts], sorted(set(held.values()))) \
            if contacts and held else {}
        outcomes: list[RightsOutcome] = []
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, False, error=problem))
            elif ref.object != "contacts":
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=tuple(changes)))
            elif not held:
                outcomes.append(RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held))
            else:
                outcomes.append(self._rectify_contact(ref, current.get(ref.id), held, changes, not_held))
        return self._rights_receipt(RightsAction.RECTIFY, outcomes, calls_before)

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Read the contacts again: those whose properties do not show the new values (a contact deleted
        meanwhile holds no old value either, so it is not listed)."""
        check_rectifiable(self._system, changes)
        mapping = self._settings.rectifiable_properties()
        held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
        contacts = self._contacts(refs)
        if not contacts or not held:
            return []
        current = self._read_batch("verify", "contacts", [r.id for r in contacts], sorted(set(held.values())))
        return [ref for ref in contacts if ref.id in current and any(
            not same_text(canonical, current[ref.id].get(prop), changes[canonical]) for canonical, prop in held.items())]

    def _rectify_contact(self, ref: RecordRef, current: Mapping[str, Any] | None, held: Mapping[str, str],
                         changes: Mapping[str, str], not_held: tuple[str, ...]) -> RightsOutcome:
        if current is None:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held, error=_GONE)
        diffs = tuple(FieldChange(canonical, f"contacts.{prop}", old=as_text(current.get(prop)), new=changes[canonical])
                      for canonical, prop in held.items()
                      if not same_text(canonical, current.get(prop), changes[canonical]))
        if not diffs:
            return RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held)
        properties = {held[d.field]: d.new or "" for d in diffs}  # "" clears a property
        try:
            self._sdk("rectify", "contacts", self._basic_api.update_with_http_info, "contacts", ref.id,
                      SimplePublicObjectInput(properties=properties))
        except HubSpotApiError as exc:
            if exc.status == 404:
                return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held, error=_GONE)
            if exc.status in (400, 409):
                return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                     error=f"HubSpot refused the new values ({exc.status} {exc.category or 'error'})")
            raise
        return RightsOutcome(ref, RightsAction.RECTIFY, True, changes=diffs, not_held=not_held)

    # --- marketing (dsr.contract.MarketingSuppressor) ---

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Unsubscribe the subject's address from every e-mail subscription it is subscribed to.

        The changes (``subscription:<id>``, ``SUBSCRIBED (<legal basis>)`` -> ``NOT_SUBSCRIBED``) go on the
        first contact's outcome; other records are done without a change. Already unsubscribed: no change.
        """
        email = subject_email(subject)
        calls_before = self._calls()
        changes: list[FieldChange] = []
        contacts = self._contacts(refs)
        error: str | None = None
        if contacts:
            statuses = self._sdk("suppress", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info,
                                 email)
            for status in statuses.subscription_statuses or []:
                if status.status != "SUBSCRIBED":
                    continue
                basis = status.legal_basis if isinstance(status.legal_basis, str) and \
                    _LEGAL_BASIS.match(status.legal_basis) else None
                request = PublicUpdateSubscriptionStatusRequest(email_address=email, subscription_id=str(status.id))
                try:
                    self._sdk("suppress", SUBSCRIPTIONS_OBJECT, self._status_api.unsubscribe_with_http_info, request)
                except HubSpotApiError as exc:
                    if exc.status is not None and exc.status in (400, 404):
                        error = f"HubSpot refused to unsubscribe subscription {status.id} ({exc.status} " \
                                f"{exc.category or 'error'})"
                        continue
                    raise
                changes.append(FieldChange(f"subscription:{status.id}", f"communication-preferences/v3:{status.id}",
                                           old=f"SUBSCRIBED ({basis})" if basis else "SUBSCRIBED", new="NOT_SUBSCRIBED"))
        outcomes = []
        for ref in refs:
            problem = self._problem_with(ref)
            if problem is not None:
                outcomes.append(RightsOutcome(ref, RightsAction.SUPPRESS, False, error=problem))
            elif contacts and ref == contacts[0]:
                outcomes.append(RightsOutcome(ref, RightsAction.SUPPRESS, error is None, changes=tuple(changes),
                                              error=error))
            else:
                outcomes.append(RightsOutcome(ref, RightsAction.SUPPRESS, True))
        return self._rights_receipt(RightsAction.SUPPRESS, outcomes, calls_before)

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Subscribe the address again to exactly the subscriptions the suppression ended, with the legal
        basis they had. One the person has meanwhile subscribed to again is left as it is; a blocklisted
        address (GDPR-deleted since) cannot be subscribed: not done, with HubSpot's answer."""
        email = subject_email(subject)
        calls_before = self._calls()
        outcomes = []
        for outcome in suppressed:
            restored: list[FieldChange] = []
            error: str | None = None
            for change in outcome.changes:
                match = _SUBSCRIBED.match(change.old or "") if change.field.startswith("subscription:") else None
                if match is None:
                    continue
                sub_id = change.field.split(":", 1)[1]
                basis = match.group("basis")
                request = PublicUpdateSubscriptionStatusRequest(
                    email_address=email, subscription_id=sub_id, legal_basis=basis,
                    legal_basis_explanation=RESTORE_EXPLANATION if basis else None)
                try:
                    self._sdk("restore", SUBSCRIPTIONS_OBJECT, self._status_api.subscribe_with_http_info, request)
                except HubSpotApiError as exc:
                    if exc.status == 400 and self._subscribed(email, sub_id):
                        continue  # subscribed again meanwhile: nothing to put back
                    if exc.status is not None and exc.status in (400, 404):
                        error = f"HubSpot refused to subscribe again to {sub_id} ({exc.status} {exc.category or 'error'})"
                        continue
                    raise
                restored.append(FieldChange(change.field, change.vendor_field, old=change.new, new=change.old))
            outcomes.append(RightsOutcome(outcome.ref, RightsAction.RESTORE, error is None, changes=tuple(restored),
                                          error=error))
        return self._rights_receipt(RightsAction.RESTORE, outcomes, calls_before)

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """The contacts, if their address is still subscribed to any e-mail subscription."""
        email = subject_email(subject)
        contacts = self._contacts(refs)
        if not contacts:
            return []
        statuses = self._sdk("verify", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info, email)
        still = any(s.status == "SUBSCRIBED" for s in statuses.subscription_statuses or [])
        return contacts if still else []

    def _subscribed(self, email: str, sub_id: str) -> bool:
        statuses = self._sdk("restore", SUBSCRIPTIONS_OBJECT, self._status_api.get_email_status_with_http_info, email)
        return any(str(s.id) == sub_id and s.status == "SUBSCRIBED" for s in statuses.subscription_statuses or [])

    def _contacts(self, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """The refs that are this system's contacts."""
        return [r for r in refs if r.object == "contacts" and self._problem_with(r) is None]

    def _rights_receipt(self, action: RightsAction, outcomes: Sequence[RightsOutcome],
                        calls_before: int) -> RightsReceipt:
        result = tuple(outcomes)
        return RightsReceipt(self._system, action, result, receipt_id(self.KIND, result), self._calls() - calls_before)
