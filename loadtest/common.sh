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

# Waits (about 15 s at most) until URL answers 2xx, and checks that PID is the one answering.
lt_wait_for() {
    local name=$1 url=$2 pid=$3 log=$4
    for _ in $(seq 150); do
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
# throttle defaults off. Sets TG_PID.
#   lt_start_tollgate PORT WORKERS ARBITERS MOCK_PORT UPSTREAM_KEY ADMIN_TOKEN LOG
lt_start_tollgate() {
    local port=$1 workers=$2 arbiters=$3 mock_port=$4 upstream_key=$5 admin_token=$6 log=$7
    PGOPTIONS="--client-min-messages=warning" \
        psql "$PGURL/postgres" -qAt -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
    DB_CREATED=1
    RUST_LOG=warn \
    TOLLGATE__SERVER__LISTEN="127.0.0.1:$port" \
    TOLLGATE__SERVER__WORKERS="$workers" \
    TOLLGATE__METERING__ACCOUNT_ARBITERS="$arbiters" \
    TOLLGATE__DATABASE__URL="$PGURL/$DB_NAME" \
    TOLLGATE__DATABASE__CREATE_IF_MISSING=true \
    TOLLGATE__ADMIN__TOKEN="$admin_token" \
    TOLLGATE__AUTH__KEY_SECRET="loadtest-key-secret-0123456789" \
    TOLLGATE__UPSTREAMS="[{name=\"mock\",base_url=\"http://127.0.0.1:$mock_port\",api_key=\"$upstream_key\"}]" \
    TOLLGATE__LIMITS__REQUESTS_PER_MINUTE=0 \
    TOLLGATE__LIMITS__TOKENS_PER_MINUTE=0 \
    TOLLGATE__LIMITS__MAX_CONCURRENT=0 \
        "$BIN/tollgate" serve --config "$ROOT/config.yaml" >"$log" 2>&1 &
    TG_PID=$!
    PIDS+=("$TG_PID")
    lt_wait_for tollgate "http://127.0.0.1:$port/healthz" "$TG_PID" "$log"
}
