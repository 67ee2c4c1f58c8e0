"""Hostile input at every door: the HTTP API (OpenDSR intake and the officer routes), the `dsr` CLI and the
config loader, fed by hypothesis. What a user would notice is checked on every input:

- no stack trace ever reaches them (no 500, no uncaught exception, no "Traceback" in any answer);
- every refusal names what was wrong (a `loc` in the body for the API, `error: <field>` or the option
  for the CLI, `<file>: <path.in.file>: ...` for the config);
- oversized bodies are refused before they are read (413), and a streamed one is cut off early.

Cost: the default profile runs 60-150 examples per test (a few seconds in all). For the campaign behind
docs/reliability.md ("Hostile input"): `DSR_HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest
tests/test_hostile_input.py -s -p no:randomly` (the tally of inputs tried is printed at the end).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from doors.api.app import create_app
from doors.api.intake import router as opendsr_router
from doors.api.limits import BodySizeLimit
from doors.cli import app as cli_app
from dsr.access import AccessConfig, Role, TokenEntry, load_access, token_hash
from dsr.adapters.mail import SmtpConfig
from dsr.adapters.storage import config_from_settings, open_store
from dsr.config import ConfigError, load_data_map, load_policy
from dsr.service import DsrService
from dsr.settings import Settings

REPO = Path(__file__).resolve().parent.parent
OFFICER = "officer-token-" + "h" * 30

# -- profiles: small by default (the whole suite must stay fast), long for the documented campaign -----
_COMMON = {"deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much]}
# `make test` draws the same examples on every run (a red CI is then a real regression, reproducible
# at once); the long campaign draws fresh ones each time to keep finding new inputs.
settings.register_profile("dsr-hostile", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("dsr-hostile-long", max_examples=2500, derandomize=False, **_COMMON)
PROFILE = settings.get_profile("dsr-hostile-long" if os.environ.get("DSR_HYPOTHESIS_PROFILE") == "long"
                               else "dsr-hostile")
TRIED: Counter[str] = Counter()  # inputs tried per door, printed at the end (the figures in the docs)


@pytest.fixture(scope="module", autouse=True)
def _tally() -> Iterator[None]:
    yield
    print("\nhostile input tried: " + ", ".join(f"{door} {n}" for door, n in sorted(TRIED.items()))
          + f"; total {sum(TRIED.values())}")


# -- strategies -------------------------------------------------------------------------------------

#: Strings built to hurt: injection, wildcards, control and bidi characters, huge, odd Unicode.
NASTY = (
    "", " ", "\x00", "\r\n", "' OR 1=1 --", "\" OR \"\"=\"", "%", "_", "*", "\\", "../../etc/passwd", "%00",
    "a@b", "@example.com", "ada.lovelace@example.com\r\nBcc: all@example.com", "ADA.LOVELACE@EXAMPLE.COM",
    "аda.lovelace@example.com", "ada.lovelace@exаmple.com", "\u202egro.elpmaxe@ecnal", "😀@example.com",
    "x" * 5000, "1e309", "-1", "NaN", "null", "{}", "[]", "${jndi:ldap://x}", "{{7*7}}", "<script>", "\ufeff",
)
nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=60), st.text(alphabet=st.characters(
    codec="utf-8"), min_size=1, max_size=20))
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                        st.floats(allow_nan=False, allow_infinity=False), nasty_text)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def _valid_opendsr(request_id: str | None = None) -> dict[str, Any]:
    return {
        "subject_request_id": request_id or str(uuid.uuid4()),
        "subject_request_type": "access",
        "submitted_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "subject_identities": [{"identity_type": "email", "identity_value": "hostile.subject@example.com",
                                "identity_format": "raw"}],
        "regulation": "gdpr",
    }


@st.composite
def opendsr_bodies(draw: st.DrawFn) -> Any:
    """A valid OpenDSR body with some fields dropped, replaced by hostile values, or added; or junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)  # not even an object, sometimes
    body = _valid_opendsr()
    for key in list(body):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            del body[key]
        elif choice == 1:
            body[key] = draw(json_value)
        elif choice == 2 and key == "subject_identities":
            body[key] = [{k: draw(st.one_of(st.just(v), json_value)) for k, v in body[key][0].items()}
                         for _ in range(draw(st.integers(0, 3)))]
    for _ in range(draw(st.integers(0, 2))):
        body[draw(st.sampled_from(["status_callback_urls", "country", "regime", "extensions", "admin",
                                   "property_id", "api_version"]))] = draw(json_value)
    return body


