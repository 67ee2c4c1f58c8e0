"""Salesforce's independent queries go out together, through the Composite resource: fewer calls against
the org's API quota, the same records in the same order, and the same failures as each query sent alone.

Real simple-salesforce over real HTTP against the sandbox org, whose Composite and Composite Batch
resources run each subrequest through its ordinary routes. "Alone" is the connector with one query per
Composite call (`COMPOSITE_QUERIES = 1`): every query then goes as a plain GET, as before batching.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest

import connectors.salesforce as salesforce_module
import connectors.salesforce.org as org_module
from connectors.base import ConnectorError, Subject
from connectors.pacing import forget_limiters
from connectors.salesforce import SalesforceConnector, create
from sandbox.kit import SandboxServer
from sandbox.salesforce import ACCESS_SUBJECT, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, OrgClient, SalesforceSandbox
from tests.test_salesforce_connector import OBJECTS, by_object, settings_for

SYSTEM = "sf"
GRACE = Subject(ACCESS_SUBJECT, "hash-grace")
MANY = "many.contacts@example.com"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SF_CLIENT_ID", DEMO_CLIENT_ID)
    monkeypatch.setenv("TEST_SF_CLIENT_SECRET", DEMO_CLIENT_SECRET)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SalesforceSandbox()) as running:
        yield running


@pytest.fixture
def org(server: SandboxServer) -> Iterator[OrgClient]:
    forget_limiters()
    client = OrgClient(server.url)
    client.control("reset")
    client.control("seed-demo", {"seed": 7})
    yield client
    client.close()


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A context in which the connector sends every query alone (one per call)."""
    @contextmanager
    def one_query_per_call() -> Iterator[None]:
        with monkeypatch.context() as patch:
            patch.setattr(org_module, "COMPOSITE_QUERIES", 1)
            patch.setattr(salesforce_module, "COMPOSITE_QUERIES", 1)
            yield
    return one_query_per_call


def connect(org: OrgClient, **overrides: Any) -> SalesforceConnector:
    return create(SYSTEM, settings_for(org.base_url, **overrides))


def calls_of(org: OrgClient, work: Any) -> tuple[Any, int]:
    """What `work()` returns and the API calls the org received meanwhile."""
    before = org.stats().get("calls", 0)
    result = work()
    return result, org.stats().get("calls", 0) - before  # control calls are not API calls


def discover_and_export(connector: SalesforceConnector, subject: Subject) -> tuple[list[Any], list[Any]]:
    refs = connector.discover(subject)
    return refs, list(connector.export(refs))


def seed_many(org: OrgClient) -> None:
    """A person behind 450 Contacts (three id lists of 200 per link), a Lead, and records hanging off both:
    each link level needs more queries than one Composite call takes."""
    individual = org.create("Individual", {"LastName": "Many"})
    contacts = org.create_many("Contact", [{"LastName": f"Many {n}", "Email": MANY, "IndividualId": individual}
                                           for n in range(450)])
    lead = org.create("Lead", {"LastName": "Many", "Company": "Many Ltd", "Email": MANY})
    org.create_many("Task", [{"WhoId": who, "Subject": f"call {n}"}
                             for n, who in enumerate([*contacts[::40], lead, contacts[-1]])])
    org.create_many("Event", [{"WhoId": who, "Subject": "visit", "DurationInMinutes": 30,
                               "StartDateTime": "2026-05-04T10:00:00.000+0000",
                               "EndDateTime": "2026-05-04T10:30:00.000+0000"} for who in (contacts[0], lead)])
    # Found twice (by its contact and by the address given on it): listed once.
    org.create("Case", {"ContactId": contacts[7], "SuppliedEmail": MANY, "Subject": "both ways"})
    org.create("Case", {"ContactId": contacts[300], "Subject": "by contact"})


# --- the connector -------------------------------------------------------------------------------------------


def test_a_subject_found_through_parent_links_comes_out_the_same_in_fewer_calls(org: OrgClient, alone: Any) -> None:
    seed_many(org)
    subject = Subject(MANY, "hash-many")
    with connect(org) as warm:
        warm.discover(GRACE)  # describes and login out of the way
    with alone(), connect(org) as connector:
        (single_refs, single_records), single_calls = calls_of(org, lambda: discover_and_export(connector, subject))
    with connect(org) as connector:
        (refs, records), calls = calls_of(org, lambda: discover_and_export(connector, subject))
    assert refs == single_refs and records == single_records  # same records, same order
    assert by_object(refs) == {"Contact": 450, "Lead": 1, "Case": 2, "Task": 14, "Event": 2, "Individual": 1}
    # Alone: 3 e-mail queries; then 3 id lists for each of 4 links from Contacts, 1 query for each of 3
    # links from the Lead, 1 for the one Individual the Contacts point at; then 3 + 5 export queries.
    assert single_calls == 3 + (12 + 3 + 1) + 8
    # Together: the e-mail level in 1 call, the link level's 16 queries in 4, the 8 exports in 2.
    assert calls == 1 + 4 + 2


