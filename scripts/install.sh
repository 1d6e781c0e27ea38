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
# The API contract test (test/e2e/apiContract.test.ts) fuzzes every route with schemathesis, from a
# Python venv of its own. Without ensurepip (Debian's python3 without python3-venv) the venv is made
# without pip and the system's pip installs into it.
SCHEMATHESIS_VERSION=4.32.5
VENV=.data/tools/venv
if [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]]; then
  echo "[install] schemathesis $SCHEMATHESIS_VERSION into $VENV (for the API contract test)" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" >&2 2>/dev/null || { rm -rf "$VENV" && python3 -m venv --without-pip "$VENV" >&2; }
  fi
  if [[ -x "$VENV/bin/pip" ]]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
  else
    python3 -m pip --python "$VENV/bin/python" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
  fi
fi
