"""The benchmarks' shared harness: figures as JSON lines, a human summary, measured child
processes, and a DsrService over a temp dir whose data map points at started sandboxes.

Output contract (every benchmark):

- one JSON line per figure on stdout: ``{"bench", "name", "value", "unit", "ratio", "target",
  "meets", "size", "note"}``. ``ratio`` is the number the figure is judged by (achieved over
  the ceiling, or over a baseline measured in the same run); ``target`` says how (``">= 0.9"``);
  ``meets`` is true/false, or null when there is no target. ``size`` says what was measured
  and, when it was reduced from the issue's size, ``size.reduced_from`` says from what;
- then a short human summary, every line starting with ``#`` (``grep -v '^#'`` keeps the JSON);
- progress goes to stderr.

Peak memory is measured in a child process (spawn, so nothing of the parent's heap is
inherited) that does only the benchmark's own work and reads its own ``VmHWM`` at the end;
the sandboxes stay in the parent, so their memory and CPU are not counted. Two sizes measured
the same way in one run are comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO_SYSTEMS = REPO / "config" / "demo" / "systems.yaml"
IDENTITY_KEY = "bench-identity-key"  # the HMAC key of identity hashes in benchmark ledgers (not a secret)
POSTGRES_URL = os.environ.get("DSR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only figures and the summary)."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- figures ---------------------------------------------------------------------------------------


def _meets(ratio: float | None, target: str | None) -> bool | None:
    """Whether `ratio` meets `target`: ``">= 0.9"``, ``"<= 1.2"``, or both joined by ``" and "``."""
    if ratio is None or target is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return None
    verdict = True
    for clause in target.split(" and "):
        op, _, bound = clause.strip().partition(" ")
        value = float(bound)
        verdict = verdict and {">=": ratio >= value, "<=": ratio <= value, ">": ratio > value, "<": ratio < value,
                               "==": ratio == value}[op]
    return verdict


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return float(f"{value:.4g}") if abs(value) < 1e4 else round(value, 1)
    return value


@dataclass
class Report:
    """Collects one benchmark's figures: each is printed as a JSON line when emitted."""

    bench: str
    figures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    out: Any = None  # a text stream; sys.stdout at emit time when None

    def emit(self, name: str, value: float | int | None, unit: str, ratio: float | None = None,
             target: str | None = None, *, size: Mapping[str, Any] | None = None, note: str | None = None,
             **extra: Any) -> dict[str, Any]:
        """Print one figure as a JSON line and keep it for the summary.

        Args:
            name: dotted figure name, e.g. ``purge.records_per_call.salesforce``.
            value: the measured value, in `unit`.
            ratio: what the figure is judged by (e.g. achieved / ceiling); None if nothing to judge.
            target: how the ratio is judged: ``">= 0.9"``, ``"<= 1.2"``...; None when the issue sets none.
            size: what was measured (records, requests...), with ``reduced_from`` when smaller than the issue's.
            note: one line a reader needs to interpret the figure.
            extra: more context fields, copied into the JSON line.
        """
        line = {"bench": self.bench, "name": name, "value": _round(value), "unit": unit,
                "ratio": _round(ratio), "target": target, "meets": _meets(ratio, target),
                "size": dict(size) if size else None, "note": note}
        line.update({k: _round(v) for k, v in extra.items()})
        self.figures.append(line)
        print(json.dumps(line, sort_keys=False), file=self.out or sys.stdout, flush=True)
        return line

    def note(self, text: str) -> None:
        """A line for the human summary only (what was skipped or reduced, and why)."""
        self.notes.append(text)

    def summary(self) -> None:
        out = self.out or sys.stdout
        elapsed = time.monotonic() - self.started
        print(f"# {self.bench}: {len(self.figures)} figure(s) in {elapsed:.0f} s, {machine()}", file=out)
        width = max([len(f["name"]) for f in self.figures] + [10])
        for f in self.figures:
            value = "-" if f["value"] is None else f"{f['value']:g}" if isinstance(f["value"], float) else str(f["value"])
            judged = ""
            if f["ratio"] is not None:
                judged = f"ratio {f['ratio']:g}"
                if f["target"]:
                    judged += f" (aim {f['target']}: {'ok' if f['meets'] else 'MISSED'})"
            print(f"#   {f['name']:<{width}}  {value:>10} {f['unit']:<12} {judged}".rstrip(), file=out)
        for text in self.notes:
            print(f"# note: {text}", file=out)
        out.flush()


