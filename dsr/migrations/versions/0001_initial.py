"""The ledger: events with a hash chain per request, a derived request index, identities.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsr_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("request_id", "seq", name="uq_dsr_events_request_seq"),
    )
    op.create_index("ix_dsr_events_request_id", "dsr_events", ["request_id"])
    op.create_table(
        "dsr_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("regime", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("due", sa.String(10), nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_dsr_requests_status", "dsr_requests", ["status"])
    op.create_table(
        "dsr_identities",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_dsr_identities_hash", "dsr_identities", ["hash"])


def downgrade() -> None:
    op.drop_table("dsr_identities")
    op.drop_table("dsr_requests")
    op.drop_table("dsr_events")
