"""Identities: normalisation for exact matching, keyed hashes for logs and evidence."""

from __future__ import annotations

import hashlib
import hmac

from email_validator import EmailNotValidError, validate_email


class IdentityError(ValueError):
    """An identity that cannot be used; the message names the field, never the value."""


def normalise_email(raw: str, *, field: str = "email") -> str:
    """Trim and lower-case an address after checking its syntax.

    Exact identity (DESIGN invariant 3): the normalised form is what every connector matches on,
    with equality only. Lower-casing the local part is a deliberate, documented choice: every
    system the company uses treats addresses case-insensitively.
    """
    candidate = raw.strip()
    if not candidate:
        raise IdentityError(f"{field}: must not be empty")
    try:
        validate_email(candidate, check_deliverability=False, globally_deliverable=False, test_environment=True)
    except EmailNotValidError as exc:
        # The validator's message can quote the address; keep only its reason.
        raise IdentityError(f"{field}: not a valid e-mail address ({_reason(exc)})") from None
    if "." not in candidate.rpartition("@")[2].strip("."):
        # The validator's test mode accepts `a@b`; no address a subject can receive mail at looks like that.
        raise IdentityError(f"{field}: not a valid e-mail address (the domain needs a dot, e.g. example.org)")
    return candidate.lower()


def _reason(exc: EmailNotValidError) -> str:
    text = str(exc)
    return text.split(":")[0] if "@" in text else text


def identity_hash(kind: str, normalised_value: str, key: bytes) -> str:
    """The keyed hash that stands for an identity in logs, events and bundles.

    HMAC (not a bare hash) so that nobody without the key can confirm a guessed address.
    """
    digest = hmac.new(key, f"{kind}:{normalised_value}".encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest[:32]}"
