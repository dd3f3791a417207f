#!/usr/bin/env bash
# Runs one loadgen scenario end to end:
#
#   loadtest/run-scenario.sh smoke            # or steady, claude-code, abuse, disconnects,
#                                             # upstream-faults, or a path to a YAML file
#
# Builds the release binaries, starts mock-anthropic with the scenario's `upstream:` knobs, the
# pass-through hop, and tollgate on a fresh database (throttle defaults off, the scenario sets
# per-account limits), then runs loadgen: provisioning, the tollgate run, reconciliation
# against Postgres, and the same workload straight against the mock (the baseline) and through
# the pass-through. Reports go to OUT_DIR/NAME.json and OUT_DIR/NAME.html. Everything it
# started is stopped, and the database dropped, when it exits. The exit code is loadgen's:
# 0 passed, 1 failed (reconciliation or a target), 2 bad scenario. Ctrl-C stops loadgen and
# everything else it started.
#
# Knobs (environment variables, defaults in brackets):
#   MOCK_PORT [19899] PASSTHROUGH_PORT [19898] TG_PORT [18180]
#   TG_WORKERS [1] TG_ARBITERS [1] PASSTHROUGH_WORKERS [1] LOADGEN_THREADS [2]
#   PGURL [postgres://postgres@127.0.0.1:5432]
#   SCENARIO_DB [tollgate_scenario]: the database's prefix; the script's PID is appended
#   OUT_DIR [target/loadtest]  SKIP_BUILD [0]  NO_BASELINE [0]
#   LOADGEN_ARGS: extra loadgen flags, e.g. "--rate 50 --duration 5"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NAME="${1:?usage: loadtest/run-scenario.sh NAME|FILE.yaml}"
if [ -f "$NAME" ]; then
    SCENARIO="$NAME"
    NAME="$(basename "$NAME" .yaml)"
else
    SCENARIO="$ROOT/loadtest/scenarios/$NAME.yaml"
fi
[ -f "$SCENARIO" ] || { echo "run-scenario.sh: no scenario $SCENARIO" >&2; exit 2; }

MOCK_PORT="${MOCK_PORT:-19899}"
PASSTHROUGH_PORT="${PASSTHROUGH_PORT:-19898}"
TG_PORT="${TG_PORT:-18180}"
TG_WORKERS="${TG_WORKERS:-1}"
TG_ARBITERS="${TG_ARBITERS:-1}"
PASSTHROUGH_WORKERS="${PASSTHROUGH_WORKERS:-1}"
LOADGEN_THREADS="${LOADGEN_THREADS:-2}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
# Unique per run: two runs side by side never drop each other's database.
SCENARIO_DB="${SCENARIO_DB:-tollgate_scenario}_$$"
OUT_DIR="${OUT_DIR:-$ROOT/target/loadtest}"
SKIP_BUILD="${SKIP_BUILD:-0}"
NO_BASELINE="${NO_BASELINE:-0}"
LOADGEN_ARGS="${LOADGEN_ARGS:-}"

ADMIN_TOKEN="scenario-admin-token-$$"
UPSTREAM_KEY="scenario-upstream-key"
BIN="$ROOT/target/release"
mkdir -p "$OUT_DIR"

for tool in curl psql; do
    command -v "$tool" >/dev/null || { echo "run-scenario.sh: $tool is required" >&2; exit 1; }
done

