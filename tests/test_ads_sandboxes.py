"""The ad platforms' sandboxes, checked on the wire with plain `requests` (a connector would not notice drift).

Google Ads (vendor-apis.md section 4): the OAuth token endpoint, the offline user data job lifecycle
(create, addOperations with partial failure, run, GAQL polls PENDING -> RUNNING -> SUCCESS), the headers
(bearer, developer-token, login-customer-id), google.rpc.Status error bodies with GoogleAdsFailure,
429 RESOURCE_EXHAUSTED with retryDelay, the Customer Match allowlist refusal, and the Data Manager
``audienceMembers:remove`` body and its 400 shape. LinkedIn (section 5): BATCH_CREATE with per-element
statuses, the versioned headers (400 VERSION_MISSING, 426 NONEXISTENT_VERSION), 401 bodies, 429 bodies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox import google_ads as gads
from sandbox import linkedin as li
from sandbox.google_ads import (
    ACCESS_SUBJECT,
    DECOY_EMAILS,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DEVELOPER_TOKEN,
    DEMO_LOGIN_CUSTOMER_ID,
    DEMO_REFRESH_TOKEN,
    ERASURE_SUBJECT,
    GoogleAdsSandbox,
    hash_email,
)
from sandbox.kit import SandboxServer
from sandbox.linkedin import LinkedInSandbox

ADA, GRACE = hash_email(ERASURE_SUBJECT), hash_email(ACCESS_SUBJECT)
CID = "1234567890"
V = "v26"


# --- Google Ads ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def google_server() -> Iterator[tuple[str, GoogleAdsSandbox]]:
    vendor = GoogleAdsSandbox(requests_per_window=10_000, throttle_retry_delay=0.05)
    with SandboxServer(vendor) as server:
        yield server.url, vendor


@pytest.fixture
def google(google_server: tuple[str, GoogleAdsSandbox]) -> tuple[str, GoogleAdsSandbox]:
    url, vendor = google_server
    requests.post(f"{url}/__sandbox__/reset", timeout=5)
    vendor.allowlisted, vendor.daily_requests = True, None
    vendor.refresh_tokens = {DEMO_REFRESH_TOKEN}
    vendor.seed_demo()
    return google_server


def access_token(url: str) -> str:
    answer = requests.post(f"{url}/token", data={"grant_type": "refresh_token", "client_id": DEMO_CLIENT_ID,
                                                 "client_secret": DEMO_CLIENT_SECRET,
                                                 "refresh_token": DEMO_REFRESH_TOKEN}, timeout=5)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def ads_headers(url: str, **overrides: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {"Authorization": f"Bearer {access_token(url)}",
                                      "developer-token": DEMO_DEVELOPER_TOKEN,
                                      "login-customer-id": DEMO_LOGIN_CUSTOMER_ID, **overrides}
    return {k: v for k, v in headers.items() if v is not None}


def ads(url: str, path: str, body: Any, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{url}/{V}/customers/{CID}/{path}", json=body, headers=headers, timeout=5)


def failure(answer: requests.Response, http: int, status: str) -> list[dict[str, Any]]:
    """The google.rpc.Status of an Ads error, and its GoogleAdsFailure errors."""
    assert answer.status_code == http, answer.text
    error = answer.json()["error"]
    assert error["code"] == http and error["status"] == status and error["message"]
    if not error.get("details"):
        return []
    (detail,) = error["details"]
    assert detail["@type"] == f"type.googleapis.com/google.ads.googleads.{V}.errors.GoogleAdsFailure"
    assert detail["requestId"]
    return detail["errors"]  # type: ignore[no-any-return]


def create_job(url: str, headers: dict[str, str], list_id: str = "111") -> str:
    answer = ads(url, "offlineUserDataJobs:create", {"job": {
        "type": "CUSTOMER_MATCH_USER_LIST",
        "customerMatchUserListMetadata": {"userList": f"customers/{CID}/userLists/{list_id}"}}}, headers)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"resourceName"}
    return str(answer.json()["resourceName"])


def remove_op(*hashes: str) -> dict[str, Any]:
    return {"remove": {"userIdentifiers": [{"hashedEmail": h} for h in hashes]}}


def job_status(url: str, headers: dict[str, str], job: str) -> dict[str, Any]:
    query = ("SELECT offline_user_data_job.resource_name, offline_user_data_job.status, "
             f"offline_user_data_job.failure_reason FROM offline_user_data_job "
             f"WHERE offline_user_data_job.resource_name = '{job}'")
    answer = ads(url, "googleAds:search", {"query": query}, headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["fieldMask"] == ("offlineUserDataJob.resourceName,offlineUserDataJob.status,"
                                 "offlineUserDataJob.failureReason")
    (row,) = body["results"]
    return row["offlineUserDataJob"]  # type: ignore[no-any-return]


def test_token_endpoint_answers_like_googles(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, _ = google
    form = {"grant_type": "refresh_token", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
            "refresh_token": DEMO_REFRESH_TOKEN}
    ok = requests.post(f"{url}/token", data=form, timeout=5).json()
    assert set(ok) == {"access_token", "expires_in", "scope", "token_type"}
    assert ok["access_token"].startswith("ya29.") and ok["expires_in"] == 3599 and ok["token_type"] == "Bearer"
    assert gads.DATAMANAGER_SCOPE in ok["scope"] and gads.ADWORDS_SCOPE in ok["scope"]
    bad_grant = requests.post(f"{url}/token", data={**form, "refresh_token": "1//nope"}, timeout=5)
    assert bad_grant.status_code == 400
    assert bad_grant.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    bad_client = requests.post(f"{url}/token", data={**form, "client_secret": "wrong"}, timeout=5)
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"


def test_ads_headers_are_required(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    body = {"query": "SELECT user_list.id FROM user_list"}
    (missing,) = failure(ads(url, "googleAds:search", body, ads_headers(url, **{"developer-token": None})),
                         400, "INVALID_ARGUMENT")
    assert missing["errorCode"] == {"requestError": "DEVELOPER_TOKEN_PARAMETER_MISSING"}
    assert failure(ads(url, "googleAds:search", body, ads_headers(url, Authorization=None)), 401,
                   "UNAUTHENTICATED") == []
    (invalid,) = failure(ads(url, "googleAds:search", body, ads_headers(url, Authorization="Bearer ya29.forged")),
                         401, "UNAUTHENTICATED")
    assert invalid["errorCode"] == {"authenticationError": "OAUTH_TOKEN_INVALID"}
    headers = ads_headers(url)
    vendor.expire_tokens()
    (expired,) = failure(ads(url, "googleAds:search", body, headers), 401, "UNAUTHENTICATED")
    assert expired["errorCode"] == {"authenticationError": "OAUTH_TOKEN_EXPIRED"}
    # A client account is reached through its manager only.
    (denied,) = failure(ads(url, "googleAds:search", body, ads_headers(url, **{"login-customer-id": None})),
                        403, "PERMISSION_DENIED")
    assert denied["errorCode"] == {"authorizationError": "USER_PERMISSION_DENIED"}
    assert "login-customer-id" in denied["message"]
    old = requests.post(f"{url}/v19/customers/{CID}/googleAds:search", json=body, headers=ads_headers(url), timeout=5)
    assert old.status_code == 404 and old.json()["error"]["status"] == "NOT_FOUND"
    answer = ads(url, "googleAds:search", body, ads_headers(url))
    assert answer.status_code == 200 and answer.headers["request-id"]
    assert [r["userList"]["id"] for r in answer.json()["results"]] == ["111", "222"]


def test_job_lifecycle_removes_exactly_the_hash_at_success(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    headers = ads_headers(url)
    job = create_job(url, headers)
    assert job.startswith(f"customers/{CID}/offlineUserDataJobs/")
    job_path = job.split("/", 2)[2]
    added = ads(url, f"{job_path}:addOperations", {"operations": [remove_op(ADA)], "enablePartialFailure": True},
                headers)
    assert added.status_code == 200 and added.json() == {}
    assert job_status(url, headers, job) == {"resourceName": job, "status": "PENDING"}  # not run: stays PENDING
    run = ads(url, f"{job_path}:run", {}, headers)
    assert run.status_code == 200
    assert set(run.json()) == {"name"} and run.json()["name"].startswith(f"customers/{CID}/operations/")
    assert ADA in vendor.members("111")
    seen = [job_status(url, headers, job)["status"] for _ in range(3)]
    assert seen == ["PENDING", "RUNNING", "SUCCESS"]
    members = vendor.members("111")
    assert ADA not in members and GRACE in members
    assert all(hash_email(d) in members for d in DECOY_EMAILS)
    assert ADA in vendor.members("222")  # another list: untouched
    again = ads(url, f"{job_path}:addOperations", {"operations": [remove_op(GRACE)]}, headers)
    (started,) = failure(again, 400, "INVALID_ARGUMENT")
    assert started["errorCode"] == {"offlineUserDataJobError": "JOB_ALREADY_STARTED"}


def test_removing_an_absent_member_succeeds(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    headers = ads_headers(url)
    absent = hash_email("nobody@example.com")
    job = create_job(url, headers)
    path = job.split("/", 2)[2]
    ads(url, f"{path}:addOperations", {"operations": [remove_op(absent)]}, headers)
    ads(url, f"{path}:run", {}, headers)
    before = vendor.members("111")
    assert [job_status(url, headers, job)["status"] for _ in range(3)][-1] == "SUCCESS"
    assert vendor.members("111") == before


def test_partial_failure_keeps_the_good_operations_and_locates_the_bad_one(
        google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    headers = ads_headers(url)
    job = create_job(url, headers)
    path = job.split("/", 2)[2]
    body = {"operations": [remove_op(ADA), remove_op("not-a-sha256")], "enablePartialFailure": True}
    answer = ads(url, f"{path}:addOperations", body, headers)
    assert answer.status_code == 200
    partial = answer.json()["partialFailureError"]
    assert partial["code"] == 3
    (error,) = partial["details"][0]["errors"]
    assert error["errorCode"] == {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"}
    assert error["location"]["fieldPathElements"][0] == {"fieldName": "operations", "index": 1}
    (job_view,) = vendor.jobs()
    assert job_view["removes"] == [ADA]
    # Without partial failure, one bad operation refuses them all.
    other = create_job(url, headers, "222").split("/", 2)[2]
    whole = ads(url, f"{other}:addOperations", {"operations": [remove_op(ADA), remove_op("XYZ")]}, headers)
    (refused,) = failure(whole, 400, "INVALID_ARGUMENT")
    assert refused["errorCode"] == {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"}
    assert vendor.jobs()[1]["removes"] == []


def test_create_refuses_unknown_lists_unknown_fields_and_non_allowlisted_tokens(
        google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    headers = ads_headers(url)
    wrong = ads(url, "offlineUserDataJobs:create", {"job": {
        "type": "CUSTOMER_MATCH_USER_LIST",
        "customerMatchUserListMetadata": {"userList": f"customers/{CID}/userLists/333"}}}, headers)  # 2345678901's
    (invalid,) = failure(wrong, 400, "INVALID_ARGUMENT")
    assert invalid["errorCode"] == {"offlineUserDataJobError": "INVALID_USER_LIST_ID"}
    unknown = ads(url, "offlineUserDataJobs:create", {"job": {"type": "CUSTOMER_MATCH_USER_LIST"}, "userList": "x"},
                  headers)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"].startswith('Invalid JSON payload received. Unknown name "userList"')
    vendor.allowlisted = False
    denied = ads(url, "offlineUserDataJobs:create", {"job": {
        "type": "CUSTOMER_MATCH_USER_LIST",
        "customerMatchUserListMetadata": {"userList": f"customers/{CID}/userLists/111"}}}, headers)
    (policy,) = failure(denied, 403, "PERMISSION_DENIED")
    assert policy["errorCode"] == {"notAllowlistedError": "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"}
    assert "Data Manager API" in policy["message"]


def test_fail_next_job_ends_failed_with_a_reason_and_removes_nothing(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    headers = ads_headers(url)
    assert requests.post(f"{url}/__sandbox__/fail-next-job", json={"userList": "111", "reason": "UNKNOWN"},
                         timeout=5).status_code == 200
    job = create_job(url, headers)
    path = job.split("/", 2)[2]
    ads(url, f"{path}:addOperations", {"operations": [remove_op(ADA)]}, headers)
    ads(url, f"{path}:run", {}, headers)
    final = [job_status(url, headers, job) for _ in range(3)][-1]
    assert final == {"resourceName": job, "status": "FAILED", "failureReason": "UNKNOWN"}
    assert ADA in vendor.members("111")


def test_gaql_in_clause_page_size_and_unknown_fields(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, _ = google
    headers = ads_headers(url)
    jobs = [create_job(url, headers, lid) for lid in ("111", "222")]
    names = ", ".join(f"'{j}'" for j in jobs)
    query = ("SELECT offline_user_data_job.id, offline_user_data_job.status FROM offline_user_data_job "
             f"WHERE offline_user_data_job.resource_name IN ({names})")
    rows = ads(url, "googleAds:search", {"query": query}, headers).json()["results"]
    assert [r["offlineUserDataJob"]["resourceName"] for r in rows] == jobs
    assert all(set(r["offlineUserDataJob"]) == {"resourceName", "id", "status"} for r in rows)
    assert all(isinstance(r["offlineUserDataJob"]["id"], str) for r in rows)  # int64 as a JSON string
    (paged,) = failure(ads(url, "googleAds:search", {"query": query, "pageSize": 10}, headers), 400, "INVALID_ARGUMENT")
    assert paged["errorCode"] == {"requestError": "PAGE_SIZE_NOT_SUPPORTED"}
    bad = "SELECT offline_user_data_job.members FROM offline_user_data_job"
    (unknown,) = failure(ads(url, "googleAds:search", {"query": bad}, headers), 400, "INVALID_ARGUMENT")
    assert unknown["errorCode"] == {"queryError": "UNRECOGNIZED_FIELD"}
    none = ads(url, "googleAds:search", {"query": "SELECT offline_user_data_job.id FROM offline_user_data_job "
                                                  "WHERE offline_user_data_job.id = 1"}, headers).json()
    assert "results" not in none and none["fieldMask"] == "offlineUserDataJob.id"


def test_throttling_answers_resource_exhausted_with_a_retry_delay(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    headers = ads_headers(url)
    requests.post(f"{url}/__sandbox__/faults", json={"throttle_rate": 1.0, "burst": 1}, timeout=5)
    body = {"query": "SELECT user_list.id FROM user_list"}
    (temporary,) = failure(ads(url, "googleAds:search", body, headers), 429, "RESOURCE_EXHAUSTED")
    assert temporary["errorCode"] == {"quotaError": "RESOURCE_TEMPORARILY_EXHAUSTED"}
    assert temporary["details"]["quotaErrorDetails"]["retryDelay"] == "0.050s"
    assert ads(url, "googleAds:search", body, headers).status_code == 200
    vendor.exhaust_quota()
    daily_answer = ads(url, "googleAds:search", body, headers)
    assert "Retry-After" not in daily_answer.headers  # Google puts the wait in the body
    (daily,) = failure(daily_answer, 429, "RESOURCE_EXHAUSTED")
    assert daily["errorCode"] == {"quotaError": "RESOURCE_EXHAUSTED"}
    assert daily["details"]["quotaErrorDetails"]["rateScope"] == "DEVELOPER"
    assert int(daily["details"]["quotaErrorDetails"]["retryDelay"][:-1]) > 0


def _strict(message_class: Any, body: Any) -> Any:
    """Parse an answer with the google-ads library's own generated class, refusing any unknown field."""
    return message_class.from_json(json.dumps(body), ignore_unknown_fields=False)


