"""Shared fixtures: a seeded demo CRM, settings under tmp_path, ledgers on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from connectors.pacing import forget_limiters
from dsr.ledger.store import Ledger
from dsr.service import DsrService
from dsr.settings import Settings
from dsr.state import index_row
from sandbox.crm_seed import seed_crm
from sandbox.demo import demo_sandboxes
from sandbox.kit import FaultConfig, SandboxServer
from sandbox.scratch_db import private_schema

REPO = Path(__file__).resolve().parent.parent
MANUAL_SYSTEMS = {"portal", "wistia"}
POSTGRES_URL = os.environ.get("DSR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server the ledger suite also runs on; skipped, saying why, if none answers."""
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        pytest.skip(f"PostgreSQL ledger tests skipped: no server answers at {POSTGRES_URL} "
                    f"({type(exc).__name__}); set DSR_TEST_POSTGRES_URL to run them")
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    with private_schema(request.getfixturevalue("postgres_url"), "dsr_test") as url:
        yield url


@pytest.fixture
def crm_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    seed_crm(url, contacts=40)
    return url


@pytest.fixture(scope="session")
def _sandbox_servers() -> Iterator[tuple[dict[str, SandboxServer], dict[str, str]]]:
    with demo_sandboxes() as started:
        yield started


@pytest.fixture
def sandboxes(_sandbox_servers, monkeypatch: pytest.MonkeyPatch) -> dict[str, SandboxServer]:
    """The vendor sandboxes (one server each per session), re-seeded and fault-free for this test."""
    servers, env = _sandbox_servers
    forget_limiters()  # a vendor's "wait" answered in one test must not slow the next
    for server in servers.values():
        vendor = server.vendor
        vendor.faults.configure(FaultConfig())
        vendor.set_pace(None)
        vendor.reset_state()
        with vendor.stats_lock:
            vendor.stats.clear()
        vendor.seed_demo(7)  # type: ignore[attr-defined]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return servers


@pytest.fixture
def systems_file(tmp_path: Path, crm_url: str, sandboxes: dict[str, SandboxServer]) -> Path:
    """The demo data map (every system), pointed at this test's own CRM and the sandboxes."""
    data = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    data["systems"]["crm"]["settings"]["url"] = crm_url
    # Systems that wait for a person are left out here; tests/test_manual_tasks.py covers them.
    data["systems"] = {name: system for name, system in data["systems"].items()
                       if name not in MANUAL_SYSTEMS}
    path = tmp_path / "systems.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def settings(tmp_path: Path, systems_file: Path) -> Settings:
    return Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=systems_file,
                    identity_key="test-identity-key")


@pytest.fixture
def service(settings: Settings, ledger_url: str) -> Iterator[DsrService]:
    svc = DsrService(settings, Ledger(ledger_url, projector=index_row))
    yield svc
    svc.close()


@pytest.fixture
def sqlite_service(settings: Settings) -> Iterator[DsrService]:
    """The service on the default SQLite ledger only (for tests about everything but the ledger)."""
    svc = DsrService(settings)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Prefect test server for the whole session (it costs 10-15 s to start; see prefect-notes)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def crm_only_service(tmp_path: Path, crm_url: str) -> Iterator[DsrService]:
    """A service whose data map holds only the CRM: for tests about the doors (API, pages), where
    a request's trip through every vendor sandbox would only add time."""
    demo = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())
    crm = demo["systems"]["crm"]
    crm["settings"]["url"] = crm_url
    path = tmp_path / "systems-crm-only.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    svc = DsrService(Settings(home=tmp_path / "var", config_dir=REPO / "config", systems_file=path,
                              identity_key="test-identity-key"))
    yield svc
    svc.close()


#: Test files by cost, slowest first (per-file totals of a full run). `make test` hands files to its two
#: workers in collection order (`--dist loadfile --no-loadscope-reorder`); started first, the long files
#: run beside the many short ones instead of leaving one worker alone with a long file at the end.
#: Files not named here follow in their usual order.
SLOWEST_FIRST = (
    "test_workers_e2e.py", "test_api_schema.py", "test_serve.py", "test_bench_smoke.py", "test_operating.py",
    "test_intake.py", "test_retention.py", "test_flow.py", "test_tampering.py", "test_chaos_smoke.py",
    "test_storage.py", "test_console.py", "test_fault_storms.py", "test_rights_vendors.py", "test_cli.py",
    "test_orphans.py", "test_hostile_input.py", "test_ledger.py", "test_opendsr_protocol.py", "test_api.py",
    "test_rights_flow.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slowest files first; the order within a file is kept (sorted() is stable)."""
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


#: The files whose tests use `prefect_harness`. Under `--dist loadfile` they go to one worker as one unit,
#: so the session's Prefect test server (10-15 s of start-up on 2 cores) starts once, not once per worker.
#: A file left off this list still passes; it only costs the other worker a harness of its own.
PREFECT_HARNESS_FILES = frozenset({"test_operating.py", "test_flow.py", "test_tampering.py", "test_rights_flow.py",
                                   "test_rights_cli.py", "test_batch_flow.py"})


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile`, with the Prefect harness files as one unit; any other mode is xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneHarnessScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "prefect-harness" if Path(scope).name in PREFECT_HARNESS_FILES else scope

    return OneHarnessScheduling(config, log)


@pytest.fixture(autouse=True)
def _prefect_console_on_a_live_stream() -> None:
    """Prefect's console log handler keeps the stream it was set up on: in a CLI test, the runner's
    captured stream, closed when that test ends. A later test's log line would then print
    "--- Logging error ---" and a traceback into that test's output; point it at the live stderr."""
    handlers_module = sys.modules.get("prefect.logging.handlers")
    if handlers_module is None:
        return
    console_handler = handlers_module.PrefectConsoleHandler
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, console_handler) and getattr(handler.stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it would flush the closed one first
                handler.console.file = sys.stderr
