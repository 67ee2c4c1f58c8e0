"""Alembic environment: run by dsr.ledger.store.migrate() with a live connection."""

from alembic import context
from sqlalchemy import create_engine

from dsr.ledger.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn) -> None:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # `alembic -x url=...` from the command line
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: pass the ledger URL with -x url=... (or set sqlalchemy.url)")
    with create_engine(url).connect() as conn:
        _run(conn)
