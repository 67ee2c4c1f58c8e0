"""The rights from the command line: corrected fields named on submit, refusals with the right exit
code (2 bad input naming the field, 3 refused in the current state), a restriction lifted, a legal
hold shown and released, and the website portal (no API) handled by a manual task that closes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from doors.cli import app
from dsr.settings import Settings
from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CRM and the website portal (a manual system) of the demo data map; returns the CRM's URL."""
    systems = yaml.safe_load((REPO / "config" / "demo" / "systems.yaml").read_text())["systems"]
    systems["crm"]["settings"]["url"] = crm_url
    path = tmp_path / "systems.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "systems": {"crm": systems["crm"], "portal": systems["portal"]}}))
    for key, value in {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
                       "DSR_SYSTEMS_FILE": str(path), "DSR_IDENTITY_KEY": "cli-test-key"}.items():
        monkeypatch.setenv(key, value)
    Settings().home.mkdir(parents=True, exist_ok=True)
    return crm_url


def _crm(url: str, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql, params).fetchall()


def _submit(*args: str) -> str:
    result = runner.invoke(app, ["submit", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[0]


def _run_until_done(request_id: str, note: str = "done in the portal") -> str:
    """Run; close the portal's manual task (when there is one); return the final status."""
    result = runner.invoke(app, ["run", request_id])
    status = json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)
    if status["status"] == "awaiting_manual_action":
        assert status["systems"]["portal"]["manual_task"]["done"] is False, result.output
        done = runner.invoke(app, ["task", "done", request_id, "portal", "--note", note])
        assert done.exit_code == 0, done.output
        status = json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)
    return str(status["status"])


@pytest.mark.parametrize("args, exit_code, message", [
    (["--type", "erasure", "--email", "a@b", "--regime", "gdpr"], 2, "error: email"),
    (["--type", "rectification", "--email", "a@example.com", "--regime", "gdpr"], 2, "error: changes"),
    (["--type", "rectification", "--email", "a@example.com", "--regime", "gdpr", "--set", "shoe_size=42"], 2,
     "error: changes.shoe_size"),
    (["--type", "rectification", "--email", "a@example.com", "--regime", "gdpr", "--set", "first_name"], 2,
     "error: set"),
    (["--type", "rectification", "--email", "a@example.com", "--regime", "gdpr", "--set", "email=x@y"], 2,
     "error: changes.email"),
    (["--type", "access", "--email", "a@example.com", "--regime", "gdpr", "--set", "first_name=Ada"], 2,
     "error: changes"),
    (["--type", "opt_out", "--email", "a@example.com", "--regime", "gdpr"], 2, "error: type"),
])
def test_bad_submissions_exit_2_naming_the_field(cli_env: str, args: list[str], exit_code: int,
                                                 message: str) -> None:
    result = runner.invoke(app, ["submit", *args])
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert json.loads(runner.invoke(app, ["list", "--json"]).output) == []


def test_an_unknown_verification_method_exits_2(cli_env: str) -> None:
    request_id = _submit("--type", "access", "--email", ACCESS_SUBJECT, "--regime", "gdpr")
    result = runner.invoke(app, ["verify", request_id, "--method", "telepathy", "--note", "felt it"])
    assert result.exit_code == 2 and "error: method" in result.output
    assert json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)["verification"] is None


def test_a_second_open_request_of_the_same_kind_is_refused_naming_the_first(cli_env: str) -> None:
    first = _submit("--type", "erasure", "--email", ERASURE_SUBJECT, "--regime", "gdpr")
    again = runner.invoke(app, ["submit", "--type", "erasure", "--email", " Ada.Lovelace@EXAMPLE.com",
                                "--regime", "gdpr"])
    assert again.exit_code == 3 and first in again.output
    _submit("--type", "access", "--email", ERASURE_SUBJECT, "--regime", "gdpr")  # another right: fine
    assert runner.invoke(app, ["cancel", first, "--reason", "withdrawn"]).exit_code == 0
    _submit("--type", "erasure", "--email", ERASURE_SUBJECT, "--regime", "gdpr")  # the first is closed


