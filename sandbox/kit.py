"""The shared kit of the vendor sandboxes: a loopback HTTP server, routing, rate limits, faults.

Every sandbox is a thin module holding only its vendor's routes and shapes (`sandbox/<vendor>.py`;
its larger parts, such as a schema, a query language or the demo seed, in modules of their own beside
it); this kit gives each the same machinery:

- `Router` / `Request` / `Response`: regex routes over the standard library's threading HTTP
  server (HTTP/1.1 keep-alive). The standard library rather than an ASGI server because a
  connection reset must be a real TCP reset, which only owning the socket allows.
- `Vendor`: the hooks a sandbox fills in (its authentication, limits, error answers, routes); a
  handler raises `Refusal` to answer with the vendor's error from anywhere.
- `WindowLimiter`, `DailyCounter`, `retry_after`, `InFlight`: a vendor's rate windows, daily quotas,
  the ``Retry-After`` they answer with, and its cap on concurrent calls (`Vendor.concurrency_cap`).
- `bearer_token`, `TokenStore`, `oauth_error`: the access tokens a vendor issues, expires and revokes.
- `Faults`: seeded, deterministic fault injection (server errors, timeouts, connection resets,
  throttling, expired sessions, added latency), set per test or benchmark.
- `SandboxServer`: runs an app on 127.0.0.1 on a free port, in-process (a thread) for tests.
- A control API under `/__sandbox__/` (stats, faults, pace, reset, and each vendor's own actions,
  registered with `Vendor.on_control`) that tests and benchmarks use; vendors' clients never call it.
  `ControlClient` is its client.
- `demo_cli` / `serve_demo`: the ``python -m sandbox.<vendor>`` entry point.

Sandboxes know vendor wire formats only, never the project's own code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

CONTROL_PREFIX = "/__sandbox__"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the matched route
    context: dict[str, Any] = field(default_factory=dict)  # per-call scratch space for a vendor's hooks

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def payload(self) -> dict[str, Any]:
        """The JSON object of a control call ({} for an empty body or a JSON null)."""
        return (self.json() if self.body else None) or {}


def bearer_token(request: Request, schemes: tuple[str, ...] = ("bearer",)) -> str:
    """The token of an ``Authorization: <scheme> <token>`` header ('' without one of `schemes`)."""
    scheme, _, token = (request.header("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() in schemes else ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, json.dumps(value).encode("utf-8"),
                   {"Content-Type": "application/json;charset=UTF-8", **(headers or {})})

    @classmethod
    def text(cls, value: str, status: int = 200, content_type: str = "text/plain") -> Response:
        return cls(status, value.encode("utf-8"), {"Content-Type": content_type})

    @classmethod
    def empty(cls, status: int = 204, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


Handler = Callable[[Request], Response]


class Refusal(Exception):
    """Raised anywhere in a route's handler: the call is answered with `response` (the vendor's error)."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"refused: {response.status}")
        self.response = response


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    """An OAuth 2.0 token endpoint's error answer (RFC 6749 section 5.2)."""
    return Response.json({"error": error, "error_description": description}, status)


class Router:
    """Routes by method and a regex on the path (named groups become `request.params`)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler
        return register

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None | bool:
        """The handler and its params; False when the path exists under another method."""
        other_method = False
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match:
                if route_method == method:
                    return handler, match.groupdict()
                other_method = True
        return False if other_method else None


class WindowLimiter:
    """At most `limit` calls in any `window` seconds (sliding window, thread-safe)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> tuple[bool, float, int]:
        """(allowed, seconds until a slot frees, remaining after this call)."""
        now = time.monotonic()
        with self._lock:
            while self._calls and now - self._calls[0] >= self.window:
                self._calls.popleft()
            if len(self._calls) >= self.limit:
                return False, self.window - (now - self._calls[0]), 0
            self._calls.append(now)
            return True, 0.0, self.limit - len(self._calls)

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()


