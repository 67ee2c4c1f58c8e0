"""Subject tokens: single-use, expiring, stored as hashes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsr_subject_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("used_at", sa.String(32), nullable=True),
    )
    op.create_index("ix_dsr_subject_tokens_request_id", "dsr_subject_tokens", ["request_id"])


def downgrade() -> None:
    op.drop_table("dsr_subject_tokens")
