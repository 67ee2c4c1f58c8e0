#!/usr/bin/env bash
# Once per release, before the new API and workers start: the ledger's schema upgrade (the one
# place it runs: fleet processes have DSR_SCHEMA_UPGRADE=release and refuse an older schema), then
# the work pool and the deployments of deployments/prefect.yaml (process-request on
# dsr.request.verified, deadline-sweep hourly, retention-purge nightly; their failure automation).
source "$(dirname "$0")/common.sh"
require PREFECT_API_URL DSR_REPO_DIR DSR_DATABASE_URL
"$DSR" db upgrade
cd "$DSR_REPO_DIR"
"$PREFECT" work-pool create "$POOL" --type process --overwrite
"$PREFECT" --no-prompt deploy --all --prefect-file deployments/prefect.yaml
