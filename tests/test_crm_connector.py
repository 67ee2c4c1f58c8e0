"""The CRM SQL connector against the seeded demo CRM: exact matching, export, erasure, verification, config.

Expected matches are computed independently of the connector (plain Python over every row), so
the tests check the SQL against an oracle rather than against itself.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from connectors.base import (
    ConnectorConfigError,
    ConnectorError,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    RecordRef,
    Subject,
)
from connectors.crm_sql import CrmSqlConnector, create
from connectors.registry import build_connector
from sandbox.crm_seed import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT, TABLES, main, seed_crm

SYSTEM = "crm"

OBJECTS: dict[str, Any] = {
    "contacts": {
        "table": "contacts",
        "key": "id",
        "match": {"column": "email"},
        "categories": ["identity", "contact", "technical", "marketing"],
        "anonymise": {
            "email": "[erased]",
            "first_name": "[erased]",
            "last_name": "[erased]",
            "company": None,
            "title": None,
            "phone": None,
            "last_login_at": None,
            "marketing_opt_in": False,
        },
    },
    "leads": {
        "table": "leads",
        "key": "id",
        "match": {"column": "email"},
        "categories": ["identity", "contact", "marketing"],
    },
    "quote_requests": {
        "table": "quote_requests",
        "key": "id",
        "match": {"parent": "contacts", "column": "contact_id"},
        "categories": ["profile"],
    },
    "orders": {
        "table": "orders",
        "key": "id",
        "match": {"parent": "contacts", "column": "contact_id"},
        "categories": ["transaction", "financial", "contact"],
        "anchor_date": "ordered_at",
        "anonymise": {
            "billing_name": "[erased]",
            "billing_address": "[erased]",
            "shipping_address": "[erased]",
            "contact_id": None,
        },
    },
    "invoices": {
        "table": "invoices",
        "key": "id",
        "match": {"parent": "orders", "column": "order_id"},
        "categories": ["transaction", "financial", "contact"],
        "anchor_date": "issued_at",
        "anonymise": {"billing_name": "[erased]", "billing_address": "[erased]", "order_id": None},
    },
    "newsletter_subscriptions": {
        "table": "newsletter_subscriptions",
        "key": "id",
        "match": {"column": "email"},
        "categories": ["marketing", "contact"],
    },
    "chat_transcripts": {
        "table": "chat_transcripts",
        "key": "id",
        "match": {"column": "email"},
        "categories": ["usage", "contact"],
    },
    "survey_answers": {
        "table": "survey_answers",
        "key": "id",
        "match": {"parent": "contacts", "column": "contact_id"},
        "categories": ["profile"],
    },
    "web_analytics_events": {
        "table": "web_analytics_events",
        "key": "id",
        "match": {"parent": "contacts", "column": "contact_id"},
        "categories": ["technical", "usage"],
    },
}

ADA = Subject(email=ERASURE_SUBJECT, identity_hash="hash-ada")
GRACE = Subject(email=ACCESS_SUBJECT, identity_hash="hash-grace")


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded once per module; each test gets its own copy (seeding is cheap, copying cheaper)."""
    return seed_crm(str(tmp_path_factory.mktemp("crm") / "crm.sqlite"), contacts=30).path


@pytest.fixture
def db(tmp_path: Path, template_db: Path) -> Path:
    path = tmp_path / "crm.sqlite"
    shutil.copyfile(template_db, path)
    return path


def settings_for(db: Path, **changes: Any) -> dict[str, Any]:
    return {"url": f"sqlite:///{db}", "objects": json.loads(json.dumps(OBJECTS)), **changes}


@pytest.fixture
def crm(db: Path) -> Iterator[CrmSqlConnector]:
    connector = build_connector(SYSTEM, "crm_sql", settings_for(db))
    assert isinstance(connector, CrmSqlConnector)
    yield connector
    connector.close()


def rows(db: Path, table: str) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in conn.execute(f"SELECT * FROM {table}")}


def snapshot(db: Path) -> dict[tuple[str, int], dict[str, Any]]:
    return {(table, key): row for table in TABLES for key, row in rows(db, table).items()}


def expected_matches(db: Path, email: str) -> set[tuple[str, str]]:
    """The oracle: (object, id) of every row tied to `email`, in plain Python over all rows."""
    direct = {
        name: {
            k
            for k, r in rows(db, spec["table"]).items()
            if (r[spec["match"]["column"]] or "").strip().lower() == email
        }
        for name, spec in OBJECTS.items()
        if "parent" not in spec["match"]
    }
    found = dict(direct)
    for name in ("quote_requests", "orders", "survey_answers", "web_analytics_events", "invoices"):
        spec = OBJECTS[name]
        parents = found[spec["match"]["parent"]]
        found[name] = {k for k, r in rows(db, spec["table"]).items() if r[spec["match"]["column"]] in parents}
    return {(name, str(key)) for name, keys in found.items() for key in keys}


