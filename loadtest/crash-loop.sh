#!/usr/bin/env bash
# Kills tollgate with SIGKILL at random moments under load, restarts it, and checks in
# Postgres that every request a client got a complete answer for is billed exactly once
# (docs/adr/0019-write-ahead-journal.md):
#
#   TOLLGATE_START='tollgate serve --config my.yaml' TOLLGATE_URL=http://127.0.0.1:8080 \
#   TOLLGATE_ADMIN_TOKEN=... DATABASE_URL=postgres://... loadtest/crash-loop.sh
#
# TOLLGATE_START is run with bash, in a process group of its own, once per start. It must
# run tollgate in the foreground (no daemon, no container that outlives it) on the same
# database and `metering.journal_dir` every time, listening at TOLLGATE_URL. Environment
# assignments in front of the command work (`TOLLGATE__SERVER__LISTEN=... tollgate serve`).
#
# What it does:
#   1. Starts tollgate and creates CRASH_ACCOUNTS accounts (no throttles) with a credit and a
#      key each, through the admin API.
#   2. Runs CRASH_CLIENTS client threads (python3, standard library only) that send
#      non-streaming requests and streams, some slow when the upstream is mock-anthropic, for
#      the whole run. A request is ANSWERED only if its client got a 200 with the whole JSON
#      message, or a 200 stream that carried `message_stop`; its `request-id` is recorded.
#   3. KILLS times: waits until /healthz answers, lets it serve a random KILL_MIN_MS to
#      KILL_MAX_MS, kills the process group with SIGKILL, and starts it again.
#   4. Lets the last start serve LAST_RUN_MS, stops the clients, stops tollgate with
#      SIGTERM (waiting STOP_TIMEOUT_S at most).
#   5. Reconciles against DATABASE_URL with psql: answered requests without a usage row
#      (lost), request ids with more than one row (duplicated), and for every account of the
#      run: usage rows = usage debits, and balance = credits + debits, exactly.
#
# Exit status: 0 when the books reconcile, nothing is duplicated and, with DURABLE=1,
# nothing answered is lost; 1 otherwise (the report says which); 2 for a bad setting or a
# setup that failed. With DURABLE=0 (the deployment runs durable_before_reply: false) the loss
# is measured and printed, not failed on. Everything stops within MAX_SECONDS: kills that do
# not fit are skipped and the report says so.
#
# It sends real requests: against a real upstream they cost money. By default TOLLGATE_URL
# must be a loopback address (set CRASH_ALLOW_REMOTE=1 otherwise), and CRASH_MOCK=1 adds the
# simulated upstream's per-request knobs (a `mock` field a real upstream refuses). The
# accounts it creates are left in the database, with their usage.
#
# A local run, on a throwaway database and journal, with the simulated upstream:
#
#   target/debug/mock-anthropic --listen 127.0.0.1:19911 --ttft-ms 2 --output-tokens 12 &
#   psql postgres://postgres@127.0.0.1:5432/postgres -c 'CREATE DATABASE crash_demo'
#   TOLLGATE_START="TOLLGATE__SERVER__LISTEN=127.0.0.1:18211 \
#     TOLLGATE__DATABASE__URL=postgres://postgres@127.0.0.1:5432/crash_demo \
#     TOLLGATE__METERING__JOURNAL_DIR=/tmp/crash_demo_journal \
#     TOLLGATE__ADMIN__TOKEN=$TOKEN TOLLGATE__AUTH__KEY_SECRET=some-secret-of-16-chars \
#     TOLLGATE__UPSTREAMS='[{name=\"mock\",base_url=\"http://127.0.0.1:19911\",api_key=\"k\",proxy=\"\"}]' \
#     target/debug/tollgate serve --config /dev/null" \
#   TOLLGATE_URL=http://127.0.0.1:18211 TOLLGATE_ADMIN_TOKEN=$TOKEN \
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/crash_demo loadtest/crash-loop.sh
#
# Knobs (environment variables, defaults in brackets):
#   TOLLGATE_START (required)   TOLLGATE_URL [http://127.0.0.1:8080]
#   TOLLGATE_ADMIN_TOKEN (required)   DATABASE_URL (required; what psql connects to)
#   DURABLE [1]   KILLS [10, at most 1000]   KILL_MIN_MS [150]   KILL_MAX_MS [700]
#   CRASH_CLIENTS [8]   CRASH_ACCOUNTS [3]   CRASH_BALANCE_USD [100]
#   CRASH_MODEL [claude-haiku-4-5]   CRASH_MAX_TOKENS [16]   CRASH_STREAM_SHARE [0.5]
#   CRASH_MOCK [1]   CRASH_ALLOW_REMOTE [0]   LAST_RUN_MS [500]
#   START_TIMEOUT_S [60]   STOP_TIMEOUT_S [40]   MAX_SECONDS [600]
#   CRASH_OUT [a new temporary directory]: the logs of every start, the answered requests
#     (answered.csv), the kill times (kills.csv) and the report are kept there; the run's
#     API keys and the admin token, kept there while it runs, are removed when it ends.
set -euo pipefail

