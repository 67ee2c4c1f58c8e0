"""The Salesforce connector, through the real simple-salesforce, over real HTTP, against the sandbox.

Nothing is mocked: the connector logs in with OAuth, pages queries, deletes through sObject
Collections and Bulk API 2.0, and meets injected throttling, expired sessions and outages the way it
would meet them in an org.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import connectors.salesforce as salesforce_module
from connectors.base import ConnectorConfigError, ConnectorError, DataCategory, ErasureAction, ErasureDecision, Subject
from connectors.pacing import forget_limiters
from connectors.registry import build_connector
from connectors.salesforce import SalesforceConnector, create
from connectors.salesforce.session import OutsideSandbox
from sandbox.kit import SandboxServer
from sandbox.salesforce import (
    ACCESS_SUBJECT,
    DECOY_EMAILS,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_INSTANCE_URL,
    DEMO_JWT_USERNAME,
    ERASURE_SUBJECT,
    OrgClient,
    SalesforceSandbox,
)

SYSTEM = "sf"
ADA = Subject(ERASURE_SUBJECT, "hash-ada")
GRACE = Subject(ACCESS_SUBJECT, "hash-grace")

OBJECTS: dict[str, Any] = {
    "Contact": {"match": {"field": "Email"}, "categories": ["identity", "contact"],
                "anonymise": {"LastName": "[erased]", "FirstName": None, "Email": None, "Phone": None,
                              "MailingStreet": None}},
    "Lead": {"match": {"field": "Email"}, "categories": ["identity", "contact", "marketing"]},
    "CampaignMember": {"match": [{"parent": "Contact", "field": "ContactId"}, {"parent": "Lead", "field": "LeadId"}],
                       "categories": ["marketing"]},
    "Case": {"match": [{"parent": "Contact", "field": "ContactId"}, {"field": "SuppliedEmail"}],
             "categories": ["profile", "usage"]},
    "Task": {"match": [{"parent": "Contact", "field": "WhoId"}, {"parent": "Lead", "field": "WhoId"}],
             "categories": ["usage"], "anchor_date": "ActivityDate"},
    "Event": {"match": [{"parent": "Contact", "field": "WhoId"}, {"parent": "Lead", "field": "WhoId"}],
              "categories": ["usage"]},
    "Individual": {"match": [{"parent": "Contact", "field": "IndividualId", "reverse": True},
                             {"parent": "Lead", "field": "IndividualId", "reverse": True}],
                   "categories": ["marketing"], "optional": True},
}  # fmt: skip


def settings_for(url: str, **overrides: Any) -> dict[str, Any]:
    """The demo data map aimed at a sandbox, with fast pacing and retries for tests."""
    base: dict[str, Any] = {
        "instance_url": DEMO_INSTANCE_URL,
        "endpoint_override": url,
        "api_version": "62.0",
        "auth": {"flow": "client_credentials", "domain": DEMO_DOMAIN, "client_id_env": "TEST_SF_CLIENT_ID",
                 "client_secret_env": "TEST_SF_CLIENT_SECRET"},
        "rate_limit": {"calls": 2000, "period_seconds": 1},
        "retry_max_wait": 0.01,
        "bulk_poll_seconds": 0.01,
        "objects": copy.deepcopy(OBJECTS),
    }
    base.update(overrides)
    return base


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
    forget_limiters()  # the org is reset: this process's sessions and budgets for it go too
    client = OrgClient(server.url)
    client.control("reset")
    client.control("seed-demo", {"seed": 7})
    yield client
    client.close()
    server.vendor.jwt_public_key = None  # type: ignore[attr-defined]


@pytest.fixture
def vendor(server: SandboxServer) -> SalesforceSandbox:
    return server.vendor  # type: ignore[return-value]


@pytest.fixture
def connector(org: OrgClient) -> Iterator[SalesforceConnector]:
    with create(SYSTEM, settings_for(org.base_url)) as built:
        yield built


def delete_all(refs: list[Any]) -> list[ErasureDecision]:
    return [ErasureDecision(ref, ErasureAction.DELETE) for ref in refs]


def by_object(refs: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.object] = counts.get(ref.object, 0) + 1
    return counts


def live_ids(org: OrgClient, email: str) -> set[str]:
    """A person's contact and everything tied to it, straight from the org."""
    escaped = email.replace("\\", "\\\\").replace("'", "\\'")
    contacts = [r["Id"] for r in org.query(f"SELECT Id FROM Contact WHERE Email = '{escaped}'")]
    ids = set(contacts)
    for contact in contacts:
        for soql in (f"SELECT Id FROM Case WHERE ContactId = '{contact}'",
                     f"SELECT Id FROM Task WHERE WhoId = '{contact}'",
                     f"SELECT Id FROM Event WHERE WhoId = '{contact}'",
                     f"SELECT Id FROM CampaignMember WHERE ContactId = '{contact}'"):
            ids.update(r["Id"] for r in org.query(soql))
    return ids


