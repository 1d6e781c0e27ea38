#!/usr/bin/env bash
# Run a command with the local services up, then stop only the services that
# this run had to start (those already running are left alone).
#
# Usage: bash scripts/with-services.sh [--backend sqlite|postgresql] <command> [args...]
#
# The command sees TEMPORAL_ADDRESS, MONGODB_URI and DMP_STARTED_SERVICES in its
# environment. The exit code is the command's own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="$ROOT/scripts/services.sh"

up_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend)
      [[ $# -ge 2 ]] || { echo "with-services: --backend needs a value" >&2; exit 2; }
      up_args+=(--backend "$2")
      shift 2
      ;;
    --backend=*)
      up_args+=("$1")
      shift
      ;;
    --)
      shift
      break
      ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

# `up` stops whatever it started itself when it fails, so a failed start
# leaves nothing behind here either.
up_output="$(bash "$SERVICES" up "${up_args[@]}")" || {
  echo "with-services: services did not start" >&2
  exit 1
}
eval "$(grep '^export ' <<<"$up_output")"
started="${DMP_STARTED_SERVICES:-}"

# shellcheck disable=SC2317 # invoked through trap
cleanup() {
  trap - EXIT INT TERM
  trap '' INT TERM
  if [[ -n "$started" ]]; then
    # Word splitting is wanted: one argument per service name.
    # shellcheck disable=SC2086
    bash "$SERVICES" down $started || echo "with-services: stopping '$started' failed" >&2
  fi
}
trap cleanup EXIT

# The command runs as a background job so that a signal to this script is
# handled at once (forwarded as SIGTERM) instead of after the command ends.
# Its stdin is passed explicitly, since background jobs otherwise read /dev/null.
child=""
# shellcheck disable=SC2317 # invoked through trap
forward() {
  if [[ -n "$child" ]]; then
    kill -TERM "$child" 2>/dev/null || true
  fi
}
trap forward INT TERM

set +e
exec 3<&0
"$@" <&3 3<&- &
child=$!
exec 3<&-
wait "$child"
rc=$?
# A trapped signal interrupts `wait`; keep waiting until the command is gone.
while kill -0 "$child" 2>/dev/null; do
  wait "$child"
  rc=$?
done
# When the command was reaped while `wait` was interrupted, its status is
# still known to the shell; 127 here means it was already collected above.
wait "$child" 2>/dev/null
last=$?
if [[ $last -ne 127 ]]; then
  rc=$last
fi
exit "$rc"
