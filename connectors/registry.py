"""From a `systems.yaml` entry's `kind` to a connector, importing the connector module only when used.

Imports are lazy so that a vendor SDK missing from an installation only matters for the systems
that use it. Each connector module exposes `create(system, settings) -> Connector`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from connectors.base import Connector, ConnectorConfigError

_MODULES: Mapping[str, str] = {
    "crm_sql": "connectors.crm_sql",
    "google_ads": "connectors.google_ads",
    "hubspot": "connectors.hubspot",
    "linkedin": "connectors.linkedin",
    "manual": "connectors.manual",
    "netsuite": "connectors.netsuite",
    "salesforce": "connectors.salesforce",
    "wistia": "connectors.wistia",
}


def known_kinds() -> tuple[str, ...]:
    """The connector kinds `systems.yaml` may name."""
    return tuple(sorted(_MODULES))


def build_connector(system: str, kind: str, settings: Mapping[str, Any]) -> Connector:
    """Build the connector for one system of the data map.

    Args:
        system: the system's name in `systems.yaml` (used in error messages and refs).
        kind: the connector kind, e.g. ``"crm_sql"``.
        settings: the system's `settings:` block, validated by the connector module.

    Returns:
        A ready connector; the caller closes it if it has a `close()`.

    Raises:
        ConnectorConfigError: (a `ValueError`) for an unknown kind or invalid settings.
    """
    module_name = _MODULES.get(kind)
    if module_name is None:
        raise ConnectorConfigError(
            f"systems.{system}.kind: unknown connector kind {kind!r} (known: {', '.join(known_kinds())})"
        )
    module = importlib.import_module(module_name)
    connector: Connector = module.create(system, settings)
    return connector
