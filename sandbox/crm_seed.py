"""Seeds the demo CRM: Precision Optical Technologies' own SQL database of contacts, orders and web activity.

This is the "vendor" side only: plain `sqlite3` and DDL, nothing of the pipeline (sandboxes never
import `dsr` or `connectors`). Every value comes from `random.Random(seed)` and fixed dates, never
from the clock, so the same arguments always give the same database.

Two demo subjects carry a full spread of data, and a set of decoy addresses sits next to them that
an exact, escaped match must never confuse with either subject (LIKE wildcards, suffixes, prefixes,
a neighbouring top-level domain), and a namesake of Ada's at another address.

    python -m sandbox.crm_seed var/demo/crm.sqlite --contacts 200
"""

from __future__ import annotations

import argparse
import random
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sandbox.people import new_person

ERASURE_SUBJECT = "ada.lovelace@example.com"
"""The demo erasure subject; her contact row is stored as ``"Ada.Lovelace@Example.com "``."""

ACCESS_SUBJECT = "grace.hopper@example.org"
"""The demo access subject."""

DECOY_EMAILS: tuple[str, ...] = (
    "ada.lovelace@example.com.attacker.test",  # the subject's address as a prefix
    "xada.lovelace@example.com",  # ... as a suffix
    "ada.lovelace@example.co",  # a neighbouring top-level domain
    "ada_lovelace@example.com",  # `_` is LIKE's single-character wildcard
    "%@example.com",  # `%` is LIKE's any-string wildcard: as a subject it must match only itself
    "ada.lovelace%@example.com",
)
"""Addresses that must never match either demo subject (each has a contact and child rows)."""

LOOKALIKE_EMAILS: tuple[str, ...] = ("ada.lovelace@analytical-engines.example",)
"""Ada's namesakes: her very name and company at another address, opted in to marketing. A right
carried out for Ada that matched on names would change them."""

TABLES: tuple[str, ...] = (
    "contacts",
    "leads",
    "quote_requests",
    "orders",
    "invoices",
    "newsletter_subscriptions",
    "chat_transcripts",
    "survey_answers",
    "web_analytics_events",
)
"""Every table, parents before children."""

# Money is NUMERIC(12,2) and dates are ISO text, which is how SQLite and SQLAlchemy agree on them.
_SCHEMA = """
CREATE TABLE contacts (
    id               INTEGER PRIMARY KEY,
    email            TEXT NOT NULL,
    first_name       TEXT,
    last_name        TEXT,
    company          TEXT,
    title            TEXT,
    phone            TEXT,
    country          TEXT,
    created_at       TIMESTAMP NOT NULL,
    last_login_at    TIMESTAMP,
    marketing_opt_in BOOLEAN NOT NULL DEFAULT 0
);
CREATE TABLE leads (
    id               INTEGER PRIMARY KEY,
    email            TEXT NOT NULL,
    full_name        TEXT,
    company          TEXT,
    source           TEXT,
    created_at       TIMESTAMP NOT NULL,
    last_activity_at TIMESTAMP
);
CREATE TABLE quote_requests (
    id         INTEGER PRIMARY KEY,
    contact_id INTEGER NOT NULL REFERENCES contacts (id),
    product    TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    message    TEXT,
    created_at TIMESTAMP NOT NULL
);
-- contact_id is nullable: guest orders have none, and an anonymised order keeps no link.
CREATE TABLE orders (
    id               INTEGER PRIMARY KEY,
    contact_id       INTEGER REFERENCES contacts (id),
    order_number     TEXT NOT NULL UNIQUE,
    ordered_at       DATE NOT NULL,
    total            NUMERIC(12, 2) NOT NULL,
    currency         TEXT NOT NULL,
    billing_name     TEXT,
    billing_address  TEXT,
    shipping_address TEXT,
    country          TEXT
);
-- order_id is nullable for the same reason: an invoice kept for tax outlives its link to a person.
CREATE TABLE invoices (
    id              INTEGER PRIMARY KEY,
    order_id        INTEGER REFERENCES orders (id),
    invoice_number  TEXT NOT NULL UNIQUE,
    issued_at       DATE NOT NULL,
    amount          NUMERIC(12, 2) NOT NULL,
    tax             NUMERIC(12, 2) NOT NULL,
    billing_name    TEXT,
    billing_address TEXT
);
CREATE TABLE newsletter_subscriptions (
    id             INTEGER PRIMARY KEY,
    email          TEXT NOT NULL,
    list_name      TEXT NOT NULL,
    subscribed_at  TIMESTAMP NOT NULL,
    consent_source TEXT,
    status         TEXT NOT NULL
);
CREATE TABLE chat_transcripts (
    id         INTEGER PRIMARY KEY,
    contact_id INTEGER REFERENCES contacts (id),
    email      TEXT,
    started_at TIMESTAMP NOT NULL,
    transcript TEXT NOT NULL
);
CREATE TABLE survey_answers (
    id          INTEGER PRIMARY KEY,
    contact_id  INTEGER NOT NULL REFERENCES contacts (id),
    survey      TEXT NOT NULL,
    question    TEXT NOT NULL,
    answer      TEXT,
    answered_at TIMESTAMP NOT NULL
);
CREATE TABLE web_analytics_events (
    id          INTEGER PRIMARY KEY,
    contact_id  INTEGER NOT NULL REFERENCES contacts (id),
    ip_address  TEXT,
    user_agent  TEXT,
    page        TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL
);
"""

