#!/usr/bin/env python3
"""How often one process's threads slept and were preempted, and their CPU, over a few seconds.

    scripts/probes/threads.py PID [SECONDS]

Prints one line per thread name (threads of one name together: tokio's workers, say), highest
sleep rate first: how many threads, how many times a second they went to sleep (voluntary
switches: waiting for a socket, a lock, a timer or work) and were preempted (involuntary), and
their CPU as a share of one core. `cpu-by-process.py` gives the same counts summed per process
for a whole run; this one says which threads make them. Counts come from
/proc/PID/task/*/status, CPU from /proc/PID/task/*/stat (clock ticks, 10 ms). Threads that
start or end within the window are left out.
"""
import collections
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def snapshot(pid):
    """{thread id: (name, voluntary, involuntary, cpu ticks)} for the threads alive now."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as comm:
                name = comm.read().strip()
            with open(f"{base}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            with open(f"{base}/stat") as stat:
                # The name in parentheses may hold spaces; the fields after it do not.
                after_name = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        threads[tid] = (
            name,
            int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]),
            int(after_name[11]) + int(after_name[12]),
        )
    return threads


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: " + __doc__.strip().splitlines()[2].strip())
    pid = int(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) == 3 else 5.0
    before = snapshot(pid)
    time.sleep(seconds)
    after = snapshot(pid)
    by_name = collections.defaultdict(lambda: [0, 0, 0, 0])
    for tid, (name, slept, preempted, ticks) in after.items():
        if tid not in before:
            continue
        _, slept_before, preempted_before, ticks_before = before[tid]
        total = by_name[name]
        total[0] += 1
        total[1] += slept - slept_before
        total[2] += preempted - preempted_before
        total[3] += ticks - ticks_before
    for name, (count, slept, preempted, ticks) in sorted(
        by_name.items(), key=lambda item: -item[1][1]
    ):
        print(
            f"{name:<16} threads {count:>2}  slept/s {slept / seconds:>7.0f}  "
            f"preempted/s {preempted / seconds:>6.0f}  cpu {100 * ticks / TICK / seconds:>4.0f} %"
        )


if __name__ == "__main__":
    main()
