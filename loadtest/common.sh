# Shared by loadtest/bench.sh, run-scenario.sh and stream-memory.sh: starting tollgate on a
# fresh database, waiting for a process to answer, and cleaning up whatever was started.
# Source it after setting SCRIPT (the caller's name, for messages), PGURL, DB_NAME and LOG_DIR.

PIDS=()
# A process to stop before the others (the load generator), if any.
LOADGEN_PID=
DB_CREATED=0

# Stops every process started, drops the database, and keeps the exit status.
lt_cleanup() {
    local status=$?
    if [ -n "$LOADGEN_PID" ]; then
        kill "$LOADGEN_PID" 2>/dev/null || true
        wait "$LOADGEN_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$DB_CREATED" = 1 ]; then
        psql "$PGURL/postgres" -qAt -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null \
            || echo "$SCRIPT: could not drop database $DB_NAME" >&2
    fi
    exit "$status"
}
trap lt_cleanup EXIT
trap 'exit 130' INT TERM

# Fails unless PID (started as NAME, logging to LOG) is still running.
lt_check_alive() {
    local name=$1 pid=$2 log=$3
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$SCRIPT: $name exited early; see $log" >&2
        exit 1
    fi
}

# Waits (about 15 s at most, WAIT_TENTHS tenths of a second if set) until URL answers 2xx,
# and checks that PID is the one answering.
lt_wait_for() {
    local name=$1 url=$2 pid=$3 log=$4
    for _ in $(seq "${WAIT_TENTHS:-150}"); do
        lt_check_alive "$name" "$pid" "$log"
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            lt_check_alive "$name" "$pid" "$log"
            return 0
        fi
        sleep 0.1
    done
    echo "$SCRIPT: $name did not come up at $url; see $log" >&2
    exit 1
}

# Fails if something already listens on 127.0.0.1:PORT (it would answer for NAME).
lt_require_free_port() {
    local name=$1 port=$2
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "$SCRIPT: port $port ($name) is already in use; stop what listens there or set another port" >&2
        exit 1
    fi
}

# CPU time (user + system) PID has used so far, in clock ticks; 0 once it is gone.
lt_cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Starts the pass-through hop in front of the mock at MOCK_PORT. Sets PASSTHROUGH_PID.
#   lt_start_passthrough PORT WORKERS MOCK_PORT UPSTREAM_KEY LOG
lt_start_passthrough() {
    local port=$1 workers=$2 mock_port=$3 upstream_key=$4 log=$5
    "$BIN/passthrough" --listen "127.0.0.1:$port" --workers "$workers" \
        --upstream "http://127.0.0.1:$mock_port" --api-key "$upstream_key" >"$log" 2>&1 &
    PASSTHROUGH_PID=$!
    PIDS+=("$PASSTHROUGH_PID")
}

