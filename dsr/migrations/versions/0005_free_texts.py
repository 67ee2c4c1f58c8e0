"""Free text (notes, reasons, task notes) kept beside the chain, referenced from it by hash.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

An event carries the SHA-256 of its free text, never the text: the text can then be redacted
or erased (for example when it turns out to hold personal data) without breaking the chain.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsr_free_texts",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text, nullable=True),  # None once redacted
        sa.Column("redacted_at", sa.String(32), nullable=True),
        sa.Column("redacted_reason", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("dsr_free_texts")
