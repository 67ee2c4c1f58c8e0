"""The Salesforce sandbox speaks Salesforce's wire formats (shared/reference/vendor-apis.md, section 1).

Plain `requests` only: these are contract tests of paths, methods, status codes and JSON bodies, the
things simple-salesforce relies on (error arrays, `nextRecordsUrl` as a path, 201 on a Bulk upload).
"""

from __future__ import annotations

import base64
import csv
import io
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.kit import SandboxServer
from sandbox.salesforce import (
    DECOY_EMAILS,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_INSTANCE_URL,
    DEMO_JWT_USERNAME,
    ERASURE_SUBJECT,
    OrgClient,
    SalesforceSandbox,
    to_18,
)

TOKEN = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SalesforceSandbox()) as running:
        yield running


@pytest.fixture
def org(server: SandboxServer) -> Iterator[OrgClient]:
    """The demo org, freshly seeded, with no faults or refusals left over."""
    client = OrgClient(server.url)
    client.control("reset")
    client.control("seed-demo", {"seed": 7})
    yield client
    client.close()
    server.vendor.jwt_public_key = None  # type: ignore[attr-defined]


def errors_of(answer: requests.Response) -> list[dict[str, str]]:
    body = answer.json()
    assert isinstance(body, list) and body, f"Salesforce errors are a JSON array, got {body!r}"
    return body


def ada_contact(org: OrgClient) -> str:
    return str(org.query(f"SELECT Id FROM Contact WHERE Email = '{ERASURE_SUBJECT}'")[0]["Id"])


# --- OAuth ----------------------------------------------------------------------------------------------