SCRIPT=crash-loop.sh
fail_setup() {
    echo "$SCRIPT: $*" >&2
    exit 2
}

TOLLGATE_START="${TOLLGATE_START:-}"
TOLLGATE_URL="${TOLLGATE_URL:-http://127.0.0.1:8080}"
TOLLGATE_URL="${TOLLGATE_URL%/}"
TOLLGATE_ADMIN_TOKEN="${TOLLGATE_ADMIN_TOKEN:-}"
DATABASE_URL="${DATABASE_URL:-}"
DURABLE="${DURABLE:-1}"
KILLS="${KILLS:-10}"
KILL_MIN_MS="${KILL_MIN_MS:-150}"
KILL_MAX_MS="${KILL_MAX_MS:-700}"
CRASH_CLIENTS="${CRASH_CLIENTS:-8}"
CRASH_ACCOUNTS="${CRASH_ACCOUNTS:-3}"
CRASH_BALANCE_USD="${CRASH_BALANCE_USD:-100}"
CRASH_MODEL="${CRASH_MODEL:-claude-haiku-4-5}"
CRASH_MAX_TOKENS="${CRASH_MAX_TOKENS:-16}"
CRASH_STREAM_SHARE="${CRASH_STREAM_SHARE:-0.5}"
CRASH_MOCK="${CRASH_MOCK:-1}"
CRASH_ALLOW_REMOTE="${CRASH_ALLOW_REMOTE:-0}"
LAST_RUN_MS="${LAST_RUN_MS:-500}"
START_TIMEOUT_S="${START_TIMEOUT_S:-60}"
STOP_TIMEOUT_S="${STOP_TIMEOUT_S:-40}"
MAX_SECONDS="${MAX_SECONDS:-600}"

[ -n "$TOLLGATE_START" ] || fail_setup "TOLLGATE_START is required: the command that starts tollgate"
[ -n "$TOLLGATE_ADMIN_TOKEN" ] || fail_setup "TOLLGATE_ADMIN_TOKEN is required (accounts are created through the admin API)"
[ -n "$DATABASE_URL" ] || fail_setup "DATABASE_URL is required (the books are read with psql)"
for name in KILLS KILL_MIN_MS KILL_MAX_MS CRASH_CLIENTS CRASH_ACCOUNTS CRASH_MAX_TOKENS \
    LAST_RUN_MS START_TIMEOUT_S STOP_TIMEOUT_S MAX_SECONDS; do
    [[ "${!name}" =~ ^[0-9]+$ ]] || fail_setup "$name must be a whole number, not '${!name}'"
