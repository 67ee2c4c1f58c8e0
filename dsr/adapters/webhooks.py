"""OpenDSR status callbacks: signed POSTs to the URLs a request came with, on each status change.

What is sent, to each registered URL, when the request's status differs from the last one that
URL was sent (OpenDSR 2.0 sections 8.5-8.8):

    POST <url>
    Content-Type: application/json
    X-OpenDSR-Processor-Domain: <DSR_OPENDSR_DOMAIN>
    X-OpenDSR-Signature: <Base64 signature of the exact body bytes, processor certificate's key>
    X-OpenGDPR-Processor-Domain, X-OpenGDPR-Signature: the same, for OpenGDPR 1.0 controllers
    X-OpenDSR-Timestamp: <unix seconds when sent>
    X-DSR-Signature-HMAC: sha256=<hex HMAC-SHA256 of the body> (extension: a shared-secret check)

    {"api_version": "2.0", "controller_id": "...", "expected_completion_time": "...",
     "request_status": "in_progress", "status_callback_url": "<this url>",
     "subject_request_id": "...", "updated_time": "...", "extensions": {...}}

The body is canonical JSON (sorted keys, no spaces). A receiver verifies the signature over the
bytes it received with the certificate served at discovery's `processor_certificate`
(`dsr.opendsr_signing.verify_bytes`; `dsr opendsr verify-callback` does it), then checks that
`status_callback_url` is its own endpoint. `updated_time` (inside the signed body) is when the
status changed, so a replayed callback says nothing new. A completed access or portability
request's callback carries `results_url`: a single-use link to the subject's package that expires
(5 days), issued for that callback only (when DSR_OPENDSR_BASE_URL is set).

The HMAC key (extension header): `settings.callback_key`, else the environment variable
`DSR_CALLBACK_KEY`, else a key derived from the identity key.

Delivery: 3 attempts with exponential backoff on a connection error, a timeout, HTTP 429 or 5xx;
other answers are final. Redirects are not followed (http.client never does), so a callback
cannot be bounced to an internal address. Every delivery is recorded in the ledger as
`callback.sent` {url_sha256, request_status, status_code, attempts, delivered}: a hash of the
URL, never the URL, because callback URLs may carry tokens and are treated as secrets (kept in
the `dsr_status_callbacks` table only, never logged, never in an event or a bundle). Once a final
status (completed, cancelled, denied) is delivered, the stored URL is erased.

"Never twice for the same status" is a conditional UPDATE on the URL's last status: of any
number of concurrent callers, one sends; a failed delivery puts the previous status back so
the next call tries again.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from tenacity.wait import WaitBaseT

from dsr import opendsr
from dsr.deadlines import Regime
from dsr.ledger.events import LedgerEvent
from dsr.models import Status
from dsr.settings import Settings
from dsr.state import EventType, RequestState, derive_state

log = logging.getLogger(__name__)

CALLBACK_SENT = "callback.sent"
ACTOR = "status-callbacks"
KEY_ENV = "DSR_CALLBACK_KEY"
MAX_CALLBACK_URLS = 5
MAX_URL_LENGTH = 2048
ATTEMPTS = 3
TIMEOUT_SECONDS = 5.0
SIGNATURE_HEADER = "X-OpenDSR-Signature"
TIMESTAMP_HEADER = "X-OpenDSR-Timestamp"
HMAC_HEADER = "X-DSR-Signature-HMAC"
RESULTS_LINK_DAYS = 5

metadata = MetaData()
callbacks_table = Table(
    "dsr_status_callbacks",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("url_sha256", String(64), primary_key=True),
    Column("url", Text, nullable=True),
    Column("position", Integer, nullable=False),
    Column("last_status", String(32), nullable=True),
)

#: Our statuses as OpenDSR's (plus Ketch's `denied`). Verified counts as in progress: the
#: request is accepted and its run is triggered by the verification.
OPENDSR_STATUS: dict[Status, str] = {
    Status.RECEIVED: "pending",
    Status.AWAITING_VERIFICATION: "pending",
    Status.VERIFIED: "in_progress",
    Status.IN_PROGRESS: "in_progress",
    Status.AWAITING_MANUAL_ACTION: "in_progress",
    Status.PARTIALLY_COMPLETED: "in_progress",  # some systems are left: not done for the subject
    Status.COMPLETED: "completed",
    Status.CANCELLED: "cancelled",
    Status.REJECTED: "denied",
}
FINAL_STATUSES = frozenset({"completed", "cancelled", "denied"})

#: Events after which the OpenDSR status may differ (for `updated_time`).
_STATUS_EVENTS = frozenset({
    EventType.RECEIVED, EventType.VERIFIED, EventType.RUN_STARTED, EventType.MANUAL_ACTION_REQUIRED,
    EventType.COMPLETED, EventType.PARTIALLY_COMPLETED, EventType.CANCELLED, EventType.REJECTED,
})


def opendsr_status(state: RequestState) -> str:
    return OPENDSR_STATUS[state.status]


def updated_time(events: Sequence[LedgerEvent]) -> str:
    """When the request last changed status (the time of its last status-changing event)."""
    return next((e.at for e in reversed(events) if e.type in _STATUS_EVENTS), events[0].at)


def expected_completion_time(state: RequestState, time_zones: Mapping[Regime, str] | None = None) -> str | None:
    """The end of the legal due day in the regime's office zone, as RFC 3339 UTC (see dsr.opendsr)."""
    return opendsr.expected_completion_time(state, time_zones)


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


