"""Identities built to widen a match never reach anyone else, in any connector, against the running sandboxes.

Each hostile string goes to the connector as a `Subject` built by hand (bypassing intake's validation and
normalisation, as a connector bug or a new door might): SQL LIKE wildcards, quotes and backslashes (SQL,
SOQL, SuiteQL), `OR 1=1`, HubSpot `*` tricks, case and Unicode look-alikes, padding, plus-addressing.

The rule, for every system: what a hostile string finds is at most what its exact address finds (trimmed
and lower-cased, the contract's normalisation: " Ada@X " is Ada), and nothing when no such address is
stored. Then everything found is erased, and the sandbox's own state shows that nothing else went: every
record that vanished was one of those found, and every decoy and every untargeted subject is still there.

Figures for docs/reliability.md: `.venv/bin/python -m pytest tests/test_injection.py -q -s` prints, per
system, the strings tried, the records found and erased, and the decoys checked.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import sandbox.google_ads as gads
import sandbox.linkedin as li
from connectors.registry import build_connector
from dsr.contract import ConnectorError, ErasureAction, ErasureDecision, RecordRef, Subject
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT, TABLES
from sandbox.crm_seed import DECOY_EMAILS as CRM_DECOYS
from sandbox.hubspot import DECOY_EMAILS as HUBSPOT_DECOYS
from sandbox.kit import SandboxServer
from sandbox.netsuite import DECOY_EMAILS as NETSUITE_DECOYS
from sandbox.salesforce import DECOY_EMAILS as SALESFORCE_DECOYS

HOSTILE: tuple[str, ...] = (
    # SQL LIKE wildcards and their escapes: matched by equality they are ordinary characters
    "%", "_", "%%", "%@example.com", "ada.lovelace%", "%lovelace%", "ada_lovelace@example.com",
    "ada.lovelace@example.co_", "ada.lovelace@example.c%", "\\%@example.com", "ada.lovelace\\@example.com",
    # quotes and boolean tricks for SQL, SOQL and SuiteQL
    "' OR 1=1 --", "x@example.com' OR Email != '", "x@example.com\\' OR Email != \\'", "' OR ''='",
    "o'brien@example.com", "obrien@example.com' OR email IS NOT NULL OR '", "\") OR (1=1",
    # HubSpot search: wildcards and tokens it could read as a pattern
    "*", "*@example.com", "ada*", "ada.lovelace@*", "ada lovelace", "lovelace",
    # case, padding and Unicode look-alikes (Cyrillic a, fullwidth letters, zero-width space, NUL)
    "ADA.LOVELACE@EXAMPLE.COM", " ada.lovelace@example.com ", "\u0430da.lovelace@example.com",
    "ada.lovelace@ex\u0430mple.com", "\uff41\uff44\uff41.lovelace@example.com", "ada.lovelace@example.com\u200b",
    "grace.hopper@example.org\x00", "ada.lovelace@example.com\n",
    # plus-addressing and dots: other mailboxes, never the subject
    "ada.lovelace+x@example.com", "ada.lovelace+ads@example.com", "adalovelace@example.com",
)
SUBJECTS = (ERASURE_SUBJECT, ACCESS_SUBJECT)
#: HubSpot (search: 4 calls/s), NetSuite (10/s) and Salesforce (25/s) pace every call: the default suite sends them a third of
#: the strings, one of each kind; DSR_INJECTION_FULL=1 sends all (the figures in docs/reliability.md).
PACED = {"hubspot", "netsuite", "salesforce"}
FULL = os.environ.get("DSR_INJECTION_FULL") == "1"


def exact(address: str) -> str:
    """The contract's normalisation: what a connector is allowed to treat as the same person."""
    return address.strip().lower()


def subject(address: str) -> Subject:
    return Subject(email=address, identity_hash="hmac-sha256:" + "0" * 32)


# -- what each sandbox holds, read from the sandbox itself ----------------------------------------------

Snapshot = dict[tuple[str, str], str | None]  # (object, id) -> its owner's stored address, where it has one


