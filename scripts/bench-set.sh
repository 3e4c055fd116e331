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
set -euo pipefail
cd "$(dirname "$0")/.."

name="${1:?usage: scripts/bench-set.sh NAME}"
rounds="${ROUNDS:-3}"
mkdir -p bench-results

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
