"""The SQLAlchemy engine a `crm_sql` system reaches its database through.

The engine hides bound parameters from its error messages (the subject's e-mail is one), and on
SQLite it waits for the seeder's locks and enforces foreign keys (erasure order relies on them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError

from connectors.base import ConnectorConfigError
from connectors.crm_sql.settings import CrmSqlSettings

SQLITE_BUSY_TIMEOUT_S = 15.0  # the demo and the tests share one file with the seeder


def resolve_url(system: str, settings: CrmSqlSettings) -> tuple[str, str]:
    """The database URL, and the setting it came from (``url`` or ``url_env``).

    Raises:
        ConnectorConfigError: the variable `url_env` names is not set or empty.
    """
    if settings.url is not None:
        return settings.url, "url"
    assert settings.url_env is not None  # the model requires exactly one of the two
    url = os.environ.get(settings.url_env, "").strip()
    if not url:
        raise ConnectorConfigError(
            f"systems.{system}.settings.url_env: environment variable {settings.url_env} is not set or empty"
        )
    return url, "url_env"


def make_engine(system: str, url: str, field: str) -> Engine:
    """An engine for `url`; errors name ``systems.<system>.settings.<field>``, never the URL.

    Raises:
        ConnectorConfigError: not a database URL, no dialect or driver for it, or a SQLite file
            that does not exist.
    """
    where = f"systems.{system}.settings.{field}"
    try:
        parsed: URL = sa.engine.make_url(url)
    except ArgumentError:
        raise ConnectorConfigError(f"{where}: not a valid SQLAlchemy database URL") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    database = parsed.database or ""
    on_disk = is_sqlite and database not in ("", ":memory:") and not database.startswith("file:")
    # SQLite would silently create an empty file, and every table would then look "missing".
    if on_disk and not Path(database).is_file():
        raise ConnectorConfigError(f"{where}: the SQLite database file {database!r} does not exist")
    try:
        engine = sa.create_engine(
            parsed,
            hide_parameters=True,  # the subject's e-mail is a bound parameter: keep it out of error text
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S} if is_sqlite else {},
        )
    except ArgumentError:  # also an unknown dialect or a missing driver
        raise ConnectorConfigError(
            f"{where}: no SQLAlchemy dialect or driver for {parsed.drivername!r}"
        ) from None
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_foreign_keys_on)
    return engine


def _sqlite_foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:
    # SQLite enforces foreign keys only when asked, per connection; erasure order relies on them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()
