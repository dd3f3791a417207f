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
# the pass-through. Reports go to OUT_DIR/NAME.json and OUT_DIR/NAME.html; the CPU per 1,000
# requests and the peak RSS of tollgate and of the pass-through are printed last. Everything it
# started is stopped, and the database dropped, when it exits. The exit code is loadgen's:
# 0 passed, 1 failed (reconciliation or a target), 2 bad scenario. Ctrl-C stops loadgen and
# everything else it started.
#
# Knobs (environment variables, defaults in brackets):
#   MOCK_PORT [19899] PASSTHROUGH_PORT [19898] TG_PORT [18180]
#   TG_WORKERS [1] TG_ARBITERS [0] PASSTHROUGH_WORKERS [1] LOADGEN_THREADS [2]
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
TG_ARBITERS="${TG_ARBITERS:-0}"
PASSTHROUGH_WORKERS="${PASSTHROUGH_WORKERS:-1}"
LOADGEN_THREADS="${LOADGEN_THREADS:-2}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
# Unique per run: two runs side by side never drop each other's database.
SCENARIO_DB="${SCENARIO_DB:-tollgate_scenario}_$$"
OUT_DIR="${OUT_DIR:-$ROOT/target/loadtest}"
SKIP_BUILD="${SKIP_BUILD:-0}"
NO_BASELINE="${NO_BASELINE:-0}"
LOADGEN_ARGS="${LOADGEN_ARGS:-}"

ADMIN_TOKEN="scenario-admin-token-$$-of-at-least-32-characters"
UPSTREAM_KEY="scenario-upstream-key"
BIN="$ROOT/target/release"
mkdir -p "$OUT_DIR"

SCRIPT=run-scenario.sh
DB_NAME="$SCENARIO_DB"
# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"
lt_require_tools curl psql
lt_build_release

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

lt_require_free_port mock "$MOCK_PORT"
lt_require_free_port passthrough "$PASSTHROUGH_PORT"
lt_require_free_port tollgate "$TG_PORT"

echo "== $NAME: starting mock-anthropic (${MOCK_ARGS[*]}), passthrough" >&2
RUST_LOG=warn "$BIN/mock-anthropic" --listen "127.0.0.1:$MOCK_PORT" "${MOCK_ARGS[@]}" \
    >"$OUT_DIR/$NAME.mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
lt_start_passthrough "$PASSTHROUGH_PORT" "$PASSTHROUGH_WORKERS" "$MOCK_PORT" "$UPSTREAM_KEY" \
    "$OUT_DIR/$NAME.passthrough.log"

echo "== $NAME: starting tollgate on a fresh database $SCENARIO_DB" >&2
lt_start_tollgate "$TG_PORT" "$TG_WORKERS" "$TG_ARBITERS" "$MOCK_PORT" "$UPSTREAM_KEY" \
    "$ADMIN_TOKEN" "$OUT_DIR/$NAME.tollgate.log"

lt_wait_for mock "http://127.0.0.1:$MOCK_PORT/mock/stats" "$MOCK_PID" "$OUT_DIR/$NAME.mock.log"
lt_wait_for_passthrough "$PASSTHROUGH_PORT" "$PASSTHROUGH_PID" "$OUT_DIR/$NAME.passthrough.log" 50

REFERENCES=()
if [ "$NO_BASELINE" != 1 ]; then
    REFERENCES=(--direct "http://127.0.0.1:$MOCK_PORT" --passthrough "http://127.0.0.1:$PASSTHROUGH_PORT")
fi

cpu_before=$(lt_cpu_ticks "$TG_PID")
pt_cpu_before=$(lt_cpu_ticks "$PASSTHROUGH_PID")

# One counter of tollgate's /metrics (0 when absent: no journal, or tollgate gone).
tg_counter() {
    curl -fsS "http://127.0.0.1:$TG_PORT/metrics" 2>/dev/null \
        | awk -v m="$1" '$1 == m { print int($2); found = 1 } END { if (!found) print 0 }'
}
syncs_before=$(tg_counter tollgate_journal_syncs_total)
appends_before=$(tg_counter tollgate_journal_appended_total)

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