# --- discovery -----------------------------------------------------------------------------------------------


def test_discovers_every_object_of_the_subject(connector: SalesforceConnector) -> None:
    refs = connector.discover(ADA)
    assert by_object(refs) == {"Contact": 1, "Lead": 1, "CampaignMember": 2, "Case": 2, "Task": 3, "Event": 2,
                               "Individual": 1}
    assert all(ref.system == SYSTEM and len(ref.id) == 18 for ref in refs)
    assert {ref.categories for ref in refs if ref.object == "Case"} == {(DataCategory.PROFILE, DataCategory.USAGE)}
    assert all(isinstance(ref.anchor_date, date) for ref in refs if ref.object == "Task")
    assert [ref.object for ref in refs][:2] == ["Contact", "Lead"]  # parents before children
    assert set(by_object(connector.discover(GRACE))) >= {"Contact", "Lead", "Case", "Task", "Individual"}


@pytest.mark.parametrize("hostile, stored, twins", [
    ("o'brien@example.com", True, ["obrien@example.com", "o''brien@example.com"]),
    ("a%@example.com", True, ["ab@example.com", "a@example.com", "a%%@example.com"]),
    ("quote\\'s@example.com", True, ["quote's@example.com", "quote\\\\'s@example.com"]),
    ("x@example.com' or email != '", False, ["x@example.com"]),  # would match everyone if it reached SOQL raw
    ("ada_lovelace@example.com", False, []),  # a seeded decoy: `_` is no wildcard either
])  # fmt: skip
def test_hostile_addresses_match_only_themselves(org: OrgClient, connector: SalesforceConnector,
                                                 vendor: SalesforceSandbox, hostile: str, stored: bool,
                                                 twins: list[str]) -> None:
    mine: set[str] = set()
    if stored:
        contact = org.create("Contact", {"LastName": "Hostile", "Email": hostile})
        mine = {contact, org.create("Task", {"WhoId": contact, "Subject": "call"})}
    others: set[str] = set()
    for twin in twins:
        other = org.create("Contact", {"LastName": "Twin", "Email": twin})
        others |= {other, org.create("Task", {"WhoId": other, "Subject": "call"})}
    refs = connector.discover(Subject(hostile, "hash"))
    found = {ref.id for ref in refs}
    assert mine <= found and not found & others
    emails = set()
    for ref in refs:
        if ref.object in ("Contact", "Lead"):
            stored_record = vendor.record(ref.object, ref.id)
            assert stored_record is not None
            emails.add(stored_record["Email"].lower())
    assert emails <= {hostile}
    if hostile in DECOY_EMAILS:
        assert by_object(refs)["Contact"] == 1
    elif not stored:
        assert refs == []


def test_erasing_the_subject_leaves_every_decoy_and_the_access_subject(org: OrgClient,
                                                                       connector: SalesforceConnector) -> None:
    before = {email: live_ids(org, email) for email in (*DECOY_EMAILS, ACCESS_SUBJECT)}
    assert all(before.values())
    receipt = connector.erase(delete_all(connector.discover(ADA)))
    assert receipt.failed == () and len(receipt.outcomes) == 12
    assert connector.verify_erased(ADA) == []
    assert {email: live_ids(org, email) for email in before} == before


