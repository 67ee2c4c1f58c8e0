"""A loopback emulator of NetSuite SuiteTalk REST web services, for the demo, the tests and the benchmarks.

It speaks the wire formats of `shared/reference/vendor-apis.md` section 3, so that plain `requests` with
`requests-oauthlib` cannot tell it from an account:

- Token-based authentication (OAuth 1.0a): every call carries ``Authorization: OAuth realm="<ACCOUNT>",
  oauth_consumer_key=..., oauth_token=..., oauth_signature_method="HMAC-SHA256", ...``. The signature is
  checked with oauthlib (`oauthlib.oauth1.rfc5849.signature`) over method, URL and query parameters (a JSON
  body is not signed), with the key ``consumer_secret&token_secret``; the realm must be the account id
  (upper case, underscore); HMAC-SHA1 is refused; a timestamp outside the tolerance and a nonce seen
  before (a replay) are refused. Every refusal is NetSuite's 401 ``INVALID_LOGIN`` body with a
  ``WWW-Authenticate`` header; the reason goes only to the login audit trail (``GET /__sandbox__/login-audit``),
  as in NetSuite.
- OAuth 2.0 client credentials (M2M): ``POST /services/rest/auth/oauth2/v1/token`` with a JWT client
  assertion (header ``kid`` = the certificate id, alg PS256/384/512 or ES256/384/512; claims ``iss`` =
  client id, ``scope`` including ``rest_webservices``, ``aud`` = the token URL, ``iat``, ``exp`` at most an
  hour later), verified against the certificate registered for that kid; answers
  ``{"access_token", "expires_in": "3600", "token_type": "bearer"}``. Bearer tokens expire after an hour.
- SuiteQL: ``POST /services/rest/query/v1/suiteql?limit=&offset=`` with ``Prefer: transient`` and
  ``{"q": "..."}``. Up to 1,000 rows a page, `offset` a multiple of `limit`, 100,000 rows per query at most;
  the answer is ``{links, count, hasMore, items, offset, totalResults}`` with lower-case keys, ids as strings,
  booleans as ``"T"``/``"F"``, dates as ``M/D/YYYY`` and empty columns left out. The dialect is a small,
  strict subset: ``SELECT cols | * FROM customer|contact|transaction [[LEFT [OUTER] | INNER] JOIN <another of
  them> ON <table.column> = <table.column>] [WHERE ...] [ORDER BY ...]`` (SuiteQL takes ANSI joins, DOC
  section_3903316302; here without table aliases, columns qualified by table name, an unqualified one both
  tables have is ORA-00918) with
  ``=, !=, <>, <, <=, >, >=, [NOT] IN (...), IS [NOT] NULL, [NOT] LIKE, AND, OR, NOT`` and parentheses;
  ``LOWER``/``UPPER``/``TO_CHAR(col, 'YYYY-MM-DD')`` on columns and ``TO_DATE('...', 'YYYY-MM-DD')`` literals.
  Strings are Oracle's: single quotes, ``''`` for a quote inside, ``''`` alone is NULL, comparisons are
  case-sensitive and exact; ``%`` and ``_`` are wildcards only after LIKE. An IN list holds 1,000 values at
  most (ORA-01795).
- Records: ``GET`` (``expandSubResources=true`` expands sublists), ``PATCH`` (204; ``replace=<sublist>``
  replaces a sublist's lines; customers' and contacts' ``globalSubscriptionStatus`` as NetSuite's
  Subscription Management says: a business sets Soft Opt-In or Soft Opt-Out only, and no one but the
  recipient changes a Confirmed Opt-Out, both 400 ``USER_ERROR``), ``DELETE`` (204), ``POST`` create (204 with ``Location``) and a plain
  collection listing under ``/services/rest/record/v1/{customer,contact,invoice,cashSale,creditMemo,
  customerPayment,salesOrder}``. A customer that a transaction references cannot be deleted (400
  ``USER_ERROR`` "...because it has dependent records", as NetSuite refuses it); ``entityId`` is unique
  per record type; e-mail fields are checked.
- Limits: at most `max_concurrency` calls in flight (NetSuite: 15 per account plus 10 per SuiteCloud Plus
  licence, shared by SOAP, REST and RESTlets); the excess is answered 429. vendor-apis.md section 9 says
  the REST 429 body is not documented; this answers its suggested shape
  ``{"type", "title": "Too Many Requests", "status": 429, "o:errorDetails": [{"detail", "o:errorCode":
  "CONCURRENCY_LIMIT_EXCEEDED"}]}`` without ``Retry-After``.
- Faults through the kit: 429 (as above), 503, expired bearer tokens (the token is revoked, then 401),
  resets, timeouts, latency.

Error bodies are NetSuite's: ``{"type", "title", "status", "o:errorDetails": [{"detail", "o:errorCode",
"o:errorPath"?, "o:errorQueryParam"?, "o:errorHeader"?}]}``, content type
``application/vnd.oracle.resource+json; type=error``. Like NetSuite's, some details echo the values sent
(an invalid e-mail address, a query fragment): clients must not pass them on.

Control actions (under ``/__sandbox__/``, besides the kit's stats/faults/reset): ``POST seed-demo
{"seed": 7}``, ``POST add-records {"type": "customer", "records": [{...}]}``, ``POST refuse-delete
{"ids": [...]}`` (``{"clear": true}`` forgets them), ``POST expire-sessions``, ``GET login-audit``,
``GET records/<type>``.

Sandboxes know vendor wire formats only, never the project's own code.

    python -m sandbox.netsuite --port 8767
"""

from __future__ import annotations

import itertools
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

import jwt  # PyJWT: verifies the OAuth 2.0 client assertions
import requests
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header
from requests_oauthlib import OAuth1

