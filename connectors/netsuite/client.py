"""NetSuite's REST web services on the HTTP base: login (TBA or OAuth 2.0), calls, SuiteQL paging, errors."""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256
from requests_oauthlib import OAuth1

from connectors.base import ConnectorConfigError, env_secret, origin_problem, resolve_origin, validate_settings
from connectors.http import HttpConnector, HttpFailure, VendorApiError, json_or_none
from connectors.netsuite.settings import ACCOUNT_ID, DIGITS, AuthSpec, NetSuiteSettings, https_origin
from connectors.pacing import budget_key, parse_retry_after, register_cache, slots_for
from dsr.contract import ConnectorError, RecordRef

IN_LIST_MAX = 1000  # values in one IN list (Oracle's limit)
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
RECORD_PATH = "/services/rest/record/v1"
PER_RECORD = frozenset({204, 400, 403, 404})  # answers a caller reads per record: a refusal fails that record only
TOKEN_MARGIN = 60.0  # seconds before a bearer token's expiry at which a new one is fetched
ASSERTION_SECONDS = 300  # lifetime of a client assertion (NetSuite allows up to an hour)
_CODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


def suiteql_string(value: str) -> str:
    """`value` as a SuiteQL (Oracle) string literal: single quotes doubled, nothing else special.

    SuiteQL over REST takes no bound parameters, so this is the only way a value reaches a query. Control
    characters are refused (no address holds one, and none should reach a query); backslashes, ``%`` and
    ``_`` need no escaping in an Oracle literal compared with ``=``.

    Raises:
        ConnectorError: the value holds a control character (the message does not repeat the value).
    """
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ConnectorError("refusing a value with control characters in a SuiteQL literal")
    return "'" + value.replace("'", "''") + "'"


def id_list(ids: Sequence[str]) -> str:
    """Internal ids as a SuiteQL list (digits only, so nothing else can reach the query)."""
    if not ids or not all(DIGITS.match(i) for i in ids):
        raise ConnectorError("internal ids must be digits")
    return ", ".join(ids)


def error_code(response: requests.Response) -> str | None:
    """NetSuite's ``o:errorCode`` (or an OAuth ``error``), if it looks like a code; never free text."""
    body, code = json_or_none(response), None
    if isinstance(body, Mapping):
        details = body.get("o:errorDetails")
        if isinstance(details, list) and details and isinstance(details[0], Mapping):
            code = details[0].get("o:errorCode")
        elif isinstance(body.get("error"), str):
            code = body["error"]
    return code if isinstance(code, str) and _CODE.match(code) else None


class NetSuiteApiError(VendorApiError):
    """NetSuite answered with an error; the message names the HTTP status and NetSuite's error code only."""


# --- login --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """The account (the OAuth realm) and the secrets read from the environment (`repr` hides them)."""

    account_id: str
    consumer_key: str = ""
    consumer_secret: str = ""
    token_id: str = ""
    token_secret: str = ""
    client_id: str = ""
    certificate_id: str = ""
    private_key: Any = None

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


def read_credentials(where: str, auth: AuthSpec, account_id: str) -> Credentials:
    """The secrets `auth` names, from the environment; the private key loaded.

    Raises:
        ConnectorConfigError: a variable is unset, or the private key cannot be read.
    """
    if auth.flow == "tba":
        return Credentials(
            account_id,
            consumer_key=env_secret(f"{where}.consumer_key_env", auth.consumer_key_env or ""),
            consumer_secret=env_secret(f"{where}.consumer_secret_env", auth.consumer_secret_env or ""),
            token_id=env_secret(f"{where}.token_id_env", auth.token_id_env or ""),
            token_secret=env_secret(f"{where}.token_secret_env", auth.token_secret_env or ""),
        )
    client_id = env_secret(f"{where}.client_id_env", auth.client_id_env or "")
    certificate_id = env_secret(f"{where}.certificate_id_env", auth.certificate_id_env or "")
    if auth.private_key_env is not None:
        field, pem = "private_key_env", env_secret(f"{where}.private_key_env", auth.private_key_env).encode()
    else:
        field = "private_key_file" if auth.private_key_file else "private_key_file_env"
        path = auth.private_key_file or env_secret(f"{where}.private_key_file_env", auth.private_key_file_env or "")
        try:
            pem = Path(path).read_bytes()
        except OSError:
            raise ConnectorConfigError(f"{where}.{field}: the private key file cannot be read") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConnectorConfigError(f"{where}.{field}: not an unencrypted PEM private key") from None
    return Credentials(account_id, client_id=client_id, certificate_id=certificate_id, private_key=key)


