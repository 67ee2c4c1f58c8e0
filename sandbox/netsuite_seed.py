"""The NetSuite sandbox's demo account: the two subjects, the decoys, and about forty other customers."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.crm_seed import DECOY_EMAILS as _CRM_DECOYS
from sandbox.people import decoy_name, new_person

if TYPE_CHECKING:
    from sandbox.netsuite import NetSuiteSandbox

DECOY_EMAILS: tuple[str, ...] = (*_CRM_DECOYS, "obrien@example.com", "o'brien@example.com")
"""Addresses that must never match a demo subject (each has a customer with an invoice)."""

_PRODUCTS = (("QSFP28 100G-LR4 transceiver", 289.0), ("SFP+ 10G-SR transceiver", 24.0),
             ("MPO-12 OM4 trunk cable, 30 m", 189.0), ("QSFP-DD 400G-DR4 transceiver", 649.0),
             ("LC-LC OS2 duplex patch cable, 3 m", 6.5))
_CITIES = {1: ("Rochester", "US"), 2: ("London", "GB"), 3: ("Eindhoven", "NL"), 4: ("Campinas", "BR"),
           5: ("Ottawa", "CA")}


class DemoSeeder:
    """Builds the demo account from a seeded generator and fixed dates (never the clock)."""

    def __init__(self, vendor: NetSuiteSandbox, rng: random.Random) -> None:
        self.vendor, self.rng = vendor, rng
        self.entity_ids: set[str] = set()

    def entity_id(self, name: str) -> str:
        """Entity ids are unique per record type: a namesake gets a number, as NetSuite users do."""
        candidate, number = name, 2
        while candidate in self.entity_ids:
            candidate, number = f"{name} {number}", number + 1
        self.entity_ids.add(candidate)
        return candidate

    def add(self, rtype: str, values: Mapping[str, Any]) -> int:
        return self.vendor._create(rtype, values, trusted=True)

    def address(self, name: str, subsidiary: int) -> dict[str, Any]:
        city, country = _CITIES[subsidiary]
        return {"label": "Billing", "defaultBilling": True, "defaultShipping": True,
                "addressBookAddress": {"addressee": name, "addr1": f"{self.rng.randint(1, 240)} High Street",
                                       "city": city, "zip": f"{self.rng.randint(10000, 99999)}", "country": country}}

    def customer(self, first: str, last: str, email: str | None, subsidiary: int, created: datetime, *,
                 person: bool = True, company: str | None = None, phone: bool = True, comments: str | None = None,
                 **extra: Any) -> int:
        values: dict[str, Any] = {
            "isPerson": person, "email": email, "subsidiary": {"id": str(subsidiary)},
            "addressBook": {"items": [self.address(f"{first} {last}" if person else company or last, subsidiary)]},
            "dateCreated": created, "lastModifiedDate": created + timedelta(days=self.rng.randint(0, 300)),
            "comments": comments, **extra,
        }
        if person:
            values.update({"firstName": first, "lastName": last, "entityId": self.entity_id(f"{first} {last}")})
        else:
            values.update({"companyName": company, "entityId": self.entity_id(company or last)})
        if phone:
            values["phone"] = f"+44 20 7946 {self.rng.randint(1000, 9999)}"
        return self.add("customer", values)

    def sale(self, rtype: str, customer: int, day: date, email: str | None, *, memo: str | None = None) -> int:
        product, price = self.rng.choice(_PRODUCTS)
        quantity = self.rng.choice((2, 4, 10, 24))
        moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=10)
        values: dict[str, Any] = {"entity": {"id": str(customer)}, "tranDate": day.isoformat(), "email": email,
                                  "memo": memo, "createdDate": moment, "lastModifiedDate": moment}
        if rtype == "customerPayment":
            values["total"] = round(price * quantity, 2)
            values["apply"] = {"items": [{"apply": True, "amount": round(price * quantity, 2)}]}
        else:
            values["item"] = {"items": [{"line": 1, "item": {"id": "1", "refName": product}, "quantity": quantity,
                                         "rate": price, "amount": round(price * quantity, 2)}]}
        return self.add(rtype, values)

    def run(self) -> None:
        # Ada: a customer with invoices and a payment (NetSuite refuses the delete: anonymised, kept for tax);
        # a second, later web-shop registration as a prospect customer and a contact at her company's
        # account, neither with transactions (both deleted).
        ada = self.customer("Ada", "Lovelace", "Ada.Lovelace@Example.com", 2, datetime(2015, 11, 3, 9, 12, tzinfo=UTC),
                            comments="Prefers invoices by e-mail; met at OFC 2024.", mobilePhone="+44 7700 900123")
        self.sale("invoice", ada, date(2024, 3, 14), "Ada.Lovelace@Example.com", memo="PO 2024-17, Ada Lovelace")
        self.sale("invoice", ada, date(2025, 11, 20), "Ada.Lovelace@Example.com", memo="PO 2025-88")
        self.sale("customerPayment", ada, date(2025, 12, 5), None)
        # She confirmed the web shop's newsletter herself (Confirmed Opt-In: only she could set it).
        self.customer("Ada", "Lovelace", ERASURE_SUBJECT, 2, datetime(2025, 6, 1, 8, 0, tzinfo=UTC),
                      phone=False, globalSubscriptionStatus={"id": "3"})
        engines = self.customer("", "", "accounts@analytical-engines.example", 2,
                                datetime(2016, 1, 5, 10, 0, tzinfo=UTC), person=False, company="Analytical Engines Ltd")
        self.sale("invoice", engines, date(2025, 2, 1), "accounts@analytical-engines.example")
        self.add("contact", {"firstName": "Ada", "lastName": "Lovelace", "email": "ADA.LOVELACE@example.com",
                             "title": "Chief Engineer", "company": {"id": str(engines)}, "subsidiary": {"id": "2"},
                             "phone": "+44 20 7946 0815", "dateCreated": datetime(2016, 1, 5, 10, 5, tzinfo=UTC)})
        # Grace: a US customer with an invoice and a cash sale, and a contact record, for her access request.
        grace = self.customer("Grace", "Hopper", ACCESS_SUBJECT, 1, datetime(2020, 2, 11, 11, 30, tzinfo=UTC),
                              comments="Navy procurement contact.")
        self.sale("invoice", grace, date(2024, 9, 9), ACCESS_SUBJECT)
        self.sale("cashSale", grace, date(2025, 4, 2), ACCESS_SUBJECT)
        self.add("contact", {"firstName": "Grace", "lastName": "Hopper", "email": "Grace.Hopper@Example.org",
                             "title": "Rear Admiral", "company": {"id": str(grace)}, "subsidiary": {"id": "1"},
                             "dateCreated": datetime(2020, 2, 11, 11, 35, tzinfo=UTC)})
        for number, email in enumerate(DECOY_EMAILS):
            first, last = decoy_name(number)
            decoy = self.customer(first, last, email, 3, datetime(2021, 3, 1 + number, 10, 0, tzinfo=UTC))
            self.sale("invoice", decoy, date(2024, 5, 1 + number), email)
            self.add("contact", {"firstName": first, "lastName": f"{last} (contact)", "email": email,
                                 "company": {"id": str(decoy)}, "subsidiary": {"id": "3"},
                                 "dateCreated": datetime(2021, 3, 1 + number, 10, 5, tzinfo=UTC)})
        used: set[str] = set()
        for _ in range(40):
            first, last, _company, email = new_person(self.rng, used)
            subsidiary = self.rng.randint(1, 5)
            created = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(days=self.rng.randrange(2000))
            customer = self.customer(first, last, email, subsidiary, created)
            for _sale in range(self.rng.choice((0, 1, 1, 2, 3))):
                day = created.date() + timedelta(days=self.rng.randrange(30, 900))
                self.sale(self.rng.choice(("invoice", "invoice", "cashSale", "salesOrder")), customer,
                          min(day, date(2026, 6, 30)), email)
