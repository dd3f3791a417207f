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
# 0 passed, 1 failed (reconciliation or a target), 2 bad scenario.
#
# Knobs (environment variables, defaults in brackets):
#   MOCK_PORT [19899] PASSTHROUGH_PORT [19898] TG_PORT [18180]
#   TG_WORKERS [1] TG_ARBITERS [1] PASSTHROUGH_WORKERS [1] LOADGEN_THREADS [2]
#   PGURL [postgres://postgres@127.0.0.1:5432]  SCENARIO_DB [tollgate_scenario]
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
SCENARIO_DB="${SCENARIO_DB:-tollgate_scenario}"
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
DB_CREATED=0
cleanup() {
    local status=$?
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

wait_for() {
    local name=$1 url=$2
    for _ in $(seq 150); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run-scenario.sh: $name did not come up at $url; see $OUT_DIR/$NAME.$name.log" >&2
    exit 1
}

if [ "$SKIP_BUILD" != 1 ]; then
    echo "== building release binaries" >&2
    cargo build --release -p tollgate -p tollgate-loadtest
fi

# The scenario is checked first: a bad file fails before anything starts. Its `upstream:`
# section becomes the mock's flags; the mock requires the upstream key tollgate sends.
MOCK_ARGS=()
if ! mapfile -t MOCK_ARGS < <("$BIN/loadgen" --scenario "$SCENARIO" --print-mock-args; echo "rc=$?"); then
    exit 2
fi
[ "${MOCK_ARGS[-1]}" = "rc=0" ] || exit 2
unset 'MOCK_ARGS[-1]'

echo "== $NAME: starting mock-anthropic (${MOCK_ARGS[*]}), passthrough" >&2
RUST_LOG=warn "$BIN/mock-anthropic" --listen "127.0.0.1:$MOCK_PORT" "${MOCK_ARGS[@]}" \
    >"$OUT_DIR/$NAME.mock.log" 2>&1 &
PIDS+=($!)
"$BIN/passthrough" --listen "127.0.0.1:$PASSTHROUGH_PORT" --workers "$PASSTHROUGH_WORKERS" \
    --upstream "http://127.0.0.1:$MOCK_PORT" --api-key "$UPSTREAM_KEY" \
    >"$OUT_DIR/$NAME.passthrough.log" 2>&1 &
PIDS+=($!)

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
PIDS+=($TG_PID)

wait_for mock "http://127.0.0.1:$MOCK_PORT/mock/stats"
wait_for tollgate "http://127.0.0.1:$TG_PORT/healthz"
# The passthrough answers only POSTs; a malformed one proves it is up (the mock says 400).
for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' \
        "http://127.0.0.1:$PASSTHROUGH_PORT/v1/messages" || true)
    [ "$code" = 400 ] && break
    sleep 0.1
done

REFERENCES=()
if [ "$NO_BASELINE" != 1 ]; then
    REFERENCES=(--direct "http://127.0.0.1:$MOCK_PORT" --passthrough "http://127.0.0.1:$PASSTHROUGH_PORT")
fi

# tollgate's CPU time (user + system, in clock ticks) from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$TG_PID/stat"; }
cpu_before=$(cpu_ticks)

echo "== $NAME: loadgen" >&2
set +e
# shellcheck disable=SC2086
"$BIN/loadgen" --scenario "$SCENARIO" \
    --tollgate "http://127.0.0.1:$TG_PORT" --admin-token "$ADMIN_TOKEN" \
    --database-url "$PGURL/$SCENARIO_DB" "${REFERENCES[@]}" \
    --threads "$LOADGEN_THREADS" \
    --json "$OUT_DIR/$NAME.json" --html "$OUT_DIR/$NAME.html" $LOADGEN_ARGS
status=$?
set -e

# Only the tollgate run (and its provisioning and reconciliation) touches tollgate, so its CPU
# time over the whole loadgen invocation is the cost of the requests it was sent.
cpu_ms=$(( ($(cpu_ticks) - cpu_before) * 1000 / $(getconf CLK_TCK) ))
sent=$(jq -r '[.tollgate.requests_by_group[]] | add // 0' "$OUT_DIR/$NAME.json" 2>/dev/null || echo 0)
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$TG_PID/status")
if [ "${sent:-0}" -gt 0 ]; then
    echo "tollgate: ${cpu_ms} ms CPU for ${sent} requests ($(( cpu_ms * 1000 / sent )) ms per 1,000), peak RSS $(( peak_kb / 1024 )) MB"
else
    echo "tollgate: ${cpu_ms} ms CPU, peak RSS $(( peak_kb / 1024 )) MB"
fi
exit "$status"
