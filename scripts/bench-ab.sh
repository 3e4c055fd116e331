#!/usr/bin/env bash
# Interleaved runs of two server builds against the same harness and stores, and their pairs side
# by side. The machine's speed here swings by a quarter between minutes, so only runs made
# minute by minute, in both orders, can be compared:
#
#   scripts/bench-ab.sh NAME A_BIN B_BIN ROUNDS BACKEND [twofold-bench args]
#   scripts/bench-ab.sh linger /tmp/old /tmp/new 6 postgres --mode stepup --concurrency 128 \
#       --rate 70% --bound false
#
# A_BIN and B_BIN are release builds with the `bench` feature (copy target/release/twofold aside
# after `cargo build --release --features bench --bin twofold`), or scripts that `exec` one. Round
# r runs A then B when r is odd, B then A when even; each run is `scripts/bench.sh BACKEND` with
# BENCH_SERVER_BIN set (and BENCH_HARNESS_BIN, a harness built once at the start), named
# NAME-a-r<r> and NAME-b-r<r> in bench-results/. The table at the end (scripts/bench-pairs.py)
# shows each pair's last level.
set -euo pipefail

if [ "$#" -lt 5 ]; then
  echo "usage: scripts/bench-ab.sh NAME A_BIN B_BIN ROUNDS BACKEND [twofold-bench args]" >&2
  exit 2
fi
# The binaries' paths are the caller's, resolved before moving to the repository.
name="$1" a_bin="$(realpath -m "$2")" b_bin="$(realpath -m "$3")" rounds="$4" backend="$5"
shift 5
cd "$(dirname "$0")/.."
for bin in "$a_bin" "$b_bin"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
case "$rounds" in
  '' | *[!0-9]*) echo "ROUNDS must be a number, not $rounds" >&2; exit 2 ;;
esac

# One harness for every run, built now: the tree may change while the rounds run.
cargo build --release --locked --features bench --bin twofold-bench >&2
harness_dir="$(mktemp -d)"
trap 'rm -rf "$harness_dir"' EXIT
harness="$harness_dir/twofold-bench"
cp target/release/twofold-bench "$harness"

run() {
  local run_name="$1" bin="$2"
  shift 2
  echo "bench-ab: $run_name ($bin)" >&2
  BENCH_NAME="$run_name" BENCH_SERVER_BIN="$bin" BENCH_HARNESS_BIN="$harness" \
    scripts/bench.sh "$backend" "$@" >/dev/null
}
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    run "$name-a-r$round" "$a_bin" "${@}"
    run "$name-b-r$round" "$b_bin" "${@}"
  else
    run "$name-b-r$round" "$b_bin" "${@}"
    run "$name-a-r$round" "$a_bin" "${@}"
  fi
done
scripts/bench-pairs.py bench-results "$name" "$backend"
