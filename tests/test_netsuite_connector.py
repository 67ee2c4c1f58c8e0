"""The NetSuite connector, through real `requests` + `requests-oauthlib`, over real HTTP, against the sandbox.

Nothing is mocked: the connector signs every call (OAuth 1.0a HMAC-SHA256, or an OAuth 2.0 bearer token
from a JWT client assertion), pages SuiteQL, deletes, anonymises customers that transactions keep, and
meets injected throttling, outages and resets the way it would meet them in an account.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import connectors.registry as registry
from connectors.base import ConnectorConfigError, ConnectorError, DataCategory, ErasureAction, ErasureDecision, Subject
from connectors.netsuite import NetSuiteConnector, create, suiteql_string
from connectors.pacing import forget_limiters
from dsr.config import load_policy
from dsr.policy import decide_erasure, retention_end, tax_retention_end
from dsr.run.codec import ref_from_dict, ref_to_dict
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
    AccountClient,
    NetSuiteSandbox,
)

REPO = Path(__file__).resolve().parent.parent
SYSTEM = "netsuite"
ADA = Subject(ERASURE_SUBJECT, "hash-ada")
GRACE = Subject(ACCESS_SUBJECT, "hash-grace")
ENV = {"TEST_NS_ACCOUNT": DEMO_ACCOUNT_ID, "TEST_NS_CONSUMER_KEY": DEMO_CONSUMER_KEY,
       "TEST_NS_CONSUMER_SECRET": DEMO_CONSUMER_SECRET, "TEST_NS_TOKEN_ID": DEMO_TOKEN_ID,
       "TEST_NS_TOKEN_SECRET": DEMO_TOKEN_SECRET}
TBA = {"flow": "tba", "consumer_key_env": "TEST_NS_CONSUMER_KEY", "consumer_secret_env": "TEST_NS_CONSUMER_SECRET",
       "token_id_env": "TEST_NS_TOKEN_ID", "token_secret_env": "TEST_NS_TOKEN_SECRET"}
CUSTOMER_ANONYMISE = {"entityId": "ERASED-{id}", "firstName": "[erased]", "lastName": "[erased]", "email": None,
                      "altEmail": None, "phone": None, "mobilePhone": None, "comments": None}
TAX = {"default": "US", "by_subsidiary": {"2": "GB", "4": "BR"}}  # the figures are config/policy.yaml's
POLICY = load_policy(REPO / "config" / "policy.yaml")


def settings_for(url: str, **overrides: Any) -> dict[str, Any]:
    """The demo data map aimed at a sandbox, with fast retries for tests."""
    base: dict[str, Any] = {
        "account_id_env": "TEST_NS_ACCOUNT",
        "base_url_override": url,
        "auth": dict(TBA),
        "rate_limit": {"calls": 5000, "period_seconds": 1},
        "max_concurrency": 4,
        "retry_max_wait": 0.01,
        "objects": {
            "customer": {"categories": ["identity", "contact"], "anonymise": dict(CUSTOMER_ANONYMISE),
                         "clear_sublists": ["addressBook"]},
            "contact": {"categories": ["identity", "contact"],
                        "anonymise": {"firstName": "[erased]", "lastName": "[erased]", "email": None, "phone": None}},
        },
        "transactions": {"anonymise": {"email": None, "memo": None}},
        "tax_jurisdictions": copy.deepcopy(TAX),
    }
    base.update(overrides)
    return base


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(NetSuiteSandbox()) as running:
        yield running


@pytest.fixture
def vendor(server: SandboxServer) -> NetSuiteSandbox:
    return server.vendor  # type: ignore[return-value]


@pytest.fixture
def account(server: SandboxServer, vendor: NetSuiteSandbox) -> Iterator[AccountClient]:
    forget_limiters()  # and the process's bearer tokens: each test logs in afresh
    client = AccountClient(server.url)
    client.control("reset")
    vendor.seed_demo(7)
    yield client
    client.close()


@pytest.fixture
def connector(account: AccountClient) -> Iterator[NetSuiteConnector]:
    with create(SYSTEM, settings_for(account.base_url)) as built:
        yield built


def decide(refs: list[Any], transactions: ErasureAction = ErasureAction.ANONYMISE) -> list[ErasureDecision]:
    """What the policy decides: delete people's records; keep transactions (tax) anonymised."""
    return [ErasureDecision(r, transactions, basis="tax law", retain_until=date(2032, 12, 31))
            if DataCategory.TRANSACTION in r.categories else ErasureDecision(r, ErasureAction.DELETE) for r in refs]


def by_object(refs: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.object] = counts.get(ref.object, 0) + 1
    return counts


def snapshot(vendor: NetSuiteSandbox) -> dict[str, list[dict[str, Any]]]:
    return {rtype: vendor.records(rtype) for rtype in ("customer", "contact", "invoice", "cashSale",
                                                        "customerPayment", "salesOrder")}