def decoy_footprint(db: Path) -> dict[str, int]:
    """How many rows each table holds for the decoy people (by their exact stored addresses)."""
    contacts = {k for k, r in rows(db, "contacts").items() if r["email"] in DECOY_EMAILS}
    orders = {k for k, r in rows(db, "orders").items() if r["contact_id"] in contacts}
    counts = {"contacts": len(contacts), "orders": len(orders)}
    for table in ("leads", "newsletter_subscriptions", "chat_transcripts"):
        counts[table] = sum(r["email"] in DECOY_EMAILS for r in rows(db, table).values())
    for table in ("quote_requests", "survey_answers", "web_analytics_events"):
        counts[table] = sum(r["contact_id"] in contacts for r in rows(db, table).values())
    counts["invoices"] = sum(r["order_id"] in orders for r in rows(db, "invoices").values())
    return counts


def decide(refs: list[RecordRef], **by_object: ErasureAction) -> list[ErasureDecision]:
    return [ErasureDecision(ref, by_object.get(ref.object, ErasureAction.DELETE)) for ref in refs]


def tax_policy(refs: list[RecordRef]) -> list[ErasureDecision]:
    """Orders and invoices from 2025 kept for tax, the 2016 ones anonymised, everything else deleted."""
    decisions = []
    for ref in refs:
        if ref.object in ("orders", "invoices") and ref.anchor_date and ref.anchor_date.year >= 2020:
            until = date(ref.anchor_date.year + 7, 4, 5)
            decisions.append(ErasureDecision(ref, ErasureAction.RETAIN, "UK HMRC 6 years", until))
        elif ref.object in ("orders", "invoices"):
            decisions.append(ErasureDecision(ref, ErasureAction.ANONYMISE))
        else:
            decisions.append(ErasureDecision(ref, ErasureAction.DELETE))
    return decisions


def key_set(refs: list[RecordRef]) -> set[tuple[str, str]]:
    return {(ref.object, ref.id) for ref in refs}


# --- discovery --------------------------------------------------------------------------------------


def test_discovery_matches_every_stored_variant_of_the_subject_and_nothing_else(
    crm: CrmSqlConnector, db: Path
) -> None:
    stored = {r["email"] for r in rows(db, "contacts").values()} | {
        r["email"] for r in rows(db, "leads").values()
    }
    assert {"Ada.Lovelace@Example.com ", "ADA.LOVELACE@example.com"} <= stored  # the seed's awkward spellings

    refs = crm.discover(ADA)

    assert key_set(refs) == expected_matches(db, ERASURE_SUBJECT)
    assert {ref.object for ref in refs} == set(OBJECTS)  # Ada has data in every table
    assert crm.discover(Subject(" Ada.LOVELACE@Example.COM ", "h")) == refs  # an unnormalised input too
    decoy_contacts = {str(k) for k, r in rows(db, "contacts").items() if r["email"] in DECOY_EMAILS}
    assert not {ref.id for ref in refs if ref.object == "contacts"} & decoy_contacts
    assert all(ref.system == SYSTEM and ref.categories for ref in refs)


@pytest.mark.parametrize("decoy", ["%@example.com", "ada_lovelace@example.com", "ada.lovelace%@example.com"])
def test_a_wildcard_address_as_subject_matches_only_its_own_rows(
    crm: CrmSqlConnector, db: Path, decoy: str
) -> None:
    refs = crm.discover(Subject(decoy, "h"))

    contacts = [ref for ref in refs if ref.object == "contacts"]
    assert len(contacts) == 1
    assert rows(db, "contacts")[int(contacts[0].id)]["email"] == decoy
    assert key_set(refs) == expected_matches(db, decoy)
    assert len(refs) == len(TABLES)  # the decoy's one row in each table