_FIRST_NAMES = (
    "Alice", "Bruno", "Chloe", "Daniel", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya",
    "Lucas", "Marta", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tessa", "Umar", "Vera",
    "Wei", "Ximena", "Yusuf", "Zofia",
)  # fmt: skip
_LAST_NAMES = (
    "Andersen", "Barbosa", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jansen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quispe", "Rossi", "Silva",
    "Tanaka", "Usman", "Visser", "Walsh", "Yilmaz", "Zimmer",
)  # fmt: skip
_COMPANIES = (
    ("Northwind Networks", "northwind.example"),
    ("Bluewater Datacentres", "bluewater-dc.example"),
    ("Helix Carrier Services", "helixcarrier.example"),
    ("Lumen Edge Hosting", "lumenedge.example"),
    ("Meridian Fibre Co-op", "meridianfibre.example"),
    ("Orbital Exchange", "orbital-ix.example"),
    ("Polar Telecom", "polartel.example"),
    ("Redwood University IT", "redwood-uni.example"),
    ("Summit Broadcast", "summitbc.example"),
    ("Tidal Cloud", "tidalcloud.example"),
)
_TITLES = (
    "Network Engineer", "Senior Network Architect", "Procurement Manager", "Datacenter Operations Lead",
    "IT Director", "Field Technician", "CTO", "Purchasing Agent",
)  # fmt: skip
_COUNTRIES = {  # code -> (name, currency, tax rate, phone prefix, cities, streets)
    "US": ("United States", "USD", "0.07", "+1 555", ("Austin", "Denver", "Raleigh"), ("Main St", "Oak Ave")),
    "GB": (
        "United Kingdom",
        "GBP",
        "0.20",
        "+44 20 7946",
        ("London", "Leeds", "Bristol"),
        ("High St", "Mill Ln"),
    ),
    "NL": (
        "Netherlands",
        "EUR",
        "0.21",
        "+31 20 555",
        ("Amsterdam", "Utrecht", "Eindhoven"),
        ("Kerkstraat",),
    ),
    "BR": (
        "Brazil",
        "BRL",
        "0.17",
        "+55 11 5555",
        ("Sao Paulo", "Campinas"),
        ("Rua das Flores", "Av. Paulista"),
    ),
    "CA": (
        "Canada",
        "CAD",
        "0.13",
        "+1 613 555",
        ("Ottawa", "Toronto", "Montreal"),
        ("King St", "Rue Sainte"),
    ),
    "DE": ("Germany", "EUR", "0.19", "+49 30 5555", ("Berlin", "Hamburg"), ("Hauptstrasse", "Ringweg")),
}
_PRODUCTS = (  # name, unit price
    ("SFP+ 10G-SR transceiver, 850 nm, 300 m", "24.00"),
    ("SFP28 25G-LR transceiver, 1310 nm, 10 km", "69.00"),
    ("QSFP28 100G-LR4 transceiver, 10 km", "289.00"),
    ("QSFP28 100G-SR4 transceiver, MPO-12", "119.00"),
    ("QSFP-DD 400G-DR4 transceiver", "649.00"),
    ("CFP2-DCO 200G coherent transceiver", "2450.00"),
    ("LC-LC OS2 single-mode duplex patch cable, 3 m", "6.50"),
    ("MPO-12 OM4 trunk cable, 30 m", "189.00"),
    ("100G QSFP28 passive DAC, 1 m", "39.00"),
)
_LEAD_SOURCES = ("webinar", "trade show: OFC", "white paper download", "LinkedIn ad", "referral", "web form")
_NEWSLETTERS = ("Product updates", "Datacenter insights", "Events and webinars")
_CONSENT_SOURCES = ("footer form", "checkout checkbox", "webinar registration", "trade show badge scan")
_SURVEYS = (
    ("Post-purchase 2024", "How satisfied are you with delivery times?"),
    ("Post-purchase 2024", "Would you recommend Precision to a colleague?"),
    ("Product feedback", "Which form factor will you deploy most in the next 12 months?"),
    ("Support CSAT", "Did support resolve your issue?"),
)
_ANSWERS = ("Very satisfied", "Yes", "QSFP-DD", "Mostly", "No, the ETA slipped twice", "9 out of 10")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
_PAGES = (
    "/products/transceivers/qsfp28-100g-lr4", "/products/transceivers/sfp-plus-10g-sr",
    "/products/fibre-cables/mpo-trunks", "/support/datasheets", "/compatibility-matrix", "/contact",
)  # fmt: skip
_CHAT_OPENERS = (
    "are your QSFP28 LR4 modules coded for Arista 7050X?",
    "what is the lead time on 40 MPO-12 trunks?",
    "can I get the DOM thresholds for the SFP28 LR?",
    "we need a quote for 200 LC-LC patch cables.",
)