def test_every_ads_answer_parses_with_the_google_ads_librarys_own_messages(
        google: tuple[str, GoogleAdsSandbox]) -> None:
    """What the sandbox answers is what Google's generated v26 classes accept, strictly (no unknown field,
    no enum value Google does not have): drift from the real API fails here, not in production."""
    services = pytest.importorskip("google.ads.googleads.v26.services.types.offline_user_data_job_service")
    from google.ads.googleads.v26.errors.types.errors import GoogleAdsFailure
    from google.ads.googleads.v26.services.types.google_ads_service import SearchGoogleAdsResponse
    from google.longrunning import operations_pb2
    from google.protobuf import json_format

    url, vendor = google
    headers = ads_headers(url)
    created = ads(url, "offlineUserDataJobs:create", {"job": {
        "type": "CUSTOMER_MATCH_USER_LIST",
        "customerMatchUserListMetadata": {"userList": f"customers/{CID}/userLists/111"}}}, headers)
    job = _strict(services.CreateOfflineUserDataJobResponse, created.json()).resource_name
    path = job.split("/", 2)[2]
    partial = ads(url, f"{path}:addOperations", {"operations": [remove_op(ADA), remove_op("not-a-sha256")],
                                                 "enablePartialFailure": True}, headers)
    parsed = _strict(services.AddOfflineUserDataJobOperationsResponse, partial.json())
    (detail,) = partial.json()["partialFailureError"]["details"]
    assert parsed.partial_failure_error.code == 3
    assert _strict(GoogleAdsFailure, {k: v for k, v in detail.items() if k != "@type"}).errors[0].error_code \
        .offline_user_data_job_error.name == "INVALID_SHA256_FORMAT"
    run = ads(url, f"{path}:run", {}, headers)
    json_format.Parse(json.dumps(run.json()), operations_pb2.Operation(), ignore_unknown_fields=False)
    query = ("SELECT offline_user_data_job.resource_name, offline_user_data_job.id, offline_user_data_job.status, "
             "offline_user_data_job.type, offline_user_data_job.failure_reason, "
             "offline_user_data_job.customer_match_user_list_metadata.user_list FROM offline_user_data_job")
    statuses = []
    for _ in range(3):
        answer = ads(url, "googleAds:search", {"query": query}, headers)
        assert answer.headers["request-id"]  # Google's request id travels as a header, not in the body
        (row,) = _strict(SearchGoogleAdsResponse, answer.json()).results
        statuses.append(row.offline_user_data_job.status.name)
    assert statuses == ["PENDING", "RUNNING", "SUCCESS"]
    lists = ads(url, "googleAds:search", {"query": "SELECT user_list.id, user_list.name, user_list.type, "
                                                   "user_list.membership_status FROM user_list"}, headers)
    assert {r.user_list.type_.name for r in _strict(SearchGoogleAdsResponse, lists.json()).results} == {"CRM_BASED"}
    vendor.fail_next_job("222", "UNKNOWN")
    failing = create_job(url, headers, "222").split("/", 2)[2]
    ads(url, f"{failing}:addOperations", {"operations": [remove_op(ADA)]}, headers)
    ads(url, f"{failing}:run", {}, headers)
    for _ in range(3):
        last = _strict(SearchGoogleAdsResponse, ads(url, "googleAds:search", {"query": query + (
            f" WHERE offline_user_data_job.resource_name = 'customers/{CID}/{failing}'")}, headers).json())
    assert last.results[0].offline_user_data_job.failure_reason.name == "UNKNOWN"
    # Every error the sandbox can answer carries a GoogleAdsFailure Google's enums know, among them a
    # second :run of a job (JOB_ALREADY_STARTED), an operation without identifiers and an unknown query field.
    refusals = [
        ads(url, f"{path}:run", {}, headers),
        ads(url, f"{path}:addOperations", {"operations": [remove_op(GRACE)]}, headers),
        ads(url, f"{create_job(url, headers).split('/', 2)[2]}:addOperations",
            {"operations": [{"remove": {"userIdentifiers": []}}]}, headers),
        ads(url, "googleAds:search", {"query": "SELECT offline_user_data_job.members FROM offline_user_data_job"},
            headers),
        ads(url, "googleAds:search", {"query": query, "pageSize": 5}, headers),
        ads(url, "offlineUserDataJobs:create", {"job": {"customerMatchUserListMetadata": {
            "userList": f"customers/{CID}/userLists/111"}}}, headers),
        ads(url, "offlineUserDataJobs:create", {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                                                        "customerMatchUserListMetadata": {"userList": "x"}}}, headers),
        ads(url, "googleAds:search", {"query": query}, ads_headers(url, **{"developer-token": None})),
        ads(url, "googleAds:search", {"query": query}, ads_headers(url, **{"login-customer-id": None})),
    ]
    codes = []
    for answer in refusals:
        assert answer.status_code >= 400, answer.text
        (detail,) = answer.json()["error"]["details"]
        for error in _strict(GoogleAdsFailure, {k: v for k, v in detail.items() if k != "@type"}).errors:
            which = type(error.error_code).pb(error.error_code).WhichOneof("error_code")
            codes.append(getattr(error.error_code, which).name)
    assert codes[:3] == ["JOB_ALREADY_STARTED", "JOB_ALREADY_STARTED", "MISSING_USER_IDENTIFIER"]


