"""Salesforce's wire: the secrets a login needs, the process's org sessions, and the one HTTP session.

simple-salesforce is handed `SalesforceSession` (a supported parameter, not a patch) for every call: login,
REST and Bulk API 2.0. An SDK call may be several HTTP calls (a Bulk API job), so this session, not the
connector's attempt, takes the org's rate-limit slots: one per HTTP call, logins excepted (they count
against the user's hourly logins, not the org's API budget).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import requests

from connectors.base import ConnectorConfigError, env_secret, origin_problem
from connectors.pacing import Limiter, register_cache
from connectors.salesforce.settings import AuthSpec

_USAGE = re.compile(r"(?:^|[;\s])api-usage=(\d+)/(\d+)")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The connected app's secrets, read from the environment when the connector is built."""

    client_id: str
    client_secret: str | None = None
    username: str | None = None
    private_key_file: str | None = None
    private_key: str | None = None


def credentials_of(where: str, auth: AuthSpec) -> Credentials:
    """The secrets `auth` names, from the environment (and the key file, which must exist).

    Raises:
        ConnectorConfigError: a variable is unset, or the key file it names does not exist.
    """
    client_id = env_secret(f"{where}.client_id_env", auth.client_id_env)
    if auth.flow == "client_credentials":
        assert auth.client_secret_env is not None  # the model requires it for this flow
        return Credentials(client_id, client_secret=env_secret(f"{where}.client_secret_env", auth.client_secret_env))
    username = auth.username or env_secret(f"{where}.username_env", auth.username_env or "")
    if auth.private_key_env is not None:
        return Credentials(client_id, username=username, private_key=env_secret(f"{where}.private_key_env",
                                                                           auth.private_key_env))
    key_file = auth.private_key_file or env_secret(f"{where}.private_key_file_env", auth.private_key_file_env or "")
    field_name = "private_key_file" if auth.private_key_file else "private_key_file_env"
    if not Path(key_file).is_file():
        raise ConnectorConfigError(f"{where}.{field_name}: the private key file it names does not exist")
    return Credentials(client_id, username=username, private_key_file=key_file)


def origin_of(where: str, key: str, inline: str | None, variable: str | None, *,
              https_only: bool = False) -> str | None:
    """An origin setting, inline or from the environment variable `<key>_env` names (checked here: the
    settings model checked the inline one)."""
    if inline is not None:
        return inline
    if variable is None:
        return None
    url = env_secret(f"{where}.{key}_env", variable)
    problem = origin_problem(url, https_only=https_only)
    if problem:
        raise ConnectorConfigError(f"{where}.{key}_env: {problem}")
    return url


class SessionCache:
    """Salesforce sessions by org and connected app (a budget key), shared by the connectors of a process."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, budget: str) -> tuple[str, str] | None:
        with self._lock:
            return self._sessions.get(budget)

    def put(self, budget: str, session: tuple[str, str]) -> None:
        with self._lock:
            self._sessions[budget] = session

    def discard(self, budget: str, session_id: str) -> None:
        """Forget an expired session (only that one: another thread may have logged in anew already)."""
        with self._lock:
            if self._sessions.get(budget, ("", ""))[0] == session_id:
                del self._sessions[budget]

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


SESSIONS = SessionCache()
register_cache(SESSIONS.clear)


class OutsideSandbox(requests.RequestException):
    """With an endpoint override, a call to any other host is refused (credentials stay in the sandbox)."""


class SalesforceSession(requests.Session):
    """The one session simple-salesforce uses for every call: login, REST and Bulk API 2.0.

    It paces calls with the org's limiter and slows down as the daily quota runs out, gives every call a
    timeout (simple-salesforce sets none), reads ``Sforce-Limit-Info`` from every answer (Bulk API 2.0
    answers too, which simple-salesforce does not parse), counts calls and answers with `count`, and, with
    an endpoint override (sandboxes only), sends ``https://*.salesforce.com`` and the instance URL to it.
    """

    def __init__(self, *, limiter: Limiter, timeout: tuple[float, float], slowdown_at: float,
                 override: str | None, instance_url: str | None, count: Callable[[str, float], None]) -> None:
        super().__init__()
        self._limiter, self._timeout, self._slowdown_at = limiter, timeout, slowdown_at
        self._slot = limiter.period / limiter.calls
        self._override: SplitResult | None = urlsplit(override) if override else None
        #: Where an override sends the org's calls (sandboxes share one org name): part of a describe's cache key.
        self.sandbox_netlocs = tuple(sorted({urlsplit(u).netloc.lower() for u in (override, instance_url) if u}))
        self._count = count
        self._thread = threading.local()  # calls made by the current thread (concurrent erase/purge calls)
        self.usage: tuple[int, int] | None = None  # (used, daily quota) from the latest answer

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        method = method if isinstance(method, str) else method.decode()
        url = self._route(url if isinstance(url, str) else url.decode())
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        login = urlsplit(url).path.endswith("/services/oauth2/token")
        if not login:  # a login counts against the user's hourly logins, not the org's API budget
            self._pace()
        self._count("http_calls", 1)
        self._thread.calls = self.calls_in_thread() + 1
        if login:
            self._count("logins", 1)
        response = super().request(method, url, *args, **kwargs)
        self._observe(response)
        return response

    def _route(self, url: str) -> str:
        if self._override is None:
            return url
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        ours = host.endswith(".salesforce.com") or parts.netloc.lower() in self.sandbox_netlocs
        if parts.scheme == "https" and ours:
            return urlunsplit((self._override.scheme, self._override.netloc, parts.path, parts.query, parts.fragment))
        if parts.netloc.lower() == self._override.netloc.lower():
            return url
        raise OutsideSandbox("endpoint_override is set: refusing a call to a host outside the sandbox")

    def _pace(self) -> None:
        waited = self._limiter.acquire()
        if waited:
            self._count("waited_seconds", waited)
        usage = self.usage
        if usage is None or not usage[1]:
            return
        share = usage[0] / usage[1]
        if share >= self._slowdown_at:
            # From one extra slot per call at the threshold to ten at the end of the quota.
            closeness = min((share - self._slowdown_at) / (1 - self._slowdown_at), 1.0)
            self._count("quota_slowdowns", 1)
            time.sleep(self._slot * (1 + 9 * closeness))

    def _observe(self, response: requests.Response) -> None:
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.usage = (int(match.group(1)), int(match.group(2)))
        status = response.status_code
        if status == 403 and b"REQUEST_LIMIT_EXCEEDED" in response.content:
            self._count("throttled", 1)
        elif status == 401:
            self._count("expired_sessions", 1)
        elif status >= 500:
            self._count("server_errors", 1)

    def calls_in_thread(self) -> int:
        """HTTP calls made so far by the calling thread (an operation's own calls, whatever other
        threads of the connector do meanwhile)."""
        return int(getattr(self._thread, "calls", 0))