_RANDOM_START = datetime(2019, 1, 1)
_RANDOM_SPAN = datetime(2026, 6, 30) - _RANDOM_START


@dataclass(frozen=True, slots=True)
class SeedInfo:
    """What `seed_crm` wrote: where, and how many rows per table."""

    path: Path
    url: str
    rows: Mapping[str, int]

    @property
    def total_rows(self) -> int:
        """Rows in all tables together."""
        return sum(self.rows.values())


class _Crm:
    """Accumulates rows per table with explicit ids, so ids are stable across runs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: dict[str, list[tuple[object, ...]]] = {table: [] for table in TABLES}

    def _add(self, table: str, *values: object) -> int:
        row_id = len(self.rows[table]) + 1
        self.rows[table].append((row_id, *values))
        return row_id

    def moment(self, start: datetime = _RANDOM_START) -> datetime:
        """A random moment between `start` and mid-2026."""
        span = _RANDOM_SPAN - (start - _RANDOM_START)
        return start + timedelta(seconds=self.rng.randrange(max(int(span.total_seconds()), 1)))

    def address(self, country: str) -> str:
        name, _currency, _tax, _phone, cities, streets = _COUNTRIES[country]
        return f"{self.rng.randint(1, 240)} {self.rng.choice(streets)}, {self.rng.choice(cities)}, {name}"

    def phone(self, country: str) -> str:
        return f"{_COUNTRIES[country][3]} {self.rng.randint(1000, 9999)}"

    def contact(
        self,
        email: str,
        first: str,
        last: str,
        company: str,
        country: str,
        created: datetime,
        *,
        opt_in: bool,
    ) -> int:
        last_login = created + timedelta(days=self.rng.randint(1, 400), minutes=self.rng.randint(0, 1439))
        last_login = min(last_login, _RANDOM_START + _RANDOM_SPAN)  # the demo's world ends mid-2026
        return self._add(
            "contacts", email, first, last, company, self.rng.choice(_TITLES), self.phone(country),
            country, _ts(created), _ts(last_login), int(opt_in),
        )  # fmt: skip

    def lead(self, email: str, full_name: str, company: str, created: datetime) -> int:
        activity = min(created + timedelta(days=self.rng.randint(0, 90)), _RANDOM_START + _RANDOM_SPAN)
        return self._add(
            "leads", email, full_name, company, self.rng.choice(_LEAD_SOURCES), _ts(created), _ts(activity)
        )

    def quote(self, contact_id: int, when: datetime) -> int:
        product, _price = self.rng.choice(_PRODUCTS)
        quantity = self.rng.choice((4, 10, 24, 48, 100, 250))
        message = f"Please quote {quantity} units, delivery within 4 weeks."
        return self._add("quote_requests", contact_id, product, quantity, message, _ts(when))

    def order(self, contact_id: int | None, billing_name: str, country: str, ordered: date) -> int:
        """An order and its invoice (issued the same day)."""
        _name, currency, tax_rate, *_ = _COUNTRIES[country]
        _product, price = self.rng.choice(_PRODUCTS)
        total = (Decimal(price) * self.rng.choice((2, 8, 16, 40, 120))).quantize(Decimal("0.01"))
        billing = self.address(country)
        shipping = billing if self.rng.random() < 0.6 else self.address(country)
        order_id = len(self.rows["orders"]) + 1
        self._add(
            "orders", contact_id, f"SO-{ordered.year}-{order_id:05d}", ordered.isoformat(), str(total),
            currency, billing_name, billing, shipping, country,
        )  # fmt: skip
        tax = (total * Decimal(tax_rate)).quantize(Decimal("0.01"))
        invoice_id = len(self.rows["invoices"]) + 1
        self._add(
            "invoices", order_id, f"INV-{ordered.year}-{invoice_id:05d}", ordered.isoformat(),
            str(total + tax), str(tax), billing_name, billing,
        )  # fmt: skip
        return order_id

    def newsletter(self, email: str, when: datetime, *, status: str = "subscribed") -> int:
        return self._add(
            "newsletter_subscriptions", email, self.rng.choice(_NEWSLETTERS), _ts(when),
            self.rng.choice(_CONSENT_SOURCES), status,
        )  # fmt: skip

    def chat(self, contact_id: int | None, email: str | None, first: str, when: datetime) -> int:
        transcript = (
            f"[{when:%H:%M}] {first}: Hi, {self.rng.choice(_CHAT_OPENERS)}\n"
            f"[{when:%H:%M}] Agent (Sam): Thanks {first}, let me check that for you.\n"
            f"[{when:%H:%M}] Agent (Sam): Done, I have e-mailed the details."
        )
        return self._add("chat_transcripts", contact_id, email, _ts(when), transcript)

    def survey(self, contact_id: int, when: datetime) -> int:
        survey, question = self.rng.choice(_SURVEYS)
        return self._add("survey_answers", contact_id, survey, question, self.rng.choice(_ANSWERS), _ts(when))

    def visit(self, contact_id: int, when: datetime) -> int:
        ip = f"{self.rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{self.rng.randint(1, 254)}"
        return self._add(
            "web_analytics_events", contact_id, ip, self.rng.choice(_USER_AGENTS), self.rng.choice(_PAGES),
            _ts(when),
        )  # fmt: skip


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _add_demo_subjects(crm: _Crm) -> None:
    """Ada (erasure) and Grace (access), each with data in every table."""
    # Stored with mixed case and a trailing space: only a normalised comparison finds it.
    ada = crm.contact(
        "Ada.Lovelace@Example.com ", "Ada", "Lovelace", "Analytical Engines Ltd", "GB",
        datetime(2015, 11, 3, 9, 12), opt_in=True,
    )  # fmt: skip
    crm.lead(
        "ADA.LOVELACE@example.com", "Ada Lovelace", "Analytical Engines Ltd", datetime(2015, 10, 20, 14, 5)
    )
    crm.quote(ada, datetime(2024, 11, 18, 10, 40))
    crm.order(ada, "Ada Lovelace", "GB", date(2025, 3, 14))  # inside any tax retention period
    crm.order(ada, "Ada Lovelace", "GB", date(2016, 5, 9))  # past every retention period
    crm.newsletter(" ada.lovelace@example.com", datetime(2019, 4, 2, 8, 0))
    crm.chat(ada, "Ada.Lovelace@example.com", "Ada", datetime(2024, 11, 17, 16, 21))
    crm.survey(ada, datetime(2025, 4, 1, 12, 0))
    crm.survey(ada, datetime(2025, 4, 1, 12, 1))
    for minute in (0, 2, 7):
        crm.visit(ada, datetime(2025, 2, 27, 15, minute))

    grace = crm.contact(
        "grace.hopper@example.org", "Grace", "Hopper", "Harvard Computation Lab", "US",
        datetime(2020, 2, 11, 11, 30), opt_in=False,
    )  # fmt: skip
    crm.lead(
        "Grace.Hopper@Example.org", "Grace Hopper", "Harvard Computation Lab", datetime(2020, 1, 28, 9, 45)
    )
    crm.quote(grace, datetime(2023, 6, 5, 13, 15))
    crm.quote(grace, datetime(2025, 9, 9, 9, 9))
    crm.order(grace, "Grace Hopper", "US", date(2023, 6, 20))
    crm.order(grace, "Grace Hopper", "US", date(2025, 10, 2))
    crm.newsletter("GRACE.HOPPER@EXAMPLE.ORG", datetime(2021, 7, 7, 7, 7), status="unsubscribed")
    crm.chat(grace, "grace.hopper@example.org", "Grace", datetime(2023, 6, 4, 18, 2))
    crm.survey(grace, datetime(2023, 7, 1, 10, 0))
    for minute in (5, 6):
        crm.visit(grace, datetime(2025, 9, 8, 20, minute))


def _add_decoys(crm: _Crm) -> None:
    """One person per decoy address, each with a row in every table."""
    for number, email in enumerate(DECOY_EMAILS):
        first, last = _FIRST_NAMES[number], _LAST_NAMES[-1 - number]
        created = datetime(2021, 3, 1 + number, 10, 0)
        contact = crm.contact(email, first, last, "Decoy Systems", "NL", created, opt_in=True)
        crm.lead(email, f"{first} {last}", "Decoy Systems", created - timedelta(days=3))
        crm.quote(contact, created + timedelta(days=2))
        crm.order(contact, f"{first} {last}", "NL", (created + timedelta(days=30)).date())
        crm.newsletter(email, created + timedelta(days=1))
        crm.chat(contact, email, first, created + timedelta(days=5))
        crm.survey(contact, created + timedelta(days=40))
        crm.visit(contact, created + timedelta(hours=2))


def _add_lookalikes(crm: _Crm) -> None:
    """Ada's namesakes (recent, so no retention purge touches them): a contact, a lead, a subscription."""
    for email in LOOKALIKE_EMAILS:
        created = datetime(2025, 6, 2, 9, 0)
        crm.contact(email, "Ada", "Lovelace", "Analytical Engines Ltd", "GB", created, opt_in=True)
        crm.lead(email, "Ada Lovelace", "Analytical Engines Ltd", created - timedelta(days=2))
        crm.newsletter(email, created + timedelta(days=1))


