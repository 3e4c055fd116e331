#!/usr/bin/env bash
# Makes two Mailpit SMTP catchers available for the SMTP gateway tests on a Debian 12 machine
# (run as root) and prints `export` lines for them on stdout:
#
#   eval "$(scripts/mailpit.sh)"
#
# - plain: SMTP without TLS, any credentials accepted over plain text;
# - starttls: SMTP that requires STARTTLS, with a self-signed certificate;
# - tls: SMTP wrapped in TLS from the start (`smtps://`), same certificate.
#
# Idempotent: the Mailpit binary (built once with `go install`, which takes a while), the
# certificate and running instances recorded under `.test-services/` are reused. Progress goes to
# stderr so that only the export lines reach `eval`.
set -euo pipefail

log() { echo "mailpit: $*" >&2; }

MAILPIT_VERSION=v1.33.1
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${TWOFOLD_SERVICES_DIR:-$REPO_ROOT/.test-services}"
BIN_DIR="$STATE_DIR/bin"
MAILPIT="$BIN_DIR/mailpit"

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages)"
    exit 1
fi

mkdir -p "$STATE_DIR" "$BIN_DIR"

# --- binary -----------------------------------------------------------------------------------
# The version is recorded next to the binary so a version bump rebuilds it.
if [ ! -x "$MAILPIT" ] || [ "$(cat "$BIN_DIR/mailpit.version" 2>/dev/null)" != "$MAILPIT_VERSION" ]; then
    if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
        PATH="/usr/local/go/bin:$PATH"
    fi
    if ! command -v go >/dev/null 2>&1; then
        log "installing golang-go"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update >&2
        apt-get install -y golang-go >&2
    fi
    log "building mailpit $MAILPIT_VERSION (takes a few minutes the first time)"
    GOBIN="$BIN_DIR" go install "github.com/axllent/mailpit@$MAILPIT_VERSION" >&2
    echo "$MAILPIT_VERSION" >"$BIN_DIR/mailpit.version"
fi

# --- certificate for the STARTTLS instance ----------------------------------------------------
CERT="$STATE_DIR/mailpit-tls.crt"
KEY="$STATE_DIR/mailpit-tls.key"
if [ ! -s "$CERT" ] || [ ! -s "$KEY" ]; then
    if ! command -v openssl >/dev/null 2>&1; then
        log "installing openssl"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update >&2
        apt-get install -y openssl >&2
    fi
    log "generating a self-signed certificate for localhost"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$KEY" -out "$CERT" >&2 2>/dev/null
fi

free_port() {
    # Ask the kernel for a free ephemeral port; the tiny race until mailpit binds it is
    # acceptable for a test helper.
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Answers when the instance recorded under NAME is up: its process lives and its API replies.
running() {
    local name="$1" pid api
    [ -f "$STATE_DIR/mailpit-$name.pid" ] && [ -f "$STATE_DIR/mailpit-$name.ports" ] || return 1
    pid="$(cat "$STATE_DIR/mailpit-$name.pid")"
    kill -0 "$pid" 2>/dev/null || return 1
    api="$(cut -d' ' -f2 "$STATE_DIR/mailpit-$name.ports")"
    curl -fsS -o /dev/null "http://127.0.0.1:$api/api/v1/info" 2>/dev/null ||
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$api/api/v1/info', timeout=2)" 2>/dev/null
}

# Starts (or reuses) the instance NAME with extra flags; leaves "<smtp> <api>" in its ports file.
start() {
    local name="$1"
    shift
    if running "$name"; then
        log "$name instance already running ($(cat "$STATE_DIR/mailpit-$name.ports"))"
        return
    fi
    local smtp api pid
    smtp="$(free_port)"
    api="$(free_port)"
    while [ "$api" = "$smtp" ]; do api="$(free_port)"; done
    log "starting $name instance: smtp 127.0.0.1:$smtp, api 127.0.0.1:$api"
    # The database lives under .test-services and is started afresh, so old runs do not pile up;
    # --max is generous because parallel tests read their messages back after others arrive.
    rm -f "$STATE_DIR/mailpit-$name.db"*
    nohup "$MAILPIT" \
        --smtp "127.0.0.1:$smtp" --listen "127.0.0.1:$api" \
        --database "$STATE_DIR/mailpit-$name.db" --max 10000 \
        --smtp-auth-accept-any --smtp-disable-rdns "$@" \
        >"$STATE_DIR/mailpit-$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$STATE_DIR/mailpit-$name.pid"
    echo "$smtp $api" >"$STATE_DIR/mailpit-$name.ports"
    for _ in $(seq 1 100); do
        if running "$name"; then return; fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    log "$name instance did not start; its log:"
    cat "$STATE_DIR/mailpit-$name.log" >&2
    exit 1
}

start plain --smtp-auth-allow-insecure
start starttls --smtp-tls-cert "$CERT" --smtp-tls-key "$KEY" --smtp-require-starttls
start tls --smtp-tls-cert "$CERT" --smtp-tls-key "$KEY" --smtp-require-tls

read -r PLAIN_SMTP PLAIN_API <"$STATE_DIR/mailpit-plain.ports"
read -r STARTTLS_SMTP STARTTLS_API <"$STATE_DIR/mailpit-starttls.ports"
read -r TLS_SMTP TLS_API <"$STATE_DIR/mailpit-tls.ports"
echo "export TWOFOLD_TEST_MAILPIT_SMTP=127.0.0.1:$PLAIN_SMTP"
echo "export TWOFOLD_TEST_MAILPIT_API=http://127.0.0.1:$PLAIN_API"
echo "export TWOFOLD_TEST_MAILPIT_STARTTLS_SMTP=127.0.0.1:$STARTTLS_SMTP"
echo "export TWOFOLD_TEST_MAILPIT_STARTTLS_API=http://127.0.0.1:$STARTTLS_API"
echo "export TWOFOLD_TEST_MAILPIT_TLS_SMTP=127.0.0.1:$TLS_SMTP"
echo "export TWOFOLD_TEST_MAILPIT_TLS_API=http://127.0.0.1:$TLS_API"
