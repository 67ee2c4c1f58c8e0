#!/usr/bin/env bash
# One process worker (run as many as needed, on any machines). Each flow run is its own process;
# --limit caps how many this worker runs at once. All workers share the ledger and each vendor's
# rate budget through DSR_DATABASE_URL and DSR_RATE_LIMIT_URL, so adding workers never adds load
# past a vendor's limit.
source "$(dirname "$0")/common.sh"
require PREFECT_API_URL DSR_DATABASE_URL DSR_RATE_LIMIT_URL DSR_REPO_DIR DSR_IDENTITY_KEY
cd "$DSR_REPO_DIR"
exec "$PREFECT" worker start --pool "$POOL" --type process --name "${DSR_WORKER_NAME:-$(hostname)-$$}" \
  --limit "${DSR_WORKER_LIMIT:-4}"