done
[ "$KILLS" -ge 1 ] && [ "$KILLS" -le 1000 ] || fail_setup "KILLS must be in 1..1000"
[ "$KILL_MIN_MS" -le "$KILL_MAX_MS" ] || fail_setup "KILL_MIN_MS must not exceed KILL_MAX_MS"
[ "$CRASH_CLIENTS" -ge 1 ] && [ "$CRASH_CLIENTS" -le 256 ] || fail_setup "CRASH_CLIENTS must be in 1..256"
[ "$CRASH_ACCOUNTS" -ge 1 ] && [ "$CRASH_ACCOUNTS" -le 100 ] || fail_setup "CRASH_ACCOUNTS must be in 1..100"
[[ "$CRASH_BALANCE_USD" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail_setup "CRASH_BALANCE_USD must be a decimal amount"
[[ "$CRASH_STREAM_SHARE" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || fail_setup "CRASH_STREAM_SHARE must be in [0, 1]"
[[ "$CRASH_MODEL" =~ ^[A-Za-z0-9._-]+$ ]] || fail_setup "CRASH_MODEL has unexpected characters"
case "$DURABLE" in 0 | 1) ;; *) fail_setup "DURABLE must be 0 or 1" ;; esac
for tool in curl jq psql python3 setsid; do
    command -v "$tool" >/dev/null || fail_setup "$tool is required"
done

# Loopback only unless told otherwise: the load is real requests.
host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).hostname or "")' "$TOLLGATE_URL")
case "$host" in
    localhost | 127.* | ::1) ;;
    *)
        [ "$CRASH_ALLOW_REMOTE" = 1 ] \
            || fail_setup "TOLLGATE_URL's host '$host' is not loopback; set CRASH_ALLOW_REMOTE=1 to load it anyway"
        ;;
esac
case "$TOLLGATE_URL" in http://*) ;; *) fail_setup "TOLLGATE_URL must be http://HOST:PORT" ;; esac

# Postgres must answer before anything is started (the tables are looked at once tollgate
# has started, which migrates a new database).
PSQL=(psql "$DATABASE_URL" -X -q -A -t -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "SELECT 1" >/dev/null || fail_setup "psql cannot connect to DATABASE_URL"

OUT="${CRASH_OUT:-$(mktemp -d -t tollgate-crash-loop.XXXXXX)}"
case "$OUT" in *"'"*) fail_setup "CRASH_OUT must not contain a quote" ;; esac
mkdir -p "$OUT"
chmod 700 "$OUT"
: >"$OUT/kills.csv"
BEGAN=$(date +%s)
DEADLINE=$(( BEGAN + MAX_SECONDS ))

