#!/usr/bin/env bash
# Compiles scripts/probes/wake-cost.c and runs it in every placement, twice, threads and processes:
# what a wake-up costs on the waker's core against the other core (see the C file). Run it on an
# otherwise idle machine; it takes about half a minute.
#
#   scripts/probes/wake-cost.sh [ROUND_TRIPS]    (default 50000)
set -euo pipefail
round_trips="${1:-50000}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cc -O2 -pthread -o "$dir/wake-cost" "$(dirname "$0")/wake-cost.c"
for round in 1 2; do
  "$dir/wake-cost" syscalls 0 - $((round_trips * 20))
  "$dir/wake-cost" memory 0 - $((round_trips * 100))
  "$dir/wake-cost" memory 0 huge $((round_trips * 100))
  for kind in threads processes; do
    "$dir/wake-cost" "$kind" 0 0 "$round_trips"
    "$dir/wake-cost" "$kind" 0 1 "$round_trips"
    "$dir/wake-cost" "$kind" -1 -1 "$round_trips"
  done
done
