"""Google's error answers reduced to what may be repeated: status, Google status, error codes, the wait asked.

The Ads API and the Data Manager API answer a ``google.rpc.Status`` (``{"error": {"code", "status",
"details": [...]}}``) whose details hold GoogleAdsFailure errors (``errorCode.{category}: CODE``),
``ErrorInfo`` reasons, field violations and the wait asked (``quotaErrorDetails.retryDelay`` or
``google.rpc.RetryInfo.retryDelay``); the OAuth token endpoint answers ``{"error": "invalid_grant"}``.
Only token-like codes are kept: Google's free text may quote the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from connectors.http import HttpFailure, json_or_none
from connectors.pacing import parse_retry_after

CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,79}$")
_CATEGORY = re.compile(r"^[a-z][A-Za-z]{1,60}Error$")
_DELAY = re.compile(r"(\d+(?:\.\d+)?)s")


class GoogleFailure(HttpFailure):
    """An error answer of Google's: `codes` (``category.CODE`` and reasons), `google_status`
    (``PERMISSION_DENIED``...), `oauth_error` (the token endpoint's ``error``); `retry_after` is the
    body's retry delay, else the Retry-After header. `code` is the Google status or the OAuth error."""

    def __init__(self, status: int, *, codes: tuple[str, ...] = (), google_status: str | None = None,
                 oauth_error: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(status, code=google_status or oauth_error, retry_after=retry_after)
        self.codes, self.google_status, self.oauth_error = codes, google_status, oauth_error

    @classmethod
    def of(cls, response: requests.Response) -> GoogleFailure:
        body = json_or_none(response)
        error = body.get("error") if isinstance(body, dict) else None
        oauth_error = error if isinstance(error, str) and CODE.match(error.upper()) else None
        error = error if isinstance(error, dict) else {}
        google_status = error.get("status")
        delay = retry_delay(error)
        return cls(response.status_code, codes=error_codes(error), oauth_error=oauth_error,
                   google_status=google_status if isinstance(google_status, str) and CODE.match(google_status) else None,
                   retry_after=delay if delay is not None else parse_retry_after(response.headers.get("Retry-After")))

    @property
    def said(self) -> str:
        """Status, Google status and error codes, as a message may repeat them."""
        codes = f" {', '.join(self.codes)}" if self.codes else ""
        return f"{self.status} {self.google_status or ''}".rstrip() + codes

    def has_code(self, suffix: str) -> bool:
        """Whether one of the codes ends with `suffix` (``authorizationError.USER_PERMISSION_DENIED``...)."""
        return any(code.endswith(suffix) for code in self.codes)

    @property
    def developer_token_refused(self) -> bool:
        return any("DEVELOPER_TOKEN" in code for code in self.codes)


def error_codes(error: Mapping[str, Any]) -> tuple[str, ...]:
    """``category.CODE`` of every GoogleAdsError, and ErrorInfo / field-violation reasons; token-like only."""
    codes: list[str] = []
    for detail in _details(error):
        for item in detail.get("errors") or []:
            for category, code in ((item or {}).get("errorCode") or {}).items():
                if isinstance(code, str) and _CATEGORY.match(category) and CODE.match(code):
                    codes.append(f"{category}.{code}")
        reasons = [detail.get("reason")] + [(v or {}).get("reason") for v in detail.get("fieldViolations") or []]
        codes.extend(r for r in reasons if isinstance(r, str) and CODE.match(r))
    return tuple(dict.fromkeys(codes))


def retry_delay(error: Mapping[str, Any]) -> float | None:
    """The wait Google asks for: ``quotaErrorDetails.retryDelay`` or ``google.rpc.RetryInfo.retryDelay``."""
    for detail in _details(error):
        delays = [detail.get("retryDelay")]
        for item in detail.get("errors") or []:
            delays.append((((item or {}).get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay"))
        for delay in delays:
            match = _DELAY.fullmatch(delay) if isinstance(delay, str) else None
            if match:
                return float(match.group(1))
    return None


def _details(error: Mapping[str, Any]) -> Sequence[dict[str, Any]]:
    return [d for d in error.get("details") or [] if isinstance(d, dict)]