# -- the HTTP API --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Inbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook
        return "250 accepted"


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient, DsrService]]:
    """(the public intake, the whole API as an officer, the service), on a real SMTP server on loopback."""
    home = tmp_path_factory.mktemp("hostile")
    port = _free_port()
    smtp = Controller(_Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    service = DsrService(Settings(home=home / "var", config_dir=REPO / "config", identity_key="hostile-key",
                                  systems_file=REPO / "config" / "demo" / "systems.yaml"))
    config = SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
                        recipients=("unused@precision.test",))
    # The intake's own router, with rate limits out of the way (they are tested in test_intake.py), and
    # the same body cap the app puts in front of it.
    public = FastAPI()
    public.include_router(opendsr_router(service, lambda: config, submit_limit=(10**9, 1.0),
                                         verify_limit=(10**9, 1.0), status_limit=(10**9, 1.0)))
    public.add_middleware(BodySizeLimit, max_bytes=service.settings.api_max_body_bytes)
    access = AccessConfig(tokens=(TokenEntry(name="alice", role=Role.OFFICER, sha256=token_hash(OFFICER)),))
    whole = create_app(service, access, open_store(config_from_settings(service.settings)),
                       intake_smtp=lambda: config)
    with TestClient(public, raise_server_exceptions=False) as intake, \
            TestClient(whole, raise_server_exceptions=False) as api:
        yield intake, api, service
    service.close()
    smtp.stop()


def _assert_clean_answer(answer: Any, allowed: set[int]) -> None:
    """What a caller sees: an expected status, JSON, no stack trace; a 422 names every field."""
    assert answer.status_code in allowed, (answer.status_code, answer.text[:500])
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    detail = answer.json()["detail"] if answer.status_code >= 400 else None
    if answer.status_code == 422:
        assert isinstance(detail, list) and detail
        for problem in detail:
            assert problem["loc"] and problem["loc"][0] in ("body", "query", "path"), problem
            assert isinstance(problem["msg"], str) and problem["msg"].strip(), problem
    elif detail is not None:
        assert isinstance(detail, str | list) and detail
    elif answer.status_code == 307:
        assert answer.headers["location"].startswith("http://testserver/") and not answer.content


INTAKE_STATUSES = {200, 201, 400, 404, 409, 413, 422}


@settings(PROFILE)
@given(body=opendsr_bodies())
def test_opendsr_submit_answers_every_body_cleanly_naming_the_field(doors, body: Any) -> None:
    intake, _, _ = doors
    TRIED["http intake"] += 1
    answer = intake.post("/opendsr/requests", json=body)
    _assert_clean_answer(answer, INTAKE_STATUSES)
    if answer.status_code == 422:  # never the submitted address echoed back (it may be someone else's)
        assert "hostile.subject@example.com" not in answer.text


@settings(PROFILE)
@given(raw=st.one_of(st.binary(max_size=300), nasty_text.map(lambda s: s.encode("utf-8"))),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "application/json; charset=latin-1", ""]))
def test_opendsr_submit_answers_garbled_bytes_cleanly(doors, raw: bytes, content_type: str) -> None:
    intake, _, _ = doors
    TRIED["http intake (raw bytes)"] += 1
    answer = intake.post("/opendsr/requests", content=raw, headers={"Content-Type": content_type} if content_type
                         else {})
    _assert_clean_answer(answer, INTAKE_STATUSES)


@settings(PROFILE)
@given(request_id=st.one_of(nasty_text, st.uuids().map(str)), code=json_value)
@example(request_id=".", code="123456")
@example(request_id="..", code="123456")
def test_opendsr_verify_and_status_answer_every_id_and_code_cleanly(doors, request_id: str, code: Any) -> None:
    intake, _, _ = doors
    TRIED["http verify/status"] += 1
    path_id = quote(request_id, safe="") or "x"  # as a client would send it
    # A segment of "." or ".." is a dot segment, which URL normalisation removes (`/requests/./verify` is
    # `/requests/verify`, the status route of an id "verify"); percent-encoded, it is an id like any other.
    if request_id in (".", ".."):
        path_id = "%2E" * len(request_id)
    # (An id of "/" ends the path in a slash: Starlette redirects (307) to the path without it; not followed.)
    verify = intake.post(f"/opendsr/requests/{path_id}/verify", json={"code": code}, follow_redirects=False)
    _assert_clean_answer(verify, {400, 404, 422, 307})
    status = intake.get(f"/opendsr/requests/{path_id}", follow_redirects=False)
    _assert_clean_answer(status, {404, 307})