def test_discovery_follows_paging_past_2000_records(org: OrgClient, connector: SalesforceConnector) -> None:
    contact = org.create("Contact", {"LastName": "Busy", "Email": "busy@example.com"})
    org.create_many("Task", [{"WhoId": contact, "Subject": f"call {n}"} for n in range(2300)])
    refs = connector.discover(Subject("busy@example.com", "h"))
    assert by_object(refs) == {"Contact": 1, "Task": 2300}
    assert org.stats()["query_more"] >= 1
    receipt = connector.erase(delete_all(refs))
    assert receipt.failed == () and org.stats()["collection_delete"] == 12  # 2301 ids, 200 per call


# --- erasure -------------------------------------------------------------------------------------------------


def test_partial_failures_are_reported_per_record(org: OrgClient, connector: SalesforceConnector) -> None:
    refs = connector.discover(ADA)
    tasks = [r for r in refs if r.object == "Task"]
    case = next(r for r in refs if r.object == "Case")
    org.control("refuse-delete", {"ids": [tasks[0].id], "statusCode": "DELETE_FAILED"})
    org.control("refuse-delete", {"ids": [case.id], "statusCode": "INSUFFICIENT_ACCESS_OR_READONLY"})
    receipt = connector.erase(delete_all(refs))
    outcome = {o.ref.id: o for o in receipt.outcomes}
    assert not outcome[tasks[0].id].done and "DELETE_FAILED" in (outcome[tasks[0].id].error or "")
    assert not outcome[case.id].done and "INSUFFICIENT_ACCESS_OR_READONLY" in (outcome[case.id].error or "")
    contact = next(o for o in receipt.outcomes if o.ref.object == "Contact")
    # The kept Case still points at the Contact, so Salesforce refuses its delete: anonymised instead.
    assert contact.done and contact.action is ErasureAction.ANONYMISE and "Email" in contact.fields_cleared
    others = [o for o in receipt.outcomes if o.ref.id not in (tasks[0].id, case.id, contact.ref.id)]
    assert others and all(o.done and o.action is ErasureAction.DELETE for o in others)
    assert {o.ref.id for o in receipt.failed} == {tasks[0].id, case.id}


def test_a_retained_case_keeps_its_contact_anonymised(connector: SalesforceConnector) -> None:
    refs = connector.discover(ADA)
    decisions = [ErasureDecision(r, ErasureAction.RETAIN, basis="legal claims", retain_until=date(2030, 1, 1))
                 if r.object == "Case" else ErasureDecision(r, ErasureAction.DELETE) for r in refs]
    receipt = connector.erase(decisions)
    assert receipt.failed == ()
    assert {o.action for o in receipt.outcomes if o.ref.object == "Contact"} == {ErasureAction.ANONYMISE}
    assert all(o.basis == "legal claims" for o in receipt.outcomes if o.ref.object == "Case")
    remaining = connector.verify_erased(ADA)
    assert {r.object for r in remaining} <= {"Case"}  # the Case found by SuppliedEmail, kept as decided


def test_erasing_again_is_idempotent(connector: SalesforceConnector) -> None:
    refs = connector.discover(ADA)
    first = connector.erase(delete_all(refs))
    assert first.failed == () and not any(o.already_gone for o in first.outcomes)
    second = connector.erase(delete_all(refs))
    assert all(o.done and o.already_gone for o in second.outcomes)
    assert second.vendor_receipt_id == first.vendor_receipt_id


def test_anonymise_respects_field_lengths(org: OrgClient, vendor: SalesforceSandbox) -> None:
    long_name = "[erased under GDPR Article 17 by the DSR pipeline]"  # 51 characters; FirstName holds 40
    objects = copy.deepcopy(OBJECTS)
    objects["Contact"]["anonymise"]["FirstName"] = long_name
    with create(SYSTEM, settings_for(org.base_url, objects=objects)) as connector:
        contact = next(r for r in connector.discover(ADA) if r.object == "Contact")
        receipt = connector.erase([ErasureDecision(contact, ErasureAction.ANONYMISE)])
        assert receipt.failed == ()
        assert set(receipt.outcomes[0].fields_cleared) == {"LastName", "FirstName", "Email", "Phone", "MailingStreet"}
        stored = vendor.record("Contact", contact.id)
        assert stored is not None and stored["FirstName"] == long_name[:40] and stored["Email"] is None
        assert not any(r.object == "Contact" for r in connector.verify_erased(ADA))
        again = connector.erase([ErasureDecision(contact, ErasureAction.ANONYMISE)])
        assert again.outcomes[0].done and again.outcomes[0].already_gone


