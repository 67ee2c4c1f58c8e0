"""Schemathesis hooks for `chaos.schema` (loaded through SCHEMATHESIS_HOOKS): the API's rules that a
JSON Schema cannot state, applied to generated calls just before they are sent, so that a call the
schema calls valid is one the API must accept. Each rule is also said in the field's description.

- `received` (POST /requests) must lie between 2000-01-01 and now: a generated time outside becomes now.
- Free text kept as evidence (`note`, `reason`) must not hold an e-mail address, however spelled
  (dsr.personal_text decides): such a text becomes a plain one.

Only a field that is otherwise valid is changed, so a call generated to be invalid stays invalid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import schemathesis

from dsr.api.app import RFC3339_DATE_TIME
from dsr.models import EARLIEST_RECEIVED
from dsr.personal_text import contains_email_address

PLAIN_TEXT = "checked against the account records"


def _out_of_window(value: Any) -> bool:
    """A well-formed time the API refuses for when it is (invalid ones are left to be refused)."""
    if not isinstance(value, str) or not RFC3339_DATE_TIME.match(value):
        return False
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return not EARLIEST_RECEIVED <= moment <= datetime.now(UTC)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if "received" in body and _out_of_window(body["received"]):
        body["received"] = datetime.now(UTC).isoformat()
    for field in ("note", "reason"):
        text = body.get(field)
        if isinstance(text, str) and text.strip() and len(text) <= 2000 and contains_email_address(text):
            body[field] = PLAIN_TEXT
