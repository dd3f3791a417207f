#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that stays the same on a
# noisy machine, where timings do not.
#
#   loadtest/instructions.sh
#
# Runs tollgate (1 HTTP worker, account actors on it) and then the pass-through hop under
# callgrind, each in front of the same mock-anthropic (not instrumented). loadgen sends
# non-streaming requests (2,000-byte prompts, 4 clients, closed loop) for DURATION seconds to
# each; the instrumented process is then stopped gracefully and its total instruction count
# (user space only: the kernel's share of each syscall is not counted) divided by the
# requests it served. The total includes start-up and shutdown, which loadgen's request count
# amortises; ~5,000 requests make that a few per cent.
#
# Knobs: DURATION [15] s of load per target  SKIP_BUILD [0]  MODE [non-stream]
#        OUT_DIR [target/instructions] (callgrind.out.* files, for callgrind_annotate)
#        PGURL [postgres://postgres@127.0.0.1:5432]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-15}"
SKIP_BUILD="${SKIP_BUILD:-0}"
MODE="${MODE:-non-stream}"
OUT_DIR="${OUT_DIR:-$ROOT/target/instructions}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
MOCK_PORT=19799 PASSTHROUGH_PORT=19798 TG_PORT=18780
BIN="$ROOT/target/release"
mkdir -p "$OUT_DIR"
SCRIPT=instructions.sh
DB_NAME="tollgate_instructions_$$"
# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"
lt_require_tools curl jq psql valgrind callgrind_annotate
lt_build_release
for port in "$MOCK_PORT" "$PASSTHROUGH_PORT" "$TG_PORT"; do
    lt_require_free_port "port $port" "$port"
done

RUST_LOG=warn "$BIN/mock-anthropic" --listen "127.0.0.1:$MOCK_PORT" --workers 1 \
    --ttft-ms 0 --inter-token-ms 0 --output-tokens 16 --tokens-per-chunk 1 \
    >"$OUT_DIR/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
lt_wait_for mock "http://127.0.0.1:$MOCK_PORT/mock/stats" "$MOCK_PID" "$OUT_DIR/mock.log"

# Sends DURATION s of load to NAME at URL with KEY; prints the requests that succeeded.
load() {
    local name=$1 url=$2 key=$3
    "$BIN/loadgen" --target "$name=$url" --key "$key" --mode "$MODE" --concurrency 4 \
        --duration "$DURATION" --warmup 0 --rounds 1 --max-tokens 16 --prompt-bytes 2000 \
        --threads 1 --quiet | awk -v n="$name" '$1 == n { print $3 }'
}

# Stops PID gracefully and waits until it has written its callgrind file. Not to be called in
# a subshell: only the shell that started PID can wait for it.
stop() {
    kill -TERM "$1"
    wait "$1" 2>/dev/null || true
}

# The instruction total of a callgrind file.
instructions_in() {
    callgrind_annotate "$1" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

echo "== tollgate under callgrind" >&2
ADMIN_TOKEN="instructions-admin-$$-of-at-least-32-characters"
TG_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$OUT_DIR/callgrind.out.tollgate" \
WAIT_TENTHS=600 \
    lt_start_tollgate "$TG_PORT" 1 0 "$MOCK_PORT" upstream-key "$ADMIN_TOKEN" "$OUT_DIR/tollgate.log"
PROVISIONED=$(lt_provision "$TG_PORT" "$ADMIN_TOKEN" instructions)
read -r _ TG_KEY <<<"$PROVISIONED"
TG_REQUESTS=$(load tollgate "http://127.0.0.1:$TG_PORT" "$TG_KEY")
stop "$TG_PID"
TG_TOTAL=$(instructions_in "$OUT_DIR/callgrind.out.tollgate")

echo "== passthrough under callgrind" >&2
valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/callgrind.out.passthrough" \
    "$BIN/passthrough" --listen "127.0.0.1:$PASSTHROUGH_PORT" --workers 1 \
    --upstream "http://127.0.0.1:$MOCK_PORT" --api-key upstream-key >"$OUT_DIR/passthrough.log" 2>&1 &
PT_PID=$!
PIDS+=("$PT_PID")
lt_wait_for_passthrough "$PASSTHROUGH_PORT" "$PT_PID" "$OUT_DIR/passthrough.log" 600
PT_REQUESTS=$(load passthrough "http://127.0.0.1:$PASSTHROUGH_PORT" upstream-key)
stop "$PT_PID"
PT_TOTAL=$(instructions_in "$OUT_DIR/callgrind.out.passthrough")

awk -v tn="$TG_REQUESTS" -v tt="$TG_TOTAL" -v pn="$PT_REQUESTS" -v pt="$PT_TOTAL" -v m="$MODE" 'BEGIN {
    printf "%s, user-space instructions per request (callgrind):\n", m
    printf "  tollgate     %9.0f  (%d requests, %d instructions)\n", tt / tn, tn, tt
    printf "  passthrough  %9.0f  (%d requests, %d instructions)\n", pt / pn, pn, pt
    printf "  ratio        %9.2f\n", (tt / tn) / (pt / pn)
}'
echo "callgrind files in $OUT_DIR (callgrind_annotate --inclusive=yes FILE)"
