# Sourced by scripts/check-openapi and scripts/docs-screenshot: starts the real `agentq api`
# (target/debug/agentq) on a free loopback port against a throwaway database and a unique Redis
# key prefix, with a team and an `all` key; `live_api_stop` (registered on EXIT) stops it, drops
# the database and deletes the prefix's Redis keys (never anything else).
#
# After `live_api_start`: API_URL, API_KEY, API_LOG are set.
#
#   AGENTQ_TEST_DATABASE_URL  Postgres server (default postgres://postgres@127.0.0.1:5432)
#   AGENTQ_TEST_REDIS_URL     Redis (default redis://127.0.0.1:6379)

LIVE_PG_BASE="${AGENTQ_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}"
LIVE_REDIS_URL="${AGENTQ_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
LIVE_TAG="$(date +%s)_$$_${RANDOM}"
LIVE_DB="agentq_live_${LIVE_TAG}"
LIVE_PREFIX="live${LIVE_TAG}"
LIVE_DIR="$(mktemp -d)"
LIVE_PID=""
LIVE_DB_CREATED=""
API_URL=""
API_KEY=""
API_LOG="$LIVE_DIR/api.log"

live_say() { echo "live-api: $*" >&2; }

live_api_stop() {
    if [ -n "$LIVE_PID" ] && kill -0 "$LIVE_PID" 2>/dev/null; then
        kill -TERM "$LIVE_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$LIVE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$LIVE_PID" 2>/dev/null || true
        wait "$LIVE_PID" 2>/dev/null || true
    fi
    LIVE_PID=""
    if [ -n "$LIVE_DB_CREATED" ]; then
        psql -w -q "$LIVE_PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $LIVE_DB WITH (FORCE)" >/dev/null 2>&1 ||
            live_say "warning: could not drop database $LIVE_DB"
        LIVE_DB_CREATED=""
    fi
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -u "$LIVE_REDIS_URL" --scan --pattern "$LIVE_PREFIX:*" 2>/dev/null |
            while read -r key; do
                redis-cli -u "$LIVE_REDIS_URL" DEL "$key" >/dev/null 2>&1 || true
            done
    fi
    rm -rf "$LIVE_DIR"
}

# Starts the API; $1 is the binary (default target/debug/agentq).
live_api_start() {
    local bin="${1:-target/debug/agentq}" port team
    [ -x "$bin" ] || { live_say "error: $bin is not built"; return 1; }
    psql -w -q "$LIVE_PG_BASE/postgres" -c "CREATE DATABASE $LIVE_DB" >/dev/null
    LIVE_DB_CREATED=1
    export DATABASE_URL="$LIVE_PG_BASE/$LIVE_DB"
    export REDIS_URL="$LIVE_REDIS_URL"
    export AGENTQ_REDIS_PREFIX="$LIVE_PREFIX"
    export AGENTQ_ALLOW_PRIVATE_NETWORKS=false
    "$bin" migrate >/dev/null 2>&1 || { live_say "error: migrate failed"; return 1; }
    team="live_${LIVE_TAG}"
    "$bin" teams create "$team" >/dev/null 2>>"$LIVE_DIR/admin.log" || { cat "$LIVE_DIR/admin.log" >&2; return 1; }
    API_KEY="$("$bin" keys create --team "$team" --name live --scopes all 2>/dev/null)"
    [ -n "$API_KEY" ] || { live_say "error: no key was created"; return 1; }
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    API_URL="http://127.0.0.1:$port"
    # Chat waits at most a second: no worker runs here, so no run ever ends.
    AGENTQ_CHAT_TIMEOUT_SECONDS=1 "$bin" api --listen "127.0.0.1:$port" >"$API_LOG" 2>&1 &
    LIVE_PID=$!
    for _ in $(seq 1 150); do
        if python3 - "$API_URL/readyz" <<'PY' 2>/dev/null; then
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
            live_say "agentq api on $API_URL (database $LIVE_DB, redis prefix $LIVE_PREFIX)"
            return 0
        fi
        kill -0 "$LIVE_PID" 2>/dev/null || break
        sleep 0.2
    done
    live_say "error: the API did not become ready; its log:"
    cat "$API_LOG" >&2
    return 1
}
