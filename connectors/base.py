"""What every connector module imports: the contract types, plus the few helpers they share.

The contract itself lives in `dsr.contract` (the service layer drives connectors without
importing any of them); this module only gathers it in one place for connector authors.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from dsr.contract import (
    Connector,
    ConnectorError,
    ConnectorInfo,
    DataCategory,
    ErasureAction,
    ErasureDecision,
    Receipt,
    Record,
    RecordOutcome,
    RecordRef,
    Subject,
)

__all__ = [
    "Connector",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorInfo",
    "DataCategory",
    "ErasureAction",
    "ErasureDecision",
    "Receipt",
    "Record",
    "RecordOutcome",
    "RecordRef",
    "Subject",
    "json_friendly",
]


class ConnectorConfigError(ConnectorError, ValueError):
    """A system's settings are wrong; the message starts with the config path at fault.

    A `ValueError` too, so config loaders that catch `ValueError` see it as bad config.
    """


def json_friendly(value: Any) -> Any:
    """A field value as JSON can carry it: dates as ISO strings, decimals as strings (no float rounding).

    Args:
        value: a value as a database driver or vendor client returns it.

    Returns:
        `None`, a `str`, `int`, `float` or `bool`.
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, UUID):
        return str(value)
    return str(value)
