#!/usr/bin/env bash
# Installs the project's npm dependencies when they are missing or older than the lockfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "[install] npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
