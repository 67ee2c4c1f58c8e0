"""Schemathesis hooks for `chaos.schema` (loaded through SCHEMATHESIS_HOOKS): the API's rules that a
JSON Schema cannot state, applied to generated calls just before they are sent, so that a call the
schema calls valid is one the API must accept. Each rule is also said in the field's description.

- `received` (POST /requests) must lie between 2000-01-01 and now: a generated time outside becomes now.
- Free text kept as evidence (`note`, `reason`) must not hold an e-mail address, however spelled
  (dsr.personal_text decides): such a text becomes a plain one.
- OpenDSR submissions: a well-formed `subject_request_id` becomes a fresh UUID (an id already used
  with other content is refused); a well-formed `submitted_time` in the future, or before year 1 in
  UTC, becomes now; an https callback URL the intake refuses (a loopback or private host, a dot
  segment, credentials: dsr.adapters.webhooks decides) becomes a public one.

Only a field that is otherwise valid is changed, so a call generated to be invalid stays invalid.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

from doors.api.app import RFC3339_DATE_TIME
from doors.api.intake import SUBJECT_REQUEST_ID_PATTERN, SUBMITTED_TIME_PATTERN
from dsr.adapters.webhooks import check_callback_url
from dsr.models import EARLIEST_RECEIVED
from dsr.personal_text import contains_email_address

PLAIN_TEXT = "checked against the account records"
PUBLIC_CALLBACK = "https://forms.example.com/opendsr/callback"


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


def _unacceptable_submission_time(value: str) -> bool:
    """A well-formed submission time past the intake's allowance for clock skew (a few minutes), or one
    before year 1 once in UTC (0001-01-01T00:00:00+04:00)."""
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC) > datetime.now(UTC) + timedelta(minutes=1)
    except OverflowError:
        return True


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if "received" in body and _out_of_window(body["received"]):
        body["received"] = datetime.now(UTC).isoformat()
    if isinstance(body.get("subject_request_id"), str) and re.match(SUBJECT_REQUEST_ID_PATTERN,
                                                                     body["subject_request_id"]):
        body["subject_request_id"] = str(uuid.uuid4())
    submitted = body.get("submitted_time")
    if isinstance(submitted, str) and re.match(SUBMITTED_TIME_PATTERN, submitted) and _unacceptable_submission_time(submitted):
        body["submitted_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    urls = body.get("status_callback_urls")
    if isinstance(urls, list):
        body["status_callback_urls"] = [
            PUBLIC_CALLBACK if isinstance(url, str) and url.startswith("https://") and check_callback_url(url)
            else url for url in urls]
    for field in ("note", "reason"):
        text = body.get(field)
        if isinstance(text, str) and text.strip() and len(text) <= 2000 and contains_email_address(text):
            body[field] = PLAIN_TEXT