TG_PGID=
CLIENT_PID=
cleanup() {
    local status=$?
    rm -f "$OUT/keys" "$OUT/admin.headers"
    if [ -n "$CLIENT_PID" ]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    if [ -n "$TG_PGID" ]; then
        kill -KILL -- "-$TG_PGID" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() {
    date +%s%3N
}

# Starts tollgate (start number $1) in a process group of its own; sets TG_PGID. It is
# started from a subshell that exits at once, so it is not this shell's job (no job
# notices, and init reaps it). In a subshell a background process is no group leader, so
# setsid needs no fork and its pid is the group's.
start_tollgate() {
    local run=$1
    TG_PGID=$(setsid bash -c "$TOLLGATE_START" >"$OUT/tollgate.$run.log" 2>&1 </dev/null & echo $!)
}

# Whether process $1 is running (not gone, not a zombie).
alive() {
    [ -r "/proc/$1/status" ] && awk '/^State:/ { exit ($2 == "Z" || $2 == "X") }' "/proc/$1/status"
}

# Waits until /healthz answers (any status: it answers once the replay is done and the
# listener is bound), at most START_TIMEOUT_S. Fails if the process is gone.
wait_healthy() {
    local run=$1 until=$(( $(date +%s) + START_TIMEOUT_S ))
    while [ "$(date +%s)" -lt "$until" ]; do
        if ! alive "$TG_PGID"; then
            echo "$SCRIPT: tollgate exited during start $run; see $OUT/tollgate.$run.log" >&2
            tail -n 5 "$OUT/tollgate.$run.log" >&2 || true
            exit 2
        fi
        if curl -s -o /dev/null --max-time 1 "$TOLLGATE_URL/healthz"; then
            return 0
        fi
        sleep 0.05
    done
    echo "$SCRIPT: tollgate did not answer /healthz within ${START_TIMEOUT_S}s (start $run); see $OUT/tollgate.$run.log" >&2
    exit 2
}

# Whether a process of tollgate's group still runs. A zombie does not count: it has let go
# of its port and of the journal's lock, and whoever reaps it (init) may take its time.
group_running() {
    local stat rest state group
    for stat in /proc/[0-9]*/stat; do
        { read -r rest <"$stat"; } 2>/dev/null || continue
        # After the command's closing parenthesis: state, parent, group.
        rest=${rest##*) }
        read -r state _ group _ <<<"$rest"
        if [ "$group" = "$TG_PGID" ] && [ "$state" != Z ] && [ "$state" != X ]; then
            return 0
        fi
    done
    return 1
}

# Waits until no process of tollgate's group runs, at most $1 seconds. Returns 1 if some
# still do.
wait_group_gone() {
    local until=$(( $(date +%s) + $1 ))
    while group_running; do
        [ "$(date +%s)" -lt "$until" ] || return 1
        sleep 0.05
    done
}

# POSTs $2 to the admin API's path $1. The token travels in a header file, not on a command
# line that `ps` shows.
admin_post() {
    curl -fsS --max-time 10 -X POST "$TOLLGATE_URL/admin/v1/$1" \
        -H @"$OUT/admin.headers" -H 'content-type: application/json' -d "$2"
}

# Creates the run's accounts; their ids go to accounts.csv, their keys to keys (mode 0600,
# read by the clients, never printed).
provision() {
    local i id key tag
    tag="crash-loop-$(date +%s)-$$"
    : >"$OUT/accounts.csv"
    (umask 077 && : >"$OUT/keys" && echo "authorization: Bearer $TOLLGATE_ADMIN_TOKEN" >"$OUT/admin.headers")
    for i in $(seq "$CRASH_ACCOUNTS"); do
        id=$(admin_post accounts \
            "{\"email\":\"$tag-$i@example.com\",\"limits\":{\"requests_per_minute\":0,\"tokens_per_minute\":0,\"max_concurrent\":0}}" \
            | jq -er .id) || fail_setup "could not create an account (is TOLLGATE_ADMIN_TOKEN right?)"
        admin_post "accounts/$id/credit" \
            "{\"amount_usd\":\"$CRASH_BALANCE_USD\",\"reason\":\"$tag\"}" >/dev/null \
            || fail_setup "could not credit account $id"
        key=$(admin_post "accounts/$id/keys" "{\"name\":\"$tag\"}" | jq -er .key) \
            || fail_setup "could not create a key for account $id"
        echo "$id" >>"$OUT/accounts.csv"
        echo "$key" >>"$OUT/keys"
    done
}

# The load: CRASH_CLIENTS threads, each on a keep-alive connection of its own (a new one
# after any error), until SIGTERM; then the requests under way finish. Every answered request
# is a line of answered.csv: request id (as the usage table holds it), kind, time in ms.
write_client() {
    cat >"$OUT/client.py" <<'PY'
import http.client, json, os, random, signal, sys, threading, time, urllib.parse, uuid

url = urllib.parse.urlsplit(os.environ["CRASH_URL"])
keys = [line.strip() for line in open(os.environ["CRASH_KEYS"]) if line.strip()]
clients = int(os.environ["CRASH_CLIENTS"])
model = os.environ["CRASH_MODEL"]
max_tokens = int(os.environ["CRASH_MAX_TOKENS"])
stream_share = float(os.environ["CRASH_STREAM_SHARE"])
mock = os.environ["CRASH_MOCK"] == "1"
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
lock = threading.Lock()
# answered, incomplete (a 200 cut before its end), refused (nothing listening: between a
# kill and the next start), status_NNN, error_<exception> (a connection that broke before
# the response's head, e.g. a kept-alive one to a killed process).
counts = {"answered": 0, "incomplete": 0, "refused": 0}
out = open(os.environ["CRASH_ANSWERED"], "w", buffering=1)

def body(kind, nonce):
    payload = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": kind != "message",
        "messages": [{"role": "user", "content": f"Say hello. ({nonce})"}],
    }
    if mock and kind == "slow_stream":
        # Slow enough that kills land in the middle of some streams.
        payload["mock"] = {"inter_token_ms": 20, "output_tokens": 16}
    return json.dumps(payload).encode()

def kind_of(draw):
    if draw >= stream_share:
        return "message"
    return "slow_stream" if mock and draw < stream_share * 0.3 else "stream"

def one(conn, key, kind):
    """('answered', id) | ('incomplete', None) | ('status_NNN', None)"""
    conn.request("POST", "/v1/messages", body=body(kind, uuid.uuid4().hex), headers={
        "x-api-key": key, "anthropic-version": "2023-06-01",
        "content-type": "application/json"})
    response = conn.getresponse()
    data = bytearray()
    try:
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            data += chunk
    except (http.client.HTTPException, OSError):
        pass  # cut: what arrived is judged below
    finally:
        # Read to its end (or cut): marked closed, so that the connection takes the next
        # request. An unclosed one would send the next request and then refuse to read its
        # answer, which tollgate bills all the same.
        response.close()
    if response.status != 200:
        return f"status_{response.status}", None
    rid = response.getheader("request-id") or ""
    request_id = str(uuid.UUID(hex=rid[4:])) if rid.startswith("req_") else None
    if kind == "message":
        try:
            whole = json.loads(bytes(data)).get("type") == "message"
        except ValueError:
            whole = False
    else:
        whole = b"event: message_stop" in data
    if whole and request_id is None:
        return "no_request_id", None
    return ("answered", request_id) if whole else ("incomplete", None)

def run(n):
    key = keys[n % len(keys)]
    conn = None
    while not stop.is_set():
        kind = kind_of(random.random())
        if conn is None:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
        try:
            outcome, request_id = one(conn, key, kind)
        except ConnectionRefusedError:
            outcome, request_id = "refused", None
        except (http.client.HTTPException, OSError, ValueError) as error:
            outcome, request_id = f"error_{type(error).__name__}", None
        if outcome != "answered":
            conn.close()
            conn = None
        with lock:
            counts[outcome] = counts.get(outcome, 0) + 1
            if request_id:
                out.write(f"{request_id},{kind},{int(time.time() * 1000)}\n")
        if outcome not in ("answered", "incomplete"):
            time.sleep(0.005)  # a killed tollgate refuses at once: do not spin

threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
for thread in threads:
    thread.start()
while any(thread.is_alive() for thread in threads):
    time.sleep(0.1)
out.close()
print(" ".join(f"{name}={value}" for name, value in sorted(counts.items())))
PY
}

echo "== crash loop: $KILLS kills against $TOLLGATE_URL, $CRASH_CLIENTS clients, durable=$DURABLE; output in $OUT" >&2
start_tollgate 0
wait_healthy 0
"${PSQL[@]}" -c "SELECT 1 FROM usage, ledger, accounts LIMIT 0" >/dev/null \
    || fail_setup "no usage, ledger or accounts table at DATABASE_URL: is it the database tollgate uses?"
provision
write_client
CRASH_URL="$TOLLGATE_URL" CRASH_KEYS="$OUT/keys" CRASH_CLIENTS="$CRASH_CLIENTS" \
CRASH_MODEL="$CRASH_MODEL" CRASH_MAX_TOKENS="$CRASH_MAX_TOKENS" \
CRASH_STREAM_SHARE="$CRASH_STREAM_SHARE" CRASH_MOCK="$CRASH_MOCK" \
CRASH_ANSWERED="$OUT/answered.csv" \
    python3 "$OUT/client.py" >"$OUT/client.out" 2>"$OUT/client.err" &
CLIENT_PID=$!

kills=0
skipped=0
for run in $(seq "$KILLS"); do
    # Start N follows the Nth kill; start 0 is running already.
    if [ "$run" -gt 1 ]; then
        start_tollgate "$kills"
        wait_healthy "$kills"
    fi
    # A kill must leave time for a restart and the graceful stop inside MAX_SECONDS.
    if [ $(( $(date +%s) + START_TIMEOUT_S + STOP_TIMEOUT_S )) -ge "$DEADLINE" ]; then
        skipped=$(( KILLS - kills ))
        echo "$SCRIPT: MAX_SECONDS reached: $skipped kills skipped" >&2
        break
    fi
    delay=$(( KILL_MIN_MS + RANDOM % (KILL_MAX_MS - KILL_MIN_MS + 1) ))
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -KILL -- "-$TG_PGID"
    now_ms >>"$OUT/kills.csv"
    kills=$((kills + 1))
    wait_group_gone 10 || { echo "$SCRIPT: tollgate survived SIGKILL" >&2; exit 2; }
    TG_PGID=
    echo "   kill $kills after ${delay} ms" >&2
done

# The last start replays the last kill's journal, serves a while, and stops gracefully.
if [ -z "$TG_PGID" ]; then
    start_tollgate "$kills"
    wait_healthy "$kills"
fi
sleep "$(printf '%d.%03d' $((LAST_RUN_MS / 1000)) $((LAST_RUN_MS % 1000)))"
kill -TERM "$CLIENT_PID"
wait "$CLIENT_PID" || true
CLIENT_PID=
kill -TERM -- "-$TG_PGID" 2>/dev/null || true
graceful=yes
wait_group_gone "$STOP_TIMEOUT_S" || graceful="no (still running after ${STOP_TIMEOUT_S}s; killed)"
[ "$graceful" = yes ] || kill -KILL -- "-$TG_PGID" 2>/dev/null || true
TG_PGID=

# The books. Answered requests, kills and the run's accounts are loaded into temporary
# tables; every figure comes from one session.
cat >"$OUT/reconcile.sql" <<SQL
CREATE TEMP TABLE answered (request_id uuid NOT NULL, kind text NOT NULL, at_ms bigint NOT NULL);
\copy answered FROM '$OUT/answered.csv' WITH (FORMAT csv)
CREATE TEMP TABLE kills (at_ms bigint NOT NULL);
\copy kills FROM '$OUT/kills.csv' WITH (FORMAT csv)
CREATE TEMP TABLE run_accounts (id uuid NOT NULL);
\copy run_accounts FROM '$OUT/accounts.csv' WITH (FORMAT csv)
CREATE TEMP VIEW lost AS
    SELECT a.*, (SELECT min(k.at_ms) FROM kills k WHERE k.at_ms >= a.at_ms) - a.at_ms AS before_kill_ms
    FROM answered a
    WHERE NOT EXISTS (SELECT 1 FROM usage u WHERE u.request_id = a.request_id);
SELECT 'answered', count(*) FROM answered;
SELECT 'answered_by_kind', string_agg(kind || '=' || n, ' ' ORDER BY kind)
    FROM (SELECT kind, count(*) AS n FROM answered GROUP BY kind) k;
SELECT 'answered_twice', count(*) FROM (SELECT request_id FROM answered GROUP BY 1 HAVING count(*) > 1) t;
SELECT 'rows', count(*) FROM usage WHERE account_id IN (SELECT id FROM run_accounts);
SELECT 'lost', count(*) FROM lost;
SELECT 'lost_max_before_kill_ms', coalesce(max(before_kill_ms)::text, '-') FROM lost;
SELECT 'lost_after_last_kill', count(*) FROM lost WHERE before_kill_ms IS NULL;
SELECT 'lost_sample', coalesce(string_agg(request_id || ' ' || kind || ' ' || coalesce(before_kill_ms::text, 'after the last kill') || ' ms before its kill', '; '), '-')
    FROM (SELECT * FROM lost ORDER BY at_ms LIMIT 10) l;
SELECT 'duplicated', count(*) FROM (
    SELECT u.request_id FROM usage u JOIN answered a USING (request_id)
    GROUP BY u.request_id HAVING count(*) > 1) d;
SELECT 'account', r.id, b.balance, c.credits, -d.debits, us.cost,
       (us.cost = -d.debits AND b.balance = c.credits + d.debits)
FROM run_accounts r
CROSS JOIN LATERAL (SELECT balance FROM accounts WHERE id = r.id) b
CROSS JOIN LATERAL (SELECT coalesce(sum(amount), 0) AS credits FROM ledger WHERE account_id = r.id AND kind <> 'usage') c
CROSS JOIN LATERAL (SELECT coalesce(sum(amount), 0) AS debits FROM ledger WHERE account_id = r.id AND kind = 'usage') d
CROSS JOIN LATERAL (SELECT coalesce(sum(cost), 0) AS cost FROM usage WHERE account_id = r.id) us;
SQL
"${PSQL[@]}" -F '|' -f "$OUT/reconcile.sql" >"$OUT/books.txt" \
    || { echo "$SCRIPT: reconciliation query failed; see $OUT/reconcile.sql" >&2; exit 2; }

figure() {
    awk -F'|' -v key="$1" '$1 == key { print $2; exit }' "$OUT/books.txt"
}
answered=$(figure answered)
lost=$(figure lost)
duplicated=$(figure duplicated)
answered_twice=$(figure answered_twice)
unreconciled=$(awk -F'|' '$1 == "account" && $7 != "t"' "$OUT/books.txt" | wc -l)

{
    echo "== crash loop report ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo "target:      $TOLLGATE_URL, durable_before_reply expected: $([ "$DURABLE" = 1 ] && echo on || echo off)"
    echo "kills:       $kills of $KILLS (SIGKILL $KILL_MIN_MS-$KILL_MAX_MS ms after /healthz)$([ "$skipped" -gt 0 ] && echo ", $skipped skipped at MAX_SECONDS")"
    echo "final stop:  SIGTERM, graceful: $graceful; the run took $(( $(date +%s) - BEGAN )) s"
    echo "clients:     $(cat "$OUT/client.out" 2>/dev/null || echo '?')"
    echo "answered:    $answered ($(figure answered_by_kind))"
    echo "usage rows:  $(figure rows) for the run's $CRASH_ACCOUNTS accounts (answered or not; a stream cut by a kill has none)"
    echo "lost:        $lost answered without a usage row (latest $(figure lost_max_before_kill_ms) ms before its kill; $(figure lost_after_last_kill) after the last kill)"
    [ "$lost" = 0 ] || echo "             first ones: $(figure lost_sample)"
    echo "duplicated:  $duplicated request ids with more than one usage row"
    echo "accounts:    id | balance | credits | usage debits | usage rows' cost | reconciled"
    awk -F'|' '$1 == "account" { printf "             %s | %s | %s | %s | %s | %s\n", $2, $3, $4, $5, $6, ($7 == "t" ? "yes" : "NO") }' "$OUT/books.txt"
} | tee "$OUT/report.txt"

verdict=0
if [ "${answered:-0}" = 0 ]; then
    echo "FAIL: no request was answered; the load never reached tollgate (see $OUT/client.err)"
    verdict=1
fi
if [ "$duplicated" != 0 ] || [ "$answered_twice" != 0 ]; then
    echo "FAIL: duplicated usage"
    verdict=1
fi
if [ "$unreconciled" != 0 ]; then
    echo "FAIL: $unreconciled accounts whose balance is not credits minus usage"
    verdict=1
fi
if [ "$lost" != 0 ]; then
    if [ "$DURABLE" = 1 ]; then
        echo "FAIL: $lost answered requests were never billed"
        verdict=1
    else
        echo "note: $lost answered requests lost, as durable_before_reply off allows"
    fi
fi
if [ "$graceful" != yes ]; then
    echo "FAIL: the final SIGTERM did not stop tollgate within ${STOP_TIMEOUT_S}s"
    verdict=1
fi
[ "$verdict" = 0 ] && echo "PASS"
exit "$verdict"