def ada_customer_with_invoices(refs: list[Any]) -> Any:
    return next(r for r in refs if r.object == "customer" and r.id == "101")


# --- discovery ---------------------------------------------------------------------------------------------


def test_discovers_customers_contacts_and_their_transactions(connector: NetSuiteConnector) -> None:
    refs = connector.discover(ADA)
    assert by_object(refs) == {"customer": 2, "contact": 1, "invoice": 2, "customerPayment": 1}
    assert [r.object for r in refs][:3] == ["customer", "customer", "contact"]
    transactions = [r for r in refs if r.object in ("invoice", "customerPayment")]
    assert all(r.categories == (DataCategory.TRANSACTION, DataCategory.FINANCIAL) for r in transactions)
    assert {r.anchor_date for r in transactions} == {date(2024, 3, 14), date(2025, 11, 20), date(2025, 12, 5)}
    assert all(r.tax_record == "document" and r.jurisdiction is None for r in transactions)
    assert all(r.categories == (DataCategory.IDENTITY, DataCategory.CONTACT)
               for r in refs if r.object in ("customer", "contact"))
    # Without transactions: no facts. With them (Ada's UK customer): referenced, as of the latest one.
    assert all(r.anchor_date is None and r.tax_record is None and r.jurisdiction is None
               for r in refs if r.object == "contact" or (r.object == "customer" and r.id != "101"))
    kept = ada_customer_with_invoices(refs)
    assert (kept.anchor_date, kept.tax_record, kept.jurisdiction) == (date(2025, 12, 5), "referenced", "GB")
    assert by_object(connector.discover(GRACE)) == {"customer": 1, "contact": 1, "invoice": 1, "cashSale": 1}


def test_customers_and_their_transactions_come_in_one_query(connector: NetSuiteConnector,
                                                             account: AccountClient) -> None:
    """Two SuiteQL calls for a subject with customers, contacts and transactions (the customers joined to their
    transactions), and the refs in the order the separate queries gave: people, then transactions by id."""
    before = account.stats().get("suiteql", 0)
    refs = connector.discover(ADA)
    assert account.stats()["suiteql"] - before == 2
    transactions = [int(r.id) for r in refs if r.object in ("invoice", "customerPayment")]
    assert transactions == sorted(transactions) and len(transactions) == 3
    assert [r.object for r in refs][:3] == ["customer", "customer", "contact"]


def test_a_customer_with_more_transactions_than_the_cap_is_read_whole(account: AccountClient) -> None:
    small = NetSuiteSandbox(result_cap=1000)
    busy, quiet = small.add_records("customer", [
        {"entityId": name, "isPerson": True, "lastName": name, "email": "busy@example.com", "subsidiary": {"id": "2"}}
        for name in ("BUSY", "QUIET")])
    small.add_records("invoice", [{"entity": {"id": busy}, "tranDate": f"2025-{1 + n % 12:02d}-01",
                                   "email": "busy@example.com"} for n in range(1300)])
    with SandboxServer(small) as capped, create(SYSTEM, settings_for(capped.url, page_size=400,
                                                                     result_cap=1000)) as connector:
        refs = connector.discover(Subject("busy@example.com", "h"))
        assert connector.stats["suiteql_restarts"] >= 1
    invoices = [r.id for r in refs if r.object == "invoice"]
    assert len(invoices) == len(set(invoices)) == 1300
    customers = {r.id: r for r in refs if r.object == "customer"}
    assert set(customers) == {busy, quiet}
    assert (customers[busy].tax_record, customers[busy].anchor_date) == ("referenced", date(2025, 12, 1))
    assert customers[quiet].tax_record is None


@pytest.mark.parametrize("hostile, seeded", [
    ("x@example.com' or email != '", False),
    ("x@example.com' or email is not null or email = '", False),  # would match everyone if it reached SuiteQL raw
    ("%@example.com", True),  # a seeded decoy: `%` is no wildcard with `=`
    ("ada_lovelace@example.com", True),  # nor is `_`
    ("o'brien@example.com", True),  # must not find obrien@example.com
    ("ada.lovelace@example.com.attacker.test", True),
])  # fmt: skip
def test_hostile_addresses_match_only_themselves(connector: NetSuiteConnector, vendor: NetSuiteSandbox, hostile: str,
                                                 seeded: bool) -> None:
    refs = connector.discover(Subject(hostile, "hash"))
    people = [r for r in refs if r.object in ("customer", "contact")]
    if not seeded:
        assert refs == []
        return
    assert by_object(people) == {"customer": 1, "contact": 1}
    for ref in people:
        stored = vendor.record(ref.object, ref.id)
        assert stored is not None and stored["email"].lower() == hostile


