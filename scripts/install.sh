#!/usr/bin/env bash
# Installs the project's npm dependencies when they are missing or older than the lockfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "[install] npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
# The JS tag's browser test (test/e2e/tag.browser.test.ts) drives Debian's Chromium through playwright-core.
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "[install] apt-get install chromium (for the JS tag's browser test)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "[install] /usr/bin/chromium is missing and installing it needs root: run 'apt-get install chromium' as root, or the JS tag's browser test fails" >&2
  fi
fi