def test_token_answers_are_not_cacheable(google: tuple[str, GoogleAdsSandbox]) -> None:
    """RFC 6749 5.1 and 5.2: every token answer, granted or refused, says Cache-Control: no-store."""
    url, _ = google
    form = {"grant_type": "refresh_token", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
            "refresh_token": DEMO_REFRESH_TOKEN}
    for answer in (requests.post(f"{url}/token", data=form, timeout=5),
                   requests.post(f"{url}/token", data={**form, "refresh_token": "1//nope"}, timeout=5)):
        assert "no-store" in answer.headers["Cache-Control"] and answer.headers["Pragma"] == "no-cache"


def test_data_manager_answers_parse_with_the_datamanager_librarys_own_messages(
        google: tuple[str, GoogleAdsSandbox]) -> None:
    """The Data Manager answers (remove, request status, FAILED with its error counts) are what
    google-ads-datamanager's generated v1 classes accept, strictly."""
    datamanager = pytest.importorskip("google.ads.datamanager_v1")
    url, vendor = google
    bearer = {"Authorization": f"Bearer {access_token(url)}"}
    vendor.fail_next_job("222")
    for expected in ("FAILED", "SUCCESS"):
        answer = requests.post(f"{url}/v1/audienceMembers:remove", json=dm_body(), headers=bearer, timeout=5)
        request_id = _strict(datamanager.RemoveAudienceMembersResponse, answer.json()).request_id
        for _ in range(3):
            status = requests.get(f"{url}/v1/requestStatus:retrieve", params={"requestId": request_id},
                                  headers=bearer, timeout=5)
            parsed = _strict(datamanager.RetrieveRequestStatusResponse, status.json())
        (entry,) = parsed.request_status_per_destination
        assert entry.request_status.name == expected
        assert entry.destination.product_destination_id == "222"
        if expected == "SUCCESS":
            assert entry.audience_members_removal_status.user_data_removal_status.record_count == 1
        else:
            assert entry.error_info.error_counts[0].reason.name == "PROCESSING_ERROR_REASON_INTERNAL_ERROR"
    unknown = requests.get(f"{url}/v1/requestStatus:retrieve", params={"requestId": "nope"}, headers=bearer,
                           timeout=5)
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