class _ProcessTokens:
    """Bearer tokens by account and OAuth 2.0 client (a budget key: a hash, no secret), shared by the
    connectors of a process: a connector is built per request, and a token lives an hour."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
        return entry[0] if entry is not None and time.monotonic() < entry[1] else None

    def put(self, key: str, token: str, renew_at: float) -> None:
        with self._lock:
            self._tokens[key] = (token, renew_at)

    def discard(self, key: str, token: str) -> None:
        """Forget a refused token (only that one: another connector may have fetched a fresh one already)."""
        with self._lock:
            if self._tokens.get(key, ("", 0.0))[0] == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKENS = _ProcessTokens()
register_cache(TOKENS.clear)


class _TokenSource:
    """Bearer tokens from the client-credentials flow: the process's token for this client (`TOKENS`, under
    `key`), fetched when none is kept, a minute before it expires, or after `invalidate`."""

    def __init__(self, fetch: Callable[[], tuple[str, float]], key: str) -> None:
        self._fetch = fetch
        self._key = key
        self._lock = threading.Lock()
        self._token: str | None = None

    def get(self) -> str:
        with self._lock:
            token = TOKENS.get(self._key)
            if token is None:
                token, lifetime = self._fetch()
                # A minute early, or half-way through a token that lives less than two minutes.
                TOKENS.put(self._key, token, time.monotonic() + lifetime - min(TOKEN_MARGIN, lifetime / 2))
            self._token = token
            return token

    def invalidate(self) -> None:
        with self._lock:
            if self._token is not None:
                TOKENS.discard(self._key, self._token)
            self._token = None


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer`` with the token source's current token."""

    def __init__(self, tokens: _TokenSource) -> None:
        self._tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._tokens.get()}"
        return request