def _add_random_people(crm: _Crm, count: int) -> None:
    rng = crm.rng
    used: set[str] = set()
    for _ in range(count):
        first, last, company, email = new_person(rng, used, first_names=_FIRST_NAMES, last_names=_LAST_NAMES,
                                                 companies=_COMPANIES)
        domain = email.rpartition("@")[2]
        stored = email if rng.random() < 0.85 else f"{first}.{last}@{domain}"  # some keep their capitals
        country = rng.choice(tuple(_COUNTRIES))
        created = crm.moment()
        contact = crm.contact(stored, first, last, company, country, created, opt_in=rng.random() < 0.5)
        if rng.random() < 0.3:
            crm.lead(email, f"{first} {last}", company, created - timedelta(days=rng.randint(1, 60)))
        for _ in range(rng.choices((0, 1, 2), (5, 3, 1))[0]):
            crm.quote(contact, crm.moment(created))
        for _ in range(rng.choices((0, 1, 2, 3), (4, 3, 2, 1))[0]):
            crm.order(contact, f"{first} {last}", country, crm.moment(created).date())
        if rng.random() < 0.4:
            crm.newsletter(email, crm.moment(created), status=rng.choice(("subscribed", "unsubscribed")))
        if rng.random() < 0.15:
            crm.chat(contact, email, first, crm.moment(created))
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 3)):
                crm.survey(contact, crm.moment(created))
        for _ in range(rng.randint(0, 6)):
            crm.visit(contact, crm.moment(created))
    # People the CRM knows only partly: leads that never became contacts, anonymous chats.
    for number in range(count // 4):
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        company, domain = rng.choice(_COMPANIES)
        crm.lead(f"{first[0]}.{last}.{number}@{domain}".lower(), f"{first} {last}", company, crm.moment())
    for _ in range(count // 20):
        crm.chat(None, None, "Visitor", crm.moment())


def _sqlite_path(path_or_url: str) -> Path:
    """A file path, or a `sqlite:///relative` / `sqlite:////absolute` URL."""
    if "://" not in path_or_url:
        return Path(path_or_url)
    prefix = "sqlite:///"
    if not path_or_url.startswith(prefix):
        raise ValueError("the demo CRM is seeded into SQLite only: give a path or a sqlite:/// URL")
    path = path_or_url[len(prefix) :].split("?", 1)[0]
    if not path or path == ":memory:":
        raise ValueError("the demo CRM needs a file, not an in-memory database")
    return Path(path)


def seed_crm(path_or_url: str, *, contacts: int = 200, seed: int = 7) -> SeedInfo:
    """Create (drop and recreate) the demo CRM.

    Args:
        path_or_url: a file path or a `sqlite:///` URL; missing parent folders are created.
        contacts: how many random people to add next to the demo subjects and decoys.
        seed: the random seed; the same seed and count give the same rows.

    Returns:
        Where the database is and how many rows each table holds.
    """
    if contacts < 0:
        raise ValueError("contacts must be zero or more")
    path = _sqlite_path(path_or_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    crm = _Crm(random.Random(seed))
    _add_demo_subjects(crm)
    _add_decoys(crm)
    _add_random_people(crm, contacts)
    _add_lookalikes(crm)  # last: the rows above stay exactly as they were

    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA foreign_keys = OFF")  # so tables drop in any state
        for table in reversed(TABLES):
            connection.execute(f"DROP TABLE IF EXISTS {table}")  # names are this module's constants
        connection.executescript(_SCHEMA)
        connection.execute("PRAGMA foreign_keys = ON")  # every insert below is checked
        with connection:
            for table in TABLES:
                table_rows = crm.rows[table]
                if table_rows:
                    marks = ", ".join("?" * len(table_rows[0]))
                    connection.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
        if connection.execute("PRAGMA foreign_key_check").fetchall():
            raise RuntimeError("seed bug: the demo CRM has dangling foreign keys")
        connection.execute("VACUUM")  # drop-and-recreate leaves free pages; the file should not grow
    finally:
        connection.close()
    counts = {table: len(crm.rows[table]) for table in TABLES}
    return SeedInfo(path=path, url=f"sqlite:///{path}", rows=counts)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.crm_seed PATH`: seed the demo CRM and print a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.crm_seed", description=main.__doc__)
    parser.add_argument("path", help="SQLite file (or sqlite:/// URL) to create or replace")
    parser.add_argument("--contacts", type=int, default=200, help="random people to add (default 200)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    info = seed_crm(args.path, contacts=args.contacts, seed=args.seed)
    counts = ", ".join(f"{table}={count}" for table, count in info.rows.items())
    print(f"seeded {info.path}: {info.total_rows} rows ({counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