def test_window_limit_throttles() -> None:
    vendor = GoogleAdsSandbox(requests_per_window=2, window_seconds=60)
    vendor.seed_demo()
    with SandboxServer(vendor) as server:
        headers = ads_headers(server.url)
        codes = [requests.post(f"{server.url}/{V}/customers/{CID}/googleAds:search", headers=headers, timeout=5,
                               json={"query": "SELECT user_list.id FROM user_list"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def dm_body(*, destination: dict[str, Any] | None = None, email: str = ADA, **extra: Any) -> dict[str, Any]:
    return {"destinations": [destination or {
                "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": CID},
                "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": DEMO_LOGIN_CUSTOMER_ID},
                "productDestinationId": "222"}],
            "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": email}]}}],
            "encoding": "HEX", "validateOnly": False, **extra}


def test_data_manager_remove(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    bearer = {"Authorization": f"Bearer {access_token(url)}"}  # no developer token, no login-customer-id
    answer = requests.post(f"{url}/v1/audienceMembers:remove", json=dm_body(), headers=bearer, timeout=5)
    assert answer.status_code == 200 and set(answer.json()) == {"requestId"}
    status_url = f"{url}/v1/requestStatus:retrieve?requestId={answer.json()['requestId']}"
    statuses = [requests.get(status_url, headers=bearer, timeout=5).json() for _ in range(3)]
    assert [s["requestStatusPerDestination"][0]["requestStatus"] for s in statuses] == [
        "PROCESSING", "PROCESSING", "SUCCESS"]  # the removal takes effect at SUCCESS
    assert statuses[-1]["requestStatusPerDestination"][0]["destination"] == dm_body()["destinations"][0]
    assert ADA not in vendor.members("222") and ADA in vendor.members("111")
    assert GRACE in vendor.members("222")
    assert vendor.removals() == [{"via": "data_manager", "userList": f"customers/{CID}/userLists/222", "hash": ADA}]
    # Section 4's 400, exactly.
    bad = requests.post(f"{url}/v1/audienceMembers:remove", json=dm_body(email="Ada@Example.com"), headers=bearer,
                        timeout=5)
    assert bad.status_code == 400
    assert bad.json() == {"error": {"code": 400, "message": "There was a problem with the request.",
                                    "status": "INVALID_ARGUMENT", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_ARGUMENT",
         "domain": "datamanager.googleapis.com"},
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [
            {"field": "audience_members.audience_members[0].user_data.user_identifiers",
             "description": "Email is not hex encoded.", "reason": "INVALID_HEX_ENCODING"}]}]}}
    no_login = dm_body(destination={"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": CID},
                                    "productDestinationId": "222"})
    denied = requests.post(f"{url}/v1/audienceMembers:remove", json=no_login, headers=bearer, timeout=5)
    assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"
    unauthenticated = requests.post(f"{url}/v1/audienceMembers:remove", json=dm_body(), timeout=5)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
    requests.post(f"{url}/__sandbox__/faults", json={"throttle_rate": 1.0, "burst": 1}, timeout=5)
    throttled = requests.post(f"{url}/v1/audienceMembers:remove", json=dm_body(), headers=bearer, timeout=5)
    assert throttled.status_code == 429
    retry = [d for d in throttled.json()["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.050s"}]