def machine() -> str:
    return (f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {socket.gethostname()} "
            f"({os.cpu_count()} CPUs, Python {platform.python_version()})")


def parse_args(description: str, argv: list[str] | None, add: Callable[[argparse.ArgumentParser], None] | None = None,
               ) -> argparse.Namespace:
    """The arguments every benchmark takes: --quick (tiny sizes: the smoke test's), --size N."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs, measures nothing useful")
    parser.add_argument("--size", type=int, default=None, help="override the main size (see --help of each)")
    if add:
        add(parser)
    return parser.parse_args(argv)


# --- memory and child processes ----------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def machine_cpu_seconds() -> float | None:
    """CPU seconds every process of this machine has used since boot (user, nice, system, irq and
    softirq in /proc/stat; time the hypervisor stole is not ours), or None where there is no /proc."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    """This process's current resident set size (VmRSS), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class ChildResult:
    value: Any
    peak_rss_mb: float
    seconds: float


class ChildFailed(RuntimeError):
    pass


def _child_main(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                env: Mapping[str, str]) -> None:
    os.environ.update(env)
    try:
        value = fn(*args, **kwargs)
        conn.send(("ok", value, peak_rss_mb()))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent, which raises
        conn.send(("error", traceback.format_exc(), peak_rss_mb()))
    finally:
        conn.close()


def run_in_child(fn: Callable[..., Any], *args: Any, env: Mapping[str, str] | None = None, **kwargs: Any,
                 ) -> ChildResult:
    """Run `fn(*args, **kwargs)` in a fresh (spawned) interpreter; return its value and peak RSS.

    `fn` must be a module-level function and its arguments and value picklable. The child's
    peak RSS is its own VmHWM, read just before it returns: the benchmark's work, imports
    included, nothing of the parent's.
    """
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(send, fn, args, kwargs, dict(env or {})), daemon=True)
    started = time.monotonic()
    process.start()
    send.close()
    try:
        status, value, peak = receive.recv()
    except EOFError:
        process.join()
        raise ChildFailed(f"{fn.__name__}: the child process died (exit code {process.exitcode})") from None
    finally:
        receive.close()
    process.join()
    if status != "ok":
        raise ChildFailed(f"{fn.__name__} failed in the child process:\n{value}")
    return ChildResult(value, peak, time.monotonic() - started)


# --- a service over sandboxes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a (child) process needs to open the same DsrService: picklable."""

    home: str
    systems_file: str
    env: dict[str, str]
    ledger_url: str | None = None  # default: SQLite under home


@contextlib.contextmanager
def open_service(spec: ServiceSpec) -> Iterator[Any]:
    """A DsrService on the spec's home, data map and ledger (the conftest's construction)."""
    os.environ.update(spec.env)
    from pydantic import SecretStr

    from dsr.ledger.store import Ledger
    from dsr.service import DsrService
    from dsr.settings import Settings
    from dsr.state import index_row

    settings = Settings(home=Path(spec.home), config_dir=REPO / "config", systems_file=Path(spec.systems_file),
                        identity_key=SecretStr(IDENTITY_KEY))
    ledger = Ledger(spec.ledger_url, projector=index_row) if spec.ledger_url else None
    service = DsrService(settings, ledger)
    try:
        yield service
    finally:
        service.close()