def _unsigned(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The token request's auth: none (its client assertion is in the body), and no ~/.netrc entry either."""
    return request


# --- the client -----------------------------------------------------------------------------------------


class NetSuiteClient(HttpConnector):
    """One NetSuite account: its settings, login, paced calls (at most `max_concurrency` in flight), SuiteQL."""

    KIND, VERSION, VENDOR = "netsuite", "netsuite/1", "NetSuite"
    DEFAULT_BASE_URL = "https://{account}.suitetalk.api.netsuite.com"
    SETTINGS = NetSuiteSettings
    ERROR = NetSuiteApiError
    RETRY_STATUSES = frozenset(range(500, 600))
    HINTS = {
        403: "the integration's role lacks a permission this call needs ({said})",
        429: "still throttled by NetSuite ({said}) after {attempts} attempts; the account's concurrency limit is "
             "shared with every other integration (lower max_concurrency)",
    }
    _settings: NetSuiteSettings
    _credentials: Credentials

    @classmethod
    def create(cls, system: str, settings: Mapping[str, Any]) -> Self:
        """Build the connector for one system (the registry's entry point). Makes no call to NetSuite.

        Raises:
            ConnectorConfigError: bad settings, an environment variable they name is unset or malformed, or
                the private key cannot be read.
        """
        parsed = validate_settings(NetSuiteSettings, system, settings)
        where = f"systems.{system}.settings"
        account = parsed.account_id or env_secret(f"{where}.account_id_env", parsed.account_id_env or "")
        if not ACCOUNT_ID.match(account):
            raise ConnectorConfigError(f"{where}.account_id_env: not a NetSuite account id (such as 1234567 or "
                                       "1234567_SB1)")
        account = account.upper()  # the realm is upper case with an underscore; the host lower case with a hyphen
        override = parsed.base_url_override
        if override is None and parsed.base_url_override_env is not None:
            override = env_secret(f"{where}.base_url_override_env", parsed.base_url_override_env)
            problem = origin_problem(override, loopback_only=True)
            if problem:
                raise ConnectorConfigError(f"{where}.base_url_override_env: {problem}")
        own_host = cls.DEFAULT_BASE_URL.format(account=account.lower().replace("_", "-"))
        base_url = override.rstrip("/") if override else resolve_origin(
            where, parsed.base_url, parsed.base_url_env, own_host, check=https_origin)
        return cls(system, parsed, base_url=base_url,
                   credentials=read_credentials(f"{where}.auth", parsed.auth, account))

    def __init__(self, system: str, settings: NetSuiteSettings, *, base_url: str, credentials: Credentials) -> None:
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        self._account_id = credentials.account_id
        self._slots = slots_for(budget_key(self.KIND, *self._account()), settings.max_concurrency)
        self._tokens: _TokenSource | None = None
        if settings.auth.flow == "tba":
            self._session.auth = OAuth1(credentials.consumer_key, credentials.consumer_secret, credentials.token_id,
                                        credentials.token_secret, signature_method=SIGNATURE_HMAC_SHA256,
                                        realm=credentials.account_id)
        else:
            self._tokens = _TokenSource(self._fetch_token, budget_key(
                "netsuite-oauth2", base_url, credentials.account_id, credentials.client_id,
                credentials.certificate_id, " ".join(settings.auth.scope)))
            self._session.auth = _BearerAuth(self._tokens)
        self._transaction_objects = settings.transaction_records
        self._info = replace(self._info, objects=settings.record_types)

    def _account(self) -> tuple[str | None, ...]:
        return (self._credentials.account_id,)

    # --- hooks of the base ---

    def in_flight(self) -> AbstractContextManager[Any]:
        """NetSuite's cap on concurrent calls per account. A bearer token is fetched before a slot is taken:
        the fetch is a call of its own, and the call holding a slot may be the one that needs the token."""
        if self._tokens is not None:
            self._tokens.get()
        return self._slots

    def reauthenticate(self, failure: HttpFailure) -> bool:
        """A 401 with OAuth 2.0: the bearer token was revoked or expired early, so fetch another (TBA signs
        every call afresh: nothing to renew)."""
        if self._tokens is None:
            return False
        self._tokens.invalidate()
        return True

    def failure_of(self, response: requests.Response) -> HttpFailure:
        return HttpFailure(response.status_code, code=error_code(response),
                           retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def explain(self, failure: HttpFailure) -> str | None:
        status, code, auth = failure.status, failure.code or "UNKNOWN", self._settings.auth
        if status == 401 and auth.flow == "tba":
            names = ", ".join(str(n) for n in (auth.consumer_key_env, auth.consumer_secret_env, auth.token_id_env,
                                                auth.token_secret_env))
            return (f"NetSuite refused the login (401 {code}). Check the token-based authentication credentials in "
                    f"the environment variables {names} and the account id (the OAuth realm); NetSuite's Login "
                    "Audit Trail says why")
        if status == 401:
            return (f"NetSuite refused the OAuth 2.0 access token (401 {code}), even a freshly fetched one; check the "
                    "integration record's role and the certificate mapping")
        if status >= 500:
            return f"NetSuite server error {status} after {self._settings.retry_attempts} attempts"
        return None

    # --- calls ---

    def _rest(self, operation: str, obj: str, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              body: Any = None, headers: Mapping[str, str] | None = None,
              expect: frozenset[int] = frozenset({200})) -> requests.Response:
        """One REST call, paced and retried: the answer if its status is in `expect` (the caller reads a
        refusal per record), else a `NetSuiteApiError` naming status and error code only."""
        url = self._root + path

        def send() -> requests.Response:
            answer = self._session.request(method, url, params=params, json=body, headers=headers,
                                           timeout=self._timeout, allow_redirects=False)
            if answer.status_code in expect:
                return answer
            raise self.failure_of(answer)

        return self._call(operation, obj, send)

    def _get(self, operation: str, obj: str, rid: str, *, expand: bool) -> dict[str, Any] | None:
        """A record's fields (every sublist with `expand`), or None when it is gone."""
        params = {"expandSubResources": "true"} if expand else None
        answer = self._rest(operation, obj, "GET", f"{RECORD_PATH}/{obj}/{rid}", params=params,
                            expect=frozenset({200, 404}))
        return None if answer.status_code == 404 else dict(self._json_object(answer, operation, obj))

    def _json_object(self, answer: requests.Response, operation: str, obj: str) -> Mapping[str, Any]:
        body = json_or_none(answer)
        if not isinstance(body, Mapping):
            raise ConnectorError(f"systems.{self._system}: {operation} of {obj!r} failed (NetSuite answered a body "
                                 "that is not a JSON object)")
        return body

    def _suiteql(self, operation: str, obj: str, select: str, table: str, where: str) -> Iterator[Mapping[str, Any]]:
        """Every row of ``SELECT select FROM table WHERE where ORDER BY id``.

        Pages with limit/offset while ``hasMore``; before the per-query cap (100,000 rows) it restarts the
        query after the last id seen, so any number of rows can be read.
        """

        def query(last: Mapping[str, Any] | None) -> str:
            condition = where if last is None else f"({where}) AND id > {id_list([str(last['id'])])}"
            return f"SELECT {select} FROM {table} WHERE {condition} ORDER BY id"

        return self._suiteql_rows(operation, obj, query)

    def _suiteql_rows(self, operation: str, obj: str,
                      query_after: Callable[[Mapping[str, Any] | None], str]) -> Iterator[Mapping[str, Any]]:
        """Every row of the query `query_after(None)`, each with an ``id``; paged as `_suiteql` says, the
        query restarted as `query_after(last row)` before the cap."""
        limit = self._settings.page_size
        last: Mapping[str, Any] | None = None
        while True:
            query = query_after(last)
            offset = 0
            while True:
                answer = self._rest(operation, obj, "POST", SUITEQL_PATH, params={"limit": limit, "offset": offset},
                                    body={"q": query}, headers={"Prefer": "transient"})
                page = self._json_object(answer, operation, obj)
                items = page.get("items")
                if not isinstance(items, list):
                    raise ConnectorError(f"systems.{self._system}: {operation} of {obj!r} failed (NetSuite answered "
                                         "a SuiteQL page without items)")
                for item in items:
                    if not isinstance(item, Mapping) or not DIGITS.match(str(item.get("id", ""))):
                        raise ConnectorError(f"systems.{self._system}: {operation} of {obj!r} failed (a SuiteQL "
                                             "row without an internal id)")
                    last = item
                    yield item
                self._count("suiteql_pages")
                if not items or not page.get("hasMore"):
                    return
                offset += limit
                if offset + limit > self._settings.result_cap:
                    self._count("suiteql_restarts")
                    break  # the next page would cross the cap: restart after the last id

    def _fetch_token(self) -> tuple[str, float]:
        """A bearer token (and its lifetime) for a freshly signed client assertion."""
        creds, auth = self._credentials, self._settings.auth
        url = f"{self._root}{TOKEN_PATH}"
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": creds.client_id, "scope": list(auth.scope), "aud": url, "iat": now, "exp": now + ASSERTION_SECONDS},
            creds.private_key, algorithm=auth.algorithm, headers={"kid": creds.certificate_id, "typ": "JWT"},
        )
        form = {"grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}

        def attempt() -> requests.Response:
            # Not under a concurrency slot: a call holding one may be the one that needs the token.
            self._limiter.acquire()
            self._count("calls")
            self._count("token_requests")
            answer = self._session.post(url, data=form, auth=_unsigned, timeout=self._timeout, allow_redirects=False)
            if answer.status_code == 200:
                return answer
            raise self.failure_of(answer)

        failure: ConnectorError
        try:
            data = self._retry(attempt)().json()
            token, lifetime = data["access_token"], float(data.get("expires_in") or 3600)
            if not isinstance(token, str) or not token:
                raise ValueError("no token")
            return token, lifetime
        except HttpFailure as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                failure = NetSuiteApiError(
                    f"systems.{self._system}: NetSuite refused the OAuth 2.0 client credentials ({exc.status} "
                    f"{exc.code or 'error'}); check the client id, the certificate id and the private key named by "
                    f"systems.{self._system}.settings.auth, and the certificate mapping in NetSuite",
                    status=exc.status, code=exc.code)
            else:
                failure = self._failure("login", "token", exc)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a PII-free error
            failure = self._failure("login", "token", exc)
        raise failure  # outside the except blocks: nothing of the answer is chained

    def _problem_with(self, ref: RecordRef) -> str | None:
        if ref.system != self._system:
            return f"record belongs to system {ref.system!r}, not {self._system!r}"
        problem = self._settings.record_type_problem(ref.object, self._system)
        if problem is not None:
            return problem
        if not DIGITS.match(ref.id):
            return f"id is not a NetSuite internal id (record type {ref.object!r})"
        return None
