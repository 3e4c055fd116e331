#!/usr/bin/env bash
# The machine's spell over time, beside what may make it. Every INTERVAL seconds (default 120),
# ROUNDS times (default 20): a system call, a load that misses the caches, on 4 KiB and on 2 MiB
# pages, and a wake-up on one core and across the two (scripts/probes/wake-cost.c); then ten
# seconds of one user doing step-ups on Postgres + Redis (scripts/bench.sh; files
# bench-results/spell-HHMMSS-postgres.*).
# One line per round. Nothing else should run meanwhile: the probes read the whole machine.
#
#   scripts/probes/spell-watch.sh [ROUNDS] [INTERVAL]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-20}"
interval="${2:-120}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cc -O2 -pthread -o "$dir/wake-cost" scripts/probes/wake-cost.c

# The figure before "ns" or "us", the first one of the line given.
figure() { awk -v unit="$2" '{ for (i = 2; i <= NF; i++) if ($i == unit) { print $(i - 1); exit } }' <<<"$1"; }

echo "| time (UTC) | system call | load, 4 KiB pages | load, 2 MiB pages | wake-up on one core: round trip (CPU) | wake-up across cores: round trip (CPU) | one user: step-ups/s | machine CPU per step-up | server CPU per step-up |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  at="$(date -u +%H%M%S)"
  syscall="$("$dir/wake-cost" syscalls 0 - 1000000)"
  small="$("$dir/wake-cost" memory 0 - 5000000)"
  huge="$("$dir/wake-cost" memory 0 huge 5000000)"
  one_core="$("$dir/wake-cost" threads 0 0 20000)"
  one_core_cpu="$(sed 's/.*machine CPU *//' <<<"$one_core")"
  across="$("$dir/wake-cost" threads 0 1 20000)"
  across_cpu="$(sed 's/.*machine CPU *//' <<<"$across")"
  BENCH_NAME="spell-$at" scripts/bench.sh postgres --mode stepup --concurrency 1 --duration 10s \
    --bound false >"bench-results/spell-$at-postgres.out" 2>&1
  # The one-user figures as the sets' spell table has them: step-ups/s, machine and server CPU.
  user="$(scripts/bench-summary.py bench-results --spells "spell-$at" | tail -n 1 |
    awk -F ' [|] ' '{ print $4 " | " $5 " | " $6 }')"
  echo "| ${at:0:2}:${at:2:2} | $(figure "$syscall" us) µs | $(figure "$small" ns) ns" \
    "| $(figure "$huge" ns) ns | $(figure "$one_core" us) µs ($(figure "$one_core_cpu" us) µs)" \
    "| $(figure "$across" us) µs ($(figure "$across_cpu" us) µs) | $user |"
  if [ "$round" -lt "$rounds" ]; then sleep "$interval"; fi
done