# -- keys and signatures ---------------------------------------------------------------------------


def callback_key(settings: Settings) -> bytes:
    """The HMAC key for callback signatures (see the module docstring for where it comes from)."""
    configured = getattr(settings, "callback_key", None)
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    if configured:
        return str(configured).encode("utf-8")
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode("utf-8")
    derived = hmac.new(settings.identity_hmac_key, b"dsr-pipeline opendsr status callbacks v1", hashlib.sha256)
    return derived.hexdigest().encode("ascii")


def sign(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_ok(key: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute over the received bytes, compare in constant time."""
    return header is not None and hmac.compare_digest(sign(key, body).encode(), header.strip().encode())


# -- URLs ------------------------------------------------------------------------------------------


def check_callback_url(url: object, allowed_prefixes: Sequence[str] = ()) -> str | None:
    """Why a callback URL is refused, or None when it is acceptable.

    The intake is public, so a callback URL is a request our server will make on a stranger's
    say-so. With `allowed_prefixes` (production: the web form backend's own callback endpoint),
    only URLs under one of them are accepted (same scheme, host and port; a path under the
    prefix's path; no dot segments). Without, only https URLs whose host is a
    name or a public IP address (no loopback, private, link-local or reserved literal; names are
    not resolved, so configure prefixes where internal names could be reached).
    """
    if not isinstance(url, str) or not url:
        return "must be a URL"
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "must be a valid http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not carry credentials before the host (put a token in the path or query)"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "must not contain spaces or control characters"
    segments = parts.path.replace("\\", "/").split("/")
    if any(seg.lower().replace("%2e", ".") in (".", "..") for seg in segments):
        return "must not contain . or .. path segments"
    if allowed_prefixes:
        if not any(_under(parts, prefix) for prefix in allowed_prefixes):
            return "is not an allowed callback address"
        return None
    if parts.scheme != "https":
        return "must use https"
    host = parts.hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "must not point at this machine"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        last = host.rsplit(".", 1)[-1]
        if last.isdigit() or last.startswith("0x"):  # 2130706433, 127.1, 0x7f.1: resolvers read them as IPs
            return "must name its host, or give a plain IP address"
        return None
    if not address.is_global:
        return "must not point at a private, loopback or reserved address"
    return None


def _under(parts: Any, prefix: str) -> bool:
    """Same scheme, host and port as the prefix, and a path under the prefix's path."""
    allowed = urlsplit(prefix)
    return (parts.scheme == allowed.scheme and parts.hostname == allowed.hostname
            and _port(parts) == _port(allowed) and parts.path.startswith(allowed.path or "/"))


def _port(parts: Any) -> int:
    return int(parts.port or (443 if parts.scheme == "https" else 80))


# -- registration ----------------------------------------------------------------------------------


def register_callbacks(service: Any, request_id: str, urls: Sequence[str], *, current_status: str) -> int:
    """Keep a request's callback URLs (idempotent); the current status counts as already sent.

    Returns how many URLs were new.
    """
    if not urls:
        return 0
    added = 0
    try:
        with service.ledger.engine.begin() as conn:
            known = set(conn.execute(select(callbacks_table.c.url_sha256).where(
                callbacks_table.c.request_id == request_id)).scalars())
            for position, url in enumerate(urls):
                digest = url_sha256(url)
                if digest in known:
                    continue
                conn.execute(insert(callbacks_table).values(
                    request_id=request_id, url_sha256=digest, url=url, position=position,
                    last_status=current_status))
                known.add(digest)
                added += 1
    except IntegrityError:
        return 0  # a twin submission of the same request registered them at the same moment
    return added


def _targets(service: Any, request_id: str) -> list[tuple[str, str, str | None]]:
    """(url sha256, url, last status sent) of the request's callbacks still to be kept informed."""
    with service.ledger.read_engine.connect() as conn:
        rows = conn.execute(select(callbacks_table.c.url_sha256, callbacks_table.c.url, callbacks_table.c.last_status)
                            .where(callbacks_table.c.request_id == request_id, callbacks_table.c.url.is_not(None))
                            .order_by(callbacks_table.c.position)).all()
    return [(r[0], r[1], r[2]) for r in rows]


# -- delivery --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackResult:
    url_sha256: str
    request_status: str
    delivered: bool
    status_code: int | None
    attempts: int


class _Retryable(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def _post_once(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname or "", _port(parts), timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", _port(parts), timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read(64 * 1024)
        return int(answer.status)
    finally:
        connection.close()


def _deliver(url: str, body: bytes, headers: dict[str, str], *, attempts: int, timeout: float,
             wait: WaitBaseT | None) -> tuple[bool, int | None, int]:
    """(delivered, last HTTP status or None, attempts made). Never raises for the receiver's faults."""
    made = 0
    status_code: int | None = None
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait if wait is not None else wait_exponential(multiplier=0.25, max=4),
        retry=retry_if_exception_type((_Retryable, OSError, http.client.HTTPException)),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                made += 1
                sent = headers | {TIMESTAMP_HEADER: str(int(time.time()))}
                status_code = _post_once(url, body, sent, timeout)
                if status_code == 429 or status_code >= 500:
                    raise _Retryable(status_code)
    except (_Retryable, OSError, http.client.HTTPException):
        return False, status_code, made
    return 200 <= (status_code or 0) < 300, status_code, made


def controller_of(service: Any, request_id: str) -> str:
    """The OpenDSR controller of a request: the one that signed it, else the web form (the default)."""
    from dsr.intake import DEFAULT_CONTROLLER_ID, intake_requests  # here: dsr.intake imports this module

    with service.ledger.read_engine.connect() as conn:
        found = conn.execute(select(intake_requests.c.controller_id).where(
            intake_requests.c.request_id == request_id)).scalar()
    return str(found or DEFAULT_CONTROLLER_ID)


def _zones(service: Any) -> Mapping[Regime, str] | None:
    try:
        return service.policy.deadlines.rules().time_zones
    except Exception:  # noqa: BLE001 - no policy to hand (a bare service in a tool): the default zones
        return None


def callback_body(service: Any, request_id: str, url: str = "", *,
                  results_url: str | None = None) -> tuple[str, bytes]:
    """(our OpenDSR status, the exact body bytes sent to `url` for it)."""
    events = service.events(request_id)
    state = derive_state(events)
    status = opendsr_status(state)
    spec_status, reason = opendsr.spec_status(status)
    payload: dict[str, Any] = {
        "api_version": opendsr.API_VERSION, "controller_id": controller_of(service, request_id),
        "status_callback_url": url, "subject_request_id": request_id, "request_status": spec_status,
        "updated_time": updated_time(events), "expected_completion_time": expected_completion_time(state, _zones(service)),
    }
    if results_url:
        payload["results_url"] = results_url
    if reason:
        payload["extensions"] = {_domain(service): {"request_status_reason": reason}}
    return status, opendsr.canonical(payload)


def _domain(service: Any) -> str:
    return str(service.settings.opendsr_domain).strip().lower()


def _results_url(service: Any, request_id: str, status: str) -> str | None:
    """A single-use, expiring link to a completed request's package, for one callback (or None)."""
    base = getattr(service.settings, "opendsr_base_url", None)
    if status != "completed" or not base:
        return None
    state = service.state(request_id)
    if state.package is None:
        return None
    token, _expires = service.issue_subject_token(request_id, ttl=timedelta(days=RESULTS_LINK_DAYS), actor=ACTOR)
    return f"{str(base).rstrip('/')}/v2/results/{token}"


def _headers(service: Any, body: bytes, key: bytes) -> dict[str, str]:
    from dsr.opendsr_signing import processor_identity

    return {"Content-Type": "application/json", "User-Agent": "dsr-pipeline", HMAC_HEADER: sign(key, body),
            **opendsr.signature_headers(processor_identity(service.settings), body)}


def notify_status(service: Any, request_id: str, *, attempts: int = ATTEMPTS, timeout: float = TIMEOUT_SECONDS,
                  wait: WaitBaseT | None = None) -> list[CallbackResult]:
    """Send the request's current OpenDSR status to each callback URL not yet sent that status.

    Records each delivery (or failure) as a `callback.sent` event. Returns what was attempted;
    URLs already informed of this status are skipped (and not in the list).
    """
    targets = _targets(service, request_id)
    if not targets:
        return []
    status = opendsr_status(service.state(request_id))
    key = callback_key(service.settings)
    table = callbacks_table
    results: list[CallbackResult] = []
    for digest, url, previous in targets:
        if previous == status:
            continue
        where = (table.c.request_id == request_id, table.c.url_sha256 == digest)
        with service.ledger.engine.begin() as conn:  # claim: exactly one caller sends this status
            claimed = conn.execute(update(table).where(
                *where, table.c.url.is_not(None),
                or_(table.c.last_status.is_(None), table.c.last_status != status),
            ).values(last_status=status)).rowcount == 1
        if not claimed:
            continue
        _, body = callback_body(service, request_id, url, results_url=_results_url(service, request_id, status))
        delivered, status_code, made = _deliver(url, body, _headers(service, body, key), attempts=attempts,
                                                timeout=timeout, wait=wait)
        with service.ledger.engine.begin() as conn:
            if not delivered:  # give the status back so that the next change (or call) tries again
                conn.execute(update(table).where(*where, table.c.last_status == status).values(last_status=previous))
            elif status in FINAL_STATUSES:  # nothing more will be sent: forget the secret
                conn.execute(update(table).where(*where).values(url=None))
        service.ledger.append(request_id, CALLBACK_SENT, {
            "url_sha256": digest, "request_status": status, "status_code": status_code,
            "attempts": made, "delivered": delivered,
        }, actor=ACTOR)
        if not delivered:
            log.warning("status callback %s... for request %s not delivered after %d attempt(s) (HTTP %s)",
                        digest[:12], request_id, made, status_code if status_code is not None else "none")
        results.append(CallbackResult(digest, status, delivered, status_code, made))
    return results


def on_status_change(service: Any, request_id: str, *, notify: Callable[..., Any] = notify_status) -> None:
    """Call after anything that may change a request's status (run, verify, cancel, reject).

    Cheap when the request has no callbacks (one indexed read); never raises: a receiver that is
    down must not fail the run or the officer's action (the failure is in the ledger and the log).
    """
    try:
        notify(service, request_id)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("status callbacks for request %s failed: %s", request_id, type(exc).__name__)


#: The callbacks' subscription on the application's event bus (one per service).
SUBSCRIPTION_KEY = "opendsr-status-callbacks"


def subscribe(service: Any) -> None:
    """Send a request's status callbacks on every change the service publishes (idempotent).

    Every topic counts: a verification, a cancellation and a run's progress may each move the
    status a receiver sees, and `notify_status` sends only when it differs from the last sent.
    """
    service.bus.subscribe(lambda _topic, request_id: on_status_change(service, request_id), key=SUBSCRIPTION_KEY)
