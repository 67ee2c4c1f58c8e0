# Sourced by the scripts here: loads ./env (or $DSR_ENV_FILE) and checks what every process needs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_file="${DSR_ENV_FILE:-$here/env}"
if [[ -f "$env_file" ]]; then
  # shellcheck disable=SC1090
  source "$env_file"
fi
require() {
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then
      echo "$(basename "$0"): $name is not set (see scripts/prod/env.example)" >&2
      exit 2
    fi
  done
}
if [[ -n "${DSR_IDENTITY_KEY_FILE:-}" && -z "${DSR_IDENTITY_KEY:-}" ]]; then
  DSR_IDENTITY_KEY="$(cat "$DSR_IDENTITY_KEY_FILE")"
  export DSR_IDENTITY_KEY
fi
# A fleet's processes never upgrade the ledger's schema as they start (they would race on a
# release): deploy.sh runs `dsr db upgrade` once, and the others refuse an older schema.
export DSR_SCHEMA_UPGRADE="${DSR_SCHEMA_UPGRADE:-release}"
PREFECT="${PREFECT:-prefect}"
DSR="${DSR:-dsr}"
POOL="${DSR_POOL:-dsr-pool}"
