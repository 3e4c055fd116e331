#!/usr/bin/env bash
# Runs the load harness against a server it starts itself, from a release build with the `bench`
# feature (the only build that has the bench-only courier sender):
#
#   scripts/bench.sh postgres [twofold-bench args]   # Postgres 15 + a private Redis
#   scripts/bench.sh embedded [twofold-bench args]   # the embedded default (SQLite file)
#
# Results go to bench-results/<name>-<backend>.json with a .svg plot and the server's log beside
# it; BENCH_NAME sets <name> (default: a UTC timestamp). Extra arguments go to twofold-bench,
# e.g. `--mode stepup --concurrency 8,32 --duration 20s` (see `twofold-bench --help`).
#
# BENCH_SERVER_BIN runs another server binary instead of this tree's (only the harness is built):
# a build with the `bench` feature kept from another commit, or a script that sets the server's
# environment and `exec`s one (the harness starts the server with an empty environment).
# scripts/bench-ab.sh uses it to alternate two builds. BENCH_HARNESS_BIN, with it, runs a harness
# built before instead of building one: scripts/bench-set.sh builds both once, so that a set is of
# one build even if the tree changes while it runs.
#
# On Postgres + Redis the server reaches both over their Unix sockets, as a server on the same
# machine as its stores would (no TCP stack, no TLS); BENCH_TRANSPORT=tcp reaches them over
# loopback TCP instead (Postgres with TLS, as sqlx's default `sslmode=prefer` gives), and its
# files end in `-tcp`. The report's `backend` names the transport.
set -euo pipefail
# A relative BENCH_SERVER_BIN or BENCH_HARNESS_BIN is the caller's, not the repository's.
if [ -n "${BENCH_SERVER_BIN:-}" ]; then BENCH_SERVER_BIN="$(realpath -m "$BENCH_SERVER_BIN")"; fi
if [ -n "${BENCH_HARNESS_BIN:-}" ]; then BENCH_HARNESS_BIN="$(realpath -m "$BENCH_HARNESS_BIN")"; fi
cd "$(dirname "$0")/.."

backend="${1:-postgres}"
shift || true
name="${BENCH_NAME:-$(date -u +%Y%m%dT%H%M%SZ)}"
transport="${BENCH_TRANSPORT:-socket}"
case "$transport" in
  socket | tcp) ;;
  *) echo "BENCH_TRANSPORT must be socket or tcp, not $transport" >&2; exit 2 ;;
esac
out="bench-results/$name-$backend.json"
if [ "$backend" = postgres ] && [ "$transport" = tcp ]; then
  out="bench-results/$name-$backend-tcp.json"
fi
mkdir -p bench-results

server_bin="${BENCH_SERVER_BIN:-}"
harness_bin="${BENCH_HARNESS_BIN:-}"
if [ -n "$server_bin" ]; then
  [ -x "$server_bin" ] || { echo "BENCH_SERVER_BIN is not an executable: $server_bin" >&2; exit 2; }
fi
if [ -n "$harness_bin" ]; then
  [ -x "$harness_bin" ] || { echo "BENCH_HARNESS_BIN is not an executable: $harness_bin" >&2; exit 2; }
  [ -n "$server_bin" ] || { echo "BENCH_HARNESS_BIN needs BENCH_SERVER_BIN" >&2; exit 2; }
  echo "bench: the harness is $harness_bin; the server is $server_bin" >&2
elif [ -n "$server_bin" ]; then
  echo "bench: building the harness; the server is $server_bin" >&2
  cargo build --release --locked --features bench --bin twofold-bench >&2
  harness_bin=target/release/twofold-bench
else
  echo "bench: building release with the bench feature" >&2
  cargo build --release --locked --features bench --bin twofold --bin twofold-bench >&2
  server_bin=target/release/twofold
  harness_bin=target/release/twofold-bench
fi
harness=("$harness_bin" --spawn --server-bin "$server_bin" --out "$out")

case "$backend" in
  embedded)
    exec "${harness[@]}" "$@"
    ;;
  postgres)
    eval "$(scripts/services.sh)"
    # A fresh database per run, so earlier runs' rows and statistics do not count.
    admin_url="$TWOFOLD_TEST_POSTGRES_URL"
    psql -q "$admin_url" -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS twofold_bench WITH (FORCE)" -c "CREATE DATABASE twofold_bench" >&2
    if [ "$transport" = socket ]; then
      # services.sh's socket URL names the folder in its query (`?host=/var/run/postgresql`).
      socket_url="$TWOFOLD_TEST_POSTGRES_SOCKET_URL"
      server_part="${socket_url%%\?*}"
      dsn="${server_part%/*}/twofold_bench?${socket_url#*\?}"
    else
      dsn="${admin_url%/*}/twofold_bench"
    fi
    # A private Redis, so its INFO counters hold this server's work and nobody else's.
    redis_dir="$(mktemp -d)"
    redis_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
      --unixsocket "$redis_dir/redis.sock" --unixsocketperm 700 \
      --dir "$redis_dir" --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log" >&2
    trap 'redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$redis_dir"' EXIT
    for _ in $(seq 1 50); do
      if redis-cli -p "$redis_port" ping 2>/dev/null | grep -qx PONG; then break; fi
      sleep 0.1
    done
    redis_url="redis://127.0.0.1:$redis_port/0"
    [ "$transport" = tcp ] || redis_url="unix://$redis_dir/redis.sock"
    "${harness[@]}" --dsn "$dsn" --redis "$redis_url" "$@"
    ;;
  *)
    echo "usage: scripts/bench.sh [postgres|embedded] [twofold-bench args]" >&2
    exit 2
    ;;
esac
