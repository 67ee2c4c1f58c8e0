"""`dsr opendsr`: a small OpenDSR 2.0 controller client, to try a processor (ours or another).

    dsr opendsr discover URL                      what the processor supports (signature checked)
    dsr opendsr submit URL --type erasure --email ada@example.com --regulation gdpr [--callback URL]
                          [--sign-key controller.key]
    dsr opendsr status URL REQUEST_ID
    dsr opendsr cancel URL REQUEST_ID [--sign-key controller.key]
    dsr opendsr verify-callback --body FILE --signature SIG --callback-url URL (--certificate PEM | --processor URL)

URL is the processor's OpenDSR base (ours: http://host:8080/opendsr); the client adds `/v2/...`.
Every answer's `X-OpenDSR-Signature` is checked with the certificate that discovery names (and,
where present, `processor_signature`): an answer that does not verify is reported and exits 1.
Exit codes: 0 done, 1 not done or does not verify, 2 bad input (the processor's 400 names the
field), 3 refused in the current state (cancel of a request no longer pending; a 403).
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import requests
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dsr import opendsr
from dsr.opendsr_signing import OpenDsrKeyError, PrivateKey, load_certificate, sign_bytes, verify_bytes

TIMEOUT = 15.0
EXIT_OK, EXIT_NOT_DONE, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3


class OpenDsrClientError(Exception):
    """A problem talking to the processor (unreachable, not OpenDSR, a certificate that cannot be had)."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Any
    raw: bytes
    signature_ok: bool  # X-OpenDSR-Signature verifies with the processor's certificate
    processor_signature_ok: bool | None  # None: the body carries no processor_signature

    @property
    def verified(self) -> bool:
        return self.signature_ok and self.processor_signature_ok is not False