from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import (
    CONTROL_PREFIX,
    ControlClient,
    Request,
    Response,
    TokenStore,
    Vendor,
    bearer_token,
    demo_cli,
    serve_demo,
)
from sandbox.netsuite_records import (
    CURRENCIES,
    DEFAULT_SUBSCRIPTION,
    FIELDS_BY_NAME,
    SCHEMAS,
    SOFT_STATUSES,
    SUBSCRIPTION_STATUSES,
    SUBSIDIARIES,
    SUITEQL_TABLES,
    TRANSACTION_CODES,
    TRANSACTION_STATUS,
    RecordField,
    iso_seconds,
    now_seconds,
)
from sandbox.netsuite_seed import DECOY_EMAILS, DemoSeeder
from sandbox.suiteql import Operand, QueryError, SuiteQLParser, join_rows, operand_value, suiteql_value, truth

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "DEMO_ACCOUNT_ID",
    "DEMO_CERTIFICATE_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CONSUMER_KEY",
    "DEMO_CONSUMER_SECRET",
    "DEMO_TOKEN_ID",
    "DEMO_TOKEN_SECRET",
    "ERASURE_SUBJECT",
    "AccountClient",
    "NetSuiteSandbox",
    "TOKEN_PATH",
]

DEMO_ACCOUNT_ID = "1234567_SB1"
"""The demo account (a sandbox account: ``_SB1``); the OAuth realm. Its host would be ``1234567-sb1``."""

DEMO_CONSUMER_KEY = "ns-sandbox-consumer-key-0f6b1d2e9a7c4e3b8d5f1a2c3e4b5d6f"
DEMO_CONSUMER_SECRET = "ns-sandbox-consumer-secret-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
DEMO_TOKEN_ID = "ns-sandbox-token-id-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
DEMO_TOKEN_SECRET = "ns-sandbox-token-secret-6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a"
"""The demo integration's TBA credentials (sandbox only; never real credentials)."""

DEMO_CLIENT_ID = "ns-sandbox-m2m-client-4c1d9f2e7b3a"
"""The demo integration record's client id for OAuth 2.0 client credentials."""

DEMO_CERTIFICATE_ID = "ns-sandbox-cert-2f9a"
"""The certificate id (JWT ``kid``) under which the demo's public key would be registered."""

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
PAGE_MAX = 1000
RESULT_CAP = 100_000
TOKEN_SECONDS = 3600
_REST = "/services/rest"
_RECORD = f"{_REST}/record/v1"
_SUITEQL = f"{_REST}/query/v1/suiteql"
_CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_JWT_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_ERROR_TYPE = "application/vnd.oracle.resource+json; type=error"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_INVALID_LOGIN = ("Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > "
                  "Users/Roles > User Management > View Login Audit Trail.")
_DEPENDENT = "Error while accessing a resource. This record cannot be deleted because it has dependent records."

_TYPES = {
    400: ("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.1", "Bad Request"),
    401: ("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html", "Unauthorized"),
    403: ("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.4", "Forbidden"),
    404: ("https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.5", "Not Found"),
    405: ("https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.6", "Method Not Allowed"),
    429: ("https://www.rfc-editor.org/rfc/rfc6585.html#section-4", "Too Many Requests"),
    500: ("https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.1", "Internal Server Error"),
    503: ("https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.4", "Service Unavailable"),
}


def _error(status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None,
           path: str | None = None, query_param: str | None = None, header: str | None = None) -> Response:
    """NetSuite's error body, with ``o:errorPath``, ``o:errorQueryParam`` or ``o:errorHeader`` when given."""
    kind, title = _TYPES.get(status, _TYPES[400])
    item: dict[str, Any] = {"detail": detail, "o:errorCode": code}
    for key, value in (("o:errorPath", path), ("o:errorQueryParam", query_param), ("o:errorHeader", header)):
        if value is not None:
            item[key] = value
    body = {"type": kind, "title": title, "status": status, "o:errorDetails": [item]}
    return Response(status, json.dumps(body).encode(), {"Content-Type": _ERROR_TYPE, **(headers or {})})


class _ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, *, path: str | None = None,
                 query_param: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.path, self.query_param = path, query_param

    def response(self) -> Response:
        return _error(self.status, self.code, self.detail, path=self.path, query_param=self.query_param)


def _not_found() -> _ApiError:
    return _ApiError(404, "NONEXISTENT_ID", "The record instance does not exist. Provide a valid record instance ID.")


def _bad_content(detail: str, path: str) -> _ApiError:
    return _ApiError(400, "INVALID_CONTENT", f"Error while accessing a resource. {detail}", path=path)


# --- the vendor -----------------------------------------------------------------------------------------------


