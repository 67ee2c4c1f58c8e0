"""A configuration problem is the operator's to fix: `dsr` exits 2 naming the setting, never
"internal error ... please report it" (exit 1), and a run refused for it records nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from doors.cli import app

REPO = Path(__file__).resolve().parent.parent
UNSET = "DSR_TEST_CRM_URL_NEVER_SET"  # the one setting this data map lacks
runner = CliRunner()


@pytest.fixture
def unset_setting_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The shipped data map's CRM entry, reading its database URL from a variable nobody set."""
    crm = yaml.safe_load((REPO / "config" / "systems.yaml").read_text())["systems"]["crm"]
    crm["settings"].pop("url", None)
    crm["settings"]["url_env"] = UNSET
    systems = tmp_path / "systems.yaml"
    systems.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": crm}}))
    env = {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
           "DSR_SYSTEMS_FILE": str(systems), "DSR_IDENTITY_KEY": "cli-config-test-key"}
    monkeypatch.delenv(UNSET, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_purge_with_a_connector_setting_missing_exits_2_naming_it(unset_setting_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["purge", "--dry-run"])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert f"error: systems.crm.settings.url_env: environment variable {UNSET}" in result.output
    assert "internal error" not in result.output


def test_run_with_a_connector_setting_missing_exits_2_and_records_no_failure(
        unset_setting_env: dict[str, str]) -> None:
    submitted = runner.invoke(app, ["submit", "--type", "access", "--email", "ada@example.com", "--regime", "gdpr"])
    request_id = submitted.output.splitlines()[0]
    assert runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "ok"]).exit_code == 0

    result = runner.invoke(app, ["run", request_id])

    assert result.exit_code == 2, result.output
    assert f"systems.crm.settings.url_env: environment variable {UNSET}" in result.output
    assert "nothing was run" in result.output
    view = json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)
    assert view["status"] == "verified" and view["systems"] == {}  # no system recorded as failed


def test_a_bad_dsr_variable_exits_2_naming_it_without_its_value(
        unset_setting_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_API_MAX_BODY_BYTES", "lots-secret-ish")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "error: DSR_API_MAX_BODY_BYTES:" in result.output
    assert "lots-secret-ish" not in result.output


def test_the_installed_command_says_error_not_internal_error(unset_setting_env: dict[str, str]) -> None:
    """The probe's case, through `main()` as a shell runs it: `dsr purge --dry-run` with a setting unset."""
    env = {k: v for k, v in os.environ.items() if k != UNSET} | unset_setting_env
    done = subprocess.run([sys.executable, "-c", "from doors.cli import main; main()", "purge", "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert UNSET in done.stderr and "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_serve_with_storage_misconfigured_exits_2_naming_the_setting(
        unset_setting_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_STORAGE_BUNDLE_RETENTION_DAYS", "30")  # evidence must be kept 24 months
    result = runner.invoke(app, ["serve", "--api-only", "--port", "1"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "error: DSR_STORAGE_BUNDLE_RETENTION_DAYS:" in result.output and "730" in result.output