PIDS=()
LOADGEN_PID=
DB_CREATED=0
cleanup() {
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
        psql "$PGURL/postgres" -qAt -c "DROP DATABASE IF EXISTS $SCENARIO_DB WITH (FORCE)" >/dev/null \
            || echo "run-scenario.sh: could not drop database $SCENARIO_DB" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fails unless PID (started as NAME) is still running.
check_alive() {
    local name=$1 pid=$2
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "run-scenario.sh: $name exited early; see $OUT_DIR/$NAME.$name.log" >&2
        exit 1
    fi
}

# Waits until URL answers, then checks that it is PID (started as NAME) that answers: still
# running (a port taken by something else makes it exit at once).
wait_for() {
    local name=$1 url=$2 pid=$3
    for _ in $(seq 150); do
        check_alive "$name" "$pid"
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            check_alive "$name" "$pid"
            return 0
        fi
        sleep 0.1
    done
    echo "run-scenario.sh: $name did not come up at $url; see $OUT_DIR/$NAME.$name.log" >&2
    exit 1
}

# Fails if something already listens on 127.0.0.1:PORT (it would answer for NAME).
require_free_port() {
    local name=$1 port=$2
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run-scenario.sh: port $port ($name) is already in use; stop what listens there or set another port" >&2
        exit 1
    fi
}

if [ "$SKIP_BUILD" != 1 ]; then
    echo "== building release binaries" >&2
    cargo build --release -p tollgate -p tollgate-loadtest
fi

# The scenario is checked first: a bad file fails before anything starts. Its `upstream:`
# section becomes the mock's flags. The mock checks the upstream key only when the scenario
# sets `upstream.api_key`; tollgate and the pass-through then send that same key.
MOCK_ARGS=()
if ! mapfile -t MOCK_ARGS < <("$BIN/loadgen" --scenario "$SCENARIO" --print-mock-args; echo "rc=$?"); then
    exit 2
fi
[ "${MOCK_ARGS[-1]}" = "rc=0" ] || exit 2
unset 'MOCK_ARGS[-1]'
for i in "${!MOCK_ARGS[@]}"; do
    if [ "${MOCK_ARGS[$i]}" = --api-key ]; then
        UPSTREAM_KEY="${MOCK_ARGS[$((i + 1))]}"
    fi
done
case "$UPSTREAM_KEY" in
    *'"'* | *'\'*) echo "run-scenario.sh: upstream.api_key must not contain \" or \\" >&2; exit 2 ;;
esac

require_free_port mock "$MOCK_PORT"
require_free_port passthrough "$PASSTHROUGH_PORT"
require_free_port tollgate "$TG_PORT"

echo "== $NAME: starting mock-anthropic (${MOCK_ARGS[*]}), passthrough" >&2
RUST_LOG=warn "$BIN/mock-anthropic" --listen "127.0.0.1:$MOCK_PORT" "${MOCK_ARGS[@]}" \
    >"$OUT_DIR/$NAME.mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
"$BIN/passthrough" --listen "127.0.0.1:$PASSTHROUGH_PORT" --workers "$PASSTHROUGH_WORKERS" \
    --upstream "http://127.0.0.1:$MOCK_PORT" --api-key "$UPSTREAM_KEY" \
    >"$OUT_DIR/$NAME.passthrough.log" 2>&1 &
PASSTHROUGH_PID=$!
PIDS+=("$PASSTHROUGH_PID")

echo "== $NAME: starting tollgate on a fresh database $SCENARIO_DB" >&2
psql "$PGURL/postgres" -qAt -c "DROP DATABASE IF EXISTS $SCENARIO_DB WITH (FORCE)" >/dev/null
DB_CREATED=1
RUST_LOG=warn \
TOLLGATE__SERVER__LISTEN="127.0.0.1:$TG_PORT" \
TOLLGATE__SERVER__WORKERS="$TG_WORKERS" \
TOLLGATE__METERING__ACCOUNT_ARBITERS="$TG_ARBITERS" \
TOLLGATE__DATABASE__URL="$PGURL/$SCENARIO_DB" \
TOLLGATE__DATABASE__CREATE_IF_MISSING=true \
TOLLGATE__ADMIN__TOKEN="$ADMIN_TOKEN" \
TOLLGATE__AUTH__KEY_SECRET="scenario-key-secret-0123456789" \
TOLLGATE__UPSTREAMS="[{name=\"mock\",base_url=\"http://127.0.0.1:$MOCK_PORT\",api_key=\"$UPSTREAM_KEY\"}]" \
TOLLGATE__LIMITS__REQUESTS_PER_MINUTE=0 \
TOLLGATE__LIMITS__TOKENS_PER_MINUTE=0 \
TOLLGATE__LIMITS__MAX_CONCURRENT=0 \
    "$BIN/tollgate" serve --config "$ROOT/config.yaml" >"$OUT_DIR/$NAME.tollgate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")