def test_data_manager_removes_from_several_destinations_each_with_its_own_status(
        google: tuple[str, GoogleAdsSandbox]) -> None:
    url, vendor = google
    bearer = {"Authorization": f"Bearer {access_token(url)}"}
    login = {"accountType": "GOOGLE_ADS", "accountId": DEMO_LOGIN_CUSTOMER_ID}
    destinations = [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": cid}, "loginAccount": login,
                     "productDestinationId": lid} for cid, lid in ((CID, "111"), (CID, "222"), ("2345678901", "333"))]
    vendor.fail_next_job("222")
    answer = requests.post(f"{url}/v1/audienceMembers:remove", json={**dm_body(), "destinations": destinations},
                           headers=bearer, timeout=5)
    status_url = f"{url}/v1/requestStatus:retrieve?requestId={answer.json()['requestId']}"
    final = [requests.get(status_url, headers=bearer, timeout=5).json() for _ in range(3)][-1]
    entries = final["requestStatusPerDestination"]
    assert [(e["destination"]["productDestinationId"], e["requestStatus"]) for e in entries] == [
        ("111", "SUCCESS"), ("222", "FAILED"), ("333", "SUCCESS")]
    assert ADA not in vendor.members("111") and ADA in vendor.members("222") and ADA not in vendor.members("333")
    too_many = requests.post(f"{url}/v1/audienceMembers:remove", json={**dm_body(), "destinations": destinations * 4},
                             headers=bearer, timeout=5)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["details"][1]["fieldViolations"][0]["field"] == "destinations"


