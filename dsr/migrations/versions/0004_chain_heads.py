"""Anchored chain heads: a signed, append-only log of every request chain's head.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Each row records one chain's head (request id, last sequence, last hash) at a moment that
matters (a seal, the end of a run, a close), signed with the deployment's Ed25519 key and
linked to the previous row of the log by its hash. An attacker with table access can delete
events or edit derived rows, but cannot forge a signed head; `ledger verify` compares every
chain with its newest signed head, so a truncated tail or a deleted request is caught.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsr_chain_heads",
        # The entry's place in the log: 1, 2, 3... with no gap (two writers racing for one
        # position collide on the key and one retries, so the log never forks).
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("prev_entry_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
    )
    # A chain's newest signed head is read on every append: (request, position) answers it at once.
    op.create_index("ix_dsr_chain_heads_request_position", "dsr_chain_heads", ["request_id", "position"])


def downgrade() -> None:
    op.drop_table("dsr_chain_heads")