def test_control_characters_never_reach_a_query(connector: NetSuiteConnector, account: AccountClient) -> None:
    before = account.stats().get("suiteql", 0)
    with pytest.raises(ConnectorError) as failure:
        connector.discover(Subject("ada.lovelace@example.com\n' or 1=1", "h"))
    assert "lovelace" not in str(failure.value) and account.stats().get("suiteql", 0) == before
    assert suiteql_string("o'brien@example.com") == "'o''brien@example.com'"
    assert suiteql_string("a\\b%_@example.com") == "'a\\b%_@example.com'"


def test_discovery_pages_past_1000_rows_and_restarts_before_the_cap(account: AccountClient,
                                                                    vendor: NetSuiteSandbox) -> None:
    vendor.add_records("contact", [{"lastName": f"Busy {n}", "email": "busy@example.com"} for n in range(1250)])
    with create(SYSTEM, settings_for(account.base_url)) as connector:
        refs = connector.discover(Subject("busy@example.com", "h"))
        assert by_object(refs) == {"contact": 1250} and len({r.id for r in refs}) == 1250
        assert connector.stats["suiteql_pages"] >= 3  # customers (empty), contacts: 1000 + 250
    small = NetSuiteSandbox(result_cap=1000)
    small.add_records("contact", [{"lastName": f"Busy {n}", "email": "busy@example.com"} for n in range(1250)])
    with SandboxServer(small) as capped, create(SYSTEM, settings_for(capped.url, page_size=400,
                                                                     result_cap=1000)) as connector:
        refs = connector.discover(Subject("busy@example.com", "h"))
        assert len({r.id for r in refs}) == 1250
        assert connector.stats["suiteql_restarts"] >= 1


# --- erasure -------------------------------------------------------------------------------------------------


def test_erasing_ada_deletes_anonymises_and_keeps_transactions(connector: NetSuiteConnector, account: AccountClient,
                                                               vendor: NetSuiteSandbox) -> None:
    refs = connector.discover(ADA)
    invoices_before = {t: vendor.records(t) for t in ("invoice", "customerPayment")}
    receipt = connector.erase(decide(refs))
    assert receipt.failed == ()
    outcome = {(o.ref.object, o.ref.id): o for o in receipt.outcomes}

    # Without transactions: deleted, gone from the account.
    web, contact = outcome[("customer", "102")], next(o for o in receipt.outcomes if o.ref.object == "contact")
    for gone in (web, contact):
        assert gone.done and gone.action is ErasureAction.DELETE and not gone.already_gone
        assert vendor.record(gone.ref.object, gone.ref.id) is None

    # With invoices: NetSuite refuses the delete, so the customer is anonymised and kept for tax. Her subsidiary
    # is the UK one: six years from the end of the fiscal year of the latest transaction (5 Dec 2025).
    kept = outcome[("customer", "101")]
    assert kept.done and kept.action is ErasureAction.ANONYMISE
    assert kept.retain_until == date(2031, 12, 31)
    assert kept.basis == "GB: HMRC: 6 years from the end of the company financial year"
    assert set(kept.fields_cleared) == {"entityId", "firstName", "lastName", "email", "phone", "mobilePhone",
                                        "comments", "addressBook"}
    stored = vendor.record("customer", "101")
    assert stored is not None and "email" not in stored and stored["entityId"] == "ERASED-101"
    assert stored["addressBook"]["items"] == [] and "Ada" not in str(stored) and "Lovelace" not in str(stored)

    # Transactions: never deleted; as the policy decided, their personal fields are cleared, amounts untouched.
    stats = account.stats()
    assert not any(stats.get(f"delete_{t}") for t in ("invoice", "customerPayment", "cashSale", "salesOrder"))
    for rtype, before in invoices_before.items():
        after = vendor.records(rtype)
        assert [r["id"] for r in after] == [r["id"] for r in before]
        assert [(r["total"], r["tranDate"], r["entity"]["id"]) for r in after] == \
            [(r["total"], r["tranDate"], r["entity"]["id"]) for r in before]
    assert all("email" not in vendor.record("invoice", r.id) for r in refs if r.object == "invoice")  # type: ignore[operator]
    assert all(o.basis == "tax law" for o in receipt.outcomes if o.ref.object == "invoice")

    assert connector.verify_erased(ADA) == []


def test_erasing_ada_leaves_every_decoy_and_the_access_subject(connector: NetSuiteConnector,
                                                               vendor: NetSuiteSandbox) -> None:
    before = snapshot(vendor)
    refs = connector.discover(ADA)
    touched = {(r.object, r.id) for r in refs}
    assert connector.erase(decide(refs)).failed == ()
    after = snapshot(vendor)
    for rtype, records in before.items():
        untouched_before = [r for r in records if (rtype, r["id"]) not in touched]
        untouched_after = [r for r in after[rtype] if (rtype, r["id"]) not in touched]
        assert untouched_after == untouched_before, rtype
    assert by_object(connector.discover(GRACE)) == {"customer": 1, "contact": 1, "invoice": 1, "cashSale": 1}
    for email in DECOY_EMAILS:
        assert by_object(connector.discover(Subject(email, "h")))["customer"] == 1


