#!/usr/bin/env python3
"""Every 0.5 s, until killed: the CPU each kind of process used and how idle the machine was.

    scripts/probes/cpu-by-process.py OUT.jsonl

One JSON line per interval: `t` (its start, Unix seconds), `dt`, `idle`, `iowait` and `steal`
(shares of the machine, from /proc/stat), `loop_cpu_ms` (the CPU time a fixed loop took in this
process at the interval's end: it grows when the cores run slower, whatever else runs) and `ms`
(CPU milliseconds by process kind: the process's name, or for Postgres `pg:client` for a
connection and `pg:<role>` for its own processes; kernel workers together as `kworker`) and
`switches` (by the same kinds, for user-space processes: how many times their threads gave up a
core, `[voluntary, involuntary]`; voluntary is going to sleep, involuntary is being preempted).
Times come from /proc/<pid>/stat, in clock ticks (10 ms), so a kind's figure for one interval is
coarse; by-second.py adds them up per second, per-iteration.py per bench level. Time spent in
interrupts is on no process.
"""
import collections
import json
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
INTERVAL = 0.5
# /proc/<pid>/stat's flags: a kernel thread.
PF_KTHREAD = 0x00200000
# About 5 ms of one core's work here: 1 % of a core at one loop every 0.5 s.
LOOP_ROUNDS = 100_000


def fixed_loop_cpu_ms():
    """CPU time, not wall time, so that waiting for a core does not count, only its speed."""
    began = time.thread_time()
    total = 0
    for i in range(LOOP_ROUNDS):
        total += i * i % 7
    return (time.thread_time() - began) * 1000


def kind(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/comm") as f:
            name = f.read().strip()
    except OSError:
        return None
    if command.startswith("postgres: "):
        # "postgres: 15/main: walwriter", "postgres: 15/main: user db 127.0.0.1(1234) idle"
        parts = command.split(":")
        role = parts[2].strip() if len(parts) > 2 else ""
        words = role.split(" ")
        if role.startswith("autovacuum"):
            return "pg:" + " ".join(words[:2])
        if len(words) > 2:
            return "pg:client"
        return "pg:" + words[0]
    if name.startswith("kworker"):
        return "kworker"
    return name


def switches_of(pid):
    """A process's context switches, over all its threads."""
    try:
        counts = [0, 0]
        # /proc/<pid>/status counts the main thread's switches only.
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        counts[0] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        counts[1] += int(line.split()[1])
        return counts
    except OSError:
        return None


def cpu_by_pid():
    ticks = {}
    switches = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime, all threads
        # Kernel threads' switches are left out: they are many, and none of them is the bench's.
        if not int(fields[6]) & PF_KTHREAD:
            counts = switches_of(pid)
            if counts:
                switches[pid] = counts
    with open("/proc/stat") as f:
        machine = [int(x) for x in f.readline().split()[1:]]
    return ticks, switches, machine


def main():
    out = open(sys.argv[1], "w")
    before, switches_before, machine_before = cpu_by_pid()
    started = time.time()
    while True:
        time.sleep(INTERVAL)
        now_ticks, switches_now, machine_now = cpu_by_pid()
        now = time.time()
        kinds = {}

        def kind_of(pid):
            # Read once per interval: a process is named for its CPU and its switches alike.
            if pid not in kinds:
                kinds[pid] = kind(pid)
            return kinds[pid]

        used = collections.Counter()
        for pid, ticks in now_ticks.items():
            # Keyed by pid, not name: a kernel worker renames itself with its work queue. A process
            # born in the interval is counted from the next one on.
            grown = ticks - before.get(pid, ticks)
            if grown > 0:
                name = kind_of(pid)
                if name:
                    used[name] += grown * 1000 / TICK
        switched = collections.defaultdict(lambda: [0, 0])
        for pid, counts in switches_now.items():
            # A thread that ended in the interval takes its switches along; never counted below 0.
            earlier = switches_before.get(pid, counts)
            grown = [max(0, later - sooner) for later, sooner in zip(counts, earlier)]
            if any(grown):
                name = kind_of(pid)
                if name:
                    switched[name] = [a + b for a, b in zip(switched[name], grown)]
        spent = [a - b for a, b in zip(machine_now, machine_before)]
        total = sum(spent) or 1
        line = {
            "t": started,
            "dt": now - started,
            "idle": spent[3] / total,
            "iowait": spent[4] / total,
            "steal": spent[7] / total,
            "loop_cpu_ms": fixed_loop_cpu_ms(),
            "ms": used,
            "switches": switched,
        }
        out.write(json.dumps(line) + "\n")
        out.flush()
        before, switches_before, machine_before = now_ticks, switches_now, machine_now
        started = now


if __name__ == "__main__":
    main()
