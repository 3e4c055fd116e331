#!/usr/bin/env bash
# One step-up level at 70 % of the peak on Postgres + Redis, with the machine watched beside it:
#
#   scripts/probes/traced-level.sh NAME [twofold-bench args]
#
# runs `scripts/bench.sh postgres --mode stepup --concurrency 128 --rate 70% --bound false` (or
# the arguments given) with BENCH_NAME=NAME and, for its whole length,
#   - `perf record -a` of every fsync and fdatasync on the machine and of the block requests that
#     reach the disk (bench-results/NAME.perf.txt);
#   - each process's CPU every 0.5 s (scripts/probes/cpu-by-process.py,
#     bench-results/NAME.cpu.jsonl).
# `scripts/probes/by-second.py NAME` then puts both beside the level's seconds. This perf cannot
# stamp events with the wall clock (`--clockid` is refused here), so a marker process calls
# fdatasync at a known wall-clock time before and after the run, which ties perf's clock to the
# level's `window_started_at` (bench-results/NAME.markers). Needs root for perf. The probes cost
# the machine little (a few thousand events a second, one /proc walk every 0.5 s), but they do
# cost it: the runs say what the machine did, not how often the target is met.
set -euo pipefail
cd "$(dirname "$0")/../.."

name="${1:?usage: scripts/probes/traced-level.sh NAME [twofold-bench args]}"
shift
if [ "$#" -eq 0 ]; then
  set -- --mode stepup --concurrency 128 --rate 70% --bound false
fi
mkdir -p bench-results
out="bench-results/$name"

mark() {
  python3 - "$out.markers" <<'PY'
import os, sys, tempfile, time
with tempfile.NamedTemporaryFile() as f:
    f.write(b"marker")
    f.flush()
    at = time.time()
    os.fdatasync(f.fileno())
with open(sys.argv[1], "a") as markers:
    markers.write(f"{os.getpid()} {at}\n")
PY
}

rm -f "$out.markers"
perf record -q -a -o "$out.perf" \
  -e syscalls:sys_enter_fdatasync -e syscalls:sys_exit_fdatasync \
  -e syscalls:sys_enter_fsync -e syscalls:sys_exit_fsync \
  -e block:block_rq_issue -e block:block_rq_complete 2> "$out.perf.err" &
perf_pid=$!
python3 scripts/probes/cpu-by-process.py "$out.cpu.jsonl" &
cpu_pid=$!
stop() {
  kill "$cpu_pid" 2> /dev/null || true
  kill -INT "$perf_pid" 2> /dev/null || true
  wait "$perf_pid" 2> /dev/null || true
}
trap stop EXIT
sleep 1
mark
BENCH_NAME="$name" scripts/bench.sh postgres "$@"
mark
stop
trap - EXIT
perf script -i "$out.perf" -F comm,pid,tid,time,event,trace --ns > "$out.perf.txt" 2> /dev/null
rm -f "$out.perf"
echo "traced: $out.perf.txt, $out.cpu.jsonl; scripts/probes/by-second.py $name" >&2