def test_the_demo_access_subject_takes_5_calls_where_it_took_19(org: OrgClient, alone: Any) -> None:
    with connect(org) as warm:
        warm.discover(GRACE)
    with alone(), connect(org) as connector:
        _, single_calls = calls_of(org, lambda: list(connector.export(connector.discover(GRACE))))
    with connect(org) as connector:
        connector.discover(GRACE)
        before = connector.stats["api_usage"]  # as the org's last answer said
        records, calls = calls_of(org, lambda: list(connector.export(connector.discover(GRACE))))
        quota_used = connector.stats["api_usage"] - before
    assert single_calls == 19 and calls == 5
    assert quota_used == 5  # a Composite call is one unit of the org's daily quota, whatever it holds
    assert {record.ref.object for record in records} >= {"Contact", "Lead", "Case", "Task", "Individual"}


def test_a_malformed_subrequest_fails_as_the_query_alone_does(org: OrgClient, alone: Any) -> None:
    objects = {**OBJECTS, "Lead": {**OBJECTS["Lead"], "match": {"field": "IsConverted"}}}  # a boolean = an address
    failures = []
    for mode in (alone, _nothing):
        with mode(), connect(org, objects=objects) as connector:
            with pytest.raises(ConnectorError) as failure:
                connector.discover(GRACE)
            failures.append((str(failure.value), connector.stats.get("retries", 0)))
    assert failures[0] == failures[1]
    message, retries = failures[1]
    assert "discover of object 'Lead' failed (HTTP 400, INVALID_QUERY_FILTER_OPERATOR)" in message
    assert ACCESS_SUBJECT not in message and retries == 0


@pytest.mark.parametrize("status, code, message, counters", [
    (503, "SERVER_UNAVAILABLE", None, {"retries": 1, "server_errors": 1}),
    (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", {"retries": 1, "throttled": 1}),
    (401, "INVALID_SESSION_ID", "Session expired or invalid", {"logins": 2}),  # the SDK's own or ours
])  # fmt: skip
def test_a_failing_subrequest_is_retried_as_the_query_alone_is(org: OrgClient, alone: Any, status: int, code: str,
                                                               message: str | None, counters: dict[str, int]) -> None:
    """Case's first query (by the address given on a case: a subrequest of the e-mail level's Composite call)
    fails once: retried, or the session renewed, as when it went alone; the same records come back."""
    outcomes = []
    for mode in (alone, _nothing):
        forget_limiters()  # a fresh login for each mode
        with mode(), connect(org) as connector:
            connector.discover(GRACE)
            org.control("fail-queries", {"object": "Case", "status": status, "errorCode": code,
                                         "message": message, "times": 1})
            refs = connector.discover(GRACE)
            stats = connector.stats
            outcomes.append((refs, {key: stats.get(key, 0) for key in counters}))
    assert outcomes[0] == outcomes[1]
    refs, seen = outcomes[1]
    assert seen == counters and by_object(refs)["Case"] >= 1


def test_the_daily_quota_used_up_in_a_subrequest_is_named_as_alone(org: OrgClient, alone: Any) -> None:
    failures = []
    for mode in (alone, _nothing):
        with mode(), connect(org, retry_attempts=2) as connector:
            org.control("fail-queries", {"object": "Case", "status": 403, "errorCode": "REQUEST_LIMIT_EXCEEDED",
                                         "message": "TotalRequests Limit exceeded.", "times": 2})
            with pytest.raises(ConnectorError) as failure:
                connector.discover(GRACE)
            failures.append(str(failure.value))
    assert failures[0] == failures[1]
    assert "discover of object 'Case' failed (HTTP 403, REQUEST_LIMIT_EXCEEDED: the org's daily API quota is used " \
           "up after 2 attempts)" in failures[1]


def test_a_session_expired_at_a_composite_call_logs_in_again(org: OrgClient) -> None:
    with connect(org) as connector:
        found = connector.discover(GRACE)
        org.control("faults", {"expire_rate": 1.0, "burst": 1, "path_pattern": "/composite$"})
        assert connector.discover(GRACE) == found
        assert connector.stats["logins"] == 2 and org.stats()["logins"] == 2


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# --- the sandbox's composite resources ----------------------------------------------------------------------------


def _query_url(soql: str, *, prefix: str = "/services/data/") -> str:
    return f"{prefix}v62.0/query/?q={quote(soql)}"


def _usage(answer: Any) -> int:
    return int(answer.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])


