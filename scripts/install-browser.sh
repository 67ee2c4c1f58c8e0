#!/usr/bin/env bash
# Installs what the auditor page's browser test (tests/test_auditor_page.py) needs, idempotently:
# Debian's Chromium (only when /usr/bin/chromium is missing) and the Playwright *Python package*
# in the project venv. Playwright drives the system Chromium through `executable_path`; its own
# browser download (`playwright install`) is never run: nothing but package registries is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PLAYWRIGHT_SPEC="${PLAYWRIGHT_SPEC:-playwright>=1.44}"

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "install-browser: no venv at $VENV (run 'make install' first)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c 'import playwright.sync_api' >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install --quiet "$PLAYWRIGHT_SPEC"
fi

echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'), playwright $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))')"