def test_children_are_found_through_parent_chains(crm: CrmSqlConnector, db: Path) -> None:
    refs = crm.discover(ADA)

    ada_contact = next(ref for ref in refs if ref.object == "contacts")
    orders = {ref.id: ref for ref in refs if ref.object == "orders"}
    invoices = [ref for ref in refs if ref.object == "invoices"]
    order_rows = rows(db, "orders")
    assert all(order_rows[int(i)]["contact_id"] == int(ada_contact.id) for i in orders)
    assert {ref.anchor_date for ref in invoices} == {date(2016, 5, 9), date(2025, 3, 14)}
    assert {str(rows(db, "invoices")[int(ref.id)]["order_id"]) for ref in invoices} == set(orders)
    assert invoices[0].categories == (DataCategory.TRANSACTION, DataCategory.FINANCIAL, DataCategory.CONTACT)


# --- export -----------------------------------------------------------------------------------------


def test_export_gives_every_column_of_every_matched_row(crm: CrmSqlConnector, db: Path) -> None:
    refs = crm.discover(GRACE)

    records = list(crm.export(refs))

    assert key_set([r.ref for r in records]) == key_set(refs)
    for record in records:
        stored = rows(db, OBJECTS[record.ref.object]["table"])[int(record.ref.id)]
        assert set(record.fields) == set(stored)
    json.dumps([r.fields for r in records])  # JSON-friendly throughout
    invoice = next(r.fields for r in records if r.ref.object == "invoices")
    assert isinstance(invoice["amount"], str) and invoice["amount"].count(".") == 1
    assert date.fromisoformat(invoice["issued_at"])


# --- erasure ----------------------------------------------------------------------------------------


def test_erase_deletes_anonymises_and_retains_exactly_as_decided(crm: CrmSqlConnector, db: Path) -> None:
    refs = crm.discover(ADA)
    decisions = tax_policy(refs)
    before, decoys_before, grace_before = snapshot(db), decoy_footprint(db), crm.discover(GRACE)

    receipt = crm.erase(decisions)

    after = snapshot(db)
    outcomes = {o.ref.key: o for o in receipt.outcomes}
    assert not receipt.failed and len(outcomes) == len(refs)
    for decision in decisions:
        row_key = (OBJECTS[decision.ref.object]["table"], int(decision.ref.id))
        outcome = outcomes[decision.ref.key]
        if decision.action is ErasureAction.RETAIN:
            assert after[row_key] == before[row_key]
            assert (outcome.basis, outcome.retain_until) == (decision.basis, decision.retain_until)
        elif decision.action is ErasureAction.ANONYMISE:
            spec = OBJECTS[decision.ref.object]["anonymise"]
            assert {col: after[row_key][col] for col in spec} == spec
            assert set(outcome.fields_cleared) == set(spec)
        elif decision.ref.object == "contacts":
            # Her 2025 order is retained and still points at her contact, so the database refuses
            # the delete: the contact is anonymised instead, and the outcome says so.
            assert outcome.action is ErasureAction.ANONYMISE
            assert after[row_key]["email"] == "[erased]" and after[row_key]["first_name"] == "[erased]"
        else:
            assert row_key not in after and outcome.action is ErasureAction.DELETE
    anonymised_invoice = next(
        after[("invoices", int(d.ref.id))] for d in decisions
        if d.ref.object == "invoices" and d.action is ErasureAction.ANONYMISE
    )  # fmt: skip
    assert anonymised_invoice["order_id"] is None and anonymised_invoice["invoice_number"].startswith(
        "INV-2016"
    )
    touched = {(OBJECTS[r.object]["table"], int(r.id)) for r in refs}
    assert {k: v for k, v in before.items() if k not in touched} == {
        k: v for k, v in after.items() if k not in touched
    }
    assert decoy_footprint(db) == decoys_before and crm.discover(GRACE) == grace_before
    assert receipt.vendor_receipt_id and receipt.vendor_receipt_id.startswith("crm-sql:")
    assert receipt.api_calls > 0


def test_erasing_twice_succeeds_and_changes_nothing_more(crm: CrmSqlConnector, db: Path) -> None:
    decisions = tax_policy(crm.discover(ADA))
    first = crm.erase(decisions)
    after_first = snapshot(db)

    second = crm.erase(decisions)

    assert snapshot(db) == after_first
    assert not second.failed
    for outcome in second.outcomes:
        assert outcome.already_gone == (outcome.action is not ErasureAction.RETAIN)
        assert outcome.fields_cleared == ()
    assert second.vendor_receipt_id == first.vendor_receipt_id


