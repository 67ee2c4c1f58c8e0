"""Public intake limits and OpenDSR controllers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

- dsr_verification_codes.failures: wrong codes for the request across every code it was sent
  (the per-code `attempts` restarts with each new code; this does not), so that re-submitting a
  request never buys a fresh guessing budget; past the limit the request is cancelled.
- dsr_code_issues: one row per code e-mailed, by identity hash, so that codes per subject (and per
  request) are capped over a sliding window whatever the request ids used.
- dsr_code_identities: one row per identity hash that was sent a code; written first in the
  issuing transaction, it serialises concurrent issuers for one subject (a row lock on PostgreSQL,
  the write lock on SQLite), so the window count cannot be raced past its cap.
- dsr_intake_requests.controller_id: the OpenDSR controller that submitted the request (the
  signer, or the configured default), named in every response and callback about it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dsr_verification_codes",
                  sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
    op.add_column("dsr_intake_requests", sa.Column("controller_id", sa.String(200), nullable=True))
    op.create_table(
        "dsr_code_issues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("identity_hash", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_dsr_code_issues_identity", "dsr_code_issues", ["identity_hash", "issued_at"])
    op.create_index("ix_dsr_code_issues_request", "dsr_code_issues", ["request_id", "issued_at"])
    op.create_table(
        "dsr_code_identities",
        sa.Column("identity_hash", sa.String(64), primary_key=True),
        sa.Column("last_issued_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dsr_code_identities")
    op.drop_index("ix_dsr_code_issues_request", table_name="dsr_code_issues")
    op.drop_index("ix_dsr_code_issues_identity", table_name="dsr_code_issues")
    op.drop_table("dsr_code_issues")
    with op.batch_alter_table("dsr_intake_requests") as batch:
        batch.drop_column("controller_id")
    with op.batch_alter_table("dsr_verification_codes") as batch:
        batch.drop_column("failures")