# Starts tollgate on a freshly created DB_NAME, in front of the mock at MOCK_PORT, with
# throttle defaults off. Sets TG_PID. TG_WRAPPER, if set, is a command tollgate runs under
# (e.g. valgrind).
#   lt_start_tollgate PORT WORKERS ARBITERS MOCK_PORT UPSTREAM_KEY ADMIN_TOKEN LOG
# with the journal in OUT_DIR/journal-PORT (TG_JOURNAL=0: none; TG_DURABLE=false: replies do
# not wait for it).
lt_start_tollgate() {
    local port=$1 workers=$2 arbiters=$3 mock_port=$4 upstream_key=$5 admin_token=$6 log=$7
    PGOPTIONS="--client-min-messages=warning" \
        psql "$PGURL/postgres" -qAt -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
    DB_CREATED=1
    # A fresh journal with the fresh database: a journal belongs to its database. TG_JOURNAL=0
    # runs without one (an empty journal_dir turns it off); TG_DURABLE=false stops replies
    # waiting for it.
    local journal_dir="${OUT_DIR:-$ROOT/target}/journal-$port"
    rm -rf "$journal_dir"
    [ "${TG_JOURNAL:-1}" = 0 ] && journal_dir=""
    TOLLGATE__METERING__JOURNAL_DIR="$journal_dir" \
    TOLLGATE__METERING__DURABLE_BEFORE_REPLY="${TG_DURABLE:-true}" \
    RUST_LOG=warn \
    TOLLGATE__SERVER__LISTEN="127.0.0.1:$port" \
    TOLLGATE__SERVER__WORKERS="$workers" \
    TOLLGATE__METERING__ACCOUNT_ARBITERS="$arbiters" \
    TOLLGATE__DATABASE__URL="$PGURL/$DB_NAME" \
    TOLLGATE__DATABASE__CREATE_IF_MISSING=true \
    TOLLGATE__ADMIN__TOKEN="$admin_token" \
    TOLLGATE__AUTH__KEY_SECRET="loadtest-key-secret-0123456789" \
    TOLLGATE__UPSTREAMS="[{name=\"mock\",base_url=\"http://127.0.0.1:$mock_port\",api_key=\"$upstream_key\",proxy=\"\"}]" \
    TOLLGATE__LIMITS__REQUESTS_PER_MINUTE=0 \
    TOLLGATE__LIMITS__TOKENS_PER_MINUTE=0 \
    TOLLGATE__LIMITS__MAX_CONCURRENT=0 \
        ${TG_WRAPPER:-} "$BIN/tollgate" serve --config "$ROOT/config.yaml" >"$log" 2>&1 &
    TG_PID=$!
    PIDS+=("$TG_PID")
    lt_wait_for tollgate "http://127.0.0.1:$port/healthz" "$TG_PID" "$log"
}

# Fails unless every named command is installed.
lt_require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$SCRIPT: $tool is required" >&2; exit 1; }
    done
}

# Builds the release binaries unless SKIP_BUILD=1.
lt_build_release() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        echo "== building release binaries" >&2
        cargo build --release -p tollgate -p mock-anthropic -p loadgen -p passthrough
    fi
}

# Waits (TENTHS tenths of a second at most) until the pass-through at PORT answers, then checks
# that PID is still running. It answers only POSTs; a malformed one proves it is up (the mock
# behind it says 400).
#   lt_wait_for_passthrough PORT PID LOG TENTHS
lt_wait_for_passthrough() {
    local port=$1 pid=$2 log=$3 tenths=$4 code
    for _ in $(seq "$tenths"); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' \
            "http://127.0.0.1:$port/v1/messages" || true)
        [ "$code" = 400 ] && break
        sleep 0.1
    done
    lt_check_alive passthrough "$pid" "$log"
}

# POSTs BODY to tollgate's admin API at PORT (path PATH under /admin/v1) with TOKEN.
#   lt_admin_post PORT TOKEN PATH BODY
lt_admin_post() {
    curl -fsS -X POST "http://127.0.0.1:$1/admin/v1/$3" \
        -H "authorization: Bearer $2" -H 'content-type: application/json' -d "$4"
}

# Creates an account NAME@example.com with no throttles and USD 1,000,000, and an API key for
# it. Prints "ACCOUNT_ID KEY".
#   lt_provision PORT TOKEN NAME
lt_provision() {
    local port=$1 token=$2 name=$3 id key
    id=$(lt_admin_post "$port" "$token" accounts \
        "{\"email\":\"$name@example.com\",\"limits\":{\"requests_per_minute\":0,\"tokens_per_minute\":0,\"max_concurrent\":0}}" \
        | jq -er .id) || return 1
    lt_admin_post "$port" "$token" "accounts/$id/credit" \
        "{\"amount_usd\":\"1000000\",\"reason\":\"$name\"}" >/dev/null || return 1
    key=$(lt_admin_post "$port" "$token" "accounts/$id/keys" "{\"name\":\"$name\"}" \
        | jq -er .key) || return 1
    echo "$id $key"
}
