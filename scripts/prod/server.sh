#!/usr/bin/env bash
# The Prefect server on PostgreSQL (one per fleet). Its database is its own, not the ledger's:
#   PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect@db.internal/prefect
source "$(dirname "$0")/common.sh"
require PREFECT_SERVER_DATABASE_CONNECTION_URL
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
exec "$PREFECT" server start --host "${PREFECT_HOST:-0.0.0.0}" --port "${PREFECT_PORT:-4200}"
