#!/usr/bin/env bash
# Runs Schemathesis against a local tollgate (`tollgate demo`, on loopback only) and its
# served OpenAPI document: the customer API with a session token, then the admin API with the
# admin token. Not part of CI; see docs/API.md for what a clean run looks like.
#
#   scripts/schemathesis.sh              # 25 examples per operation
#   MAX_EXAMPLES=100 SEED=7 scripts/schemathesis.sh
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and `schemathesis` on PATH or in
# $SCHEMATHESIS (pip install schemathesis). It creates a database of its own and drops it.
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${PORT:-18480}
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
SEED=${SEED:-1}
CONFIG="$PWD/scripts/schemathesis.toml"
SCHEMATHESIS=${SCHEMATHESIS:-schemathesis}
BASE="http://127.0.0.1:${PORT}"
DB="tollgate_schemathesis_$$"
ADMIN_TOKEN="schemathesis-admin-token-of-32-plus-chars"
WORK=$(mktemp -d)
PG=${TOLLGATE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}

cargo build --quiet --bin tollgate

cleanup() {
    if [[ -n "${SERVER_PID:-}" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The demo, with limits raised so that throttles do not hide everything else: failed
# authentications and logins are what several checks send on purpose. Each throttle still
# answers as documented (429) when it trips.
TOLLGATE__SERVER__LISTEN="127.0.0.1:${PORT}" \
TOLLGATE__DATABASE__URL="$PG/$DB" \
TOLLGATE__ADMIN__TOKEN="$ADMIN_TOKEN" \
TOLLGATE__METERING__JOURNAL_DIR="$WORK/journal" \
TOLLGATE__AUTH__FAILED_AUTH_PER_MINUTE=100000 \
TOLLGATE__ACCOUNTS__SIGNUPS_PER_IP_PER_HOUR=100000 \
TOLLGATE__ACCOUNTS__SIGNUPS_PER_BLOCK_PER_HOUR=100000 \
TOLLGATE__ACCOUNTS__LOGIN_FAILURES_PER_IP_PER_MINUTE=100000 \
TOLLGATE__ACCOUNTS__LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE=100000 \
RUST_LOG=warn \
    target/debug/tollgate demo >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fs "$BASE/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fs "$BASE/healthz" >/dev/null

# A customer with a session for the customer API, and a second session for the one run that
# logs out (logging out ends the session it is sent with).
EMAIL="schemathesis@example.com"
PASSWORD="schemathesis-pass-1"
curl -fs "$BASE/api/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" >/dev/null
login() {
    curl -fs "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
SESSION=$(login)
LOGOUT_SESSION=$(login)

"$SCHEMATHESIS" --version
STATUS=0
run() {
    local name=$1
    shift
    echo "== $name"
    # From the scratch directory, so that Schemathesis's own cache stays out of the tree.
    (cd "$WORK" && "$SCHEMATHESIS" --config-file "$CONFIG" run "$BASE/api/v1/openapi.json" \
        --checks all \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --generation-database none \
        --no-color \
        "$@") || STATUS=1
}
run "customer API" -H "Authorization: Bearer $SESSION" \
    --include-path-regex '^/api/v1/' --exclude-path '/api/v1/auth/logout'
# One operation links to nothing, so there is no stateful phase to run for it.
run "customer logout" -H "Authorization: Bearer $LOGOUT_SESSION" \
    --include-path '/api/v1/auth/logout' --phases examples,coverage,fuzzing
run "admin API" -H "Authorization: Bearer $ADMIN_TOKEN" --include-path-regex '^/admin/v1/'
exit $STATUS
