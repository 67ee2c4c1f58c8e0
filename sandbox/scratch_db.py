"""Throw-away places on a PostgreSQL server, for tests and benchmarks: a private schema (a ledger),
or a whole database (a Prefect server's), dropped on exit."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text


@contextlib.contextmanager
def private_schema(base_url: str, prefix: str) -> Iterator[str]:
    """A new schema; yields `base_url` with its search_path set to it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def scratch_database(base_url: str, prefix: str, *, driver: str = "asyncpg") -> Iterator[str]:
    """A new database on the server of `base_url` (a psycopg URL); yields its URL for `driver`
    (asyncpg: what a Prefect server takes). Dropped on exit, connections and all."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    server = base_url.replace("postgresql+psycopg://", f"postgresql+{driver}://").rsplit("/", 1)[0]
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
