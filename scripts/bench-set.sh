#!/usr/bin/env bash
# One set of the figures docs/performance.md records after each pass, in one command:
#
#   scripts/bench-set.sh NAME
#
# the sweep on each backend (`scripts/bench.sh postgres`, then `embedded`), then ROUNDS (default
# 3) rounds of the step-up at 70 % of the peak, Postgres + Redis at 128 users and embedded at 64,
# alternating. Files go to bench-results/NAME-*; each run's output to bench-results/NAME-*.out.
# At the end the set's tables are printed in the document's format (scripts/bench-summary.py).
# About 15 minutes on the 2-core development machine; nothing else should run meanwhile.
#
# The server and the harness are built once, before the first run, and every run uses copies of
# them: `scripts/bench.sh` alone builds the tree as it finds it, so an edit made while a set ran
# changed the binaries of the runs after it. The files name the commit the build was made from
# (BENCH_GIT_COMMIT; `-dirty` if tracked files had uncommitted changes then, as the harness says of
# a tree).
set -euo pipefail
cd "$(dirname "$0")/.."

name="${1:?usage: scripts/bench-set.sh NAME}"
rounds="${ROUNDS:-3}"
mkdir -p bench-results

echo "bench-set: building release with the bench feature" >&2
commit="$(git rev-parse --short=12 HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then commit="$commit-dirty"; fi
cargo build --release --locked --features bench --bin twofold --bin twofold-bench >&2
bins="$(mktemp -d)"
trap 'rm -rf "$bins"' EXIT
cp target/release/twofold target/release/twofold-bench "$bins/"
export BENCH_SERVER_BIN="$bins/twofold" BENCH_HARNESS_BIN="$bins/twofold-bench"
export BENCH_GIT_COMMIT="$commit"

run() {
  local label="$1" backend="$2"
  shift 2
  echo "bench-set: $label ($backend), $(date -u +%H:%M:%S)" >&2
  BENCH_NAME="$label" scripts/bench.sh "$backend" "$@" >"bench-results/$label-$backend.out" 2>&1
}

run "$name" postgres
run "$name" embedded
for round in $(seq 1 "$rounds"); do
  run "$name-70pct-stepup-r$round" postgres --mode stepup --concurrency 128 --rate 70% --bound false
  run "$name-70pct-stepup-r$round" embedded --mode stepup --concurrency 64 --rate 70% --bound false
done
scripts/bench-summary.py bench-results "$name"