@settings(PROFILE)
@given(route=st.sampled_from(["/requests", "/requests/{id}/verify", "/requests/{id}/extend",
                              "/requests/{id}/cancel", "/requests/{id}/subject-token"]),
       body=st.one_of(json_value, st.fixed_dictionaries({}, optional={
           "type": nasty_text | st.sampled_from(["access", "erasure"]), "email": nasty_text,
           "regime": nasty_text | st.just("gdpr"), "country": json_scalar, "received": json_scalar,
           "channel": json_scalar, "method": nasty_text, "note": nasty_text, "reason": nasty_text,
           "days": json_scalar})))
def test_officer_routes_answer_every_body_cleanly_naming_the_field(doors, route: str, body: Any) -> None:
    _, api, service = doors
    TRIED["http officer routes"] += 1
    target = service.list()[0].request_id if service.list() else "no-such-request"
    answer = api.post(route.replace("{id}", target), json=body, headers={"Authorization": f"Bearer {OFFICER}"})
    _assert_clean_answer(answer, {200, 201, 400, 404, 409, 413, 422})


def test_an_oversized_body_is_refused_before_it_is_read(doors) -> None:
    """A declared length over the cap: 413, and not one byte is asked for (the app would hang on a real socket
    waiting for 70 kB); a streamed body without a length is cut off at the cap, not buffered whole."""
    _, api, service = doors
    cap = service.settings.api_max_body_bytes
    huge = api.post("/opendsr/requests", content=b"{" + b" " * (cap + 10) + b"}",
                    headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "body" in huge.json()["detail"]

    def asgi_call(headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int]:
        pulled, sent = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            pulled += 1
            return {"type": "http.request", "body": b" " * 1024, "more_body": pulled < chunks}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/opendsr/requests", "raw_path": b"/opendsr/requests", "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                                              *headers], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
        asyncio.run(api.app(scope, receive, send))
        return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled

    chunks = cap // 1024 * 10  # ten times the cap, if it were all read
    assert asgi_call([(b"content-length", str(chunks * 1024).encode())], chunks) == (413, 0)
    status, pulled = asgi_call([(b"transfer-encoding", b"chunked")], chunks)
    assert status == 413 and pulled <= cap // 1024 + 1
    assert asgi_call([(b"content-length", b"12abc")], 1)[0] == 400


# -- the CLI ---------------------------------------------------------------------------------------------

COMMANDS: dict[tuple[str, ...], tuple[str, ...]] = {  # command -> its options (and some that do not exist)
    ("submit",): ("--type", "--email", "--regime", "--country", "--received", "--channel"),
    ("verify",): ("--method", "--note"),
    ("extend",): ("--reason",),
    ("cancel",): ("--reason",),
    ("pause",): ("--for", "--reason"),
    ("resume",): ("--for",),
    ("acknowledge",): ("--note",),
    ("status",): ("--json",),
    ("list",): ("--open", "--json"),
    ("deadline",): ("--country", "--extended"),
    ("sweep",): ("--at",),
    ("bundle", "verify"): ("--public-key", "--request"),
    ("bundle", "export"): ("--output", "--version"),
    ("ledger", "verify"): (),
    ("token", "create"): ("--role", "--name"),
    ("hold", "add"): ("--email", "--ref", "--reason"),
    ("hold", "release"): ("--reason",),
    ("hold", "list"): ("--all", "--json"),
    ("task", "list"): ("--open", "--json"),
    ("task", "done"): ("--note", "--no-resume"),
}
cli_runner = CliRunner()


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-cli")


