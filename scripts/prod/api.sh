#!/usr/bin/env bash
# The HTTP API (intake, officers, auditors). Verifications it records become the Prefect event
# dsr.request.verified on PREFECT_API_URL, which starts process-request on a worker.
source "$(dirname "$0")/common.sh"
require PREFECT_API_URL DSR_DATABASE_URL DSR_IDENTITY_KEY
exec "$DSR" serve --api-only --host "${DSR_API_HOST:-0.0.0.0}" --port "${DSR_API_PORT:-8080}"
