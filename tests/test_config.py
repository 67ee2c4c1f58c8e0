"""The shipped configuration: both data maps and the policy load, and every system names a known
connector; a broken file is refused naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.registry import build_connector, known_kinds
from dsr.config import ConfigError, load_data_map, load_policy
from tests.conftest import REPO


@pytest.mark.parametrize("path", ["config/systems.yaml", "config/demo/systems.yaml"])
def test_shipped_data_maps_load_with_known_connectors(path: str) -> None:
    data_map = load_data_map(REPO / path)
    assert {"crm", "hubspot", "salesforce", "portal"} <= set(data_map.systems)
    assert {s.kind for s in data_map.systems.values()} <= set(known_kinds())


def test_shipped_policy_loads() -> None:
    policy = load_policy(REPO / "config" / "policy.yaml")
    assert policy.tax_retention["NL"].years == 7 and policy.regimes["gdpr"].tax_jurisdiction == "NL"


def test_every_demo_system_builds_against_the_sandboxes(systems_file: Path) -> None:
    for name, system in load_data_map(systems_file).systems.items():
        connector = build_connector(name, system.kind, system.settings)
        assert connector.info.system == name
        close = getattr(connector, "close", None)
        if callable(close):
            close()


@pytest.mark.parametrize("text, where", [
    ("version: 1\nsystems:\n  crm:\n    kind: crm_sql\n", "systems.crm.title"),
    ("version: 1\nsystems:\n  crm:\n    kind: crm_sql\n    title: x\n    colour: red\n", "systems.crm.colour"),
    ("version: 1\nsystems:\n  crm:\n    kind: crm_sql\n    title: x\n    task_lead_days: -1\n", "task_lead_days"),
    ("systems: [", "not valid YAML"),
])
def test_a_broken_data_map_names_the_file_and_the_field(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "systems.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_data_map(path)
    assert str(caught.value).startswith(str(path)) and where in str(caught.value)
