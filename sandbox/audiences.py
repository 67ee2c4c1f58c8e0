"""The ad platforms' demo audiences: who is in them, and how a member's address is hashed."""

from __future__ import annotations

import hashlib
import random

ERASURE_SUBJECT = "ada.lovelace@example.com"
ACCESS_SUBJECT = "grace.hopper@example.org"

DECOY_EMAILS: tuple[str, ...] = (
    "ada.lovelace@example.com.attacker.test",  # the subject's address as a prefix
    "xada.lovelace@example.com",  # ... as a suffix
    "adalovelace@example.com",  # without the dot: another member (Google does not require dot removal)
    "ada.lovelace+ads@example.com",  # a plus-address: another member
    "ada.lovelace@example.co",  # a neighbouring top-level domain
)
"""Members whose hashes no removal for the demo subjects may ever touch."""


def hash_email(address: str) -> str:
    """Customer Match and LinkedIn normalisation: trim, lower-case, SHA-256 of the UTF-8 bytes, hex."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


def demo_members(rng: random.Random) -> set[str]:
    """One demo audience: the two subjects, the decoys and about 40 others drawn from `rng`."""
    members = {hash_email(e) for e in (ERASURE_SUBJECT, ACCESS_SUBJECT, *DECOY_EMAILS)}
    for _ in range(40):
        members.add(hash_email(f"person{rng.randrange(10_000)}@example.net"))
    return members
