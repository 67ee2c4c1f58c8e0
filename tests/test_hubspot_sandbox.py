"""The HubSpot sandbox's wire contract, checked with plain `requests` (the SDK would not notice drift).

Shapes and codes follow vendor-apis.md section 2: search bodies and paging, the 10,000-results cap,
property metadata, GDPR delete and its blocklist, batch limits, error bodies (401/404/429) and the
rate-limit headers and windows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.hubspot import ACCESS_SUBJECT, DECOY_EMAILS, DEMO_TOKEN, ERASURE_SUBJECT, HubSpotSandbox, main
from sandbox.kit import SandboxServer

AUTH = {"Authorization": f"Bearer {DEMO_TOKEN}"}


def serve(vendor: HubSpotSandbox) -> SandboxServer:
    server = SandboxServer(vendor)
    # The kit sends headers and body in two writes without TCP_NODELAY, so every answer waits ~40 ms
    # for a delayed ACK (Nagle). Until the kit sets it (see the HubSpot report), the tests do.
    server._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="module")
def shared_hub() -> Iterator[tuple[str, HubSpotSandbox]]:
    # One server for the module (the kit's shutdown takes up to 0.5 s); each test gets it re-seeded.
    vendor = HubSpotSandbox(window_limit=10_000, window_seconds=1.0, search_per_second=1000)
    with serve(vendor) as server:
        yield server.url, vendor


@pytest.fixture
def hub(shared_hub: tuple[str, HubSpotSandbox]) -> tuple[str, HubSpotSandbox]:
    url, vendor = shared_hub
    requests.post(f"{url}/__sandbox__/reset", timeout=5)
    vendor.expired_tokens.clear()
    vendor.seed_demo()
    return shared_hub


def search(url: str, body: dict[str, Any], kind: str = "contacts") -> requests.Response:
    return requests.post(f"{url}/crm/v3/objects/{kind}/search", json=body, headers=AUTH, timeout=10)


def email_eq(value: str, **extra: Any) -> dict[str, Any]:
    return {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": value}]}], **extra}


def assert_error(answer: requests.Response, status: int, category: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "error" and body["category"] == category
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["correlationId"], str) and body["correlationId"]
    return body  # type: ignore[no-any-return]


# --- search ---------------------------------------------------------------------------------------------


def test_search_answers_hubspots_shape_and_matches_email_ignoring_case_only(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub
    answer = search(url, email_eq(ERASURE_SUBJECT.upper(), limit=200))
    assert answer.status_code == 200
    assert answer.headers["X-HubSpot-Correlation-Id"]
    assert not [h for h in answer.headers if h.lower().startswith("x-hubspot-ratelimit")]  # as HubSpot's search
    body = answer.json()
    assert set(body) == {"total", "results"}  # `paging` absent on the last page
    assert body["total"] == 1
    (hit,) = body["results"]
    assert set(hit) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert hit["archived"] is False and hit["createdAt"].endswith("Z")
    assert set(hit["properties"]) == {"createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"}
    assert hit["properties"]["email"] == "Ada.Lovelace@Example.com" and hit["properties"]["hs_object_id"] == hit["id"]


@pytest.mark.parametrize("email", DECOY_EMAILS)
def test_search_never_matches_a_substring_prefix_or_wildcard(hub: tuple[str, HubSpotSandbox], email: str) -> None:
    url, _ = hub
    results = search(url, email_eq(email, properties=["email"])).json()["results"]
    assert [r["properties"]["email"] for r in results] == [email]  # only the decoy itself
    for subject in (ERASURE_SUBJECT, ACCESS_SUBJECT):
        assert subject not in [r["properties"]["email"].lower() for r in results]


def test_eq_on_other_properties_is_exact_and_operators_compare_by_type(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub

    def count(filters: list[dict[str, Any]]) -> int:
        return search(url, {"filterGroups": [{"filters": filters}], "limit": 200}).json()["total"]  # type: ignore[no-any-return]

    assert count([{"propertyName": "firstname", "operator": "EQ", "value": "Ada"}]) == 1
    assert count([{"propertyName": "firstname", "operator": "EQ", "value": "ada"}]) == 0
    assert count([{"propertyName": "email", "operator": "IN", "values": [ERASURE_SUBJECT, ACCESS_SUBJECT]}]) == 2
    old = count([{"propertyName": "lastmodifieddate", "operator": "LT", "value": "1609459200000"}])  # 2021-01-01
    old_iso = count([{"propertyName": "lastmodifieddate", "operator": "LT", "value": "2021-01-01T00:00:00Z"}])
    assert old == old_iso > 0
    everyone = count([{"propertyName": "hs_object_id", "operator": "GT", "value": "0"}])
    assert everyone == count([{"propertyName": "email", "operator": "HAS_PROPERTY"}])


def test_search_pages_with_after_and_drops_paging_on_the_last_page(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    vendor.add_contacts(450, domain="paging.example")
    body = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "CONTAINS_TOKEN",
                                           "value": "*@paging.example"}]}], "limit": 200, "properties": ["email"]}
    seen, after, pages = [], None, 0
    while True:
        answer = search(url, {**body, **({"after": after} if after else {})}).json()
        pages += 1
        assert answer["total"] == 450
        seen += [r["id"] for r in answer["results"]]
        if "paging" not in answer:
            break
        after = answer["paging"]["next"]["after"]
        assert answer["paging"]["next"]["link"] == f"?after={after}"
    assert pages == 3 and len(seen) == len(set(seen)) == 450
    assert search(url, {**body, "limit": 201}).status_code == 400


def test_one_query_pages_through_at_most_10000_results() -> None:
    vendor = HubSpotSandbox(window_limit=10_000, search_per_second=1000)
    vendor.add_contacts(10_050)
    with serve(vendor) as server:
        body: dict[str, Any] = {"limit": 200, "properties": ["email"], "after": "9800"}
        answer = search(server.url, body).json()
        assert answer["total"] == 10_050 and len(answer["results"]) == 200
        assert answer["paging"]["next"]["after"] == "10000"
        assert_error(search(server.url, {**body, "after": "10000"}), 400, "VALIDATION_ERROR")


# --- objects, properties, associations ------------------------------------------------------------------


def test_properties_list_has_hubspots_metadata_shape(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub
    answer = requests.get(f"{url}/crm/v3/properties/contacts", headers=AUTH, timeout=10)
    assert answer.status_code == 200
    results = answer.json()["results"]
    by_name = {p["name"]: p for p in results}
    assert {"email", "firstname", "lastname", "phone", "hs_object_id", "lastmodifieddate"} <= set(by_name)
    for prop in results:
        assert {"name", "label", "type", "fieldType", "groupName", "description", "options",
                "modificationMetadata", "hasUniqueValue", "hidden", "formField"} <= set(prop)
    assert by_name["email"]["type"] == "string" and by_name["email"]["groupName"] == "contactinformation"
    assert by_name["lastmodifieddate"]["modificationMetadata"]["readOnlyValue"] is True
    notes = requests.get(f"{url}/crm/v3/properties/notes", headers=AUTH, timeout=10).json()["results"]
    assert "hs_note_body" in {p["name"] for p in notes}


def test_create_endpoints_answer_201_and_refuse_what_hubspot_refuses(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub
    created = requests.post(f"{url}/crm/v3/objects/contacts", headers=AUTH, timeout=10,
                            json={"properties": {"email": "new.person@example.net", "firstname": "New"}})
    assert created.status_code == 201
    contact = created.json()
    assert set(contact) >= {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert contact["properties"]["email"] == "new.person@example.net"

    duplicate = requests.post(f"{url}/crm/v3/objects/contacts", headers=AUTH, timeout=10,
                              json={"properties": {"email": "NEW.person@example.net"}})
    assert contact["id"] in assert_error(duplicate, 409, "CONFLICT")["message"]
    invalid = requests.post(f"{url}/crm/v3/objects/contacts", headers=AUTH, timeout=10,
                            json={"properties": {"email": "[erased]"}})
    assert "INVALID_EMAIL" in assert_error(invalid, 400, "VALIDATION_ERROR")["message"]
    read_only = requests.patch(f"{url}/crm/v3/objects/contacts/{contact['id']}", headers=AUTH, timeout=10,
                               json={"properties": {"lastmodifieddate": "2020-01-01"}})
    assert "READ_ONLY_VALUE" in assert_error(read_only, 400, "VALIDATION_ERROR")["message"]

    note = requests.post(f"{url}/crm/v3/objects/notes", headers=AUTH, timeout=10, json={
        "properties": {"hs_timestamp": "2025-01-01T00:00:00Z", "hs_note_body": "hello"},
        "associations": [{"to": {"id": contact["id"]},
                          "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}],
    })
    assert note.status_code == 201
    links = requests.get(f"{url}/crm/v4/objects/contacts/{contact['id']}/associations/notes", headers=AUTH,
                         timeout=10).json()
    assert links == {"results": [{"toObjectId": int(note.json()["id"]), "associationTypes": [
        {"category": "HUBSPOT_DEFINED", "typeId": 201, "label": None}]}]}
    by_email = requests.get(f"{url}/crm/v3/objects/contacts/NEW.PERSON%40example.net",
                            params={"idProperty": "email", "associations": "notes"}, headers=AUTH, timeout=10)
    assert by_email.json()["associations"]["notes"]["results"] == [{"id": note.json()["id"], "type": "contact_to_note"}]


def test_v3_read_pages_associations_past_100(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    contact = vendor.add_contact({"email": "busy@example.net"})
    vendor.add_engagements("notes", 101, contact_ids=[contact])
    vendor.add_engagements("calls", 3, contact_ids=[contact])
    answer = requests.get(f"{url}/crm/v3/objects/contacts/{contact}", headers=AUTH,
                          params={"associations": "notes,calls"}, timeout=10).json()["associations"]
    assert len(answer["notes"]["results"]) == 100 and answer["notes"]["paging"]["next"]["after"] == "100"
    assert len(answer["calls"]["results"]) == 3 and "paging" not in answer["calls"]


def test_v4_associations_page_by_500(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    contact = vendor.add_contact({"email": "busy@example.net"})
    vendor.add_engagements("notes", 1_100, contact_ids=[contact])
    ids, after, pages = [], None, 0
    while True:
        answer = requests.get(f"{url}/crm/v4/objects/contacts/{contact}/associations/notes", headers=AUTH,
                              params={"limit": 500, **({"after": after} if after else {})}, timeout=10).json()
        pages += 1
        ids += [r["toObjectId"] for r in answer["results"]]
        if "paging" not in answer:
            break
        after = answer["paging"]["next"]["after"]
    assert pages == 3 and len(set(ids)) == 1_100


def test_unknown_object_is_404_object_not_found(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub
    body = assert_error(requests.get(f"{url}/crm/v3/objects/contacts/999999", headers=AUTH, timeout=10),
                        404, "OBJECT_NOT_FOUND")
    assert body["context"] == {"id": ["999999"]}


def test_batch_read_answers_207_with_errors_for_missing_ids(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    (ada,) = vendor.contacts_with_email(ERASURE_SUBJECT)
    answer = requests.post(f"{url}/crm/v3/objects/contacts/batch/read", headers=AUTH, timeout=10,
                           json={"properties": ["email"], "inputs": [{"id": ada}, {"id": "999999"}]})
    assert answer.status_code == 207
    body = answer.json()
    assert body["status"] == "COMPLETE" and body["numErrors"] == 1
    assert [r["id"] for r in body["results"]] == [ada]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND" and body["errors"][0]["context"] == {"ids": ["999999"]}


def test_batch_archive_answers_204_and_refuses_more_than_100(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    ids = vendor.add_contacts(101, domain="archive.example")
    too_many = requests.post(f"{url}/crm/v3/objects/contacts/batch/archive", headers=AUTH, timeout=10,
                             json={"inputs": [{"id": i} for i in ids]})
    assert_error(too_many, 400, "VALIDATION_ERROR")
    assert vendor.get("contacts", ids[0]) is not None
    done = requests.post(f"{url}/crm/v3/objects/contacts/batch/archive", headers=AUTH, timeout=10,
                         json={"inputs": [{"id": i} for i in ids[:100]] })
    assert done.status_code == 204 and done.content == b""
    assert vendor.get("contacts", ids[0]) is None and vendor.get("contacts", ids[100]) is not None
    archived = requests.get(f"{url}/crm/v3/objects/contacts/{ids[0]}", params={"archived": "true"}, headers=AUTH,
                            timeout=10).json()
    assert archived["archived"] is True and archived["archivedAt"]


# --- GDPR delete ------------------------------------------------------------------------------------------


def test_gdpr_delete_removes_contact_and_sole_engagements_then_blocklists(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    (ada,) = vendor.contacts_with_email(ERASURE_SUBJECT)
    (grace,) = vendor.contacts_with_email(ACCESS_SUBJECT)
    sole = vendor.linked("contacts", ada, "notes")
    shared = vendor.add_engagement("meetings", {"hs_meeting_title": "Both"}, [ada, grace])

    answer = requests.post(f"{url}/crm/v3/objects/contacts/gdpr-delete", headers=AUTH, timeout=10,
                           json={"idProperty": "email", "objectId": "ADA.LOVELACE@example.com"})
    assert answer.status_code == 204 and answer.content == b""
    assert vendor.get("contacts", ada) is None
    assert all(vendor.get("notes", n) is None for n in sole)
    assert vendor.get("meetings", shared) is not None  # still Grace's meeting
    assert vendor.linked("meetings", shared, "contacts") == [grace]
    assert requests.get(f"{url}/crm/v3/objects/contacts/{ada}", params={"archived": "true"}, headers=AUTH,
                        timeout=10).status_code == 404

    again = requests.post(f"{url}/crm/v3/objects/contacts", headers=AUTH, timeout=10,
                          json={"properties": {"email": "Ada.Lovelace@example.com"}})
    assert "blocklisted" in assert_error(again, 400, "VALIDATION_ERROR")["message"]
    for decoy in DECOY_EMAILS:
        assert vendor.contacts_with_email(decoy), decoy


def test_gdpr_delete_blocklists_an_unknown_address_and_404s_an_unknown_id(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    unknown = requests.post(f"{url}/crm/v3/objects/contacts/gdpr-delete", headers=AUTH, timeout=10,
                            json={"idProperty": "email", "objectId": "never.seen@example.net"})
    assert unknown.status_code == 204 and vendor.is_blocklisted("never.seen@example.net")
    refused = requests.post(f"{url}/crm/v3/objects/contacts", headers=AUTH, timeout=10,
                            json={"properties": {"email": "never.seen@example.net"}})
    assert refused.status_code == 400
    by_id = requests.post(f"{url}/crm/v3/objects/contacts/gdpr-delete", headers=AUTH, timeout=10,
                          json={"objectId": "999999"})
    assert_error(by_id, 404, "OBJECT_NOT_FOUND")


@pytest.mark.parametrize("cascade, kept", [("none", True), ("all", False)])
def test_gdpr_cascade_is_configurable(cascade: str, kept: bool) -> None:
    vendor = HubSpotSandbox(gdpr_cascade=cascade)
    ada = vendor.add_contact({"email": "solo@example.net"})
    grace = vendor.add_contact({"email": "other@example.net"})
    sole = vendor.add_engagement("notes", {"hs_note_body": "x"}, [ada])
    shared = vendor.add_engagement("notes", {"hs_note_body": "y"}, [ada, grace])
    vendor.purge_contact(ada)
    assert (vendor.get("notes", sole) is not None) is kept
    assert (vendor.get("notes", shared) is not None) is kept


# --- authentication, limits, faults -----------------------------------------------------------------------


def test_401_bodies_for_missing_wrong_and_expired_tokens(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    for headers in ({}, {"Authorization": "Bearer pat-na1-wrong"}):
        answer = requests.get(f"{url}/crm/v3/properties/contacts", headers=headers, timeout=10)
        assert_error(answer, 401, "INVALID_AUTHENTICATION")
    vendor.expire_token(DEMO_TOKEN)
    body = assert_error(requests.get(f"{url}/crm/v3/properties/contacts", headers=AUTH, timeout=10), 401,
                        "EXPIRED_AUTHENTICATION")
    assert "expire time" in body["context"]


def test_normal_answers_carry_rate_limit_headers_that_count_down() -> None:
    vendor = HubSpotSandbox(window_limit=110, window_seconds=10, daily_limit=500)
    with serve(vendor) as server:
        first = requests.get(f"{server.url}/crm/v3/properties/contacts", headers=AUTH, timeout=10)
        second = requests.get(f"{server.url}/crm/v3/properties/contacts", headers=AUTH, timeout=10)
    assert first.headers["X-HubSpot-RateLimit-Max"] == "110"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(first.headers["X-HubSpot-RateLimit-Remaining"]) == 109
    assert int(second.headers["X-HubSpot-RateLimit-Remaining"]) == 108
    assert first.headers["X-HubSpot-RateLimit-Daily"] == "500"
    assert int(second.headers["X-HubSpot-RateLimit-Daily-Remaining"]) == 498
    assert first.headers["X-HubSpot-Correlation-Id"]


def test_rolling_window_answers_429_ten_secondly_and_frees_slots_as_they_age() -> None:
    vendor = HubSpotSandbox(window_limit=5, window_seconds=0.5)
    with serve(vendor) as server:
        def call() -> requests.Response:
            return requests.get(f"{server.url}/crm/v3/properties/notes", headers=AUTH, timeout=10)

        assert [call().status_code for _ in range(5)] == [200] * 5
        limited = call()
        assert limited.status_code == 429
        body = limited.json()
        assert set(body) == {"status", "message", "errorType", "correlationId", "policyName", "groupName"}
        assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        time.sleep(0.55)
        assert call().status_code == 200


def test_search_has_its_own_per_second_limit() -> None:
    vendor = HubSpotSandbox(seed_demo_data=True, search_per_second=4)
    with serve(vendor) as server:
        codes = [search(server.url, email_eq(ACCESS_SUBJECT)).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]
        limited = search(server.url, email_eq(ACCESS_SUBJECT))
        assert limited.json()["policyName"] == "SECONDLY" and limited.headers["Retry-After"]
        # other calls are not held up by the search limit
        assert requests.get(f"{server.url}/crm/v3/properties/contacts", headers=AUTH, timeout=10).status_code == 200
        time.sleep(1.05)
        assert search(server.url, email_eq(ACCESS_SUBJECT)).status_code == 200


def test_daily_cap_answers_429_daily() -> None:
    vendor = HubSpotSandbox(daily_limit=2)
    with serve(vendor) as server:
        codes = [requests.get(f"{server.url}/crm/v3/properties/notes", headers=AUTH, timeout=10) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json()["policyName"] == "DAILY" and codes[2].headers["Retry-After"]


def test_injected_faults_speak_hubspot(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub
    requests.post(f"{url}/__sandbox__/faults", json={"throttle_rate": 1.0, "burst": 2}, timeout=5)
    throttled = [requests.get(f"{url}/crm/v3/properties/notes", headers=AUTH, timeout=10) for _ in range(3)]
    assert [t.status_code for t in throttled] == [429, 429, 200]
    assert throttled[0].json()["policyName"] == "TEN_SECONDLY_ROLLING" and throttled[0].headers["Retry-After"]
    requests.post(f"{url}/__sandbox__/faults", json={"expire_rate": 1.0, "burst": 1}, timeout=5)
    assert_error(requests.get(f"{url}/crm/v3/properties/notes", headers=AUTH, timeout=10), 401,
                 "EXPIRED_AUTHENTICATION")
    requests.post(f"{url}/__sandbox__/faults", json={"error_rate": 1.0, "burst": 1}, timeout=5)
    assert requests.get(f"{url}/crm/v3/properties/notes", headers=AUTH, timeout=10).status_code == 502
    stats = requests.get(f"{url}/__sandbox__/stats", timeout=5).json()
    assert stats["fault_throttle"] == 2 and stats["throttled"] == 2


# --- communication preferences, control API ---------------------------------------------------------------


def test_subscription_status_and_unsubscribe(hub: tuple[str, HubSpotSandbox]) -> None:
    url, _ = hub
    status = requests.get(f"{url}/communication-preferences/v3/status/email/{ERASURE_SUBJECT}", headers=AUTH,
                          timeout=10).json()
    assert status["recipient"] == ERASURE_SUBJECT
    states = {s["id"]: s["status"] for s in status["subscriptionStatuses"]}
    assert states == {"1190": "SUBSCRIBED", "1191": "SUBSCRIBED", "1192": "NOT_SUBSCRIBED"}
    body = {"emailAddress": ERASURE_SUBJECT, "subscriptionId": "1190"}
    first = requests.post(f"{url}/communication-preferences/v3/unsubscribe", json=body, headers=AUTH, timeout=10)
    assert first.status_code == 200 and first.json()["status"] == "NOT_SUBSCRIBED"
    again = requests.post(f"{url}/communication-preferences/v3/unsubscribe", json=body, headers=AUTH, timeout=10)
    assert "already unsubscribed" in assert_error(again, 400, "VALIDATION_ERROR")["message"]
    definitions = requests.get(f"{url}/communication-preferences/v3/definitions", headers=AUTH, timeout=10).json()
    assert {d["id"] for d in definitions["subscriptionDefinitions"]} == {"1190", "1191", "1192"}


def test_control_api_seeds_and_adds_in_bulk(hub: tuple[str, HubSpotSandbox]) -> None:
    url, vendor = hub
    added = requests.post(f"{url}/__sandbox__/add-contacts", json={"count": 30, "domain": "ctl.example"},
                          timeout=10).json()
    assert added["count"] == 30
    notes = requests.post(f"{url}/__sandbox__/add-engagements",
                          json={"type": "notes", "count": 3, "contactIds": [added["ids"][0]]}, timeout=10).json()
    assert vendor.linked("contacts", added["ids"][0], "notes") == notes["ids"]
    state = requests.post(f"{url}/__sandbox__/seed-demo", json={"seed": 7}, timeout=10).json()
    assert state["objects"]["contacts"] == 2 + len(DECOY_EMAILS) + 50
    assert requests.get(f"{url}/__sandbox__/state", timeout=10).json() == state
    assert vendor.contacts_with_email("bulk.0@ctl.example") == []


def test_demo_seed_is_deterministic_and_stores_subjects_with_capitals() -> None:
    first, second = HubSpotSandbox(seed_demo_data=True), HubSpotSandbox(seed_demo_data=True)
    assert first.summary() == second.summary()
    (ada,) = first.contacts_with_email(ERASURE_SUBJECT)
    assert first.get("contacts", ada)["email"] == "Ada.Lovelace@Example.com"  # type: ignore[index]
    for kind in ("notes", "emails", "calls", "meetings"):
        assert first.linked("contacts", ada, kind)
    (grace,) = first.contacts_with_email(ACCESS_SUBJECT)
    assert first.get("contacts", grace)["email"] == "Grace.Hopper@Example.org"  # type: ignore[index]


def test_cli_refuses_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["--port", "not-a-number"])