@st.composite
def cli_args(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    options = COMMANDS[command]
    tokens = draw(st.lists(st.one_of(st.sampled_from((*options, "--bogus", "-x", "--", "--help"))
                                     if options else st.just("--bogus"), nasty_text,
                                     st.sampled_from(["gdpr", "access", "erasure", "2026-01-30", "officer"])),
                           max_size=8))
    return [*command, *tokens]


@settings(PROFILE)
@given(args=cli_args())
def test_the_cli_answers_garbled_arguments_with_a_message_never_a_traceback(
        cli_home: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    for key, value in {"DSR_HOME": str(cli_home / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
                       "DSR_SYSTEMS_FILE": str(REPO / "config" / "demo" / "systems.yaml"),
                       "DSR_IDENTITY_KEY": "hostile-cli-key"}.items():
        monkeypatch.setenv(key, value)
    if any("\x00" in a for a in args):  # a NUL cannot reach argv from a shell (execve refuses it)
        args = [a.replace("\x00", "") for a in args]
    TRIED["cli"] += 1
    result = cli_runner.invoke(cli_app, args, catch_exceptions=True)
    # An exception other than the exit Typer raises is what `main()` would print as "internal error".
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1, 2, 3), (args, result.exit_code, result.output)
    if result.exit_code != 0:
        said = result.output.lower()
        assert "error" in said or "usage" in said or "fail" in said, (args, result.output)
    if result.exit_code == 2 and "error:" in result.output and "Usage" not in result.output:
        # Our own refusals name the field: "error: <field>: ..." (or say which request is unknown).
        message = result.output.split("error:", 1)[1].strip()
        assert ":" in message or "request" in message, (args, result.output)


# -- the config loader ------------------------------------------------------------------------------

CONFIGS = {
    "systems": (REPO / "config" / "demo" / "systems.yaml", load_data_map),
    "policy": (REPO / "config" / "policy.yaml", load_policy),
    "access": (None, load_access),
}
ACCESS_YAML = {"tokens": [{"name": "kpmg auditor", "role": "auditor", "sha256": "a" * 64},
                          {"name": "alice", "role": "officer", "sha256": "b" * 64}]}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_config(draw: st.DrawFn) -> tuple[str, str]:
    """(which file, its text) with one to three fields deleted, retyped, renamed or added."""
    which = draw(st.sampled_from(sorted(CONFIGS)))
    path = CONFIGS[which][0]
    data = yaml.safe_load(path.read_text()) if path is not None else json.loads(json.dumps(ACCESS_YAML))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(_paths(data)))
        if not where:
            if draw(st.booleans()):
                data = draw(json_value)
            continue
        parent = data
        try:
            for part in where[:-1]:
                parent = parent[part]
            last = where[-1]
            action = draw(st.integers(0, 3))
            if action == 0 and isinstance(parent, dict):
                del parent[last]
            elif action == 1 and isinstance(parent, dict):
                parent[draw(nasty_text)] = parent.pop(last)
            elif action == 2 and isinstance(parent, dict):
                parent[draw(st.text(max_size=12))] = draw(json_value)
            else:
                parent[last] = draw(json_value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape under this path
    return which, yaml.safe_dump(data, allow_unicode=True)


def _assert_config_refusal_names_the_field(error: ConfigError, path: Path) -> None:
    message = str(error)
    assert message.startswith(f"{path}: "), message
    where = message[len(f"{path}: "):]
    assert where.startswith("not valid YAML") or where.startswith("not UTF-8") or ": " in where, message
    assert "Traceback" not in message


@settings(PROFILE)
@given(mutation=mutated_config())
def test_config_mutations_load_or_fail_naming_the_file_and_field(tmp_path: Path, mutation: tuple[str, str]) -> None:
    which, text = mutation
    TRIED["config (mutated fields)"] += 1
    path = tmp_path / f"{which}.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        CONFIGS[which][1](path)
    except ConfigError as error:
        _assert_config_refusal_names_the_field(error, path)


@settings(PROFILE)
@given(which=st.sampled_from(sorted(CONFIGS)), raw=st.one_of(
    st.binary(max_size=200), nasty_text.map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"\xff\xfe\x00", b"a: [", b"!!python/object:os.system ls", b"*x", b"a: &a [*a]",
                     b"systems: !!binary AAAA", b"version: 1\nsystems:\n  crm: {kind: 1}\n",
                     b"\t- tab", "v: \u00e9".encode("latin-1")])))
def test_garbled_config_files_fail_naming_the_file(tmp_path: Path, which: str, raw: bytes) -> None:
    TRIED["config (garbled bytes)"] += 1
    path = tmp_path / f"{which}.yaml"
    path.write_bytes(raw)
    try:
        CONFIGS[which][1](path)
    except ConfigError as error:
        _assert_config_refusal_names_the_field(error, path)


def test_a_config_refusal_names_the_nested_field() -> None:
    """The property tests accept any named path; this pins one down, as a user would read it."""
    import tempfile

    data = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    first = next(iter(data["tax_retention"]))
    data["tax_retention"][first]["years"] = -3
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=rf"^{path}: tax_retention\.{first}\.years: "):
            load_policy(path)
        path.write_bytes(b"version: 1\nnote: \xff\xfe\n")
        with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8"):
            load_policy(path)
