"""What both Google modes share: the audience face, OAuth login, Google's failures and their words.

A subclass per mode (`connectors.google_ads.jobs`, `connectors.google_ads.data_manager`) declares its
origin, paths and headers and carries out the removals (`_remove`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from connectors.audience import AudienceConnector
from connectors.base import ConnectorError, env_secret, resolve_origin, subject_email
from connectors.google_ads.failures import GoogleFailure
from connectors.google_ads.oauth import AccessTokens, OAuthClient, access_token, no_auth, refresh_problem
from connectors.google_ads.settings import GoogleAdsSettings, token_url_problem
from connectors.http import HttpFailure, VendorApiError, Verdict, json_or_none
from connectors.pacing import budget_key
from dsr.contract import ErasureDecision, Receipt, Record, RecordOutcome, RecordRef, Subject

DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
_RESOURCE = re.compile(r"^customers/(?P<cid>\d{10})/userLists/(?P<list>\d+)$")
_PERMISSION = ("no access to this account ({said}); a client account is reached through its manager: check "
               "systems.{system}.settings.login_customer_id")


class GoogleAdsApiError(VendorApiError):
    """Google answered with an error (or could not be reached); the message holds status and codes only."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """The OAuth client and, for the Ads API, the developer token; the repr never shows them."""

    oauth: OAuthClient
    developer_token: str | None

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"


class GoogleAdsConnector(AudienceConnector):
    """Remove a subject's hashed e-mail from configured Customer Match lists (write-only audiences).

    Build it with `connectors.google_ads.create` (the mode picks the subclass); call `close()` when done.
    `stats` counts calls, retries, throttling answers, token refreshes, relogins, polls and waits.
    """

    KIND, VERSION, VENDOR = "google_ads", "google_ads/1", "Google"
    SETTINGS = GoogleAdsSettings
    OBJECT, REFS, WRITE_ONLY = "user_list", "audience refs", True
    ERROR = GoogleAdsApiError
    HINTS = {
        401: "Google refused the access token even after refreshing it ({said}); check the OAuth client and "
             "refresh token in {s.oauth.client_id_env}, {s.oauth.refresh_token_env}",
        403: _PERMISSION,
    }
    PLATFORM: ClassVar[str]  # what `export` names the audience's platform
    RECEIPT_PREFIX: ClassVar[str]  # of `vendor_receipt_id`, before the mode's ``list=status`` parts
    _settings: GoogleAdsSettings
    _credentials: Credentials

    def __init__(self, system: str, settings: GoogleAdsSettings, *, base_url: str, credentials: Credentials) -> None:
        super().__init__(system, settings, base_url=base_url, credentials=credentials)
        self._lists = {resource: (cid, lid) for resource, cid, lid in settings.resources()}
        oauth = credentials.oauth
        self._tokens = AccessTokens(self._fetch_token, budget_key(
            "google-oauth", oauth.token_url, oauth.client_id, oauth.client_secret, oauth.refresh_token))
        self._session.auth = self._tokens
        self._subjects: dict[str, str] = {}  # identity hash -> address, as discover saw them

    @classmethod
    def read_credentials(cls, where: str, settings: GoogleAdsSettings) -> Credentials:
        """The OAuth client's secrets and the token endpoint; the developer token where the mode sends it."""
        oauth = settings.oauth
        token_url = resolve_origin(f"{where}.oauth", oauth.token_url, oauth.token_url_env, DEFAULT_TOKEN_URL,
                                   key="token_url", check=token_url_problem)
        client = OAuthClient(token_url, env_secret(f"{where}.oauth.client_id_env", oauth.client_id_env),
                             env_secret(f"{where}.oauth.client_secret_env", oauth.client_secret_env),
                             env_secret(f"{where}.oauth.refresh_token_env", oauth.refresh_token_env))
        developer = settings.developer_token_env if settings.mode == "offline_user_data_job" else None
        return Credentials(client, env_secret(f"{where}.developer_token_env", developer) if developer else None)

    def _account(self) -> tuple[str | None, ...]:
        return (self._base_url, self._credentials.developer_token, self._credentials.oauth.client_id)

    @property
    def confirms_removal(self) -> bool:
        """A done removal is confirmed in both modes: offline user data jobs are polled until SUCCESS, Data
        Manager requests (``requestStatus:retrieve``) until every destination is SUCCESS."""
        return True

    # --- the contract ---

    def discover(self, subject: Subject) -> list[RecordRef]:
        """One ref per configured list: "this audience may contain the subject" (membership is not readable).

        Makes no call. Remembers the subject for `erase`.
        """
        self._subjects[subject.identity_hash] = subject_email(subject)
        return [self._ref(resource) for resource in self._lists]

    def export(self, refs: Sequence[RecordRef]) -> Iterator[Record]:
        """One record per list saying what can be said: no member data is readable, none is exported."""
        self._check_refs(refs)
        said = {"platform": self.PLATFORM,
                "membership": "not readable: Customer Match lists are write-only; the subject may be a member",
                "identifier_uploaded": "SHA-256 of the normalised e-mail address"}
        yield from (Record(ref=ref, fields={"audience": ref.id, **said}) for ref in refs)

    def erase(self, decisions: Sequence[ErasureDecision], subject: Subject | None = None) -> Receipt:
        """Remove the subject's hashed e-mail from each decided list; RETAIN makes no call.

        Args:
            decisions: per list, from the policy.
            subject: whom to remove; defaults to the subject `discover` saw.

        Raises:
            ConnectorError: the subject is unknown, or a failure no list can get past (credentials,
                developer token, quota, Customer Match refused to this developer token); re-running is safe.
        """
        calls_before = self._calls()
        outcomes, todo = self._triage(decisions)
        parts = self._remove(todo, self._subject_email(subject), outcomes) if todo else []
        vendor_receipt = f"{self.RECEIPT_PREFIX}:" + " ".join(parts) if parts else None
        return self._receipt(decisions, outcomes, calls_before, vendor_receipt)

    def verify_erased(self, subject: Subject) -> list[RecordRef]:
        """Nothing can be re-queried (write-only audiences): always ``[]``; `info.write_only` says so."""
        subject_email(subject)
        return []

    def _remove(self, todo: Sequence[ErasureDecision], email: str, outcomes: dict[str, RecordOutcome]) -> list[str]:
        """Remove `email` from each list of `todo`, filling `outcomes`; the parts of the vendor receipt."""
        raise NotImplementedError

    def _problem_with(self, ref: RecordRef) -> str | None:
        foreign = self._foreign(ref)
        if foreign is not None:
            return foreign
        if not _RESOURCE.match(ref.id):
            return f"id is not a user list resource name (customers/<id>/userLists/<id>) of systems.{self._system}"
        if ref.id not in self._lists:
            return f"user list {ref.id!r} is not configured in systems.{self._system}.settings.customers"
        return None

    # --- OAuth ---

    def _fetch_token(self) -> tuple[str, float]:
        """The refresh token exchanged for an access token at the token endpoint (paced and retried)."""
        s = self._settings
        problem: str | None = None
        token: tuple[str, float] | None = None
        try:
            token = access_token(self._retry(lambda: self._attempt(self._post_token))())
        except Exception as exc:  # noqa: BLE001 - every failure becomes a secret-free ConnectorError
            problem = refresh_problem(exc, s.oauth, s.retry_attempts, self.NETWORK_ERRORS)
        if token is None:
            raise ConnectorError(f"systems.{self._system}: Google OAuth token refresh failed"
                                 + (problem or ": the token endpoint answered without an access token"))
        self._count("token_refreshes")
        return token

    def _post_token(self) -> Any:
        oauth = self._credentials.oauth
        response = self._session.post(oauth.token_url, data=oauth.form(), timeout=self._timeout, auth=no_auth,
                                      allow_redirects=False)
        if not 200 <= response.status_code < 300:
            raise self.failure_of(response)
        return json_or_none(response)

    def reauthenticate(self, failure: HttpFailure) -> bool:
        """A 401 that is not about the developer token: the access token was revoked meanwhile; fetch another."""
        if isinstance(failure, GoogleFailure) and failure.developer_token_refused:
            return False
        self._tokens.forget()
        return True

    # --- Google's failures ---

    def failure_of(self, response: requests.Response) -> HttpFailure:
        return GoogleFailure.of(response)

    def classify(self, failure: HttpFailure) -> Verdict:
        """A failure `_why_fatal` explains is fatal (never retried); else as any vendor's (a 401 is fatal,
        429 and 5xx are retried)."""
        if self._why_fatal(failure) is not None:
            return Verdict.FATAL
        return super().classify(failure)

    def explain(self, failure: HttpFailure) -> str | None:
        if not isinstance(failure, GoogleFailure) or (failure.status == 401 and not failure.developer_token_refused):
            return None  # a refused access token: HINTS
        fatal = self._why_fatal(failure)
        if fatal is None and failure.has_code("USER_PERMISSION_DENIED"):
            return _PERMISSION.format(said=failure.said, system=self._system)
        return fatal

    def _why_fatal(self, failure: HttpFailure) -> str | None:
        """Why no other list can get past `failure` (the words of the error), or None."""
        if not isinstance(failure, GoogleFailure):
            return None
        s, said = self._settings, failure.said
        if failure.developer_token_refused:
            return (f"Google Ads refused the developer token ({said}); put a valid one in the environment variable "
                    f"{s.developer_token_env}")
        if failure.has_code("CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"):
            return (f"Google Ads no longer accepts Customer Match uploads from this developer token ({said}); set "
                    f"systems.{self._system}.settings.mode to data_manager (the Data Manager API)")
        if failure.status == 429 and failure.retry_after is not None and failure.retry_after > s.retry_max_wait:
            return (f"Google's API quota is used up ({said}); Google asks to wait {failure.retry_after:.0f} s, so "
                    "this was not retried")
        return None
