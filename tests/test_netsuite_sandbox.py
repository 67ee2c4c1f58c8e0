"""The NetSuite sandbox's wire contract, checked with plain `requests` + `requests-oauthlib` (no connector code).

Shapes and codes follow vendor-apis.md section 3: OAuth 1.0a (HMAC-SHA256, realm = account id) checked with
oauthlib, OAuth 2.0 client credentials with a JWT assertion, SuiteQL paging and its limits, Oracle string
literals, record GET/PATCH/DELETE/POST, the refused delete of a customer with transactions, error bodies
(401/400/404/429/503) and the concurrency limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256
from requests_oauthlib import OAuth1

from sandbox.kit import SandboxServer
from sandbox.netsuite import (
    ACCESS_SUBJECT,
    DECOY_EMAILS,
    DEMO_ACCOUNT_ID,
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    DEMO_TOKEN_ID,
    DEMO_TOKEN_SECRET,
    ERASURE_SUBJECT,
    TOKEN_PATH,
    AccountClient,
    NetSuiteSandbox,
)

RECORD = "/services/rest/record/v1"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(NetSuiteSandbox()) as running:
        yield running


@pytest.fixture
def vendor(server: SandboxServer) -> NetSuiteSandbox:
    return server.vendor  # type: ignore[return-value]


@pytest.fixture
def account(server: SandboxServer, vendor: NetSuiteSandbox) -> Iterator[AccountClient]:
    client = AccountClient(server.url)
    client.control("reset")
    vendor.seed_demo(7)
    yield client
    client.close()


def assert_error(answer: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/vnd.oracle.resource+json; type=error")
    body = answer.json()
    assert set(body) == {"type", "title", "status", "o:errorDetails"} and body["status"] == status
    assert body["type"].startswith("https://") and body["title"]
    (detail,) = body["o:errorDetails"]
    assert detail["o:errorCode"] == code and detail["detail"]
    return detail  # type: ignore[no-any-return]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


# --- SuiteQL ---------------------------------------------------------------------------------------------


def test_suiteql_answers_netsuites_page_shape(account: AccountClient) -> None:
    answer = account.suiteql("SELECT id, email, isperson, phone, datecreated, TO_CHAR(lastmodifieddate, "
                             "'YYYY-MM-DD') AS modified FROM customer WHERE email = 'grace.hopper@example.org'")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/vnd.oracle.resource+json")
    body = answer.json()
    assert set(body) == {"links", "count", "hasMore", "items", "offset", "totalResults"}
    assert (body["count"], body["hasMore"], body["offset"], body["totalResults"]) == (1, False, 0, 1)
    assert {link["rel"] for link in body["links"]} >= {"self", "first", "last"}
    (item,) = body["items"]
    assert item["links"] == [] and item["id"].isdigit() and item["email"] == ACCESS_SUBJECT
    assert item["isperson"] == "T"  # booleans are T/F
    assert item["datecreated"] == "2/11/2020"  # dates as the default preference shows them
    assert len(item["modified"]) == 10 and item["modified"][4] == "-"  # TO_CHAR gives ISO dates
    assert "phone" in item
    grace = account.suiteql("SELECT id, altemail FROM customer WHERE email = 'grace.hopper@example.org'").json()
    assert "altemail" not in grace["items"][0]  # empty columns are left out


def test_suiteql_needs_prefer_transient(account: AccountClient) -> None:
    answer = account.call("POST", "/services/rest/query/v1/suiteql", json={"q": "SELECT id FROM customer"})
    detail = assert_error(answer, 400, "INVALID_HEADER")
    assert detail["o:errorHeader"] == "Prefer"


@pytest.mark.parametrize("params, name", [
    ({"limit": 1001, "offset": 0}, "limit"),
    ({"limit": 0, "offset": 0}, "limit"),
    ({"limit": 100, "offset": 150}, "offset"),  # the offset must be a multiple of the limit
])  # fmt: skip
def test_suiteql_paging_limits(account: AccountClient, params: dict[str, int], name: str) -> None:
    answer = account.call("POST", "/services/rest/query/v1/suiteql", params=params, json={"q": "SELECT id FROM contact"},
                          headers={"Prefer": "transient"})
    assert assert_error(answer, 400, "INVALID_PARAMETER")["o:errorQueryParam"] == name


def test_suiteql_pages_past_1000_rows_with_limit_and_offset(account: AccountClient, vendor: NetSuiteSandbox) -> None:
    vendor.add_records("contact", [{"lastName": f"Busy {n}", "email": "busy@example.com"} for n in range(1250)])
    query = "SELECT id FROM contact WHERE email = 'busy@example.com' ORDER BY id"
    first = account.suiteql(query).json()
    assert (first["count"], first["hasMore"], first["totalResults"]) == (1000, True, 1250)
    nxt = next(link["href"] for link in first["links"] if link["rel"] == "next")
    assert nxt.endswith("limit=1000&offset=1000")
    second = account.suiteql(query, offset=1000).json()
    assert (second["count"], second["hasMore"], second["offset"]) == (250, False, 1000)
    assert len(set(ids(first["items"]) + ids(second["items"]))) == 1250
    assert len(account.rows(query)) == 1250


def test_suiteql_stops_at_the_result_cap() -> None:
    vendor = NetSuiteSandbox(result_cap=1500)
    vendor.add_records("customer", [{"lastName": f"P{n}", "isPerson": True, "subsidiary": {"id": "1"}}
                                    for n in range(1600)])
    with SandboxServer(vendor) as small:
        client = AccountClient(small.url)
        second = client.suiteql("SELECT id FROM customer ORDER BY id", offset=1000).json()
        assert (second["count"], second["hasMore"], second["totalResults"]) == (500, False, 1600)
        over = client.suiteql("SELECT id FROM customer ORDER BY id", limit=500, offset=1500)
        assert assert_error(over, 400, "INVALID_PARAMETER")["o:errorQueryParam"] == "offset"
        client.close()


def test_string_literals_are_oracles_and_equality_is_exact(account: AccountClient) -> None:
    def count(where: str) -> int:
        answer = account.suiteql(f"SELECT id, email FROM customer WHERE {where}")
        assert answer.status_code == 200, answer.text
        return int(answer.json()["totalResults"])

    assert count("email = 'o''brien@example.com'") == 1  # '' is a quote inside a literal
    assert count("email = 'obrien@example.com'") == 1
    assert count("email = '%@example.com'") == 1  # only the decoy whose address is literally that
    assert count("email LIKE '%@example.com'") > 5  # wildcards only after LIKE
    assert count("email = 'ada_lovelace@example.com'") == 1
    assert count("email = 'ADA.LOVELACE@EXAMPLE.COM'") == 0  # comparisons are case-sensitive
    assert count("LOWER(email) = 'ada.lovelace@example.com'") == 2
    assert count("email = ''") == 0 and count("email != ''") == 0  # Oracle: '' is NULL, so both are unknown
    # Why the connector's quoting matters: pasted raw, a hostile address turns into a filter matching everyone.
    everyone = count("email IS NOT NULL")
    hostile = "x@example.com' OR email IS NOT NULL OR email = '"
    assert count(f"email = '{hostile}'") == everyone
    assert count("email = '" + hostile.replace("'", "''") + "'") == 0


def test_suiteql_query_errors(account: AccountClient) -> None:
    for query in ("SELECT id FROM customer WHERE email = 'unterminated", "SELECT nosuchfield FROM customer",
                  "SELECT id FROM nosuchtable", "DELETE FROM customer",
                  "SELECT id FROM customer WHERE id IN (" + ", ".join(str(n) for n in range(1001)) + ")"):
        detail = assert_error(account.suiteql(query), 400, "INVALID_PARAMETER")
        assert detail["detail"].startswith("Invalid search query.")


def test_transactions_table_lists_every_type_with_its_code(account: AccountClient) -> None:
    ada = account.rows("SELECT id FROM customer WHERE email = 'Ada.Lovelace@Example.com'")[0]["id"]
    rows = account.rows(f"SELECT id, type, recordtype, trandate, entity FROM transaction WHERE entity = {ada} "
                        "ORDER BY trandate DESC")
    assert [(r["type"], r["recordtype"], r["trandate"]) for r in rows] == [
        ("CustPymnt", "customerpayment", "12/5/2025"), ("CustInvc", "invoice", "11/20/2025"),
        ("CustInvc", "invoice", "3/14/2024")]
    assert {r["entity"] for r in rows} == {ada}


def test_a_left_outer_join_keeps_customers_without_transactions(account: AccountClient) -> None:
    ada = account.rows("SELECT id FROM customer WHERE email = 'Ada.Lovelace@Example.com'")[0]["id"]
    joined = account.rows("SELECT customer.id AS id, transaction.id AS tid, transaction.type AS type, "
                          "TO_CHAR(transaction.trandate, 'YYYY-MM-DD') AS day FROM customer LEFT OUTER JOIN "
                          "transaction ON transaction.entity = customer.id WHERE LOWER(customer.email) = "
                          "'ada.lovelace@example.com' ORDER BY customer.id, transaction.id")
    alone = account.rows(f"SELECT id FROM transaction WHERE entity = {ada} ORDER BY id")
    assert [r["tid"] for r in joined if r["id"] == ada] == [r["id"] for r in alone]
    assert [r.get("tid") for r in joined if r["id"] != ada] == [None]  # her second customer: no transactions
    assert {r["day"] for r in joined if "tid" in r} == {"2024-03-14", "2025-11-20", "2025-12-05"}
    inner = account.rows("SELECT customer.id AS id FROM customer INNER JOIN transaction ON customer.id = "
                         "transaction.entity WHERE LOWER(customer.email) = 'ada.lovelace@example.com'")
    assert {r["id"] for r in inner} == {ada} and len(inner) == 3
    for query, why in (("SELECT id FROM customer LEFT JOIN transaction ON transaction.entity = customer.id",
                        "ORA-00918"),
                       ("SELECT * FROM customer JOIN transaction ON transaction.entity = customer.id", "Name the"),
                       ("SELECT customer.id FROM customer JOIN contact ON contact.id = transaction.entity", "alias")):
        assert why in assert_error(account.suiteql(query), 400, "INVALID_PARAMETER")["detail"]


# --- records ---------------------------------------------------------------------------------------------


def test_record_get_shape_and_sublists(account: AccountClient) -> None:
    grace = account.rows(f"SELECT id FROM customer WHERE email = '{ACCESS_SUBJECT}'")[0]["id"]
    answer = account.call("GET", f"{RECORD}/customer/{grace}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["links"][0]["rel"] == "self" and body["links"][0]["href"].endswith(f"/customer/{grace}")
    assert body["id"] == grace and body["email"] == ACCESS_SUBJECT and body["isPerson"] is True
    assert set(body["subsidiary"]) == {"links", "id", "refName"}
    assert body["dateCreated"] == "2020-02-11T11:30:00Z"
    assert "altEmail" not in body  # empty fields are left out
    assert set(body["addressBook"]) == {"links"}  # a link unless expanded
    expanded = account.call("GET", f"{RECORD}/customer/{grace}", params={"expandSubResources": "true"}).json()
    assert expanded["addressBook"]["items"][0]["addressBookAddress"]["addressee"] == "Grace Hopper"
    invoice = account.rows(f"SELECT id FROM transaction WHERE entity = {grace} AND type = 'CustInvc'")[0]["id"]
    body = account.call("GET", f"{RECORD}/invoice/{invoice}", params={"expandSubResources": "true"}).json()
    assert body["entity"]["id"] == grace and body["entity"]["refName"] == "Grace Hopper"
    assert body["tranDate"] == "2024-09-09" and body["total"] > 0 and body["item"]["items"]
    missing = account.call("GET", f"{RECORD}/customer/999999")
    assert_error(missing, 404, "NONEXISTENT_ID")


def test_a_customer_with_transactions_cannot_be_deleted(account: AccountClient, vendor: NetSuiteSandbox) -> None:
    ada, web = ids(account.rows(f"SELECT id FROM customer WHERE LOWER(email) = '{ERASURE_SUBJECT}' ORDER BY id"))
    refused = account.call("DELETE", f"{RECORD}/customer/{ada}")
    assert "dependent records" in assert_error(refused, 400, "USER_ERROR")["detail"]
    assert vendor.record("customer", ada) is not None
    deleted = account.call("DELETE", f"{RECORD}/customer/{web}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(account.call("DELETE", f"{RECORD}/customer/{web}"), 404, "NONEXISTENT_ID")
    (contact,) = account.rows(f"SELECT id FROM contact WHERE LOWER(email) = '{ERASURE_SUBJECT}'")
    assert account.call("DELETE", f"{RECORD}/contact/{contact['id']}").status_code == 204


def test_patch_validates_and_replaces_sublists(account: AccountClient, vendor: NetSuiteSandbox) -> None:
    ada = account.rows("SELECT id FROM customer WHERE email = 'Ada.Lovelace@Example.com'")[0]["id"]
    path = f"{RECORD}/customer/{ada}"
    bad_email = account.call("PATCH", path, json={"email": "[erased]"})
    assert assert_error(bad_email, 400, "INVALID_CONTENT")["o:errorPath"] == "email"
    read_only = account.call("PATCH", path, json={"dateCreated": "2020-01-01T00:00:00Z"})
    assert assert_error(read_only, 400, "INVALID_CONTENT")["o:errorPath"] == "dateCreated"
    no_name = account.call("PATCH", path, json={"lastName": None})
    assert "Last Name" in assert_error(no_name, 400, "USER_ERROR")["detail"]
    duplicate = account.call("PATCH", path, json={"entityId": "Grace Hopper"})
    assert "already exists" in assert_error(duplicate, 400, "USER_ERROR")["detail"]
    cleared = account.call("PATCH", path, params={"replace": "addressBook"},
                           json={"email": None, "firstName": "[erased]", "addressBook": {"items": []}})
    assert cleared.status_code == 204
    stored = vendor.record("customer", ada)
    assert stored is not None and "email" not in stored and stored["firstName"] == "[erased]"
    assert stored["addressBook"]["items"] == []


def test_create_answers_204_with_location(account: AccountClient, vendor: NetSuiteSandbox) -> None:
    answer = account.call("POST", f"{RECORD}/customer", json={"isPerson": True, "lastName": "New",
                                                               "email": "new@example.com", "subsidiary": {"id": "1"}})
    assert answer.status_code == 204 and answer.content == b""
    new_id = answer.headers["Location"].rsplit("/", 1)[1]
    stored = vendor.record("customer", new_id)
    assert stored is not None and stored["email"] == "new@example.com"
    listing = account.call("GET", f"{RECORD}/customer", params={"q": 'email IS "new@example.com"'}).json()
    assert [item["id"] for item in listing["items"]] == [new_id] and set(listing["items"][0]) == {"links", "id"}


# --- token-based authentication -----------------------------------------------------------------------------


def signed(**overrides: Any) -> OAuth1:
    values: dict[str, Any] = {"client_key": DEMO_CONSUMER_KEY, "client_secret": DEMO_CONSUMER_SECRET,
                              "resource_owner_key": DEMO_TOKEN_ID, "resource_owner_secret": DEMO_TOKEN_SECRET,
                              "signature_method": SIGNATURE_HMAC_SHA256, "realm": DEMO_ACCOUNT_ID}
    values.update(overrides)
    return OAuth1(**values)


def assert_refused(answer: requests.Response) -> None:
    assert_error(answer, 401, "INVALID_LOGIN")
    assert 'error="token_rejected"' in answer.headers["WWW-Authenticate"]


@pytest.mark.parametrize("overrides, reason", [
    ({"resource_owner_secret": "wrong"}, "invalid signature"),
    ({"client_secret": "wrong"}, "invalid signature"),
    ({"realm": "1234567"}, "wrong realm"),
    ({"signature_method": SIGNATURE_HMAC_SHA1}, "unsupported signature method"),
    ({"client_key": "someone-else"}, "unknown consumer key"),
    ({"timestamp": str(int(time.time()) - 3600)}, "timestamp"),
])  # fmt: skip
def test_bad_tba_signatures_get_netsuites_401(account: AccountClient, overrides: dict[str, Any], reason: str) -> None:
    answer = account.call("GET", f"{RECORD}/customer/101", auth=signed(**overrides))
    assert_refused(answer)
    assert reason in account.login_audit()[-1]["reason"]


def test_a_replayed_nonce_is_refused(account: AccountClient) -> None:
    auth = signed(nonce="fixed-nonce-0001", timestamp=str(int(time.time())))
    assert account.call("GET", f"{RECORD}/customer/101", auth=auth).status_code == 200
    assert_refused(account.call("GET", f"{RECORD}/customer/101", auth=auth))
    assert "replay" in account.login_audit()[-1]["reason"]


def test_the_signature_covers_the_query_parameters(account: AccountClient, server: SandboxServer) -> None:
    session = requests.Session()
    request = requests.Request("POST", f"{server.url}/services/rest/query/v1/suiteql", params={"limit": 5, "offset": 0},
                               json={"q": "SELECT id FROM customer"}, headers={"Prefer": "transient"}, auth=signed())
    prepared = session.prepare_request(request)
    prepared.url = str(prepared.url).replace("limit=5", "limit=10")  # tampered with after signing
    assert_refused(session.send(prepared, timeout=10))
    untouched = session.prepare_request(request)  # the body is not signed: changing the JSON is allowed
    untouched.body = b'{"q": "SELECT id FROM contact"}'
    untouched.headers["Content-Length"] = str(len(untouched.body))
    assert session.send(untouched, timeout=10).status_code == 200


# --- OAuth 2.0 client credentials ---------------------------------------------------------------------------


def assertion(key: Any, url: str, *, alg: str = "ES256", kid: str = "cert-1", iss: str = "m2m-client",
              scope: Any = ("rest_webservices",), lifetime: int = 300) -> str:
    now = int(time.time())
    return jwt.encode({"iss": iss, "scope": list(scope), "aud": url, "iat": now, "exp": now + lifetime}, key,
                      algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def token_call(url: str, client_assertion: str) -> requests.Response:
    return requests.post(f"{url}{TOKEN_PATH}", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion}, timeout=10)


def pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_client_credentials_issue_bearer_tokens(account: AccountClient, vendor: NetSuiteSandbox,
                                                server: SandboxServer) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vendor.register_certificate("m2m-client", "cert-1", pem(ec_key))
    vendor.register_certificate("m2m-client", "cert-2", pem(rsa_key))
    aud = f"{server.url}{TOKEN_PATH}"
    for key, alg, kid in ((ec_key, "ES256", "cert-1"), (rsa_key, "PS256", "cert-2")):
        answer = token_call(server.url, assertion(key, aud, alg=alg, kid=kid))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"access_token", "expires_in", "token_type"}
        assert body["expires_in"] == "3600" and body["token_type"] == "bearer"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(f"{server.url}{RECORD}/customer/101", headers=bearer, timeout=10).status_code == 200
    account.control("expire-sessions")
    assert_refused(requests.get(f"{server.url}{RECORD}/customer/101", headers=bearer, timeout=10))


@pytest.mark.parametrize("change, error", [
    ({"kid": "unknown-cert"}, "invalid_client"),
    ({"iss": "someone-else"}, "invalid_client"),
    ({"alg": "RS256", "kid": "cert-rsa"}, "invalid_request"),  # NetSuite takes PSS or ECDSA only
    ({"aud": "https://example.org/token"}, "invalid_grant"),
    ({"scope": ("restlets",)}, "invalid_scope"),
    ({"lifetime": 7200}, "invalid_grant"),
])  # fmt: skip
def test_bad_client_assertions_are_refused(account: AccountClient, vendor: NetSuiteSandbox, server: SandboxServer,
                                           change: dict[str, Any], error: str) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    vendor.register_certificate("m2m-client", "cert-1", pem(ec_key))
    key: Any = ec_key
    if change.get("alg") == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        vendor.register_certificate("m2m-client", "cert-rsa", pem(key))
    aud = change.pop("aud", f"{server.url}{TOKEN_PATH}")
    answer = token_call(server.url, assertion(key, aud, **change))
    assert answer.status_code in (400, 401) and answer.json() == {"error": error}


# --- limits and faults ----------------------------------------------------------------------------------------


def test_concurrency_over_the_limit_is_answered_429() -> None:
    vendor = NetSuiteSandbox(max_concurrency=2)
    vendor.seed_demo(7)
    with SandboxServer(vendor) as small:
        client = AccountClient(small.url)
        client.control("faults", {"latency_ms": 150})
        barrier = threading.Barrier(6)

        def call(_: int) -> requests.Response:
            barrier.wait()
            return AccountClient(small.url).call("GET", f"{RECORD}/customer/101")

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(call, range(6)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 2 and 429 in statuses
        throttled = next(a for a in answers if a.status_code == 429)
        assert_error(throttled, 429, "CONCURRENCY_LIMIT_EXCEEDED")
        assert throttled.json()["title"] == "Too Many Requests"
        client.close()


def test_injected_faults_use_netsuites_bodies(account: AccountClient) -> None:
    account.control("faults", {"throttle_rate": 1.0, "burst": 1})
    assert_error(account.call("GET", f"{RECORD}/customer/101"), 429, "CONCURRENCY_LIMIT_EXCEEDED")
    account.control("faults", {"error_rate": 1.0, "burst": 1})
    assert_error(account.call("GET", f"{RECORD}/customer/101"), 503, "SERVICE_UNAVAILABLE")
    assert account.call("GET", f"{RECORD}/customer/101").status_code == 200
    assert_error(account.call("PUT", f"{RECORD}/customer/101", json={}), 405, "INVALID_METHOD")


# --- seed -------------------------------------------------------------------------------------------------------


def test_demo_seed_holds_the_subjects_and_decoys(account: AccountClient, vendor: NetSuiteSandbox) -> None:
    ada = account.rows(f"SELECT id, email FROM customer WHERE LOWER(email) = '{ERASURE_SUBJECT}' ORDER BY id")
    assert len(ada) == 2  # one with invoices and a payment, one (a web-shop sign-up) without transactions
    with_transactions = [r for r in ada if account.rows(f"SELECT id FROM transaction WHERE entity = {r['id']}")]
    assert len(with_transactions) == 1
    assert len(account.rows(f"SELECT id FROM contact WHERE LOWER(email) = '{ERASURE_SUBJECT}'")) == 1
    grace = account.rows(f"SELECT id FROM customer WHERE email = '{ACCESS_SUBJECT}'")
    assert len(grace) == 1 and len(account.rows(f"SELECT id FROM transaction WHERE entity = {grace[0]['id']}")) == 2
    for email in DECOY_EMAILS:
        literal = email.replace("'", "''")
        assert len(account.rows(f"SELECT id FROM customer WHERE email = '{literal}'")) == 1, email
    first = vendor.records("customer")
    vendor.seed_demo(7)
    assert vendor.records("customer") == first  # the same seed gives the same account