def test_erasing_again_is_idempotent(connector: NetSuiteConnector) -> None:
    refs = connector.discover(ADA)
    first = connector.erase(decide(refs))
    # The payment holds no e-mail or memo: nothing to clear there even the first time.
    assert first.failed == () and not any(o.already_gone for o in first.outcomes if o.ref.object != "customerPayment")
    second = connector.erase(decide(refs))
    assert all(o.done and o.already_gone for o in second.outcomes)
    kept = next(o for o in second.outcomes if o.ref.id == "101" and o.ref.object == "customer")
    assert kept.action is ErasureAction.ANONYMISE and kept.retain_until == date(2031, 12, 31)
    assert second.vendor_receipt_id == first.vendor_receipt_id


def test_a_delete_decision_for_a_transaction_clears_its_personal_fields_instead(connector: NetSuiteConnector,
                                                                               account: AccountClient,
                                                                               vendor: NetSuiteSandbox) -> None:
    refs = [r for r in connector.discover(ADA) if r.object in ("invoice", "customerPayment")]
    before = account.stats()
    receipt = connector.erase(decide(refs, transactions=ErasureAction.DELETE))
    assert not receipt.failed
    for outcome in receipt.outcomes:
        assert outcome.action is ErasureAction.ANONYMISE and "never deleted by a DSR" in (outcome.basis or "")
        assert vendor.record(outcome.ref.object, outcome.ref.id) is not None  # the transaction stays
    assert account.stats().get("record_delete", 0) == before.get("record_delete", 0)


def test_retained_and_unmapped_transactions(account: AccountClient) -> None:
    settings = settings_for(account.base_url)
    del settings["transactions"]["anonymise"]
    with create(SYSTEM, settings) as connector:
        refs = [r for r in connector.discover(ADA) if r.object == "invoice"]
        retained = connector.erase([ErasureDecision(r, ErasureAction.RETAIN, basis="tax", retain_until=date(2031, 1, 1))
                                    for r in refs])
        assert all(o.done and o.basis == "tax" for o in retained.outcomes) and retained.api_calls == 0
        unmapped = connector.erase(decide(refs))
        assert all(not o.done and f"systems.{SYSTEM}.settings.transactions.anonymise" in (o.error or "")
                   for o in unmapped.outcomes)


def test_retention_is_counted_per_subsidiary_and_fiscal_year(account: AccountClient, vendor: NetSuiteSandbox) -> None:
    (us, br, fy) = vendor.add_records("customer", [
        {"isPerson": True, "lastName": "Us", "email": "us@example.com", "subsidiary": {"id": "1"}},
        {"isPerson": True, "lastName": "Br", "email": "br@example.com", "subsidiary": {"id": "4"}},
        {"isPerson": True, "lastName": "Fy", "email": "fy@example.com", "subsidiary": {"id": "1"}},
    ])
    vendor.add_records("invoice", [{"entity": {"id": us}, "tranDate": "2023-06-30"},
                                   {"entity": {"id": us}, "tranDate": "2022-01-15"},
                                   {"entity": {"id": br}, "tranDate": "2024-03-01"},
                                   {"entity": {"id": fy}, "tranDate": "2024-05-02"}])
    with create(SYSTEM, settings_for(account.base_url)) as connector:
        for email, until, jurisdiction in (("us@example.com", date(2030, 12, 31), "US"),
                                           ("br@example.com", date(2029, 12, 31), "BR")):
            customer = next(r for r in connector.discover(Subject(email, "h")) if r.object == "customer")
            outcome = connector.erase([ErasureDecision(customer, ErasureAction.DELETE)]).outcomes[0]
            assert (outcome.action, outcome.retain_until) == (ErasureAction.ANONYMISE, until)
            assert outcome.basis is not None and outcome.basis.startswith(f"{jurisdiction}: ")
    # The fiscal year is the policy's: discovery reports the facts, `dsr.policy` counts.
    policy = POLICY.model_copy(update={"fiscal_year_end": "03-31"})
    with create(SYSTEM, settings_for(account.base_url)) as connector:
        customer = next(r for r in connector.discover(Subject("fy@example.com", "h")) if r.object == "customer")
        decision = decide_erasure(customer, regime="ccpa", policy=policy, today=date(2026, 12, 7))
        outcome = connector.erase([decision]).outcomes[0]
        assert outcome.retain_until == date(2032, 3, 31)  # fiscal year 2024-04-01..2025-03-31, plus 7 years