@pytest.mark.parametrize("first", [None, "chat_transcripts"])
def test_verify_erased_finds_nothing_after_a_full_delete(db: Path, first: str | None) -> None:
    settings = settings_for(db)
    if first:  # chats match by e-mail but reference contacts: only the schema says they go first
        settings["objects"] = {first: settings["objects"].pop(first), **settings["objects"]}
    with create(SYSTEM, settings) as crm:
        refs = crm.discover(ADA)

        receipt = crm.erase(decide(refs))

        assert not receipt.failed
        assert {o.action for o in receipt.outcomes} == {
            ErasureAction.DELETE
        }  # no refusal: children went first
        assert crm.verify_erased(ADA) == []
    remaining = snapshot(db)
    assert not any((OBJECTS[r.object]["table"], int(r.id)) in remaining for r in refs)


def test_verify_erased_returns_what_was_retained(crm: CrmSqlConnector) -> None:
    refs = crm.discover(ADA)
    keep = {"contacts", "orders", "invoices"}  # e.g. a legal-claims hold on the account
    decisions = [
        ErasureDecision(ref, ErasureAction.RETAIN, "GDPR 17(3)(e)") if ref.object in keep
        else ErasureDecision(ref, ErasureAction.DELETE)
        for ref in refs
    ]  # fmt: skip

    assert not crm.erase(decisions).failed

    assert key_set(crm.verify_erased(ADA)) == key_set([r for r in refs if r.object in keep])


def test_anonymising_an_object_without_a_mapping_is_refused_and_touches_nothing(
    crm: CrmSqlConnector, db: Path
) -> None:
    lead = next(ref for ref in crm.discover(ADA) if ref.object == "leads")
    before = rows(db, "leads")[int(lead.id)]

    receipt = crm.erase([ErasureDecision(lead, ErasureAction.ANONYMISE)])

    (outcome,) = receipt.failed
    assert outcome.error and "objects.leads.anonymise" in outcome.error
    assert rows(db, "leads")[int(lead.id)] == before


def test_a_refused_delete_without_an_anonymise_mapping_is_not_done(db: Path) -> None:
    settings = settings_for(db)
    del settings["objects"]["contacts"]["anonymise"]
    with create(SYSTEM, settings) as crm:
        refs = crm.discover(ADA)
        contact = next(ref for ref in refs if ref.object == "contacts")

        receipt = crm.erase(decide(refs, orders=ErasureAction.RETAIN, invoices=ErasureAction.RETAIN))

    (outcome,) = receipt.failed
    assert outcome.ref == contact and "still reference" in (outcome.error or "")
    assert rows(db, "contacts")[int(contact.id)]["email"] == "Ada.Lovelace@Example.com "
    assert ERASURE_SUBJECT not in (outcome.error or "").lower()


# --- configuration and errors -----------------------------------------------------------------------


def _orders_parent_invoices(settings: dict[str, Any]) -> None:
    settings["objects"]["orders"]["match"] = {"parent": "invoices", "column": "contact_id"}


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda s: s["objects"]["orders"].update(table="ordrs"), "settings.objects.orders.table", "ordrs"),
        (
            lambda s: s["objects"]["leads"]["match"].update(column="mail"),
            "objects.leads.match.column",
            "mail",
        ),
        (
            lambda s: s["objects"]["orders"].update(anchor_date="placed"),
            "objects.orders.anchor_date",
            "placed",
        ),
        (lambda s: s.update(url_env="DSR_CRM_URL"), "settings.url_env", "not both"),
        (lambda s: s.pop("url"), "settings.url", "url_env"),
        (_orders_parent_invoices, "objects.orders.match.parent", "cycle (orders -> invoices -> orders)"),
        (
            lambda s: s["objects"]["orders"]["match"].update(parent="people"),
            "objects.orders.match.parent",
            "people",
        ),
        (lambda s: s["objects"]["leads"].update(tabel="leads"), "objects.leads.tabel", "not permitted"),
        (
            lambda s: s["objects"]["leads"].update(categories=["gossip"]),
            "objects.leads.categories.0",
            "identity",
        ),
        (
            lambda s: s["objects"]["orders"]["anonymise"].pop("contact_id"),
            "objects.orders.anonymise",
            "contact_id",
        ),
        (
            lambda s: s["objects"]["contacts"]["anonymise"].update(email=None),
            "objects.contacts.anonymise.email",
            "NOT NULL",
        ),
        (lambda s: s.update(url="postgresql://crm:s3cret@db/crm"), "settings.url", "password"),
    ],
)
def test_bad_settings_name_the_field(db: Path, change: Any, path: str, words: str) -> None:
    settings = settings_for(db)
    change(settings)

    with pytest.raises(ConnectorConfigError) as caught:
        build_connector(SYSTEM, "crm_sql", settings)

    message = str(caught.value)
    assert f"systems.{SYSTEM}." in message and path in message and words in message
    assert "s3cret" not in message