def write_data_map(path: Path, *, crm_url: str, systems: Iterable[str] | None = None,
                   settings: Mapping[str, Mapping[str, Any]] | None = None,
                   crm_objects: Mapping[str, Any] | None = None) -> Path:
    """The demo data map, its CRM at `crm_url`, only `systems` (default: all), settings overridden."""
    import yaml

    data = yaml.safe_load(DEMO_SYSTEMS.read_text())
    data["systems"]["crm"]["settings"]["url"] = crm_url
    if crm_objects is not None:
        data["systems"]["crm"]["settings"]["objects"] = dict(crm_objects)
    if systems is not None:
        wanted = set(systems)
        unknown = wanted - set(data["systems"])
        if unknown:
            raise ValueError(f"not in the demo data map: {sorted(unknown)}")
        data["systems"] = {name: system for name, system in data["systems"].items() if name in wanted}
    for name, override in (settings or {}).items():
        data["systems"][name]["settings"].update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def vendor_limits(systems_file: Path | str | None = None) -> dict[str, tuple[int, float]]:
    """Each rate budget of the data map's connector settings: name -> (calls, period seconds).

    ``hubspot:search`` is HubSpot's separate search budget.
    """
    import yaml

    data = yaml.safe_load(Path(systems_file or DEMO_SYSTEMS).read_text())
    limits: dict[str, tuple[int, float]] = {}
    for name, system in data["systems"].items():
        settings = system.get("settings") or {}
        for key, suffix in (("rate_limit", ""), ("search_rate_limit", ":search")):
            spec = settings.get(key)
            if spec:
                limits[name + suffix] = (int(spec["calls"]), float(spec["period_seconds"]))
    return limits


@dataclass
class Stack:
    """Started sandboxes (in this process), a seeded CRM and a data map over them."""

    root: Path
    servers: dict[str, Any]
    env: dict[str, str]
    crm_url: str
    spec: ServiceSpec

    def stats(self) -> dict[str, dict[str, int]]:
        """Each sandbox's counters, read over its control API (GET /__sandbox__/stats)."""
        import requests

        return {name: dict(requests.get(f"{server.url}/__sandbox__/stats", timeout=10).json())
                for name, server in self.servers.items()}

    def reset(self, *, latency_ms: float = 0.0) -> None:
        """Clear every sandbox's counters and windows (POST /__sandbox__/reset), then set the latency."""
        import requests

        for server in self.servers.values():
            requests.post(f"{server.url}/__sandbox__/reset", timeout=10).raise_for_status()
        set_latency(self.servers, latency_ms)


def set_latency(servers: Mapping[str, Any], latency_ms: float) -> None:
    """Every call to these sandboxes takes `latency_ms` more (the kit's FaultConfig.latency_ms)."""
    from sandbox.kit import FaultConfig

    for server in servers.values():
        server.vendor.faults.configure(FaultConfig(latency_ms=latency_ms))