def test_a_subsidiarys_jurisdiction_picks_the_policys_figures(connector: NetSuiteConnector,
                                                              vendor: NetSuiteSandbox) -> None:
    """Discovery reports the UK subsidiary's country; the policy's GB entry decides basis and end date, whatever
    the regime's own tax law, and the connector carries the decision out without trying a delete."""
    refs = connector.discover(ADA)
    customer = ada_customer_with_invoices(refs)
    today = date(2026, 12, 7)
    decision = decide_erasure(customer, regime="gdpr", policy=POLICY, today=today)  # gdpr's own tax law: NL
    assert (decision.action, decision.retain_until) == (ErasureAction.ANONYMISE, date(2031, 12, 31))
    assert decision.basis == f"GB: {POLICY.tax_retention['GB'].source}"
    longer = POLICY.model_copy(update={"tax_retention": {
        **POLICY.tax_retention, "GB": POLICY.tax_retention["GB"].model_copy(update={"years": 8})}})
    assert decide_erasure(customer, regime="gdpr", policy=longer, today=today).retain_until == date(2033, 12, 31)
    # Once that retention has passed, the policy no longer keeps it (NetSuite will still refuse the delete).
    expired = decide_erasure(customer, regime="gdpr", policy=POLICY, today=date(2032, 1, 1))
    assert expired.action is ErasureAction.DELETE
    outcome = connector.erase([decision]).outcomes[0]
    assert outcome.done and outcome.action is ErasureAction.ANONYMISE and outcome.basis == decision.basis
    stored = vendor.record("customer", "101")
    assert stored is not None and stored["entityId"] == "ERASED-101"
    # Transactions are documents: never deleted, even once their retention has passed.
    invoice = next(r for r in refs if r.object == "invoice")
    late = decide_erasure(invoice, regime="gdpr", policy=POLICY, today=date(2040, 1, 1))
    assert late.action is ErasureAction.ANONYMISE and "never deleted by a DSR" in (late.basis or "")


def test_the_facts_round_trip_through_the_ledger_codec(connector: NetSuiteConnector) -> None:
    refs = connector.discover(ADA)
    assert [ref_from_dict(SYSTEM, ref_to_dict(r)) for r in refs] == refs
    plain = next(r for r in refs if r.object == "contact")
    assert sorted(ref_to_dict(plain)) == ["anchor_date", "categories", "id", "object"]  # facts only when set
    assert ref_to_dict(ada_customer_with_invoices(refs))["tax_record"] == "referenced"


def test_retention_arithmetic_matches_the_policy() -> None:
    """What a refused delete keeps (`retention_end` of a table entry) counts as the policy's decisions do."""
    for jurisdiction, entry in POLICY.tax_retention.items():
        for anchor in (date(2024, 1, 1), date(2024, 2, 29), date(2025, 12, 31), date(2026, 7, 15)):
            assert retention_end(anchor, entry, POLICY.fiscal_year_end) == \
                tax_retention_end(anchor, jurisdiction, POLICY)


def test_other_refusals_are_reported_per_record(connector: NetSuiteConnector, account: AccountClient) -> None:
    refs = [r for r in connector.discover(ADA) if r.object in ("customer", "contact")]
    web = next(r for r in refs if r.id == "102")
    account.control("refuse-delete", {"ids": [web.id]})
    receipt = connector.erase(decide(refs))
    outcome = {r.ref.id: r for r in receipt.outcomes}
    assert not outcome[web.id].done and "no transaction references the customer" in (outcome[web.id].error or "")
    assert "400 USER_ERROR" in (outcome[web.id].error or "")
    assert [o.ref.id for o in receipt.failed] == [web.id]


def test_anonymise_values_netsuite_refuses_are_reported(account: AccountClient) -> None:
    settings = settings_for(account.base_url)
    settings["objects"]["customer"]["anonymise"]["lastName"] = None  # NetSuite needs a last name for a person
    with create(SYSTEM, settings) as connector:
        customer = ada_customer_with_invoices(connector.discover(ADA))
        outcome = connector.erase([ErasureDecision(customer, ErasureAction.DELETE)]).outcomes[0]
    assert not outcome.done and outcome.action is ErasureAction.ANONYMISE
    assert f"systems.{SYSTEM}.settings.objects.customer.anonymise (400 USER_ERROR)" in (outcome.error or "")


# --- export, retention purge ------------------------------------------------------------------------------------


