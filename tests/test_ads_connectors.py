"""The ad-platform connectors (Google Ads Customer Match, LinkedIn Matched Audiences) over real HTTP.

No mocking: each connector talks plain `requests` to its sandbox on loopback; faults come from the kit;
what reached the vendor is checked through the sandbox's own control API (list members, jobs, removals).
Audiences are write-only: erasure is "removal requested / confirmed by job status", never verified absent.
"""

from __future__ import annotations

import hashlib
import re
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from connectors import google_ads as gads_connector
from connectors import linkedin as li_connector
from connectors.base import (
    ConnectorConfigError,
    ConnectorError,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    RecordRef,
    Subject,
)
from connectors.google_ads import GoogleAdsConnector, customer_match_hash, data_manager_hash
from connectors.linkedin import LinkedInConnector, sha256_email
from connectors.pacing import forget_limiters
from sandbox import google_ads as gsb
from sandbox import linkedin as lsb
from sandbox.kit import SandboxServer

ADA, GRACE = gsb.ERASURE_SUBJECT, gsb.ACCESS_SUBJECT
ADA_HASH, GRACE_HASH = gsb.hash_email(ADA), gsb.hash_email(GRACE)
DECOY_HASHES = [gsb.hash_email(d) for d in gsb.DECOY_EMAILS]
LISTS = ("111", "222", "333")
SEGMENTS = ("8001", "8002", "8003")
G_ENV = {"DSR_GADS_URL": None, "DSR_GADS_TOKEN_URL": None, "DSR_GADS_CLIENT_ID": gsb.DEMO_CLIENT_ID,
         "DSR_GADS_CLIENT_SECRET": gsb.DEMO_CLIENT_SECRET, "DSR_GADS_REFRESH_TOKEN": gsb.DEMO_REFRESH_TOKEN,
         "DSR_GADS_DEVELOPER_TOKEN": gsb.DEMO_DEVELOPER_TOKEN}


def subject(email: str) -> Subject:
    return Subject(email=email.strip().lower(), identity_hash="h:" + hashlib.sha256(email.encode()).hexdigest()[:12])


def delete_all(refs: list[RecordRef]) -> list[ErasureDecision]:
    return [ErasureDecision(ref, ErasureAction.DELETE) for ref in refs]


def faults(url: str, **config: Any) -> None:
    assert requests.post(f"{url}/__sandbox__/faults", json=config, timeout=5).status_code == 200


def assert_no_identity(text_or_error: BaseException | str, *emails: str) -> None:
    """Neither an address nor any hash of it appears, and nothing is chained to an error."""
    if isinstance(text_or_error, BaseException):
        rendered = "".join(traceback.format_exception(text_or_error)) + repr(text_or_error.args)
        assert text_or_error.__cause__ is None and text_or_error.__context__ is None
    else:
        rendered = text_or_error
    for email in emails:
        for form in (email, email.lower(), customer_match_hash(email), data_manager_hash(email),
                     hashlib.sha256(email.encode()).hexdigest()):
            assert form not in rendered


# --- Google Ads -----------------------------------------------------------------------------------------------


def g_settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mode": "offline_user_data_job",
        "base_url_env": "DSR_GADS_URL",
        "api_version": "v26",
        "developer_token_env": "DSR_GADS_DEVELOPER_TOKEN",
        "login_customer_id": gsb.DEMO_LOGIN_CUSTOMER_ID,
        "oauth": {"token_url_env": "DSR_GADS_TOKEN_URL", "client_id_env": "DSR_GADS_CLIENT_ID",
                  "client_secret_env": "DSR_GADS_CLIENT_SECRET", "refresh_token_env": "DSR_GADS_REFRESH_TOKEN"},
        "customers": [{"customer_id": "1234567890", "user_lists": ["111", "222"]},
                      {"customer_id": "2345678901", "user_lists": ["333"]}],
        "poll_seconds": 0.01,
        "poll_timeout_seconds": 2,
        "rate_limit": {"calls": 10_000, "period_seconds": 1},
        "retry_max_wait": 0.5,
        "timeout_seconds": 5,
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def g_shared() -> Iterator[tuple[SandboxServer, gsb.GoogleAdsSandbox]]:
    vendor = gsb.GoogleAdsSandbox(requests_per_window=10_000, throttle_retry_delay=0.05)
    with SandboxServer(vendor) as server:
        yield server, vendor


