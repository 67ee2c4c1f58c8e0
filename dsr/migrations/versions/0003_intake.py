"""Public intake (OpenDSR): idempotency records, duplicate claims, e-mailed codes, status callbacks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

None of these tables is the record (the ledger is). Each holds what a fold over events cannot
keep atomically or must not keep at all:
- dsr_intake_requests: one row per OpenDSR request id, with a keyed hash of its content, so a
  re-POST is answered idempotently (same content) or refused (409), and the duplicate decision.
- dsr_intake_primaries: per (identity hash, request type), the open request that later
  submissions within the window are linked to; its primary key makes that claim atomic.
- dsr_verification_codes: the current e-mailed code per request, as an HMAC only, with its
  expiry and attempt count (a conditional UPDATE counts attempts, however many race).
- dsr_status_callbacks: the subject's callback URLs (secrets: they may carry tokens, so they are
  kept here and never in events, logs or bundles) and the last status each one was sent.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsr_intake_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("duplicate_of", sa.String(64), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "dsr_intake_primaries",
        sa.Column("identity_hash", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("claimed_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "dsr_verification_codes",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("code_hmac", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("used_at", sa.String(32), nullable=True),
        sa.Column("codes_sent", sa.Integer, nullable=False),
    )
    op.create_table(
        "dsr_status_callbacks",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("url_sha256", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=True),  # cleared once a final status is delivered
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("last_status", sa.String(32), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("dsr_status_callbacks")
    op.drop_table("dsr_verification_codes")
    op.drop_table("dsr_intake_primaries")
    op.drop_table("dsr_intake_requests")