def test_export_returns_full_records(connector: NetSuiteConnector, vendor: NetSuiteSandbox) -> None:
    refs = connector.discover(GRACE)
    records = list(connector.export(refs))
    assert [r.ref for r in records] == refs
    for record in records:
        assert record.fields == vendor.record(record.ref.object, record.ref.id)  # every field, every sublist
    customer = next(r for r in records if r.ref.object == "customer")
    assert customer.fields["email"] == ACCESS_SUBJECT and customer.fields["addressBook"]["items"]
    invoice = next(r for r in records if r.ref.object == "invoice")
    assert invoice.fields["item"]["items"] and invoice.fields["entity"]["refName"] == "Grace Hopper"
    connector.erase([ErasureDecision(refs[1], ErasureAction.DELETE)])
    assert [r.ref for r in connector.export(refs)] == [refs[0], *refs[2:]]  # gone since discovery: skipped


def test_expired_by_last_modified_date_and_purge(connector: NetSuiteConnector, vendor: NetSuiteSandbox) -> None:
    old = vendor.add_records("customer", [
        {"isPerson": True, "lastName": f"Old{n}", "email": f"old{n}@example.com", "subsidiary": {"id": "1"},
         "dateCreated": "2016-01-01T00:00:00Z", "lastModifiedDate": "2017-03-01T00:00:00Z"} for n in range(3)])
    vendor.add_records("invoice", [{"entity": {"id": old[0]}, "tranDate": "2017-02-01"}])
    expired = list(connector.expired(DataCategory.IDENTITY, date(2019, 1, 1)))
    assert {r.id for r in expired} >= set(old) and all(r.anchor_date and r.anchor_date < date(2019, 1, 1)
                                                       for r in expired)
    assert list(connector.expired("financial", date(2019, 1, 1))) == []  # transactions are never purged here
    receipt = connector.purge(expired)
    assert receipt.failed == ()
    kept = next(o for o in receipt.outcomes if o.ref.id == old[0])
    assert kept.action is ErasureAction.ANONYMISE and kept.retain_until == date(2024, 12, 31)
    assert all(vendor.record("customer", i) is None for i in old[1:])
    assert list(connector.expired("identity", datetime(2019, 1, 1))) == [
        r for r in connector.expired("identity", date(2019, 1, 1))]
    with pytest.raises(ConnectorError, match="unknown data category"):
        list(connector.expired("gossip", date(2019, 1, 1)))


# --- resilience ---------------------------------------------------------------------------------------------------


def test_throttling_is_retried(account: AccountClient, connector: NetSuiteConnector) -> None:
    account.control("faults", {"throttle_rate": 1.0, "burst": 3, "path_pattern": "/services/rest/"})
    assert by_object(connector.discover(ADA))["customer"] == 2
    assert connector.stats["throttled"] == 3 and connector.stats["retries"] == 3


def discover_in_parallel(connector: NetSuiteConnector, subject: Subject, threads: int) -> list[ConnectorError]:
    """Run `threads` discoveries at once (one connector shared, as a flow's tasks share it); their errors."""
    barrier, errors = threading.Barrier(threads), []

    def run() -> None:
        barrier.wait()
        try:
            connector.discover(subject)
        except ConnectorError as exc:  # pragma: no cover - the caller's assertion reports it
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_the_concurrency_limit_is_respected_or_ridden_out() -> None:
    vendor = NetSuiteSandbox(max_concurrency=2)
    vendor.seed_demo(7)
    with SandboxServer(vendor) as small:
        AccountClient(small.url).control("faults", {"latency_ms": 30})
        for share, throttled in ((2, False), (8, True)):
            with create(SYSTEM, settings_for(small.url, max_concurrency=share, retry_attempts=20,
                                                retry_max_wait=0.25)) as connector:
                assert discover_in_parallel(connector, GRACE, 8) == []
                assert (connector.stats.get("throttled", 0) > 0) is throttled


def test_outages_and_resets_are_retried(account: AccountClient, connector: NetSuiteConnector) -> None:
    account.control("faults", {"error_rate": 0.5, "reset_rate": 0.5, "burst": 4, "seed": 3,
                               "path_pattern": "/services/rest/"})
    receipt = connector.erase(decide(connector.discover(ADA)))
    assert receipt.failed == ()
    stats = account.stats()
    assert stats.get("fault_error", 0) + stats.get("fault_reset", 0) == 4
    assert connector.stats["retries"] == 4


def assert_clean(error: BaseException, *secrets: str) -> None:
    text = f"{error} {error!r}"
    for secret in ("lovelace", "Lovelace", DEMO_CONSUMER_SECRET, DEMO_TOKEN_SECRET, *secrets):
        assert secret not in text
    assert error.__cause__ is None and error.__context__ is None  # the vendor's answer is dropped


def test_gives_up_without_leaking_the_address(account: AccountClient) -> None:
    with create(SYSTEM, settings_for(account.base_url, retry_attempts=2)) as connector:
        account.control("faults", {"error_rate": 1.0, "path_pattern": "/suiteql"})
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value)
    assert "NetSuite server error 503 after 2 attempts" in str(failure.value)


