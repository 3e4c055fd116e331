#!/usr/bin/env bash
# Makes Postgres 15 and a private Redis available for the integration tests on a Debian 12
# machine (run as root), and prints `export` lines for them on stdout.
#
#   eval "$(scripts/services.sh)"
#
# Idempotent: packages, the cluster and a running server are reused. Progress goes to stderr so
# that only the export lines reach `eval`.
set -euo pipefail

log() { echo "services: $*" >&2; }

PG_VERSION=15
PG_CLUSTER=main
PG_PASSWORD=postgres
# The private Redis lives under the repository (ignored by git) so reruns find it again.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${TWOFOLD_SERVICES_DIR:-$REPO_ROOT/.test-services}"

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages and starts postgres)"
    exit 1
fi

# --- packages ---------------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ] || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # Both are asked for so a machine missing either ends up with both; an installed postgresql
    # is left as it is.
    apt-get install -y redis-server postgresql >&2
fi

# --- postgres ---------------------------------------------------------------------------------
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$PG_VERSION $PG_CLUSTER"; then
    log "creating postgres cluster $PG_VERSION/$PG_CLUSTER"
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2
fi
if pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -qx online; then
    log "postgres $PG_VERSION/$PG_CLUSTER already running"
else
    log "starting postgres $PG_VERSION/$PG_CLUSTER"
    # A server that was killed rather than stopped (a machine image taken while it ran) recovers
    # at start, and first syncs every file of its data directory. File by file, that outgrew
    # pg_ctl's default 60 s wait once enough test databases had piled up; one syncfs(2) call per
    # file system takes a second. The longer wait covers what remains slow on a slow disk.
    pg_ctlcluster --skip-systemctl-redirect -o "-c recovery_init_sync_method=syncfs" \
        "$PG_VERSION" "$PG_CLUSTER" start -- --timeout=600 >&2
fi
PG_PORT="$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $3}')"
# A cluster found running may still be recovering; give it as long as pg_ctl gets above.
for _ in $(seq 1 3000); do
    if runuser -u postgres -- pg_isready -q -p "$PG_PORT"; then break; fi
    sleep 0.2
done
runuser -u postgres -- psql -X -q -p "$PG_PORT" -v ON_ERROR_STOP=1 \
    -c "ALTER USER postgres PASSWORD '$PG_PASSWORD'" >&2

# The load harness, and a test of it, reach Postgres over its Unix socket, as a server on the
# same machine would. Sockets authenticate by peer: this map lets root (the tests' user here)
# connect as the postgres role and keeps postgres itself; the line goes first because the first
# matching line decides. Other users reach the socket only through their own pg_hba.conf lines.
pg_setting() {
    runuser -u postgres -- psql -X -Atq -p "$PG_PORT" -c "SHOW $1"
}
HBA_FILE="$(pg_setting hba_file)"
IDENT_FILE="$(pg_setting ident_file)"
PG_SOCKET_DIR="$(pg_setting unix_socket_directories | cut -d, -f1 | xargs)"
PEER_MAP="twofold_local"
HBA_LINE="local   all   postgres   peer   map=$PEER_MAP"
reload=false
for system_user in root postgres; do
    if ! grep -Eq "^$PEER_MAP[[:space:]]+$system_user[[:space:]]+postgres([[:space:]]|\$)" \
        "$IDENT_FILE"; then
        echo "$PEER_MAP $system_user postgres" >>"$IDENT_FILE"
        reload=true
    fi
done
if ! grep -Fxq "$HBA_LINE" "$HBA_FILE"; then
    log "letting root connect as postgres over the socket"
    # Rewritten in place (not `sed -i`), so a linked file stays linked and an empty one works.
    { echo "$HBA_LINE"; cat "$HBA_FILE"; } >"$HBA_FILE.twofold"
    cat "$HBA_FILE.twofold" >"$HBA_FILE"
    rm -f "$HBA_FILE.twofold"
    reload=true
fi
if [ "$reload" = true ]; then
    runuser -u postgres -- psql -X -q -p "$PG_PORT" -c "SELECT pg_reload_conf()" >/dev/null
fi

# Every Postgres test creates its own database, `twofold_test_<UUIDv7>`, drops it when it passes and
# leaves it for inspection when it fails (or is killed). Left for good, they grow the data directory
# by about 8 MiB each (3,000 of them came to 25 GiB) and slow every recovery. Those created over an
# hour ago (the UUID's first 48 bits are its creation time in milliseconds) are dropped; a newer one
# may belong to a run that is still going, and one still connected to is skipped, so a concurrent
# run (any run shorter than an hour; the suite takes about 15 minutes) is never disturbed. Dropping
# is housekeeping: when it fails, the tests still run.
stale_test_databases="
    SELECT format('DROP DATABASE %I', d.datname)
    FROM pg_database d
    WHERE d.datname ~ '^twofold_test_[0-9a-f]{32}\$'
      AND ('x' || lpad(substr(d.datname, 14, 12), 16, '0'))::bit(64)::bigint
          < (extract(epoch FROM now()) * 1000)::bigint - 3600 * 1000
      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"
count_stale() {
    runuser -u postgres -- psql -X -Atq -p "$PG_PORT" \
        -c "SELECT count(*) FROM ($stale_test_databases) AS stale"
}
stale_count="$(count_stale)" || stale_count=0
if [ "$stale_count" -gt 0 ]; then
    log "dropping $stale_count test databases older than an hour"
    # Without ON_ERROR_STOP: a database that gains a connection meanwhile cannot be dropped, and
    # the others still are.
    printf '%s\n\\gexec\n' "$stale_test_databases" |
        runuser -u postgres -- psql -X -q -p "$PG_PORT" >&2 || true
    left="$(count_stale)" || left="?"
    [ "$left" = 0 ] || log "$left of them are left for the next run"
fi

# --- redis ------------------------------------------------------------------------------------
mkdir -p "$STATE_DIR"
REDIS_PORT=""
if [ -f "$STATE_DIR/redis.port" ]; then
    port="$(cat "$STATE_DIR/redis.port")"
    if redis-cli -p "$port" ping 2>/dev/null | grep -qx PONG; then
        REDIS_PORT="$port"
        log "redis already running on port $REDIS_PORT"
    fi
fi
if [ -z "$REDIS_PORT" ]; then
    # Ask the kernel for a free ephemeral port; the tiny race until redis binds it is acceptable
    # for a test helper.
    REDIS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    log "starting redis on port $REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$STATE_DIR" --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/redis.log" >&2
    for _ in $(seq 1 50); do
        if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -qx PONG; then break; fi
        sleep 0.1
    done
    redis-cli -p "$REDIS_PORT" ping >/dev/null
    echo "$REDIS_PORT" >"$STATE_DIR/redis.port"
fi

echo "export TWOFOLD_TEST_POSTGRES_URL=postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
echo "export TWOFOLD_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
SOCKET_URL="postgres://postgres@localhost:$PG_PORT/postgres?host=$PG_SOCKET_DIR"
echo "export TWOFOLD_TEST_POSTGRES_SOCKET_URL=$SOCKET_URL"