def test_control_api_reads_members_and_jobs(google: tuple[str, GoogleAdsSandbox]) -> None:
    url, _ = google
    members = requests.get(f"{url}/__sandbox__/members/111", timeout=5).json()
    assert members["userList"] == f"customers/{CID}/userLists/111"
    assert ADA in members["members"] and GRACE in members["members"]
    assert requests.get(f"{url}/__sandbox__/jobs", timeout=5).json() == {"jobs": []}
    seeded = requests.post(f"{url}/__sandbox__/seed-demo", json={"seed": 7}, timeout=5).json()
    assert set(seeded["userLists"]) == {"111", "222", "333"}


# --- LinkedIn -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linkedin_server() -> Iterator[tuple[str, LinkedInSandbox]]:
    vendor = LinkedInSandbox(per_minute_limit=10_000)
    with SandboxServer(vendor) as server:
        yield server.url, vendor


@pytest.fixture
def linkedin(linkedin_server: tuple[str, LinkedInSandbox]) -> tuple[str, LinkedInSandbox]:
    url, vendor = linkedin_server
    requests.post(f"{url}/__sandbox__/reset", timeout=5)
    vendor.expired_tokens.clear()
    vendor.revoked_tokens.clear()
    vendor.daily_limit = None
    vendor.seed_demo()
    return linkedin_server


