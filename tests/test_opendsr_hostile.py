"""Hostile input at the OpenDSR 2.0 and OpenGDPR 1.0 routes (hypothesis, in-process): every body,
byte string, id and signature gets an expected status with the spec's error object, never a stack
trace, a 5xx or the submitted address echoed back. The strategies are test_hostile_input's."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from doors.api.intake import router as opendsr_router
from doors.api.limits import BodySizeLimit
from dsr.adapters.mail import SmtpConfig
from dsr.service import DsrService
from dsr.settings import Settings
from tests.test_hostile_input import PROFILE, REPO, _free_port, _Inbox, json_value, nasty_text, opendsr_bodies

SUBMIT_STATUSES = {201, 400, 403, 413}


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("opendsr-hostile")
    port = _free_port()
    smtp = Controller(_Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    service = DsrService(Settings(home=home / "var", config_dir=REPO / "config", identity_key="hostile-key",
                                  opendsr_domain="processor.test"))
    config = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
                        recipients=("unused@precision.test",))
    app = FastAPI()
    app.include_router(opendsr_router(service, lambda: config, submit_limit=(10**9, 1.0),
                                      verify_limit=(10**9, 1.0), status_limit=(10**9, 1.0)))
    app.add_middleware(BodySizeLimit, max_bytes=service.settings.api_max_body_bytes)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    service.close()
    smtp.stop()


def _assert_spec_answer(answer: Any, allowed: set[int]) -> None:
    assert answer.status_code in allowed, (answer.status_code, answer.text[:500])
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    assert answer.headers.get("x-opendsr-signature") or answer.status_code == 413
    if answer.status_code >= 400 and answer.status_code != 413:
        error = answer.json()["error"]
        assert error["code"] == answer.status_code and error["errors"]
        for item in error["errors"]:
            assert set(item) == {"domain", "reason", "message"} and item["message"].strip()


@settings(PROFILE)
@given(body=opendsr_bodies(), path=st.sampled_from(["/opendsr/v2/requests", "/opendsr/v1/opengdpr_requests"]))
def test_every_body_gets_the_error_object_or_a_201(protocol: TestClient, body: Any, path: str) -> None:
    answer = protocol.post(path, json=body)
    _assert_spec_answer(answer, SUBMIT_STATUSES)
    if answer.status_code == 400:
        assert "hostile.subject@example.com" not in answer.text  # never the submitted address


@settings(PROFILE)
@given(raw=st.binary(max_size=300), signature=st.one_of(st.none(), nasty_text,
                                                        st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())))
def test_garbled_bytes_and_signatures_are_refused_cleanly(protocol: TestClient, raw: bytes, signature: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if signature is not None and signature.isascii() and "\n" not in signature and "\r" not in signature:
        headers["X-OpenDSR-Signature"] = signature
    _assert_spec_answer(protocol.post("/opendsr/v2/requests", content=raw, headers=headers), SUBMIT_STATUSES)


@settings(PROFILE)
@given(request_id=st.one_of(nasty_text, st.uuids().map(str)), code=json_value)
@example(request_id=".", code="123456")
@example(request_id="..", code="123456")
def test_every_id_at_status_cancel_and_verify_is_answered_cleanly(protocol: TestClient, request_id: str,
                                                                  code: Any) -> None:
    # "." and ".." are dot segments that the client would fold away before sending (RFC 3986 5.2.4),
    # asking for another route; percent-encoded they reach the server as the id they are.
    path_id = quote(request_id, safe="").replace(".", "%2E") or "x"
    for method, path, allowed in (("GET", f"/opendsr/v2/requests/{path_id}", {200, 404}),
                                  ("DELETE", f"/opendsr/v2/requests/{path_id}", {202, 400, 403, 404}),
                                  ("GET", f"/opendsr/v1/opengdpr_requests/{path_id}", {200, 404}),
                                  ("POST", f"/opendsr/v2/requests/{path_id}/verify", {200, 400, 404})):
        answer = protocol.request(method, path, json={"code": code} if method == "POST" else None,
                                  follow_redirects=False)
        if answer.status_code == 307:  # an id of "/" ends the path in a slash: Starlette redirects
            continue
        if answer.status_code == 404 and answer.json() == {"detail": "Not Found"}:
            continue  # an id holding "/" makes a path no route has: the framework's own 404
        _assert_spec_answer(answer, allowed)