wait_for mock "http://127.0.0.1:$MOCK_PORT/mock/stats" "$MOCK_PID"
wait_for tollgate "http://127.0.0.1:$TG_PORT/healthz" "$TG_PID"
# The passthrough answers only POSTs; a malformed one proves it is up (the mock says 400).
for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' \
        "http://127.0.0.1:$PASSTHROUGH_PORT/v1/messages" || true)
    [ "$code" = 400 ] && break
    sleep 0.1
done
check_alive passthrough "$PASSTHROUGH_PID"

REFERENCES=()
if [ "$NO_BASELINE" != 1 ]; then
    REFERENCES=(--direct "http://127.0.0.1:$MOCK_PORT" --passthrough "http://127.0.0.1:$PASSTHROUGH_PORT")
fi

# tollgate's CPU time (user + system, in clock ticks) from /proc; 0 once it is gone.
cpu_ticks() {
    if [ -r "/proc/$TG_PID/stat" ]; then
        awk '{print $14 + $15}' "/proc/$TG_PID/stat" 2>/dev/null || echo 0
    else
        echo 0
    fi
}
cpu_before=$(cpu_ticks)

echo "== $NAME: loadgen" >&2
# In the background, waited for: the shell then runs its INT/TERM trap at once, and cleanup
# stops loadgen with the rest.
# shellcheck disable=SC2086
"$BIN/loadgen" --scenario "$SCENARIO" \
    --tollgate "http://127.0.0.1:$TG_PORT" --admin-token "$ADMIN_TOKEN" \
    --database-url "$PGURL/$SCENARIO_DB" "${REFERENCES[@]}" \
    --threads "$LOADGEN_THREADS" \
    --json "$OUT_DIR/$NAME.json" --html "$OUT_DIR/$NAME.html" $LOADGEN_ARGS &
LOADGEN_PID=$!
set +e
wait "$LOADGEN_PID"
status=$?
set -e
LOADGEN_PID=

# Only the tollgate run (and its provisioning and reconciliation) touches tollgate, so its CPU
# time over the whole loadgen invocation is the cost of the requests it was sent.
# None of this may change the exit code: tollgate may be gone, the JSON missing.
cpu_after=$(cpu_ticks)
if [ "${cpu_after:-0}" -ge "${cpu_before:-0}" ] 2>/dev/null; then
    cpu_ms=$(( (cpu_after - cpu_before) * 1000 / $(getconf CLK_TCK || echo 100) ))
else
    cpu_ms=0
fi
sent=$(jq -r '[.tollgate.requests_by_group[]] | add // 0' "$OUT_DIR/$NAME.json" 2>/dev/null || echo 0)
peak_kb=0
if [ -r "/proc/$TG_PID/status" ]; then
    peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$TG_PID/status" 2>/dev/null || echo 0)
fi
[[ "$sent" =~ ^[0-9]+$ ]] || sent=0
[[ "$peak_kb" =~ ^[0-9]+$ ]] || peak_kb=0
if [ "$sent" -gt 0 ]; then
    echo "tollgate: ${cpu_ms} ms CPU for ${sent} requests ($(( cpu_ms * 1000 / sent )) ms per 1,000), peak RSS $(( peak_kb / 1024 )) MB"
else
    echo "tollgate: ${cpu_ms} ms CPU, peak RSS $(( peak_kb / 1024 )) MB"
fi
exit "$status"
