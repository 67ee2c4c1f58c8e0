"""The HubSpot sandbox's demo portal: the two subjects, the decoys, and about fifty other contacts."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.hubspot_model import iso_millis
from sandbox.people import DEMO_START, FIRST_NAMES, MARKETING_COMPANIES, decoy_name, new_person, random_moment

if TYPE_CHECKING:
    from sandbox.hubspot import HubSpotSandbox

ERASURE_SUBJECT = "ada.lovelace@example.com"
"""The demo erasure subject; her contact is stored as ``Ada.Lovelace@Example.com``."""

ACCESS_SUBJECT = "grace.hopper@example.org"
"""The demo access subject; stored as ``Grace.Hopper@Example.org``."""

DECOY_EMAILS: tuple[str, ...] = (
    "ada.lovelace@example.com.attacker.test",  # the subject's address as a prefix
    "xada.lovelace@example.com",  # ... as a suffix
    "%@example.com",  # a SQL LIKE wildcard as the local part
    "obrien@example.com",  # o'brien without the quote
    "ada_lovelace@example.com",  # `_` is LIKE's single-character wildcard
    "ada.lovelace@example.co",  # a neighbouring top-level domain
)
"""Contacts (each with a note) that no exact match on the demo subjects may ever touch."""

_CITIES = (("London", "United Kingdom"), ("Leeds", "United Kingdom"), ("Austin", "United States"),
           ("Amsterdam", "Netherlands"), ("Berlin", "Germany"), ("Toronto", "Canada"))
_TOPICS = ("QSFP28 100G-LR4 pricing", "lead time on MPO-12 trunks", "DOM thresholds for SFP28 LR",
           "a quote for 200 LC-LC patch cables", "Arista compatibility of 400G-DR4 optics")


class DemoSeeder:
    def __init__(self, sandbox: HubSpotSandbox, rng: random.Random) -> None:
        self.sandbox, self.rng = sandbox, rng

    def moment(self, after: datetime = DEMO_START) -> datetime:
        return random_moment(self.rng, after)

    def person(self, email: str, first: str, last: str, company: str, city: tuple[str, str], created: datetime,
               modified: datetime, **extra: Any) -> str:
        props = {
            "email": email, "firstname": first, "lastname": last, "company": company,
            "jobtitle": self.rng.choice(("Network Engineer", "IT Director", "Procurement Manager", "CTO")),
            "phone": f"+44 20 7946 {self.rng.randint(1000, 9999)}", "city": city[0], "country": city[1],
            "lifecyclestage": self.rng.choice(("lead", "customer", "subscriber")),
            "hs_analytics_source": self.rng.choice(("ORGANIC_SEARCH", "EMAIL_MARKETING", "REFERRALS")),
            "ip_city": city[0], **extra,
        }
        return self.sandbox.add_contact(props, created=iso_millis(created), modified=iso_millis(modified))

    def activity(self, contact: str, email: str, first: str, kinds: Mapping[str, int], after: datetime) -> None:
        for kind, count in kinds.items():
            for _ in range(count):
                when = self.moment(after)
                topic = self.rng.choice(_TOPICS)
                props: dict[str, Any] = {
                    "notes": {"hs_note_body": f"<p>{first} asked about {topic}.</p>"},
                    "emails": {"hs_email_direction": "INCOMING_EMAIL", "hs_email_status": "SENT",
                               "hs_email_subject": f"Re: {topic}",
                               "hs_email_text": f"Hi, this is {first}. Could you help with {topic}?",
                               "hs_email_headers": json.dumps({"from": {"email": email, "firstName": first},
                                                               "to": [{"email": "sales@precision.example"}]}),
                               "hs_email_sender_email": email, "hs_email_to_email": "sales@precision.example"},
                    "calls": {"hs_call_title": f"Call with {first}", "hs_call_body": f"<p>Discussed {topic}.</p>",
                              "hs_call_duration": str(self.rng.randint(60, 1800) * 1000),
                              "hs_call_direction": "OUTBOUND", "hs_call_status": "COMPLETED",
                              "hs_call_to_number": f"+44 20 7946 {self.rng.randint(1000, 9999)}"},
                    "meetings": {"hs_meeting_title": f"{first} / Precision: {topic}",
                                 "hs_meeting_body": "Agenda: requirements, pricing, delivery.",
                                 "hs_meeting_location": "Video call", "hs_meeting_outcome": "COMPLETED",
                                 "hs_meeting_start_time": iso_millis(when),
                                 "hs_meeting_end_time": iso_millis(when + timedelta(minutes=30))},
                    "tasks": {"hs_task_subject": f"Follow up with {first}", "hs_task_status": "COMPLETED",
                              "hs_task_priority": "MEDIUM"},
                }[kind]
                props["hs_timestamp"] = iso_millis(when)
                self.sandbox.add_engagement(kind, props, [contact], created=iso_millis(when))

    def subscribe(self, email: str, ids: Sequence[str]) -> None:
        self.sandbox._state.subscriptions[email.lower()] = {sub_id: "SUBSCRIBED" for sub_id in ids}

    def run(self) -> None:
        ada = self.person("Ada.Lovelace@Example.com", "Ada", "Lovelace", "Analytical Engines Ltd",
                          ("London", "United Kingdom"), datetime(2015, 11, 3, 9, 12, tzinfo=UTC),
                          datetime(2025, 4, 1, 12, 0, tzinfo=UTC), recent_conversion_event_name="Contact us",
                          recent_conversion_date="2024-11-17T16:21:00.000Z", num_conversion_events="2",
                          message="Please send the datasheet for the QSFP28 LR4.")
        self.activity(ada, "Ada.Lovelace@Example.com", "Ada", {"notes": 2, "emails": 2, "calls": 1, "meetings": 1},
                      datetime(2024, 1, 1, tzinfo=UTC))
        self.subscribe(ERASURE_SUBJECT, ("1190", "1191"))
        self.sandbox._state.legal_bases[(ERASURE_SUBJECT, "1191")] = ("CONSENT_WITH_NOTICE", "Product updates box ticked")

        grace = self.person("Grace.Hopper@Example.org", "Grace", "Hopper", "Harvard Computation Lab",
                            ("Austin", "United States"), datetime(2020, 2, 11, 11, 30, tzinfo=UTC),
                            datetime(2025, 9, 9, 9, 9, tzinfo=UTC))
        self.activity(grace, "Grace.Hopper@Example.org", "Grace",
                      {"notes": 1, "emails": 1, "calls": 2, "meetings": 1}, datetime(2023, 1, 1, tzinfo=UTC))
        self.subscribe(ACCESS_SUBJECT, ("1190",))

        for number, email in enumerate(DECOY_EMAILS):
            created = datetime(2021, 3, 1 + number, 10, 0, tzinfo=UTC)
            first, last = decoy_name(number)
            decoy = self.person(email, first, last, "Decoy Systems", ("Amsterdam", "Netherlands"), created, created)
            self.activity(decoy, email, first, {"notes": 1}, created)
            self.subscribe(email, ("1190",))

        used: set[str] = set()
        for _ in range(50):
            first, last, company, email = new_person(self.rng, used, first_names=FIRST_NAMES[:22],
                                                     companies=MARKETING_COMPANIES)
            created = self.moment()
            modified = min(created + timedelta(days=self.rng.randint(0, 700)), datetime(2026, 6, 30, tzinfo=UTC))
            person = self.person(email, first, last, company, self.rng.choice(_CITIES), created, modified)
            kinds = {kind: self.rng.choices((0, 1, 2), (4, 3, 1))[0] for kind in ("notes", "emails", "calls", "meetings")}
            self.activity(person, email, first, kinds, created)
            if self.rng.random() < 0.5:
                self.subscribe(email, ("1190",))
