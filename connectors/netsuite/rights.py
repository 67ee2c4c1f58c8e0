"""Rights other than access and erasure in NetSuite: rectification of customers and contacts, and their
marketing status (``globalSubscriptionStatus``). Transactions are documents as issued: never changed here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from connectors.base import ConnectorConfigError, as_text, check_rectifiable, receipt_id, same_text, subject_email
from connectors.netsuite.client import PER_RECORD, RECORD_PATH, NetSuiteClient, error_code
from connectors.netsuite.settings import DEFAULT_RECTIFIABLE, ENTITY_OBJECTS
from dsr.contract import ConnectorError, FieldChange, RecordRef, RightsAction, RightsOutcome, RightsReceipt, Subject

# Marketing: globalSubscriptionStatus, a select field (Oracle NetSuite help, Subscription Management).
# A business may set the soft statuses only; the confirmed ones are the recipient's own.
SUBSCRIPTION_FIELD = "globalSubscriptionStatus"
SUBSCRIPTION_NAMES: Mapping[str, str] = {"1": "Soft Opt-In", "2": "Soft Opt-Out", "3": "Confirmed Opt-In",
                                         "4": "Confirmed Opt-Out"}
SOFT_OPT_IN, SOFT_OPT_OUT = "1", "2"
_OPTED_OUT = frozenset({"2", "4"})
_GONE = "the record no longer exists in NetSuite"
#: One record of a rights step: its ref, the fields it does not hold, and the call (None: nothing to do).
_Step = tuple[RecordRef, tuple[str, ...], Callable[[], RightsOutcome] | None]


class NetSuiteRights(NetSuiteClient):
    """`rectify` (dsr.contract.Rectifier) and the marketing suppression (dsr.contract.MarketingSuppressor)."""

    def rectify(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> RightsReceipt:
        """PATCH the changed fields of each customer and contact (only what differs); transactions are left as
        issued (every field `not_held`).

        A record NetSuite refuses to change (a required name emptied, an invalid e-mail) is not done, with
        its error code; a record gone since discovery is not done either. If NetSuite itself fails (after
        retries), the records not yet handled are not done, with that error.

        Raises:
            ConnectorError: `changes` names a field that is not a canonical rectifiable field.
        """
        check_rectifiable(self._system, changes)
        steps: list[_Step] = []
        for ref in refs:
            mapping = self._rectifiable(ref.object)
            held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
            not_held = tuple(canonical for canonical in changes if canonical not in mapping)
            steps.append((ref, not_held, partial(self._rectify_one, ref, held, changes, not_held) if held else None))
        return self._each(RightsAction.RECTIFY, steps)

    def verify_rectified(self, refs: Sequence[RecordRef], changes: Mapping[str, str]) -> list[RecordRef]:
        """Read each customer and contact again: those whose rectifiable fields do not show the new values.

        A record deleted meanwhile holds no old value either, so it is not listed.
        """
        check_rectifiable(self._system, changes)
        wrong: list[RecordRef] = []
        for ref in refs:
            mapping = self._rectifiable(ref.object)
            held = {canonical: mapping[canonical] for canonical in changes if canonical in mapping}
            if not held or self._problem_with(ref) is not None:
                continue
            current = self._get("verify", ref.object, ref.id, expand=False)
            if current is not None and any(not same_text(canonical, current.get(name), changes[canonical])
                                           for canonical, name in held.items()):
                wrong.append(ref)
        return wrong

    def _rectifiable(self, obj: str) -> Mapping[str, str]:
        spec = self._settings.objects.get(obj) if obj in ENTITY_OBJECTS else None
        if spec is None:
            return {}
        return spec.rectifiable if spec.rectifiable is not None else DEFAULT_RECTIFIABLE[obj]

    def _rectify_one(self, ref: RecordRef, held: Mapping[str, str], changes: Mapping[str, str],
                     not_held: tuple[str, ...]) -> RightsOutcome:
        current = self._get("rectify", ref.object, ref.id, expand=False)
        if current is None:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error=_GONE)
        diffs = tuple(FieldChange(canonical, f"{ref.object}.{name}", old=as_text(current.get(name)),
                                  new=changes[canonical])
                      for canonical, name in held.items() if not same_text(canonical, current.get(name),
                                                                             changes[canonical]))
        if not diffs:
            return RightsOutcome(ref, RightsAction.RECTIFY, True, not_held=not_held)
        body = {held[d.field]: (d.new or None) for d in diffs}  # an empty value clears the field
        answer = self._rest("rectify", ref.object, "PATCH", f"{RECORD_PATH}/{ref.object}/{ref.id}", body=body,
                            expect=PER_RECORD)
        if answer.status_code == 404:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error=_GONE)
        if answer.status_code != 204:
            return RightsOutcome(ref, RightsAction.RECTIFY, False, not_held=not_held,
                                 error=f"NetSuite refused the new values ({answer.status_code} "
                                       f"{error_code(answer) or 'UNKNOWN'})")
        return RightsOutcome(ref, RightsAction.RECTIFY, True, changes=diffs, not_held=not_held)

    # --- marketing (dsr.contract.MarketingSuppressor) ---

    def suppress_marketing(self, subject: Subject, refs: Sequence[RecordRef]) -> RightsReceipt:
        """Set each customer's and contact's ``globalSubscriptionStatus`` to Soft Opt-Out (NetSuite then
        unsubscribes it from every campaign subscription category). Records already Soft or Confirmed Opt-Out
        are done without a change; transactions carry no marketing status."""
        subject_email(subject)
        return self._set_subscriptions(RightsAction.SUPPRESS, [
            (ref, SOFT_OPT_OUT, None) for ref in refs])

    def restore_marketing(self, subject: Subject, suppressed: Sequence[RightsOutcome]) -> RightsReceipt:
        """Put back the status each suppression changed, on records still at the Soft Opt-Out it set.

        A record the recipient (or anyone) changed since is left alone. A Confirmed Opt-In cannot be set by a
        business: it comes back as Soft Opt-In (campaigns reach the person again; NetSuite may ask them to
        confirm).
        """
        subject_email(subject)
        wanted: list[tuple[RecordRef, str, str | None]] = []
        for outcome in suppressed:
            old = next((c.old for c in outcome.changes if c.field == SUBSCRIPTION_FIELD), None)
            if old is None:
                wanted.append((outcome.ref, "", None))  # nothing was changed: nothing to restore
                continue
            back = next((sid for sid, name in SUBSCRIPTION_NAMES.items() if name == old), SOFT_OPT_IN)
            wanted.append((outcome.ref, SOFT_OPT_IN if back == "3" else back, SOFT_OPT_OUT))
        return self._set_subscriptions(RightsAction.RESTORE, wanted)

    def verify_suppressed(self, subject: Subject, refs: Sequence[RecordRef]) -> list[RecordRef]:
        """Customers and contacts whose status still lets campaigns reach them (Soft or Confirmed Opt-In)."""
        subject_email(subject)
        open_to_marketing = []
        for ref in refs:
            if ref.object not in ENTITY_OBJECTS or self._problem_with(ref) is not None:
                continue
            current = self._get("verify", ref.object, ref.id, expand=False)
            if current is not None and _subscription(current) not in _OPTED_OUT:
                open_to_marketing.append(ref)
        return open_to_marketing

    def _set_subscriptions(self, action: RightsAction,
                           wanted: Sequence[tuple[RecordRef, str, str | None]]) -> RightsReceipt:
        """Per record: set `globalSubscriptionStatus` to the wanted id. For a suppression (`only_from` None)
        a record already opted out is left; for a restore only a record still at `only_from` is changed."""
        return self._each(action, [
            (ref, (), partial(self._set_subscription, ref, action, target, only_from)
             if ref.object in ENTITY_OBJECTS and target else None) for ref, target, only_from in wanted])

    def _each(self, action: RightsAction, steps: Sequence[_Step]) -> RightsReceipt:
        """Each record's step in turn (None: nothing to do), with the fields it does not hold. A ref that is not
        this system's is not done; once NetSuite itself fails (after retries), neither is any record after it."""
        calls_before = self._calls()
        outcomes: list[RightsOutcome] = []
        failure: str | None = None
        for ref, not_held, step in steps:
            problem = self._problem_with(ref) or failure
            if problem is not None or step is None:
                outcomes.append(RightsOutcome(ref, action, problem is None, not_held=not_held, error=problem))
                continue
            try:
                outcomes.append(step())
            except ConnectorConfigError:
                raise
            except ConnectorError as exc:
                failure = str(exc)
                outcomes.append(RightsOutcome(ref, action, False, not_held=not_held, error=failure))
        return RightsReceipt(self._system, action, tuple(outcomes), receipt_id(self.KIND, tuple(outcomes)),
                             self._calls() - calls_before)

    def _set_subscription(self, ref: RecordRef, action: RightsAction, target: str,
                          only_from: str | None) -> RightsOutcome:
        current = self._get(action.value, ref.object, ref.id, expand=False)
        if current is None:
            # Suppressing a record that is gone: nothing left to market to. Restoring it: nothing to restore.
            return RightsOutcome(ref, action, True)
        status = _subscription(current)
        if status == target or (only_from is None and status in _OPTED_OUT) or \
                (only_from is not None and status != only_from):
            return RightsOutcome(ref, action, True)
        answer = self._rest(action.value, ref.object, "PATCH", f"{RECORD_PATH}/{ref.object}/{ref.id}",
                            body={SUBSCRIPTION_FIELD: {"id": target}}, expect=PER_RECORD)
        if answer.status_code == 404:
            return RightsOutcome(ref, action, True)
        if answer.status_code != 204:
            return RightsOutcome(ref, action, False, error=f"NetSuite refused the subscription status "
                                                           f"({answer.status_code} {error_code(answer) or 'UNKNOWN'})")
        change = FieldChange(SUBSCRIPTION_FIELD, f"{ref.object}.{SUBSCRIPTION_FIELD}",
                             old=SUBSCRIPTION_NAMES.get(status, status), new=SUBSCRIPTION_NAMES[target])
        return RightsOutcome(ref, action, True, changes=(change,))


def _subscription(record: Mapping[str, Any]) -> str:
    """A record's ``globalSubscriptionStatus`` id; NetSuite leaves an empty field out (the default, Soft Opt-In)."""
    value = record.get(SUBSCRIPTION_FIELD)
    status = value.get("id") if isinstance(value, Mapping) else value
    return str(status) if status is not None else SOFT_OPT_IN
