#!/usr/bin/env bash
# Makes Debian's Chromium available for the sign-in page's browser test (run as root on a
# Debian 12 machine) and prints the `export` line the test reads on stdout:
#
#   eval "$(scripts/chromium.sh)"
#
# playwright-core drives this browser; Playwright's own browser downloads cannot be used here.
# Idempotent: an installed /usr/bin/chromium is reused. Progress goes to stderr so that only the
# export line reaches `eval`.
set -euo pipefail

log() { echo "chromium: $*" >&2; }

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        log "$CHROMIUM is missing and installing it needs root"
        exit 1
    fi
    log "installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # Fonts so that screenshots show text rather than empty boxes.
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2
fi

log "$("$CHROMIUM" --version 2>/dev/null || echo "version unknown")"
echo "export TWOFOLD_TEST_CHROMIUM=$CHROMIUM"