class OpenDsrClient:
    """A controller's view of an OpenDSR processor at `base_url` (e.g. https://host/opendsr)."""

    def __init__(self, base_url: str, *, signing_key: PrivateKey | None = None,
                 certificate: x509.Certificate | None = None, timeout: float = TIMEOUT,
                 session: requests.Session | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpenDsrClientError("url: must be the processor's http(s) OpenDSR base URL")
        self.base_url = base_url.rstrip("/")
        self.signing_key, self.timeout = signing_key, timeout
        self._certificate = certificate
        self.session = session or requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/v2/{path.lstrip('/')}"

    def _call(self, method: str, path: str, *, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> requests.Response:
        try:
            return self.session.request(method, self._url(path), data=body, timeout=self.timeout,
                                        allow_redirects=False,
                                        headers={"Accept": "application/json", **(headers or {})})
        except requests.RequestException as exc:
            raise OpenDsrClientError(f"url: the processor could not be reached ({type(exc).__name__})") from None

    def discover(self) -> Answer:
        return self._answer(self._call("GET", "discovery"))

    def certificate(self) -> x509.Certificate:
        """The processor certificate named by discovery (fetched once; must be on the processor's host)."""
        if self._certificate is None:
            answer = self._call("GET", "discovery")
            try:
                location = str(answer.json()["processor_certificate"])
            except (ValueError, KeyError, TypeError):
                raise OpenDsrClientError("discovery: no processor_certificate in the answer") from None
            if urlsplit(location).hostname != urlsplit(self.base_url).hostname:
                raise OpenDsrClientError("discovery: processor_certificate is not on the processor's host")
            try:
                fetched = self.session.get(location, timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                raise OpenDsrClientError(f"processor_certificate: unreachable ({type(exc).__name__})") from None
            if fetched.status_code != 200:
                raise OpenDsrClientError(f"processor_certificate: HTTP {fetched.status_code}")
            self._certificate = load_certificate(fetched.content, where="processor_certificate")
        return self._certificate

    def submit(self, body: dict[str, Any]) -> Answer:
        raw = opendsr.canonical(body)
        return self._answer(self._call("POST", "requests", body=raw, headers={
            "Content-Type": "application/json", **self._signature(raw)}))

    def status(self, request_id: str) -> Answer:
        return self._answer(self._call("GET", f"requests/{request_id}"))

    def cancel(self, request_id: str) -> Answer:
        return self._answer(self._call("DELETE", f"requests/{request_id}",
                                       headers=self._signature(request_id.encode("ascii"))))

    def _signature(self, data: bytes) -> dict[str, str]:
        return {opendsr.SIGNATURE_HEADER: sign_bytes(self.signing_key, data)} if self.signing_key else {}

    def _answer(self, response: requests.Response) -> Answer:
        raw = response.content
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")[:500]
        certificate = self.certificate()
        signature_ok = verify_bytes(certificate, raw, response.headers.get(opendsr.SIGNATURE_HEADER))
        processor_ok: bool | None = None
        if isinstance(body, dict) and "processor_signature" in body:
            processor_ok = opendsr.processor_signature_ok(certificate, body)
        return Answer(response.status_code, body, raw, signature_ok, processor_ok)


def new_request(*, request_type: str, email: str, regulation: str, callbacks: list[str] | None = None,
                request_id: str | None = None, submitted_time: str | None = None) -> dict[str, Any]:
    """An OpenDSR 2.0 request body."""
    body: dict[str, Any] = {
        "subject_request_id": request_id or str(uuid.uuid4()),
        "subject_request_type": request_type,
        "submitted_time": submitted_time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject_identities": [{"identity_type": "email", "identity_value": email, "identity_format": "raw"}],
        "regulation": regulation,
        "api_version": opendsr.API_VERSION,
    }
    if callbacks:
        body["status_callback_urls"] = list(callbacks)
    return body


def verify_callback(raw: bytes, signature: str | None, certificate: x509.Certificate,
                    own_callback_url: str) -> str | None:
    """What a controller does with a callback (spec 8.8): None when it is authentic and ours, else why not."""
    if not verify_bytes(certificate, raw, signature):
        return "the signature does not verify with the processor's certificate"
    try:
        body = json.loads(raw)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(body, dict) or body.get("status_callback_url") != own_callback_url:
        return "status_callback_url is not this endpoint"
    return None


# -- the CLI ---------------------------------------------------------------------------------------


app = typer.Typer(help="Talk to an OpenDSR 2.0 processor as a controller (signatures checked).",
                  no_args_is_help=True)


def _out(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _fail(code: int, message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def _client(url: str, sign_key: Path | None = None) -> OpenDsrClient:
    key = None
    if sign_key is not None:
        try:
            loaded = serialization.load_pem_private_key(sign_key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            _fail(EXIT_BAD_INPUT, f"--sign-key: {sign_key} is not a readable unencrypted PEM private key")
        key = loaded  # type: ignore[assignment]
    try:
        return OpenDsrClient(url, signing_key=key)  # type: ignore[arg-type]
    except OpenDsrClientError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
        raise  # unreachable: _fail exits


def _report(answer: Answer, ok: tuple[int, ...]) -> None:
    shown = answer.body
    if isinstance(shown, dict) and "encoded_request" in shown:  # the spec: controllers must not log or store it
        shown = shown | {"encoded_request": f"<{len(shown['encoded_request'])} characters, not shown>"}
    _out({"status_code": answer.status_code, "signature_verified": answer.verified, "body": shown})
    if not answer.verified:
        _fail(EXIT_NOT_DONE, "the answer's signature does not verify with the processor's certificate")
    if answer.status_code in ok:
        return
    if answer.status_code == 400 and isinstance(answer.body, dict) and \
            "not pending" in json.dumps(answer.body.get("error", {})):
        _fail(EXIT_REFUSED, "the request is no longer pending")
    if answer.status_code == 403:
        _fail(EXIT_REFUSED, "refused: the signature is missing or not accepted")
    if answer.status_code in (400, 404):
        _fail(EXIT_BAD_INPUT, (answer.body or {}).get("error", {}).get("message", "refused")
              if isinstance(answer.body, dict) else "refused")
    _fail(EXIT_NOT_DONE, f"the processor answered HTTP {answer.status_code}")


def _run(call: Any, ok: tuple[int, ...]) -> None:
    try:
        _report(call(), ok)
    except (OpenDsrClientError, OpenDsrKeyError) as exc:
        _fail(EXIT_NOT_DONE, str(exc))


@app.command()
def discover(url: Annotated[str, typer.Argument(help="The processor's OpenDSR base URL.")]) -> None:
    """What the processor supports: api_version, identities, request types, its certificate."""
    client = _client(url)
    _run(client.discover, (200,))


@app.command()
def submit(
    url: Annotated[str, typer.Argument(help="The processor's OpenDSR base URL.")],
    email: Annotated[str, typer.Option(help="The subject's e-mail address.")],
    request_type: Annotated[str, typer.Option("--type", help="access, portability or erasure.")] = "access",
    regulation: Annotated[str, typer.Option(help="gdpr or ccpa (ours also: uk-gdpr, lgpd, pipeda).")] = "gdpr",
    callback: Annotated[list[str] | None, typer.Option(help="A status callback URL (repeatable).")] = None,
    request_id: Annotated[str | None, typer.Option(help="The subject_request_id (default: a new UUID v4).")] = None,
    sign_key: Annotated[Path | None, typer.Option(help="The controller's private key (PEM) to sign with.")] = None,
) -> None:
    """Submit a request; prints the processor's answer (201: recorded)."""
    client = _client(url, sign_key)
    body = new_request(request_type=request_type, email=email, regulation=regulation, callbacks=callback,
                       request_id=request_id)
    _run(lambda: client.submit(body), (201,))


@app.command()
def status(url: Annotated[str, typer.Argument(help="The processor's OpenDSR base URL.")],
           request_id: Annotated[str, typer.Argument(help="The subject_request_id.")]) -> None:
    """A request's status: pending, in_progress, completed or cancelled."""
    client = _client(url)
    _run(lambda: client.status(request_id), (200,))


@app.command()
def cancel(url: Annotated[str, typer.Argument(help="The processor's OpenDSR base URL.")],
           request_id: Annotated[str, typer.Argument(help="The subject_request_id.")],
           sign_key: Annotated[Path | None, typer.Option(help="The controller's private key (PEM).")] = None) -> None:
    """Cancel a request while it is pending (202); exit 3 once it is no longer pending."""
    client = _client(url, sign_key)
    _run(lambda: client.cancel(request_id), (202,))


@app.command("verify-callback")
def verify_callback_command(
    body: Annotated[Path, typer.Option(help="The callback's body, the exact bytes received.")],
    signature: Annotated[str, typer.Option(help="Its X-OpenDSR-Signature header.")],
    callback_url: Annotated[str, typer.Option(help="Your own callback endpoint (must match the body's).")],
    certificate: Annotated[Path | None, typer.Option(help="The processor certificate (PEM).")] = None,
    processor: Annotated[str | None, typer.Option(help="Or the processor's OpenDSR base URL (discovery).")] = None,
) -> None:
    """Check a received callback: the processor's signature over the exact bytes, and that it is for you."""
    if (certificate is None) == (processor is None):
        _fail(EXIT_BAD_INPUT, "--certificate, --processor: give exactly one")
    try:
        raw = body.read_bytes()
    except OSError:
        _fail(EXIT_BAD_INPUT, f"--body: cannot read {body}")
    try:
        cert = load_certificate(certificate.read_bytes(), where="--certificate") if certificate is not None \
            else _client(str(processor)).certificate()
    except OSError:
        _fail(EXIT_BAD_INPUT, f"--certificate: cannot read {certificate}")
    except (OpenDsrKeyError, OpenDsrClientError) as exc:
        _fail(EXIT_BAD_INPUT if certificate is not None else EXIT_NOT_DONE, str(exc))
    problem = verify_callback(raw, signature, cert, callback_url)
    if problem:
        _fail(EXIT_NOT_DONE, f"callback rejected: {problem}")
    _out({"verified": True, "callback": json.loads(raw)})
