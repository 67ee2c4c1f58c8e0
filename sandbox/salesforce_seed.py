"""The Salesforce sandbox's demo org: the two subjects, the decoys, their namesakes, about fifty others."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.crm_seed import DECOY_EMAILS as _CRM_DECOYS
from sandbox.people import DEMO_START, decoy_name, new_person, random_moment
from sandbox.salesforce_model import sf_datetime

if TYPE_CHECKING:
    from sandbox.salesforce import SalesforceSandbox

DECOY_EMAILS: tuple[str, ...] = (*_CRM_DECOYS, "obrien@example.com")
"""Addresses that must never match a demo subject, nor ``o'brien@example.com`` (each has a Contact)."""

LOOKALIKE_EMAILS: tuple[str, ...] = ("ada.lovelace@analytical-engines.example",)
"""People with a demo subject's very name and company at another address (a Contact, a Lead and an
Individual each): a rectification or an opt-out that matched on names would change them."""

_CASE_SUBJECTS = ("QSFP28 LR4 link flaps on Arista 7050X", "DOM readings missing on SFP28 LR",
                  "Wrong MPO polarity on delivered trunk", "RMA request: dead 400G DR4 module",
                  "Invoice shows the wrong VAT number")
_TASK_SUBJECTS = ("Call back about lead time", "Send 100G compatibility matrix", "Follow up on quote",
                  "Email: webinar recording", "Confirm delivery address")
_EVENT_SUBJECTS = ("Datacenter site visit", "Quarterly business review", "Webinar: 400G migration")


