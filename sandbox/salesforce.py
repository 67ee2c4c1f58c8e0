"""A loopback emulator of the Salesforce REST API, for the demo, the tests and the benchmarks.

It speaks the wire formats of `shared/reference/vendor-apis.md` section 1 so that simple-salesforce,
unchanged, cannot tell it from an org (its clients reach it through a session that rewrites
``https://*.salesforce.com`` to this server, see section 0 option b):

- OAuth 2.0 token endpoint: client credentials (HTTP Basic) and JWT bearer (RS256 signature checked
  against a configured public key, plus iss/sub/aud/exp). SOAP ``login()`` is answered with the fault
  of a retired API.
- SOQL (`query/`, `queryAll/`, with or without the trailing slash): just enough of
  ``SELECT fields FROM Object [WHERE ...] [ORDER BY ...] [LIMIT n] [OFFSET n]`` with ``=``, ``!=``,
  ``<``, ``<=``, ``>``, ``>=``, ``IN``, ``NOT IN``, ``AND``, ``OR``, ``NOT`` and parentheses. String
  literals are unescaped exactly as SOQL does (``\\'``, ``\\\\``, ``\\n``...; an unknown escape is a
  MALFORMED_QUERY). Text equality is exact and case-insensitive (as Salesforce compares e-mails);
  there is no LIKE. Results come 2,000 per page with `nextRecordsUrl` as a path.
- sObject rows (GET, PATCH, DELETE), create (POST, 201), describe, describeGlobal; sObject Collections
  (`composite/sobjects`: DELETE by ids, POST create, PATCH update) with per-record results in order.
- Composite (`composite/`, the whole call one unit of the API quota, at most 5 queries) and Composite
  Batch (`composite/batch`, each subrequest a unit of the quota): subrequests run through these same
  routes (`sandbox.salesforce_batch`).
- Bulk API 2.0 ingest jobs for ``delete`` and ``hardDelete``: Open -> UploadComplete -> InProgress ->
  JobComplete, the CSV upload answering 201, and the per-record result CSVs.
- Limits: a rolling 24-hour API quota (403 REQUEST_LIMIT_EXCEEDED "TotalRequests Limit exceeded."), a
  cap on concurrent long-running calls (403 "ConcurrentPerOrgLongTxn Limit exceeded."),
  ``Sforce-Limit-Info: api-usage=N/MAX`` on every REST answer, and `limits/`.
- Faults through the kit: server errors (503, error array), throttling (the concurrency answer above),
  expired sessions (the token presented is revoked, then 401 INVALID_SESSION_ID), resets, timeouts.

Control actions (under ``/__sandbox__/``, besides the kit's stats/faults/reset):
``POST seed-demo {"seed": 7}``, ``POST refuse-delete {"ids": [...], "statusCode": "DELETE_FAILED"}``
(``{"clear": true}`` forgets them), ``POST expire-sessions``, ``GET records/<Object>``, and
``POST fail-queries {"object": "Case", "status": 503, "errorCode": "SERVER_UNAVAILABLE", "times": 1}``: the
next queries of that object answer that error (a direct query and a Composite subrequest alike; a 401
also ends the session presented, as an expired one does).

Sandboxes know vendor wire formats only, never the project's own code.

    python -m sandbox.salesforce --port 8766
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import io
import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import jwt  # PyJWT, which simple-salesforce depends on

from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT
from sandbox.kit import (
    Refusal,
    Request,
    Response,
    TokenStore,
    Vendor,
    WindowLimiter,
    bearer_token,
    demo_cli,
    oauth_error,
    serve_demo,
)
from sandbox.salesforce_batch import composite, composite_batch, subrequest
from sandbox.salesforce_client import (
    COLLECTION_LIMIT,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_INSTANCE_URL,
    DEMO_JWT_USERNAME,
    TOKEN_PATH,
    OrgClient,
)
from sandbox.salesforce_model import (
    ID_RE,
    OBJECTS,
    USER_ID,
    ApiError,
    BulkJob,
    FieldSpec,
    SObject,
    check_value,
    csv_text,
    entity_deleted_error,
    not_found_error,
    now_iso,
    to_18,
)
from sandbox.salesforce_seed import DECOY_EMAILS, LOOKALIKE_EMAILS, DemoSeeder
from sandbox.soql import SoqlParser, comparable, count_answer, soql_matches

__all__ = [
    "ACCESS_SUBJECT",
    "DECOY_EMAILS",
    "LOOKALIKE_EMAILS",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_DOMAIN",
    "DEMO_INSTANCE_URL",
    "DEMO_JWT_USERNAME",
    "ERASURE_SUBJECT",
    "OrgClient",
    "SalesforceSandbox",
    "to_18",
]

DEFAULT_DAILY_QUOTA = 15_000
PAGE_SIZE = 2_000
SUPPORTED_VERSIONS = tuple(f"{v}.0" for v in range(31, 69))  # 31.0 (Summer '14) .. 68.0 (Winter '27)

_ORG_ID = "00D8d000000PrEcEAC"
_API = r"/services/data/v(?P<version>\d{2,3}\.\d)"
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


# --- the vendor -------------------------------------------------------------------------------------------


class SalesforceSandbox(Vendor):
    """An in-memory Salesforce org behind the REST API (see the module docstring).

    Args:
        client_id, client_secret: the connected app's consumer key and secret.
        domain: the org's My Domain (``precision.my``); ``instance_url`` defaults to ``https://<domain>.salesforce.com``.
        jwt_public_key: PEM public key that JWT bearer assertions must be signed for (None: JWT login refused).
        jwt_usernames: the users a JWT assertion may name as ``sub``.
        daily_quota: API calls allowed in any 24 hours.
        max_long_calls: concurrent long-running calls allowed (None: no cap); a call is "long" once it has
            run `long_call_seconds` (Salesforce: 20 s; tests lower it).
        page_size: records per query page.
        bulk_polls_in_progress: job polls that still see ``InProgress`` before a job completes.
        session_seconds: access tokens expire after this long (None: only when revoked).
        audit_fields_on_create: the org grants "Set Audit Fields upon Record Creation" (CreatedDate,
            LastModifiedDate... may be given on create; the tests use it to age records).
        individual_enabled: the org has data protection (the Individual object) enabled.
    """

    name = "salesforce"

    def __init__(
        self,
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        domain: str = DEMO_DOMAIN,
        instance_url: str | None = None,
        jwt_public_key: str | bytes | None = None,
        jwt_usernames: Iterable[str] = (DEMO_JWT_USERNAME,),
        daily_quota: int = DEFAULT_DAILY_QUOTA,
        max_long_calls: int | None = 25,
        long_call_seconds: float = 20.0,
        page_size: int = PAGE_SIZE,
        bulk_polls_in_progress: int = 1,
        session_seconds: float | None = None,
        audit_fields_on_create: bool = True,
        individual_enabled: bool = True,
    ) -> None:
        super().__init__()
        if daily_quota < 1 or page_size < 1:
            raise ValueError("daily_quota and page_size must be at least 1")
        self.client_id, self.client_secret = client_id, client_secret
        self.domain = domain
        self.instance_url = instance_url or f"https://{domain}.salesforce.com"
        self.jwt_public_key = jwt_public_key
        self.jwt_usernames = frozenset(jwt_usernames)
        self.daily_quota = daily_quota
        self.max_long_calls, self.long_call_seconds = max_long_calls, long_call_seconds
        self.page_size = page_size
        self.bulk_polls_in_progress = bulk_polls_in_progress
        self.session_seconds = session_seconds
        self.audit_fields_on_create = audit_fields_on_create
        self.objects = {o.name.lower(): o for o in OBJECTS if individual_enabled or o.name != "Individual"}
        self._by_prefix = {o.prefix: o for o in self.objects.values()}

        self._lock = threading.RLock()  # the store, cursors, jobs and refusals
        self._rows: dict[str, dict[str, dict[str, Any]]] = {o.name: {} for o in self.objects.values()}
        self._purged: set[str] = set()
        self._counter = itertools.count(1)
        self._version = 0
        self._activity_cache: tuple[int, dict[str, str]] = (-1, {})
        self._cursors: dict[str, tuple[list[dict[str, Any]], str]] = {}
        self._jobs: dict[str, BulkJob] = {}
        self._refusals: dict[str, tuple[str, str]] = {}
        self._query_failures: dict[str, list[tuple[int, str, str]]] = {}  # object -> errors its next queries answer

        self._tokens = TokenStore()
        self._quota = WindowLimiter(daily_quota, 86_400)
        self._used = 0
        self.install()

    # --- kit hooks ---

    def handle(self, request: Request) -> Response | None:
        response = super().handle(request)
        if response is not None:
            self.decorate(request, response)  # every REST answer, errors too, carries the API usage
        return response

    def concurrency_cap(self, request: Request) -> tuple[int | None, float] | None:
        if not request.path.startswith("/services/data/v"):
            return None
        return self.max_long_calls, self.long_call_seconds

    def authenticate(self, request: Request) -> Response | None:
        if not request.path.startswith("/services/data/v"):
            return None  # the token endpoint, SOAP and the versions list need no session
        if self._session_of(request) is None:
            return Response.json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401)
        return None

    def limit(self, request: Request) -> Response | None:
        if not request.path.startswith("/services/data/v") or self._take_quota():
            return None
        return Response.json([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)

    def _take_quota(self) -> bool:
        """One unit of the daily API quota; False when it is used up."""
        allowed, _wait, remaining = self._quota.acquire()
        self._used = self.daily_quota - remaining if allowed else self.daily_quota  # shown in Sforce-Limit-Info
        return allowed

    def decorate(self, request: Request, response: Response) -> None:
        if request.path.startswith("/services/data/v"):
            response.headers["Sforce-Limit-Info"] = f"api-usage={self._used}/{self.daily_quota}"

    def throttled(self, request: Request) -> Response:
        if not request.path.startswith("/services/data/"):
            return _unavailable_page()
        return Response.json(
            [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403
        )

    def expired(self, request: Request) -> Response:
        if not request.path.startswith("/services/data/"):
            return _unavailable_page()
        self._tokens.revoke(_bearer(request))  # the session really ends: the client must log in again
        return Response.json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401)

    def server_error(self, request: Request) -> Response:
        if not request.path.startswith("/services/data/"):
            return _unavailable_page()
        return Response.json(
            [{"message": "Service temporarily unavailable; please try again later.", "errorCode": "SERVER_UNAVAILABLE"}],
            503,
        )

    def not_found(self, request: Request) -> Response:
        return not_found_error().response()

    def method_not_allowed(self, request: Request) -> Response:
        return Response.json([{"errorCode": "METHOD_NOT_ALLOWED", "message": "HTTP Method not allowed"}], 405)

    def reset_state(self) -> None:
        self._quota.reset()
        self._used = 0
        with self._lock:
            self._refusals.clear()
            self._cursors.clear()
            self._query_failures.clear()

    def _controls(self) -> None:
        def refuse_delete(body: dict[str, Any], _: object) -> dict[str, Any]:
            if body.get("clear"):
                with self._lock:
                    self._refusals.clear()
            self.refuse_delete(body.get("ids") or [], body.get("statusCode", "DELETE_FAILED"), body.get("message"))
            return {"refusing": len(self._refusals)}

        def records(_: object, params: dict[str, str]) -> Response | dict[str, Any]:
            obj = self.objects.get(params["object"].lower())
            if obj is None:
                return Response.json({"error": "unknown object"}, 404)
            return {"records": self.records(obj.name, include_deleted=True)}

        def fail_queries(body: dict[str, Any], _: object) -> dict[str, Any]:
            obj = self.objects.get(str(body["object"]).lower())
            if obj is None:
                raise KeyError(f"object: no object {body['object']!r} in this org")
            status, code = int(body["status"]), str(body["errorCode"])
            message = str(body.get("message") or f"{code} (injected)")
            with self._lock:
                self._query_failures.setdefault(obj.name, []).extend([(status, code, message)] *
                                                                       int(body.get("times", 1)))
            return {"failing": {name: len(errors) for name, errors in self._query_failures.items()}}

        on = self.on_control
        on("POST", "fail-queries", fail_queries)
        on("POST", "seed-demo", lambda body, _: {"seeded": self.seed_demo(int(body.get("seed", 7)))})
        on("POST", "refuse-delete", refuse_delete)
        on("POST", "expire-sessions", lambda body, _: {"expired": self._tokens.expire_all()})
        on("GET", "records/(?P<object>.+)", records)

    # --- test and demo API (in-process) ---

    def seed_demo(self, seed: int = 7) -> dict[str, int]:
        """Forget every record and load the demo org: the two subjects, the decoys, ~50 other people.

        Returns:
            Live records per object.
        """
        with self._lock:
            for rows in self._rows.values():
                rows.clear()
            self._purged.clear()
            self._cursors.clear()
            self._jobs.clear()
            self._refusals.clear()
            self._counter = itertools.count(1)
            self._version += 1
            DemoSeeder(self, random.Random(seed)).run()
            return {name: len(rows) for name, rows in self._rows.items()}

    def refuse_delete(self, ids: Iterable[str], status_code: str = "DELETE_FAILED", message: str | None = None) -> None:
        """Make deletes of these ids fail (single, collection and bulk) with `status_code`."""
        text = message or "Your attempt to delete this record could not be completed because it is associated with " \
            "other records or is locked."
        with self._lock:
            for record_id in ids:
                if ID_RE.match(record_id):
                    self._refusals[to_18(record_id)] = (status_code, text)

    def record(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        """One stored record with every field (deleted ones too: `IsDeleted` says), or None."""
        with self._lock:
            obj = self._object(object_name)
            row = self._rows[obj.name].get(to_18(record_id)) if ID_RE.match(record_id) else None
            return None if row is None else self._render(obj, row, obj.fields, "62.0")

    def records(self, object_name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every stored record of an object."""
        with self._lock:
            obj = self._object(object_name)
            return [self._render(obj, row, obj.fields, "62.0") for row in self._rows[obj.name].values()
                    if include_deleted or not row["IsDeleted"]]

    def is_purged(self, record_id: str) -> bool:
        """True when the id was hard-deleted (gone from the Recycle Bin too)."""
        with self._lock:
            return to_18(record_id) in self._purged

    # --- store ---

    def _object(self, name: str) -> SObject:
        obj = self.objects.get(name.lower())
        if obj is None:
            raise not_found_error()
        return obj

    def _new_id(self, obj: SObject) -> str:
        return to_18(f"{obj.prefix}8d{next(self._counter):010d}")

    def _create(self, obj: SObject, values: Mapping[str, Any], *, trusted: bool = False) -> str:
        """Validate and store a new record (caller holds the lock)."""
        row: dict[str, Any] = {}
        for key, value in values.items():
            if key == "attributes":
                continue
            spec = obj.field(key)
            if spec is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [])
            if not trusted and not (spec.createable or (spec.audit and self.audit_fields_on_create)):
                raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {spec.name}. "
                                "Please check the security settings of this field and verify that it is read/write "
                                "for your profile or permission set.", [spec.name])
            row[spec.name] = check_value(spec, value)
        for name, value in obj.defaults.items():
            if row.get(name) is None:
                row[name] = value
        missing = [s.name for s in obj.fields
                   if not s.nillable and not s.defaulted and s.createable and row.get(s.name) is None]
        if missing:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                            missing)
        self._check_references(obj, row, creating=True)
        now = now_iso()
        record_id = self._new_id(obj)
        for spec in obj.fields:
            if spec.type == "boolean" and row.get(spec.name) is None and not spec.computed:
                row[spec.name] = False
        row.update({"Id": record_id, "IsDeleted": False})
        row.setdefault("CreatedDate", now)
        row.setdefault("LastModifiedDate", row["CreatedDate"])
        row["SystemModstamp"] = row["LastModifiedDate"]
        row.setdefault("CreatedById", USER_ID)
        row.setdefault("LastModifiedById", USER_ID)
        if obj.field("OwnerId") is not None:
            row.setdefault("OwnerId", USER_ID)
        if obj.name == "Case":
            row["CaseNumber"] = f"{1000 + len(self._rows['Case']) + 1:08d}"
        self._rows[obj.name][record_id] = row
        self._version += 1
        return record_id

    def _check_references(self, obj: SObject, values: Mapping[str, Any], *, creating: bool) -> None:
        """The lookups being written must point at live records of the right objects."""
        for spec in obj.fields:
            value = values.get(spec.name)
            if spec.type != "reference" or value is None or "User" in spec.reference_to:
                continue
            target = self._by_prefix.get(value[:3])
            live = target is not None and target.name in spec.reference_to and \
                not self._rows[target.name].get(value, {"IsDeleted": True})["IsDeleted"]
            if not live:
                raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", f"{spec.label}: id value of incorrect type: {value}",
                                [spec.name])
        if creating and obj.name == "CampaignMember" and not (values.get("ContactId") or values.get("LeadId")):
            raise ApiError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ContactId, LeadId]",
                            ["ContactId", "LeadId"])

    def _update(self, obj: SObject, record_id: str, values: Mapping[str, Any]) -> None:
        """Validate and apply an update (caller holds the lock)."""
        row = self._live_row(obj, record_id)
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("attributes", "id", "Id"):
                continue
            spec = obj.field(key)
            if spec is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [])
            if not spec.updateable:
                raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {spec.name}. "
                                "Please check the security settings of this field and verify that it is read/write "
                                "for your profile or permission set.", [spec.name])
            checked = check_value(spec, value)
            if checked is None and not spec.nillable:
                raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]",
                                [spec.name])
            changes[spec.name] = checked
        self._check_references(obj, changes, creating=False)
        row.update(changes)
        row["LastModifiedDate"] = row["SystemModstamp"] = now_iso()
        row["LastModifiedById"] = USER_ID
        self._version += 1

    def _live_row(self, obj: SObject, record_id: str) -> dict[str, Any]:
        if not ID_RE.match(record_id):
            raise not_found_error()
        row = self._rows[obj.name].get(to_18(record_id))
        if row is None:
            raise not_found_error()
        if row["IsDeleted"]:
            raise entity_deleted_error()
        return row

    def _delete(self, record_id: str, *, hard: bool, expect: str | None = None) -> tuple[bool, str, str]:
        """Delete one record; (done, statusCode, message) as a DeleteResult reports it (caller holds the lock)."""
        if not ID_RE.match(record_id):
            return False, "MALFORMED_ID", f"malformed id {record_id}"
        rid = to_18(record_id)
        obj = self._by_prefix.get(rid[:3])
        if obj is None or (expect is not None and obj.name != expect):
            return False, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
        row = self._rows[obj.name].get(rid)
        if row is None:
            if rid in self._purged:
                return False, "ENTITY_IS_DELETED", "entity is deleted"
            return False, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
        if row["IsDeleted"]:
            return False, "ENTITY_IS_DELETED", "entity is deleted"
        if rid in self._refusals:
            code, message = self._refusals[rid]
            return False, code, message
        if obj.name == "Contact":
            cases = [c["CaseNumber"] for c in self._rows["Case"].values()
                     if c.get("ContactId") == rid and not c["IsDeleted"]]
            if cases:
                return False, "DELETE_FAILED", (
                    "Your attempt to delete this contact could not be completed because it is associated with the "
                    f"following cases.: {', '.join(cases)}"
                )
        if hard:
            del self._rows[obj.name][rid]
            self._purged.add(rid)
        else:
            row["IsDeleted"] = True
            row["SystemModstamp"] = now_iso()
        self._version += 1
        return True, "", ""

    def _value(self, obj: SObject, row: Mapping[str, Any], spec: FieldSpec) -> Any:
        if not spec.computed:
            return row.get(spec.name)
        if spec.name == "Name":
            return " ".join(part for part in (row.get("FirstName"), row.get("LastName")) if part) or None
        if spec.name == "LastActivityDate":
            return self._activity_dates().get(row["Id"])
        if spec.name == "HasResponded":
            return row.get("Status") == "Responded"
        if spec.name == "IsClosed":
            return row.get("Status") in ("Closed", "Completed")
        return None

    def _activity_dates(self) -> dict[str, str]:
        """Contact/Lead id -> latest ActivityDate of its live Tasks and Events (recomputed after writes)."""
        version, cached = self._activity_cache
        if version == self._version:
            return cached
        latest: dict[str, str] = {}
        for name in ("Task", "Event"):
            for row in self._rows[name].values():
                who, day = row.get("WhoId"), row.get("ActivityDate")
                if who and day and not row["IsDeleted"] and day > latest.get(who, ""):
                    latest[who] = day
        self._activity_cache = (self._version, latest)
        return latest

    def _render(self, obj: SObject, row: Mapping[str, Any], fields: Sequence[FieldSpec], version: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {"type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{row['Id']}"}
        }
        for spec in fields:
            record[spec.name] = self._value(obj, row, spec)
        return record

    # --- sessions ---

    def _session_of(self, request: Request) -> str | None:
        token = _bearer(request)
        return token if self._tokens.problem(token) is None else None

    def _issue_token(self, extra: Mapping[str, Any]) -> Response:
        token = self._tokens.issue(f"{_ORG_ID}!{secrets.token_urlsafe(48)}", self.session_seconds)
        issued = str(int(time.time() * 1000))
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), f"{self.instance_url}{issued}".encode(), hashlib.sha256).digest()
        ).decode()
        self.count("logins")
        return Response.json({
            "access_token": token, "signature": signature, "instance_url": self.instance_url,
            "id": f"https://login.salesforce.com/id/{_ORG_ID}/{USER_ID}", "token_type": "Bearer",
            "issued_at": issued, "scope": "api", **extra,
        })

    # --- routes ---

    def routes(self) -> None:
        add = self.router.add
        add("POST", TOKEN_PATH, self._token)
        add("POST", r"/services/Soap/u/(?P<version>[\d.]+)", _soap_login_retired)
        add("GET", r"/services/data/?", self._versions)
        add("GET", rf"{_API}/?", self._api(self._resources))
        add("GET", rf"{_API}/limits/?", self._api(self._limits))
        add("GET", rf"{_API}/sobjects/?", self._api(self._describe_global))
        add("GET", rf"{_API}/sobjects/(?P<object>\w+)/describe/?", self._api(self._describe))
        add("GET", rf"{_API}/sobjects/(?P<object>\w+)/?", self._api(self._object_info))
        add("POST", rf"{_API}/sobjects/(?P<object>\w+)/?", self._api(self._create_one))
        add("GET", rf"{_API}/sobjects/(?P<object>\w+)/(?P<id>\w+)/?", self._api(self._get_one))
        add("PATCH", rf"{_API}/sobjects/(?P<object>\w+)/(?P<id>\w+)/?", self._api(self._update_one))
        add("DELETE", rf"{_API}/sobjects/(?P<object>\w+)/(?P<id>\w+)/?", self._api(self._delete_one))
        add("GET", rf"{_API}/(?P<kind>query|queryAll)/?", self._api(self._query))
        add("GET", rf"{_API}/(?P<kind>query|queryAll)/(?P<cursor>01g\w+)-(?P<offset>\d+)/?", self._api(self._query_more))
        add("POST", rf"{_API}/composite/?", self._api(self._composite))
        add("POST", rf"{_API}/composite/batch/?", self._api(self._composite_batch))
        add("DELETE", rf"{_API}/composite/sobjects/?", self._api(self._collection_delete))
        add("POST", rf"{_API}/composite/sobjects/?", self._api(self._collection_create))
        add("PATCH", rf"{_API}/composite/sobjects/?", self._api(self._collection_update))
        add("POST", rf"{_API}/jobs/ingest/?", self._api(self._job_create))
        add("GET", rf"{_API}/jobs/ingest/?", self._api(self._job_list))
        add("GET", rf"{_API}/jobs/ingest/(?P<job>750\w+)/?", self._api(self._job_get))
        add("PATCH", rf"{_API}/jobs/ingest/(?P<job>750\w+)/?", self._api(self._job_patch))
        add("DELETE", rf"{_API}/jobs/ingest/(?P<job>750\w+)/?", self._api(self._job_delete))
        add("PUT", rf"{_API}/jobs/ingest/(?P<job>750\w+)/batches/?", self._api(self._job_upload))
        add("GET", rf"{_API}/jobs/ingest/(?P<job>750\w+)/(?P<results>successfulResults|failedResults|"
                   r"(?i:unprocessedrecords))/?", self._api(self._job_results))
        self._controls()

    def _api(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            if request.params.get("version") not in SUPPORTED_VERSIONS:
                return not_found_error().response()
            try:
                with self._lock:
                    return handler(request)
            except ApiError as error:
                return error.response()
        return guarded

    def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = request.header("authorization", "") or ""
            if basic.lower().startswith("basic "):
                try:
                    client_id, _, secret = base64.b64decode(basic[6:]).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    client_id = secret = None
            if not client_id or not hmac.compare_digest(client_id.encode(), self.client_id.encode()):
                return oauth_error("invalid_client_id", "client identifier invalid")
            if not secret or not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
                return oauth_error("invalid_client", "invalid client credentials")
            return self._issue_token({"token_format": "opaque"})
        if grant == _JWT_GRANT:
            return self._jwt_login(form.get("assertion") or "")
        if grant is None:
            return oauth_error("invalid_request", "grant type not specified")
        return oauth_error("unsupported_grant_type", "grant type not supported")

    def _jwt_login(self, assertion: str) -> Response:
        if self.jwt_public_key is None:
            return oauth_error("invalid_client", "no certificate is configured for this connected app")
        audiences = ["https://login.salesforce.com", "https://test.salesforce.com", f"https://{self.domain}.salesforce.com"]
        try:
            claims = jwt.decode(
                assertion, self.jwt_public_key, algorithms=["RS256"], audience=audiences, issuer=self.client_id,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            return oauth_error("invalid_grant", "expired JWT assertion")
        except jwt.InvalidAudienceError:
            return oauth_error("invalid_grant", "audience is invalid")
        except jwt.InvalidIssuerError:
            return oauth_error("invalid_client_id", "client identifier invalid")
        except jwt.PyJWTError:
            return oauth_error("invalid_grant", "invalid assertion")
        if claims.get("sub") not in self.jwt_usernames:
            return oauth_error("invalid_grant", "invalid assertion")
        return self._issue_token({})

    def _versions(self, request: Request) -> Response:
        return Response.json([{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
                              for v in SUPPORTED_VERSIONS])

    def _resources(self, request: Request) -> Response:
        base = f"/services/data/v{request.params['version']}"
        return Response.json({name: f"{base}/{name}" for name in ("sobjects", "query", "queryAll", "limits",
                                                                   "composite", "jobs")})

    def _limits(self, request: Request) -> Response:
        used, quota = self._used, self.daily_quota
        return Response.json({
            "DailyApiRequests": {"Max": quota, "Remaining": max(quota - used, 0)},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 5120, "Remaining": 5100},
        })

    def _describe_global(self, request: Request) -> Response:
        return Response.json({"encoding": "UTF-8", "maxBatchSize": COLLECTION_LIMIT, "sobjects": [
            self._object_summary(o, request.params["version"]) for o in self.objects.values()
        ]})

    def _object_summary(self, obj: SObject, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{obj.name}"
        return {"name": obj.name, "label": obj.name, "labelPlural": obj.label_plural, "keyPrefix": obj.prefix,
                "custom": False, "createable": True, "deletable": True, "updateable": True, "queryable": True,
                "retrieveable": True, "undeletable": True, "searchable": True,
                "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}}

    def _describe(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        return Response.json({**self._object_summary(obj, request.params["version"]),
                              "fields": [f.describe(self.audit_fields_on_create) for f in obj.fields],
                              "childRelationships": [], "recordTypeInfos": []})

    def _object_info(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        return Response.json({"objectDescribe": self._object_summary(obj, request.params["version"]),
                              "recentItems": []})

    def _create_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        record_id = self._create(obj, _json_object(request))
        self.count("created")
        return Response.json({"id": record_id, "success": True, "errors": []}, 201)

    def _get_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        row = self._live_row(obj, request.params["id"])
        wanted = request.arg("fields")
        fields = obj.fields
        if wanted:
            fields = tuple(self._field_or_400(obj, name.strip()) for name in wanted.split(",") if name.strip())
        return Response.json(self._render(obj, row, fields, request.params["version"]))

    def _field_or_400(self, obj: SObject, name: str) -> FieldSpec:
        spec = obj.field(name)
        if spec is None:
            raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'.")
        return spec

    def _update_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        self._update(obj, request.params["id"], _json_object(request))
        return Response.empty(204)

    def _delete_one(self, request: Request) -> Response:
        obj = self._object(request.params["object"])
        self._live_row(obj, request.params["id"])  # 404 NOT_FOUND, or 404 ENTITY_IS_DELETED from the Recycle Bin
        done, code, message = self._delete(request.params["id"], hard=False, expect=obj.name)
        if not done:
            raise ApiError(400, code, message, [])
        self.count("deleted")
        return Response.empty(204)

    # --- queries ---

    def _query(self, request: Request) -> Response:
        soql = request.arg("q")
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        if len(soql) > 100_000:
            raise ApiError(400, "MALFORMED_QUERY", "Query too complicated or too long (100000 characters at most)")
        query = SoqlParser(soql, self.objects).parse()
        failures = self._query_failures.get(query.obj.name)
        if failures:
            status, code, message = failures.pop(0)
            if status == 401:
                self._tokens.revoke(_bearer(request))
            raise ApiError(status, code, message)
        include_deleted = request.params["kind"] == "queryAll"
        rows = [row for row in self._rows[query.obj.name].values() if include_deleted or not row["IsDeleted"]]

        def value_of(row: Mapping[str, Any]) -> Callable[[FieldSpec], Any]:
            return lambda spec: self._value(query.obj, row, spec)

        rows = [row for row in rows if soql_matches(query.where, value_of(row))]
        if query.count:
            self.count("query")
            return Response.json(count_answer(query, len(rows)))
        for spec, descending, nulls_last in reversed(query.order):  # stable sorts, last key first

            def key(row: Mapping[str, Any], spec: FieldSpec = spec) -> Any:
                return comparable(spec, self._value(query.obj, row, spec))

            present = [r for r in rows if self._value(query.obj, r, spec) is not None]
            absent = [r for r in rows if self._value(query.obj, r, spec) is None]
            present.sort(key=key, reverse=descending)
            rows = present + absent if nulls_last else absent + present
        rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        version = request.params["version"]
        records = [self._render(query.obj, row, query.fields, version) for row in rows]
        self.count("query")
        if len(records) <= self.page_size:
            return Response.json({"totalSize": len(records), "done": True, "records": records})
        cursor = to_18(f"01g8d{next(self._counter):010d}")
        self._cursors[cursor] = (records, version)
        while len(self._cursors) > 64:  # Salesforce keeps a bounded number of open cursors per user
            self._cursors.pop(next(iter(self._cursors)))
        return Response.json(self._page(cursor, 0))

    def _page(self, cursor: str, offset: int) -> dict[str, Any]:
        records, version = self._cursors[cursor]
        page = records[offset : offset + self.page_size]
        done = offset + self.page_size >= len(records)
        answer: dict[str, Any] = {"totalSize": len(records), "done": done}
        if not done:
            answer["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{offset + self.page_size}"
        answer["records"] = page
        return answer

    def _query_more(self, request: Request) -> Response:
        cursor, offset = request.params["cursor"], int(request.params["offset"])
        if cursor not in self._cursors or offset >= len(self._cursors[cursor][0]):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        self.count("query_more")
        return Response.json(self._page(cursor, offset))

    # --- sObject Collections ---

    def _collection_delete(self, request: Request) -> Response:
        raw = request.arg("ids")
        if not raw:
            raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required", [])
        ids = [i for i in raw.split(",") if i]
        if len(ids) > COLLECTION_LIMIT:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                            "into this call", [])
        all_or_none = (request.arg("allOrNone") or "false").lower() == "true"
        self.count("collection_delete")
        return self._collection_apply(ids, all_or_none, self._delete_or_raise)

    def _delete_or_raise(self, record_id: str) -> str:
        done, code, message = self._delete(record_id, hard=False)
        if not done:
            raise ApiError(400, code, message, [])
        return to_18(record_id)

    def _collection_records(self, request: Request) -> tuple[list[Any], bool]:
        body = _json_object(request)
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise ApiError(400, "INVALID_FIELD", "records: a non-empty list is required", [])
        if len(records) > COLLECTION_LIMIT:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                            "into this call", [])
        return records, bool(body.get("allOrNone", False))

    def _collection_create(self, request: Request) -> Response:
        records, all_or_none = self._collection_records(request)
        return self._collection_apply(records, all_or_none, self._create_from_collection)

    def _collection_update(self, request: Request) -> Response:
        records, all_or_none = self._collection_records(request)
        return self._collection_apply(records, all_or_none, self._update_from_collection)

    def _create_from_collection(self, record: Any) -> str:
        kind = (record.get("attributes") or {}).get("type") if isinstance(record, dict) else None
        if not kind:
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.", [])
        obj = self.objects.get(str(kind).lower())
        if obj is None:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{kind}' is not supported.", [])
        return self._create(obj, record)

    def _update_from_collection(self, record: Any) -> str:
        record_id = str(record.get("id") or record.get("Id") or "") if isinstance(record, dict) else ""
        if not ID_RE.match(record_id):
            raise ApiError(400, "MALFORMED_ID", f"malformed id {record_id}", [])
        obj = self._by_prefix.get(to_18(record_id)[:3])
        if obj is None:
            raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        self._update(obj, record_id, record)
        return to_18(record_id)

    def _collection_apply(self, items: Sequence[Any], all_or_none: bool, apply: Callable[[Any], str]) -> Response:
        """Per-item results in order; with allOrNone, one failure rolls every change of the call back."""
        restore = self._snapshot() if all_or_none else None
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                results.append(_result(apply(item), True, "", ""))
            except ApiError as error:
                results.append(_result("", False, error.code, error.message, error.fields))
        if restore is not None and not all(r["success"] for r in results):
            restore()
            rolled_back = ("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were "
                           "valid and the request was using AllOrNone header")
            results = [_result("", False, *rolled_back) if r["success"] else r for r in results]
        return Response.json(results)

    def _snapshot(self) -> Callable[[], None]:
        """The store as it is now, and what puts it back (an all-or-none call that failed; caller holds the lock)."""
        rows = {name: {rid: dict(row) for rid, row in rows.items()} for name, rows in self._rows.items()}
        purged = set(self._purged)

        def restore() -> None:
            self._rows, self._purged = rows, purged
            self._version += 1
        return restore

    # --- Composite and Composite Batch ---

    def _composite(self, request: Request) -> Response:
        self.count("composite")
        return composite(request, self._dispatcher(request), snapshot=self._snapshot)

    def _composite_batch(self, request: Request) -> Response:
        self.count("composite_batch")
        return composite_batch(request, self._dispatcher(request), take_quota=self._take_quota)

    def _dispatcher(self, outer: Request) -> Callable[[str, str, Any], Response]:
        """Runs a subrequest through this org's routes, as a direct call with the top-level call's session."""
        def run(method: str, target: str, payload: Any) -> Response:
            self.count("subrequests")
            inner = subrequest(outer, method, target, payload)
            resolved = self.router.resolve(method, inner.path)
            if resolved is None:
                return self.not_found(inner)
            if resolved is False:
                return self.method_not_allowed(inner)
            handler, inner.params = resolved  # type: ignore[misc]
            try:
                return handler(inner)
            except Refusal as refusal:
                return refusal.response
        return run

    # --- Bulk API 2.0 ---

    def _job(self, request: Request) -> BulkJob:
        job = self._jobs.get(request.params["job"])
        if job is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _job_create(self, request: Request) -> Response:
        body = _json_object(request)
        operation, object_name = body.get("operation"), str(body.get("object") or "")
        if operation not in ("delete", "hardDelete"):
            raise ApiError(400, "FEATURENOTENABLED", "this sandbox runs delete and hardDelete ingest jobs only")
        obj = self.objects.get(object_name.lower())
        if obj is None:
            raise ApiError(400, "INVALIDENTITY", f"Entity '{object_name}' is not supported by the Bulk API.")
        if body.get("contentType", "CSV") != "CSV" or body.get("columnDelimiter", "COMMA") != "COMMA":
            raise ApiError(400, "FEATURENOTENABLED", "this sandbox reads COMMA-delimited CSV only")
        job = BulkJob(to_18(f"7508d{next(self._counter):010d}"), operation, obj.name, request.params["version"], now_iso())
        self._jobs[job.id] = job
        self.count("bulk_jobs")
        return Response.json(job.json())

    def _job_list(self, request: Request) -> Response:
        return Response.json({"done": True, "records": [j.json() for j in self._jobs.values()], "nextRecordsUrl": None})

    def _job_get(self, request: Request) -> Response:
        job = self._job(request)
        if job.state in ("UploadComplete", "InProgress"):
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                self._run_job(job)
        return Response.json(job.json())

    def _run_job(self, job: BulkJob) -> None:
        if job.header_error:
            job.state, job.error_message = "Failed", job.header_error
            return
        for record_id in job.rows:
            done, code, message = self._delete(record_id, hard=job.operation == "hardDelete", expect=job.object)
            if done:
                job.succeeded.append(record_id)
            else:
                job.failed.append((record_id, f"{code}:{message}:--"))
        job.state, job.modified = "JobComplete", now_iso()

    def _job_patch(self, request: Request) -> Response:
        job = self._job(request)
        state = _json_object(request).get("state")
        if state == "UploadComplete" and job.state == "Open":
            job.state, job.polls_left = "UploadComplete", self.bulk_polls_in_progress
        elif state == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            job.state = "Aborted"
        else:
            raise ApiError(400, "INVALIDJOBSTATE", f"Cannot change the state of a job from {job.state} to {state}")
        job.modified = now_iso()
        return Response.json(job.json())

    def _job_delete(self, request: Request) -> Response:
        job = self._job(request)
        if job.state in ("Open", "InProgress"):
            raise ApiError(400, "INVALIDJOBSTATE", f"Cannot delete a job in state {job.state}")
        del self._jobs[job.id]
        return Response.empty(204)

    def _job_upload(self, request: Request) -> Response:
        job = self._job(request)
        if job.state != "Open":
            raise ApiError(409, "INVALIDJOBSTATE", f"Cannot upload data to a job in state {job.state}")
        if not (request.header("content-type") or "").lower().startswith("text/csv"):
            raise ApiError(400, "INVALIDCONTENTTYPE", "Content-Type must be text/csv")
        rows = list(csv.reader(io.StringIO(request.body.decode("utf-8-sig"))))
        if not rows:
            raise ApiError(400, "ClientInputError", "The uploaded CSV is empty")
        header = [name.strip() for name in rows[0]]
        if [h.lower() for h in header] != ["id"]:
            job.header_error = f"InvalidBatch : Field name not found : {','.join(header)}"
        else:
            job.rows.extend(row[0].strip() for row in rows[1:] if row and row[0].strip())
        return Response.empty(201)

    def _job_results(self, request: Request) -> Response:
        job = self._job(request)
        kind = request.params["results"].lower()
        if kind == "successfulresults":
            body = csv_text([("sf__Id", "sf__Created", "Id"), *((i, "false", i) for i in job.succeeded)])
        elif kind == "failedresults":
            body = csv_text([("sf__Id", "sf__Error", "Id"), *((i, error, i) for i, error in job.failed)])
        else:
            pending = job.rows if job.state in ("Aborted", "Failed") else []
            body = csv_text([("Id",), *((i,) for i in pending)])
        return Response.text(body, 200, "text/csv")


def _result(
    record_id: str, done: bool, code: str, message: str, fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """A SaveResult/DeleteResult as sObject Collections answer it."""
    if done:
        return {"id": record_id, "success": True, "errors": []}
    # Failed entries carry no id (as in Salesforce's documented examples): results match the request by position.
    return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": list(fields or [])}]}


def _bearer(request: Request) -> str:
    return bearer_token(request, ("bearer", "oauth"))


def _json_body(request: Request) -> Any:
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None


def _json_object(request: Request) -> dict[str, Any]:
    body = _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


def _unavailable_page() -> Response:
    # The login servers answer an outage with an HTML page, not JSON.
    return Response.text("<html><body><h1>Service Unavailable</h1></body></html>", 503, "text/html")


def _soap_login_retired(request: Request) -> Response:
    fault = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
        'envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault><faultcode>'
        "sf:UNSUPPORTED_API_VERSION</faultcode><faultstring>UNSUPPORTED_API_VERSION: SOAP login() is retired; use "
        "OAuth 2.0</faultstring><detail><sf:UnexpectedErrorFault><sf:exceptionCode>UNSUPPORTED_API_VERSION"
        "</sf:exceptionCode><sf:exceptionMessage>SOAP login() is retired; use OAuth 2.0</sf:exceptionMessage>"
        "</sf:UnexpectedErrorFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response.text(fault, 500, "text/xml")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.salesforce --port N`: serve a seeded demo org until interrupted."""
    parser = demo_cli("salesforce", main.__doc__)
    parser.add_argument("--no-seed", action="store_true", help="start with an empty org")
    parser.add_argument("--daily-quota", type=int, default=DEFAULT_DAILY_QUOTA, help="API calls per 24 hours")
    parser.add_argument("--jwt-public-key", help="PEM file of the public key JWT bearer assertions are signed for")
    args = parser.parse_args(argv)
    public_key = None
    if args.jwt_public_key:
        with open(args.jwt_public_key, "rb") as handle:
            public_key = handle.read()
    vendor = SalesforceSandbox(daily_quota=args.daily_quota, jwt_public_key=public_key)
    return serve_demo(vendor, args.port, None if args.no_seed else args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