def test_url_env_reads_the_named_variable(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(db, url_env="DSR_CRM_URL")
    monkeypatch.setenv("DSR_CRM_URL", settings.pop("url"))

    with create(SYSTEM, settings) as crm:
        found = [int(ref.id) for ref in crm.discover(GRACE) if ref.object == "contacts"]
    # The database the variable names, and Grace's own contact row in it (not merely "something").
    graces = [key for key, row in rows(db, "contacts").items() if (row["email"] or "").strip().lower() == ACCESS_SUBJECT]
    assert graces and found == graces


def test_a_missing_url_env_variable_is_named(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(db, url_env="DSR_CRM_URL")
    del settings["url"]
    monkeypatch.delenv("DSR_CRM_URL", raising=False)

    with pytest.raises(ConnectorConfigError, match=r"systems\.crm\.settings\.url_env: .*DSR_CRM_URL"):
        build_connector(SYSTEM, "crm_sql", settings)


def test_a_url_pasted_into_url_env_is_refused_without_echoing_it(db: Path) -> None:
    settings = settings_for(db, url_env="postgresql://crm:s3cret@db/crm")
    del settings["url"]

    with pytest.raises(ConnectorConfigError, match=r"systems\.crm\.settings\.url_env") as caught:
        build_connector(SYSTEM, "crm_sql", settings)
    assert "s3cret" not in str(caught.value)


def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"

    with pytest.raises(ConnectorConfigError, match=r"settings\.url: .*does not exist"):
        build_connector(SYSTEM, "crm_sql", settings_for(missing))
    assert not missing.exists()


def test_unknown_connector_kind() -> None:
    with pytest.raises(
        ValueError, match=r"^systems\.crm\.kind: unknown connector kind 'ldap' \(known: [a-z_, ]*crm_sql[a-z_, ]*\)$"
    ):
        build_connector(SYSTEM, "ldap", {})


def test_database_errors_carry_no_personal_data(crm: CrmSqlConnector, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE leads RENAME TO leads_old")  # the schema changes under the connector

    with pytest.raises(ConnectorError) as caught:
        crm.discover(ADA)

    chain = f"{caught.value} {caught.value.__cause__}"
    assert "systems.crm: discover failed" in str(caught.value)
    assert ERASURE_SUBJECT not in chain.lower() and "lovelace" not in chain.lower()


def test_the_schema_is_read_once_per_process_until_it_expires(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import sqlalchemy as sa

    from connectors.crm_sql import schema

    schema.SCHEMAS.clear()
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        build_connector(SYSTEM, "crm_sql", settings_for(db)).close()
        first = len(statements)
        again = build_connector(SYSTEM, "crm_sql", settings_for(db))
        assert again.discover(ADA)  # the kept schema still finds her rows
        again.close()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert first >= len(TABLES)  # the catalogue read for each table of the data map
    assert not [s for s in statements[first:] if s.upper().startswith("PRAGMA")]

    with sqlite3.connect(db) as conn:  # a migration renames a table of the data map
        conn.execute("ALTER TABLE leads RENAME TO leads_old")
    later = time.monotonic() + schema.SCHEMA_TTL_SECONDS + 1
    monkeypatch.setattr(schema.SCHEMAS, "clock", lambda: later)
    with pytest.raises(ConnectorConfigError, match=r"settings\.objects\.leads\.table: no table 'leads'"):
        build_connector(SYSTEM, "crm_sql", settings_for(db))


def test_an_empty_identity_matches_nothing_rather_than_every_blank_row(crm: CrmSqlConnector) -> None:
    with pytest.raises(ConnectorError, match="empty identity"):
        crm.discover(Subject("  ", "h"))


def test_connector_declares_itself(crm: CrmSqlConnector) -> None:
    info = crm.info
    assert (info.system, info.kind, info.version, info.max_batch) == (SYSTEM, "crm_sql", "crm_sql/1", 500)
    assert tuple(info.objects) == tuple(OBJECTS)


# --- the seed ---------------------------------------------------------------------------------------


def test_seeding_again_gives_the_same_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "crm.sqlite"
    assert main([str(path), "--contacts", "5"]) == 0
    first = list(sqlite3.connect(path).iterdump())

    info = seed_crm(f"sqlite:///{path}", contacts=5)

    assert list(sqlite3.connect(path).iterdump()) == first
    assert capsys.readouterr().out.startswith(f"seeded {path}: {info.total_rows} rows (contacts=")