@pytest.fixture
def gads(g_shared: tuple[SandboxServer, gsb.GoogleAdsSandbox], monkeypatch: pytest.MonkeyPatch) -> gsb.GoogleAdsSandbox:
    server, vendor = g_shared
    forget_limiters()  # and the process's access tokens: each test starts without one
    requests.post(f"{server.url}/__sandbox__/reset", timeout=5)
    vendor.allowlisted, vendor.daily_requests, vendor.job_polls = True, None, 2
    vendor.refresh_tokens = {gsb.DEMO_REFRESH_TOKEN}
    vendor.seed_demo()
    env = {**G_ENV, "DSR_GADS_URL": server.url, "DSR_GADS_TOKEN_URL": f"{server.url}/token"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return vendor


@pytest.fixture
def gconn(gads: gsb.GoogleAdsSandbox) -> Iterator[GoogleAdsConnector]:
    with gads_connector.create("google_ads", g_settings()) as built:
        yield built


def g_url(g_shared: tuple[SandboxServer, gsb.GoogleAdsSandbox]) -> str:
    return g_shared[0].url


def test_google_declares_a_write_only_audience_and_discovers_one_ref_per_list(
        gconn: GoogleAdsConnector, gads: gsb.GoogleAdsSandbox) -> None:
    info = gconn.info
    assert (info.kind, info.version, info.write_only, tuple(info.objects)) == ("google_ads", "google_ads/1", True,
                                                                                ("user_list",))
    refs = gconn.discover(subject(ADA))
    assert [r.id for r in refs] == ["customers/1234567890/userLists/111", "customers/1234567890/userLists/222",
                                    "customers/2345678901/userLists/333"]
    assert {r.object for r in refs} == {"user_list"} and {r.categories for r in refs} == {(DataCategory.MARKETING,)}
    records = list(gconn.export(refs))
    assert [r.ref for r in records] == refs
    assert "not readable" in records[0].fields["membership"]
    assert_no_identity(repr(records), ADA)
    assert gconn.verify_erased(subject(ADA)) == []
    assert gads.stats.get("calls", 0) == 0  # discovery, export and verification make no call


def test_google_job_removes_exactly_the_right_hash_from_every_list(
        gconn: GoogleAdsConnector, gads: gsb.GoogleAdsSandbox, g_shared: Any) -> None:
    refs = gconn.discover(subject(" Ada.Lovelace@Example.com "))
    receipt = gconn.erase(delete_all(refs))
    assert [(o.done, o.already_gone, o.error) for o in receipt.outcomes] == [(True, False, None)] * 3
    jobs = gads.jobs()
    assert [j["status"] for j in jobs] == ["SUCCESS"] * 3 and all(j["polls"] == 3 for j in jobs)
    assert [j["removes"] for j in jobs] == [[ADA_HASH]] * 3
    assert receipt.vendor_receipt_id == "google_ads:" + " ".join(f"{j['resourceName']}=SUCCESS" for j in jobs)
    for list_id in LISTS:
        members = requests.get(f"{g_url(g_shared)}/__sandbox__/members/{list_id}", timeout=5).json()["members"]
        assert ADA_HASH not in members and GRACE_HASH in members
        assert all(d in members for d in DECOY_HASHES)
    # Three jobs: create, addOperations, run each; one token; polls are one query per customer per round.
    assert gconn.stats["token_refreshes"] == 1 and gconn.stats["polls"] == 6
    assert receipt.api_calls == 1 + 9 + 6


def test_google_access_token_is_kept_for_the_next_connector_of_the_process(gads: gsb.GoogleAdsSandbox) -> None:
    """A connector is built per request: the second request must not exchange the refresh token again,
    and one whose token Google refused fetches a fresh one for every later connector."""
    calls_before = gads.stats.get("calls", 0)
    receipts = []
    for _ in range(2):
        with gads_connector.create("google_ads", g_settings()) as conn:
            receipts.append(conn.erase(delete_all(conn.discover(subject(ADA)))))
            refreshes = conn.stats.get("token_refreshes", 0)
    assert [r.api_calls for r in receipts] == [1 + 9 + 6, 9 + 6] and refreshes == 0
    assert [[(o.done, o.error) for o in r.outcomes] for r in receipts] == [[(True, None)] * 3] * 2
    assert gads.stats.get("calls", 0) - calls_before == 1 + 2 * (9 + 6)
    gads.expire_tokens()  # the kept token now answers 401: the next connector refreshes it once
    for expected in (1, 0):
        with gads_connector.create("google_ads", g_settings()) as conn:
            assert all(o.done for o in conn.erase(delete_all(conn.discover(subject(ADA)))).outcomes)
            assert conn.stats.get("token_refreshes", 0) == expected


def test_google_polls_until_the_job_finishes_and_reports_a_timeout(
        gconn: GoogleAdsConnector, gads: gsb.GoogleAdsSandbox) -> None:
    gads.job_polls = 1_000
    with gads_connector.create("google_ads", g_settings(poll_timeout_seconds=0.1)) as slow:
        refs = slow.discover(subject(ADA))
        receipt = slow.erase(delete_all(refs[:1]))
    (outcome,) = receipt.outcomes
    assert not outcome.done and "not confirmed" in (outcome.error or "")
    assert "RUNNING" in (outcome.error or "") and "poll_timeout_seconds" in (outcome.error or "")
    assert receipt.vendor_receipt_id is not None and receipt.vendor_receipt_id.endswith("=RUNNING")
    assert ADA_HASH in gads.members("111")  # not applied yet


def test_google_failed_job_fails_only_its_list(gconn: GoogleAdsConnector, gads: gsb.GoogleAdsSandbox) -> None:
    gads.fail_next_job("222", "UNKNOWN")
    receipt = gconn.erase(delete_all(gconn.discover(subject(ADA))))
    assert [o.done for o in receipt.outcomes] == [True, False, True]
    assert "FAILED (UNKNOWN)" in (receipt.outcomes[1].error or "")
    assert "=FAILED" in (receipt.vendor_receipt_id or "")
    assert ADA_HASH not in gads.members("111") and ADA_HASH in gads.members("222")
    assert_no_identity(repr(receipt), ADA)


def test_google_rerun_is_idempotent_and_retain_makes_no_call(gconn: GoogleAdsConnector,
                                                             gads: gsb.GoogleAdsSandbox) -> None:
    refs = gconn.discover(subject(ADA))
    assert all(o.done for o in gconn.erase(delete_all(refs)).outcomes)
    again = gconn.erase(delete_all(refs))  # removing an absent member is success
    assert [(o.done, o.already_gone) for o in again.outcomes] == [(True, False)] * 3
    calls = gads.stats["calls"]
    kept = gconn.erase([ErasureDecision(refs[0], ErasureAction.RETAIN, basis="legal claim")])
    assert kept.outcomes[0].done and kept.outcomes[0].basis == "legal claim" and kept.api_calls == 0
    assert gads.stats["calls"] == calls


def test_google_only_configured_lists_and_foreign_refs_are_refused(gads: gsb.GoogleAdsSandbox) -> None:
    settings = g_settings(customers=[{"customer_id": "1234567890", "user_lists": ["222"]}])
    with gads_connector.create("google_ads", settings) as conn:
        refs = conn.discover(subject(ADA))
        foreign = RecordRef("google_ads", "user_list", "customers/1234567890/userLists/111", (DataCategory.MARKETING,))
        other = RecordRef("linkedin", "dmp_segment", "8001", (DataCategory.MARKETING,))
        receipt = conn.erase(delete_all([*refs, foreign, other]))
    assert [o.done for o in receipt.outcomes] == [True, False, False]
    assert "not configured" in (receipt.outcomes[1].error or "")
    assert ADA_HASH not in gads.members("222")
    assert ADA_HASH in gads.members("111") and ADA_HASH in gads.members("333")


def test_google_erase_needs_the_subject(gads: gsb.GoogleAdsSandbox) -> None:
    ref = RecordRef("google_ads", "user_list", "customers/1234567890/userLists/111", (DataCategory.MARKETING,))
    with gads_connector.create("google_ads", g_settings()) as conn:
        with pytest.raises(ConnectorError, match="erase needs the subject"):
            conn.erase(delete_all([ref]))
        receipt = conn.erase(delete_all([ref]), subject=subject(GRACE))  # a resumed run passes it
    assert receipt.outcomes[0].done
    assert GRACE_HASH not in gads.members("111") and ADA_HASH in gads.members("111")


def test_google_data_manager_mode(gads: gsb.GoogleAdsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSR_GADS_DEVELOPER_TOKEN")  # the Data Manager API needs none
    settings = g_settings(mode="data_manager")
    del settings["api_version"], settings["developer_token_env"]
    with gads_connector.create("google_ads", settings) as conn:
        refs = conn.discover(subject(GRACE))
        receipt = conn.erase(delete_all(refs))
    assert all(o.done for o in receipt.outcomes)
    # One removal request for the three lists of both customers, its status read until final (3 reads).
    assert receipt.api_calls == 1 + 1 + 3
    assert receipt.vendor_receipt_id is not None and receipt.vendor_receipt_id.startswith("google_datamanager:")
    request_ids = re.findall(r"=([^:]+):", receipt.vendor_receipt_id)
    assert len(request_ids) == 3 and len(set(request_ids)) == 1
    assert gads.jobs() == []
    assert [r["hash"] for r in gads.removals()] == [GRACE_HASH] * 3
    assert [r["via"] for r in gads.removals()] == ["data_manager"] * 3
    for list_id in LISTS:
        assert GRACE_HASH not in gads.members(list_id) and ADA_HASH in gads.members(list_id)


def test_google_data_manager_removal_is_done_only_when_its_request_status_reads_success(
        gads: gsb.GoogleAdsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSR_GADS_DEVELOPER_TOKEN")
    settings = g_settings(mode="data_manager")
    del settings["api_version"], settings["developer_token_env"]
    gads.fail_next_job("222")
    with gads_connector.create("google_ads", settings) as conn:
        assert conn.confirms_removal
        receipt = conn.erase(delete_all(conn.discover(subject(GRACE))))
        assert conn.stats["polls"] == 3  # PROCESSING twice, then each list's final status, in one request
    by_list = {o.ref.id.rsplit("/", 1)[1]: o for o in receipt.outcomes}
    assert by_list["111"].done and by_list["333"].done
    assert not by_list["222"].done and "FAILED" in (by_list["222"].error or "")
    assert GRACE_HASH in gads.members("222") and GRACE_HASH not in gads.members("111")
    assert ":SUCCESS" in (receipt.vendor_receipt_id or "") and ":FAILED" in (receipt.vendor_receipt_id or "")
    assert_no_identity(by_list["222"].error or "", GRACE)


def test_google_data_manager_request_refused_for_one_list_is_asked_again_list_by_list(
        gads: gsb.GoogleAdsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Google refuses a whole request for one bad destination: the others are still removed, and the bad
    list's outcome is its own refusal, as when each list had its own request."""
    monkeypatch.delenv("DSR_GADS_DEVELOPER_TOKEN")
    customers = [{"customer_id": "1234567890", "user_lists": ["111", "999"]},
                 {"customer_id": "2345678901", "user_lists": ["333"]}]
    settings = g_settings(mode="data_manager", customers=customers)
    del settings["api_version"], settings["developer_token_env"]
    with gads_connector.create("google_ads", settings) as conn:
        receipt = conn.erase(delete_all(conn.discover(subject(GRACE))))
    by_list = {o.ref.id.rsplit("/", 1)[1]: o for o in receipt.outcomes}
    assert by_list["111"].done and by_list["333"].done and not by_list["999"].done
    assert "400" in (by_list["999"].error or "") and "INVALID_PRODUCT_DESTINATION_ID" in (by_list["999"].error or "")
    assert GRACE_HASH not in gads.members("111") and GRACE_HASH not in gads.members("333")
    assert receipt.api_calls == 1 + 1 + 3 + 2 * 3  # token, refused batch, one per list, two requests polled
    assert_no_identity(by_list["999"].error or "", GRACE)


def test_google_429_is_retried_after_the_retry_delay(gconn: GoogleAdsConnector, gads: gsb.GoogleAdsSandbox,
                                                     g_shared: Any) -> None:
    faults(g_url(g_shared), throttle_rate=1.0, burst=3, path_pattern=":create$")
    started = time.monotonic()
    receipt = gconn.erase(delete_all(gconn.discover(subject(ADA))))
    assert all(o.done for o in receipt.outcomes)
    assert time.monotonic() - started >= 3 * 0.05
    assert gconn.stats["throttled"] == 3 and gconn.stats["retries"] == 3
    assert ADA_HASH not in gads.members("111")


def test_google_server_errors_resets_and_expired_tokens_are_survived(
        gconn: GoogleAdsConnector, gads: gsb.GoogleAdsSandbox, g_shared: Any) -> None:
    refs = gconn.discover(subject(ADA))
    faults(g_url(g_shared), error_rate=1.0, burst=2, path_pattern=":addOperations$")
    assert gconn.erase(delete_all(refs[:1])).outcomes[0].done
    faults(g_url(g_shared), reset_rate=1.0, burst=2, path_pattern=":run$")
    assert gconn.erase(delete_all(refs[1:2])).outcomes[0].done
    faults(g_url(g_shared))
    gads.expire_tokens()  # the cached access token now answers 401: refreshed once, then fine
    assert gconn.erase(delete_all(refs[2:])).outcomes[0].done
    assert gconn.stats["token_refreshes"] == 2
    assert gconn.stats["server_errors"] == 2 and gconn.stats["network_errors"] == 2
    assert all(ADA_HASH not in gads.members(list_id) for list_id in LISTS)


def test_google_refused_credentials_are_clear_errors_without_identity(gads: gsb.GoogleAdsSandbox,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    gads.revoke_refresh_token()
    with gads_connector.create("google_ads", g_settings()) as conn:
        with pytest.raises(ConnectorError) as revoked:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert "invalid_grant" in str(revoked.value) and "DSR_GADS_REFRESH_TOKEN" in str(revoked.value)
    assert gsb.DEMO_REFRESH_TOKEN not in str(revoked.value)
    assert_no_identity(revoked.value, ADA)
    gads.refresh_tokens.add(gsb.DEMO_REFRESH_TOKEN)

    monkeypatch.setenv("DSR_GADS_CLIENT_SECRET", "wrong-secret")
    with gads_connector.create("google_ads", g_settings()) as conn:
        with pytest.raises(ConnectorError, match="invalid_client.*DSR_GADS_CLIENT_ID") as client:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert "wrong-secret" not in str(client.value)
    monkeypatch.setenv("DSR_GADS_CLIENT_SECRET", gsb.DEMO_CLIENT_SECRET)

    monkeypatch.setenv("DSR_GADS_DEVELOPER_TOKEN", "not-a-developer-token")
    with gads_connector.create("google_ads", g_settings()) as conn:
        with pytest.raises(ConnectorError, match="developer token.*DSR_GADS_DEVELOPER_TOKEN") as developer:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert "not-a-developer-token" not in str(developer.value)
    assert_no_identity(developer.value, ADA)
    assert all(ADA_HASH in gads.members(list_id) for list_id in LISTS)


def test_google_policy_refusal_quota_and_permissions(gads: gsb.GoogleAdsSandbox) -> None:
    gads.allowlisted = False
    with gads_connector.create("google_ads", g_settings()) as conn:
        with pytest.raises(ConnectorError, match="mode to data_manager") as policy:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in str(policy.value)
    assert_no_identity(policy.value, ADA)
    gads.allowlisted = True

    with gads_connector.create("google_ads", g_settings(login_customer_id=None)) as conn:
        receipt = conn.erase(delete_all(conn.discover(subject(ADA))))
    assert not any(o.done for o in receipt.outcomes)
    assert all("USER_PERMISSION_DENIED" in (o.error or "") and "login_customer_id" in (o.error or "")
               for o in receipt.outcomes)

    gads.exhaust_quota()
    started = time.monotonic()
    with gads_connector.create("google_ads", g_settings()) as conn:
        with pytest.raises(ConnectorError, match="quota is used up") as quota:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert time.monotonic() - started < 2 and conn.stats.get("retries", 0) == 0  # hours away: not retried
    assert_no_identity(quota.value, ADA)


def test_no_identity_in_any_google_error_or_outcome(gads: gsb.GoogleAdsSandbox, g_shared: Any) -> None:
    with gads_connector.create("google_ads", g_settings(retry_attempts=2, retry_max_wait=0.01)) as conn:
        refs = conn.discover(subject(ADA))
        faults(g_url(g_shared), error_rate=1.0, path_pattern=":create$")
        down = conn.erase(delete_all(refs))
        assert not any(o.done for o in down.outcomes)
        assert_no_identity(repr(down), ADA)
        faults(g_url(g_shared), reset_rate=1.0, path_pattern="googleAds:search$")
        lost = conn.erase(delete_all(refs))
        assert all("could not be read" in (o.error or "") for o in lost.outcomes)
        assert_no_identity(repr(lost), ADA)
        faults(g_url(g_shared), reset_rate=1.0, path_pattern="^/token$")
        gads.expire_tokens()
        with pytest.raises(ConnectorError) as unreachable:
            conn.erase(delete_all(refs))
        assert_no_identity(unreachable.value, ADA)


@pytest.mark.parametrize("email, expected", [
    ("ada.lovelace@example.com", "ada.lovelace@example.com"),
    ("  Ada.Lovelace@Example.COM\t\n", "ada.lovelace@example.com"),
    ("John.Doe@Gmail.com", "john.doe@gmail.com"),  # gmail dots kept: Google does not require removing them
    ("ada+ads@googlemail.com", "ada+ads@googlemail.com"),  # plus-suffix kept
    ("ÉLODIE@Exemple.fr", "élodie@exemple.fr"),  # lower-case beyond ASCII, hashed as UTF-8
])
def test_customer_match_and_linkedin_hashing(email: str, expected: str) -> None:
    digest = hashlib.sha256(expected.encode("utf-8")).hexdigest()
    assert customer_match_hash(email) == digest == sha256_email(email)
    assert len(digest) == 64 and digest == digest.lower()


def test_hashing_edge_cases() -> None:
    assert customer_match_hash("John.Doe@gmail.com") != customer_match_hash("johndoe@gmail.com")
    # Data Manager removes whitespace inside the address too; Customer Match only trims.
    assert data_manager_hash(" ada .lovelace@example.com ") == hashlib.sha256(b"ada.lovelace@example.com").hexdigest()
    assert customer_match_hash(" ada .lovelace@example.com ") == hashlib.sha256(b"ada .lovelace@example.com").hexdigest()
    for fn in (customer_match_hash, data_manager_hash, sha256_email):
        with pytest.raises(ValueError):
            fn("   ")


def test_empty_identity_is_refused(gconn: GoogleAdsConnector) -> None:
    with pytest.raises(ConnectorError, match="empty identity"):
        gconn.discover(Subject(email="  ", identity_hash="h"))


@pytest.mark.parametrize("change, path", [
    ({"developer_token": "SBXsecret"}, "systems.google_ads.settings.developer_token"),
    ({"oauth": {**g_settings()["oauth"], "refresh_token": "1//secret"}}, "systems.google_ads.settings.oauth.refresh_token"),
    ({"login_customer_id": "987-654-3210"}, "systems.google_ads.settings.login_customer_id"),
    ({"api_version": "v19"}, "systems.google_ads.settings.api_version"),
    ({"api_version": None}, "systems.google_ads.settings.api_version"),
    ({"developer_token_env": None}, "systems.google_ads.settings.developer_token_env"),
    ({"customers": []}, "systems.google_ads.settings.customers"),
    ({"customers": [{"customer_id": "1234567890", "user_lists": ["111", "111"]}]},
     "systems.google_ads.settings.customers.0.user_lists"),
    ({"customers": [{"customer_id": "123-456-7890", "user_lists": ["111"]}]},
     "systems.google_ads.settings.customers.0.customer_id"),
    ({"mode": "gRPC"}, "systems.google_ads.settings.mode"),
    ({"poll_seconds": 0}, "systems.google_ads.settings.poll_seconds"),
    ({"base_url": "http://x.example"}, "systems.google_ads.settings.base_url_env"),
    ({"rate_limit": {"calls": 0, "period_seconds": 1}}, "systems.google_ads.settings.rate_limit.calls"),
    ({"categories": ["adverts"]}, "systems.google_ads.settings.categories.0"),
    ({"unknown_field": 1}, "systems.google_ads.settings.unknown_field"),
])
def test_google_config_errors_name_the_field_and_never_echo_values(
        gads: gsb.GoogleAdsSandbox, change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        gads_connector.create("google_ads", g_settings(**change))
    message = str(caught.value)
    assert path in message
    assert "SBXsecret" not in message and "1//secret" not in message


def test_google_missing_environment_variables_are_named(gads: gsb.GoogleAdsSandbox,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSR_GADS_REFRESH_TOKEN")
    with pytest.raises(ConnectorConfigError, match="settings.oauth.refresh_token_env: environment variable "
                                                   "DSR_GADS_REFRESH_TOKEN"):
        gads_connector.create("google_ads", g_settings())
    monkeypatch.setenv("DSR_GADS_REFRESH_TOKEN", gsb.DEMO_REFRESH_TOKEN)
    monkeypatch.setenv("DSR_GADS_URL", "not a url")
    with pytest.raises(ConnectorConfigError, match="settings.base_url_env"):
        gads_connector.create("google_ads", g_settings())


# --- LinkedIn -------------------------------------------------------------------------------------------------


def l_settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "base_url_env": "DSR_LINKEDIN_URL",
        "version": lsb.DEMO_VERSION,
        "token_env": "DSR_LINKEDIN_TOKEN",
        "segments": [f"urn:li:dmpSegment:{s}" for s in SEGMENTS],
        "rate_limit": {"calls": 10_000, "period_seconds": 1},
        "retry_max_wait": 0.05,
        "timeout_seconds": 5,
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def l_shared() -> Iterator[tuple[SandboxServer, lsb.LinkedInSandbox]]:
    vendor = lsb.LinkedInSandbox(per_minute_limit=10_000)
    with SandboxServer(vendor) as server:
        yield server, vendor


@pytest.fixture
def linkedin(l_shared: tuple[SandboxServer, lsb.LinkedInSandbox],
             monkeypatch: pytest.MonkeyPatch) -> lsb.LinkedInSandbox:
    server, vendor = l_shared
    forget_limiters()  # and the segments' accounts the process learnt
    requests.post(f"{server.url}/__sandbox__/reset", timeout=5)
    vendor.update_polls = 0
    vendor.expired_tokens.clear()
    vendor.revoked_tokens.clear()
    vendor.daily_limit = None
    vendor.seed_demo()
    monkeypatch.setenv("DSR_LINKEDIN_URL", server.url)
    monkeypatch.setenv("DSR_LINKEDIN_TOKEN", lsb.DEMO_TOKEN)
    return vendor


@pytest.fixture
def lconn(linkedin: lsb.LinkedInSandbox) -> Iterator[LinkedInConnector]:
    with li_connector.create("linkedin", l_settings()) as built:
        yield built


def test_linkedin_removes_exactly_the_right_hash_from_every_segment(
        lconn: LinkedInConnector, linkedin: lsb.LinkedInSandbox, l_shared: Any) -> None:
    info = lconn.info
    assert (info.kind, info.write_only, tuple(info.objects)) == ("linkedin", True, ("dmp_segment",))
    refs = lconn.discover(subject("  ADA.Lovelace@example.com"))
    assert [r.id for r in refs] == list(SEGMENTS) and linkedin.stats.get("calls", 0) == 0
    receipt = lconn.erase(delete_all(refs))
    assert [(o.done, o.already_gone, o.error) for o in receipt.outcomes] == [(True, False, None)] * 3
    assert receipt.api_calls == 6  # one removal and one status read per segment
    assert linkedin.removals() == [{"segment": f"urn:li:dmpSegment:{s}", "idType": "SHA256_EMAIL",
                                    "idValue": ADA_HASH} for s in SEGMENTS]
    for segment in SEGMENTS:
        members = requests.get(f"{l_shared[0].url}/__sandbox__/members/{segment}", timeout=5).json()["members"]
        assert ADA_HASH not in members and GRACE_HASH in members and all(d in members for d in DECOY_HASHES)
    again = lconn.erase(delete_all(refs))  # removing an absent member: 201 by design
    assert all(o.done and not o.already_gone for o in again.outcomes)
    records = list(lconn.export(refs))
    assert records[0].fields["audience"] == "urn:li:dmpSegment:8001"
    assert_no_identity(repr(records), ADA)
    assert lconn.verify_erased(subject(ADA)) == []


def test_linkedin_reads_the_statuses_through_one_finder_call_once_the_accounts_are_known(
        linkedin: lsb.LinkedInSandbox, l_shared: Any) -> None:
    """The first request reads each segment (learning its ad account); the next ones read all three in one
    "Find DMP Segments by Account" per round, with the same outcomes, FAILED and unreadable ones included."""
    receipts = []
    for _ in range(2):
        with li_connector.create("linkedin", l_settings()) as conn:
            receipts.append(conn.erase(delete_all(conn.discover(subject(ADA)))))
    assert [r.api_calls for r in receipts] == [3 + 3, 3 + 1]
    assert [[(o.done, o.error) for o in r.outcomes] for r in receipts] == [[(True, None)] * 3] * 2
    assert all(ADA_HASH not in linkedin.members(segment) for segment in SEGMENTS)

    linkedin.update_polls = 2  # UPDATING for two reads, then READY; 8002's update ends FAILED
    linkedin.fail_next_update("8002")
    with li_connector.create("linkedin", l_settings(poll_seconds=0.01)) as conn:
        receipt = conn.erase(delete_all(conn.discover(subject(GRACE))))
    assert receipt.api_calls == 3 + 3  # three rounds of one finder call each (a read per segment before: 9)
    assert [o.done for o in receipt.outcomes] == [True, False, True]
    assert "LinkedIn's segment status is FAILED" in (receipt.outcomes[1].error or "")

    linkedin.update_polls = 0
    faults(l_shared[0].url, error_rate=1.0, path_pattern="^/rest/dmpSegments$")
    with li_connector.create("linkedin", l_settings()) as conn:
        lost = conn.erase(delete_all(conn.discover(subject(ADA))))
    faults(l_shared[0].url)
    assert [o.done for o in lost.outcomes] == [False] * 3
    assert all("requested but its status could not be read" in (o.error or "") and "500" in (o.error or "")
               for o in lost.outcomes)
    assert_no_identity(repr(lost), ADA)


def test_linkedin_partial_failure_in_one_batch_element(lconn: LinkedInConnector,
                                                        linkedin: lsb.LinkedInSandbox, l_shared: Any) -> None:
    assert requests.post(f"{l_shared[0].url}/__sandbox__/fail-next-element", json={"segment": "8002", "status": 500},
                         timeout=5).status_code == 200
    receipt = lconn.erase(delete_all(lconn.discover(subject(ADA))))
    assert [o.done for o in receipt.outcomes] == [True, False, True]
    assert "element status 500" in (receipt.outcomes[1].error or "")
    assert_no_identity(repr(receipt), ADA)
    assert ADA_HASH not in linkedin.members("8001") and ADA_HASH not in linkedin.members("8003")
    assert ADA_HASH in linkedin.members("8002")
    rerun = lconn.erase(delete_all(lconn.discover(subject(ADA))))
    assert all(o.done for o in rerun.outcomes) and ADA_HASH not in linkedin.members("8002")


def test_linkedin_sunset_version_is_a_clear_error(linkedin: lsb.LinkedInSandbox) -> None:
    with li_connector.create("linkedin", l_settings(version="202401")) as conn:
        with pytest.raises(ConnectorError, match="426 NONEXISTENT_VERSION.*settings.version") as caught:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert conn.stats["calls"] == 1  # not retried
    assert_no_identity(caught.value, ADA)


def test_linkedin_throttling_is_retried(lconn: LinkedInConnector, linkedin: lsb.LinkedInSandbox,
                                        l_shared: Any) -> None:
    faults(l_shared[0].url, throttle_rate=1.0, burst=3)
    receipt = lconn.erase(delete_all(lconn.discover(subject(ADA))))
    assert all(o.done for o in receipt.outcomes)
    assert lconn.stats["throttled"] == 3 and lconn.stats["retries"] == 3
    faults(l_shared[0].url, error_rate=1.0, burst=1)
    grace = subject(GRACE)
    with pytest.raises(ConnectorError, match="more than one subject"):  # never guesses whom to remove
        lconn.erase(delete_all(lconn.discover(grace)))
    after_error = lconn.erase(delete_all(lconn.discover(grace)), subject=grace)
    assert all(o.done for o in after_error.outcomes) and lconn.stats["server_errors"] == 1
    assert all(GRACE_HASH not in linkedin.members(s) for s in SEGMENTS)


def test_linkedin_window_limit_is_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = lsb.LinkedInSandbox(per_minute_limit=2, window_seconds=0.3, seed_demo_data=True)
    with SandboxServer(vendor) as server:
        monkeypatch.setenv("DSR_LINKEDIN_URL", server.url)
        monkeypatch.setenv("DSR_LINKEDIN_TOKEN", lsb.DEMO_TOKEN)
        with li_connector.create("linkedin", l_settings(retry_max_wait=0.2, retry_attempts=8)) as conn:
            receipt = conn.erase(delete_all(conn.discover(subject(ADA))))
            assert all(o.done for o in receipt.outcomes) and conn.stats["throttled"] >= 1
    assert all(ADA_HASH not in vendor.members(s) for s in SEGMENTS)


def test_linkedin_daily_quota_and_tokens_are_clear_errors(linkedin: lsb.LinkedInSandbox,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    linkedin.exhaust_daily()
    with li_connector.create("linkedin", l_settings()) as conn:
        with pytest.raises(ConnectorError, match="daily quota is used up") as daily:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert conn.stats["calls"] == 1 and conn.stats.get("retries", 0) == 0
    assert_no_identity(daily.value, ADA)
    linkedin.daily_limit = None
    for mark in (linkedin.expired_tokens, linkedin.revoked_tokens):
        mark.add(lsb.DEMO_TOKEN)
        with li_connector.create("linkedin", l_settings()) as conn:
            with pytest.raises(ConnectorError, match="refused the access token.*DSR_LINKEDIN_TOKEN") as token:
                conn.erase(delete_all(conn.discover(subject(ADA))))
        assert lsb.DEMO_TOKEN not in str(token.value)
        assert_no_identity(token.value, ADA)
        mark.clear()
    monkeypatch.setenv("DSR_LINKEDIN_TOKEN", "AQXforged")
    with li_connector.create("linkedin", l_settings()) as conn:
        with pytest.raises(ConnectorError, match=r"401 INVALID_ACCESS_TOKEN.*DSR_LINKEDIN_TOKEN") as forged:
            conn.erase(delete_all(conn.discover(subject(ADA))))
    assert "AQXforged" not in str(forged.value)
    assert all(ADA_HASH in linkedin.members(s) for s in SEGMENTS)


def test_linkedin_unknown_segment_fails_only_itself(linkedin: lsb.LinkedInSandbox) -> None:
    settings = l_settings(segments=["urn:li:dmpSegment:8001", "urn:li:dmpSegment:9999"])
    with li_connector.create("linkedin", settings) as conn:
        receipt = conn.erase(delete_all(conn.discover(subject(ADA))))
    assert [o.done for o in receipt.outcomes] == [True, False]
    assert "no such segment" in (receipt.outcomes[1].error or "")


def test_linkedin_network_failures_and_missing_subject(linkedin: lsb.LinkedInSandbox, l_shared: Any) -> None:
    with li_connector.create("linkedin", l_settings(retry_attempts=2)) as conn:
        ref = RecordRef("linkedin", "dmp_segment", "8001", (DataCategory.MARKETING,))
        with pytest.raises(ConnectorError, match="erase needs the subject"):
            conn.erase(delete_all([ref]))
        faults(l_shared[0].url, reset_rate=1.0)
        receipt = conn.erase(delete_all([ref]), subject=subject(ADA))
        assert "unreachable" in (receipt.outcomes[0].error or "") and not receipt.outcomes[0].done
        assert_no_identity(repr(receipt), ADA)


@pytest.mark.parametrize("change, path", [
    ({"token": "AQXsecret"}, "systems.linkedin.settings.token"),
    ({"version": "2026-04"}, "systems.linkedin.settings.version"),
    ({"version": None}, "systems.linkedin.settings.version"),
    ({"segments": ["123"]}, "systems.linkedin.settings.segments.0"),
    ({"segments": []}, "systems.linkedin.settings.segments"),
    ({"segments": ["urn:li:dmpSegment:1", "urn:li:dmpSegment:1"]}, "systems.linkedin.settings.segments"),
    ({"token_env": "not a name"}, "systems.linkedin.settings.token_env"),
    ({"rate_limit": {"calls": 500}}, "systems.linkedin.settings.rate_limit.period_seconds"),
    ({"extra": True}, "systems.linkedin.settings.extra"),
])
def test_linkedin_config_errors_name_the_field(linkedin: lsb.LinkedInSandbox, change: dict[str, Any],
                                               path: str) -> None:
    settings = l_settings(**change)
    settings = {k: v for k, v in settings.items() if v is not None}
    with pytest.raises(ConnectorConfigError) as caught:
        li_connector.create("linkedin", settings)
    assert path in str(caught.value) and "AQXsecret" not in str(caught.value)


def test_linkedin_missing_token_variable_is_named(linkedin: lsb.LinkedInSandbox,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSR_LINKEDIN_TOKEN")
    with pytest.raises(ConnectorConfigError, match="settings.token_env: environment variable DSR_LINKEDIN_TOKEN"):
        li_connector.create("linkedin", l_settings())
