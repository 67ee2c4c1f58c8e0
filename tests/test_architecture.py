"""The house's shape holds: who may import whom (docs/architecture.md), and connectors that read in a
sitting. Static checks over the source (every import statement, lazy ones inside functions included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Client libraries of vendors and infrastructure that only connectors or adapters may import.
VENDOR_SDKS = ("simple_salesforce", "hubspot", "google.ads", "google.ads_datamanager", "requests_oauthlib",
               "boto3", "botocore", "smtplib")


def _modules(folder: str) -> Iterator[Path]:
    yield from sorted((REPO / folder).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _offences(folder: str, forbidden: tuple[str, ...], *, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in _modules(folder):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(skip):
            continue
        for line, module in _imports(path):
            if any(module == name or module.startswith(name + ".") for name in forbidden):
                found.append(f"{relative}:{line} imports {module}")
    return found


def test_the_domain_knows_no_door_no_orchestrator_and_no_vendor_sdk() -> None:
    assert _offences("dsr", ("doors", "flows", "prefect", *VENDOR_SDKS), skip=("dsr/adapters/",)) == []


def test_adapters_know_no_door_and_no_orchestrator() -> None:
    assert _offences("dsr/adapters", ("doors", "flows", "prefect")) == []


def test_flows_and_connectors_never_reach_up_into_the_doors() -> None:
    assert _offences("flows", ("doors",)) + _offences("connectors", ("doors", "flows", "prefect")) == []


def test_sandboxes_speak_wire_formats_only_never_the_projects_code() -> None:
    assert _offences("sandbox", ("dsr", "connectors", "flows", "doors")) == []


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in _modules("connectors")))
def test_a_connector_module_reads_in_a_sitting(path: str) -> None:
    lines = len((REPO / path).read_text(encoding="utf-8").splitlines())
    assert lines <= 600, f"{path} has {lines} lines: split it by job (the plumbing belongs in connectors/http.py)"
    if path == "connectors/linkedin.py":
        assert lines < 250, f"{path} has {lines} lines: LinkedIn is a handful of declarations over the base"