def test_composite_counts_once_and_composite_batch_once_per_subrequest(org: OrgClient) -> None:
    soql = [f"SELECT Id FROM {name} LIMIT 1" for name in ("Contact", "Lead", "Case")]
    start = _usage(org.call("GET", "limits/"))
    together = org.call("POST", "composite", json={"compositeRequest": [
        {"method": "GET", "url": _query_url(q), "referenceId": f"r{n}"} for n, q in enumerate(soql)]})
    assert together.status_code == 200 and _usage(together) == start + 1
    assert [r["referenceId"] for r in together.json()["compositeResponse"]] == ["r0", "r1", "r2"]
    assert all(r["httpStatusCode"] == 200 and r["body"]["done"] for r in together.json()["compositeResponse"])
    batch = org.call("POST", "composite/batch", json={"batchRequests": [
        {"method": "GET", "url": _query_url(q, prefix="")} for q in soql]})
    assert batch.status_code == 200 and batch.json()["hasErrors"] is False
    assert _usage(batch) == start + 1 + 1 + len(soql)  # the batch call, and each subrequest


def test_a_subrequest_answers_as_the_same_call_alone(org: OrgClient) -> None:
    bad = "SELECT Id FROM Contact WHERE Nope = 1"
    direct = org.call("GET", "query/", params={"q": bad})
    together = org.call("POST", "composite", json={"compositeRequest": [
        {"method": "GET", "url": _query_url(bad), "referenceId": "bad"},
        {"method": "GET", "url": _query_url("SELECT Id FROM Lead LIMIT 1"), "referenceId": "good"}]})
    first, second = together.json()["compositeResponse"]
    assert (first["httpStatusCode"], first["body"]) == (direct.status_code, direct.json()) == (400, direct.json())
    assert second["httpStatusCode"] == 200  # allOrNone false: the others still run
    batch = org.call("POST", "composite/batch", json={"haltOnError": True, "batchRequests": [
        {"method": "GET", "url": _query_url(bad, prefix="")},
        {"method": "GET", "url": "v62.0/limits"}]}).json()
    assert batch["hasErrors"] is True
    assert [(r["statusCode"], r["result"][0]["errorCode"]) for r in batch["results"]] == [
        (400, "INVALID_FIELD"), (412, "BATCH_PROCESSING_HALTED")]


def test_all_or_none_rolls_back_every_change_of_the_call(org: OrgClient) -> None:
    contact = org.query("SELECT Id, LastName FROM Contact LIMIT 1")[0]
    answer = org.call("POST", "composite", json={"allOrNone": True, "compositeRequest": [
        {"method": "PATCH", "url": f"/services/data/v62.0/sobjects/Contact/{contact['Id']}",
         "referenceId": "rename", "body": {"LastName": "Renamed"}},
        {"method": "PATCH", "url": f"/services/data/v62.0/sobjects/Contact/{contact['Id']}",
         "referenceId": "broken", "body": {"NoSuchField": 1}}]}).json()["compositeResponse"]
    assert [(r["httpStatusCode"], r["body"][0]["errorCode"]) for r in answer] == [
        (400, "PROCESSING_HALTED"), (400, "INVALID_FIELD")]
    assert org.query(f"SELECT LastName FROM Contact WHERE Id = '{contact['Id']}'")[0]["LastName"] == \
        contact["LastName"]


@pytest.mark.parametrize("resource, body, code", [
    ("composite/batch", {"batchRequests": [{"method": "GET", "url": "v62.0/limits"}] * 26}, "LIMIT_EXCEEDED"),
    ("composite", {"compositeRequest": [{"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": "x"}]},
     "INVALID_INPUT"),  # limits is not one of the resources Composite runs
    ("composite", {"compositeRequest": [{"method": "GET", "url": _query_url(f"SELECT Id FROM Lead LIMIT {n}"),
                                         "referenceId": f"q{n}"} for n in range(1, 7)]}, "LIMIT_EXCEEDED"),
    ("composite/batch", {"batchRequests": [{"method": "HEAD", "url": "v62.0/limits"}]}, "INVALID_INPUT"),
    ("composite/batch", {"batchRequests": [{"method": "get", "url": "v62.0/limits"}]}, "INVALID_INPUT"),
    ("composite/batch", {"batchRequests": [{"method": "GET", "url": "v99.0/limits"}]}, "INVALID_INPUT"),
])  # fmt: skip
def test_a_request_the_resource_cannot_run_is_refused_whole(org: OrgClient, resource: str, body: dict[str, Any],
                                                            code: str) -> None:
    before = org.stats().get("subrequests", 0)
    answer = org.call("POST", resource, json=body)
    assert answer.status_code == 400 and answer.json()[0]["errorCode"] == code
    assert org.stats().get("subrequests", 0) == before  # nothing ran