LI_HEADERS = {"Authorization": f"Bearer {li.DEMO_TOKEN}", "LinkedIn-Version": li.DEMO_VERSION,
              "X-Restli-Protocol-Version": "2.0.0", "X-RestLi-Method": "BATCH_CREATE"}


def users(url: str, segment: str, elements: list[Any], **headers: str | None) -> requests.Response:
    merged = {k: v for k, v in {**LI_HEADERS, **headers}.items() if v is not None}
    return requests.post(f"{url}/rest/dmpSegments/{segment}/users", json={"elements": elements}, headers=merged,
                         timeout=5)


def element(action: str, value: str, id_type: str = "SHA256_EMAIL") -> dict[str, Any]:
    return {"action": action, "userIds": [{"idType": id_type, "idValue": value}]}


def test_batch_remove_answers_per_element_and_is_idempotent(linkedin: tuple[str, LinkedInSandbox]) -> None:
    url, vendor = linkedin
    answer = users(url, "8001", [element("REMOVE", ADA)])
    assert answer.status_code == 200 and answer.json() == {"elements": [{"status": 201}]}
    assert answer.headers["X-RestLi-Protocol-Version"] == "2.0.0"
    members = vendor.members("8001")
    assert ADA not in members and GRACE in members and all(hash_email(d) in members for d in li.DECOY_EMAILS)
    assert ADA in vendor.members("8002")
    assert users(url, "8001", [element("REMOVE", ADA)]).json() == {"elements": [{"status": 201}]}  # by design
    mixed = users(url, "8002", [element("REMOVE", ADA), element("REMOVE", "not-hex"), element("ADD", "ab" * 32)])
    statuses = mixed.json()["elements"]
    assert [s["status"] for s in statuses] == [201, 400, 201]
    assert statuses[1]["error"]["status"] == 400 and statuses[1]["error"]["message"]
    assert ADA not in vendor.members("8002") and "ab" * 32 in vendor.members("8002")


def test_find_by_account_pages_the_segments_as_their_own_reads_show_them(
        linkedin: tuple[str, LinkedInSandbox]) -> None:
    url, vendor = linkedin
    headers = {k: v for k, v in LI_HEADERS.items() if k != "X-RestLi-Method"}

    def find(**params: str) -> requests.Response:
        return requests.get(f"{url}/rest/dmpSegments", params=params, headers=headers, timeout=5)

    first = find(q="account", account=li.DEMO_AD_ACCOUNT, count="2").json()
    assert first["paging"] == {"start": 0, "count": 2, "total": 3, "links": []}
    assert [e["id"] for e in first["elements"]] == [8001, 8002]
    rest = find(q="account", account=li.DEMO_AD_ACCOUNT, start="2", count="2").json()
    alone = requests.get(f"{url}/rest/dmpSegments/8003", headers=headers, timeout=5).json()
    assert rest["elements"] == [alone] and alone["account"] == li.DEMO_AD_ACCOUNT
    assert find(q="account", account="urn:li:sponsoredAccount:1").json()["elements"] == []
    assert find(q="account", account="8001").status_code == find(account=li.DEMO_AD_ACCOUNT).status_code == 400
    assert find(q="account", account=li.DEMO_AD_ACCOUNT, count="101").status_code == 400
    vendor.update_polls = 1
    try:
        users(url, "8001", [element("REMOVE", ADA)])
        statuses = [find(q="account", account=li.DEMO_AD_ACCOUNT).json()["elements"][0]["destinations"][0]["status"]
                    for _ in range(2)]
    finally:
        vendor.update_polls = 0
    assert statuses == ["UPDATING", "READY"] and ADA not in vendor.members("8001")


