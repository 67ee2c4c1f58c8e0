"""Production on Prefect: one server (on PostgreSQL), a process work pool, N workers.

The same steps as scripts/prod/*.sh, as functions the two-worker end-to-end test and
`python -m flows.fleet up` (a whole fleet on one machine, for staging) share:

1. `start_prefect_server(database_url=postgresql+asyncpg://...)` (flows/serve.py);
2. `create_pool`: the `dsr-pool` process work pool;
3. `deploy`: `prefect deploy --all` of deployments/prefect.yaml (process-request with its
   `dsr.request.verified` trigger, deadline-sweep hourly, retention-purge nightly);
4. `start_worker` N times: `prefect worker start --pool dsr-pool`, each flow run in its own process;
   or, `warm`, `python -m flows.warm --pool dsr-pool`, each flow run in a thread of one long-lived
   process (flows/warm.py: no Python start and imports per run).

Workers share the ledger (DSR_DATABASE_URL) and each vendor's rate budget (DSR_RATE_LIMIT_URL,
connectors/shared_pacing.py), so two workers together stay within a vendor's limit. The API
(`dsr serve --api-only`, PREFECT_API_URL set) records verifications, which the trigger turns into runs.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.serve import PrefectServer, _die_with_parent, start_prefect_server, stop_process_group

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
POOL = "dsr-pool"
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
# Logged once the worker has won the run (its Pending state accepted); every worker polling the pool
# logs "submitting" for runs another may win, and "Aborted submission" when it loses. A warm worker
# logs "claimed to run warm" once its Pending state was accepted.
_SUBMITTED = re.compile(r"Flow run '(?P<run>[^']+)' (?:submitted to infrastructure|claimed to run warm)")


class FleetError(RuntimeError):
    """A Prefect command of the fleet failed; the message carries the end of its output."""


def prefect_command(args: list[str], *, api_url: str, env: Mapping[str, str] | None = None,
                    timeout: float = 180.0) -> str:
    """Run `prefect <args>` against `api_url` from the repository root; its output, or FleetError."""
    full_env = {**os.environ, **(env or {}), "PREFECT_API_URL": api_url}
    try:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=full_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise FleetError(f"`prefect {' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise FleetError(f"`prefect {' '.join(args)}` failed ({done.returncode}):\n{tail}")
    return done.stdout


def create_pool(api_url: str, pool: str = POOL) -> None:
    """The process work pool the deployments name (kept as it is when it already exists)."""
    prefect_command(["work-pool", "create", pool, "--type", "process", "--overwrite"], api_url=api_url)


def deploy(api_url: str, *, repo_dir: Path = REPO, prefect_file: Path = PREFECT_FILE) -> str:
    """`prefect deploy --all`: the three deployments, their trigger and schedules, on the server.

    Workers change into `repo_dir` before each run (the file's pull step reads DSR_REPO_DIR).
    """
    return prefect_command(["--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)],
                           api_url=api_url, env={"DSR_REPO_DIR": str(repo_dir)})


@dataclass
class Worker:
    """A worker child process (`prefect worker start`, or a warm one) in its own process group,
    logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: Any = field(repr=False, default=None)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def submitted_runs(self) -> list[str]:
        """The names of the flow runs this worker started (from its own log)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [m["run"] for m in _SUBMITTED.finditer(text)]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group (the worker lets its runs finish or marks them), then SIGKILL."""
        try:
            stop_process_group(self.process, f"worker {self.name}", timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def start_worker(api_url: str, name: str, *, log_dir: Path, env: Mapping[str, str] | None = None,
                 pool: str = POOL, limit: int | None = None, query_seconds: float | None = None,
                 repo_dir: Path = REPO, warm: bool = False) -> Worker:
    """Start one worker of `pool`: a process worker, or with `warm` a warm one (flows/warm.py).

    Args:
        env: the DSR_* settings its flow runs need (ledger and rate-limit URLs, keys, config paths).
        limit: flow runs this worker runs at once (None: no cap of its own; a warm worker's default, 4).
        query_seconds: how often it polls the pool (Prefect's default is 10 s); a warm worker also
            wakes on each run's Scheduled event, so this is its fallback.
    """
    if warm:
        command = [sys.executable, "-m", "flows.warm", "--pool", pool]
        if query_seconds is not None:
            command += ["--poll-seconds", str(query_seconds)]
    else:
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--name", name,
                   "--type", "process"]
    if limit is not None:
        command += ["--limit", str(limit)]
    full_env = {**os.environ, **(env or {}), "PREFECT_API_URL": api_url, "DSR_REPO_DIR": str(repo_dir)}
    if not warm:
        # INFO at least: the worker's "submitting flow run" lines are how `submitted_runs` knows its work.
        # A warm worker logs its claims through its own logger, so its flow runs keep the caller's level
        # (every record at that level is also sent to the Prefect server, which the runs share).
        full_env["PREFECT_LOGGING_LEVEL"] = "INFO"
    if query_seconds is not None:
        full_env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(command, cwd=repo_dir, env=full_env, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent())
    log.info("worker %s started (pid %d, log %s)", name, process.pid, log_path)
    return Worker(name, process, log_path, log_file)


def runs_per_worker(workers: list[Worker]) -> Counter[str]:
    return Counter({worker.name: len(worker.submitted_runs()) for worker in workers})


@dataclass
class Fleet:
    server: PrefectServer
    workers: list[Worker]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.server.stop()


def start_fleet(*, home: Path, workers: int, database_url: str | None = None, port: int | None = None,
                host: str = "127.0.0.1", env: Mapping[str, str] | None = None, limit: int | None = None,
                query_seconds: float | None = None, warm: bool = False) -> Fleet:
    """Server, pool, deployments and `workers` workers on this machine (process workers, or warm
    ones with `warm`); stop it with `Fleet.stop()`."""
    server = start_prefect_server(home=home, port=port, host=host, ui=False, database_url=database_url)
    started: list[Worker] = []
    try:
        create_pool(server.api_url)
        deploy(server.api_url)
        for number in range(1, workers + 1):
            started.append(start_worker(server.api_url, f"worker-{number}", log_dir=home / "workers", env=env,
                                        limit=limit, query_seconds=query_seconds, warm=warm))
    except BaseException:
        for worker in started:
            worker.stop()
        server.stop()
        raise
    return Fleet(server, started)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.fleet up --workers N [--warm] [--database-url URL] [--port P]`: a fleet on this machine."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.fleet", description=main.__doc__)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workers", type=int, default=2, help="process workers to start (default 2)")
    parser.add_argument("--database-url", default=os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL"),
                        help="the Prefect server's database (postgresql+asyncpg://...); default SQLite under --home")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("DSR_HOME", "var")) / "fleet")
    parser.add_argument("--limit", type=int, default=None, help="flow runs per worker at once")
    parser.add_argument("--warm", action="store_true",
                        help="warm workers: flow runs in threads of long-lived processes (flows/warm.py)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    fleet = start_fleet(home=args.home, workers=args.workers, database_url=args.database_url, port=args.port,
                        limit=args.limit, warm=args.warm)
    print(f"Prefect server at {fleet.server.api_url}; {args.workers} worker(s) on pool {POOL}; logs in {args.home}. "
          "Point the API at it: PREFECT_API_URL=" + fleet.server.api_url + " dsr serve --api-only", flush=True)
    try:
        while fleet.server.alive and all(worker.alive for worker in fleet.workers):
            time.sleep(1)
        print("a fleet process stopped on its own; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
