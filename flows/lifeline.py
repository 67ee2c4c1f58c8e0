"""Child processes that die with this process, however it dies (SIGKILL included).

Prefect's temporary API server (`dsr run`, `dsr demo`) is a uvicorn child of about 200 MB that
Prefect stops from `atexit`. A parent killed with SIGKILL runs no `atexit`: the server used to
live on, re-parented to init, until someone noticed. Linux's PR_SET_PDEATHSIG has the kernel
signal a child when its parent dies, but "parent" means the *thread* that forked it: a child
started from a flow's worker thread would be stopped when that thread ends, not when the process
does. So every such child is forked here, by one daemon thread that lives exactly as long as the
process. Elsewhere than Linux the children start as usual (and may outlive a killed parent).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: SIGTERM lets a server close its database cleanly; both servers we start stop on it in about a second.
DEATH_SIGNAL = signal.SIGTERM


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def _preexec(parent_pid: int, then: Callable[[], None] | None) -> Callable[[], None]:
    """Runs in the child between fork and exec: ask for the death signal, and give up at once if
    the parent already died before the request was made (the kernel would never send it)."""
    assert _prctl is not None
    prctl = _prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)
        if then is not None:
            then()

    return preexec


class _Spawner:
    """One daemon thread that forks every child that must die with the process."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[Any]], Future[Any]]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start: Callable[[], subprocess.Popen[Any]]) -> subprocess.Popen[Any]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="dsr-child-spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[Any]] = Future()
        self._requests.put((start, done))
        return done.result()

    def _serve(self) -> None:
        while True:  # never returns: the thread must outlive every child it forked
            start, done = self._requests.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                done.set_exception(exc)


_spawner = _Spawner()


def popen_dying_with_us(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(args, **kwargs)`, but the child is sent SIGTERM when this process dies."""
    if _prctl is None:
        return subprocess.Popen(args, **kwargs)
    preexec = _preexec(os.getpid(), kwargs.pop("preexec_fn", None))
    return _spawner.run(lambda: subprocess.Popen(args, preexec_fn=preexec, **kwargs))


def install_ephemeral_server() -> bool:
    """Make Prefect's temporary API server (started on first use when no PREFECT_API_URL is set)
    a child that dies with this process. Call before anything in the process talks to Prefect
    (again after the server was stopped: Prefect forgets it then). False if a temporary server
    object of Prefect's own already exists (it is left as it is)."""
    # Prefect keeps one temporary server object per port and every client asks for port None:
    # creating ours first makes it the one they all get.
    server = _dying_server_class()()
    if not isinstance(server, _dying_server_class()):
        # Prefect's test harness registers its own server the same way; anything else is a bug here.
        log.debug("Prefect's temporary server was set up before %s; it may outlive a killed process", __name__)
        return False
    return True


@functools.cache
def _dying_server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class DyingWithUs(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            return _run_uvicorn_command(self)

    return DyingWithUs


def _run_uvicorn_command(server: Any) -> subprocess.Popen[Any]:
    """Prefect 3.9's `SubprocessASGIServer._run_uvicorn_command`, the same command and
    environment, started by `popen_dying_with_us`."""
    import prefect
    from prefect.settings import get_current_settings

    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return popen_dying_with_us(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(server.port),
         "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)},
    )
