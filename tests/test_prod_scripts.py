"""scripts/prod: each script refuses to start without the settings it needs, naming the variable
(a worker without the shared rate-limit store would overrun vendors; one without the ledger would
start runs it cannot record). The commands they run are the ones tests/test_workers_e2e.py runs
through flows/fleet.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "prod"


@pytest.mark.parametrize("script, missing", [
    ("server.sh", "PREFECT_SERVER_DATABASE_CONNECTION_URL"),
    ("deploy.sh", "PREFECT_API_URL"),
    ("worker.sh", "PREFECT_API_URL"),
    ("api.sh", "PREFECT_API_URL"),
])
def test_a_script_without_its_settings_names_what_is_missing(script: str, missing: str, tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPTS / script)], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "DSR_ENV_FILE": str(tmp_path / "none")})
    assert done.returncode == 2
    assert f"{missing} is not set" in done.stderr


def test_a_worker_needs_the_shared_rate_limit_store(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "DSR_ENV_FILE": str(tmp_path / "none"), "PREFECT_API_URL": "http://x/api",
           "DSR_DATABASE_URL": "postgresql+psycopg://db/dsr", "DSR_REPO_DIR": str(tmp_path), "DSR_IDENTITY_KEY": "k"}
    done = subprocess.run(["bash", str(SCRIPTS / "worker.sh")], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2 and "DSR_RATE_LIMIT_URL is not set" in done.stderr
