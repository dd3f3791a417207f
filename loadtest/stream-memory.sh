#!/usr/bin/env bash
# Memory per open stream: tollgate's resident memory while N slow streams are open at once.
#
#   loadtest/stream-memory.sh [N ...]        (default: 1000 4000)
#
# Starts mock-anthropic with slow streams (120 output tokens, 100 ms apart: 12 s each), and
# tollgate (1 worker, account actors on it) on a fresh database; for each N, opens N concurrent streams
# with loadgen and samples tollgate's VmRSS every 0.5 s. Prints (peak - before) / N.
# Needs the release binaries (cargo build --release --workspace --bins), PostgreSQL and jq.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=tollgate_stream_memory
MOCK_PORT=49999
TG_PORT=48080
COUNTS=("${@:-1000 4000}")
# shellcheck disable=SC2206
COUNTS=(${COUNTS[*]})

SCRIPT=stream-memory.sh
DB_NAME="$DB"
# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

"$BIN/mock-anthropic" --listen "127.0.0.1:$MOCK_PORT" --workers 1 --inter-token-ms 100 \
    --output-tokens 120 >/dev/null 2>&1 &
PIDS+=($!)
ADMIN_TOKEN=memory-admin-token-of-at-least-32-characters
lt_start_tollgate "$TG_PORT" 1 0 "$MOCK_PORT" k "$ADMIN_TOKEN" /dev/null

PROVISIONED=$(lt_provision "$TG_PORT" "$ADMIN_TOKEN" memory)
read -r _ KEY <<<"$PROVISIONED"

rss() { awk '/VmRSS/ {print $2}' "/proc/$TG_PID/status"; }
for n in "${COUNTS[@]}"; do
    before=$(rss)
    "$BIN/loadgen" --target "tollgate=http://127.0.0.1:$TG_PORT" --key "$KEY" --mode stream \
        --concurrency "$n" --max-tokens 200 --duration 8 --warmup 2 --no-preflight --quiet \
        --threads 2 --timeout 60 >/dev/null 2>&1 &
    lg=$!
    LOADGEN_PID=$lg
    peak=$before
    open=0
    for _ in $(seq 1 16); do
        sleep 0.5
        now=$(rss)
        if [ "$now" -gt "$peak" ]; then peak=$now; open=$(ls "/proc/$TG_PID/fd" | wc -l); fi
    done
    wait "$lg" || true
    LOADGEN_PID=
    echo "streams=$n rss_before=${before}kB rss_peak=${peak}kB fds_at_peak=$open per_stream=$(( (peak - before) * 1024 / n / 1024 ))kB"
    sleep 14  # let the streams of this round finish before the next
done
