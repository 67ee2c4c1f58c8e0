"""The write-ahead ledger: append-only, hash-chained events per request."""

from dsr.ledger.events import GENESIS_HASH, ChainError, LedgerEvent, canonical_json, verify_chain

__all__ = ["GENESIS_HASH", "ChainError", "LedgerEvent", "canonical_json", "verify_chain"]
