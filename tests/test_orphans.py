"""A killed command takes its children with it: `dsr run` (Prefect's temporary API server) and
`dsr serve` (its Prefect server) SIGKILLed mid-way leave no process behind (each orphaned server
held ~200 MB, re-parented to init, until someone noticed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from dsr.models import parse_new_request
from dsr.service import DsrService
from dsr.settings import Settings
from sandbox.crm_seed import ACCESS_SUBJECT
from tests.conftest import REPO

pytestmark = pytest.mark.prefect  # starts real Prefect servers

CHILD_TIMEOUT = 90.0  # a fresh Prefect database migrates first (10-15 s on 2 cores)
GONE_WITHIN = 10.0


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DSR_"))}
    return env | {"DSR_HOME": str(settings.home), "DSR_CONFIG_DIR": str(settings.config_dir),
                  "DSR_SYSTEMS_FILE": str(settings.systems_file), "DSR_IDENTITY_KEY": "test-identity-key",
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@pytest.fixture
def verified_request(crm_only_service: DsrService) -> str:
    new = parse_new_request(type="access", email=ACCESS_SUBJECT, regime="gdpr", received=datetime.now(UTC),
                            channel="web-form")
    request_id = crm_only_service.submit(new).state.request_id
    crm_only_service.verify(request_id, method="email-code", note="code returned")
    return request_id


@pytest.fixture
def started() -> Iterator[list[psutil.Process]]:
    """Every process a test saw; whatever is still alive at the end is killed (never left running)."""
    seen: list[psutil.Process] = []
    yield seen
    for process in seen:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_descendant(parent: subprocess.Popen[bytes], seen: list[psutil.Process],
                         wanted: Callable[[psutil.Process], bool]) -> None:
    """Wait until `parent` has a descendant that `wanted`; record every descendant in `seen`."""
    root = psutil.Process(parent.pid)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        assert parent.poll() is None, f"the command ended ({parent.returncode}) before starting its child"
        found = False
        for child in root.children(recursive=True):
            if child not in seen:
                seen.append(child)
            try:
                found = found or wanted(child)
            except psutil.NoSuchProcess:
                continue
        if found:
            return
        time.sleep(0.2)
    raise AssertionError(f"no such child within {CHILD_TIMEOUT:.0f} s: {[p.info for p in seen]}")


def _cmdline_has(text: str) -> Callable[[psutil.Process], bool]:
    return lambda process: text in " ".join(process.cmdline())


def _kill_and_check(parent: subprocess.Popen[bytes], seen: list[psutil.Process]) -> None:
    for child in psutil.Process(parent.pid).children(recursive=True):
        if child not in seen:
            seen.append(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(5)
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.1)
    left = [" ".join(p.cmdline())[:160] for p in seen if _alive(p)]
    assert not left, f"still running {GONE_WITHIN:.0f} s after the command was killed: {left}"


def _dsr(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "command.log").open("wb")
    return subprocess.Popen([sys.executable, "-c", "from doors.cli import main; main()", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def test_a_killed_run_leaves_no_prefect_server_behind(crm_only_service: DsrService, verified_request: str,
                                                      started: list[psutil.Process], tmp_path: Path) -> None:
    command = _dsr("run", verified_request, env=_env(crm_only_service.settings), tmp_path=tmp_path)
    try:
        _wait_for_descendant(command, started, _cmdline_has("prefect.server.api.server:create_app"))
        _kill_and_check(command, started)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_killed_serve_leaves_no_prefect_server_behind(crm_only_service: DsrService, started: list[psutil.Process],
                                                        tmp_path: Path) -> None:
    command = _dsr("serve", "--port", str(_free_port()), env=_env(crm_only_service.settings), tmp_path=tmp_path)
    try:
        _wait_for_descendant(command, started, _cmdline_has("prefect server start"))
        _kill_and_check(command, started)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