class DemoSeeder:
    """Builds the demo org from a seeded generator and fixed dates (never the clock)."""

    def __init__(self, vendor: SalesforceSandbox, rng: random.Random) -> None:
        self.vendor, self.rng = vendor, rng
        self.individuals = "individual" in vendor.objects

    def add(self, obj: str, values: Mapping[str, Any]) -> str:
        return self.vendor._create(self.vendor.objects[obj.lower()], values, trusted=True)

    def moment(self, after: datetime = DEMO_START) -> datetime:
        return random_moment(self.rng, after)

    def audit(self, created: datetime, modified: datetime | None = None) -> dict[str, str]:
        modified = modified or min(created + timedelta(days=self.rng.randint(0, 400)), datetime(2026, 6, 30, tzinfo=UTC))
        return {"CreatedDate": sf_datetime(created), "LastModifiedDate": sf_datetime(modified)}

    def run(self) -> None:
        self.campaigns = [
            self.add("Campaign", {"Name": name, "Type": kind, "Status": "Completed", "IsActive": False,
                                  **self.audit(datetime(2024, 1, 10, tzinfo=UTC))})
            for name, kind in (("OFC 2025 booth scans", "Trade Show"), ("Datacenter insights newsletter", "Email"),
                               ("Webinar: 400G migration", "Webinar"), ("QSFP-DD launch", "Advertisement"))
        ]
        self.person("Ada", "Lovelace", "Ada.Lovelace@Example.com", "Analytical Engines Ltd", "United Kingdom",
                    datetime(2015, 11, 3, 9, 12, tzinfo=UTC), lead_email="ADA.LOVELACE@example.com",
                    cases=2, tasks=3, events=2, members=2, supplied_case=True)
        self.person("Grace", "Hopper", "grace.hopper@example.org", "Harvard Computation Lab", "United States",
                    datetime(2020, 2, 11, 11, 30, tzinfo=UTC), lead_email="Grace.Hopper@Example.org",
                    cases=1, tasks=2, events=1, members=1)
        for number, email in enumerate(DECOY_EMAILS):
            first, last = decoy_name(number)
            self.person(first, last, email, "Decoy Systems", "Netherlands",
                        datetime(2021, 3, 1 + number, 10, 0, tzinfo=UTC), lead_email=email,
                        cases=1, tasks=1, events=1, members=1, supplied_case=True)
        self.lookalikes()
        used: set[str] = set()
        for _ in range(50):
            first, last, company, email = new_person(self.rng, used)
            self.person(first, last, email, company, self.rng.choice(("Germany", "Brazil", "Canada", "United States")),
                        self.moment(), lead_email=email if self.rng.random() < 0.3 else None,
                        cases=self.rng.choice((0, 0, 1, 2)), tasks=self.rng.randint(0, 4),
                        events=self.rng.choice((0, 0, 1)), members=self.rng.choice((0, 1)),
                        individual=self.rng.random() < 0.3)

    def lookalikes(self) -> None:
        """Ada's namesakes: nothing done for Ada may touch them. Their own
        generator, so the rest of the org is seeded exactly as before."""
        rng, self.rng = self.rng, random.Random(1815)
        for email in LOOKALIKE_EMAILS:
            self.person("Ada", "Lovelace", email, "Analytical Engines Ltd", "United Kingdom",
                        datetime(2016, 1, 4, 9, 0, tzinfo=UTC), lead_email=email, cases=0, tasks=0, events=0,
                        members=0)
        self.rng = rng

    def person(self, first: str, last: str, email: str, company: str, country: str, created: datetime, *,
               lead_email: str | None, cases: int, tasks: int, events: int, members: int,
               supplied_case: bool = False, individual: bool = True) -> None:
        rng = self.rng
        individual_id = None
        if individual and self.individuals:
            individual_id = self.add("Individual", {"FirstName": first, "LastName": last, "HasOptedOutSolicit": True,
                                                    "HasOptedOutTracking": rng.random() < 0.5, **self.audit(created)})
        contact = self.add("Contact", {
            "FirstName": first, "LastName": last, "Email": email, "Title": rng.choice(("Network Engineer", "CTO",
                                                                                       "Procurement Manager")),
            "Phone": f"+44 20 7946 {rng.randint(1000, 9999)}", "MailingStreet": f"{rng.randint(1, 240)} High St",
            "MailingCity": rng.choice(("London", "Leeds", "Austin", "Berlin")), "MailingCountry": country,
            "LeadSource": rng.choice(("Web", "Trade Show", "Webinar")), "HasOptedOutOfEmail": rng.random() < 0.3,
            "IndividualId": individual_id, **self.audit(created),
        })
        lead = None
        if lead_email is not None:
            lead = self.add("Lead", {"FirstName": first, "LastName": last, "Email": lead_email, "Company": company,
                                     "Country": country, "LeadSource": "Web", "IndividualId": individual_id,
                                     **self.audit(created - timedelta(days=14))})
        for index in range(members):
            link = {"LeadId": lead} if lead is not None and index % 2 == 1 else {"ContactId": contact}
            self.add("CampaignMember", {"CampaignId": self.campaigns[index % len(self.campaigns)],
                                        "Status": rng.choice(("Sent", "Responded")), **link,
                                        **self.audit(self.moment(created))})
        for index in range(cases):
            extra = {"SuppliedEmail": email.lower(), "SuppliedName": f"{first} {last}"} \
                if supplied_case and index == 0 else {}
            self.add("Case", {"ContactId": contact, "Subject": rng.choice(_CASE_SUBJECTS), "Origin": "Web",
                              "Status": rng.choice(("New", "Closed")), "Description": f"Reported by {first}.",
                              **extra, **self.audit(self.moment(created))})
        for index in range(tasks):
            when = self.moment(created)
            who = lead if lead is not None and index == tasks - 1 and tasks > 1 else contact
            self.add("Task", {"WhoId": who, "Subject": rng.choice(_TASK_SUBJECTS), "ActivityDate": when.date()
                              .isoformat(), "Status": "Completed", "Description": f"Spoke with {first}.",
                              **self.audit(when, when)})
        for _ in range(events):
            when = self.moment(created)
            self.add("Event", {"WhoId": contact, "Subject": rng.choice(_EVENT_SUBJECTS), "Location": "Video call",
                               "StartDateTime": sf_datetime(when), "EndDateTime": sf_datetime(when + timedelta(hours=1)),
                               "ActivityDate": when.date().isoformat(), "DurationInMinutes": 60,
                               **self.audit(when, when)})
