"""The ledger's tables. Alembic migrations (dsr/migrations) create and evolve them."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

# The record: append-only, one hash chain per request. Payload is stored as canonical JSON text
# (not JSON/JSONB) so the bytes that were hashed are the bytes that are read back on any database.
events = Table(
    "dsr_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("at", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Two writers that read the same head both try seq N+1: one wins, the other retries.
    # This constraint is what keeps a request's chain from forking.
    UniqueConstraint("request_id", "seq", name="uq_dsr_events_request_seq"),
)

# A derived index for listing (rebuildable from events at any time; never the record).
requests = Table(
    "dsr_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("regime", String(16), nullable=False),
    Column("status", String(32), nullable=False, index=True),
    Column("received_at", String(32), nullable=False),
    Column("due", String(10), nullable=True),
    Column("updated_at", String(32), nullable=False),
    Column("last_seq", Integer, nullable=False),
)

# The identity a request is about. Kept out of the hash chain on purpose: events carry only the
# keyed hash, so this row can be destroyed when the request's own retention ends without
# breaking the chain or the evidence.
identities = Table(
    "dsr_identities",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("value", Text, nullable=False),
    Column("hash", String(64), nullable=False, index=True),
)

# Subject tokens: the ledger records that one was issued and used (hash only); this table makes
# "single use" atomic (a conditional UPDATE), which a fold over events cannot.
subject_tokens = Table(
    "dsr_subject_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("expires_at", String(32), nullable=False),
    Column("used_at", String(32), nullable=True),
)

# Signed chain heads (append-only log, itself hash-linked): what a table edit cannot forge.
# A chain shorter than its newest signed head was truncated; a signed head with no chain was deleted.
# `position` counts entries without gaps (an autoincrement id may skip), so a deleted entry shows.
chain_heads = Table(
    "dsr_chain_heads",
    metadata,
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("request_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("at", String(32), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("prev_entry_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Index("ix_dsr_chain_heads_request_position", "request_id", "position"),
)

# Free text referenced from events by SHA-256: redactable without breaking the chain.
free_texts = Table(
    "dsr_free_texts",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("text", Text, nullable=True),
    Column("redacted_at", String(32), nullable=True),
    Column("redacted_reason", String(200), nullable=True),
)
