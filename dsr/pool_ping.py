"""Check a pooled database connection before use only when it has sat idle.

SQLAlchemy's `pool_pre_ping` sends a round trip before every checkout. The ledger and the shared
rate budgets check a connection out for each short statement or transaction, so on a busy run the
ping was as long as the query it guarded (a third of `Ledger.events` on PostgreSQL, by py-spy). A
connection handed back moments ago cannot have been dropped unnoticed by anything but a server
restart racing the run, which would fail that statement anyway; one that sat idle longer (a
firewall's idle cut, a restart overnight) is pinged and, if dead, replaced before it is used.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

#: A connection back in the pool for longer than this is pinged at its next checkout.
IDLE_PING_SECONDS = 5.0
_RETURNED_AT = "dsr_returned_at"


def ping_after_idle(engine: Engine, idle_seconds: float | None = None) -> Engine:
    """Have `engine`'s pool ping a connection at checkout when it has been idle `idle_seconds`
    (default `IDLE_PING_SECONDS`) or more; a dead one is discarded and the pool connects afresh
    (SQLAlchemy retries a checkout whose handler raises `DisconnectionError`). Returns `engine`."""
    idle = IDLE_PING_SECONDS if idle_seconds is None else idle_seconds

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.pop(_RETURNED_AT, None)
        if returned is None or time.monotonic() - returned < idle:
            return  # just connected, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("a pooled connection was dropped while idle") from exc

    return engine
