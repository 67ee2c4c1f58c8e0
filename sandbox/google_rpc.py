"""Google's error answers, as the Google Ads sandbox gives them: ``google.rpc.Status`` bodies, the Data
Manager API's details, the Ads API's ``GoogleAdsError`` entries, proto3 JSON durations."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.kit import Refusal, Response

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
MESSAGE = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
         "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}
MISSING_CREDENTIAL = ("Request is missing required authentication credential. Expected OAuth 2 access token, login "
                      "cookie or other valid authentication credential. See "
                      "https://developers.google.com/identity/sign-in/web/devconsole-project.")


def duration(seconds: float) -> str:
    """A google.protobuf.Duration in JSON: "30s", "0.050s"."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def new_request_id() -> str:
    return secrets.token_urlsafe(16)[:22]


def status_error(http: int, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    """A ``google.rpc.Status`` error answer."""
    error: dict[str, Any] = {"code": http, "message": message, "status": STATUS.get(http, "UNKNOWN")}
    if details:
        error["details"] = details
    return Response.json({"error": error}, http)


def dm_error(http: int, details: list[dict[str, Any]], message: str | None = None) -> Response:
    """A Data Manager API error answer."""
    return status_error(http, message or ("There was a problem with the request." if http == 400
                                          else MESSAGE.get(http, "")), details)


def dm_unauthenticated(problem: str) -> Response:
    """Data Manager's 401 for a 'missing', 'expired' or 'invalid' access token."""
    reason = {"missing": "CREDENTIALS_MISSING", "expired": "ACCESS_TOKEN_EXPIRED"}.get(problem, "ACCESS_TOKEN_INVALID")
    message = MISSING_CREDENTIAL if problem == "missing" else MESSAGE[401]
    return status_error(401, message, [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                        "reason": reason, "domain": "googleapis.com",
                                        "metadata": {"service": "datamanager.googleapis.com"}}])


def violation(field_path: str, description: str, reason: str) -> Response:
    """Data Manager's 400: ErrorInfo plus a BadRequest field violation (the shape of section 4)."""
    return dm_error(400, [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_ARGUMENT",
         "domain": "datamanager.googleapis.com"},
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": field_path, "description": description, "reason": reason}]}])


def ads_err(category: str, code: str, message: str, *, location: list[dict[str, Any]] | None = None,
            details: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GoogleAdsError."""
    error: dict[str, Any] = {"errorCode": {category: code}, "message": message}
    if location:
        error["location"] = {"fieldPathElements": location}
    if details:
        error["details"] = details
    return error


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def check_known(body: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """Proto JSON parsing refuses unknown field names."""
    for key in body:
        if key not in allowed:
            at = f" at '{where}'" if where else ""
            raise Refusal(status_error(400, f'Invalid JSON payload received. Unknown name "{key}"{at}: '
                                            "Cannot find field.", [
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": f"{where}.{_snake(key)}" if where else _snake(key),
                                      "description": f'Invalid JSON payload received. Unknown name "{key}"{at}: '
                                                     "Cannot find field."}]}]))
