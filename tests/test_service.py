"""Submitting, verifying, extending and cancelling requests: what the privacy office sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dsr.deadlines import ExtensionNotAllowed
from dsr.models import RequestInputError, Status, parse_new_request
from dsr.service import DsrService, RequestStateError


def _submit(service: DsrService, **overrides):
    fields = {"type": "erasure", "email": " Ada.Lovelace@Example.com ", "regime": "gdpr", "country": "NL",
              "received": "2026-03-27T09:00:00+01:00", "channel": "web-form"} | overrides
    return service.submit(parse_new_request(**fields)).state


def test_submit_records_the_request_with_its_legal_deadline(service: DsrService) -> None:
    state = _submit(service)
    assert state.status == Status.AWAITING_VERIFICATION
    assert state.due == "2026-04-28"  # 27 Apr 2026 is Koningsdag: rolls to Tuesday
    assert state.deadline["holiday_calendar"].startswith("holidays ")
    assert state.identity_hash.startswith("hmac-sha256:")


def test_the_subject_appears_only_as_a_keyed_hash_in_events(service: DsrService) -> None:
    state = _submit(service)
    dumped = str([e.to_dict() for e in service.events(state.request_id)])
    assert "ada.lovelace" not in dumped.lower()
    assert service.identity_hash("ada.lovelace@example.com") == state.identity_hash


@pytest.mark.parametrize("overrides, field", [
    ({"email": "not-an-address"}, "email"),
    ({"email": "ada@@example.com"}, "email"),
    ({"type": "delete-everything"}, "type"),
    ({"regime": "hipaa"}, "regime"),
    ({"received": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "received"),
    ({"received": "yesterday"}, "received"),
    ({"country": "Netherlands"}, "country"),
    ({"channel": "Carrier Pigeon!"}, "channel"),
])
def test_bad_input_is_refused_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(RequestInputError) as caught:
        parse_new_request(**({"type": "erasure", "email": "a@example.com", "regime": "gdpr",
                              "received": "2026-03-02"} | overrides))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_gdpr_country_outside_the_eu_is_refused_and_nothing_is_recorded(service: DsrService) -> None:
    with pytest.raises(RequestInputError, match="^country: "):
        _submit(service, country="US")
    assert service.list() == []


def test_bad_email_error_does_not_echo_the_address() -> None:
    with pytest.raises(RequestInputError) as caught:
        parse_new_request(type="access", email="ada lovelace@example.com", regime="ccpa", received="2026-03-02")
    assert "lovelace" not in str(caught.value)


def test_verify_then_refuse_to_verify_twice(service: DsrService) -> None:
    state = _submit(service)
    state = service.verify(state.request_id, method="email-code", note="code returned")
    assert state.status == Status.VERIFIED and state.verification["method"] == "email-code"
    with pytest.raises(RequestStateError, match="already verified"):
        service.verify(state.request_id, method="email-code", note="again")


@pytest.mark.parametrize("method, note, field", [("Email Code", "ok", "method"), ("email-code", "  ", "note")])
def test_verify_needs_a_method_and_a_note(service: DsrService, method: str, note: str, field: str) -> None:
    state = _submit(service)
    with pytest.raises(RequestInputError, match=f"^{field}: "):
        service.verify(state.request_id, method=method, note=note)


def test_extension_moves_the_deadline_and_is_allowed_once(service: DsrService) -> None:
    state = _submit(service, received="2026-01-30T10:00:00+00:00", regime="uk-gdpr", country=None)
    assert state.due == "2026-03-02"
    state = service.extend(state.request_id, reason="complex request across many systems", at=datetime(2026, 2, 10, 10, tzinfo=UTC))
    assert state.due == "2026-04-30" and state.deadline["extended"] is True
    with pytest.raises(ExtensionNotAllowed):
        service.extend(state.request_id, reason="again", at=datetime(2026, 2, 11, 10, tzinfo=UTC))


def test_extension_after_the_first_period_is_refused(service: DsrService) -> None:
    state = _submit(service, received="2026-01-05", regime="pipeda", country=None)
    with pytest.raises(ExtensionNotAllowed):
        service.extend(state.request_id, reason="late", at=datetime(2026, 3, 1, 10, tzinfo=UTC))


def test_lgpd_has_no_extension(service: DsrService) -> None:
    state = _submit(service, regime="lgpd", country=None, received="2026-11-20")
    with pytest.raises(ExtensionNotAllowed):
        service.extend(state.request_id, reason="need more time", at=datetime(2026, 11, 21, 10, tzinfo=UTC))


def test_cancel_closes_the_request_and_it_leaves_the_open_list(service: DsrService) -> None:
    keep = _submit(service)
    gone = _submit(service, email="grace@example.org")
    assert {r.request_id for r in service.list(open_only=True)} == {keep.request_id, gone.request_id}
    service.cancel(gone.request_id, reason="withdrawn by the subject")
    assert [r.request_id for r in service.list(open_only=True)] == [keep.request_id]
    assert service.state(gone.request_id).status == Status.CANCELLED
    with pytest.raises(RequestStateError, match="already cancelled"):
        service.cancel(gone.request_id)


def test_resubmitting_the_same_request_id_is_idempotent(service: DsrService) -> None:
    new = parse_new_request(type="access", email="a@example.com", regime="ccpa", received="2026-11-02")
    first = service.submit(new, request_id="9b2f5c1e-0000-4000-8000-000000000001")
    again = service.submit(new, request_id="9b2f5c1e-0000-4000-8000-000000000001")
    assert first.created and not again.created
    assert len(service.events(first.state.request_id)) == 1


@pytest.mark.parametrize("action", ["verify", "extend", "cancel"])
def test_free_text_with_an_email_address_is_refused_before_it_reaches_the_ledger(service: DsrService,
                                                                                  action: str) -> None:
    state = _submit(service)
    before = len(service.events(state.request_id))
    with pytest.raises(RequestInputError, match="e-mail address"):
        if action == "verify":
            service.verify(state.request_id, method="email-code", note="matched ada.lovelace@example.com")
        elif action == "extend":
            service.extend(state.request_id, reason="ask ada.lovelace@example.com", at=datetime(2026, 3, 28, 10, tzinfo=UTC))
        else:
            service.cancel(state.request_id, reason="ada.lovelace@example.com withdrew")
    assert len(service.events(state.request_id)) == before


def test_listeners_hear_of_a_verification_and_cannot_break_it(service: DsrService) -> None:
    heard: list[tuple[str, str]] = []

    def broken(event_type: str, request_id: str) -> None:
        raise RuntimeError("orchestrator down")

    for listener in (broken, lambda event_type, request_id: heard.append((event_type, request_id))):
        service.bus.subscribe(listener)
    state = _submit(service)
    verified = service.verify(state.request_id, method="email-code", note="code returned")
    assert verified.verified and heard == [("request.verified", state.request_id)]