class DailyCounter:
    """Calls counted against a daily quota; the quota is passed in, as vendors let tests change it."""

    def __init__(self) -> None:
        self.used = 0
        self._lock = threading.Lock()

    def take(self, quota: int | None) -> bool:
        """Count one call; False (and not counted) when `quota` is used up. None: no quota."""
        if quota is None:
            return True
        with self._lock:
            if self.used >= quota:
                return False
            self.used += 1
            return True

    def exhaust(self, quota: int | None) -> int:
        """Use the quota up (a quota of 1 when there was none); the quota now in force."""
        with self._lock:
            self.used = quota or 1
            return self.used

    def reset(self) -> None:
        with self._lock:
            self.used = 0


def retry_after(seconds: float, fractional: bool = False) -> str:
    """A ``Retry-After`` value: whole seconds (at least 1), or milliseconds' precision for fast tests."""
    return f"{max(seconds, 0.001):.3f}" if fractional else str(max(1, math.ceil(seconds)))


def seconds_to_midnight() -> float:
    """Seconds until the next UTC midnight, when vendors' daily quotas start again."""
    now = datetime.now(UTC)
    return ((now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0) - now).total_seconds()


class InFlight:
    """The calls being answered right now, with when each started (thread-safe): a vendor's cap on
    concurrent calls counts them."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def enter(self, cap: int | None, older_than: float = 0.0) -> int | None:
        """Admit a call (its key for `leave`) unless `cap` calls that have run `older_than` seconds or
        more are in flight (None: refused). A cap of None admits every call."""
        now = time.monotonic()
        with self._lock:
            if cap is not None and sum(1 for t in self._started.values() if now - t >= older_than) >= cap:
                return None
            key = next(self._keys)
            self._started[key] = now
            return key

    def leave(self, key: int) -> None:
        with self._lock:
            self._started.pop(key, None)


class TokenStore:
    """The access tokens a vendor issued, each until its expiry (thread-safe).

    `problem` tells a token the vendor honours (None) from a missing, expired or never issued one.
    """

    def __init__(self) -> None:
        self._expiry: dict[str, float | None] = {}  # token -> monotonic expiry, None: until revoked
        self._expired: set[str] = set()
        self._lock = threading.Lock()

    def issue(self, token: str, lifetime: float | None) -> str:
        with self._lock:
            self._expiry[token] = None if lifetime is None else time.monotonic() + lifetime
        return token

    def problem(self, token: str) -> str | None:
        """None for a live token, else 'missing', 'expired' or 'invalid'."""
        if not token:
            return "missing"
        with self._lock:
            if token in self._expiry:
                expiry = self._expiry[token]
                if expiry is None or time.monotonic() < expiry:
                    return None
                del self._expiry[token]
                self._expired.add(token)
            return "expired" if token in self._expired else "invalid"

    def revoke(self, token: str) -> None:
        """End one token now (the client must fetch another)."""
        with self._lock:
            if self._expiry.pop(token, 0) != 0:
                self._expired.add(token)

    def expire_all(self) -> int:
        """End every live token; how many there were."""
        with self._lock:
            count = len(self._expiry)
            self._expired.update(self._expiry)
            self._expiry.clear()
            return count


@dataclass
class FaultConfig:
    """What goes wrong, how often. Rates are probabilities per call; the seed fixes the sequence."""

    error_rate: float = 0.0  # the vendor's 5xx
    timeout_rate: float = 0.0  # hold the call `timeout_seconds`, then answer (clients time out first)
    reset_rate: float = 0.0  # TCP reset, no answer
    throttle_rate: float = 0.0  # the vendor's throttling answer, as if the limit were hit
    expire_rate: float = 0.0  # the vendor's expired-session answer
    latency_ms: float = 0.0  # added to every call
    timeout_seconds: float = 30.0
    seed: int = 0
    path_pattern: str | None = None  # only calls whose path matches this regex are faulted
    burst: int = 0  # when > 0: fault only the next `burst` matching calls, then stop

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)


class Faults:
    """Draws faults from a seeded generator, so a failing run can be replayed exactly."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._pattern = re.compile(config.path_pattern) if config.path_pattern else None
            self._burst_left = config.burst

    def draw(self, path: str) -> str | None:
        """The fault for this call ('error', 'timeout', 'reset', 'throttle', 'expire') or None."""
        with self._lock:
            c = self.config
            if path.startswith(CONTROL_PREFIX) or (self._pattern and not self._pattern.search(path)):
                return None
            if c.burst and self._burst_left <= 0:
                return None
            roll = self._rng.random()
            for kind, rate in (("error", c.error_rate), ("timeout", c.timeout_rate), ("reset", c.reset_rate),
                               ("throttle", c.throttle_rate), ("expire", c.expire_rate)):
                if roll < rate:
                    if c.burst:
                        self._burst_left -= 1
                    return kind
                roll -= rate
            return None


