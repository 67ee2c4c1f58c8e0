"""Wistia: the sandbox's wire contract (plain `requests`), and the connector over real HTTP against it.

No mocking: the connector talks to the sandbox on loopback, faults are injected by the sandbox kit,
and the manual erasure (Wistia has no delete endpoint) is simulated through the sandbox's control API,
the way Wistia's support would carry out the deletion request.
"""

from __future__ import annotations

import base64
import re
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
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
from connectors.wistia import NO_DELETE_API, WistiaConnector, create
from sandbox.kit import Request, Response, SandboxServer
from sandbox.wistia import (
    ACCESS_SUBJECT,
    DECOY_EMAILS,
    DEMO_TOKEN,
    ERASURE_SUBJECT,
    EVENT_FIELDS,
    LIMITED_TOKEN,
    VISITOR_FIELDS,
    WistiaSandbox,
)

SYSTEM = "wistia"
URL_ENV, TOKEN_ENV = "DSR_WISTIA_URL", "DSR_WISTIA_TOKEN"
AUTH = {"Authorization": f"Bearer {DEMO_TOKEN}", "X-Wistia-Api-Version": "2026-01"}
STORED_FORMS = ("Ada.Lovelace@Example.com", "ADA.LOVELACE@EXAMPLE.COM", "Grace.Hopper@Example.org")


def subject(email: str) -> Subject:
    return Subject(email=email.strip().lower(), identity_hash="h:" + str(abs(hash(email))))


def settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "base_url_env": URL_ENV,
        "token_env": TOKEN_ENV,
        "account": "precision",
        "rate_limit": {"calls": 10_000, "period_seconds": 1},
        "page_size": 100,
        "categories": {"visitor": ["identity", "contact", "technical"], "event": ["usage", "technical", "contact"]},
        "retry_max_wait": 0.5,
        "timeout_seconds": 5,
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SandboxServer, WistiaSandbox]]:
    # One server for the module; each test gets it reset and re-seeded.
    vendor = WistiaSandbox(rate_limit=10_000, rate_window=1.0, fractional_retry_after=True, throttle_retry_after=0.05)
    with SandboxServer(vendor) as server:
        yield server, vendor


@pytest.fixture
def wistia(shared: tuple[SandboxServer, WistiaSandbox], monkeypatch: pytest.MonkeyPatch) -> WistiaSandbox:
    server, vendor = shared
    assert requests.post(f"{server.url}/__sandbox__/reset", timeout=5).status_code == 200
    vendor.seed_demo()
    monkeypatch.setenv(URL_ENV, server.url)
    monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
    return vendor


@pytest.fixture
def url(shared: tuple[SandboxServer, WistiaSandbox], wistia: WistiaSandbox) -> str:
    return shared[0].url


@pytest.fixture
def connector(wistia: WistiaSandbox) -> Iterator[WistiaConnector]:
    with create(SYSTEM, settings()) as built:
        yield built


def get(url: str, path: str, headers: dict[str, str] | None = None, /, **params: Any) -> requests.Response:
    return requests.get(f"{url}{path}", params=params, headers=AUTH if headers is None else headers, timeout=5)


