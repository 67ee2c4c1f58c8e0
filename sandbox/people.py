"""Made-up people for the sandboxes' demo data: names, companies, and the addresses built from them.

Every list is drawn from with a seeded generator, so each vendor's demo data is the same on every run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

FIRST_NAMES = ("Alice", "Bruno", "Chloe", "Daniel", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya",
               "Lucas", "Marta", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tessa", "Umar", "Vera",
               "Wei", "Zofia")
LAST_NAMES = ("Andersen", "Barbosa", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova", "Jansen",
              "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva", "Tanaka", "Walsh")
COMPANIES = (("Northwind Networks", "northwind.example"), ("Bluewater Datacentres", "bluewater-dc.example"),
             ("Helix Carrier Services", "helixcarrier.example"), ("Lumen Edge Hosting", "lumenedge.example"),
             ("Orbital Exchange", "orbital-ix.example"), ("Tidal Cloud", "tidalcloud.example"))
"""(name, e-mail domain) of the CRM vendors' customers."""
MARKETING_COMPANIES = (("Northwind Networks", "northwind.example"), ("Bluewater Datacentres", "bluewater-dc.example"),
                       ("Helix Carrier Services", "helixcarrier.example"), ("Polar Telecom", "polartel.example"),
                       ("Tidal Cloud", "tidalcloud.example"), ("Orbital Exchange", "orbital-ix.example"))
"""(name, e-mail domain) of the marketing vendors' contacts."""
DEMO_START = datetime(2019, 1, 1, tzinfo=UTC)
DEMO_END = datetime(2026, 6, 30, tzinfo=UTC)
"""The span of the demo data's dates: fixed, never the clock, so every run seeds the same records."""


class Person(NamedTuple):
    first: str
    last: str
    company: str
    email: str


def decoy_name(number: int) -> tuple[str, str]:
    """A name for the `number`th decoy (no two decoys share one)."""
    return FIRST_NAMES[number], LAST_NAMES[-1 - number]


def new_person(rng: random.Random, used: set[str], *, first_names: Sequence[str] = FIRST_NAMES,
               last_names: Sequence[str] = LAST_NAMES, companies: Sequence[tuple[str, str]] = COMPANIES) -> Person:
    """A random person whose lower-case ``first.last@domain`` address is not in `used` (then added)."""
    first, last = rng.choice(first_names), rng.choice(last_names)
    company, domain = rng.choice(companies)
    email = f"{first}.{last}@{domain}".lower()
    suffix = 2
    while email in used:
        email, suffix = f"{first}.{last}{suffix}@{domain}".lower(), suffix + 1
    used.add(email)
    return Person(first, last, company, email)


def random_moment(rng: random.Random, after: datetime = DEMO_START) -> datetime:
    """A moment from `after` up to `DEMO_END` (whole seconds)."""
    span = max(int((DEMO_END - after).total_seconds()), 1)
    return after + timedelta(seconds=rng.randrange(span))