def _crm(settings: dict[str, Any], _: dict[str, SandboxServer]) -> Snapshot:
    path = settings["url"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        contacts = dict(db.execute("SELECT id, email FROM contacts").fetchall())
        orders = dict(db.execute("SELECT id, contact_id FROM orders").fetchall())
        found: Snapshot = {}
        for table in TABLES:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for row in db.execute(f"SELECT * FROM {table}").fetchall():
                record = dict(zip([c[0] for c in db.execute(f"SELECT * FROM {table} LIMIT 0").description], row,
                                  strict=True))
                owner = record.get("email") if "email" in columns else None
                if owner is None and record.get("contact_id") is not None:
                    owner = contacts.get(record["contact_id"])
                if owner is None and record.get("order_id") is not None:
                    owner = contacts.get(orders.get(record["order_id"]))
                found[(table, str(record["id"]))] = owner
        return found


def _hubspot(_: dict[str, Any], servers: dict[str, SandboxServer]) -> Snapshot:
    vendor: Any = servers["hubspot"].vendor
    with vendor._lock:  # the sandbox's own store (tests may read it; connectors never do)
        return {(kind, oid): obj.properties.get("email") for kind, objects in vendor._state.objects.items()
                for oid, obj in objects.items()}


def _salesforce(settings: dict[str, Any], servers: dict[str, SandboxServer]) -> Snapshot:
    vendor: Any = servers["salesforce"].vendor
    found: Snapshot = {}
    for name in settings["objects"]:
        for row in vendor.records(name):
            found[(name, row["Id"][:15])] = row.get("Email") or row.get("SuppliedEmail")  # the id's stable part
    return found


def _netsuite(_: dict[str, Any], servers: dict[str, SandboxServer]) -> Snapshot:
    vendor: Any = servers["netsuite"].vendor
    with vendor._lock:
        return {(rtype, str(rid)): row.get("email") for rtype, rows in vendor._rows.items() for rid, row in rows.items()}


SNAPSHOTS: dict[str, tuple[Callable[[dict[str, Any], dict[str, SandboxServer]], Snapshot], tuple[str, ...]]] = {
    "crm": (_crm, CRM_DECOYS),
    "hubspot": (_hubspot, HUBSPOT_DECOYS),
    "salesforce": (_salesforce, SALESFORCE_DECOYS),
    "netsuite": (_netsuite, NETSUITE_DECOYS),
}
TALLY: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _print_tally() -> Any:
    yield
    print("\n" + "\n".join(TALLY))


def _connector(systems_file: Path, name: str) -> Any:
    system = yaml.safe_load(systems_file.read_text())["systems"][name]
    return build_connector(name, system["kind"], system["settings"]), system["settings"]


def _delete(refs: list[RecordRef]) -> list[ErasureDecision]:
    return [ErasureDecision(ref=ref, action=ErasureAction.DELETE, basis="test: hostile identity")
            for ref in refs]


@pytest.mark.parametrize("system", sorted(SNAPSHOTS))
def test_hostile_identities_find_only_their_exact_match_and_spare_every_decoy(
        system: str, systems_file: Path, sandboxes: dict[str, SandboxServer]) -> None:
    connector, settings = _connector(systems_file, system)
    snapshot, decoys = SNAPSHOTS[system]
    try:
        before = snapshot(settings, sandboxes)
        stored = {exact(owner) for owner in before.values() if owner}
        assert {exact(d) for d in decoys} <= stored, "the sandbox must hold its look-alike decoys"
        targeted = {exact(h) for h in HOSTILE}
        erased: set[str] = set()
        found_total = refused = 0
        tried = HOSTILE if FULL or system not in PACED else HOSTILE[::3] + ("%@example.com", "o'brien@example.com")
        for hostile in tried:
            try:
                refs = connector.discover(subject(hostile))
            except ConnectorError as error:  # refusing the value outright is safe (NetSuite: control characters)
                assert hostile not in str(error)
                refused += 1
                continue
            if exact(hostile) in stored:
                allowed = {r.key for r in connector.discover(subject(exact(hostile)))}
                assert {r.key for r in refs} <= allowed, (hostile, "found more than the exact address")
            else:
                assert refs == [], (hostile, "matched an address that is not this one", refs[:3])
            found_total += len(refs)
            if refs:
                receipt = connector.erase(_delete(refs))
                erased |= {o.ref.id[:15] if system == "salesforce" else o.ref.id for o in receipt.outcomes}
        after = snapshot(settings, sandboxes)
        vanished = {key for key in before if key not in after}
        assert {rid for _, rid in vanished} <= erased, "a record vanished that no hostile identity found"
        for (obj, rid), owner in before.items():  # every decoy and untargeted subject is untouched
            if owner and exact(owner) not in targeted:
                assert after.get((obj, rid)) == owner, (obj, owner)
        spared = [d for d in (*decoys, *SUBJECTS) if exact(d) not in targeted]
        assert spared, "the decoys must not all be targeted themselves"
        TALLY.append(f"injection {system}: {len(tried)} hostile identities ({refused} refused), {found_total} records found "
                     f"(exact matches only), {len(vanished)} erased, {len(spared)} decoys and subjects intact")
    finally:
        getattr(connector, "close", lambda: None)()


AUDIENCES = {"google_ads": (gads.DECOY_EMAILS, gads.hash_email), "linkedin": (li.DECOY_EMAILS, li.hash_email)}
#: The audiences hash the address; widening there means a normalisation that folds two mailboxes into one.
AUDIENCE_HOSTILE = ("ada.lovelace+x@example.com", "ada.lovelace+ads@example.com", "adalovelace@example.com",
                    "\u0430da.lovelace@example.com", "ada.lovelace@example.com\u200b", "%@example.com", "*",
                    "ada.lovelace@example.co")


@pytest.mark.parametrize("system", sorted(AUDIENCES))
def test_audience_removals_take_only_the_exact_hash(system: str, systems_file: Path,
                                                     sandboxes: dict[str, SandboxServer]) -> None:
    connector, _ = _connector(systems_file, system)
    decoys, hash_email = AUDIENCES[system]
    vendor: Any = sandboxes[system].vendor
    lists = [ref.id for ref in connector.discover(subject(ERASURE_SUBJECT))]

    def members() -> dict[str, set[str]]:
        if system == "linkedin":
            return {segment: set(vendor.members(segment)) for segment in vendor._members}
        return {lid: set(vendor.members(lid)) for lid in vendor._state.lists}

    try:
        before = members()
        tried = AUDIENCE_HOSTILE if FULL else AUDIENCE_HOSTILE[::2]  # each erase is an upload job: seconds
        for hostile in tried:
            who = subject(hostile)
            refs = connector.discover(who)
            assert refs and all(r.id in lists for r in refs)  # write-only: "may be a member" of each list
            receipt = connector.erase(_delete(refs), who)
            assert not receipt.failed, receipt.failed
        after = members()
        allowed = {hash_email(h) for h in tried}
        for lid, hashes in before.items():
            assert hashes - after[lid] <= allowed, lid
        for address in (*decoys, *SUBJECTS):
            if exact(address) not in {exact(h) for h in tried}:
                assert all(hash_email(address) in after[lid] for lid, hashes in before.items()
                           if hash_email(address) in hashes), address
        TALLY.append(f"injection {system}: {len(tried)} hostile identities, "
                     f"{sum(len(h - after[key]) for key, h in before.items())} memberships removed (exact hashes only)")
    finally:
        getattr(connector, "close", lambda: None)()