def test_versioned_headers_are_required(linkedin: tuple[str, LinkedInSandbox]) -> None:
    url, _ = linkedin
    missing = users(url, "8001", [element("REMOVE", ADA)], **{"LinkedIn-Version": None})
    assert missing.status_code == 400 and missing.headers["X-Restli-Gateway-Error"] == "true"
    assert missing.json() == {"status": 400, "code": "VERSION_MISSING", "message": "A version must be present. "
                              "Please specify a version by adding the LinkedIn-Version header."}
    sunset = users(url, "8001", [element("REMOVE", ADA)], **{"LinkedIn-Version": "202401"})
    assert sunset.status_code == 426
    assert sunset.json() == {"status": 426, "code": "NONEXISTENT_VERSION",
                             "message": "Requested version 20240101 is not active"}
    assert users(url, "8001", [element("REMOVE", ADA)], **{"X-Restli-Protocol-Version": None}).status_code == 400
    assert users(url, "8001", [element("REMOVE", ADA)], **{"X-RestLi-Method": None}).status_code == 400
    assert users(url, "8001", [element("REMOVE", ADA)], **{"LinkedIn-Version": li.LATEST_VERSION}).status_code == 200


def test_token_errors_have_linkedins_shapes(linkedin: tuple[str, LinkedInSandbox]) -> None:
    url, vendor = linkedin
    empty = users(url, "8001", [element("REMOVE", ADA)], Authorization=None)
    assert empty.status_code == 401
    assert empty.json() == {"message": "Empty oauth2_access_token", "serviceErrorCode": 401, "status": 401}
    invalid = users(url, "8001", [element("REMOVE", ADA)], Authorization="Bearer forged")
    assert invalid.json() == {"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN",
                              "message": "Invalid access token"}
    vendor.expired_tokens.add(li.DEMO_TOKEN)
    expired = users(url, "8001", [element("REMOVE", ADA)])
    assert expired.status_code == 401 and expired.json()["code"] == "EXPIRED_ACCESS_TOKEN"


def test_throttling_bodies_and_other_errors(linkedin: tuple[str, LinkedInSandbox]) -> None:
    url, vendor = linkedin
    requests.post(f"{url}/__sandbox__/faults", json={"throttle_rate": 1.0, "burst": 1}, timeout=5)
    minute = users(url, "8001", [element("REMOVE", ADA)])
    assert minute.status_code == 429 and "Retry-After" not in minute.headers
    assert minute.json() == {"status": 429, "serviceErrorCode": 101, "code": "TOO_MANY_REQUESTS", "message":
                             "Resource level throttle MEMBER MINUTE limit for calls to this resource is reached."}
    vendor.exhaust_daily()
    day = users(url, "8001", [element("REMOVE", ADA)])
    assert day.status_code == 429 and "APPLICATION DAY" in day.json()["message"]
    vendor.daily_limit = None
    assert users(url, "9999", [element("REMOVE", ADA)]).status_code == 404
    assert users(url, "8001", [element("REMOVE", ADA)] * (li.MAX_ELEMENTS + 1)).status_code == 400
    assert requests.post(f"{url}/__sandbox__/fail-next-element", json={"segment": "8003", "status": 500},
                         timeout=5).status_code == 200
    failed = users(url, "8003", [element("REMOVE", ADA), element("REMOVE", GRACE)]).json()["elements"]
    assert [e["status"] for e in failed] == [500, 201]
    assert ADA in vendor.members("8003") and GRACE not in vendor.members("8003")


def test_per_minute_window() -> None:
    vendor = LinkedInSandbox(per_minute_limit=2, window_seconds=60)
    with SandboxServer(vendor) as server:
        codes = [users(server.url, "8001", [element("REMOVE", ADA)]).status_code for _ in range(3)]
        members = requests.get(f"{server.url}/__sandbox__/members/8001", timeout=5).json()
    assert codes == [200, 200, 429]
    assert members == {"segment": "urn:li:dmpSegment:8001", "members": []}


def test_sandboxes_start_fast() -> None:
    started = time.monotonic()
    with SandboxServer(GoogleAdsSandbox(seed_demo_data=True)), SandboxServer(LinkedInSandbox(seed_demo_data=True)):
        pass
    assert time.monotonic() - started < 2