@pytest.mark.parametrize("field, value, problem", [
    ("LastName", None, "cannot be empty"),
    ("Email", "[erased]", "not a valid e-mail address"),
])  # fmt: skip
def test_anonymise_values_the_org_would_refuse_are_reported(org: OrgClient, field: str, value: Any,
                                                            problem: str) -> None:
    objects = copy.deepcopy(OBJECTS)
    objects["Contact"]["anonymise"][field] = value
    with create(SYSTEM, settings_for(org.base_url, objects=objects)) as connector:
        contact = next(r for r in connector.discover(ADA) if r.object == "Contact")
        outcome = connector.erase([ErasureDecision(contact, ErasureAction.ANONYMISE)]).outcomes[0]
    assert not outcome.done and f"systems.{SYSTEM}.settings.objects.Contact.anonymise.{field}" in (outcome.error or "")
    assert problem in (outcome.error or "")


def test_hard_delete_goes_through_bulk_api_2(org: OrgClient, vendor: SalesforceSandbox) -> None:
    with create(SYSTEM, settings_for(org.base_url, erase_mode="hard_delete")) as connector:
        refs = connector.discover(ADA)
        receipt = connector.erase(delete_all(refs))
        assert receipt.failed == ()
        assert all(vendor.is_purged(r.id) for r in refs)  # not in the Recycle Bin either
        assert org.stats()["bulk_jobs"] == len(by_object(refs))  # one job per object
        assert connector.verify_erased(ADA) == []
        again = connector.erase(delete_all(refs))
        assert all(o.done and o.already_gone for o in again.outcomes)


def test_export_returns_every_field_of_every_record(connector: SalesforceConnector, vendor: SalesforceSandbox) -> None:
    refs = connector.discover(ADA)
    records = list(connector.export(refs))
    assert [r.ref for r in records] == sorted(refs, key=lambda r: list(OBJECTS).index(r.object))
    for record in records:
        stored = vendor.record(record.ref.object, record.ref.id)
        assert stored is not None
        stored.pop("attributes")
        assert record.fields == stored  # every field, every value
    assert next(r for r in records if r.ref.object == "Contact").fields["Email"] == "Ada.Lovelace@Example.com"