@dataclass(frozen=True)
class Written:
    """One write call a vendor received and what it answered (status 0: the connection was reset)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    status: int
    answer: bytes


class Vendor:
    """What a sandbox module provides: its routes, its error shapes, its limits.

    Subclasses override the hooks; the kit calls them.
    """

    name = "vendor"

    def __init__(self) -> None:
        self.router = Router()
        self.faults = Faults()
        self.stats: Counter[str] = Counter()
        self.stats_lock = threading.Lock()
        # Opt-in (chaos campaigns set a list): every write call with its answer, to count which
        # vendor actions a crash made a client repeat. Off by default: bodies cost memory.
        self.journal: list[Written] | None = None
        # A client-side budget to hold the pipeline to (benchmarks, the workers test): calls past it
        # get the vendor's throttling answer and count as `over_pace`. None: the vendor's own limits only.
        self.pace: WindowLimiter | None = None
        # Which calls the pace counts (vendors do not count OAuth token calls against API limits).
        self.pace_pattern: re.Pattern[str] | None = None
        self.controls = Router()  # the vendor's own control actions (`on_control`)
        self.in_flight = InFlight()  # counted only for calls `concurrency_cap` caps
        # Set by a vendor whose routes all read and write one store: each handler then runs holding it.
        self.store_lock: AbstractContextManager[Any] | None = None

    def on_control(self, method: str, action: str, handler: Callable[[dict[str, Any], dict[str, str]], Any]) -> None:
        """Answer ``<method> /__sandbox__/<action>`` (a regex; named groups are passed as params) with
        `handler(body, params)`: a `Response`, or a value answered as JSON. A KeyError, ValueError or
        TypeError (a control call missing a field or giving a wrong one) is answered 400."""
        self.controls.add(method, action, lambda request: handler(request.payload(), request.params))

    # Hooks ------------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        """None when the call may proceed, else the vendor's 401."""
        return None

    def limit(self, request: Request) -> Response | None:
        """None when within the vendor's limits, else its throttling answer."""
        return None

    def decorate(self, request: Request, response: Response) -> None:
        """Add headers every answer carries (usage counters and the like)."""

    def throttled(self, request: Request) -> Response:
        return Response.json({"error": "rate limited"}, 429, {"Retry-After": "1"})

    def expired(self, request: Request) -> Response:
        return Response.json({"error": "session expired"}, 401)

    def server_error(self, request: Request) -> Response:
        return Response.json({"error": "service unavailable"}, 503)

    def not_found(self, request: Request) -> Response:
        return Response.json({"error": "not found"}, 404)

    def method_not_allowed(self, request: Request) -> Response:
        """The answer for a known path under another method."""
        return Response.json({"error": "method not allowed"}, 405)

    def concurrency_cap(self, request: Request) -> tuple[int | None, float] | None:
        """For a call the vendor's cap on concurrent calls applies to: (the cap, how long a call must
        have run to count, in seconds). None: no cap for this call. Over the cap: `throttled`."""
        return None

    def reset_state(self) -> None:
        """Forget limits' windows (and anything else a test wants fresh)."""

    def control(self, action: str, request: Request) -> Response | None:
        """Vendor-specific control actions under /__sandbox__/ (e.g. seed-demo); None if unknown."""
        return None

    def routes(self) -> None:
        """Register the vendor's routes (`self.router`) and control actions (`on_control`)."""

    def install(self, seed_demo_data: bool = False) -> None:
        """The last step of a vendor's constructor, once the state its handlers use exists: register its
        routes and control actions, then load its demo data if asked."""
        self.routes()
        if seed_demo_data:
            self.seed_demo()  # type: ignore[attr-defined]

    def set_pace(self, calls: int | None, period: float = 1.0, path_pattern: str | None = None) -> None:
        """Hold calls (those whose path matches `path_pattern`, else all) to `calls` per `period`
        seconds; `calls=None` clears it."""
        self.pace_pattern = re.compile(path_pattern) if path_pattern else None
        self.pace = WindowLimiter(calls, period) if calls else None

    # Machinery ----------------------------------------------------------------------------------

    def count(self, key: str) -> None:
        with self.stats_lock:
            self.stats[key] += 1

    def handle(self, request: Request) -> Response | None:
        """Answer one call; None means: reset the connection."""
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        cap = self.concurrency_cap(request)
        key = None if cap is None else self.in_flight.enter(*cap)
        if cap is not None and key is None:
            self.count("calls")
            self.count("throttled")
            return self.throttled(request)
        try:
            response = self._answer(request)
        finally:
            if key is not None:
                self.in_flight.leave(key)
        journal = self.journal
        if journal is not None and request.method not in ("GET", "HEAD"):
            with self.stats_lock:
                journal.append(Written(request.method, request.path, request.query, request.body,
                                       response.status if response else 0, response.body if response else b""))
        return response

    def _answer(self, request: Request) -> Response | None:
        self.count("calls")
        # The pace is checked first, so it counts arrivals (as a vendor does), not this server's own
        # processing time (auth, faults), which would add jitter to the measurement.
        pace, metered = self.pace, self.pace_pattern
        if pace is not None and (metered is None or metered.search(request.path)) and not pace.acquire()[0]:
            self.count("throttled")
            self.count("over_pace")
            return self.throttled(request)
        config = self.faults.config
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        fault = self.faults.draw(request.path)
        if fault:
            self.count(f"fault_{fault}")
        if fault == "reset":
            return None
        if fault == "timeout":
            time.sleep(config.timeout_seconds)
        if fault == "error":
            return self.server_error(request)
        if fault == "expire":
            return self.expired(request)
        if fault == "throttle":
            self.count("throttled")
            return self.throttled(request)
        denied = self.authenticate(request)
        if denied is not None:
            self.count("unauthenticated")
            return denied
        limited = self.limit(request)
        if limited is not None:
            self.count("throttled")
            return limited
        resolved = self.router.resolve(request.method, request.path)
        if resolved is None:
            return self.not_found(request)
        if resolved is False:
            return self.method_not_allowed(request)
        handler, params = resolved  # type: ignore[misc]
        request.params = params
        lock = self.store_lock
        try:
            if lock is None:
                response = handler(request)
            else:
                with lock:
                    response = handler(request)
        except Refusal as refusal:
            response = refusal.response
        self.decorate(request, response)
        return response

    def _control(self, request: Request) -> Response:
        action = request.path[len(CONTROL_PREFIX):].strip("/")
        if action == "stats" and request.method == "GET":
            with self.stats_lock:
                return Response.json(dict(self.stats))
        if action == "faults" and request.method == "POST":
            try:
                self.faults.configure(FaultConfig.from_dict(request.json() or {}))
            except (ValueError, TypeError) as exc:
                return Response.json({"error": str(exc)}, 400)
            return Response.json(asdict(self.faults.config))
        if action == "pace" and request.method == "POST":
            body = request.json() or {}
            try:
                self.set_pace(int(body["calls"]), float(body["period_seconds"]), body.get("path_pattern"))
            except (KeyError, TypeError, ValueError, re.error):
                return Response.json({"error": "pace: give calls, period_seconds and optionally path_pattern, "
                                      "or {} to clear"}, 400)
            return Response.json({"pace": body or None})
        if action == "reset" and request.method == "POST":
            with self.stats_lock:
                self.stats.clear()
            self.set_pace(None)
            self.faults.configure(FaultConfig())
            self.reset_state()
            return Response.json({"reset": True})
        resolved = self.controls.resolve(request.method, action)
        if resolved:
            handler, request.params = resolved  # type: ignore[misc]
            try:
                value = handler(request)
            except (KeyError, ValueError, TypeError) as exc:
                return Response.json({"error": f"{type(exc).__name__}: {exc}"}, 400)
            return value if isinstance(value, Response) else Response.json(value)
        answer = self.control(action, request)
        if answer is not None:
            return answer
        return Response.json({"error": f"unknown control {action!r}"}, 404)


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each answer would wait ~40 ms for
    # the client's delayed ACK, which would swamp every latency the sandboxes are meant to model.
    disable_nagle_algorithm = True
    vendor: Vendor  # set on the per-server subclass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True),
                          {k.lower(): v for k, v in self.headers.items()}, body)
        try:
            response = self.vendor.handle(request)
        except Exception as exc:  # a sandbox bug must show up as a clear 500, not a hung client
            response = Response.json({"sandbox_error": f"{type(exc).__name__}: {exc}"}, 500)
        if response is None:
            self._reset()
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (its timeout, an injected delay): nothing to answer.
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST: the client sees
        # "connection reset by peer", exactly as when a vendor's load balancer drops it.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats, not logs
        return


