"""Salesforce's Composite (`composite/`) and Composite Batch (`composite/batch`) resources, for the sandbox.

The wire facts are in `docs/vendor-wire-notes.md` (Salesforce, Composite). In short:

- Composite: ``{"allOrNone": bool, "compositeRequest": [{"method", "url": "/services/data/vXX.X/...",
  "referenceId", "body"?}]}``, up to 25 subrequests of which at most 5 are queries; answered 200
  ``{"compositeResponse": [{"body", "httpHeaders", "httpStatusCode", "referenceId"}]}``. The whole call
  counts once against the org's API quota. With ``allOrNone`` a failed subrequest rolls every change
  back and the others answer 400 PROCESSING_HALTED.
- Composite Batch: ``{"haltOnError": bool, "batchRequests": [{"method", "url": "vXX.X/...", "richInput"?}]}``,
  up to 25 subrequests; answered 200 ``{"hasErrors": bool, "results": [{"statusCode", "result"}]}``.
  Each subrequest counts against the org's API quota (Salesforce's documentation says so); this sandbox
  counts the batch call itself too. With ``haltOnError`` the subrequests after a failure answer 412
  BATCH_PROCESSING_HALTED.

A request the resource cannot read (too many subrequests, an unknown method, a URL outside the
resources it batches) is refused whole with 400 and Salesforce's error array, before any subrequest
runs. Each subrequest runs through the org's own routes, so it meets the same handlers and errors as a
direct call; the session is the top-level call's. References between subrequests (``@{ref.field}``)
are not resolved here: a subrequest holding one is refused (this sandbox's limit, not Salesforce's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.kit import Request, Response
from sandbox.salesforce_model import ApiError

MAX_SUBREQUESTS = 25
MAX_COMPOSITE_QUERIES = 5  # Query, QueryAll and "query more" subrequests of one Composite call
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")  # case-sensitive, as Salesforce reads them

_VERSIONED = re.compile(r"^/services/data/v(?P<version>\d{2,3}\.\d)/(?P<rest>.*)$")
_QUERY = re.compile(r"^(query|queryAll)([/?]|$)")
_REFERENCE_ID = re.compile(r"^[A-Za-z0-9_]{1,80}$")
#: The resources each composite resource batches (the path after /services/data/vXX.X/).
_COMPOSITE_RESOURCES = re.compile(r"^(sobjects/|(query|queryAll|composite/sobjects)([/?]|$))")
_BATCH_RESOURCES = re.compile(r"^(sobjects/|(query|queryAll|limits)([/?]|$))")

#: Runs one subrequest through the org's routes: (method, path with query string, JSON body or None) -> answer.
Dispatch = Callable[[str, str, Any], Response]


def composite(request: Request, dispatch: Dispatch, *, snapshot: Callable[[], Callable[[], None]]) -> Response:
    """Answer ``POST composite/``: every subrequest in order, each answered as a direct call would be.

    `snapshot()` records the org's state and returns what puts it back (``allOrNone``).
    """
    body = _body(request)
    subrequests = _subrequests(body, "compositeRequest")
    version = request.params["version"]
    plan = [_composite_subrequest(item, index, version) for index, item in enumerate(subrequests)]
    queries = sum(1 for _, path, _, _ in plan if _QUERY.match(_rest_of(path)))
    if queries > MAX_COMPOSITE_QUERIES:
        raise _limit(f"The request can't contain more than {MAX_COMPOSITE_QUERIES} query operations.")
    references = [reference for _, _, _, reference in plan]
    if len(set(references)) != len(references):
        raise ApiError(400, "INVALID_INPUT", "Duplicate referenceId provided in the request.")
    all_or_none = bool(body.get("allOrNone", False))
    restore = snapshot() if all_or_none else None
    answers: list[tuple[int, Any]] = []
    for method, path, payload, _ in plan:
        answers.append(_run(dispatch, method, path, payload))
    if restore is not None and any(status >= 400 for status, _ in answers):
        restore()
        halted = [{"errorCode": "PROCESSING_HALTED",
                   "message": "The transaction was rolled back since another operation in the same transaction "
                              "failed."}]
        answers = [(status, result) if status >= 400 else (400, halted) for status, result in answers]
    return Response.json({"compositeResponse": [
        {"body": result, "httpHeaders": {}, "httpStatusCode": status, "referenceId": reference}
        for (status, result), reference in zip(answers, references, strict=True)
    ]})


def composite_batch(request: Request, dispatch: Dispatch, *, take_quota: Callable[[], bool]) -> Response:
    """Answer ``POST composite/batch``: every subrequest in order; `take_quota()` is asked once per subrequest
    (False: the org's daily quota is used up, and that subrequest is refused as a direct call would be)."""
    body = _body(request)
    subrequests = _subrequests(body, "batchRequests")
    version = request.params["version"]
    plan = [_batch_subrequest(item, version) for item in subrequests]
    halt = bool(body.get("haltOnError", False))
    results: list[dict[str, Any]] = []
    halted = False
    for method, path, payload in plan:
        if halted:
            status, result = 412, [{"errorCode": "BATCH_PROCESSING_HALTED", "message": "Batch processing halted "
                                    "per request"}]
        elif not take_quota():
            status, result = 403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        else:
            status, result = _run(dispatch, method, path, payload)
        results.append({"statusCode": status, "result": result})
        halted = halted or (halt and status >= 400)
    return Response.json({"hasErrors": any(r["statusCode"] >= 400 for r in results), "results": results})


def subrequest(outer: Request, method: str, target: str, payload: Any) -> Request:
    """A subrequest as a request of its own: the top-level call's headers (its session), its own path,
    query string and body."""
    parts = urlsplit(target)
    body = b"" if payload is None else json.dumps(payload).encode("utf-8")
    return Request(method, parts.path, parse_qs(parts.query, keep_blank_values=True), outer.headers, body)


# --- reading the request ---


def _body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


def _subrequests(body: Mapping[str, Any], key: str) -> Sequence[Any]:
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise ApiError(400, "INVALID_INPUT", f"{key}: a non-empty list of subrequests is required")
    if len(items) > MAX_SUBREQUESTS:
        raise _limit(f"The request can't contain more than {MAX_SUBREQUESTS} operations.")
    return items


def _limit(message: str) -> ApiError:
    return ApiError(400, "LIMIT_EXCEEDED", message)


def _method(item: Mapping[str, Any]) -> str:
    method = item.get("method")
    if method not in METHODS:
        raise ApiError(400, "INVALID_INPUT", f"method: one of {', '.join(METHODS)} (case-sensitive) is required")
    return str(method)


def _composite_subrequest(item: Any, index: int, version: str) -> tuple[str, str, Any, str]:
    if not isinstance(item, dict):
        raise ApiError(400, "INVALID_INPUT", f"compositeRequest[{index}]: a JSON object is required")
    method = _method(item)
    url = item.get("url")
    reference = item.get("referenceId")
    if not isinstance(reference, str) or not _REFERENCE_ID.match(reference):
        raise ApiError(400, "INVALID_INPUT", f"compositeRequest[{index}].referenceId: letters, digits and _ only")
    match = _VERSIONED.match(url) if isinstance(url, str) else None
    if match is None or not _COMPOSITE_RESOURCES.match(match["rest"]):
        raise ApiError(400, "INVALID_INPUT", f"compositeRequest[{index}].url: a /services/data/vXX.X/ URL of "
                       "sobjects, query, queryAll or composite/sobjects is required")
    _check_version(match["version"], version)
    headers = item.get("httpHeaders") or {}
    if any(str(name).lower() in ("accept", "authorization", "content-type") for name in headers):
        raise ApiError(400, "INVALID_INPUT", "Accept, Authorization and Content-Type are taken from the top-level "
                       "request")
    payload = item.get("body")
    if "@{" in str(url) or "@{" in json.dumps(payload):
        raise ApiError(400, "INVALID_INPUT", "this sandbox does not resolve references between subrequests")
    return method, str(url), payload, reference


def _batch_subrequest(item: Any, version: str) -> tuple[str, str, Any]:
    if not isinstance(item, dict):
        raise ApiError(400, "INVALID_INPUT", "batchRequests: each subrequest must be a JSON object")
    method = _method(item)
    url = item.get("url")
    if not isinstance(url, str):
        raise ApiError(400, "INVALID_INPUT", "url: required")
    path = "/services/data/" + url.lstrip("/") if not url.startswith("/services/data/") else url
    match = _VERSIONED.match(path)
    if match is None or not _BATCH_RESOURCES.match(match["rest"]):
        raise ApiError(400, "INVALID_INPUT", "url: a vXX.X/ URL of sobjects, query, queryAll or limits is required")
    _check_version(match["version"], version)
    if item.get("binaryPartName") is not None:
        raise ApiError(400, "INVALID_INPUT", "this sandbox takes no binary parts")
    return method, path, item.get("richInput")


def _check_version(sub: str, top: str) -> None:
    # A subrequest may name an earlier version than the top-level call, never a later one (nor one before 34.0).
    if not 34.0 <= float(sub) <= float(top):
        raise ApiError(400, "INVALID_INPUT", f"the subrequest's version must be 34.0 to {top}")


def _rest_of(path: str) -> str:
    match = _VERSIONED.match(urlsplit(path).path)
    return match["rest"] if match else ""


def _run(dispatch: Dispatch, method: str, path: str, payload: Any) -> tuple[int, Any]:
    response = dispatch(method, path, payload)
    if not response.body:
        return response.status, None
    try:
        return response.status, json.loads(response.body)
    except ValueError:
        return response.status, response.body.decode("utf-8", "replace")