def test_a_refused_call_does_not_leak_what_netsuite_echoes(connector: NetSuiteConnector) -> None:
    # NetSuite's 400 details echo the values sent (here the invalid address written by a bad anonymise value,
    # elsewhere a query fragment); only the status and the error code may get through.
    customer = ada_customer_with_invoices(connector.discover(ADA))
    with pytest.raises(ConnectorError) as failure:
        connector._rest("erase", "customer", "PATCH", f"/services/rest/record/v1/customer/{customer.id}",
                        body={"email": "ada.lovelace@example"})
    assert_clean(failure.value)
    assert str(failure.value).endswith("NetSuite answered 400 INVALID_CONTENT")


def test_a_wrong_secret_fails_clearly_without_echoing_it(account: AccountClient,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NS_TOKEN_SECRET", "not-the-secret-4242")
    with create(SYSTEM, settings_for(account.base_url)) as connector:
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value, "not-the-secret-4242")
    message = str(failure.value)
    assert "NetSuite refused the login (401 INVALID_LOGIN)" in message and "TEST_NS_TOKEN_SECRET" in message
    assert account.login_audit()[-1]["reason"] == "invalid signature"
    assert connector.stats.get("retries", 0) == 0  # a refused login is not retried


# --- OAuth 2.0 client credentials -----------------------------------------------------------------------------------


def private_pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("algorithm", ["ES256", "PS256"])
def test_client_credentials_flow(account: AccountClient, vendor: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path, algorithm: str) -> None:
    key: Any = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vendor.register_certificate("m2m-client", "cert-1", public_pem(key))
    key_file = tmp_path / "netsuite.pem"
    key_file.write_text(private_pem(key))
    monkeypatch.setenv("TEST_NS_CLIENT_ID", "m2m-client")
    monkeypatch.setenv("TEST_NS_CERT_ID", "cert-1")
    monkeypatch.setenv("TEST_NS_KEY_FILE", str(key_file))
    auth = {"flow": "client_credentials", "client_id_env": "TEST_NS_CLIENT_ID", "certificate_id_env": "TEST_NS_CERT_ID",
            "private_key_file_env": "TEST_NS_KEY_FILE", "algorithm": algorithm}
    with create(SYSTEM, settings_for(account.base_url, auth=auth)) as connector:
        assert by_object(connector.discover(ADA))["customer"] == 2
        assert connector.stats["token_requests"] == 1  # cached for the following calls
        account.control("faults", {"expire_rate": 1.0, "burst": 1, "path_pattern": "/suiteql"})
        assert by_object(connector.discover(GRACE))["customer"] == 1
        assert connector.stats["token_requests"] == 2 and connector.stats["relogins"] == 1
    with create(SYSTEM, settings_for(account.base_url, auth=auth)) as connector:  # the next request of the process
        assert by_object(connector.discover(GRACE))["customer"] == 1
        assert connector.stats.get("token_requests", 0) == 0  # the token is the process's, not the connector's
    vendor.register_certificate("m2m-client", "cert-1", public_pem(ec.generate_private_key(ec.SECP256R1())))
    forget_limiters()  # the kept token would still serve until it expires
    with create(SYSTEM, settings_for(account.base_url, auth=auth)) as connector:
        with pytest.raises(ConnectorError) as failure:
            connector.discover(ADA)
    assert_clean(failure.value, private_pem(key)[40:80])
    assert "NetSuite refused the OAuth 2.0 client credentials" in str(failure.value)


# --- configuration -------------------------------------------------------------------------------------------------


def test_info_and_the_registry_contract(account: AccountClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._MODULES, "netsuite", "connectors.netsuite")  # type: ignore[index]
    built = registry.build_connector(SYSTEM, "netsuite", settings_for(account.base_url))
    assert isinstance(built, NetSuiteConnector)
    info = built.info
    assert (info.kind, info.version, info.max_batch, info.rate_limit_per_second) == ("netsuite", "netsuite/1", 1, 5000)
    assert info.objects == ("customer", "contact", "invoice", "cashSale", "creditMemo", "customerPayment",
                            "customerRefund", "customerDeposit")
    built.close()


SECRET = "s3cr3t-Value-9f8e"