class NetSuiteSandbox(Vendor):
    """An in-memory NetSuite account behind SuiteTalk REST (see the module docstring).

    Args:
        account_id: the account id, the OAuth realm (``1234567_SB1``).
        consumer_key, consumer_secret, token_id, token_secret: the one TBA integration and access token.
        oauth2_clients: client id -> {certificate id (JWT kid): PEM public key} for client credentials;
            more can be added with `register_certificate`.
        max_concurrency: calls in flight before NetSuite answers 429.
        page_max: rows per SuiteQL page at most (1,000).
        result_cap: rows one SuiteQL query can return (100,000).
        timestamp_tolerance: seconds an OAuth 1.0a timestamp may be off the server's clock.
    """

    name = "netsuite"

    def __init__(
        self,
        *,
        account_id: str = DEMO_ACCOUNT_ID,
        consumer_key: str = DEMO_CONSUMER_KEY,
        consumer_secret: str = DEMO_CONSUMER_SECRET,
        token_id: str = DEMO_TOKEN_ID,
        token_secret: str = DEMO_TOKEN_SECRET,
        oauth2_clients: Mapping[str, Mapping[str, str | bytes]] | None = None,
        max_concurrency: int = 15,
        page_max: int = PAGE_MAX,
        result_cap: int = RESULT_CAP,
        timestamp_tolerance: float = 300.0,
    ) -> None:
        super().__init__()
        self.account_id = account_id
        self.consumers = {consumer_key: consumer_secret}
        self.access_tokens = {token_id: (consumer_key, token_secret)}
        self.oauth2_clients: dict[str, dict[str, str | bytes]] = {
            client: dict(certs) for client, certs in (oauth2_clients or {}).items()
        }
        self.max_concurrency, self.page_max, self.result_cap = max_concurrency, page_max, result_cap
        self.timestamp_tolerance = timestamp_tolerance

        self._lock = threading.RLock()  # the store
        self._rows: dict[str, dict[int, dict[str, Any]]] = {rtype: {} for rtype in SCHEMAS}
        self._entity_ids = itertools.count(101)
        self._transaction_ids = itertools.count(2001)
        self._refusals: set[int] = set()
        self._trusted_write = False  # _create of a seeded (trusted) record may set any subscription status

        self._auth_lock = threading.Lock()
        self._nonces: dict[tuple[str, str, str], float] = {}
        self._bearers = TokenStore()
        self.login_audit: list[dict[str, Any]] = []
        self.install()

    # --- kit hooks ---

    def concurrency_cap(self, request: Request) -> tuple[int | None, float] | None:
        return (self.max_concurrency, 0.0) if request.path.startswith(_REST) else None

    def authenticate(self, request: Request) -> Response | None:
        if request.path == TOKEN_PATH:
            return None  # the client assertion is the credential
        header = request.header("authorization") or ""
        if header[:7].lower() == "bearer ":
            return self._check_bearer(bearer_token(request))
        if header[:6].lower() == "oauth ":
            return self._check_tba(request, header)
        return self._refuse("no credentials")

    def throttled(self, request: Request) -> Response:
        return _error(429, "CONCURRENCY_LIMIT_EXCEEDED",
                      "Concurrent request limit exceeded. Request blocked.")

    def expired(self, request: Request) -> Response:
        self._bearers.revoke(bearer_token(request))  # the token really ends: fetch another
        return self._refuse("session expired (fault injection)")

    def server_error(self, request: Request) -> Response:
        return _error(503, "SERVICE_UNAVAILABLE", "The service is temporarily unavailable. Try again later.")

    def not_found(self, request: Request) -> Response:
        return _error(404, "NONEXISTENT_ID", f"Invalid request URL: {request.path} was not found.")

    def method_not_allowed(self, request: Request) -> Response:
        return _error(405, "INVALID_METHOD", "Invalid request method. The method is not allowed for this resource.")

    def reset_state(self) -> None:
        with self._auth_lock:
            self._nonces.clear()
            self.login_audit.clear()
        with self._lock:
            self._refusals.clear()

    def _controls(self) -> None:
        def add_records(body: dict[str, Any], _: object) -> Response | dict[str, Any]:
            try:
                return {"ids": self.add_records(str(body.get("type")), body.get("records") or [])}
            except _ApiError as exc:
                return exc.response()

        def refuse_delete(body: dict[str, Any], _: object) -> dict[str, Any]:
            with self._lock:
                if body.get("clear"):
                    self._refusals.clear()
                self._refusals.update(int(i) for i in body.get("ids") or [])
                return {"refusing": len(self._refusals)}

        def login_audit(body: dict[str, Any], _: object) -> dict[str, Any]:
            with self._auth_lock:
                return {"entries": list(self.login_audit)}

        def records(_: object, params: dict[str, str]) -> Response | dict[str, Any]:
            if params["type"] not in SCHEMAS:
                return Response.json({"error": "unknown record type"}, 404)
            return {"records": self.records(params["type"])}

        on = self.on_control
        on("POST", "seed-demo", lambda body, _: {"seeded": self.seed_demo(int(body.get("seed", 7)))})
        on("POST", "add-records", add_records)
        on("POST", "refuse-delete", refuse_delete)
        on("POST", "expire-sessions", lambda body, _: {"expired": self._bearers.expire_all()})
        on("GET", "login-audit", login_audit)
        on("GET", "records/(?P<type>.+)", records)

    # --- authentication ---

    def _refuse(self, reason: str, scheme: str = "OAuth") -> Response:
        with self._auth_lock:
            self.login_audit.append({"status": "Failure", "reason": reason, "scheme": scheme})
        header = (f'OAuth realm="{self.account_id}", error="token_rejected", '
                  'error_description="Invalid login attempt."')
        return _error(401, "INVALID_LOGIN", _INVALID_LOGIN, headers={"WWW-Authenticate": header})

    def _check_tba(self, request: Request, header: str) -> Response | None:
        try:
            pairs = parse_authorization_header(header)
        except (ValueError, IndexError):
            return self._refuse("malformed OAuth header")
        params = {k: unquote(v) for k, v in pairs}
        if params.get("realm") != self.account_id:
            return self._refuse("wrong realm (account id)")
        if params.get("oauth_signature_method") != "HMAC-SHA256":
            return self._refuse("unsupported signature method (HMAC-SHA256 is required)")
        consumer_key, token_id = params.get("oauth_consumer_key", ""), params.get("oauth_token", "")
        consumer_secret = self.consumers.get(consumer_key)
        token = self.access_tokens.get(token_id)
        if consumer_secret is None or token is None or token[0] != consumer_key:
            return self._refuse("unknown consumer key or token")
        nonce, stamp = params.get("oauth_nonce", ""), params.get("oauth_timestamp", "")
        if not nonce or not stamp.isdigit() or params.get("oauth_version", "1.0") != "1.0":
            return self._refuse("missing nonce, timestamp or version")
        if abs(time.time() - int(stamp)) > self.timestamp_tolerance:
            return self._refuse("timestamp outside the allowed window")
        host = request.header("host") or "127.0.0.1"
        query = urlencode([(k, v) for k, values in request.query.items() for v in values])
        uri = f"http://{host}{request.path}" + (f"?{query}" if query else "")
        oauth_request = OAuthRequest(uri, http_method=request.method, headers={"Authorization": header})
        oauth_request.params = oauth_signature.collect_parameters(uri_query=query, headers={"Authorization": header},
                                                                  exclude_oauth_signature=True, with_realm=False)
        oauth_request.signature = params.get("oauth_signature", "")
        if not oauth_signature.verify_hmac_sha256(oauth_request, consumer_secret, token[1]):
            return self._refuse("invalid signature")
        with self._auth_lock:
            now = time.time()
            for key, seen in list(self._nonces.items()):
                if now - seen > 2 * self.timestamp_tolerance:
                    del self._nonces[key]
            key = (consumer_key, token_id, nonce)
            if key in self._nonces:
                replay = True
            else:
                replay = False
                self._nonces[key] = now
        if replay:
            return self._refuse("nonce already used (replay)")
        return None

    def _check_bearer(self, token: str) -> Response | None:
        if self._bearers.problem(token) is not None:
            return self._refuse("unknown or expired access token", "Bearer")
        return None

    def register_certificate(self, client_id: str, certificate_id: str, public_key_pem: str | bytes) -> None:
        """Map a certificate (the JWT's ``kid``) to a client id, as the OAuth 2.0 client credentials setup does."""
        self.oauth2_clients.setdefault(client_id, {})[certificate_id] = public_key_pem

    def _token(self, request: Request) -> Response:
        self.count("token_requests")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}

        def refuse(error: str, reason: str) -> Response:
            with self._auth_lock:
                self.login_audit.append({"status": "Failure", "reason": reason, "scheme": "OAuth 2.0"})
            return Response.json({"error": error}, 400 if error != "invalid_client" else 401)

        if form.get("grant_type") != "client_credentials":
            return refuse("unsupported_grant_type", "grant_type is not client_credentials")
        if form.get("client_assertion_type") != _CLIENT_ASSERTION_TYPE or not form.get("client_assertion"):
            return refuse("invalid_request", "client assertion missing")
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return refuse("invalid_request", "malformed client assertion")
        client_id, kid, alg = str(unverified.get("iss", "")), str(header.get("kid", "")), header.get("alg")
        key = self.oauth2_clients.get(client_id, {}).get(kid)
        if key is None:
            return refuse("invalid_client", "unknown client id or certificate id")
        if alg not in _JWT_ALGORITHMS:
            return refuse("invalid_request", f"algorithm {alg} not allowed")
        host = request.header("host") or "127.0.0.1"
        audiences = [f"http://{host}{TOKEN_PATH}", f"https://{_host_of(self.account_id)}{TOKEN_PATH}"]
        try:
            claims = jwt.decode(assertion, key, algorithms=[alg], audience=audiences,
                                options={"require": ["iss", "aud", "iat", "exp"]}, leeway=5)
        except jwt.PyJWTError as exc:
            return refuse("invalid_grant", f"client assertion refused ({type(exc).__name__})")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return refuse("invalid_grant", "assertion lifetime over an hour")
        scope = claims.get("scope")
        scopes = set(scope) if isinstance(scope, list) else set(str(scope or "").replace(",", " ").split())
        if "rest_webservices" not in scopes:
            return refuse("invalid_scope", "scope lacks rest_webservices")
        token = self._bearers.issue(secrets.token_urlsafe(48), TOKEN_SECONDS)
        return Response.json({"access_token": token, "expires_in": str(TOKEN_SECONDS), "token_type": "bearer"})

    # --- routes ---

    def routes(self) -> None:
        types = "|".join(SCHEMAS)
        record = rf"{_RECORD}/(?P<rtype>{types})/(?P<rid>[^/]+)"
        self.router.add("POST", TOKEN_PATH, self._token)
        self.router.add("POST", _SUITEQL, self._suiteql)
        self.router.add("GET", record, self._get)
        self.router.add("PATCH", record, self._patch)
        self.router.add("DELETE", record, self._delete)
        self.router.add("GET", rf"{_RECORD}/(?P<rtype>{types})", self._list)
        self.router.add("POST", rf"{_RECORD}/(?P<rtype>{types})", self._create_route)
        self._controls()

    def _base(self, request: Request) -> str:
        return f"http://{request.header('host') or '127.0.0.1'}"

    def _suiteql(self, request: Request) -> Response:
        self.count("suiteql")
        prefer = (request.header("prefer") or "").lower()
        if "transient" not in prefer:
            return _error(400, "INVALID_HEADER", "Invalid 'Prefer' header value. SuiteQL queries through REST web "
                          "services need 'Prefer: transient'.", header="Prefer")
        try:
            limit = int(request.arg("limit", str(self.page_max)) or self.page_max)
            offset = int(request.arg("offset", "0") or 0)
        except ValueError:
            return _error(400, "INVALID_PARAMETER", "Invalid value for query parameter 'limit' or 'offset'.",
                          query_param="limit")
        if not 1 <= limit <= self.page_max:
            return _error(400, "INVALID_PARAMETER", f"Invalid value for query parameter 'limit'. The value must be "
                          f"between 1 and {self.page_max}.", query_param="limit")
        if offset < 0 or offset % limit:
            return _error(400, "INVALID_PARAMETER", "Invalid value for query parameter 'offset'. The offset must be "
                          "a multiple of the limit.", query_param="offset")
        if offset >= self.result_cap:
            return _error(400, "INVALID_PARAMETER", f"Invalid value for query parameter 'offset'. A query can return "
                          f"{self.result_cap} results at most.", query_param="offset")
        body = _json_or_none(request)
        if not isinstance(body, dict) or not isinstance(body.get("q"), str):
            return _error(400, "INVALID_CONTENT", "Error while accessing a resource. The request body must hold "
                          "the query in the property 'q'.", path="q")
        try:
            query = SuiteQLParser(body["q"]).parse()
            with self._lock:
                rows = self._table_rows(query.table)
                if query.join is not None:
                    rows = join_rows(query.join, query.table, rows, self._table_rows(query.join.table))
                matched = [row for row in rows if query.where is None or truth(query.where, row) is True]
                for operand, descending in reversed(query.order):
                    present = [r for r in matched if operand_value(operand, r) is not None]
                    missing = [r for r in matched if operand_value(operand, r) is None]
                    present.sort(key=partial(_row_key, operand), reverse=descending)
                    matched = (missing + present) if descending else (present + missing)  # Oracle: NULLS LAST asc
        except QueryError as exc:
            return _error(400, "INVALID_PARAMETER", "Invalid search query. Detailed unprocessed description follows. "
                          f"Search error occurred: {exc}")
        visible = matched[: self.result_cap]
        page = visible[offset : offset + limit]
        items = []
        for row in page:
            item: dict[str, Any] = {"links": []}
            for key, operand in query.select:
                value = operand_value(operand, row)
                if value is not None:
                    item[key] = suiteql_value(value)
            items.append(item)
        with self.stats_lock:
            self.stats["suiteql_rows"] += len(items)
        has_more = offset + len(page) < len(visible)
        base = f"{self._base(request)}{_SUITEQL}"

        def link(rel: str, at: int) -> dict[str, str]:
            return {"rel": rel, "href": f"{base}?{urlencode({'limit': limit, 'offset': at})}"}

        links = [link("first", 0)]
        if offset:
            links.append(link("previous", max(offset - limit, 0)))
        if has_more:
            links.append(link("next", offset + limit))
        links.append(link("last", max((len(visible) - 1) // limit * limit, 0)))
        links.append(link("self", offset))
        return Response.json({"links": links, "count": len(items), "hasMore": has_more, "items": items,
                              "offset": offset, "totalResults": len(matched)},
                             headers={"Content-Type": "application/vnd.oracle.resource+json; type=collection"})

    def _get(self, request: Request) -> Response:
        self.count("record_get")
        rtype = request.params["rtype"]
        expand = (request.arg("expandSubResources") or "").lower() == "true"
        with self._lock:
            try:
                row = self._row(rtype, request.params["rid"])
            except _ApiError as exc:
                return exc.response()
            body = self._render(rtype, row, self._base(request), expand=expand)
        return Response.json(body, headers={"Content-Type": "application/vnd.oracle.resource+json; type=singular"})

    def _patch(self, request: Request) -> Response:
        self.count("record_patch")
        self.count(f"patch_{request.params['rtype']}")
        rtype = request.params["rtype"]
        body = _json_or_none(request)
        if not isinstance(body, dict):
            return _error(400, "INVALID_CONTENT", "Error while accessing a resource. The request body is not a JSON "
                          "object.")
        replace = {name for value in request.query.get("replace", []) for name in value.split(",") if name}
        with self._lock:
            try:
                row = self._row(rtype, request.params["rid"])
                self._write(rtype, row, body, replace=replace, creating=False)
            except _ApiError as exc:
                return exc.response()
        return Response.empty(204)

    def _delete(self, request: Request) -> Response:
        rtype = request.params["rtype"]
        self.count("record_delete")
        self.count(f"delete_{rtype}")
        with self._lock:
            try:
                row = self._row(rtype, request.params["rid"])
            except _ApiError as exc:
                return exc.response()
            rid = row["id"]
            if rid in self._refusals:
                self.count("delete_refused")
                return _error(400, "USER_ERROR", "Error while accessing a resource. You do not have permission to "
                              "delete this record.")
            if rtype == "customer" and any(t["entity"] == rid for rtype_ in TRANSACTION_CODES
                                           for t in self._rows[rtype_].values()):
                self.count("delete_refused")
                return _error(400, "USER_ERROR", _DEPENDENT)
            del self._rows[rtype][rid]
        return Response.empty(204)

    def _list(self, request: Request) -> Response:
        rtype = request.params["rtype"]
        try:
            limit = int(request.arg("limit", "1000") or 1000)
            offset = int(request.arg("offset", "0") or 0)
        except ValueError:
            return _error(400, "INVALID_PARAMETER", "Invalid value for query parameter 'limit'.", query_param="limit")
        if not 1 <= limit <= 1000 or offset < 0 or offset % limit:
            return _error(400, "INVALID_PARAMETER", "Invalid value for query parameter 'limit' or 'offset'.",
                          query_param="offset")
        condition = request.arg("q")
        with self._lock:
            rows = sorted(self._rows[rtype].values(), key=lambda r: r["id"])
            if condition:
                match = re.fullmatch(r'\s*(\w+)\s+(IS|IS_NOT|CONTAIN|START_WITH)\s+"(.*)"\s*', condition)
                spec = FIELDS_BY_NAME[rtype].get(match.group(1).lower()) if match else None
                if match is None or spec is None or spec.kind not in ("text", "email"):
                    return _error(400, "INVALID_PARAMETER", "Invalid query parameter 'q'.", query_param="q")
                op, wanted = match.group(2), match.group(3).lower()
                tests: dict[str, Callable[[str], bool]] = {"IS": lambda v: v == wanted, "IS_NOT": lambda v: v != wanted,
                         "CONTAIN": lambda v: wanted in v, "START_WITH": lambda v: v.startswith(wanted)}
                rows = [r for r in rows if tests[op]((r.get(spec.name) or "").lower())]
        base = f"{self._base(request)}{_RECORD}/{rtype}"
        page = rows[offset : offset + limit]
        return Response.json({
            "links": [{"rel": "self", "href": f"{base}?{urlencode({'limit': limit, 'offset': offset})}"}],
            "count": len(page), "hasMore": offset + len(page) < len(rows), "offset": offset,
            "totalResults": len(rows),
            "items": [{"links": [{"rel": "self", "href": f"{base}/{r['id']}"}], "id": str(r["id"])} for r in page],
        }, headers={"Content-Type": "application/vnd.oracle.resource+json; type=collection"})

    def _create_route(self, request: Request) -> Response:
        self.count("record_create")
        rtype = request.params["rtype"]
        body = _json_or_none(request)
        if not isinstance(body, dict):
            return _error(400, "INVALID_CONTENT", "Error while accessing a resource. The request body is not a JSON "
                          "object.")
        with self._lock:
            try:
                rid = self._create(rtype, body)
            except _ApiError as exc:
                return exc.response()
        return Response.empty(204, {"Location": f"{self._base(request)}{_RECORD}/{rtype}/{rid}"})

    # --- in-process API for tests and the demo ---

    def seed_demo(self, seed: int = 7) -> dict[str, int]:
        """Forget every record and load the demo account: the two subjects, the decoys, ~40 other customers.

        Returns:
            Records per record type.
        """
        with self._lock:
            for rows in self._rows.values():
                rows.clear()
            self._refusals.clear()
            self._entity_ids = itertools.count(101)
            self._transaction_ids = itertools.count(2001)
            DemoSeeder(self, random.Random(seed)).run()
            return {rtype: len(rows) for rtype, rows in self._rows.items()}

    def add_records(self, rtype: str, records: Sequence[Mapping[str, Any]], *, trusted: bool = True) -> list[str]:
        """Create records in-process (REST field names; with `trusted`, audit dates may be given). Their ids."""
        if rtype not in SCHEMAS:
            raise _ApiError(404, "NONEXISTENT_ID", f"Record type '{rtype}' does not exist.")
        with self._lock:
            return [str(self._create(rtype, record, trusted=trusted)) for record in records]

    def record(self, rtype: str, record_id: str | int) -> dict[str, Any] | None:
        """One stored record as ``GET ...?expandSubResources=true`` renders it (without links), or None."""
        with self._lock:
            try:
                row = self._row(rtype, str(record_id))
            except _ApiError:
                return None
            return _without_links(self._render(rtype, row, "http://sandbox", expand=True))

    def records(self, rtype: str) -> list[dict[str, Any]]:
        """Every stored record of a type, as `record` renders them."""
        with self._lock:
            return [_without_links(self._render(rtype, row, "http://sandbox", expand=True))
                    for row in sorted(self._rows[rtype].values(), key=lambda r: r["id"])]

    # --- store ---

    def _row(self, rtype: str, rid: str) -> dict[str, Any]:
        if not rid.isdigit():
            raise _not_found()
        row = self._rows[rtype].get(int(rid))
        if row is None:
            raise _not_found()
        return row

    def _create(self, rtype: str, values: Mapping[str, Any], *, trusted: bool = False) -> int:
        row: dict[str, Any] = {f.name: ([] if f.kind == "sublist" else None) for f in SCHEMAS[rtype]}
        transaction = rtype in TRANSACTION_CODES
        rid = next(self._transaction_ids if transaction else self._entity_ids)
        row["id"] = rid
        now = now_seconds()
        audit = {k: values[k] for k in ("dateCreated", "lastModifiedDate", "createdDate") if k in values}
        rest = {k: v for k, v in values.items() if k not in audit}
        if not trusted and audit:
            raise _bad_content(f"The field {next(iter(audit))} is read-only.", next(iter(audit)))
        if trusted and transaction:
            for key in ("tranId", "status", "total"):
                if key in rest:
                    row[key] = rest.pop(key)
        if "globalSubscriptionStatus" in row and "globalSubscriptionStatus" not in rest:
            row["globalSubscriptionStatus"] = DEFAULT_SUBSCRIPTION
        self._trusted_write = trusted  # seeded records may hold a recipient's own (confirmed) status
        try:
            self._write(rtype, row, rest, replace=set(), creating=True)
        finally:
            self._trusted_write = False
        for key in ("dateCreated", "createdDate"):
            if key in row:
                row[key] = _parse_moment(audit[key]) if key in audit else now
        row["lastModifiedDate"] = _parse_moment(audit["lastModifiedDate"]) if "lastModifiedDate" in audit \
            else row.get("dateCreated") or row.get("createdDate") or now
        if transaction:
            if row.get("tranId") is None:
                prefix = {"invoice": "INV", "cashSale": "CS", "creditMemo": "CM", "customerPayment": "PYMT",
                          "salesOrder": "SO"}[rtype]
                row["tranId"] = f"{prefix}{rid:06d}"
            row["status"] = row.get("status") or TRANSACTION_STATUS[rtype]
            if row.get("total") is None:
                lines = row.get("item") or []
                row["total"] = round(sum(float(line.get("amount") or 0) for line in lines), 2)
            if row.get("entity") is None:
                raise _bad_content("Please enter value(s) for: Customer", "entity")
            if row.get("subsidiary") is None:
                row["subsidiary"] = self._rows["customer"][row["entity"]]["subsidiary"]
            if row.get("currency") is None:
                row["currency"] = row["subsidiary"]
            if row.get("tranDate") is None:
                row["tranDate"] = now.date()
        elif rtype == "contact" and row.get("entityId") is None:
            row["entityId"] = " ".join(p for p in (row.get("firstName"), row.get("lastName")) if p) or f"Contact {rid}"
        self._rows[rtype][rid] = row
        return rid

    def _write(self, rtype: str, row: dict[str, Any], values: Mapping[str, Any], *, replace: set[str],
               creating: bool) -> None:
        """Validate and apply field values (REST names); the caller holds the lock."""
        fields = FIELDS_BY_NAME[rtype]
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key == "links":
                continue
            spec = fields.get(key.lower())
            if spec is None or spec.name != key:
                raise _bad_content(f"Invalid field name: {key}. Provide a valid field name.", key)
            if not spec.writable:
                raise _bad_content(f"The field {key} is read-only.", key)
            changes[spec.name] = self._value(spec, value)
        for name in replace:
            spec = fields.get(name.lower())
            if spec is None or spec.kind != "sublist":
                raise _ApiError(400, "INVALID_PARAMETER", f"Invalid value for query parameter 'replace': {name}.",
                                query_param="replace")
        if "globalSubscriptionStatus" in changes:
            wanted = changes["globalSubscriptionStatus"]
            current = row.get("globalSubscriptionStatus")
            if wanted != current and current == "4" and not creating:
                raise _ApiError(400, "USER_ERROR", "Error while accessing a resource. The recipient has opted out "
                                "(Confirmed Opt-Out); only the recipient can subscribe again.",
                                path="globalSubscriptionStatus")
            if wanted != current and wanted not in SOFT_STATUSES and not self._trusted_write:
                raise _ApiError(400, "USER_ERROR", "Error while accessing a resource. Only the recipient can set "
                                f"the subscription status {SUBSCRIPTION_STATUSES[wanted]}.",
                                path="globalSubscriptionStatus")
        candidate = {**row}
        for name, value in changes.items():
            spec = fields[name.lower()]
            if spec.kind == "sublist" and not creating and name not in replace:
                candidate[name] = [*row.get(name, []), *value]  # without replace, lines are added
            else:
                candidate[name] = value
        for name in replace - set(changes):
            candidate[name] = []
        if rtype == "customer":
            if candidate.get("subsidiary") is None:
                raise _bad_content("Please enter value(s) for: Primary Subsidiary", "subsidiary")
            person = bool(candidate.get("isPerson"))
            if person and not candidate.get("lastName"):
                raise _ApiError(400, "USER_ERROR", "Error while accessing a resource. Please enter value(s) for: "
                                "Last Name", path="lastName")
            if not person and not candidate.get("companyName"):
                raise _ApiError(400, "USER_ERROR", "Error while accessing a resource. Please enter value(s) for: "
                                "Company Name", path="companyName")
            if candidate.get("entityId") is None:
                candidate["entityId"] = (" ".join(p for p in (candidate.get("firstName"), candidate.get("lastName"))
                                                  if p) if person else candidate.get("companyName"))
        if rtype in ("customer", "contact") and candidate.get("entityId") is not None:
            for other in self._rows[rtype].values():
                if other["id"] != candidate["id"] and other.get("entityId") == candidate["entityId"]:
                    raise _ApiError(400, "USER_ERROR", "Error while accessing a resource. This entity already exists.",
                                    path="entityId")
        row.update(candidate)
        if not creating:
            row["lastModifiedDate"] = now_seconds()

    def _value(self, spec: RecordField, value: Any) -> Any:
        bad = _bad_content(f"You have entered an Invalid Field Value {value} for the following field: {spec.name}",
                           spec.name)
        if spec.kind == "sublist":
            items = value.get("items") if isinstance(value, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise bad
            return [_without_links(item) for item in items]
        if value is None or (value == "" and spec.kind in ("text", "email")):
            return False if spec.kind == "bool" else None
        if spec.kind in ("text", "email"):
            if not isinstance(value, str):
                raise bad
            if spec.kind == "email" and not _EMAIL_RE.match(value):
                raise bad
            return value
        if spec.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if spec.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            return value
        if spec.kind == "date":
            try:
                return date.fromisoformat(str(value))
            except ValueError:
                raise bad from None
        if spec.kind == "subscription":
            wanted = value.get("id") if isinstance(value, dict) else None
            if str(wanted) not in SUBSCRIPTION_STATUSES:
                raise bad
            return str(wanted)
        if spec.kind == "ref":
            ref_id = value.get("id") if isinstance(value, dict) else None
            if ref_id is None or not str(ref_id).isdigit():
                raise bad
            ref_id = int(ref_id)
            known: Mapping[int, Any] = (SUBSIDIARIES if spec.ref == "subsidiary" else CURRENCIES
                                        if spec.ref == "currency" else self._rows["customer"])
            if ref_id not in known:
                raise bad
            return ref_id
        raise bad

    def _table_rows(self, table: str) -> list[dict[str, Any]]:
        """Rows of a SuiteQL table: column -> Python value (int ids, dates, bools, strings)."""
        types = list(TRANSACTION_CODES) if table == "transaction" else [table]
        columns = SUITEQL_TABLES[table]
        rows = []
        for rtype in types:
            for row in self._rows[rtype].values():
                out: dict[str, Any] = {}
                for column, spec in columns.items():
                    if column == "type":
                        out[column] = TRANSACTION_CODES[rtype]
                    elif column == "recordtype":
                        out[column] = rtype.lower()
                    else:
                        out[column] = row.get(spec.name)
                rows.append(out)
        rows.sort(key=lambda r: r["id"])
        return rows

    def _render(self, rtype: str, row: Mapping[str, Any], base: str, *, expand: bool) -> dict[str, Any]:
        url = f"{base}{_RECORD}/{rtype}/{row['id']}"
        body: dict[str, Any] = {"links": [{"rel": "self", "href": url}]}
        for spec in SCHEMAS[rtype]:
            value = row.get(spec.name)
            if spec.kind == "sublist":
                link: dict[str, Any] = {"links": [{"rel": "self", "href": f"{url}/{spec.name}"}]}
                if expand:
                    items = [dict(item) for item in value or []]
                    link.update({"items": items, "totalResults": len(items), "count": len(items), "hasMore": False,
                                 "offset": 0})
                body[spec.name] = link
                continue
            if value is None:
                continue  # NetSuite leaves empty fields out
            if spec.kind == "id":
                body[spec.name] = str(value)
            elif spec.kind == "ref":
                body[spec.name] = self._ref(spec.ref or "", value, base)
            elif spec.kind == "datetime":
                body[spec.name] = iso_seconds(value)
            elif spec.kind == "date":
                body[spec.name] = value.isoformat()
            elif spec.name == "status":
                body[spec.name] = {"id": value[:1], "refName": value}
            elif spec.kind == "subscription":
                body[spec.name] = {"id": value, "refName": SUBSCRIPTION_STATUSES[value]}
            else:
                body[spec.name] = value
        return body

    def _ref(self, kind: str, ref_id: int, base: str) -> dict[str, Any]:
        if kind == "subsidiary":
            name = SUBSIDIARIES[ref_id][0]
        elif kind == "currency":
            name = CURRENCIES[ref_id]
        else:
            customer = self._rows["customer"].get(ref_id) or {}
            name = customer.get("entityId") or customer.get("companyName") or str(ref_id)
        return {"links": [{"rel": "self", "href": f"{base}{_RECORD}/{kind}/{ref_id}"}], "id": str(ref_id),
                "refName": name}


def _sort_key(value: Any) -> Any:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, datetime):
        return (1, value.timestamp())
    if isinstance(value, date):
        return (1, datetime.combine(value, datetime.min.time(), UTC).timestamp())
    return (2, str(value))


def _row_key(operand: Operand, row: Mapping[str, Any]) -> Any:
    return _sort_key(operand_value(operand, row))


def _parse_moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    moment = datetime.fromisoformat(text) if "T" in text else datetime.fromisoformat(f"{text}T00:00:00+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _without_links(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_links(v) for k, v in value.items() if k != "links"}
    if isinstance(value, list):
        return [_without_links(v) for v in value]
    return value


def _json_or_none(request: Request) -> Any:
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _host_of(account_id: str) -> str:
    return f"{account_id.lower().replace('_', '-')}.suitetalk.api.netsuite.com"


# --- a client for tests and the demo ------------------------------------------------------------------------


class AccountClient(ControlClient):
    """Calls the sandbox as any TBA integration would: `requests` + `requests_oauthlib.OAuth1` (HMAC-SHA256).

    Also wraps the sandbox's control API (faults, seeding, stats, the login audit trail).
    """

    def __init__(self, base_url: str, *, account_id: str = DEMO_ACCOUNT_ID, consumer_key: str = DEMO_CONSUMER_KEY,
                 consumer_secret: str = DEMO_CONSUMER_SECRET, token_id: str = DEMO_TOKEN_ID,
                 token_secret: str = DEMO_TOKEN_SECRET, timeout: float = 10.0) -> None:
        super().__init__(base_url, timeout=timeout)
        self.auth = OAuth1(consumer_key, consumer_secret, token_id, token_secret,
                           signature_method=SIGNATURE_HMAC_SHA256, realm=account_id)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One signed call to a path under the base URL (``/services/rest/...``)."""
        kwargs.setdefault("auth", self.auth)
        return self._http.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs)

    def suiteql(self, q: str, *, limit: int = PAGE_MAX, offset: int = 0) -> requests.Response:
        """One SuiteQL page."""
        return self.call("POST", _SUITEQL, params={"limit": limit, "offset": offset}, json={"q": q},
                         headers={"Prefer": "transient"})

    def rows(self, q: str) -> list[dict[str, Any]]:
        """Every row of a SuiteQL query (pages followed with limit/offset)."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = self.suiteql(q, offset=offset)
            answer.raise_for_status()
            page = answer.json()
            rows.extend(page["items"])
            if not page["hasMore"]:
                return rows
            offset += PAGE_MAX

    def create(self, rtype: str, fields: Mapping[str, Any]) -> str:
        """``POST record/v1/{type}`` (204 with Location); the new record's id."""
        answer = self.call("POST", f"{_RECORD}/{rtype}", json=dict(fields))
        if answer.status_code != 204:
            raise RuntimeError(f"create {rtype} failed: {answer.status_code} {answer.text}")
        return answer.headers["Location"].rsplit("/", 1)[1]

    def login_audit(self) -> list[dict[str, Any]]:
        answer = self._http.get(f"{self.base_url}{CONTROL_PREFIX}/login-audit", timeout=self.timeout)
        answer.raise_for_status()
        return list(answer.json()["entries"])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.netsuite --port N`: serve a seeded demo account until interrupted."""
    parser = demo_cli("netsuite", main.__doc__)
    parser.add_argument("--no-seed", action="store_true", help="start with an empty account")
    parser.add_argument("--max-concurrency", type=int, default=15, help="calls in flight before 429 (default 15)")
    parser.add_argument("--certificate", action="append", default=[], metavar="CLIENT_ID:CERT_ID:PEM_FILE",
                        help="register a public key for OAuth 2.0 client credentials (repeatable)")
    args = parser.parse_args(argv)
    vendor = NetSuiteSandbox(max_concurrency=args.max_concurrency)
    for entry in args.certificate:
        client_id, cert_id, path = entry.split(":", 2)
        with open(path, "rb") as handle:
            vendor.register_certificate(client_id, cert_id, handle.read())
    return serve_demo(vendor, args.port, None if args.no_seed else args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
