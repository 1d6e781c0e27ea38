#!/usr/bin/env bash
# `npm run dev`: installs what is missing, starts Temporal (with its Web UI) and the store, the
# worker and the API, loads a small demo dataset, prints the URLs and the admin key. Ctrl-C stops
# everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
up_output="$(bash scripts/services.sh up)"
eval "$(grep '^export ' <<<"$up_output")"
started="${DMP_STARTED_SERVICES:-}"
export PORT="${PORT:-8080}"
export DMP_ADMIN_KEY="${DMP_ADMIN_KEY:-adm_$(node -e "process.stdout.write(require('crypto').randomBytes(18).toString('base64url'))")}"
mkdir -p .data/logs

pids=()
# shellcheck disable=SC2317 # invoked through trap
cleanup() {
  trap - EXIT INT TERM
  echo "stopping…" >&2
  [[ ${#pids[@]} -gt 0 ]] && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  # shellcheck disable=SC2086 # one argument per service name
  [[ -n "$started" ]] && bash scripts/services.sh down $started
}
trap cleanup EXIT INT TERM

DMP_SERVICE_NAME=worker npx tsx workers/main.ts >>.data/logs/worker.log 2>&1 &
pids+=($!)
DMP_SERVICE_NAME=api npx tsx api/main.ts >>.data/logs/api.log 2>&1 &
pids+=($!)

for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "the API did not become healthy; see .data/logs/api.log" >&2; exit 1; }
demo="$(npx tsx scripts/demo.ts)"

cat <<INFO

  DMP is running.
    API          http://127.0.0.1:$PORT        (OpenAPI: http://127.0.0.1:$PORT/openapi.json)
    Temporal UI  http://127.0.0.1:${DMP_TEMPORAL_UI_PORT:-8233}
    Admin key    $DMP_ADMIN_KEY
    Store        $MONGODB_URI
    Temporal     $TEMPORAL_ADDRESS
    Demo data    $demo
    Logs         .data/logs/{api,worker}.log

  Try:  curl -H "Authorization: Bearer $DMP_ADMIN_KEY" "http://127.0.0.1:$PORT/v1/profiles/lookup?type=email&value=visitor0@example.org"
  Ctrl-C stops everything this command started.

INFO
wait
