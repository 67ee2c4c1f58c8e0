"""A loopback emulator of Google Ads Customer Match removal (REST) and of the Data Manager API.

Wire formats as vendor-apis.md section 4 gives them; the connector talks plain `requests` REST/JSON
(the `google-ads` package is gRPC only, section 0). Everything is served on one port:

- ``POST /token``: Google's OAuth 2.0 token endpoint (``https://oauth2.googleapis.com/token``),
  ``grant_type=refresh_token`` (form-encoded). Answers ``{"access_token": "ya29...", "expires_in": 3599,
  "scope": ..., "token_type": "Bearer"}``; ``400 invalid_grant`` for an unknown or revoked refresh token,
  ``401 invalid_client`` for a wrong client id or secret.
- Google Ads API (``https://googleads.googleapis.com``), versions `API_VERSIONS` (v23..v26):
  ``POST /{v}/customers/{cid}/offlineUserDataJobs:create``, ``.../offlineUserDataJobs/{id}:addOperations``,
  ``.../offlineUserDataJobs/{id}:run`` (a long-running operation ``{"name": "customers/{cid}/operations/..."}``)
  and ``POST /{v}/customers/{cid}/googleAds:search`` (GAQL over ``offline_user_data_job`` and ``user_list``).
  Headers: ``Authorization: Bearer``, ``developer-token``, ``login-customer-id`` (digits; the manager account
  through which a client account is reached).
- Data Manager API (``https://datamanager.googleapis.com``): ``POST /v1/audienceMembers:remove`` with the
  body of section 4 (``destinations`` with ``operatingAccount``/``loginAccount``/``productDestinationId``,
  ``audienceMembers[].userData.userIdentifiers[].emailAddress`` as hex SHA-256, ``encoding: HEX``);
  answers ``{"requestId": ...}``. Bearer only: no developer token, the accounts travel in the body.
  ``GET /v1/requestStatus:retrieve?requestId=...`` answers ``{"requestStatusPerDestination": [{"destination",
  "requestStatus": PROCESSING|SUCCESS|FAILED, "audienceMembersRemovalStatus"|"errorInfo"}]}``
  (RetrieveRequestStatusResponse of the ``google-ads-datamanager`` library): PROCESSING for ``job_polls``
  reads, then each destination's own: SUCCESS, when the removal takes effect there, or FAILED for a list
  `fail_next_job` armed (the other destinations of the request unaffected: an emulator choice). A request
  takes at most 10 destinations and 10,000 audience members (Data Manager's "Limits and quotas" page); more
  destinations is a 400 field violation ``TOO_MANY_DESTINATIONS`` (the reason guessed).

Behaviour (section 4 where it says, else chosen and marked here):

- **Jobs** are created ``PENDING``; after ``:run`` each GAQL read that returns the job moves it on one step:
  ``PENDING`` -> ``RUNNING`` (``job_polls`` reads in all) -> ``SUCCESS`` (or ``FAILED`` with a
  ``failureReason`` when `fail_next_job` armed it). The removals take effect at ``SUCCESS``. Removing a
  hash that is not in the list is no error (Customer Match removal is idempotent). A job accepts
  operations only before ``:run``; ``removeAll`` empties the list.
- **Errors** are ``google.rpc.Status`` bodies ``{"error": {"code", "message", "status", "details": [...]}}``;
  the Ads API's details hold a ``GoogleAdsFailure`` (``errors[].errorCode.{category}: CODE``, ``requestId``).
  That shape is "general knowledge, not checked" (section 9); the 429 with ``quotaError`` and
  ``quotaErrorDetails.retryDelay`` is as seen from the live API in third-party reports. Codes used:
  ``requestError.DEVELOPER_TOKEN_PARAMETER_MISSING`` (400), ``authenticationError.OAUTH_TOKEN_INVALID`` /
  ``OAUTH_TOKEN_EXPIRED`` (401), ``authorizationError.USER_PERMISSION_DENIED`` (403),
  ``notAllowlistedError.CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE`` (403, section 4's policy change),
  ``offlineUserDataJobError.INVALID_SHA256_FORMAT`` / ``INVALID_USER_LIST_ID`` (400),
  ``requestError.TOO_MANY_MUTATE_OPERATIONS`` / ``OPERATION_REQUIRED`` / ``PAGE_SIZE_NOT_SUPPORTED`` (400),
  ``queryError.UNRECOGNIZED_FIELD`` (400), ``quotaError.RESOURCE_TEMPORARILY_EXHAUSTED`` /
  ``RESOURCE_EXHAUSTED`` (429). Guessed (no source): ``authenticationError.DEVELOPER_TOKEN_INVALID`` (401)
  for an unknown developer token, ``offlineUserDataJobError.JOB_ALREADY_STARTED`` for operations on a job
  already run (a code of Google's ``OfflineUserDataJobError`` enum; every code here is one of the enums of the
  ``google-ads`` library's generated ``GoogleAdsFailure``, checked by tests/test_ads_sandboxes.py), and the Data Manager field-violation reasons other than section 4's ``INVALID_HEX_ENCODING``.
- **Partial failure**: with ``enablePartialFailure`` the valid operations are kept and the answer carries
  ``partialFailureError`` (a Status whose ``GoogleAdsFailure`` locates each bad operation by index);
  without it one bad operation refuses the whole request.
- **Unknown JSON fields** are refused as proto JSON parsing does (400 "Invalid JSON payload received.
  Unknown name ...").
- **Limits**: a sliding window per developer token (`requests_per_window` per `window_seconds`) answers
  429 ``RESOURCE_TEMPORARILY_EXHAUSTED`` with the wait as ``retryDelay``; an optional daily budget
  (`daily_requests`) answers 429 ``RESOURCE_EXHAUSTED`` with scope ``DEVELOPER`` and the wait until
  midnight. Data Manager throttling is a plain 429 with ``google.rpc.RetryInfo``. Google sends no
  ``Retry-After`` header; the wait is in the body.
- **Access**: the demo OAuth user can reach the manager account `DEMO_LOGIN_CUSTOMER_ID` only; its
  client accounts are reachable through it, so calls about them need ``login-customer-id`` set to it
  (Data Manager: ``loginAccount``), else 403 ``USER_PERMISSION_DENIED``.

Control API (tests and the demo; vendors' clients never call it): ``GET /__sandbox__/members/<list id>``,
``GET /__sandbox__/jobs``, ``GET /__sandbox__/removals``, ``POST /__sandbox__/seed-demo``,
``add-members``, ``fail-next-job``, ``expire-tokens``, ``revoke-refresh-token``,
``disallow-customer-match``, ``exhaust-quota``; and the matching Python methods.

    python -m sandbox.google_ads --port 8766     # seeded with the demo audiences
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from sandbox.audiences import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT, demo_members, hash_email
from sandbox.gaql import GaqlError, holds, parse_gaql, put_field
from sandbox.google_rpc import (
    MESSAGE,
    MISSING_CREDENTIAL,
    STATUS,
    ads_err,
    check_known,
    dm_error,
    dm_unauthenticated,
    duration,
    new_request_id,
    status_error,
    violation,
)
from sandbox.kit import (
    DailyCounter,
    Refusal,
    Request,
    Response,
    TokenStore,
    Vendor,
    WindowLimiter,
    bearer_token,
    demo_cli,
    oauth_error,
    seconds_to_midnight,
    serve_demo,
)

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_DEVELOPER_TOKEN",
    "DEMO_LOGIN_CUSTOMER_ID",
    "DEMO_REFRESH_TOKEN",
    "DEMO_USER_LISTS",
    "ERASURE_SUBJECT",
    "GoogleAdsSandbox",
    "hash_email",
    "main",
]

DEMO_CLIENT_ID = "1076543210987-sandboxdemo.apps.googleusercontent.com"
DEMO_CLIENT_SECRET = "GOCSPX-sandbox-demo-client-secret"
DEMO_REFRESH_TOKEN = "1//0gSandboxDemoRefreshToken-google-ads"
DEMO_DEVELOPER_TOKEN = "SBXdemoDevToken0123456"
"""The demo credentials (fixed test values of this sandbox, not secrets)."""

DEMO_LOGIN_CUSTOMER_ID = "9876543210"
"""The manager account through which the demo client accounts are reached (``login-customer-id``)."""

DEMO_USER_LISTS: dict[str, dict[str, str]] = {
    "1234567890": {"111": "Newsletter subscribers", "222": "Past customers"},
    "2345678901": {"333": "Trade show leads"},
}
"""Client customer id -> Customer Match user list id -> name."""

# The versions Google still serves, as the google-ads library (34.0.0) ships them; an older one answers 404.
API_VERSIONS: tuple[str, ...] = tuple(f"v{n}" for n in range(23, 27))
LATEST_VERSION = API_VERSIONS[-1]
TOKEN_PATH = "/token"
DATA_MANAGER_PATH = "/v1/audienceMembers:remove"
DATA_MANAGER_STATUS_PATH = "/v1/requestStatus:retrieve"
ADWORDS_SCOPE = "https://www.googleapis.com/auth/adwords"
DATAMANAGER_SCOPE = "https://www.googleapis.com/auth/datamanager"
MAX_OPERATIONS_PER_REQUEST = 100_000
MAX_AUDIENCE_MEMBERS = 10_000
MAX_DESTINATIONS = 10  # of one Data Manager audienceMembers:remove (Data Manager "Limits and quotas")
JOB_STATUSES = ("PENDING", "RUNNING", "SUCCESS", "FAILED")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PERMISSION_DENIED = ("User doesn't have permission to access customer. Note: If you're accessing a client customer, "
                      "the manager's customer id must be set in the 'login-customer-id' header. See "
                      "https://developers.google.com/google-ads/api/docs/concepts/call-structure#cid")
_ADS_PATH = re.compile(r"^/(?P<version>v\d+)/")

# GAQL: resource -> field -> (JSON name, getter)
_JOB_FIELDS = {
    "resource_name": "resourceName", "id": "id", "status": "status", "type": "type",
    "failure_reason": "failureReason", "external_id": "externalId",
    "customer_match_user_list_metadata.user_list": "customerMatchUserListMetadata.userList",
}
_LIST_FIELDS = {"resource_name": "resourceName", "id": "id", "name": "name", "type": "type",
                "membership_status": "membershipStatus"}
_RESOURCES = {"offline_user_data_job": ("offlineUserDataJob", _JOB_FIELDS), "user_list": ("userList", _LIST_FIELDS)}
_QUERYABLE = {resource: fields for resource, (_json, fields) in _RESOURCES.items()}


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class _UserList:
    customer: str
    id: str
    name: str
    members: set[str] = field(default_factory=set)

    @property
    def resource_name(self) -> str:
        return f"customers/{self.customer}/userLists/{self.id}"


@dataclass
class _Job:
    customer: str
    id: str
    user_list: str  # list id
    status: str = "PENDING"
    failure_reason: str | None = None
    external_id: str | None = None
    operations: list[tuple[str, str]] = field(default_factory=list)  # ("create"|"remove", hash)
    remove_all: bool = False
    ran: bool = False
    polls: int = 0
    fail_with: str | None = None

    @property
    def resource_name(self) -> str:
        return f"customers/{self.customer}/offlineUserDataJobs/{self.id}"


@dataclass
class _DmRequest:
    """A Data Manager removal: PROCESSING for `job_polls` status reads, then, per destination, SUCCESS
    (removals applied) or FAILED (a list `fail_next_job` armed; its members unchanged)."""

    destinations: list[dict[str, Any]]  # as sent: the status answer echoes each one
    lists: list[str]  # list ids, in destination order
    hashes: list[str]
    reads: int = 0
    status: str = "PROCESSING"
    failed: set[str] = field(default_factory=set)  # list ids whose removal fails


@dataclass
class _State:
    lists: dict[str, _UserList] = field(default_factory=dict)  # list id -> list (ids unique in the sandbox)
    jobs: dict[str, _Job] = field(default_factory=dict)
    dm_requests: dict[str, _DmRequest] = field(default_factory=dict)  # requestId -> its removal
    removals: list[dict[str, str]] = field(default_factory=list)
    next_id: int = 5_000_000_000


class GoogleAdsSandbox(Vendor):
    """Google Ads Customer Match (offline user data jobs) and Data Manager removal, on loopback.

    Args:
        client_id, client_secret: the OAuth client the token endpoint accepts.
        refresh_tokens: refresh tokens it accepts (revoke one with `revoke_refresh_token`).
        developer_tokens: developer tokens the Ads API accepts.
        login_customer_id: the manager account the OAuth user can reach; `user_lists`' customers are its clients.
        user_lists: customer id -> list id -> name.
        token_lifetime: seconds an access token lives (``expires_in``).
        job_polls: GAQL reads that see a run job unfinished (PENDING, then RUNNING) before its final status.
        requests_per_window, window_seconds: the rate window (per developer token; Data Manager shares it).
        throttle_retry_delay: ``retryDelay`` of injected throttling (faults), in seconds.
        daily_requests: a daily budget of API requests; None for none.
        allowlisted: whether Customer Match through the Ads API is allowed (section 4's policy change).
        seed_demo_data: start with `seed_demo()` applied.
    """

    name = "google_ads"

    def __init__(
        self,
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        refresh_tokens: Iterable[str] = (DEMO_REFRESH_TOKEN,),
        developer_tokens: Iterable[str] = (DEMO_DEVELOPER_TOKEN,),
        login_customer_id: str = DEMO_LOGIN_CUSTOMER_ID,
        user_lists: Mapping[str, Mapping[str, str]] = DEMO_USER_LISTS,
        token_lifetime: float = 3599.0,
        job_polls: int = 2,
        requests_per_window: int = 100,
        window_seconds: float = 1.0,
        throttle_retry_delay: float = 1.0,
        daily_requests: int | None = None,
        allowlisted: bool = True,
        seed_demo_data: bool = False,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_tokens = set(refresh_tokens)
        self.developer_tokens = set(developer_tokens)
        self.manager = login_customer_id
        self.layout = {cid: dict(lists) for cid, lists in user_lists.items()}
        self.token_lifetime = token_lifetime
        self.job_polls = job_polls
        self.throttle_retry_delay = throttle_retry_delay
        self.daily_requests = daily_requests
        self.allowlisted = allowlisted
        self.requests_per_window, self.window_seconds = requests_per_window, window_seconds
        self._window = WindowLimiter(requests_per_window, window_seconds)
        self._daily = DailyCounter()
        self._tokens = TokenStore()
        self._lock = threading.RLock()
        self._state = _State()
        self._fail_next: dict[str, list[str]] = {}  # list id -> failure reasons of its next runs
        self._load_lists()
        self.install(seed_demo_data)

    # --- routes ---------------------------------------------------------------------------------

    def routes(self) -> None:
        add = self.router.add
        c = r"/(?P<version>v\d+)/customers/(?P<cid>\d+)"
        add("POST", re.escape(TOKEN_PATH), self._token)
        add("POST", rf"{c}/offlineUserDataJobs:create", self._create_job)
        add("POST", rf"{c}/offlineUserDataJobs/(?P<job>\d+):addOperations", self._add_operations)
        add("POST", rf"{c}/offlineUserDataJobs/(?P<job>\d+):run", self._run_job)
        add("POST", rf"{c}/googleAds:search", self._search)
        add("POST", re.escape(DATA_MANAGER_PATH), self._data_manager_remove)
        add("GET", re.escape(DATA_MANAGER_STATUS_PATH), self._data_manager_status)
        self._controls()

    # --- kit hooks ------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        if request.path == TOKEN_PATH:
            return None
        if request.path in (DATA_MANAGER_PATH, DATA_MANAGER_STATUS_PATH):
            problem = self._bearer_problem(request)
            return None if problem is None else dm_unauthenticated(problem)
        match = _ADS_PATH.match(request.path)
        if match is None:
            return None  # not found, answered by the router
        version = match.group("version")
        if version not in API_VERSIONS:
            return status_error(404, "Method not found.")
        problem = self._bearer_problem(request)
        if problem is not None:
            if problem == "missing":
                return self.ads_error(request, 401, [], message=MISSING_CREDENTIAL)
            code = "OAUTH_TOKEN_EXPIRED" if problem == "expired" else "OAUTH_TOKEN_INVALID"
            return self.ads_error(request, 401, [ads_err("authenticationError", code, "Authentication of the request "
                                                         "failed.")])
        developer_token = request.header("developer-token")
        if not developer_token:
            return self.ads_error(request, 400, [ads_err("requestError", "DEVELOPER_TOKEN_PARAMETER_MISSING",
                                                         "The developer-token parameter is required for all requests.")])
        if developer_token not in self.developer_tokens:
            return self.ads_error(request, 401, [ads_err("authenticationError", "DEVELOPER_TOKEN_INVALID",
                                                         "The developer token is not valid.")])
        return None

    def limit(self, request: Request) -> Response | None:
        if request.path == TOKEN_PATH:
            return None
        if not self._daily.take(self.daily_requests):
            return self._quota_exhausted(request)
        ok, wait, _ = self._window.acquire()
        if not ok:
            return self._temporarily_exhausted(request, max(wait, 0.001))
        return None

    def decorate(self, request: Request, response: Response) -> None:
        if request.path == TOKEN_PATH:
            # RFC 6749 5.1: a token answer must not be cached (what Google's token endpoint sends).
            response.headers["Cache-Control"] = "no-cache, no-store, max-age=0, must-revalidate"
            response.headers["Pragma"] = "no-cache"
        else:
            response.headers.setdefault("request-id", new_request_id())

    def throttled(self, request: Request) -> Response:
        return self._temporarily_exhausted(request, self.throttle_retry_delay)

    def expired(self, request: Request) -> Response:
        if request.path == TOKEN_PATH:
            return oauth_error("invalid_grant", "Token has been expired or revoked.")
        if request.path == DATA_MANAGER_PATH:
            return dm_unauthenticated("expired")
        return self.ads_error(request, 401, [ads_err("authenticationError", "OAUTH_TOKEN_EXPIRED",
                                                     "Authentication of the request failed.")])

    def server_error(self, request: Request) -> Response:
        return status_error(503, MESSAGE[503])

    def not_found(self, request: Request) -> Response:
        return status_error(404, "Method not found.")

    def reset_state(self) -> None:
        self._window.reset()
        self._daily.reset()

    def _controls(self) -> None:
        def add_members(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.add_members(str(body["userList"]), [str(h) for h in body["hashes"]])
            return {"added": len(body["hashes"])}

        def fail_next_job(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.fail_next_job(str(body["userList"]), str(body.get("reason", "UNKNOWN")))
            return {"armed": True}

        def revoke_refresh_token(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.revoke_refresh_token(str(body.get("refreshToken", DEMO_REFRESH_TOKEN)))
            return {"revoked": True}

        def disallow_customer_match(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.allowlisted = bool(body.get("allowlisted", False))
            return {"allowlisted": self.allowlisted}

        def exhaust_quota(body: dict[str, Any], _: object) -> dict[str, Any]:
            self.exhaust_quota()
            return {"exhausted": True}

        on = self.on_control
        on("GET", "members/(?P<list>.+)", lambda _, p: {"userList": self._state.lists[p["list"]].resource_name,
                                                       "members": self.members(p["list"])})
        on("GET", "jobs", lambda body, _: {"jobs": self.jobs()})
        on("GET", "removals", lambda body, _: {"removals": self.removals()})
        on("POST", "seed-demo", lambda body, _: self.seed_demo(int(body.get("seed", 7))))
        on("POST", "add-members", add_members)
        on("POST", "fail-next-job", fail_next_job)
        on("POST", "expire-tokens", lambda body, _: {"expired": self.expire_tokens()})
        on("POST", "revoke-refresh-token", revoke_refresh_token)
        on("POST", "disallow-customer-match", disallow_customer_match)
        on("POST", "exhaust-quota", exhaust_quota)

    # --- Python control -------------------------------------------------------------------------

    def members(self, list_id: str) -> list[str]:
        """The list's member hashes, sorted."""
        with self._lock:
            return sorted(self._state.lists[list_id].members)

    def add_members(self, list_id: str, hashes: Iterable[str]) -> None:
        with self._lock:
            self._state.lists[list_id].members.update(hashes)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job with its status and the hashes it removes (test view; the API never shows operations)."""
        with self._lock:
            return [{"resourceName": j.resource_name, "userList": self._state.lists[j.user_list].resource_name,
                     "status": j.status, "failureReason": j.failure_reason, "ran": j.ran, "polls": j.polls,
                     "removes": [h for op, h in j.operations if op == "remove"],
                     "creates": [h for op, h in j.operations if op == "create"], "removeAll": j.remove_all}
                    for j in self._state.jobs.values()]

    def removals(self) -> list[dict[str, str]]:
        """Every removal applied, in order: via, userList, hash."""
        with self._lock:
            return [dict(r) for r in self._state.removals]

    def fail_next_job(self, list_id: str, reason: str = "UNKNOWN") -> None:
        """The next job run on this list ends FAILED with `reason` (its removals are not applied)."""
        with self._lock:
            if list_id not in self._state.lists:
                raise KeyError(list_id)
            self._fail_next.setdefault(list_id, []).append(reason)

    def expire_tokens(self) -> int:
        """Every access token issued so far is now expired (the connector must refresh)."""
        return self._tokens.expire_all()

    def revoke_refresh_token(self, token: str = DEMO_REFRESH_TOKEN) -> None:
        with self._lock:
            self.refresh_tokens.discard(token)
            self._tokens.expire_all()

    def exhaust_quota(self) -> None:
        """The developer token's daily budget is used up until midnight."""
        self.daily_requests = self._daily.exhaust(self.daily_requests)

    def seed_demo(self, seed: int = 7) -> dict[str, Any]:
        """Forget every job and member, then fill each list: the two subjects, the decoys, ~40 others."""
        rng = random.Random(seed)
        with self._lock:
            self._state = _State()
            self._fail_next = {}
            self._load_lists()
            for user_list in self._state.lists.values():
                user_list.members.update(demo_members(rng))
            return {"userLists": {lid: len(lst.members) for lid, lst in self._state.lists.items()}}

    def _load_lists(self) -> None:
        for cid, lists in self.layout.items():
            for list_id, name in lists.items():
                self._state.lists.setdefault(list_id, _UserList(cid, list_id, name))

    # --- answers --------------------------------------------------------------------------------

    def ads_error(self, request: Request, http: int, errors: list[dict[str, Any]], *,
                  message: str | None = None) -> Response:
        """A Google Ads API error: a google.rpc.Status whose details hold a GoogleAdsFailure."""
        match = _ADS_PATH.match(request.path)
        version = match.group("version") if match and match.group("version") in API_VERSIONS else LATEST_VERSION
        request_id = new_request_id()
        error: dict[str, Any] = {"code": http, "message": message or MESSAGE.get(http, MESSAGE[400]),
                                 "status": STATUS.get(http, "UNKNOWN")}
        if errors:
            error["details"] = [{"@type": f"type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure",
                                 "errors": errors, "requestId": request_id}]
        return Response.json({"error": error}, http, {"request-id": request_id})

    def _temporarily_exhausted(self, request: Request, wait: float) -> Response:
        if request.path == DATA_MANAGER_PATH:
            return status_error(429, MESSAGE[429], [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                 "domain": "googleapis.com", "metadata": {"service": "datamanager.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": duration(round(wait, 3))}])
        seconds = round(wait, 3)
        return self.ads_error(request, 429, [ads_err(
            "quotaError", "RESOURCE_TEMPORARILY_EXHAUSTED", f"Too many requests. Retry in {math.ceil(seconds)} seconds.",
            details={"quotaErrorDetails": {"rateScope": "ACCOUNT", "rateName": "Request rate for developer token",
                                           "retryDelay": duration(seconds)}})])

    def _quota_exhausted(self, request: Request) -> Response:
        wait = math.ceil(seconds_to_midnight())
        if request.path == DATA_MANAGER_PATH:
            return status_error(429, MESSAGE[429], [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                 "domain": "googleapis.com", "metadata": {"quota_limit": "RequestsPerDay"}},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": duration(wait)}])
        return self.ads_error(request, 429, [ads_err(
            "quotaError", "RESOURCE_EXHAUSTED", f"Too many requests. Retry in {wait} seconds.",
            details={"quotaErrorDetails": {"rateScope": "DEVELOPER", "rateName": "Number of operations for basic access",
                                           "retryDelay": duration(wait)}})])

    # --- helpers --------------------------------------------------------------------------------

    def _bearer_problem(self, request: Request) -> str | None:
        return self._tokens.problem(bearer_token(request))

    def _can_reach(self, customer: str, login: str | None) -> bool:
        """The OAuth user reaches the manager directly and its clients only through it."""
        if customer == self.manager:
            return login in (None, self.manager)
        return customer in self.layout and login == self.manager

    def _json_body(self, request: Request, allowed: Sequence[str], where: str = "") -> dict[str, Any]:
        try:
            body = request.json() if request.body else {}
        except ValueError:
            raise Refusal(status_error(400, "Invalid JSON payload received. Unexpected token.")) from None
        if not isinstance(body, dict):
            raise Refusal(status_error(400, "Invalid JSON payload received. Expected an object."))
        check_known(body, allowed, where)
        return body

    def _new_id(self) -> str:
        self._state.next_id += 1
        return str(self._state.next_id)

    def _job(self, request: Request) -> _Job:
        job = self._state.jobs.get(request.params["job"])
        if job is None or job.customer != request.params["cid"]:
            raise Refusal(self.ads_error(request, 400, [ads_err("requestError", "RESOURCE_NOT_FOUND",
                                                                 "Resource was not found.")]))
        return job

    def _check_access(self, request: Request) -> None:
        if not self._can_reach(request.params["cid"], request.header("login-customer-id")):
            raise Refusal(self.ads_error(request, 403, [ads_err("authorizationError", "USER_PERMISSION_DENIED",
                                                                 _PERMISSION_DENIED)]))

    # --- OAuth ----------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        text = request.body.decode("utf-8", "replace")
        if (request.header("content-type") or "").startswith("application/json"):
            try:
                form = {k: str(v) for k, v in (json.loads(text or "{}") or {}).items()}
            except (ValueError, AttributeError):
                form = {}
        else:
            form = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
        grant = form.get("grant_type", "")
        if grant != "refresh_token":
            return oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        if form.get("client_id") != self.client_id:
            return oauth_error("invalid_client", "The OAuth client was not found.", 401)
        if form.get("client_secret") != self.client_secret:
            return oauth_error("invalid_client", "Unauthorized", 401)
        with self._lock:
            if form.get("refresh_token") not in self.refresh_tokens:
                return oauth_error("invalid_grant", "Token has been expired or revoked.")
            token = self._tokens.issue("ya29.a0" + secrets.token_urlsafe(48), self.token_lifetime)
        return Response.json({"access_token": token, "expires_in": int(self.token_lifetime) if
                              self.token_lifetime == int(self.token_lifetime) else self.token_lifetime,
                              "scope": f"{ADWORDS_SCOPE} {DATAMANAGER_SCOPE}", "token_type": "Bearer"})

    # --- offline user data jobs ------------------------------------------------------------------

    def _create_job(self, request: Request) -> Response:
        with self._lock:
            self._check_access(request)
            body = self._json_body(request, ("customerId", "job", "validateOnly", "enableMatchRateRangePreview"))
            job_body = body.get("job")
            if not isinstance(job_body, dict):
                return self.ads_error(request, 400, [ads_err("fieldError", "REQUIRED", "The required field was not present.",
                                                             location=[{"fieldName": "job"}])])
            check_known(job_body, ("type", "externalId", "customerMatchUserListMetadata", "storeSalesMetadata"),
                        "job")
            if job_body.get("type") != "CUSTOMER_MATCH_USER_LIST":
                return self.ads_error(request, 400, [ads_err(
                    *(("offlineUserDataJobError", "INVALID_USER_LIST_TYPE") if job_body.get("type")
                      else ("fieldError", "REQUIRED")),
                    "This sandbox serves Customer Match jobs only.", location=[{"fieldName": "job"},
                                                                               {"fieldName": "type"}])])
            if not self.allowlisted:
                return self.ads_error(request, 403, [ads_err(
                    "notAllowlistedError", "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
                    "Customer Match uploads aren't supported in the Google Ads API for the developer token of the "
                    "request. Use the Data Manager API for Customer Match workflows.")])
            metadata = job_body.get("customerMatchUserListMetadata") or {}
            check_known(metadata, ("userList", "consent"), "job.customer_match_user_list_metadata")
            wanted = str(metadata.get("userList") or "")
            match = re.fullmatch(r"customers/(\d+)/userLists/(\d+)", wanted)
            user_list = self._state.lists.get(match.group(2)) if match else None
            if user_list is None or match is None or match.group(1) != request.params["cid"] \
                    or user_list.customer != request.params["cid"]:
                return self.ads_error(request, 400, [ads_err(
                    "offlineUserDataJobError", "INVALID_USER_LIST_ID", "The user list ID provided for the job is invalid.",
                    location=[{"fieldName": "job"}, {"fieldName": "customer_match_user_list_metadata"},
                              {"fieldName": "user_list"}])])
            if body.get("validateOnly"):
                return Response.json({})
            job = _Job(request.params["cid"], self._new_id(), user_list.id,
                       external_id=str(job_body["externalId"]) if job_body.get("externalId") else None)
            self._state.jobs[job.id] = job
            return Response.json({"resourceName": job.resource_name})

    def _add_operations(self, request: Request) -> Response:
        with self._lock:
            self._check_access(request)
            body = self._json_body(request, ("resourceName", "enablePartialFailure", "enableWarnings", "operations",
                                             "validateOnly"))
            job = self._job(request)
            if job.ran:
                return self.ads_error(request, 400, [ads_err(
                    "offlineUserDataJobError", "JOB_ALREADY_STARTED",
                    "Operations can only be added to a job that has not been run.")])
            operations = body.get("operations")
            if not isinstance(operations, list) or not operations:
                return self.ads_error(request, 400, [ads_err("requestError", "OPERATION_REQUIRED",
                                                             "No operations in the request.")])
            if len(operations) > MAX_OPERATIONS_PER_REQUEST:
                return self.ads_error(request, 400, [ads_err("requestError", "TOO_MANY_MUTATE_OPERATIONS",
                                                             "Received too many entries in request.")])
            accepted: list[tuple[str, str]] = []
            remove_all = False
            errors: list[dict[str, Any]] = []
            for index, operation in enumerate(operations):
                problem = self._operation_problem(operation, index)
                if problem is not None:
                    errors.append(problem)
                    continue
                if operation.get("removeAll"):
                    remove_all = True
                    continue
                kind = "create" if "create" in operation else "remove"
                accepted.extend((kind, ident["hashedEmail"]) for ident in operation[kind]["userIdentifiers"]
                                if "hashedEmail" in ident)
            if errors and not body.get("enablePartialFailure"):
                return self.ads_error(request, 400, errors)
            if not body.get("validateOnly"):
                job.operations.extend(accepted)
                job.remove_all = job.remove_all or remove_all
            if errors:
                return Response.json({"partialFailureError": {
                    "code": 3, "message": f"Multiple errors in 'details'. First error: {errors[0]['message']}, "
                                          f"at operations[{errors[0]['location']['fieldPathElements'][0]['index']}]",
                    "details": [{"@type": f"type.googleapis.com/google.ads.googleads.{request.params['version']}"
                                          ".errors.GoogleAdsFailure", "errors": errors,
                                 "requestId": new_request_id()}]}})
            return Response.json({})

    def _operation_problem(self, operation: Any, index: int) -> dict[str, Any] | None:
        here: list[dict[str, Any]] = [{"fieldName": "operations", "index": index}]
        if not isinstance(operation, dict) or len([k for k in ("create", "remove", "removeAll") if k in operation]) != 1:
            return ads_err("mutateError", "INCONSISTENT_FIELD_VALUES" if isinstance(operation, dict) else "UNKNOWN",
                           "An operation must set exactly one of create, remove or removeAll.", location=here)
        if "removeAll" in operation:
            return None
        kind = "create" if "create" in operation else "remove"
        data = operation[kind]
        identifiers = data.get("userIdentifiers") if isinstance(data, dict) else None
        if not isinstance(identifiers, list) or not identifiers:
            return ads_err("offlineUserDataJobError", "MISSING_USER_IDENTIFIER", "The operation has no user identifiers.",
                           location=[*here, {"fieldName": kind}])
        for number, ident in enumerate(identifiers):
            where: list[dict[str, Any]] = [*here, {"fieldName": kind},
                                           {"fieldName": "user_identifiers", "index": number}]
            keys = [k for k in ("hashedEmail", "hashedPhoneNumber", "mobileId", "thirdPartyUserId", "addressInfo")
                    if isinstance(ident, dict) and k in ident]
            if len(keys) != 1:
                return ads_err("offlineUserDataJobError", "MISSING_USER_IDENTIFIER" if not keys else "TOO_MANY_USER_IDENTIFIERS",
                               "A user identifier must set exactly one identifier.", location=where)
            if keys[0] in ("hashedEmail", "hashedPhoneNumber") and not _HEX64.match(str(ident[keys[0]])):
                return ads_err("offlineUserDataJobError", "INVALID_SHA256_FORMAT", "The SHA256 encoded value is malformed.",
                               location=[*where, {"fieldName": "hashed_email" if keys[0] == "hashedEmail"
                                                  else "hashed_phone_number"}])
        return None

    def _run_job(self, request: Request) -> Response:
        with self._lock:
            self._check_access(request)
            self._json_body(request, ("resourceName", "validateOnly"))
            job = self._job(request)
            if job.ran:
                return self.ads_error(request, 400, [ads_err("offlineUserDataJobError", "JOB_ALREADY_STARTED",
                                                             "The job has already been run.")])
            job.ran = True
            queued = self._fail_next.get(job.user_list)
            if queued:
                job.fail_with = queued.pop(0)
            operation = f"customers/{job.customer}/operations/{uuid.uuid4().hex[:16]}"
            return Response.json({"name": operation})

    def _advance(self, job: _Job) -> None:
        """One GAQL read of a run job: PENDING, RUNNING..., then SUCCESS or FAILED (removals applied then)."""
        if not job.ran or job.status in ("SUCCESS", "FAILED"):
            return
        steps = ["PENDING", *["RUNNING"] * max(self.job_polls - 1, 0)]
        if job.polls < len(steps) and self.job_polls > 0:
            job.status = steps[job.polls]
            job.polls += 1
            return
        job.polls += 1
        if job.fail_with is not None:
            job.status, job.failure_reason = "FAILED", job.fail_with
            return
        user_list = self._state.lists[job.user_list]
        if job.remove_all:
            user_list.members.clear()
        for kind, hashed in job.operations:
            if kind == "remove":
                user_list.members.discard(hashed)
                self._state.removals.append({"via": "offline_user_data_job", "userList": user_list.resource_name,
                                             "hash": hashed, "job": job.resource_name})
            else:
                user_list.members.add(hashed)
        job.status = "SUCCESS"

    # --- GAQL -------------------------------------------------------------------------------------

    def _search(self, request: Request) -> Response:
        with self._lock:
            self._check_access(request)
            body = self._json_body(request, ("customerId", "query", "pageToken", "pageSize", "validateOnly",
                                             "returnTotalResultsCount", "summaryRowSetting", "searchSettings"))
            if "pageSize" in body:
                return self.ads_error(request, 400, [ads_err("requestError", "PAGE_SIZE_NOT_SUPPORTED",
                                                             "Setting the page size is not supported.")])
            try:
                resource, fields, conditions, limit = parse_gaql(str(body.get("query") or ""), _QUERYABLE)
            except GaqlError as error:
                return self.ads_error(request, 400, [ads_err("queryError", error.code, error.message)])
            json_name, known = _RESOURCES[resource]
            rows: list[_Job | _UserList]
            if resource == "offline_user_data_job":
                rows = [j for j in self._state.jobs.values() if j.customer == request.params["cid"]]
            else:
                rows = [lst for lst in self._state.lists.values() if lst.customer == request.params["cid"]]
            values = [self._job_values(r) if isinstance(r, _Job) else self._list_values(r) for r in rows]
            results = []
            for row, value in zip(rows, values, strict=True):
                if not all(holds(value, cond) for cond in conditions):
                    continue
                if isinstance(row, _Job):
                    self._advance(row)
                    value = self._job_values(row)
                entity: dict[str, Any] = {}
                for name in dict.fromkeys(["resource_name", *fields]):
                    put_field(entity, known[name], value[name])
                results.append({json_name: entity})
                if limit is not None and len(results) >= limit:
                    break
            mask = ",".join(f"{json_name}.{known[f]}" for f in fields)
            # SearchGoogleAdsResponse has no requestId: Google sends it as the request-id header (decorate).
            answer: dict[str, Any] = {"fieldMask": mask}
            if results:
                answer["results"] = results
            return Response.json(answer)

    def _job_values(self, job: _Job) -> dict[str, Any]:
        return {"resource_name": job.resource_name, "id": job.id, "status": job.status, "type": "CUSTOMER_MATCH_USER_LIST",
                "failure_reason": job.failure_reason, "external_id": job.external_id,
                "customer_match_user_list_metadata.user_list": self._state.lists[job.user_list].resource_name}

    def _list_values(self, user_list: _UserList) -> dict[str, Any]:
        return {"resource_name": user_list.resource_name, "id": user_list.id, "name": user_list.name,
                "type": "CRM_BASED", "membership_status": "OPEN"}

    # --- Data Manager -----------------------------------------------------------------------------

    def _data_manager_remove(self, request: Request) -> Response:
        with self._lock:
            body = self._json_body(request, ("destinations", "audienceMembers", "encoding", "encryptionInfo",
                                             "validateOnly"))
            destinations = body.get("destinations")
            if not isinstance(destinations, list) or not destinations:
                return violation("destinations", "Destinations are required.", "REQUIRED_FIELD_MISSING")
            if len(destinations) > MAX_DESTINATIONS:
                return violation("destinations", "Too many destinations.", "TOO_MANY_DESTINATIONS")
            targets: list[_UserList] = []
            for index, destination in enumerate(destinations):
                where = f"destinations[{index}]"
                if not isinstance(destination, dict):
                    return violation(where, "Destination must be an object.", "INVALID_DESTINATION")
                check_known(destination, ("reference", "loginAccount", "linkedAccount", "operatingAccount",
                                          "productDestinationId"), where)
                operating = destination.get("operatingAccount") or {}
                login = destination.get("loginAccount") or {}
                for label, account in (("operating_account", operating), ("login_account", login)):
                    if account and account.get("accountType") not in (
                            "GOOGLE_ADS", "DISPLAY_VIDEO_PARTNER", "DISPLAY_VIDEO_ADVERTISER", "DATA_PARTNER"):
                        return status_error(400, f"Invalid value at '{where}.{label}.account_type' "
                                                 f"(type.googleapis.com/google.ads.datamanager.v1.AccountType)")
                if operating.get("accountType") != "GOOGLE_ADS" or not operating.get("accountId"):
                    return violation(f"{where}.operating_account", "A Google Ads operating account is required.",
                                     "INVALID_OPERATING_ACCOUNT")
                customer = str(operating["accountId"])
                login_id = str(login["accountId"]) if login.get("accountId") else None
                if not self._can_reach(customer, login_id):
                    return dm_error(403, [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                           "reason": "PERMISSION_DENIED",
                                           "domain": "datamanager.googleapis.com"}])
                user_list = self._state.lists.get(str(destination.get("productDestinationId") or ""))
                if user_list is None or user_list.customer != customer:
                    return violation(f"{where}.product_destination_id", "Product destination not found.",
                                     "INVALID_PRODUCT_DESTINATION_ID")
                targets.append(user_list)
            members = body.get("audienceMembers")
            if not isinstance(members, list) or not members:
                return violation("audience_members", "Audience members are required.", "REQUIRED_FIELD_MISSING")
            if len(members) > MAX_AUDIENCE_MEMBERS:
                return violation("audience_members", "Too many audience members.", "TOO_MANY_AUDIENCE_MEMBERS")
            encoding = body.get("encoding")
            hashes: list[str] = []
            for index, member in enumerate(members):
                identifiers = (((member or {}).get("userData") or {}).get("userIdentifiers")
                               if isinstance(member, dict) else None)
                where = f"audience_members.audience_members[{index}].user_data.user_identifiers"
                if not isinstance(identifiers, list) or not identifiers:
                    return violation(where, "User identifiers are required.", "REQUIRED_FIELD_MISSING")
                for ident in identifiers:
                    email = ident.get("emailAddress") if isinstance(ident, dict) else None
                    if email is None:
                        continue
                    if encoding not in ("HEX", "BASE64"):
                        return violation("encoding", "Encoding is required for hashed identifiers.",
                                         "INVALID_ENCODING")
                    if encoding == "HEX" and not _HEX64.match(str(email)):
                        return violation(where, "Email is not hex encoded.", "INVALID_HEX_ENCODING")
                    hashes.append(str(email) if encoding == "HEX" else _b64_to_hex(str(email)))
            request_id = str(uuid.uuid4())
            if not body.get("validateOnly"):
                failed: set[str] = set()
                for user_list in targets:
                    queued = self._fail_next.get(user_list.id)
                    if queued:
                        queued.pop(0)
                        failed.add(user_list.id)
                removal = _DmRequest([dict(d) for d in destinations], [t.id for t in targets], hashes,
                                     failed=failed)
                self._state.dm_requests[request_id] = removal
                if self.job_polls <= 0:
                    self._finish_dm(removal)
            return Response.json({"requestId": request_id})

    def _finish_dm(self, removal: _DmRequest) -> None:
        removal.status = "DONE"
        for list_id in removal.lists:
            if list_id in removal.failed:
                continue
            user_list = self._state.lists[list_id]
            for hashed in removal.hashes:
                user_list.members.discard(hashed)
                self._state.removals.append({"via": "data_manager", "userList": user_list.resource_name,
                                             "hash": hashed})

    def _data_manager_status(self, request: Request) -> Response:
        """``GET /v1/requestStatus:retrieve?requestId=``: one RequestStatusPerDestination per destination."""
        request_id = request.arg("requestId") or ""
        with self._lock:
            removal = self._state.dm_requests.get(request_id)
            if removal is None:
                if not request_id:
                    return violation("request_id", "Request ID is required.", "REQUIRED_FIELD_MISSING")
                return dm_error(404, [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                       "reason": "NOT_FOUND", "domain": "datamanager.googleapis.com"}])
            if removal.status == "PROCESSING":
                removal.reads += 1
                if removal.reads > self.job_polls:
                    self._finish_dm(removal)
            statuses = []
            for destination, list_id in zip(removal.destinations, removal.lists, strict=True):
                status = removal.status
                if status == "DONE":
                    status = "FAILED" if list_id in removal.failed else "SUCCESS"
                entry: dict[str, Any] = {"destination": destination, "requestStatus": status}
                if status == "SUCCESS":
                    entry["audienceMembersRemovalStatus"] = {"userDataRemovalStatus": {
                        "recordCount": str(len(removal.hashes)), "userIdentifierCount": str(len(removal.hashes))}}
                elif status == "FAILED":
                    entry["errorInfo"] = {"errorCounts": [{"recordCount": str(len(removal.hashes)),
                                                           "reason": "PROCESSING_ERROR_REASON_INTERNAL_ERROR"}]}
                statuses.append(entry)
        return Response.json({"requestStatusPerDestination": statuses})



# --- module helpers -------------------------------------------------------------------------------------


def _b64_to_hex(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.google_ads --port N`: serve the demo audiences until interrupted."""
    parser = demo_cli("google_ads", main.__doc__)
    parser.add_argument("--job-polls", type=int, default=2, help="reads before a run job finishes")
    args = parser.parse_args(argv)
    return serve_demo(GoogleAdsSandbox(job_polls=args.job_polls), args.port, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
