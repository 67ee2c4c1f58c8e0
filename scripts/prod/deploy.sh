#!/usr/bin/env bash
# Once per release: the work pool, then the three deployments of deployments/prefect.yaml
# (process-request on dsr.request.verified, deadline-sweep hourly, retention-purge nightly).
source "$(dirname "$0")/common.sh"
require PREFECT_API_URL DSR_REPO_DIR
cd "$DSR_REPO_DIR"
"$PREFECT" work-pool create "$POOL" --type process --overwrite
"$PREFECT" --no-prompt deploy --all --prefect-file deployments/prefect.yaml
