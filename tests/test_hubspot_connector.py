"""The HubSpot connector, through the real hubspot-api-client over real HTTP, against the HubSpot sandbox.

No mocking: the SDK is pointed at the sandbox (`host=`/`base_url=`), faults are injected by the
sandbox kit, and what the connector did is checked in the sandbox's own state.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any
from urllib.parse import quote

import pytest
import requests

from connectors.base import (
    ConnectorConfigError,
    ConnectorError,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    RecordRef,
    Subject,
)
from connectors.hubspot import HubSpotConnector, create
from connectors.registry import build_connector
from sandbox.hubspot import (
    ACCESS_SUBJECT,
    DECOY_EMAILS,
    DEMO_TOKEN,
    ERASURE_SUBJECT,
    PROPERTY_DEFINITIONS,
    HubSpotSandbox,
    is_valid_email,
)
from sandbox.kit import SandboxServer

SYSTEM = "hubspot"
URL_ENV, TOKEN_ENV = "DSR_HUBSPOT_URL", "DSR_HUBSPOT_TOKEN"
HOSTILE = ("o'brien@example.com", "a%@example.com", "x@example.com' OR Email != '")
ANONYMISE = {"firstname": "[erased]", "lastname": "[erased]", "email": None, "phone": None, "mobilephone": None}


def serve(vendor: HubSpotSandbox) -> SandboxServer:
    server = SandboxServer(vendor)
    # The kit sends headers and body in two writes without TCP_NODELAY, so every answer waits ~40 ms
    # for a delayed ACK (Nagle). Until the kit sets it (see the HubSpot report), the tests do.
    server._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    return server


@contextmanager
def connected(vendor: HubSpotSandbox, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Iterator[HubSpotConnector]:
    """A connector over a sandbox server of its own for `vendor` (a test that seeds or limits it its way)."""
    with serve(vendor) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
        with create(SYSTEM, settings(**overrides)) as conn:
            yield conn


def subject(email: str) -> Subject:
    return Subject(email=email.strip().lower(), identity_hash="h:" + str(abs(hash(email))))


def settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "base_url_env": URL_ENV,
        "token_env": TOKEN_ENV,
        "rate_limit": {"calls": 10_000, "period_seconds": 1},
        "search_rate_limit": {"calls": 1_000, "period_seconds": 1},
        "engagements": ["notes", "emails", "calls", "meetings"],
        "categories": {"contacts": ["identity", "contact", "marketing"], "notes": ["usage"],
                       "emails": ["marketing", "usage"], "calls": ["usage"], "meetings": ["usage"]},
        "anonymise": ANONYMISE,
        "retry_max_wait": 0.5,
        "timeout_seconds": 5,
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SandboxServer, HubSpotSandbox]]:
    # One server for the module (the kit's shutdown takes up to 0.5 s); each test gets it re-seeded.
    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1_000,
                            fractional_retry_after=True, throttle_retry_after=0.05)
    with serve(vendor) as server:
        yield server, vendor


@pytest.fixture
def hub(shared: tuple[SandboxServer, HubSpotSandbox], monkeypatch: pytest.MonkeyPatch) -> HubSpotSandbox:
    server, vendor = shared
    requests.post(f"{server.url}/__sandbox__/reset", timeout=5)
    vendor.expired_tokens.clear()
    vendor.seed_demo()
    monkeypatch.setenv(URL_ENV, server.url)
    monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
    return vendor


@pytest.fixture
def connector(hub: HubSpotSandbox) -> Iterator[HubSpotConnector]:
    with create(SYSTEM, settings()) as built:
        yield built


def faults(vendor: HubSpotSandbox, url: str, **config: Any) -> None:
    assert requests.post(f"{url}/__sandbox__/faults", json=config, timeout=5).status_code == 200


def delete_all(refs: list[RecordRef]) -> list[ErasureDecision]:
    return [ErasureDecision(ref, ErasureAction.DELETE) for ref in refs]


def all_emails(vendor: HubSpotSandbox) -> set[str]:
    return {(vendor.get("contacts", cid) or {}).get("email") or "" for cid in _contact_ids(vendor)}


def _contact_ids(vendor: HubSpotSandbox) -> list[str]:
    with vendor._lock:
        return list(vendor._state.objects["contacts"])


# --- contract basics -------------------------------------------------------------------------------------


def test_registry_builds_it_and_it_declares_itself(hub: HubSpotSandbox) -> None:
    built = build_connector(SYSTEM, "hubspot", settings(rate_limit={"calls": 100, "period_seconds": 10}))
    try:
        assert isinstance(built, HubSpotConnector)  # the kind in systems.yaml builds the HubSpot connector
        info = built.info
        assert (info.kind, info.version, info.max_batch, info.write_only) == ("hubspot", "hubspot/1", 100, False)
        assert info.rate_limit_per_second == 10.0
        assert tuple(info.objects) == ("contacts", "notes", "emails", "calls", "meetings")
    finally:
        built.close()  # type: ignore[attr-defined]


def test_discover_finds_the_subject_stored_with_capitals_and_her_engagements(
        connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    refs = connector.discover(subject(ERASURE_SUBJECT))
    (ada,) = hub.contacts_with_email(ERASURE_SUBJECT)
    assert refs[0] == RecordRef(SYSTEM, "contacts", ada,
                                (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.MARKETING))
    by_object: dict[str, list[str]] = {}
    for ref in refs[1:]:
        by_object.setdefault(ref.object, []).append(ref.id)
    for kind in ("notes", "emails", "calls", "meetings"):
        assert by_object[kind] == hub.linked("contacts", ada, kind)
    assert next(r for r in refs if r.object == "emails").categories == (DataCategory.MARKETING, DataCategory.USAGE)


def test_discovery_reads_every_engagement_type_of_a_contact_in_one_call(
        connector: HubSpotConnector, hub: HubSpotSandbox, shared: tuple[SandboxServer, HubSpotSandbox]) -> None:
    """One search and one read of the contact with its associations, not a listing per engagement type;
    a contact deleted between the search and that read has no engagements (and is still reported)."""
    server, _ = shared
    before = requests.get(f"{server.url}/__sandbox__/stats", timeout=5).json().get("calls", 0)
    refs = connector.discover(subject(ACCESS_SUBJECT))
    (grace,) = hub.contacts_with_email(ACCESS_SUBJECT)
    assert requests.get(f"{server.url}/__sandbox__/stats", timeout=5).json()["calls"] - before == 2
    for kind in ("notes", "emails", "calls", "meetings"):
        assert [r.id for r in refs if r.object == kind] == hub.linked("contacts", grace, kind) != []
    assert connector._engagements_of("999999", ("notes", "emails")) == {"notes": [], "emails": []}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_addresses_match_only_themselves_and_erasing_them_spares_the_decoys(
        connector: HubSpotConnector, hub: HubSpotSandbox, hostile: str) -> None:
    existing = hostile if is_valid_email(hostile) else None  # HubSpot refuses to store the third one
    own = hub.add_contact({"email": existing}) if existing else None
    before = all_emails(hub)

    refs = connector.discover(subject(hostile))
    assert [r.id for r in refs if r.object == "contacts"] == ([own] if own else [])

    receipt = connector.erase(delete_all(refs))
    assert not receipt.failed
    after = all_emails(hub)
    assert before - after == ({existing} if existing else set())
    for decoy in (*DECOY_EMAILS, "Ada.Lovelace@Example.com", "Grace.Hopper@Example.org"):
        assert decoy in after


def test_export_streams_every_property_of_every_record(connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    refs = connector.discover(subject(ACCESS_SUBJECT))
    records = connector.export(refs)
    assert isinstance(records, Iterator)
    exported = list(records)
    assert [r.ref for r in exported] == refs
    contact = exported[0]
    assert set(contact.fields) == {p["name"] for p in PROPERTY_DEFINITIONS["contacts"]}
    assert contact.fields["email"] == "Grace.Hopper@Example.org" and contact.fields["firstname"] == "Grace"
    for record in exported[1:]:
        assert set(record.fields) == {p["name"] for p in PROPERTY_DEFINITIONS[record.ref.object]}
    call = next(r for r in exported if r.ref.object == "calls")
    assert call.fields["hs_call_title"] == "Call with Grace"


# --- erasure -----------------------------------------------------------------------------------------------


def test_gdpr_delete_erases_contact_and_engagements_and_a_rerun_is_idempotent(
        connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    ada = subject(ERASURE_SUBJECT)
    refs = connector.discover(ada)
    assert len(refs) == 7

    receipt = connector.erase(delete_all(refs))
    assert [o.done and not o.already_gone for o in receipt.outcomes] == [True] * 7
    assert receipt.vendor_receipt_id and receipt.vendor_receipt_id.startswith("hubspot:")
    assert "email" in receipt.outcomes[0].fields_cleared
    for ref in refs:
        assert hub.get(ref.object, ref.id) is None
    assert hub.is_blocklisted(ERASURE_SUBJECT)
    assert connector.verify_erased(ada) == []
    assert connector.discover(subject(ACCESS_SUBJECT))  # Grace untouched

    again = connector.erase(delete_all(refs))
    assert [(o.done, o.already_gone) for o in again.outcomes] == [(True, True)] * 7
    assert again.vendor_receipt_id == receipt.vendor_receipt_id
    for decoy in DECOY_EMAILS:
        assert hub.contacts_with_email(decoy)


def test_anonymise_clears_the_email_instead_of_writing_an_invalid_one(
        connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    grace = subject(ACCESS_SUBJECT)
    (contact,) = [r for r in connector.discover(grace) if r.object == "contacts"]
    receipt = connector.erase([ErasureDecision(contact, ErasureAction.ANONYMISE, basis="test")])
    (outcome,) = receipt.outcomes
    assert outcome.done and outcome.action is ErasureAction.ANONYMISE
    assert {"email", "firstname", "lastname", "phone"} <= set(outcome.fields_cleared)
    stored = hub.get("contacts", contact.id)
    assert stored is not None and "email" not in stored and stored["firstname"] == "[erased]"
    assert connector.verify_erased(grace) == []
    (again,) = connector.erase([ErasureDecision(contact, ErasureAction.ANONYMISE, basis="test")]).outcomes
    assert again.done and again.already_gone


def test_a_retained_engagement_turns_the_contacts_delete_into_anonymisation(
        connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    refs = connector.discover(subject(ACCESS_SUBJECT))
    kept = next(r for r in refs if r.object == "meetings")
    decisions = [ErasureDecision(r, ErasureAction.RETAIN, basis="legal claim", retain_until=date(2030, 1, 1))
                 if r == kept else ErasureDecision(r, ErasureAction.DELETE) for r in refs]
    outcomes = {o.ref: o for o in connector.erase(decisions).outcomes}
    assert outcomes[refs[0]].action is ErasureAction.ANONYMISE and outcomes[refs[0]].done
    assert outcomes[kept].done and outcomes[kept].basis == "legal claim"
    assert hub.get("meetings", kept.id) is not None
    assert hub.get("contacts", refs[0].id) is not None
    for ref in refs[1:]:
        if ref != kept:
            assert hub.get(ref.object, ref.id) is None


def test_refs_of_other_systems_or_objects_are_refused_not_guessed(connector: HubSpotConnector) -> None:
    foreign = RecordRef("crm", "contacts", "1", (DataCategory.IDENTITY,))
    odd = RecordRef(SYSTEM, "deals", "1", (DataCategory.IDENTITY,))
    receipt = connector.erase([ErasureDecision(foreign, ErasureAction.DELETE), ErasureDecision(odd, ErasureAction.DELETE)])
    assert [o.done for o in receipt.outcomes] == [False, False]
    with pytest.raises(ConnectorError, match="deals"):
        list(connector.export([odd]))


# --- paging ------------------------------------------------------------------------------------------------


def test_discovery_pages_past_2000_engagements(connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    (grace,) = hub.contacts_with_email(ACCESS_SUBJECT)
    hub.add_engagements("notes", 2_300, contact_ids=[grace])
    refs = connector.discover(subject(ACCESS_SUBJECT))
    notes = [r.id for r in refs if r.object == "notes"]
    assert len(notes) == len(set(notes)) == 2_301
    assert notes == hub.linked("contacts", grace, "notes")
    exported = list(connector.export([r for r in refs if r.object == "notes"][:250]))
    assert len(exported) == 250


def test_expired_pages_past_the_search_cap_and_purge_archives_in_hundreds(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1_000, search_cap=1_000)
    stale = set(vendor.add_contacts(2_300, domain="stale.example", last_modified="2019-05-01T00:00:00.000Z"))
    fresh = vendor.add_contacts(20, domain="fresh.example", last_modified="2025-05-01T00:00:00.000Z")
    note = vendor.add_engagement("notes", {"hs_note_body": "old"}, [fresh[0]], created="2018-01-01T00:00:00.000Z")
    with connected(vendor, monkeypatch, search_result_cap=1_000) as conn:
        found = list(conn.expired(DataCategory.IDENTITY, date(2020, 1, 1)))
        assert {r.id for r in found} == stale and len(found) == 2_300
        assert {r.anchor_date for r in found} == {date(2019, 5, 1)}
        assert [r.id for r in conn.expired("usage", date(2020, 1, 1))] == [note]
        before = conn.stats["calls"]
        receipt = conn.purge(found)
        assert conn.stats["calls"] - before == 23 == receipt.api_calls
        assert all(o.done for o in receipt.outcomes) and len(receipt.outcomes) == 2_300
    assert vendor.object_count("contacts") == 20


def test_purging_while_listing_skips_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retention purge archives each batch as it lists: an offset cursor would skip as many
    records as were just archived and leave about half behind."""
    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1_000)
    vendor.add_contacts(450, domain="stale.example", last_modified="2019-05-01T00:00:00.000Z")
    with connected(vendor, monkeypatch) as conn:
        batch: list[RecordRef] = []
        for ref in conn.expired(DataCategory.IDENTITY, date(2020, 1, 1)):
            batch.append(ref)
            if len(batch) == 100:
                conn.purge(batch)
                batch = []
        if batch:
            conn.purge(batch)
        assert list(conn.expired(DataCategory.IDENTITY, date(2020, 1, 1))) == []