def test_a_refused_second_extension_exits_3(cli_env: str) -> None:
    request_id = _submit("--type", "access", "--email", ACCESS_SUBJECT, "--regime", "gdpr")
    assert runner.invoke(app, ["extend", request_id, "--reason", "many systems"]).exit_code == 0
    again = runner.invoke(app, ["extend", request_id, "--reason", "still more"])
    assert again.exit_code == 3 and "only one extension" in again.output


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_rectification_from_the_cli_corrects_the_crm_and_the_portal_task_closes(cli_env: str) -> None:
    request_id = _submit("--type", "rectification", "--email", ERASURE_SUBJECT, "--regime", "gdpr",
                         "--set", "last_name=King", "--set", "company=Analytical Engines plc")
    assert runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "code ok"]).exit_code == 0
    assert _run_until_done(request_id, "surname corrected in the portal's user record") == "completed"
    assert _crm(cli_env, "SELECT last_name, company FROM contacts WHERE lower(trim(email)) = ?", ERASURE_SUBJECT) == [
        ("King", "Analytical Engines plc")]
    status = json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)
    assert status["systems"]["portal"]["manual_task"]["step"] == "rectify"
    assert status["systems"]["portal"]["manual_task"]["done"] is True


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_restriction_and_lift_from_the_cli(cli_env: str) -> None:
    request_id = _submit("--type", "restriction", "--email", ERASURE_SUBJECT, "--regime", "uk-gdpr")
    assert runner.invoke(app, ["verify", request_id, "--method", "id-document", "--note", "passport"]).exit_code == 0
    assert _run_until_done(request_id, "marketing switched off in the portal") == "completed"
    assert _crm(cli_env, "SELECT marketing_opt_in FROM contacts WHERE lower(trim(email)) = ?", ERASURE_SUBJECT) == [(0,)]
    not_a_restriction = _submit("--type", "access", "--email", ERASURE_SUBJECT, "--regime", "gdpr")
    refused = runner.invoke(app, ["restriction", "lift", not_a_restriction, "--reason", "x"])
    assert refused.exit_code == 3 and "not a restriction" in refused.output
    lifted = runner.invoke(app, ["restriction", "lift", request_id, "--reason", "accuracy verified"])
    assert lifted.exit_code == 0, lifted.output
    assert "crm: marketing settings restored" in lifted.output and "portal: a person restores" in lifted.output
    assert _crm(cli_env, "SELECT marketing_opt_in FROM contacts WHERE lower(trim(email)) = ?", ERASURE_SUBJECT) == [(1,)]
    assert runner.invoke(app, ["task", "done", request_id, "portal", "--note", "settings back"]).exit_code == 0
    status = json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)
    assert status["status"] == "completed" and status["restriction_lifted"] is True
    assert status["systems"]["portal"]["status"] == "completed"
    assert runner.invoke(app, ["restriction", "lift", request_id, "--reason", "again"]).exit_code == 3


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_a_held_erasure_says_so_and_the_release_reopens_it(cli_env: str) -> None:
    added = runner.invoke(app, ["hold", "add", "--email", ACCESS_SUBJECT, "--ref", "LIT-7", "--reason", "claim"])
    assert added.exit_code == 0, added.output
    request_id = _submit("--type", "erasure", "--email", ACCESS_SUBJECT, "--regime", "gdpr")
    assert runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "code ok"]).exit_code == 0
    assert runner.invoke(app, ["run", request_id]).exit_code == 0
    shown = runner.invoke(app, ["status", request_id])
    assert "legal hold LIT-7: crm records kept" in shown.output and "legal hold LIT-7: portal" in shown.output
    assert _crm(cli_env, "SELECT count(*) FROM contacts WHERE email = ?", ACCESS_SUBJECT) == [(1,)]
    released = runner.invoke(app, ["hold", "release", "LIT-7", "--reason", "settled"])
    assert released.exit_code == 0 and f"{request_id}: what the hold kept" in released.output
    assert _run_until_done(request_id, "account deleted in the portal") == "completed"
    assert _crm(cli_env, "SELECT count(*) FROM contacts WHERE email = ?", ACCESS_SUBJECT) == [(0,)]
