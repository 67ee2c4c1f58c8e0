"""OpenDSR 2.0 as a processor speaks it: discovery, response objects, error objects, signed bodies.

The HTTP routes are in doors.api.intake; the intake rules (codes, duplicates, clock) in dsr.intake;
this module holds the protocol's shapes, so that the routes, the callbacks and the `dsr opendsr`
client agree on them.

- Versions: OpenDSR 2.0 under `/opendsr/v2/...` (`requests`), and the prior name the spec asks
  processors to keep honouring (section 10.1), OpenGDPR 1.0, under `/opendsr/v1/...`
  (`opengdpr_requests`, `X-OpenGDPR-*` headers). Every response and callback carries both header
  families, so a controller of either generation finds the ones it knows.
- Statuses: pending, in_progress, completed, cancelled (section 8). A request the office rejected
  is `cancelled` here, with `request_status_reason: denied` in our extension.
- Our extensions (section 7.1.2), under `extensions[<processor domain>]` in requests and
  responses: `country` and `regime` (uk-gdpr, lgpd, pipeda beside gdpr and ccpa) in a request;
  the e-mailed code verification, duplicate linking and the status reason in a response.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from dsr.deadlines import DEFAULT_RULES, Regime
from dsr.opendsr_signing import ProcessorIdentity
from dsr.state import RequestState

API_VERSION = "2.0"
OPENGDPR_API_VERSION = "1.0"
DOMAIN_HEADER = "X-OpenDSR-Processor-Domain"
SIGNATURE_HEADER = "X-OpenDSR-Signature"
OPENGDPR_DOMAIN_HEADER = "X-OpenGDPR-Processor-Domain"
OPENGDPR_SIGNATURE_HEADER = "X-OpenGDPR-Signature"
SIGNATURE_HEADERS = (SIGNATURE_HEADER, OPENGDPR_SIGNATURE_HEADER)

REQUEST_TYPES = ("access", "portability", "erasure")
SUPPORTED_IDENTITIES = ({"identity_type": "email", "identity_format": "raw"},)
SPEC_STATUSES = frozenset({"pending", "in_progress", "completed", "cancelled"})


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The bytes a JSON object is sent and signed as (sorted keys, no spaces, UTF-8)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature_headers(identity: ProcessorIdentity, body: bytes) -> dict[str, str]:
    """The processor-domain and signature headers (both generations) for these exact body bytes."""
    signature = identity.sign(body)
    return {DOMAIN_HEADER: identity.domain, SIGNATURE_HEADER: signature,
            OPENGDPR_DOMAIN_HEADER: identity.domain, OPENGDPR_SIGNATURE_HEADER: signature}


def with_processor_signature(identity: ProcessorIdentity, payload: dict[str, Any]) -> dict[str, Any]:
    """Add `processor_signature`: the signature of the canonical bytes of the object without it.

    (The spec asks for a signature of "the body of the response" inside that body; the body
    without the field is what can be signed. The header signature covers the body as sent.)
    """
    unsigned = {k: v for k, v in payload.items() if k != "processor_signature"}
    return unsigned | {"processor_signature": identity.sign(canonical(unsigned))}


def processor_signature_ok(identity_or_cert: Any, payload: Mapping[str, Any]) -> bool:
    """What a controller does with `processor_signature` (a ProcessorIdentity or an x509 certificate)."""
    from dsr.opendsr_signing import verify_bytes

    unsigned = {k: v for k, v in payload.items() if k != "processor_signature"}
    signature = payload.get("processor_signature")
    cert = getattr(identity_or_cert, "certificate", identity_or_cert)
    return isinstance(signature, str) and verify_bytes(cert, canonical(unsigned), signature)


# -- objects ---------------------------------------------------------------------------------------


def discovery(*, base_url: str, version: str = API_VERSION) -> dict[str, Any]:
    """Section 6.3: what this processor supports, and where its certificate is."""
    return {
        "api_version": version,
        "supported_identities": [dict(i) for i in SUPPORTED_IDENTITIES],
        "supported_subject_request_types": list(REQUEST_TYPES),
        "processor_certificate": f"{base_url.rstrip('/')}/v2/certificate.pem",
        # Extensions (section 7.1.2): what `extensions[<domain>]` may carry, and the other regimes.
        "supported_regulations": ["gdpr", "ccpa"],
        "extensions": {"regime": ["gdpr", "uk-gdpr", "ccpa", "lgpd", "pipeda"], "country": "ISO 3166-1 alpha-2",
                       "verification": "email-code"},
    }


def error_object(code: int, message: str, problems: Sequence[tuple[str, str]] = (), *,
                 reason: str = "IllegalArgumentException", domain: str = "Validation") -> dict[str, Any]:
    """Section 7.6: `{"error": {"code", "message", "errors": [{domain, reason, message}]}}`.

    `problems` are (field path, message) pairs; messages name the field, never the value sent.
    """
    errors = [{"domain": domain, "reason": reason, "message": f"{where}: {what}" if where else what}
              for where, what in problems] or [{"domain": domain, "reason": reason, "message": message}]
    return {"error": {"code": code, "message": errors[0]["message"] if problems else message, "errors": errors}}


def spec_status(opendsr_status: str) -> tuple[str, str | None]:
    """(a status of section 8, our reason): a denied request is cancelled, reason denied."""
    if opendsr_status in SPEC_STATUSES:
        return opendsr_status, None
    return "cancelled", opendsr_status


def expected_completion_time(state: RequestState, time_zones: Mapping[Regime, str] | None = None) -> str | None:
    """The end of the legal due day in the regime's office zone, in UTC (RFC 3339).

    The due date is a date in the regime's calendar: a GDPR request due on 28 April is due until
    midnight in Amsterdam (21:59:59Z in summer), a CCPA one until midnight in Los Angeles.
    """
    if not state.due:
        return None
    zones = time_zones or DEFAULT_RULES.time_zones
    try:
        zone = ZoneInfo(zones[Regime(state.regime)])
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    end = datetime.combine(date.fromisoformat(state.due), time(23, 59, 59), zone)
    return end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encoded_request(raw_body: bytes) -> str:
    """Section 7.3: Base64 of the entire request body as received."""
    return base64.b64encode(raw_body).decode("ascii")
