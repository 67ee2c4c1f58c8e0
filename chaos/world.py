"""The world a chaos trial runs in: the vendor sandboxes (in this process), a freshly seeded CRM,
a ledger and settings under a trial directory, and the child process that gets killed.

Every trial starts from the same seeded data (sandboxes re-seeded with seed 7, the CRM seeded
anew), so a trial's end state can be compared with one uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from chaos.probe import CRASH_ENV
from dsr.ledger.store import Ledger
from dsr.models import parse_new_request
from dsr.service import DsrService
from dsr.settings import Settings
from dsr.state import index_row
from sandbox.crm_seed import seed_crm
from sandbox.demo import demo_sandboxes
from sandbox.kit import FaultConfig, SandboxServer

REPO = Path(__file__).resolve().parent.parent
IDENTITY_KEY = "chaos-identity-key"  # the HMAC key of this campaign's throwaway ledgers (not a secret)
MANUAL_SYSTEMS = {"portal", "wistia"}  # systems that wait for a person take no part
RATE_BOOST = 10


@dataclass
class Trial:
    """One trial's own directory, settings and service (the parent's view of the ledger)."""

    home: Path
    env: dict[str, str]
    service: DsrService

    def close(self) -> None:
        self.service.close()


class World:
    """Sandboxes started once; `trial()` gives each trial fresh data."""

    def __init__(self, servers: dict[str, SandboxServer], sandbox_env: dict[str, str], root: Path,
                 ledger_url: str | None = None) -> None:
        self.servers, self.sandbox_env, self.root = servers, sandbox_env, root
        self.ledger_url = ledger_url
        os.environ.update(sandbox_env)  # this process checks vendors through the same connectors
        self._count = 0

    def reset_vendors(self, faults: dict[str, FaultConfig] | None = None) -> None:
        for name, server in self.servers.items():
            vendor = server.vendor
            vendor.faults.configure((faults or {}).get(name, FaultConfig()))
            vendor.reset_state()
            with vendor.stats_lock:
                vendor.stats.clear()
            vendor.journal = []
            vendor.seed_demo(7)  # type: ignore[attr-defined]

    def trial(self, name: str, faults: dict[str, FaultConfig] | None = None, *,
              manual: bool = False) -> Trial:
        self._count += 1
        home = self.root / f"{self._count:04d}-{name}"
        home.mkdir(parents=True)
        self.reset_vendors(faults)
        crm_url = f"sqlite:///{home / 'crm.sqlite'}"
        seed_crm(crm_url, contacts=40)
        data = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
        data["systems"]["crm"]["settings"]["url"] = crm_url
        if not manual:
            data["systems"] = {n: s for n, s in data["systems"].items() if n not in MANUAL_SYSTEMS}
        for system in data["systems"].values():
            # Trials are about crashes, not pacing: the client-side budgets go up tenfold (the
            # sandboxes still enforce the vendors' own limits, and the connectors still obey them).
            limit = system.get("settings", {}).get("rate_limit")
            if limit:
                limit["calls"] = int(limit["calls"]) * RATE_BOOST
        systems_file = home / "systems.yaml"
        systems_file.write_text(yaml.safe_dump(data))
        env = {**self.sandbox_env, "DSR_HOME": str(home / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
               "DSR_SYSTEMS_FILE": str(systems_file), "DSR_IDENTITY_KEY": IDENTITY_KEY}
        settings = Settings(home=home / "var", config_dir=REPO / "config", systems_file=systems_file,
                            identity_key=IDENTITY_KEY, database_url=self.ledger_url)
        if self.ledger_url:
            env["DSR_DATABASE_URL"] = self.ledger_url
        service = DsrService(settings, Ledger(settings.ledger_url, projector=index_row))
        return Trial(home, env, service)


@contextmanager
def world(root: Path, ledger_url: str | None = None) -> Iterator[World]:
    with demo_sandboxes() as (servers, env):
        yield World(servers, env, root, ledger_url)


def submit(service: DsrService, kind: str, email: str) -> str:
    new = parse_new_request(type=kind, email=email, regime="gdpr", country="NL", received=datetime.now(UTC),
                            channel="web-form")
    request_id = service.submit(new).state.request_id
    service.verify(request_id, method="email-code", note="code returned")
    return request_id


@dataclass
class ChildRun:
    killed: bool
    result: dict[str, Any] | None
    seconds: float  # from the child's start to its end (or kill)
    code: int


def run_child(env: dict[str, str], args: list[str], *, crash_at: str | None = None,
              kill_after: float | None = None, extra_env: dict[str, str] | None = None) -> ChildRun:
    """Run `python -m chaos.child ARGS`; SIGKILL it `kill_after` seconds after it starts, if asked."""
    child_env = {**os.environ, **env, **(extra_env or {})}
    child_env.pop(CRASH_ENV, None)
    if crash_at:
        child_env[CRASH_ENV] = crash_at
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "chaos.child", *args], cwd=REPO, env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed = True
    out, err = proc.communicate(timeout=600)
    seconds = time.monotonic() - started
    killed = killed or proc.returncode == -signal.SIGKILL
    result = None
    if not killed:
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"chaos child {args} failed ({proc.returncode}): {err.decode()[-2000:]}")
        result = json.loads(lines[-1])
    return ChildRun(killed, result, seconds, proc.returncode)