def test_export_of_wide_objects_falls_back_to_one_record_at_a_time(connector: SalesforceConnector,
                                                                   vendor: SalesforceSandbox,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    refs = [r for r in connector.discover(ADA) if r.object == "Task"]
    connector.erase(delete_all(refs[:1]))
    monkeypatch.setattr(salesforce_module, "_SOQL_URL_BUDGET", 600)  # as if the object had hundreds of fields
    records = list(connector.export(refs))
    assert [r.ref for r in records] == refs[1:]  # the deleted one is skipped
    assert all(r.fields["Id"] == r.ref.id and "Description" in r.fields for r in records)


# --- retention -------------------------------------------------------------------------------------------------


def test_expired_by_last_modified_date_and_purge(org: OrgClient, connector: SalesforceConnector,
                                                 vendor: SalesforceSandbox) -> None:
    old = [org.create("Contact", {"LastName": f"Old{n}", "Email": f"old{n}@example.com",
                                  "LastModifiedDate": "2017-03-01T00:00:00Z"}) for n in range(3)]
    fresh = org.create("Contact", {"LastName": "Fresh", "Email": "fresh@example.com"})
    cutoff = date(2019, 1, 1)
    expired = list(connector.expired(DataCategory.IDENTITY, cutoff))
    ids = {r.id for r in expired}
    assert set(old) <= ids and fresh not in ids
    assert {r.object for r in expired} <= {"Contact", "Lead"}
    for ref in expired:
        stored = vendor.record(ref.object, ref.id)
        assert stored is not None and stored["LastModifiedDate"] < "2019-01-01"
    receipt = connector.purge(expired)
    assert receipt.failed == () and receipt.api_calls >= 1
    assert list(connector.expired("identity", datetime(2019, 1, 1))) == []


def test_expired_prefers_the_last_activity(org: OrgClient) -> None:
    objects = copy.deepcopy(OBJECTS)
    objects["Contact"]["retention_fields"] = ["LastActivityDate", "LastModifiedDate"]
    quiet = org.create("Contact", {"LastName": "Quiet", "Email": "quiet@example.com",
                                   "LastModifiedDate": "2017-03-01T00:00:00Z"})
    active = org.create("Contact", {"LastName": "Active", "Email": "active@example.com",
                                    "LastModifiedDate": "2017-03-01T00:00:00Z"})
    org.create("Task", {"WhoId": active, "Subject": "call", "ActivityDate": "2025-01-01"})
    with create(SYSTEM, settings_for(org.base_url, objects=objects)) as connector:
        ids = {r.id for r in connector.expired("contact", date(2019, 1, 1)) if r.object == "Contact"}
    assert quiet in ids and active not in ids


# --- resilience ------------------------------------------------------------------------------------------------


def test_requests_of_one_process_share_one_login_to_the_org(org: OrgClient, connector: SalesforceConnector) -> None:
    """Each request builds its own connector; logging in for each would spend the user's hourly logins."""
    connector.discover(GRACE)
    with create(SYSTEM, settings_for(org.base_url)) as second:
        assert by_object(second.discover(ADA))["Contact"] == 1
    assert org.stats()["logins"] == 1


def test_session_expiry_mid_run_logs_in_again(org: OrgClient, connector: SalesforceConnector) -> None:
    connector.discover(GRACE)
    org.control("faults", {"expire_rate": 1.0, "burst": 1, "path_pattern": "/query|/composite"})
    assert by_object(connector.discover(ADA))["Contact"] == 1
    assert connector.stats["logins"] == 2 and org.stats()["logins"] == 2


def test_bulk_calls_log_in_again_after_expiry(org: OrgClient) -> None:
    with create(SYSTEM, settings_for(org.base_url, erase_mode="hard_delete")) as connector:
        refs = connector.discover(ADA)
        org.control("faults", {"expire_rate": 1.0, "burst": 1, "path_pattern": "/jobs/ingest"})
        receipt = connector.erase(delete_all(refs))
        assert receipt.failed == ()
        assert connector.stats["relogins"] == 1 and connector.stats["logins"] == 2


def test_throttling_is_retried_and_counted(org: OrgClient, connector: SalesforceConnector) -> None:
    org.control("faults", {"throttle_rate": 1.0, "burst": 3, "path_pattern": "/services/data/"})
    assert by_object(connector.discover(ADA))["Contact"] == 1
    assert connector.stats["throttled"] == 3 and connector.stats["retries"] == 3


def test_outages_and_resets_are_retried(org: OrgClient, connector: SalesforceConnector) -> None:
    org.control("faults", {"error_rate": 0.5, "reset_rate": 0.5, "burst": 4, "seed": 3,
                           "path_pattern": "/services/data/"})
    receipt = connector.erase(delete_all(connector.discover(ADA)))
    assert receipt.failed == ()
    faults = org.stats()
    assert faults.get("fault_error", 0) + faults.get("fault_reset", 0) == 4
    assert connector.stats["retries"] == 4


def test_quota_nearly_used_slows_down_then_exhaustion_is_named() -> None:
    with SandboxServer(SalesforceSandbox(daily_quota=12)) as small:
        small.vendor.seed_demo(7)  # type: ignore[attr-defined]
        with create(SYSTEM, settings_for(small.url, quota_slowdown_at=0.5, retry_attempts=2)) as connector:
            connector.discover(ADA)  # 10 calls (7 describes, 3 queries): the second half is paced more slowly
            assert connector.stats["quota_slowdowns"] > 0 and connector.stats["api_quota"] == 12
            with pytest.raises(ConnectorError) as failure:
                for _ in range(3):
                    connector.discover(GRACE)
    assert "daily API quota is used up" in str(failure.value)


# --- errors never carry personal data ------------------------------------------------------------------------------


def assert_clean(error: BaseException, *secrets: str) -> None:
    text = f"{error} {error!r}"
    for secret in ("lovelace", "Lovelace", *secrets):
        assert secret not in text
    assert error.__cause__ is None and error.__context__ is None  # the vendor's exception (URL, SOQL) is dropped


def test_gives_up_without_leaking_the_address(org: OrgClient) -> None:
    with create(SYSTEM, settings_for(org.base_url, retry_attempts=2)) as connector:
        org.control("faults", {"error_rate": 1.0, "path_pattern": "/query|/composite"})
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value)
    assert "HTTP 503" in str(failure.value) and "discover of object 'Contact'" in str(failure.value)


