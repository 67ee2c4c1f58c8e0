"""Google OAuth 2.0 for a server: a refresh token exchanged for short-lived access tokens.

The connector posts the exchange (paced and retried like any call); this module holds the secrets, the
cached access token and the words of a failed exchange. Neither a secret nor Google's free text reaches
a message: the OAuth ``error`` code and the environment variables' names only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import requests.auth

from connectors.google_ads.failures import GoogleFailure
from connectors.google_ads.settings import OAuthSpec
from connectors.pacing import register_cache


@dataclass(frozen=True, repr=False)
class OAuthClient:
    """Where and with what an access token is asked for; its repr never shows the secrets."""

    token_url: str
    client_id: str
    client_secret: str
    refresh_token: str

    def form(self) -> dict[str, str]:
        """The token request's form (RFC 6749 section 6)."""
        return {"grant_type": "refresh_token", "client_id": self.client_id, "client_secret": self.client_secret,
                "refresh_token": self.refresh_token}

    def __repr__(self) -> str:
        return "OAuthClient(<redacted>)"


class TokenCache:
    """Access tokens by OAuth client and refresh token (a budget key: a hash, no secret), shared by the
    connectors of a process: a connector is built per request, and a token lives an hour."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """The token kept for `key` if it is not about to expire, else None."""
        with self._lock:
            entry = self._tokens.get(key)
        return entry[0] if entry is not None and time.monotonic() < entry[1] else None

    def put(self, key: str, token: str, refresh_at: float) -> None:
        with self._lock:
            self._tokens[key] = (token, refresh_at)

    def discard(self, key: str, token: str) -> None:
        """Forget a refused token (only that one: another connector may have fetched a fresh one already)."""
        with self._lock:
            if self._tokens.get(key, ("", 0.0))[0] == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKENS = TokenCache()
register_cache(TOKENS.clear)


class AccessTokens(requests.auth.AuthBase):
    """``Authorization: Bearer <access token>`` on every call: the process's token for this OAuth client
    (`TOKENS`, under `key`), fetched when none is kept or it is about to expire (`fetch` answers the token
    and its lifetime in seconds); `forget` drops it."""

    def __init__(self, fetch: Callable[[], tuple[str, float]], key: str) -> None:
        self._fetch = fetch
        self._key = key
        self._lock = threading.Lock()
        self._token: str | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def token(self) -> str:
        with self._lock:
            kept = TOKENS.get(self._key)
            if kept is None:
                kept, lifetime = self._fetch()
                # Refresh a minute early (a tenth of the lifetime for short-lived tokens).
                TOKENS.put(self._key, kept, time.monotonic() + lifetime - min(60.0, lifetime / 10))
            self._token = kept
            return kept

    def forget(self) -> None:
        """Drop the access token (revoked or expired meanwhile): the next call fetches a fresh one."""
        with self._lock:
            if self._token is not None:
                TOKENS.discard(self._key, self._token)
            self._token = None

    def __repr__(self) -> str:
        return "AccessTokens(<token>)"


def no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The token request's auth: neither the session's bearer token nor a ~/.netrc entry."""
    return request


def access_token(answer: Any) -> tuple[str, float] | None:
    """The access token and its lifetime from the token endpoint's answer, or None if it holds none."""
    token = answer.get("access_token") if isinstance(answer, dict) else None
    lifetime = answer.get("expires_in", 3600) if isinstance(answer, dict) else 0
    if not isinstance(token, str) or not token or not isinstance(lifetime, int | float) or lifetime <= 0:
        return None
    return token, float(lifetime)


def refresh_problem(exc: BaseException, oauth: OAuthSpec, attempts: int,
                    network_errors: tuple[type[BaseException], ...]) -> str:
    """Why the exchange failed, to follow "token refresh failed": the OAuth error and what to check."""
    if isinstance(exc, GoogleFailure):
        if exc.oauth_error == "invalid_grant":
            return (" (invalid_grant: the refresh token is expired or revoked); put a valid one in the environment "
                    f"variable {oauth.refresh_token_env}")
        if exc.oauth_error in ("invalid_client", "unauthorized_client"):
            return (f" ({exc.oauth_error}); check the OAuth client in the environment variables "
                    f"{oauth.client_id_env} and {oauth.client_secret_env}")
        if exc.status >= 500 or exc.status == 429:
            return f" (HTTP {exc.status}) after {attempts} attempts"
        return f" (HTTP {exc.status}" + (f" {exc.oauth_error})" if exc.oauth_error else ")")
    if isinstance(exc, network_errors):
        return f": token endpoint unreachable ({type(exc).__name__}) after {attempts} attempts"
    return f": unexpected {type(exc).__name__}"