@pytest.mark.parametrize("change, path", [
    ({"auth": {**TBA, "consumer_secret": SECRET}}, "auth.consumer_secret"),
    ({"auth": {k: v for k, v in TBA.items() if k != "token_secret_env"}}, "auth.token_secret_env"),
    ({"auth": {**TBA, "token_id_env": SECRET}}, "auth.token_id_env"),
    ({"auth": {"flow": "client_credentials", "client_id_env": "A", "certificate_id_env": "B"}}, "auth.private_key_file"),
    ({"auth": {**TBA, "client_id_env": "A"}}, "auth.client_id_env"),
    ({"auth": {"flow": "oauth1"}}, "auth.flow"),
    ({"base_url_override": "http://sandbox.example.org:8080"}, "base_url_override"),
    ({"base_url": f"https://admin:{SECRET}@1234567.suitetalk.api.netsuite.com"}, "base_url"),
    ({"account_id": "1234567"}, "account_id"),  # as well as account_id_env
    ({"page_size": 2000}, "page_size"),
    ({"objects": {"vendor": {"categories": ["identity"]}}}, "objects.vendor"),
    ({"objects": {"customer": {"categories": ["gossip"]}}}, "objects.customer.categories.0"),
    ({"objects": {"customer": {"categories": ["identity"], "anonymise": {"phone": None}}}}, "objects.customer.anonymise"),
    ({"objects": {"customer": {"categories": ["identity"], "anonymise": {"email": "[erased]"}}}},
     "objects.customer.anonymise.email"),
    ({"objects": {"customer": {"categories": ["identity"], "anonymise": {"email": None, "entityId": "{name}"}}}},
     "objects.customer.anonymise.entityId"),
    ({"transactions": {"types": ["Journal"]}}, "transactions.types"),
    ({"transactions": {"anonymise": {"total": 0}}}, "transactions.anonymise.total"),
    ({"tax_jurisdictions": None}, "tax_jurisdictions"),
    ({"tax_jurisdictions": {**TAX, "default": "FR"}}, "tax_jurisdictions.default"),
    ({"tax_jurisdictions": {**TAX, "by_subsidiary": {"2": "FR"}}}, "tax_jurisdictions.by_subsidiary.2"),
    ({"tax_jurisdictions": {**TAX, "fiscal_year_end": "03-31"}}, "tax_jurisdictions.fiscal_year_end"),
    ({"tax_retention": {"jurisdiction": "US", "years": 7}}, "tax_retention"),  # the figures live in policy.yaml
    ({"tax_jurisdictions": {**TAX, "by_subsidiary": {"uk": "GB"}}}, "tax_jurisdictions.by_subsidiary.uk"),
    ({"token_secret": SECRET}, "token_secret"),
    ({"extra_setting": 1}, "extra_setting"),
])  # fmt: skip
def test_config_errors_name_the_field_and_never_echo_secrets(change: dict[str, Any], path: str) -> None:
    settings = {**settings_for("http://127.0.0.1:9"), **change}
    with pytest.raises(ConnectorConfigError) as failure:
        create(SYSTEM, settings)
    message = str(failure.value)
    assert f"systems.{SYSTEM}.settings.{path}" in message, message
    assert SECRET not in message and DEMO_CONSUMER_SECRET not in message


def test_missing_or_malformed_environment_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_NS_CONSUMER_SECRET")
    with pytest.raises(ConnectorConfigError, match=r"settings\.auth\.consumer_secret_env: environment variable "
                                                   r"TEST_NS_CONSUMER_SECRET is not set"):
        create(SYSTEM, settings_for("http://127.0.0.1:9"))
    monkeypatch.setenv("TEST_NS_CONSUMER_SECRET", DEMO_CONSUMER_SECRET)
    monkeypatch.setenv("TEST_NS_ACCOUNT", "acme corp")
    with pytest.raises(ConnectorConfigError, match=r"settings\.account_id_env: not a NetSuite account id"):
        create(SYSTEM, settings_for("http://127.0.0.1:9"))
    monkeypatch.setenv("TEST_NS_ACCOUNT", DEMO_ACCOUNT_ID)
    monkeypatch.setenv("TEST_NS_OVERRIDE", "https://1234567.suitetalk.api.netsuite.com")
    settings = settings_for("http://127.0.0.1:9", base_url_override_env="TEST_NS_OVERRIDE")
    del settings["base_url_override"]
    with pytest.raises(ConnectorConfigError, match=r"settings\.base_url_override_env: overrides are for loopback"):
        create(SYSTEM, settings)
    monkeypatch.setenv("TEST_NS_KEY", "not a key")
    auth = {"flow": "client_credentials", "client_id_env": "TEST_NS_ACCOUNT", "certificate_id_env": "TEST_NS_ACCOUNT",
            "private_key_env": "TEST_NS_KEY"}
    with pytest.raises(ConnectorConfigError, match=r"settings\.auth\.private_key_env: not an unencrypted PEM"):
        create(SYSTEM, settings_for("http://127.0.0.1:9", auth=auth))


def test_without_an_override_the_account_host_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NS_ACCOUNT", "1234567_sb1")
    settings = settings_for("http://127.0.0.1:9")
    del settings["base_url_override"]
    with create(SYSTEM, settings) as connector:
        assert connector._base_url == "https://1234567-sb1.suitetalk.api.netsuite.com"
        assert connector._account_id == "1234567_SB1"  # the realm