def _cutoffs(cutoff: date) -> Any:
    """The retention purge's `cutoff_of`: every object at `cutoff`, except those holding only usage data."""
    return lambda categories: None if set(categories) <= {DataCategory.USAGE} else cutoff


def test_the_purge_guard_counts_expired_records_with_one_search_per_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not listed: the guard's count is HubSpot's `total` (past the 10,000 a query can page
    through too), equal to what the listing at the same cutoffs finds."""
    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1_000, search_cap=1_000)
    vendor.add_contacts(1_250, domain="stale.example", last_modified="2019-05-01T00:00:00.000Z")
    vendor.add_contacts(30, domain="fresh.example", last_modified="2025-05-01T00:00:00.000Z")
    with connected(vendor, monkeypatch, search_result_cap=1_000) as conn:
        before = conn.stats.get("calls", 0)
        counts = conn.count_expired_all(_cutoffs(date(2020, 1, 1)))
        calls = conn.stats["calls"] - before
        listed = list(conn.expired_all(_cutoffs(date(2020, 1, 1))))
    contacts = (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.MARKETING)
    emails = (DataCategory.MARKETING, DataCategory.USAGE)
    assert counts == {contacts: 1_250, emails: 0} == {
        contacts: sum(r.object == "contacts" for r in listed), emails: sum(r.object == "emails" for r in listed)}
    assert calls == 2  # contacts and e-mails; the usage-only engagements are left out


def test_expired_among_names_only_the_expired_of_the_records_given(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1_000)
    stale = vendor.add_contacts(3, domain="stale.example", last_modified="2019-05-01T00:00:00.000Z")
    fresh = vendor.add_contacts(2, domain="fresh.example", last_modified="2025-05-01T00:00:00.000Z")
    with connected(vendor, monkeypatch) as conn:
        held = [conn._ref("contacts", i) for i in (fresh[0], stale[2], stale[0], fresh[1], "999999")]
        found = conn.expired_among(held, _cutoffs(date(2020, 1, 1)))
    assert [r.id for r in found] == [stale[2], stale[0]]


def test_batches_purged_from_two_threads_at_once_each_count_their_own_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1_000)
    vendor.add_contacts(700, domain="stale.example", last_modified="2019-05-01T00:00:00.000Z")
    with connected(vendor, monkeypatch) as conn:
        assert conn.purge_workers == 2
        found = list(conn.expired(DataCategory.IDENTITY, date(2020, 1, 1)))
        batches = [found[:400], found[400:500], found[500:]]  # 4, 1 and 2 archive calls
        with ThreadPoolExecutor(2) as pool:
            receipts = list(pool.map(conn.purge, batches))
    assert [r.api_calls for r in receipts] == [4, 1, 2]
    assert vendor.object_count("contacts") == 0


# --- opt-out ----------------------------------------------------------------------------------------------


def test_opt_out_unsubscribes_from_all_email_and_keeps_the_contact(
        connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    ada = subject(ERASURE_SUBJECT)
    receipt = connector.opt_out(ada)
    assert {o.ref.id for o in receipt.outcomes} == {"1190", "1191", "1192"}
    assert all(o.done and not o.already_gone for o in receipt.outcomes)
    assert hub.subscription_states(ERASURE_SUBJECT) == {"1190": "UNSUBSCRIBED", "1191": "UNSUBSCRIBED",
                                                        "1192": "UNSUBSCRIBED"}
    assert [r.object for r in connector.discover(ada)].count("contacts") == 1  # kept
    again = connector.opt_out(ada)
    assert all(o.done and o.already_gone for o in again.outcomes)
    assert hub.subscription_states(DECOY_EMAILS[1]) == {"1190": "SUBSCRIBED"}


# --- throttling, faults, pacing ---------------------------------------------------------------------------


def test_429_storm_is_retried_honouring_retry_after(
        connector: HubSpotConnector, hub: HubSpotSandbox, shared: tuple[SandboxServer, HubSpotSandbox]) -> None:
    server, _ = shared
    faults(hub, server.url, throttle_rate=1.0, burst=4, path_pattern="/search$")
    started = time.monotonic()
    refs = connector.discover(subject(ACCESS_SUBJECT))
    assert refs
    assert time.monotonic() - started >= 4 * 0.05  # waited what Retry-After said, each time
    stats = connector.stats
    assert stats["throttled"] == 4 and stats["retries"] == 4
    sandbox_stats = requests.get(f"{server.url}/__sandbox__/stats", timeout=5).json()
    assert sandbox_stats["fault_throttle"] == 4


def test_server_errors_resets_and_timeouts_are_retried(
        hub: HubSpotSandbox, shared: tuple[SandboxServer, HubSpotSandbox]) -> None:
    server, _ = shared
    with create(SYSTEM, settings(retry_max_wait=0.05, timeout_seconds=0.3)) as conn:
        expected = conn.discover(subject(ACCESS_SUBJECT))
        faults(hub, server.url, error_rate=1.0, burst=2, path_pattern=r"/objects/contacts/\d+$")
        assert conn.discover(subject(ACCESS_SUBJECT)) == expected
        faults(hub, server.url, reset_rate=1.0, burst=2, path_pattern="/search$")
        assert conn.discover(subject(ACCESS_SUBJECT)) == expected
        faults(hub, server.url, timeout_rate=1.0, timeout_seconds=0.6, burst=1, path_pattern="/batch/read$")
        assert len(list(conn.export(expected))) == len(expected)
        stats = conn.stats
    assert stats["server_errors"] == 2 and stats["network_errors"] == 3


def test_a_server_that_stays_down_fails_the_step_after_the_retry_budget(
        hub: HubSpotSandbox, shared: tuple[SandboxServer, HubSpotSandbox]) -> None:
    server, _ = shared
    faults(hub, server.url, error_rate=1.0)
    with create(SYSTEM, settings(retry_max_wait=0.01, retry_attempts=3)) as conn:
        with pytest.raises(ConnectorError, match="server error 502 after 3 attempts"):
            conn.discover(subject(ACCESS_SUBJECT))
        assert conn.stats["calls"] == 3


def test_expired_token_is_a_clear_error_and_not_retried(connector: HubSpotConnector, hub: HubSpotSandbox) -> None:
    hub.expire_token(DEMO_TOKEN)
    with pytest.raises(ConnectorError) as caught:
        connector.discover(subject(ACCESS_SUBJECT))
    message = str(caught.value)
    assert "401 EXPIRED_AUTHENTICATION" in message and TOKEN_ENV in message and "cannot be refreshed" in message
    assert DEMO_TOKEN not in message
    assert connector.stats.get("retries", 0) == 0


def test_daily_cap_is_reported_and_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = HubSpotSandbox(seed_demo_data=True, daily_limit=1, search_per_second=1_000)
    with serve(vendor) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
        with create(SYSTEM, settings()) as conn, pytest.raises(ConnectorError, match="daily API limit"):
            conn.discover(subject(ACCESS_SUBJECT))
        assert conn.stats.get("retries", 0) == 0


def test_the_limiter_keeps_a_burst_of_150_calls_under_the_window_without_a_429(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # HubSpot's 100 per 10 s, scaled down to 30 per 0.25 s to keep the test fast.
    vendor = HubSpotSandbox(seed_demo_data=True, window_limit=30, window_seconds=0.25, search_per_second=1_000)
    with serve(vendor) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
        # slow_down_below=0: the limiter alone must keep it under the window.
        with create(SYSTEM, settings(rate_limit={"calls": 30, "period_seconds": 0.25}, slow_down_below=0)) as conn:
            started = time.monotonic()
            for _ in range(152):  # each discovery: one search (its own limit) + one read of the contact
                conn.discover(subject(ACCESS_SUBJECT))
            elapsed = time.monotonic() - started
            stats = conn.stats
        sandbox_stats = requests.get(f"{server.url}/__sandbox__/stats", timeout=5).json()
    assert sandbox_stats.get("throttled", 0) == 0 and stats.get("throttled", 0) == 0
    assert stats["calls"] == 152 * 2
    assert elapsed >= (152 / 30 - 1) * 0.25  # it was paced, not lucky


def test_low_remaining_header_slows_calls_down(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another client shares the token: the connector's own limiter thinks all is well, HubSpot says not.
    vendor = HubSpotSandbox(seed_demo_data=True, window_limit=12, window_seconds=0.5, search_per_second=1_000)
    with connected(vendor, monkeypatch, slow_down_below=10) as conn:
        for _ in range(5):  # one call each under the window (the search has its own)
            conn.discover(subject(ACCESS_SUBJECT))
        stats = conn.stats
    assert stats["slowdowns"] >= 1 and stats["waited_seconds"] > 0


# --- no personal data in errors; config ---------------------------------------------------------------------


def _assert_no_email(error: BaseException, email: str) -> None:
    rendered = "".join(traceback.format_exception(error))
    for form in (email, email.lower(), quote(email, safe=""), quote(email)):
        assert form not in rendered and form not in repr(error.args)
    assert error.__cause__ is None and error.__context__ is None


@pytest.mark.parametrize("email", [HOSTILE[2], ERASURE_SUBJECT])
def test_no_email_in_any_connector_error(
        hub: HubSpotSandbox, shared: tuple[SandboxServer, HubSpotSandbox], email: str) -> None:
    server, _ = shared
    with create(SYSTEM, settings(retry_max_wait=0.01, retry_attempts=2)) as conn:
        if " " in email:  # HubSpot answers 400 with the address in its body
            with pytest.raises(ConnectorError) as invalid:
                conn.opt_out(subject(email))
            _assert_no_email(invalid.value, email)
        faults(hub, server.url, reset_rate=1.0, path_pattern="^/communication-preferences/")  # URL holds it
        with pytest.raises(ConnectorError) as reset:
            conn.opt_out(subject(email))
        _assert_no_email(reset.value, email)
        faults(hub, server.url, error_rate=1.0, path_pattern="/search$")
        with pytest.raises(ConnectorError) as down:
            conn.discover(subject(email))
        _assert_no_email(down.value, email)
        faults(hub, server.url)
        hub.expire_token(DEMO_TOKEN)
        with pytest.raises(ConnectorError) as expired:
            conn.discover(subject(email))
        _assert_no_email(expired.value, email)


def test_empty_identity_is_refused(connector: HubSpotConnector) -> None:
    with pytest.raises(ConnectorError, match="empty identity"):
        connector.discover(Subject(email="  ", identity_hash="h"))


@pytest.mark.parametrize("change, path", [
    ({"token": "pat-na1-very-secret"}, "systems.hubspot.settings.token"),
    ({"anonymise": {**ANONYMISE, "email": "[erased]"}}, "systems.hubspot.settings.anonymise.email"),
    ({"anonymise": {"firstname": "[erased]"}}, "systems.hubspot.settings.anonymise"),
    ({"rate_limit": {"calls": 0, "period_seconds": 10}}, "systems.hubspot.settings.rate_limit.calls"),
    ({"categories": {"deals": ["usage"]}}, "systems.hubspot.settings.categories.deals"),
    ({"engagements": ["notes", "faxes"]}, "systems.hubspot.settings.engagements.1"),
    ({"base_url": "http://x.example"}, "systems.hubspot.settings.base_url_env"),
    ({"retention_property": {"contacts": "last modified"}}, "systems.hubspot.settings.retention_property.contacts"),
    ({"unknown_field": 1}, "systems.hubspot.settings.unknown_field"),
])
def test_config_errors_name_the_field_and_never_echo_values(
        hub: HubSpotSandbox, change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        create(SYSTEM, settings(**change))
    message = str(caught.value)
    assert path in message
    assert "very-secret" not in message and "[erased]" not in message and "last modified" not in message


def test_missing_environment_variables_are_named_never_their_values(
        hub: HubSpotSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConnectorConfigError, match=f"settings.token_env: environment variable {TOKEN_ENV}"):
        create(SYSTEM, settings())
    monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
    monkeypatch.setenv(URL_ENV, "not a url")
    with pytest.raises(ConnectorConfigError) as caught:
        create(SYSTEM, settings())
    assert "settings.base_url_env" in str(caught.value) and DEMO_TOKEN not in str(caught.value)


def test_a_second_export_in_the_process_does_not_read_the_property_lists_again(hub: HubSpotSandbox) -> None:
    """Property lists are kept per process (connectors.hubspot.PROPERTIES_TTL_SECONDS): one call per
    object type the first time, none for the next request of the same account."""
    from connectors.pacing import forget_limiters

    forget_limiters()  # earlier tests of this module used the same account
    with create(SYSTEM, settings()) as first:
        refs = first.discover(subject(ACCESS_SUBJECT))
        before = first.stats["calls"]
        exported = list(first.export(refs))
        first_export = first.stats["calls"] - before
    with create(SYSTEM, settings()) as second:
        before = second.stats.get("calls", 0)
        assert list(second.export(refs)) == exported
        second_export = second.stats["calls"] - before
    object_types = len({ref.object for ref in refs})
    assert object_types > 1
    assert second_export == first_export - object_types


def test_searches_that_reach_hubspot_late_still_get_no_429(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the searches reach HubSpot 0.3 s after they left (a loaded machine, a slow network): a
    slot counted from when a search leaves would let them bunch with the next ones into a 429. Each
    search holds its slot until answered, so HubSpot's 4 per second is never exceeded."""
    import threading

    from sandbox.kit import FaultConfig

    vendor = HubSpotSandbox(seed_demo_data=True, window_limit=10_000, window_seconds=1.0, search_per_second=4,
                            throttle_retry_after=0.05)
    vendor.faults.configure(FaultConfig(timeout_rate=0.5, timeout_seconds=0.3, path_pattern="search", seed=3))
    with serve(vendor) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
        found: list[set[str]] = []
        with create(SYSTEM, settings(search_rate_limit={"calls": 4, "period_seconds": 1})) as connector:

            def look() -> None:
                found.append({ref.id for ref in connector.discover(subject(ACCESS_SUBJECT))})

            threads = [threading.Thread(target=look) for _ in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            retried = connector.stats.get("throttled", 0)
    assert len(found) == 12 and len({frozenset(ids) for ids in found}) == 1 and found[0]
    assert vendor.stats["fault_timeout"] >= 3  # searches did arrive late
    assert vendor.stats["throttled"] == 0 and retried == 0
