#!/usr/bin/env bash
# tollgate's overhead benchmark, in one command:
#
#   loadtest/bench.sh
#
# Builds the release binaries, starts the simulated upstream (mock-anthropic), the reference
# pass-through hop (passthrough) and tollgate on a fresh database, provisions an account and a
# key through the admin API, and measures the three targets under identical closed-loop load
# with loadgen, non-streaming then streaming, interleaved over several rounds. Everything it
# started is stopped, and the bench database dropped, when it exits.
#
# Knobs (environment variables, defaults in brackets):
#   CONCURRENCY [16]  DURATION [4] s measured  WARMUP [1] s  ROUNDS [3]  MODE [both]
#   MAX_TOKENS [16]   PROMPT_BYTES [2000]      OUTPUT_TOKENS [16] per response
#   MOCK_WORKERS [1]  PASSTHROUGH_WORKERS [1]  TG_WORKERS [1]
#   TG_ARBITERS [0]: threads of their own for account actors; 0 runs them on the HTTP workers
#   LOADGEN_THREADS [2]
#   MOCK_PORT [19999] PASSTHROUGH_PORT [19998] TG_PORT [18080]
#   PGURL [postgres://postgres@127.0.0.1:5432]  BENCH_DB [tollgate_bench]
#   OUT_DIR [target/bench]  (results.json, logs)   SKIP_BUILD [0]
#   TOP_SNAPSHOTS [0]: 1 = log `top -b -n1` every 5 s while loadgen runs (OUT_DIR/top.log)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONCURRENCY="${CONCURRENCY:-16}"
DURATION="${DURATION:-4}"
WARMUP="${WARMUP:-1}"
ROUNDS="${ROUNDS:-3}"
MODE="${MODE:-both}"
MAX_TOKENS="${MAX_TOKENS:-16}"
PROMPT_BYTES="${PROMPT_BYTES:-2000}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-16}"
MOCK_WORKERS="${MOCK_WORKERS:-1}"
PASSTHROUGH_WORKERS="${PASSTHROUGH_WORKERS:-1}"
TG_WORKERS="${TG_WORKERS:-1}"
TG_ARBITERS="${TG_ARBITERS:-0}"
LOADGEN_THREADS="${LOADGEN_THREADS:-2}"
MOCK_PORT="${MOCK_PORT:-19999}"
PASSTHROUGH_PORT="${PASSTHROUGH_PORT:-19998}"
TG_PORT="${TG_PORT:-18080}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
BENCH_DB="${BENCH_DB:-tollgate_bench}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TOP_SNAPSHOTS="${TOP_SNAPSHOTS:-0}"

ADMIN_TOKEN="bench-admin-token-$$-of-at-least-32-characters"
UPSTREAM_KEY="bench-upstream-key"
BIN="$ROOT/target/release"
mkdir -p "$OUT_DIR"

SCRIPT=bench.sh
DB_NAME="$BENCH_DB"
# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"
lt_require_tools curl jq psql
lt_build_release

echo "== starting mock-anthropic ($MOCK_WORKERS worker), passthrough ($PASSTHROUGH_WORKERS worker)" >&2
RUST_LOG=warn "$BIN/mock-anthropic" --listen "127.0.0.1:$MOCK_PORT" --workers "$MOCK_WORKERS" \
    --ttft-ms 0 --inter-token-ms 0 --output-tokens "$OUTPUT_TOKENS" --tokens-per-chunk 1 \
    >"$OUT_DIR/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
lt_start_passthrough "$PASSTHROUGH_PORT" "$PASSTHROUGH_WORKERS" "$MOCK_PORT" "$UPSTREAM_KEY" \
    "$OUT_DIR/passthrough.log"

echo "== starting tollgate ($TG_WORKERS worker(s), $TG_ARBITERS arbiter(s)) on a fresh database $BENCH_DB" >&2
lt_start_tollgate "$TG_PORT" "$TG_WORKERS" "$TG_ARBITERS" "$MOCK_PORT" "$UPSTREAM_KEY" \
    "$ADMIN_TOKEN" "$OUT_DIR/tollgate.log"

lt_wait_for mock "http://127.0.0.1:$MOCK_PORT/mock/stats" "$MOCK_PID" "$OUT_DIR/mock.log"

echo "== provisioning an account and a key" >&2
PROVISIONED=$(lt_provision "$TG_PORT" "$ADMIN_TOKEN" bench)
read -r ACCOUNT_ID TG_KEY <<<"$PROVISIONED"

lt_wait_for_passthrough "$PASSTHROUGH_PORT" "$PASSTHROUGH_PID" "$OUT_DIR/passthrough.log" 50

TOP_PID=""
if [ "$TOP_SNAPSHOTS" = 1 ]; then
    (while true; do date +%T; top -b -n1 -w 200 | head -20; sleep 5; done) >"$OUT_DIR/top.log" 2>&1 &
    TOP_PID=$!
    PIDS+=("$TOP_PID")
fi

declare -A PID_OF=([mock-anthropic]=$MOCK_PID [passthrough]=$PASSTHROUGH_PID [tollgate]=$TG_PID)
declare -A CPU_BEFORE
for name in "${!PID_OF[@]}"; do
    CPU_BEFORE[$name]=$(lt_cpu_ticks "${PID_OF[$name]}")
done

echo "== loadgen: $CONCURRENCY clients, ${WARMUP}+${DURATION} s per target and mode, $ROUNDS round(s)" >&2
LOADGEN_CMD=("$BIN/loadgen"
    --target "direct=http://127.0.0.1:$MOCK_PORT"
    --target "passthrough=http://127.0.0.1:$PASSTHROUGH_PORT"
    --target "tollgate=http://127.0.0.1:$TG_PORT"
    --key "$UPSTREAM_KEY" --key-for "tollgate=$TG_KEY"
    --mode "$MODE" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP"
    --rounds "$ROUNDS" --max-tokens "$MAX_TOKENS" --prompt-bytes "$PROMPT_BYTES"
    --threads "$LOADGEN_THREADS" --json "$OUT_DIR/results.json")
if [ -x /usr/bin/time ]; then
    LOADGEN_CMD=(/usr/bin/time -f 'loadgen: %U s user, %S s system' "${LOADGEN_CMD[@]}")
fi
"${LOADGEN_CMD[@]}" | tee "$OUT_DIR/results.txt"

[ -n "$TOP_PID" ] && kill "$TOP_PID" 2>/dev/null || true

TICKS=$(getconf CLK_TCK)
echo
echo "CPU seconds used while loadgen ran (each proxy only works while it is measured; the mock always):"
for name in mock-anthropic passthrough tollgate; do
    after=$(lt_cpu_ticks "${PID_OF[$name]}")
    awk -v n="$name" -v a="$after" -v b="${CPU_BEFORE[$name]}" -v t="$TICKS" \
        'BEGIN { printf "  %-15s %7.2f s\n", n, (a - b) / t }'
done
BALANCE=$(curl -fsS "http://127.0.0.1:$TG_PORT/admin/v1/accounts/$ACCOUNT_ID" \
    -H "authorization: Bearer $ADMIN_TOKEN" | jq -r '"balance \(.balance) USD, held \(.held)"')
echo "tollgate account after the run: $BALANCE"
echo "settings: mock $MOCK_WORKERS worker, passthrough $PASSTHROUGH_WORKERS worker, tollgate $TG_WORKERS worker(s) / $TG_ARBITERS arbiter(s), loadgen $LOADGEN_THREADS threads; results in $OUT_DIR"