def control(url: str, action: str, body: dict[str, Any] | None = None) -> Any:
    answer = requests.post(f"{url}/__sandbox__/{action}", json=body or {}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def sandbox_stats(url: str) -> dict[str, int]:
    return requests.get(f"{url}/__sandbox__/stats", timeout=5).json()  # type: ignore[no-any-return]


def iso_day(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --- the sandbox's wire contract ---------------------------------------------------------------------------


def test_visitor_search_is_a_bare_array_of_documented_shapes_and_is_fuzzy(url: str) -> None:
    answer = get(url, "/modern/stats/visitors", search=ERASURE_SUBJECT, filter="has_email", per_page=100, page=1)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert isinstance(body, list)
    for visitor in body:
        assert tuple(visitor) == VISITOR_FIELDS
        assert set(visitor["visitor_identity"]) == {"name", "email", "org"}
        assert set(visitor["visitor_identity"]["org"]) == {"name", "title"}
        assert set(visitor["user_agent_details"]) == {"browser", "browser_version", "platform", "mobile"}
        assert visitor["created_at"].endswith("Z") and visitor["play_count"] <= visitor["load_count"]
    emails = {v["visitor_identity"]["email"] for v in body}
    # Fuzzy: the subject (stored twice, with capitals) and the look-alikes that contain her address.
    assert {"Ada.Lovelace@Example.com", "ADA.LOVELACE@EXAMPLE.COM "} <= emails
    assert {"xada.lovelace@example.com", "ada.lovelace@example.com.attacker.test"} <= emails
    wildcard = get(url, "/modern/stats/visitors", search="%@example.com").json()
    assert len({v["visitor_identity"]["email"] for v in wildcard}) > 3  # LIKE wildcards: everyone at example.com
    by_name = get(url, "/modern/stats/visitors", search="ada lovelace").json()
    assert "ada@lovelace-family.example" in {v["visitor_identity"]["email"] for v in by_name}


def test_paging_with_page_and_per_page_capped_at_100(url: str, wistia: WistiaSandbox) -> None:
    everyone = get(url, "/modern/stats/visitors", per_page=500).json()
    assert len(everyone) == 49 == wistia.summary()["visitors"]  # 49 < 100: all on one capped page
    for index in range(60):
        wistia.add_visitor(f"bulk{index}@bulk.example", name="Bulk Visitor")
    assert len(get(url, "/modern/stats/visitors", per_page=500).json()) == 100
    assert len(get(url, "/modern/stats/visitors").json()) == 100  # the default page size
    pages = [get(url, "/modern/stats/visitors", per_page=25, page=n).json() for n in range(1, 7)]
    assert [len(p) for p in pages] == [25, 25, 25, 25, 9, 0]
    keys = [v["visitor_key"] for page in pages for v in page]
    assert len(keys) == len(set(keys)) == 109
    with_email = [v for n in (1, 2) for v in get(url, "/modern/stats/visitors", filter="has_email",
                                                  per_page=60, page=n).json()]
    assert all(v["visitor_identity"]["email"] for v in with_email) and 60 < len(with_email) < 109
    for bad in ({"per_page": 0}, {"page": "two"}, {"page": -1}, {"filter": "everyone"}):
        answer = get(url, "/modern/stats/visitors", **bad)
        assert answer.status_code == 422 and set(answer.json()) == {"error"}


def test_one_visitor_one_event_and_404s(url: str, wistia: WistiaSandbox) -> None:
    (grace,) = wistia.visitor_keys_with_email(ACCESS_SUBJECT)
    visitor = get(url, f"/modern/stats/visitors/{grace}").json()
    assert visitor["visitor_key"] == grace and visitor["play_count"] == 12
    assert visitor["last_event_key"] == wistia.event_keys_of(grace)[0]
    event_key = wistia.event_keys_of(grace)[3]
    event = get(url, f"/modern/stats/events/{event_key}").json()
    assert tuple(event) == EVENT_FIELDS and event["visitor_key"] == grace
    for path in ("/modern/stats/visitors/v20200101_nope", "/modern/stats/events/v20200101_nope", "/modern/nothing"):
        missing = get(url, path)
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
    legacy = get(url, f"/v1/stats/visitors/{grace}.json")
    assert legacy.status_code == 200 and legacy.json()["visitor_key"] == grace


def test_events_filter_by_visitor_and_inclusive_dates(url: str, wistia: WistiaSandbox) -> None:
    (grace,) = wistia.visitor_keys_with_email(ACCESS_SUBJECT)
    events = get(url, "/modern/stats/events", visitor_key=grace, per_page=100).json()
    assert [e["event_key"] for e in events] == wistia.event_keys_of(grace)  # newest first
    assert all(tuple(e) == EVENT_FIELDS and e["visitor_key"] == grace for e in events)
    assert [e["received_at"] for e in events] == sorted((e["received_at"] for e in events), reverse=True)
    day = events[5]["received_at"][:10]
    same_day = get(url, "/modern/stats/events", visitor_key=grace, start_date=day, end_date=day).json()
    assert events[5]["event_key"] in {e["event_key"] for e in same_day}
    assert all(e["received_at"].startswith(day) for e in same_day)
    converted = [e for e in events if e["conversion_type"]]
    assert converted and set(converted[0]["conversion_data"]) == {"email", "first_name", "last_name", "is_new_lead"}
    for bad in ({"start_date": "2025/01/01"}, {"end_date": "yesterday"},
                {"start_date": "2026-02-01", "end_date": "2026-01-01"}):
        answer = get(url, "/modern/stats/events", **bad)
        assert answer.status_code == 422 and set(answer.json()) == {"error"}
    old = wistia.add_events(grace, 1, received_at=iso_day(800))[0]  # past Wistia's 2-year retention
    assert get(url, f"/modern/stats/events/{old}").status_code == 404
    assert old not in {e["event_key"] for e in get(url, "/modern/stats/events", visitor_key=grace).json()}


def test_authentication_answers(url: str, wistia: WistiaSandbox) -> None:
    invalid = {"code": "unauthorized_credentials", "error": "Invalid credentials."}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Token {DEMO_TOKEN}"}):
        answer = get(url, "/modern/stats/visitors", headers)
        assert answer.status_code == 401 and answer.json() == invalid
    basic = base64.b64encode(f"api:{DEMO_TOKEN}".encode()).decode()
    assert get(url, "/modern/stats/visitors", {"Authorization": f"Basic {basic}"}).status_code == 200
    scope = get(url, "/modern/stats/visitors", {"Authorization": f"Bearer {LIMITED_TOKEN}"})
    assert scope.status_code == 401 and scope.json()["code"] == "unauthorized_scope"
    assert get(url, "/modern/stats/visitors").status_code == 200
    assert sandbox_stats(url)["api_version:2026-01"] == 1 and sandbox_stats(url)["api_version:newest"] == 1
    control(url, "account", {"active": False})
    inactive = get(url, "/modern/stats/visitors")
    assert inactive.status_code == 401 and inactive.json()["code"] == "account_inactive"


def test_there_is_no_delete_endpoint_only_the_control_action(url: str, wistia: WistiaSandbox) -> None:
    (grace,) = wistia.visitor_keys_with_email(ACCESS_SUBJECT)
    events = wistia.event_keys_of(grace)
    for method in ("DELETE", "POST", "PUT", "PATCH"):
        answer = requests.request(method, f"{url}/modern/stats/visitors/{grace}", headers=AUTH, timeout=5)
        assert answer.status_code == 405 and set(answer.json()) == {"error"}
    assert wistia.has_visitor(grace)
    assert control(url, "delete-visitor", {"visitor_key": grace}) == {"deleted": True, "events_deleted": 12}
    assert get(url, f"/modern/stats/visitors/{grace}").status_code == 404
    assert not any(wistia.has_event(e) for e in events)
    assert control(url, "delete-visitor", {"visitor_key": grace}) == {"deleted": False, "events_deleted": 0}


def test_429_is_text_plain_with_retry_after_and_reset_frees_the_window() -> None:
    vendor = WistiaSandbox(rate_limit=3, rate_window=60.0, seed_demo_data=True)
    with SandboxServer(vendor) as server:
        codes = [get(server.url, "/modern/stats/visitors", per_page=1).status_code for _ in range(3)]
        throttled = get(server.url, "/modern/stats/visitors", per_page=1)
        assert codes == [200, 200, 200] and throttled.status_code == 429
        assert throttled.headers["Content-Type"].startswith("text/plain")
        assert throttled.text == "Rate limit exceeded"
        assert throttled.headers["Retry-After"].isdigit() and 1 <= int(throttled.headers["Retry-After"]) <= 60
        control(server.url, "reset")
        assert get(server.url, "/modern/stats/visitors", per_page=1).status_code == 200


def test_seed_is_deterministic_and_holds_subjects_and_decoys() -> None:
    today = date(2026, 11, 1)
    one, two = WistiaSandbox(today=today), WistiaSandbox(today=today)
    assert one.seed_demo(7) == two.seed_demo(7) == {"visitors": 49, "events": one.summary()["events"]}
    assert one.visitor_keys_with_email(ERASURE_SUBJECT) == two.visitor_keys_with_email(ERASURE_SUBJECT)
    assert len(one.visitor_keys_with_email(ERASURE_SUBJECT)) == 2
    assert len(one.visitor_keys_with_email(ACCESS_SUBJECT)) == 1
    for decoy in DECOY_EMAILS:
        assert len(one.visitor_keys_with_email(decoy)) == 1


# --- the connector: contract basics --------------------------------------------------------------------------


def test_it_declares_itself_with_a_manual_erase_step(connector: WistiaConnector) -> None:
    info = connector.info
    assert (info.system, info.kind, info.version, info.write_only) == (SYSTEM, "wistia", "wistia/1", False)
    assert info.manual_steps == frozenset({"erase", "rectify", "suppress", "restore"})
    assert tuple(info.objects) == ("visitor", "event") and info.rate_limit_per_second == 10_000


def test_discover_matches_the_address_exactly_and_never_a_look_alike(
        connector: WistiaConnector, wistia: WistiaSandbox, url: str) -> None:
    refs = connector.discover(subject("  Ada.Lovelace@EXAMPLE.com "))
    visitors = wistia.visitor_keys_with_email(ERASURE_SUBJECT)
    assert [r.id for r in refs if r.object == "visitor"] == visitors
    assert [r.id for r in refs if r.object == "event"] == [e for v in visitors for e in wistia.event_keys_of(v)]
    assert refs[0] == RecordRef(SYSTEM, "visitor", visitors[0],
                                (DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.TECHNICAL))
    assert refs[-1].categories == (DataCategory.USAGE, DataCategory.TECHNICAL, DataCategory.CONTACT)
    decoy_keys = {k for d in (*DECOY_EMAILS, "ada@lovelace-family.example") for k in wistia.visitor_keys_with_email(d)}
    assert not decoy_keys & {r.id for r in refs}
    stats = sandbox_stats(url)
    assert stats["list_visitors"] == 1  # one search; it answered the look-alikes too, all dropped
    assert stats["api_version:2026-01"] == stats["calls"] == connector.stats["calls"]  # every call pinned


@pytest.mark.parametrize("decoy", DECOY_EMAILS)
def test_each_look_alike_matches_only_itself(connector: WistiaConnector, wistia: WistiaSandbox, decoy: str) -> None:
    refs = connector.discover(subject(decoy))
    assert [r.id for r in refs if r.object == "visitor"] == wistia.visitor_keys_with_email(decoy)
    (own,) = wistia.visitor_keys_with_email(decoy)
    assert {r.id for r in refs if r.object == "event"} == set(wistia.event_keys_of(own))


def test_an_address_nobody_has_finds_nothing(connector: WistiaConnector) -> None:
    assert connector.discover(subject("a%@example.com")) == []
    assert connector.discover(subject("lovelace")) == []


def test_discovery_pages_past_several_pages_of_visitors_and_events(
        wistia: WistiaSandbox, url: str) -> None:
    (grace,) = wistia.visitor_keys_with_email(ACCESS_SUBJECT)
    wistia.add_events(grace, 250)
    for n in range(25):  # fuzzy hits that push Grace's own visitor across search pages
        wistia.add_visitor(f"grace.hopper@example.org.mirror{n}.test", name="Grace Hopper")
    with create(SYSTEM, settings(page_size=10)) as conn:
        refs = conn.discover(subject(ACCESS_SUBJECT))
    events = [r.id for r in refs if r.object == "event"]
    assert [r.id for r in refs if r.object == "visitor"] == [grace]
    assert len(events) == len(set(events)) == 262 and events == wistia.event_keys_of(grace)
    stats = sandbox_stats(url)
    assert stats["list_visitors"] == 3  # 26 hits, 10 a page
    assert stats["list_events"] == 27  # 262 events, 10 a page: the 27th page is short


def test_export_streams_every_field_of_every_record(connector: WistiaConnector, wistia: WistiaSandbox) -> None:
    refs = connector.discover(subject(ACCESS_SUBJECT))
    records = connector.export(refs)
    assert isinstance(records, Iterator)
    exported = list(records)
    assert [r.ref for r in exported] == refs and len(refs) == 13
    visitor = exported[0].fields
    agent = ["user_agent_details.browser", "user_agent_details.browser_version", "user_agent_details.platform",
             "user_agent_details.mobile"]
    assert list(visitor) == [
        "visitor_key", "created_at", "last_active_at", "last_event_key", "load_count", "play_count",
        "visitor_identity.name", "visitor_identity.email", "visitor_identity.org.name", "visitor_identity.org.title",
        *agent]  # every documented field, nested objects flattened so the subject's CSV shows values
    assert visitor["visitor_identity.email"] == "Grace.Hopper@Example.org"
    assert (visitor["visitor_identity.org.name"], visitor["visitor_identity.org.title"]) == (
        "Harvard Computation Lab", "Rear Admiral")
    scalars = [f for f in EVENT_FIELDS if f not in ("thumbnail", "conversion_data", "user_agent_details")]
    for record in exported[1:]:
        fields = record.fields
        assert set(scalars) | set(agent) <= set(fields) and fields["event_key"] == record.ref.id
        assert all(not isinstance(v, dict | list) for v in fields.values())
        assert fields["media_name"] and fields["email"] == "Grace.Hopper@Example.org"
        assert fields["thumbnail.url"].startswith("https://")
    converted = [r.fields for r in exported[1:] if r.fields["conversion_type"]]
    assert converted and converted[0]["conversion_data.last_name"] == "Hopper"


def test_export_of_lone_events_and_of_records_gone_since_discovery(
        connector: WistiaConnector, wistia: WistiaSandbox, url: str) -> None:
    refs = connector.discover(subject(ACCESS_SUBJECT))
    lone = [r for r in refs if r.object == "event"][:3]
    before = sandbox_stats(url).get("show_event", 0)
    assert [r.ref for r in connector.export(lone)] == lone
    assert sandbox_stats(url)["show_event"] - before == 3
    wistia.delete_event(lone[0].id)
    wistia.delete_visitor(refs[0].id)
    assert list(connector.export(refs)) == []


def test_refs_of_other_systems_or_objects_are_refused(connector: WistiaConnector) -> None:
    with pytest.raises(ConnectorError, match="media"):
        list(connector.export([RecordRef(SYSTEM, "media", "k3x9q2m7ta", (DataCategory.USAGE,))]))
    with pytest.raises(ConnectorError, match="belongs to system 'crm'"):
        list(connector.export([RecordRef("crm", "visitor", "v1", (DataCategory.USAGE,))]))
    with pytest.raises(ConnectorError, match="not a Wistia visitor key"):
        list(connector.export([RecordRef(SYSTEM, "visitor", "../../account", (DataCategory.USAGE,))]))


def test_empty_identity_is_refused(connector: WistiaConnector) -> None:
    with pytest.raises(ConnectorError, match="empty identity"):
        connector.discover(Subject(email="  ", identity_hash="h"))


# --- erasure: a manual task ---------------------------------------------------------------------------------


def test_erase_changes_nothing_and_says_it_is_manual(connector: WistiaConnector, wistia: WistiaSandbox,
                                                     url: str) -> None:
    refs = connector.discover(subject(ERASURE_SUBJECT))
    calls = sandbox_stats(url)["calls"]
    decisions = [ErasureDecision(r, ErasureAction.DELETE) for r in refs[1:]]
    decisions.append(ErasureDecision(refs[0], ErasureAction.RETAIN, basis="legal claim", retain_until=date(2030, 1, 1)))
    receipt = connector.erase(decisions)
    assert sandbox_stats(url)["calls"] == calls and receipt.api_calls == 0
    assert [o.done for o in receipt.outcomes] == [False] * (len(refs) - 1) + [True]
    assert {o.error for o in receipt.failed} == {NO_DELETE_API}
    assert receipt.outcomes[-1].basis == "legal claim"
    assert all(wistia.has_visitor(r.id) for r in refs if r.object == "visitor")


def test_manual_instructions_name_every_key_and_no_address(connector: WistiaConnector) -> None:
    refs = connector.discover(subject(ERASURE_SUBJECT))
    text = connector.manual_instructions("erase", refs)
    for ref in refs:
        assert ref.id in text
    lowered = text.lower()
    for form in (ERASURE_SUBJECT, *STORED_FORMS, quote(ERASURE_SUBJECT, safe=""), "lovelace"):
        assert form.lower() not in lowered
    assert "precision.wistia.com" in text and "support" in text and "ticket" in text
    assert DEMO_TOKEN not in text
    purge_text = connector.manual_instructions("purge", refs[:1])
    assert refs[0].id in purge_text and "retention" in purge_text
    assert "nothing to delete" in connector.manual_instructions("erase", [])
    with pytest.raises(ConnectorError, match="no manual 'export' step"):
        connector.manual_instructions("export", refs)


def test_after_the_person_deletes_the_visitors_verify_erased_is_empty(
        connector: WistiaConnector, wistia: WistiaSandbox, url: str) -> None:
    ada = subject(ERASURE_SUBJECT)
    refs = connector.discover(ada)
    assert connector.verify_erased(ada) == refs  # before the person's work, everything is still there
    text = connector.manual_instructions("erase", refs)
    others_before = wistia.summary()
    # The person files the request; Wistia's support deletes the visitor keys named in the instructions.
    for key in re.findall(r"visitor_key (\S+)", text):
        assert control(url, "delete-visitor", {"visitor_key": key})["deleted"] is True
    assert connector.verify_erased(ada) == []
    assert wistia.summary()["visitors"] == others_before["visitors"] - 2
    assert len(connector.discover(subject(ACCESS_SUBJECT))) == 13
    for decoy in DECOY_EMAILS:
        assert wistia.visitor_keys_with_email(decoy)


# --- retention --------------------------------------------------------------------------------------------


def test_expired_by_last_activity_and_purge_is_manual(connector: WistiaConnector, wistia: WistiaSandbox) -> None:
    stale = wistia.add_visitor("stale@old.example", name="Stale Visitor", created_at=iso_day(1500),
                               last_active_at=iso_day(1000))
    old_events = wistia.add_events(stale, 2, received_at=iso_day(720))
    cutoff = datetime.now(UTC).date() - timedelta(days=650)
    found = list(connector.expired(DataCategory.IDENTITY, cutoff))
    assert stale in {r.id for r in found} and all(r.object == "visitor" for r in found)
    (ref,) = [r for r in found if r.id == stale]
    assert ref.anchor_date == (datetime.now(UTC) - timedelta(days=1000)).date()
    usage = list(connector.expired("usage", cutoff))
    assert set(old_events) <= {r.id for r in usage} and all(r.object == "event" for r in usage)
    assert all(r.anchor_date is not None and r.anchor_date < cutoff for r in usage)
    receipt = connector.purge(found[:3] + usage[:2])
    assert not any(o.done for o in receipt.outcomes) and receipt.api_calls == 0
    assert all(NO_DELETE_API in (o.error or "") for o in receipt.outcomes)
    assert wistia.has_visitor(stale)


# --- throttling, faults, pacing -------------------------------------------------------------------------------


def test_a_429_burst_is_retried_honouring_retry_after(connector: WistiaConnector, url: str) -> None:
    expected = connector.discover(subject(ACCESS_SUBJECT))
    control(url, "faults", {"throttle_rate": 1.0, "burst": 4, "path_pattern": "/stats/"})
    started = time.monotonic()
    assert connector.discover(subject(ACCESS_SUBJECT)) == expected
    assert time.monotonic() - started >= 4 * 0.05  # waited what Retry-After said, each time
    stats = connector.stats
    assert stats["throttled"] == 4 and stats["retries"] == 4
    assert sandbox_stats(url)["fault_throttle"] == 4


def test_the_real_window_throttles_an_unpaced_client_which_retries_to_success(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A window of a second: a loaded machine's scheduling jitter stays a small share of it.
    vendor = WistiaSandbox(rate_limit=5, rate_window=1.0, fractional_retry_after=True, seed_demo_data=True)
    with SandboxServer(vendor) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
        with create(SYSTEM, settings(retry_attempts=8)) as unpaced:
            results = [unpaced.discover(subject(ACCESS_SUBJECT)) for _ in range(6)]
            assert all(r == results[0] for r in results) and len(results[0]) == 13
            assert unpaced.stats["throttled"] >= 1
        assert vendor.stats["throttled"] >= 1
        control(server.url, "reset")
        # Paced to the vendor's window, the same work draws no 429 at all.
        with create(SYSTEM, settings(rate_limit={"calls": 5, "period_seconds": 1.0})) as paced:
            for _ in range(6):
                paced.discover(subject(ACCESS_SUBJECT))
            assert paced.stats.get("throttled", 0) == 0 and paced.stats["calls"] == 12
        assert vendor.stats.get("throttled", 0) == 0


def test_server_errors_and_resets_are_retried(wistia: WistiaSandbox, url: str) -> None:
    with create(SYSTEM, settings(retry_max_wait=0.02)) as conn:
        expected = conn.discover(subject(ACCESS_SUBJECT))
        control(url, "faults", {"error_rate": 1.0, "burst": 2, "path_pattern": "/stats/events$"})
        assert conn.discover(subject(ACCESS_SUBJECT)) == expected
        control(url, "faults", {"reset_rate": 1.0, "burst": 2, "path_pattern": "/stats/visitors$"})
        assert conn.discover(subject(ACCESS_SUBJECT)) == expected
        stats = conn.stats
    assert stats["server_errors"] == 2 and stats["network_errors"] == 2


def test_a_server_that_stays_down_fails_after_the_retry_budget(wistia: WistiaSandbox, url: str) -> None:
    control(url, "faults", {"error_rate": 1.0})
    with create(SYSTEM, settings(retry_max_wait=0.01, retry_attempts=3)) as conn:
        with pytest.raises(ConnectorError, match="server error 500 after 3 attempts"):
            conn.discover(subject(ACCESS_SUBJECT))
        assert conn.stats["calls"] == 3


class _IgnoresVisitorFilter(WistiaSandbox):
    """A Wistia that ignores `visitor_key` on the events list (a regression the connector must survive)."""

    def _list_events(self, request: Request) -> Response:
        request.query.pop("visitor_key", None)
        return super()._list_events(request)


def test_events_of_other_visitors_are_never_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = _IgnoresVisitorFilter(seed_demo_data=True)
    with SandboxServer(vendor) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
        with create(SYSTEM, settings()) as conn:
            refs = conn.discover(subject(ACCESS_SUBJECT))
            (grace,) = vendor.visitor_keys_with_email(ACCESS_SUBJECT)
            assert [r.id for r in refs if r.object == "event"] == vendor.event_keys_of(grace)
            assert conn.stats["foreign_events"] > 100


# --- credentials, personal data in errors, config --------------------------------------------------------------


def test_a_bad_token_is_a_clear_error_without_the_token_and_not_retried(
        wistia: WistiaSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wistia-token-that-was-revoked-0123456789")
    with create(SYSTEM, settings()) as conn:
        with pytest.raises(ConnectorError) as caught:
            conn.discover(subject(ACCESS_SUBJECT))
        message = str(caught.value)
        assert "401 unauthorized_credentials" in message and TOKEN_ENV in message
        assert "revoked-0123456789" not in message and conn.stats.get("retries", 0) == 0
    monkeypatch.setenv(TOKEN_ENV, LIMITED_TOKEN)
    with create(SYSTEM, settings()) as conn, pytest.raises(ConnectorError, match="Read detailed stats"):
        conn.discover(subject(ACCESS_SUBJECT))


def _assert_no_email(error: BaseException, email: str) -> None:
    rendered = "".join(traceback.format_exception(error))
    for form in (email, email.lower(), quote(email, safe=""), quote(email), quote(email).replace("%40", "@")):
        assert form not in rendered and form not in repr(error.args)
    assert error.__cause__ is None and error.__context__ is None


@pytest.mark.parametrize("email", [ERASURE_SUBJECT, "o'brien+video@example.com"])
def test_no_email_in_any_connector_error(wistia: WistiaSandbox, url: str, email: str) -> None:
    with create(SYSTEM, settings(retry_max_wait=0.01, retry_attempts=2, timeout_seconds=0.3)) as conn:
        for fault in ({"reset_rate": 1.0}, {"error_rate": 1.0}, {"throttle_rate": 1.0},
                      {"timeout_rate": 1.0, "timeout_seconds": 0.5}):
            control(url, "faults", {**fault, "path_pattern": "/stats/visitors$"})
            with pytest.raises(ConnectorError) as caught:
                conn.discover(subject(email))
            _assert_no_email(caught.value, email)
        control(url, "faults", {})
        control(url, "account", {"active": False})
        with pytest.raises(ConnectorError, match="account_inactive") as inactive:
            conn.discover(subject(email))
        _assert_no_email(inactive.value, email)


@pytest.mark.parametrize("change, path", [
    ({"token": "wistia-very-secret"}, "systems.wistia.settings.token"),
    ({"api_token": "wistia-very-secret"}, "systems.wistia.settings.api_token"),
    ({"page_size": 101}, "systems.wistia.settings.page_size"),
    ({"rate_limit": {"calls": 0, "period_seconds": 60}}, "systems.wistia.settings.rate_limit.calls"),
    ({"categories": {"medias": ["usage"]}}, "systems.wistia.settings.categories.medias"),
    ({"categories": {"visitor": ["very-secret-category"]}}, "systems.wistia.settings.categories.visitor.0"),
    ({"categories": {"event": []}}, "systems.wistia.settings.categories.event"),
    ({"base_url": "http://very-secret.example"}, "systems.wistia.settings.base_url_env"),
    ({"base_url_env": None, "base_url": "http://very-secret.example"}, "systems.wistia.settings.base_url"),
    ({"base_url_env": None, "base_url": "https://api.wistia.com/modern"}, "systems.wistia.settings.base_url"),
    ({"api_version": "very-secret"}, "systems.wistia.settings.api_version"),
    ({"token_env": "not a name"}, "systems.wistia.settings.token_env"),
    ({"unknown_field": 1}, "systems.wistia.settings.unknown_field"),
])
def test_config_errors_name_the_field_and_never_echo_values(
        wistia: WistiaSandbox, change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        create(SYSTEM, settings(**change))
    message = str(caught.value)
    assert path in message and "very-secret" not in message


def test_missing_environment_variables_are_named_never_their_values(
        wistia: WistiaSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConnectorConfigError, match=f"settings.token_env: environment variable {TOKEN_ENV}"):
        create(SYSTEM, settings())
    monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
    monkeypatch.setenv(URL_ENV, "http://198.51.100.7:8080")
    with pytest.raises(ConnectorConfigError, match="settings.base_url_env.*loopback") as caught:
        create(SYSTEM, settings())
    assert DEMO_TOKEN not in str(caught.value)
    monkeypatch.delenv(URL_ENV)
    with pytest.raises(ConnectorConfigError, match=f"environment variable {URL_ENV} is not set"):
        create(SYSTEM, settings())


def test_defaults_aim_at_wistia_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, DEMO_TOKEN)
    with create(SYSTEM, {"token_env": TOKEN_ENV}) as conn:
        assert conn._root == "https://api.wistia.com/modern"
        assert conn.info.rate_limit_per_second == 10.0  # 600 a minute
