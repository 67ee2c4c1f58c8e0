"""The company's own CRM: a SQL database reached through SQLAlchemy Core.

The data map (`settings.objects`) names each table holding personal data, how its rows tie to a
person (an e-mail column, or a link to a parent object's key, several levels deep), the data
categories it holds, the date a retention clock runs from, and what anonymising a row means.

Identity is matched exactly: ``lower(trim(column)) = :email`` with a bound parameter, never LIKE and
never SQL built from the subject's address. Table and column names come only from the validated
config, and are checked against the live schema when the connector is built.

Personal data never reaches an exception message: errors name the system, object and config path,
and the engine hides bound parameters from its own error messages.

The jobs, one module each: `settings` (the data map), `engine` (the database URL and engine),
`schema` (the data map bound to reflected tables, erasure order), `core` (what the others share),
`discovery` (find and export), `erasure` (erase, purge), `retention` (expired rows), `rights`
(rectify, suppress, restore); this module composes them and builds the connector.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from connectors.crm_sql.core import KIND, MAX_BATCH, VERSION
from connectors.crm_sql.discovery import CrmSqlDiscovery
from connectors.crm_sql.engine import make_engine, resolve_url
from connectors.crm_sql.erasure import CrmSqlErasure
from connectors.crm_sql.retention import CrmSqlRetention
from connectors.crm_sql.rights import CrmSqlRights
from connectors.crm_sql.settings import CrmSqlSettings, parse_settings

__all__ = ["KIND", "MAX_BATCH", "VERSION", "CrmSqlConnector", "CrmSqlSettings", "create", "parse_settings"]


class CrmSqlConnector(
    CrmSqlDiscovery, CrmSqlErasure, CrmSqlRetention, CrmSqlRights, AbstractContextManager["CrmSqlConnector"]
):
    """Discover, export, erase and verify a subject's rows in the CRM database; list and purge
    expired rows; rectify and suppress them.

    Build it with `create` (or `connectors.registry.build_connector`); call `close()` when done, or
    use it in a ``with`` block.
    """

    def __exit__(self, *_exc: object) -> None:
        self.close()


def create(system: str, settings: Mapping[str, Any]) -> CrmSqlConnector:
    """Build the connector for one system (the registry's entry point).

    Args:
        system: the system's name in `systems.yaml`.
        settings: its `settings:` block (see `CrmSqlSettings`).

    Raises:
        ConnectorConfigError: bad settings, a missing environment variable, or a data map that does
            not fit the database's schema.
        ConnectorError: the database cannot be reached.
    """
    parsed = parse_settings(system, settings)
    url, field = resolve_url(system, parsed)
    engine = make_engine(system, url, field)
    try:
        return CrmSqlConnector(system, parsed, engine)
    except BaseException:
        engine.dispose()
        raise