def test_client_credentials_token_has_the_documented_shape(org: OrgClient) -> None:
    basic = base64.b64encode(f"{DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET}".encode()).decode()
    answer = requests.post(f"{org.base_url}{TOKEN}", data={"grant_type": "client_credentials"},
                           headers={"Authorization": f"Basic {basic}"}, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert body["instance_url"] == DEMO_INSTANCE_URL and body["token_type"] == "Bearer"
    assert body["access_token"].startswith("00D") and "!" in body["access_token"]
    assert body["issued_at"].isdigit() and body["id"].startswith("https://login.salesforce.com/id/")
    assert {"signature", "scope", "token_format"} <= set(body)


@pytest.mark.parametrize("form, auth, error", [
    ({"grant_type": "client_credentials"}, (DEMO_CLIENT_ID, "wrong"), "invalid_client"),
    ({"grant_type": "client_credentials"}, ("someone-else", DEMO_CLIENT_SECRET), "invalid_client_id"),
    ({"grant_type": "password", "username": "u", "password": "p"}, None, "unsupported_grant_type"),
    ({}, None, "invalid_request"),
])  # fmt: skip
def test_token_errors_are_oauth_json(org: OrgClient, form: dict[str, str], auth: tuple[str, str] | None,
                                     error: str) -> None:
    answer = requests.post(f"{org.base_url}{TOKEN}", data=form, auth=auth, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"] == error and answer.json()["error_description"]


def test_jwt_bearer_checks_signature_and_claims(org: OrgClient, server: SandboxServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server.vendor.jwt_public_key = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = {"iss": DEMO_CLIENT_ID, "sub": DEMO_JWT_USERNAME, "aud": "https://login.salesforce.com",
            "exp": f"{(datetime.now(UTC) + timedelta(minutes=3)).timestamp():.0f}"}  # a string, as simple-salesforce sends

    def login(claims: dict[str, str], signer: rsa.RSAPrivateKey = key) -> requests.Response:
        assertion = jwt.encode(claims, signer, algorithm="RS256")
        return requests.post(f"{org.base_url}{TOKEN}", data={"grant_type": JWT_GRANT, "assertion": assertion},
                             timeout=5)

    assert login(good).status_code == 200
    assert login({**good, "aud": f"https://{DEMO_DOMAIN}.salesforce.com"}).status_code == 200
    expired = f"{(datetime.now(UTC) - timedelta(minutes=1)).timestamp():.0f}"
    refusals = [login(good, other), login({**good, "aud": "https://evil.example"}), login({**good, "exp": expired}),
                login({**good, "sub": "intruder@example.com"}), login({**good, "iss": "another-app"})]
    assert [r.status_code for r in refusals] == [400] * 5
    assert [r.json()["error"] for r in refusals] == [
        "invalid_grant", "invalid_grant", "invalid_grant", "invalid_grant", "invalid_client_id"]


def test_soap_login_is_answered_as_retired(org: OrgClient) -> None:
    answer = requests.post(f"{org.base_url}/services/Soap/u/62.0", data="<env/>", timeout=5,
                           headers={"content-type": "text/xml", "SOAPAction": "login"})
    assert answer.status_code == 500 and "<sf:exceptionCode>UNSUPPORTED_API_VERSION" in answer.text


# --- queries ----------------------------------------------------------------------------------------------


def test_query_answers_with_and_without_trailing_slash_and_reports_usage(org: OrgClient) -> None:
    soql = f"SELECT Id, Email FROM Contact WHERE Email = '{ERASURE_SUBJECT}'"
    for path in ("query/", "query"):
        answer = org.call("GET", path, params={"q": soql})
        assert answer.status_code == 200
        body = answer.json()
        assert body["totalSize"] == 1 and body["done"] is True and "nextRecordsUrl" not in body
        record = body["records"][0]
        assert record["Email"] == "Ada.Lovelace@Example.com"  # stored as entered; matched case-insensitively
        assert record["attributes"] == {"type": "Contact", "url": f"/services/data/v62.0/sobjects/Contact/{record['Id']}"}
        assert re.fullmatch(r"api-usage=\d+/15000", answer.headers["Sforce-Limit-Info"])
    limits = org.call("GET", "limits/").json()["DailyApiRequests"]
    assert limits["Max"] == 15000 and 0 < limits["Remaining"] < 15000


def test_paging_gives_2000_records_a_page_and_next_records_url_as_a_path(org: OrgClient) -> None:
    contact = org.create("Contact", {"LastName": "Pager", "Email": "pager@example.com"})
    org.create_many("Task", [{"WhoId": contact, "Subject": f"call {n}"} for n in range(2300)])
    first = org.call("GET", "query/", params={"q": f"SELECT Id FROM Task WHERE WhoId = '{contact}'"}).json()
    assert first["totalSize"] == 2300 and first["done"] is False and len(first["records"]) == 2000
    next_url = first["nextRecordsUrl"]
    assert re.fullmatch(r"/services/data/v62\.0/query/01g\w+-2000", next_url)  # a path: clients prepend the host
    second = org.call("GET", next_url).json()
    assert second["done"] is True and len(second["records"]) == 300 and "nextRecordsUrl" not in second
    assert {r["Id"] for r in first["records"]}.isdisjoint(r["Id"] for r in second["records"])


def test_query_all_includes_the_recycle_bin(org: OrgClient) -> None:
    contact = org.create("Contact", {"LastName": "Binned", "Email": "binned@example.com"})
    assert org.call("DELETE", f"sobjects/Contact/{contact}").status_code == 204
    soql = "SELECT Id, IsDeleted FROM Contact WHERE Email = 'binned@example.com'"
    assert org.query(soql) == []
    assert [r["IsDeleted"] for r in org.query(soql, include_deleted=True)] == [True]


def test_soql_string_literals_are_unescaped_exactly(org: OrgClient) -> None:
    obrien = org.create("Contact", {"LastName": "O'Brien", "Email": "o'brien@example.com"})
    slash = org.create("Contact", {"LastName": "back\\slash", "Email": "back\\slash@example.com"})

    def ids(where: str) -> list[str]:
        return [r["Id"] for r in org.query(f"SELECT Id FROM Contact WHERE {where}")]

    assert ids(r"Email = 'o\'brien@example.com'") == [obrien]  # \' is a quote inside the literal, not its end
    assert ids(r"LastName = 'back\\slash'") == [slash]
    assert ids(r"Email = 'x@example.com\' OR Email != \''") == []  # escaped: one literal, no OR
    assert len(ids("Email = 'x@example.com' OR Email != ''")) > 50  # unescaped, it would widen to everyone
    assert len(ids("Email = '%@example.com'")) == 1  # % is a character here: no LIKE semantics
    assert ids("Email = 'ADA.LOVELACE@EXAMPLE.COM'") == ids(f"Email = '{ERASURE_SUBJECT}'") != []
    for decoy in ("ada.lovelace@example.com.attacker.test", "xada.lovelace@example.com"):
        assert ids(f"Email = '{decoy}'") != ids(f"Email = '{ERASURE_SUBJECT}'")
    for bad in (r"Email = 'a\qb'", "Email = 'open", "Email = 'a' AND LastName = 'b' OR Id = null",
                "Email LIKE 'ada%'"):
        answer = org.call("GET", "query/", params={"q": f"SELECT Id FROM Contact WHERE {bad}"})
        assert answer.status_code == 400 and errors_of(answer)[0]["errorCode"] == "MALFORMED_QUERY", bad


def test_soql_comparisons_in_lists_and_limits(org: OrgClient) -> None:
    old = org.create("Contact", {"LastName": "Old", "Email": "old@example.com",
                                 "LastModifiedDate": "2017-05-01T08:00:00.000+0000"})
    soql = "SELECT Id FROM Contact WHERE LastModifiedDate < {} AND Email IN ('old@example.com', 'nobody@example.com')"
    for literal in ("2018-01-01T00:00:00Z", "2018-01-01T00:00:00+00:00", "2018-01-01T00:00:00.000+0000"):
        assert [r["Id"] for r in org.query(soql.format(literal))] == [old]
    assert len(org.query("SELECT Id FROM Contact ORDER BY LastModifiedDate DESC LIMIT 3")) == 3
    quoted = org.call("GET", "query/", params={"q": "SELECT Id FROM Contact WHERE LastModifiedDate < '2018-01-01'"})
    assert quoted.status_code == 400 and errors_of(quoted)[0]["errorCode"] == "INVALID_QUERY_FILTER_OPERATOR"


# --- errors -----------------------------------------------------------------------------------------------


def test_errors_are_json_arrays(org: OrgClient) -> None:
    no_session = requests.get(f"{org.api}/query/", params={"q": "SELECT Id FROM Contact"}, timeout=5)
    assert no_session.status_code == 401
    assert errors_of(no_session) == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]

    missing = org.call("GET", "sobjects/Contact/003000000000000AAA")
    assert missing.status_code == 404 and errors_of(missing)[0]["errorCode"] == "NOT_FOUND"
    contact = ada_contact(org)
    for case in org.query(f"SELECT Id FROM Case WHERE ContactId = '{contact}'"):
        org.call("DELETE", f"sobjects/Case/{case['Id']}")
    assert org.call("DELETE", f"sobjects/Contact/{contact}").status_code == 204
    deleted = org.call("GET", f"sobjects/Contact/{contact}")
    assert deleted.status_code == 404 and errors_of(deleted)[0]["errorCode"] == "ENTITY_IS_DELETED"
    again = org.call("DELETE", f"sobjects/Contact/{contact}")
    assert again.status_code == 404 and errors_of(again)[0]["errorCode"] == "ENTITY_IS_DELETED"

    for soql, code in (("SELECT Id FROM Nothing", "INVALID_TYPE"), ("SELECT Emial FROM Contact", "INVALID_FIELD"),
                       ("SELECT FROM Contact", "MALFORMED_QUERY")):
        answer = org.call("GET", "query/", params={"q": soql})
        assert answer.status_code == 400 and errors_of(answer)[0]["errorCode"] == code
    assert errors_of(org.call("POST", "limits/"))[0]["errorCode"] == "METHOD_NOT_ALLOWED"
    assert errors_of(org.call("GET", "sobjects/Nothing/describe"))[0]["errorCode"] == "NOT_FOUND"


def test_create_validates_like_salesforce(org: OrgClient) -> None:
    answer = org.call("POST", "sobjects/Contact/", json={"LastName": "Babbage", "Email": "charles@example.com"})
    assert answer.status_code == 201
    assert answer.json() == {"id": answer.json()["id"], "success": True, "errors": []}
    new_id = answer.json()["id"]
    assert org.call("PATCH", f"sobjects/Contact/{new_id}", json={"Title": "Engineer"}).status_code == 204
    assert org.call("GET", f"sobjects/Contact/{new_id}").json()["Title"] == "Engineer"
    cases = {
        "REQUIRED_FIELD_MISSING": {"FirstName": "Charles"},
        "STRING_TOO_LONG": {"LastName": "B", "FirstName": "x" * 41},
        "INVALID_EMAIL_ADDRESS": {"LastName": "B", "Email": "[erased]"},
        "INVALID_FIELD": {"LastName": "B", "Nickname": "C"},
        "INVALID_FIELD_FOR_INSERT_UPDATE": {"LastName": "B", "Name": "Charles B"},
    }
    for code, fields in cases.items():
        refused = org.call("POST", "sobjects/Contact/", json=fields)
        assert refused.status_code == 400 and errors_of(refused)[0]["errorCode"] == code, code
    assert errors_of(org.call("POST", "sobjects/Contact/", json={"LastName": "B", "FirstName": "x" * 41}))[0][
        "fields"] == ["FirstName"]


# --- sObject Collections -----------------------------------------------------------------------------------


def test_collection_delete_reports_each_id_in_order(org: OrgClient) -> None:
    ok, refused, gone = (org.create("Contact", {"LastName": n, "Email": f"{n}@example.com"}) for n in "abc")
    org.call("DELETE", f"sobjects/Contact/{gone}")
    org.control("refuse-delete", {"ids": [refused], "statusCode": "DELETE_FAILED"})
    answer = org.call("DELETE", "composite/sobjects", params={"ids": f"{ok},{refused},{gone},bad", "allOrNone": "false"})
    assert answer.status_code == 200
    results = answer.json()
    assert results[0] == {"id": ok, "success": True, "errors": []}
    assert [r["success"] for r in results] == [True, False, False, False]
    assert [r["errors"][0]["statusCode"] for r in results[1:]] == ["DELETE_FAILED", "ENTITY_IS_DELETED", "MALFORMED_ID"]
    assert all(set(e) == {"statusCode", "message", "fields"} for r in results[1:] for e in r["errors"])
    too_many = org.call("DELETE", "composite/sobjects", params={"ids": ",".join([ok] * 201)})
    assert too_many.status_code == 400 and errors_of(too_many)[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_collection_all_or_none_rolls_everything_back(org: OrgClient) -> None:
    keep, refused = (org.create("Contact", {"LastName": n, "Email": f"{n}@example.com"}) for n in "de")
    org.control("refuse-delete", {"ids": [refused]})
    results = org.call("DELETE", "composite/sobjects", params={"ids": f"{keep},{refused}", "allOrNone": "true"}).json()
    assert [r["errors"][0]["statusCode"] for r in results] == ["ALL_OR_NONE_OPERATION_ROLLED_BACK", "DELETE_FAILED"]
    assert len(org.query(f"SELECT Id FROM Contact WHERE Id IN ('{keep}', '{refused}')")) == 2


def test_a_contact_with_open_cases_cannot_be_deleted(org: OrgClient) -> None:
    answer = org.call("DELETE", f"sobjects/Contact/{ada_contact(org)}")
    assert answer.status_code == 400 and errors_of(answer)[0]["errorCode"] == "DELETE_FAILED"


# --- Bulk API 2.0 --------------------------------------------------------------------------------------------


def test_bulk_hard_delete_job_lifecycle(org: OrgClient, server: SandboxServer) -> None:
    live, gone = (org.create("Lead", {"LastName": n, "Company": "X", "Email": f"{n}@example.com"}) for n in "fg")
    org.call("DELETE", f"sobjects/Lead/{gone}")
    job = org.call("POST", "jobs/ingest", json={"operation": "hardDelete", "object": "Lead", "contentType": "CSV",
                                                 "columnDelimiter": "COMMA", "lineEnding": "LF"})
    assert job.status_code == 200
    created = job.json()
    assert created["state"] == "Open" and created["operation"] == "hardDelete" and created["jobType"] == "V2Ingest"
    assert created["id"].startswith("750") and created["contentUrl"].endswith(f"/jobs/ingest/{created['id']}/batches")
    path = f"jobs/ingest/{created['id']}"
    upload = org.call("PUT", f"{path}/batches", data=f"Id\n{live}\n{gone}\n",
                      headers={"Content-Type": "text/csv; charset=UTF-8"})
    assert upload.status_code == 201 and upload.content == b""
    closed = org.call("PATCH", path, json={"state": "UploadComplete"})
    assert closed.status_code == 200 and closed.json()["state"] == "UploadComplete"
    assert org.call("PUT", f"{path}/batches", data="Id\n", headers={"Content-Type": "text/csv"}).status_code == 409
    states = [org.call("GET", path).json() for _ in range(2)]
    assert [s["state"] for s in states] == ["InProgress", "JobComplete"]
    assert states[-1]["numberRecordsProcessed"] == 2 and states[-1]["numberRecordsFailed"] == 1
    ok = list(csv.DictReader(io.StringIO(org.call("GET", f"{path}/successfulResults/").text)))
    failed = list(csv.DictReader(io.StringIO(org.call("GET", f"{path}/failedResults/").text)))
    unprocessed = org.call("GET", f"{path}/unprocessedrecords/").text
    assert [r["Id"] for r in ok] == [live] and ok[0]["sf__Created"] == "false"
    assert [(r["Id"], r["sf__Error"].split(":")[0]) for r in failed] == [(gone, "ENTITY_IS_DELETED")]
    assert unprocessed.strip() == '"Id"'
    assert server.vendor.is_purged(live)  # type: ignore[attr-defined]
    assert org.query(f"SELECT Id FROM Lead WHERE Id = '{live}'", include_deleted=True) == []  # skipped the bin
    assert org.call("DELETE", path).status_code == 204


def test_bulk_job_with_a_wrong_csv_header_fails(org: OrgClient) -> None:
    job = org.call("POST", "jobs/ingest", json={"operation": "delete", "object": "Lead"}).json()
    path = f"jobs/ingest/{job['id']}"
    assert org.call("PUT", f"{path}/batches", data="Email\nx@example.com\n",
                    headers={"Content-Type": "text/csv"}).status_code == 201
    org.call("PATCH", path, json={"state": "UploadComplete"})
    states = [org.call("GET", path).json() for _ in range(2)]
    assert states[-1]["state"] == "Failed" and "InvalidBatch" in states[-1]["errorMessage"]


# --- limits and faults ------------------------------------------------------------------------------------------


def test_daily_quota_is_enforced_with_the_vendor_answer() -> None:
    with SandboxServer(SalesforceSandbox(daily_quota=5)) as small:
        client = OrgClient(small.url)
        answers = [client.call("GET", "limits/") for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 5 + [403]
        assert answers[1].json()["DailyApiRequests"] == {"Max": 5, "Remaining": 3}
        assert errors_of(answers[-1]) == [{"message": "TotalRequests Limit exceeded.",
                                           "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        assert answers[-1].headers["Sforce-Limit-Info"] == "api-usage=5/5"
        client.control("reset")  # forgets the 24-hour window
        assert client.call("GET", "limits/").status_code == 200
        client.close()


def test_concurrent_long_calls_are_capped() -> None:
    vendor = SalesforceSandbox(max_long_calls=1, long_call_seconds=0.05)
    with SandboxServer(vendor) as capped:
        client = OrgClient(capped.url)
        client.token()
        client.control("faults", {"latency_ms": 400, "path_pattern": "/limits"})
        first: list[int] = []
        worker = threading.Thread(target=lambda: first.append(client.call("GET", "limits/").status_code))
        worker.start()
        time.sleep(0.15)
        second = requests.get(f"{client.api}/sobjects/", headers={"Authorization": f"Bearer {client.token()}"},
                              timeout=5)
        worker.join()
        assert first == [200] and second.status_code == 403
        assert errors_of(second)[0] == {"message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                                        "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        assert client.call("GET", "sobjects/").status_code == 200
        client.close()


def test_injected_faults_take_salesforce_shapes(org: OrgClient) -> None:
    org.token()
    org.control("faults", {"expire_rate": 1.0, "burst": 1, "path_pattern": "/services/data/"})
    expired = org.call("GET", "limits/")
    assert expired.status_code == 401 and errors_of(expired)[0]["errorCode"] == "INVALID_SESSION_ID"
    assert org.call("GET", "limits/").status_code == 401  # the session really ended
    assert org.call("GET", "limits/", headers={"Authorization": f"Bearer {org.token(fresh=True)}"}).status_code == 200

    org.control("faults", {"throttle_rate": 1.0, "burst": 1, "path_pattern": "/services/data/"})
    throttled = org.call("GET", "limits/")
    assert throttled.status_code == 403 and errors_of(throttled)[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    org.control("faults", {"error_rate": 1.0, "burst": 1, "path_pattern": "/services/data/"})
    failed = org.call("GET", "limits/")
    assert failed.status_code == 503 and errors_of(failed)[0]["errorCode"] == "SERVER_UNAVAILABLE"
    org.control("faults", {"error_rate": 1.0, "burst": 1, "path_pattern": "/oauth2/"})
    login_outage = requests.post(f"{org.base_url}{TOKEN}", data={"grant_type": "client_credentials"}, timeout=5)
    assert login_outage.status_code == 503 and login_outage.headers["Content-Type"] == "text/html"
    assert org.stats()["fault_error"] == 2
    assert org.control("expire-sessions")["expired"] >= 1
    assert org.call("GET", "limits/").status_code == 401


# --- seed and ids ------------------------------------------------------------------------------------------------


def test_seed_demo_holds_the_subjects_and_decoys(org: OrgClient) -> None:
    counts = org.control("seed-demo", {"seed": 7})["seeded"]
    assert counts["Contact"] >= 50 + 2 + len(DECOY_EMAILS)
    ada = org.query(f"SELECT Id, Email, IndividualId FROM Contact WHERE Email = '{ERASURE_SUBJECT}'")
    assert [r["Email"] for r in ada] == ["Ada.Lovelace@Example.com"] and ada[0]["IndividualId"]
    for decoy in DECOY_EMAILS:
        escaped = decoy.replace("\\", "\\\\").replace("'", "\\'")
        assert len(org.query(f"SELECT Id FROM Contact WHERE Email = '{escaped}'")) == 1, decoy
    for child in ("Case", "Task", "Event", "CampaignMember"):
        link = "ContactId" if child in ("Case", "CampaignMember") else "WhoId"
        assert org.query(f"SELECT Id FROM {child} WHERE {link} = '{ada[0]['Id']}'"), child
    again = org.control("seed-demo", {"seed": 7})["seeded"]
    assert again == counts
    stored = requests.get(f"{org.base_url}/__sandbox__/records/individual", timeout=5).json()["records"]
    assert len(stored) == counts["Individual"] and all(r["attributes"]["type"] == "Individual" for r in stored)


def test_ids_are_18_characters_and_case_safe() -> None:
    assert to_18("0038d0000000006") == "0038d0000000006AAA"
    assert to_18("00Q8d0000000007") == "00Q8d0000000007EAA"
    assert to_18("00q8d0000000007eaa") == "00Q8d0000000007EAA"  # the suffix restores lost capitals