def test_timeouts_give_up_without_leaking_the_address(org: OrgClient) -> None:
    with create(SYSTEM, settings_for(org.base_url, retry_attempts=2, timeout_seconds=0.2)) as connector:
        org.control("faults", {"timeout_rate": 1.0, "timeout_seconds": 1, "path_pattern": "/query|/composite"})
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value)
    assert "timed out" in str(failure.value)


def test_a_refused_query_does_not_leak_the_address(org: OrgClient) -> None:
    objects = copy.deepcopy(OBJECTS)
    objects["Lead"]["match"] = {"field": "IsConverted"}  # Salesforce quotes the whole statement in its 400
    with create(SYSTEM, settings_for(org.base_url, objects=objects)) as connector:
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value)
    assert "HTTP 400, INVALID_QUERY_FILTER_OPERATOR" in str(failure.value)


def test_a_wrong_secret_fails_login_without_echoing_it(org: OrgClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SF_CLIENT_SECRET", "not-the-secret-4242")
    with create(SYSTEM, settings_for(org.base_url)) as connector:
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value, "not-the-secret-4242", DEMO_CLIENT_ID)
    assert "login failed (invalid_client)" in str(failure.value)


# --- login flows and configuration ------------------------------------------------------------------------------------


def test_jwt_bearer_login(org: OrgClient, vendor: SalesforceSandbox, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vendor.jwt_public_key = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    key_file = tmp_path / "sf.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("TEST_SF_KEY_FILE", str(key_file))
    auth = {"flow": "jwt", "domain": "login", "username": DEMO_JWT_USERNAME, "client_id_env": "TEST_SF_CLIENT_ID",
            "private_key_file_env": "TEST_SF_KEY_FILE"}
    with create(SYSTEM, settings_for(org.base_url, auth=auth)) as connector:
        assert by_object(connector.discover(ADA))["Contact"] == 1
        assert connector.stats["logins"] == 1


def test_the_registry_builds_it_and_info_declares_limits(org: OrgClient) -> None:
    built = build_connector(SYSTEM, "salesforce", settings_for(org.base_url))
    assert isinstance(built, SalesforceConnector)
    info = built.info
    assert (info.kind, info.version, info.max_batch, info.rate_limit_per_second) == ("salesforce", "salesforce/1",
                                                                                     200, 2000.0)
    assert info.objects == tuple(OBJECTS)
    built.close()


def test_an_org_answering_for_another_instance_is_refused(org: OrgClient) -> None:
    with create(SYSTEM, settings_for(org.base_url, instance_url="https://production.my.salesforce.com")) as connector:
        with pytest.raises(ConnectorConfigError, match=r"settings\.instance_url: the login answered for another"):
            connector.discover(ADA)


def test_an_optional_object_the_org_lacks_is_skipped() -> None:
    with SandboxServer(SalesforceSandbox(individual_enabled=False)) as plain:
        plain.vendor.seed_demo(7)  # type: ignore[attr-defined]
        with create(SYSTEM, settings_for(plain.url)) as connector:
            assert "Individual" not in by_object(connector.discover(ADA))
        objects = copy.deepcopy(OBJECTS)
        objects["Individual"]["optional"] = False
        with create(SYSTEM, settings_for(plain.url, objects=objects)) as connector:
            with pytest.raises(ConnectorConfigError, match=r"objects\.Individual: the org has no object"):
                connector.discover(ADA)


def test_a_field_the_org_lacks_is_named(org: OrgClient) -> None:
    objects = copy.deepcopy(OBJECTS)
    objects["Contact"]["match"] = {"field": "Emial"}
    objects["Contact"]["anonymise"]["Emial"] = None
    with create(SYSTEM, settings_for(org.base_url, objects=objects)) as connector:
        with pytest.raises(ConnectorConfigError, match=r"objects\.Contact\.match\.0\.field: the org's Contact has no"):
            connector.discover(ADA)


SECRET = "s3cr3t-Value-9f8e"


@pytest.mark.parametrize("change, path", [
    ({"auth": {"flow": "client_credentials", "domain": DEMO_DOMAIN, "client_id_env": "TEST_SF_CLIENT_ID",
               "client_secret": SECRET}}, "auth.client_secret"),
    ({"auth": {"flow": "client_credentials", "domain": DEMO_DOMAIN, "client_id_env": SECRET,
               "client_secret_env": "TEST_SF_CLIENT_SECRET"}}, "auth.client_id_env"),
    ({"auth": {"flow": "client_credentials", "domain": "login", "client_id_env": "TEST_SF_CLIENT_ID",
               "client_secret_env": "TEST_SF_CLIENT_SECRET"}}, "auth.domain"),
    ({"auth": {"flow": "jwt", "client_id_env": "TEST_SF_CLIENT_ID", "private_key_file": "/k"}}, "auth.username"),
    ({"instance_url": f"https://admin:{SECRET}@precision.my.salesforce.com"}, "instance_url"),
    ({"endpoint_override": "http://sandbox.example.org:8080"}, "endpoint_override"),
    ({"api_version": "41.0"}, "api_version"),
    ({"erase_mode": "shred"}, "erase_mode"),
    ({"objects": {"Case": {"match": {"parent": "Contact", "field": "ContactId"}, "categories": ["usage"]}}},
     "objects.Case.match.0.parent"),
    ({"objects": {"Contact": {"match": {"field": "Email"}, "categories": ["identity"], "anonymise": {"Phone": None}}}},
     "objects.Contact.anonymise"),
    ({"objects": {"Contact": {"match": {"field": "Email; DROP"}, "categories": ["identity"]}}},
     "objects.Contact.match.0.field"),
    ({"objects": {"Contact": {"match": {"field": "Email"}, "categories": ["gossip"]}}},
     "objects.Contact.categories.0"),
])  # fmt: skip
def test_config_errors_name_the_field_and_never_echo_secrets(change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConnectorConfigError) as failure:
        create(SYSTEM, settings_for("http://127.0.0.1:9", **change))
    message = str(failure.value)
    assert f"systems.{SYSTEM}.settings.{path}" in message
    assert SECRET not in message and DEMO_CLIENT_SECRET not in message


def test_missing_environment_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SF_CLIENT_SECRET")
    with pytest.raises(ConnectorConfigError, match=r"settings\.auth\.client_secret_env: environment variable "
                                                   r"TEST_SF_CLIENT_SECRET is not set"):
        create(SYSTEM, settings_for("http://127.0.0.1:9"))
    monkeypatch.setenv("TEST_SF_OVERRIDE", "http://sandbox.example.org")
    settings = settings_for("http://127.0.0.1:9", endpoint_override_env="TEST_SF_OVERRIDE")
    del settings["endpoint_override"]
    monkeypatch.setenv("TEST_SF_CLIENT_SECRET", DEMO_CLIENT_SECRET)
    with pytest.raises(ConnectorConfigError, match=r"settings\.endpoint_override_env: plain http is for loopback"):
        create(SYSTEM, settings)


def test_with_an_override_no_call_leaves_the_sandbox(org: OrgClient) -> None:
    with create(SYSTEM, settings_for(org.base_url, instance_url="https://precision.my.force.example")) as connector:
        # The login answers precision.my.salesforce.com, which the data map does not name: refused before any
        # record is touched; and a host outside the sandbox is never called at all.
        with pytest.raises(ConnectorError):
            connector.discover(ADA)
        session = connector._session
        with pytest.raises(OutsideSandbox):
            session.get("https://example.org/services/data/")


def test_a_second_request_in_the_process_does_not_describe_the_objects_again(org: OrgClient) -> None:
    """Describes are kept per process (connectors.salesforce.DESCRIBE_TTL_SECONDS): a warm process's
    next request costs only its queries."""
    with create(SYSTEM, settings_for(org.base_url)) as first:
        found = first.discover(ADA)
        first_calls = first.stats["http_calls"] - first.stats.get("logins", 0)
    with create(SYSTEM, settings_for(org.base_url)) as second:
        assert second.discover(ADA) == found
        second_calls = second.stats["http_calls"] - second.stats.get("logins", 0)
    described = len(OBJECTS)
    assert second_calls == first_calls - described