@contextlib.contextmanager
def demo_stack(root: Path, *, systems: Iterable[str] | None = None, latency_ms: float = 0.0,
               crm_contacts: int = 200, settings: Mapping[str, Mapping[str, Any]] | None = None,
               ledger_url: str | None = None) -> Iterator[Stack]:
    """Every demo sandbox started and seeded (sandbox.demo.demo_sandboxes), a fresh demo CRM,
    and the demo data map (only `systems`, default all) pointed at them, under `root`."""
    from sandbox.crm_seed import seed_crm
    from sandbox.demo import demo_sandboxes

    crm_url = f"sqlite:///{root / 'crm.sqlite'}"
    seed_crm(crm_url, contacts=crm_contacts)
    systems_file = write_data_map(root / "systems.yaml", crm_url=crm_url, systems=systems, settings=settings)
    with demo_sandboxes() as (servers, env):
        set_latency(servers, latency_ms)
        spec = ServiceSpec(home=str(root / "var"), systems_file=str(systems_file), env=dict(env),
                           ledger_url=ledger_url)
        yield Stack(root, servers, dict(env), crm_url, spec)


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temp dir (under $BENCH_TMP if set), removed on exit unless `keep`."""
    base = os.environ.get("BENCH_TMP")
    path = Path(tempfile.mkdtemp(prefix=f"dsr-bench-{prefix}-", dir=base))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def submit_verified(service: Any, kind: str, email: str, *, regime: str = "gdpr", country: str | None = None) -> str:
    """Submit a request and record its verification; its id."""
    from dsr.models import parse_new_request

    fields: dict[str, Any] = {"type": kind, "email": email, "regime": regime, "received": datetime.now(UTC),
                              "channel": "web-form"}
    if country:
        fields["country"] = country
    request_id = service.submit(parse_new_request(**fields)).state.request_id
    service.verify(request_id, method="email-code", note="code sent to the address was returned")
    return request_id


def postgres_url() -> tuple[str | None, str | None]:
    """(the PostgreSQL URL if a server answers, else None; why not)."""
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return POSTGRES_URL, None
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        return None, f"no PostgreSQL answers at {POSTGRES_URL} ({type(exc).__name__}); set DSR_TEST_POSTGRES_URL"


def postgres_schema(base_url: str, prefix: str = "dsr_bench") -> contextlib.AbstractContextManager[str]:
    """A private schema on the server (dropped on exit); yields a URL whose search_path is it."""
    from sandbox.scratch_db import private_schema

    return private_schema(base_url, prefix)


@contextlib.contextmanager
def postgres_database(base_url: str, prefix: str = "dsr_bench") -> Iterator[str]:
    """A fresh database on the server (dropped on exit), as an asyncpg URL (what Prefect's server takes)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.getpid()}_{int(time.time())}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Sampler:
    """Calls `probe()` every `interval` seconds in a thread, keeping (time.time(), value) samples."""

    def __init__(self, probe: Callable[[], Any], interval: float = 0.25) -> None:
        self.probe, self.interval = probe, interval
        self.samples: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.probe()))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self.probe()))


class CallLog:
    """Records every vendor call a sandbox answers: (time.time(), budget, HTTP status).

    Instrumentation for the benchmarks only: it wraps the sandbox object's `handle` in this
    process (the sandbox module is untouched) to tell budgets apart that the sandbox's own
    counters lump together (HubSpot's search calls from the rest, token logins from API calls)
    and to time-resolve call rates. Totals are cross-checked against /__sandbox__/stats.
    """

    def __init__(self, servers: Mapping[str, Any], classify: Callable[[str, Any], str | None] | None = None) -> None:
        self.calls: list[tuple[float, str, int | None]] = []
        self._lock = threading.Lock()
        self._classify = classify or default_budget
        self._originals: dict[str, tuple[Any, Any]] = {}
        for name, server in servers.items():
            vendor = server.vendor
            self._originals[name] = (vendor, vendor.handle)
            vendor.handle = self._wrap(name, vendor.handle)

    def _wrap(self, name: str, handle: Callable[[Any], Any]) -> Callable[[Any], Any]:
        from sandbox.kit import CONTROL_PREFIX

        def logged(request: Any) -> Any:
            response = handle(request)
            if not request.path.startswith(CONTROL_PREFIX):
                budget = self._classify(name, request)
                if budget is not None:
                    with self._lock:
                        self.calls.append((time.time(), budget, None if response is None else response.status))
            return response

        return logged

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def close(self) -> None:
        for vendor, original in self._originals.values():
            vendor.handle = original

    def snapshot(self) -> list[tuple[float, str, int | None]]:
        with self._lock:
            return list(self.calls)


def default_budget(system: str, request: Any) -> str | None:
    """Which rate budget of the data map a call counts against (None: a login, not an API call)."""
    path = request.path
    if system == "hubspot":
        return "hubspot:search" if path.endswith("/search") else "hubspot"
    if system == "salesforce":
        return "salesforce" if path.startswith("/services/data/") else "salesforce:login"
    if system == "netsuite":
        return "netsuite:login" if path.endswith("/token") else "netsuite"
    if system == "google_ads":
        return "google_ads:login" if path.endswith("/token") else "google_ads"
    return system


def is_throttle(budget: str, status: int | None) -> bool:
    """A vendor's throttling answer: 429, or Salesforce's 403 REQUEST_LIMIT_EXCEEDED."""
    return status == 429 or (status == 403 and budget.startswith("salesforce"))