class _QuietServer(ThreadingHTTPServer):
    """A client that vanishes mid-call (a killed worker, a client timeout) is the vendor's everyday
    life, not an error worth a traceback on stderr; anything else still prints one."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)


class SandboxServer:
    """Serves a `Vendor` on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self, vendor: Vendor, port: int = 0) -> None:
        self.vendor = vendor
        handler = type(f"{vendor.name}Handler", (_HttpHandler,), {"vendor": vendor})
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        # A short poll interval so that stop() returns promptly (the default is 0.5 s).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-{vendor.name}", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ControlClient:
    """The control API of a sandbox at `base_url`, over plain `requests` (vendors' clients subclass it)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self._http = requests.Session()

    def control(self, action: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST a sandbox control action (``faults``, ``reset``, ``seed-demo``, ...); its JSON answer."""
        answer = self._http.post(f"{self.base_url}{CONTROL_PREFIX}/{action}", json=dict(body or {}),
                                 timeout=self.timeout)
        answer.raise_for_status()
        return answer.json()

    def stats(self) -> dict[str, int]:
        """The sandbox's counters (calls, faults, logins...)."""
        answer = self._http.get(f"{self.base_url}{CONTROL_PREFIX}/stats", timeout=self.timeout)
        answer.raise_for_status()
        return dict(answer.json())

    def close(self) -> None:
        self._http.close()


def demo_cli(vendor: str, description: str | None) -> argparse.ArgumentParser:
    """The arguments of ``python -m sandbox.<vendor>`` every sandbox takes: --port and --seed."""
    parser = argparse.ArgumentParser(prog=f"python -m sandbox.{vendor}", description=description)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--seed", type=int, default=7, help="demo seed (default 7)")
    return parser


def serve_demo(vendor: Vendor, port: int, seed: int | None) -> int:
    """Seed the vendor's demo data (unless `seed` is None), then serve it until interrupted."""
    if seed is not None:
        vendor.seed_demo(seed)  # type: ignore[attr-defined]
    serve_forever(vendor, port)
    return 0


def serve_forever(vendor: Vendor, port: int) -> None:
    """For `python -m sandbox.<vendor>`: serve in the foreground until interrupted."""
    server = SandboxServer(vendor, port).start()
    print(f"{vendor.name} sandbox on {server.url} (control API under {CONTROL_PREFIX}/)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