# Only the tollgate run (and its provisioning and reconciliation) touches tollgate, and only
# the pass-through run touches the pass-through, so each one's CPU time over the whole loadgen
# invocation is the cost of the requests it was sent.
# None of this may change the exit code: a process may be gone, the JSON missing.
#   cpu_report LABEL PID TICKS_BEFORE JQ_FILTER_FOR_REQUESTS_SENT
cpu_report() {
    local label=$1 pid=$2 before=$3 filter=$4 after cpu_ms sent peak_kb
    after=$(lt_cpu_ticks "$pid")
    if [ "${after:-0}" -ge "${before:-0}" ] 2>/dev/null; then
        cpu_ms=$(( (after - before) * 1000 / $(getconf CLK_TCK || echo 100) ))
    else
        cpu_ms=0
    fi
    sent=$(jq -r "$filter" "$OUT_DIR/$NAME.json" 2>/dev/null || echo 0)
    peak_kb=0
    if [ -r "/proc/$pid/status" ]; then
        peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    fi
    [[ "$sent" =~ ^[0-9]+$ ]] || sent=0
    [[ "$peak_kb" =~ ^[0-9]+$ ]] || peak_kb=0
    if [ "$sent" -gt 0 ]; then
        echo "$label: ${cpu_ms} ms CPU for ${sent} requests ($(( cpu_ms * 1000 / sent )) ms per 1,000), peak RSS $(( peak_kb / 1024 )) MB"
    else
        echo "$label: ${cpu_ms} ms CPU, peak RSS $(( peak_kb / 1024 )) MB"
    fi
}
cpu_report tollgate "$TG_PID" "$cpu_before" '[.tollgate.requests_by_group[]] | add // 0'
# The journal's fsyncs over the loadgen run (provisioning and reconciliation included). The
# settles all come from the tollgate run, so its measured rate (answers a second over its
# window) gives the fsyncs a second while it ran; the whole invocation also holds the
# reference runs, when tollgate is idle.
syncs=$(( $(tg_counter tollgate_journal_syncs_total) - syncs_before ))
appends=$(( $(tg_counter tollgate_journal_appended_total) - appends_before ))
if [ "$appends" -gt 0 ]; then
    run_rate=$(jq -r '.tollgate.well_behaved.all.total.count / .tollgate.window_secs' \
        "$OUT_DIR/$NAME.json" 2>/dev/null || echo 0)
    [[ "$run_rate" =~ ^[0-9.]+$ ]] || run_rate=0
    awk -v s="$syncs" -v a="$appends" -v r="$run_rate" 'BEGIN {
        per = a / (s > 0 ? s : 1)
        printf "journal: %d fsyncs for %d settles: %.1f settles per fsync", s, a, per
        if (r > 0) printf "; at the tollgate run'"'"'s %.0f req/s, about %.0f fsyncs/s", r, r / per
        printf "\n" }'
    # How long commits took (write and fdatasync), since start: what a durable reply waits
    # for, besides the gathering.
    curl -fsS "http://127.0.0.1:$TG_PORT/metrics" 2>/dev/null | awk '
        $1 == "tollgate_journal_commits_total" { total = $2 }
        $1 ~ /^tollgate_journal_commits_slower_than_total/ {
            match($1, /seconds="[^"]*"/); slower = slower sprintf(" >%ss: %d", substr($1, RSTART + 9, RLENGTH - 10), $2) }
        END { if (total) printf "journal: %d commits since start;%s\n", total, slower }'
fi
if [ "$NO_BASELINE" != 1 ]; then
    cpu_report passthrough "$PASSTHROUGH_PID" "$pt_cpu_before" \
        '[.references[] | select(.target == "passthrough") | .requests_by_group[]] | add // 0'
fi
exit "$status"
