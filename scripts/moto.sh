#!/usr/bin/env bash
# Makes an Amazon SNS stand-in (moto's server) available for the SNS gateway tests on a Debian 12
# machine and prints an `export` line for it on stdout.
#
#   eval "$(scripts/moto.sh)"
#
# Idempotent: the venv under .test-services/ and a running server recorded there are reused.
# Progress goes to stderr so that only the export line reaches `eval`. Root is needed only when
# Debian's python3-venv is missing and has to be installed.
set -euo pipefail

log() { echo "moto: $*" >&2; }

# Pinned so every machine tests against the same stand-in; 5.2.5 installs and serves SNS here.
MOTO_VERSION=5.2.5
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${TWOFOLD_SERVICES_DIR:-$REPO_ROOT/.test-services}"
VENV="$STATE_DIR/moto-venv"
PORT_FILE="$STATE_DIR/moto.port"
PID_FILE="$STATE_DIR/moto.pid"
LOG_FILE="$STATE_DIR/moto.log"

mkdir -p "$STATE_DIR"

# Answers when moto's own API is up on the port (not just any listener that happens to be there).
answers() {
    "$VENV/bin/python" - "$1" <<'EOF' >/dev/null 2>&1
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/data.json", timeout=2) as r:
    json.load(r)
EOF
}

# --- python venv ------------------------------------------------------------------------------
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        log "python3 with venv support is missing; run as root to install python3-venv"
        exit 1
    fi
    log "installing python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y python3 python3-venv >&2
fi

installed=""
if [ -x "$VENV/bin/python" ]; then
    installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
fi
if [ "$installed" != "$MOTO_VERSION" ] || [ ! -x "$VENV/bin/moto_server" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating venv $VENV"
        python3 -m venv "$VENV" >&2
    fi
    log "installing moto[server]==$MOTO_VERSION (about a minute)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi

# --- server -----------------------------------------------------------------------------------
MOTO_PORT=""
if [ -f "$PORT_FILE" ]; then
    port="$(cat "$PORT_FILE")"
    if answers "$port"; then
        MOTO_PORT="$port"
        log "moto already running on port $MOTO_PORT"
    fi
fi
if [ -z "$MOTO_PORT" ]; then
    # Ask the kernel for a free ephemeral port; the tiny race until moto binds it is acceptable
    # for a test helper.
    MOTO_PORT="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    log "starting moto on port $MOTO_PORT (log: $LOG_FILE)"
    # setsid + no inherited stdout: the server outlives this script and `$(...)` does not wait
    # for it.
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 100); do
        if answers "$MOTO_PORT"; then break; fi
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            log "moto exited; see $LOG_FILE"
            exit 1
        fi
        sleep 0.2
    done
    if ! answers "$MOTO_PORT"; then
        log "moto did not answer on port $MOTO_PORT within 20 s; see $LOG_FILE"
        exit 1
    fi
    echo "$MOTO_PORT" >"$PORT_FILE"
fi

echo "export TWOFOLD_TEST_MOTO_URL=http://127.0.0.1:$MOTO_PORT"
