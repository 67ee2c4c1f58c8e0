"""The `dsr` command as the privacy office types it: output shapes, exit codes, clear errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from doors.cli import app
from dsr.run import RequestRunner
from dsr.service import DsrService
from dsr.settings import Settings

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, systems_file: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = {"DSR_HOME": str(tmp_path / "var"), "DSR_CONFIG_DIR": str(REPO / "config"),
           "DSR_SYSTEMS_FILE": str(systems_file), "DSR_IDENTITY_KEY": "cli-test-key"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def _submit(*extra: str) -> str:
    result = runner.invoke(app, ["submit", "--type", "erasure", "--email", "Ada@Example.com ", "--regime", "gdpr",
                                 *extra])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[0]


@pytest.mark.parametrize("args, due", [
    (["uk-gdpr", "2026-01-30"], "2026-03-02"),
    (["gdpr", "2026-03-27", "--country", "NL"], "2026-04-28"),
    (["gdpr", "2026-01-31"], "2026-03-02"),
    (["ccpa", "2026-01-30", "--extended"], "2026-04-30"),
    (["lgpd", "2026-04-06"], "2026-04-22"),
    (["pipeda", "2026-05-31"], "2026-06-30"),
])
def test_deadline_prints_the_due_date_alone_on_the_first_line(args: list[str], due: str) -> None:
    result = runner.invoke(app, ["deadline", *args])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == due


@pytest.mark.parametrize("args, field", [
    (["hipaa", "2026-01-30"], "Invalid value for 'REGIME'"),  # a choice: refused (and completed) by the parser
    (["gdpr", "30/01/2026"], "error: received"),
    (["gdpr", "2026-01-30", "--country", "US"], "error: country"),
    (["lgpd", "2026-01-30", "--extended"], "error: lgpd"),
])
def test_deadline_bad_input_exits_2_naming_the_field(args: list[str], field: str) -> None:
    result = runner.invoke(app, ["deadline", *args])
    assert result.exit_code == 2
    assert field in result.output


def test_submit_prints_the_id_alone_then_status_and_list_show_it(cli_env: Settings) -> None:
    request_id = _submit("--received", "2026-11-20T09:30:00+01:00", "--channel", "email")
    assert len(request_id) == 36 and " " not in request_id
    status = json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)
    assert status["status"] == "awaiting_verification" and status["channel"] == "email"
    assert status["deadline"]["due"] == "2026-12-21"
    assert "ada@example.com" not in json.dumps(status).lower()
    listed = json.loads(runner.invoke(app, ["list", "--open", "--json"]).output)
    assert [row["request_id"] for row in listed] == [request_id]


@pytest.mark.parametrize("args, message", [
    (["--type", "erasure", "--email", "nobody", "--regime", "gdpr"], "error: email"),
    (["--type", "erasure", "--email", "a@example.com", "--regime", "hipaa"], "Invalid value for '--regime'"),
    (["--type", "erasure", "--email", "a@example.com", "--regime", "gdpr", "--received", "2999-01-01"],
     "error: received"),
    (["--type", "wipe", "--email", "a@example.com", "--regime", "gdpr"], "--type"),
])
def test_submit_bad_input_exits_2_and_records_nothing(cli_env: Settings, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["submit", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert json.loads(runner.invoke(app, ["list", "--json"]).output) == []


def test_verify_extend_cancel_and_refusals(cli_env: Settings) -> None:
    request_id = _submit()
    assert runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "code ok"]).exit_code == 0
    again = runner.invoke(app, ["verify", request_id, "--method", "email-code", "--note", "code ok"])
    assert again.exit_code == 3 and "already verified" in again.output
    extended = runner.invoke(app, ["extend", request_id, "--reason", "many systems"])
    assert extended.exit_code == 0 and "now due" in extended.output
    assert runner.invoke(app, ["cancel", request_id, "--reason", "withdrawn"]).exit_code == 0
    assert runner.invoke(app, ["cancel", request_id]).exit_code == 3
    unknown = runner.invoke(app, ["status", "no-such-request"])
    assert unknown.exit_code == 2 and "request_id" in unknown.output


def test_run_refuses_an_unverified_request_without_starting_prefect(cli_env: Settings) -> None:
    request_id = _submit()
    result = runner.invoke(app, ["run", request_id])
    assert result.exit_code == 3 and "not verified" in result.output


def _sealed_bundle(settings: Settings) -> Path:
    service = DsrService(settings)
    try:
        request_id = _submit()
        service.verify(request_id, method="email-code", note="ok")
        runner_ = RequestRunner(service)
        plan = runner_.begin(request_id)
        from tests.test_execution import _connect

        for system in plan.systems:
            runner_.run_system(request_id, system, _connect(service, system))
        outcome = runner_.finish(request_id)
        assert outcome.bundle_path is not None
        return outcome.bundle_path
    finally:
        service.close()


def test_bundle_verify_passes_intact_and_fails_tampered(cli_env: Settings, tmp_path: Path) -> None:
    bundle = _sealed_bundle(cli_env)
    ok = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert ok.exit_code == 0 and "bundle intact" in ok.output and "signature" in ok.output

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "request.json":
                data = data.replace(b"erasure", b"access!")
            dst.writestr(item, data)
    bad = runner.invoke(app, ["bundle", "verify", str(tampered)])
    assert bad.exit_code == 1 and "request.json" in bad.output

    other_key = tmp_path / "other.key"
    from dsr.signing import load_or_create_signing_key
    load_or_create_signing_key(other_key)
    wrong = runner.invoke(app, ["bundle", "verify", str(bundle), "--public-key", f"{other_key}.pub"])
    assert wrong.exit_code == 1 and "signature" in wrong.output.lower()


def test_ledger_verify_reports_every_chain(cli_env: Settings) -> None:
    _submit()
    # A second open erasure of the same subject is refused; another right is a second chain.
    assert runner.invoke(app, ["submit", "--type", "access", "--email", "Ada@Example.com", "--regime", "gdpr"]).exit_code == 0
    result = runner.invoke(app, ["ledger", "verify"])
    assert result.exit_code == 0 and "2 chain(s) verified" in result.output


def test_bundle_verify_names_a_missing_file(cli_env: Settings, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bundle", "verify", str(tmp_path / "nope.zip")])
    assert result.exit_code == 2 and "path" in result.output


def test_pause_resume_acknowledge_and_sweep_from_the_command_line(cli_env: Settings) -> None:
    request_id = _submit("--received", "2026-03-02T10:00:00+01:00")
    paused = runner.invoke(app, ["pause", request_id, "--for", "clarification", "--reason", "which account"])
    assert paused.exit_code == 0 and "paused" in paused.output
    twice = runner.invoke(app, ["pause", request_id, "--for", "clarification", "--reason", "again"])
    assert twice.exit_code == 3 and "already waiting" in twice.output
    resumed = runner.invoke(app, ["resume", request_id, "--for", "clarification"])
    assert resumed.exit_code == 0 and "now due" in resumed.output
    bad = runner.invoke(app, ["pause", request_id, "--for", "patience", "--reason", "x"])
    assert bad.exit_code == 2 and "Invalid value for '--for'" in bad.output  # a choice, checked by the parser

    ccpa = runner.invoke(app, ["submit", "--type", "access", "--email", "b@example.com", "--regime", "ccpa"])
    ccpa_id = ccpa.output.splitlines()[0]
    refused = runner.invoke(app, ["pause", ccpa_id, "--for", "id", "--reason", "need ID"])
    assert refused.exit_code == 2 and "ccpa" in refused.output
    assert runner.invoke(app, ["acknowledge", ccpa_id]).exit_code == 0
    assert runner.invoke(app, ["acknowledge", ccpa_id]).exit_code == 3

    swept = runner.invoke(app, ["sweep", "--at", "2026-12-31T12:00:00+00:00"])
    assert swept.exit_code == 0, swept.output
    assert f"escalation {request_id}" in swept.output and "2 open request(s) checked" in swept.output
    again = runner.invoke(app, ["sweep", "--at", "2026-12-31T13:00:00+00:00"])
    assert "0 alert(s) raised" in again.output


def test_bundle_export_writes_the_sealed_bytes_and_records_the_download(cli_env: Settings, tmp_path: Path) -> None:
    bundle = _sealed_bundle(cli_env)
    request_id = bundle.parent.name
    target = tmp_path / "exported.zip"
    result = runner.invoke(app, ["bundle", "export", request_id, "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == bundle.read_bytes()
    service = DsrService(Settings())
    try:
        last = service.events(request_id)[-1]
    finally:
        service.close()
    assert last.type == "bundle.downloaded" and last.payload["version"] == 1
    missing = runner.invoke(app, ["bundle", "export", request_id, "-o", str(target), "--version", "7"])
    assert missing.exit_code == 2 and "version" in missing.output


def test_an_intact_bundle_of_another_request_does_not_pass_for_this_one(cli_env: Settings) -> None:
    bundle = _sealed_bundle(cli_env)
    other = runner.invoke(app, ["bundle", "verify", str(bundle), "--request", "some-other-request"])
    assert other.exit_code == 1 and "not some-other-request" in other.output
    same = runner.invoke(app, ["bundle", "verify", str(bundle), "--request", bundle.parent.name])
    assert same.exit_code == 0


def test_holds_and_a_guarded_purge_from_the_command_line(cli_env: Settings) -> None:
    placed = runner.invoke(app, ["hold", "add", "--email", "ada.lovelace@example.com", "--ref", "LIT-7",
                                 "--reason", "litigation"])
    assert placed.exit_code == 0 and "hmac-sha256:" in placed.output and "ada.lovelace" not in placed.output
    assert "LIT-7" in runner.invoke(app, ["hold", "list"]).output
    dry = runner.invoke(app, ["purge", "--dry-run", "--system", "crm"])
    assert dry.exit_code == 3 and "nothing was deleted" in dry.output and "dry run" in dry.output
    run_id = dry.output.split("dsr purge --approve ")[1].split()[0]
    unapproved = runner.invoke(app, ["purge", "--system", "crm"])
    assert unapproved.exit_code == 3  # the guard stops real runs too, until one is approved
    approved = runner.invoke(app, ["purge", "--approve", run_id, "--system", "crm"])  # the reviewed dry run
    assert approved.exit_code == 0, approved.output
    assert "LIT-7" in approved.output  # the held subject's records were held back, and said so
    assert runner.invoke(app, ["hold", "release", "LIT-7", "--reason", "settled"]).exit_code == 0
    assert "no holds" in runner.invoke(app, ["hold", "list"]).output


def test_status_shows_the_subject_address_only_when_asked(cli_env: Settings) -> None:
    """A manual task sends the officer to `dsr status ID --subject` for the address to look up; plain status
    and its JSON carry the keyed hash only."""
    request_id = _submit()
    plain = runner.invoke(app, ["status", request_id])
    assert plain.exit_code == 0, plain.output
    assert "ada@example.com" not in plain.output
    shown = runner.invoke(app, ["status", request_id, "--subject"])
    assert shown.exit_code == 0, shown.output
    assert "subject: ada@example.com (hmac-sha256:" in shown.output
    as_json = json.loads(runner.invoke(app, ["status", request_id, "--subject", "--json"]).output)
    assert as_json["subject_email"] == "ada@example.com"
    assert "subject_email" not in json.loads(runner.invoke(app, ["status", request_id, "--json"]).output)


def test_status_subject_shows_a_rectifications_corrected_values(cli_env: Settings) -> None:
    """The officer doing a manual rectification reads what to write from `dsr status ID --subject`."""
    done = runner.invoke(app, ["submit", "--type", "rectification", "--email", "ada@example.com", "--regime", "gdpr",
                               "--set", "last_name=King"])
    assert done.exit_code == 0, done.output
    request_id = done.output.splitlines()[0]
    shown = runner.invoke(app, ["status", request_id, "--subject"])
    assert shown.exit_code == 0, shown.output
    assert "corrected last_name: King" in shown.output
    assert "King" not in runner.invoke(app, ["status", request_id]).output
