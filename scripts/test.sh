#!/usr/bin/env bash
# `npm test`: installs what is missing, starts the services that are not running, runs every test
# (unit, integration, end-to-end) against them, stops what it started, and ends with the line
# `<n> passed, <m> failed`. Extra arguments go to jest (e.g. a path filter).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh || exit 1
mkdir -p .data
results=.data/jest-results.json
rm -f "$results"
LOG_LEVEL="${LOG_LEVEL:-warn}" bash scripts/with-services.sh npx jest --ci --json --outputFile="$results" "$@"
status=$?
node scripts/test-summary.js "$results"
exit "$status"
