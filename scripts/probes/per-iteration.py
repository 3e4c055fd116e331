#!/usr/bin/env python3
"""What each kind of process spent per iteration in each level of a bench run.

    scripts/probes/cpu-by-process.py CPU.jsonl &   # beside the run
    scripts/bench.sh postgres --mode stepup --concurrency 128 --rate 70% --bound false
    scripts/probes/per-iteration.py bench-results/NAME-postgres.json CPU.jsonl

For every level of the run: its rate, how busy the machine was, and per iteration (a step-up, a
call) the CPU microseconds of the machine and of each kind of process, then how many times each
kind's threads went to sleep and were preempted. Only the sampler's intervals wholly inside the
level's measured window count. A CPU figure from fewer than a few hundred 10 ms ticks is coarse.
"""
import collections
import datetime
import json
import os
import sys

KINDS_SHOWN = 6


def window(level):
    started = datetime.datetime.fromisoformat(level["window_started_at"].replace("Z", "+00:00"))
    return started.timestamp(), started.timestamp() + level["measured_s"]


def merged(name):
    # Postgres's processes together: its connections do most of the work, its own roles the rest.
    return "postgres" if name.startswith("pg:") else name


def main():
    with open(sys.argv[1]) as f:
        run = json.load(f)
    with open(sys.argv[2]) as f:
        samples = [json.loads(line) for line in f if line.strip()]
    for level in run["levels"]:
        begin, end = window(level)
        inside = [s for s in samples if s["t"] >= begin and s["t"] + s["dt"] <= end + 0.01]
        seconds = sum(s["dt"] for s in inside)
        if not inside or not level["per_second"]:
            print(f"level at {level['window_started_at']}: no samples inside its window")
            continue
        iterations = level["per_second"] * seconds
        busy = sum((1 - s["idle"]) * s["dt"] for s in inside) / seconds
        cpu = collections.Counter()
        sleeps = collections.Counter()
        preempted = collections.Counter()
        for s in inside:
            for name, ms in s["ms"].items():
                cpu[merged(name)] += ms * 1000
            for name, (voluntary, involuntary) in s.get("switches", {}).items():
                sleeps[merged(name)] += voluntary
                preempted[merged(name)] += involuntary
        share = level.get("share_of_peak")
        offered = level.get("offered_per_second")
        if share:
            label = f"{share:.0%} of the peak"
        elif offered:
            label = f"offered {offered:g}/s"
        else:
            label = "unpaced"
        print(
            f"{label}: {level['per_second']:.1f}/s, machine {busy:.0%} busy, "
            f"{busy * os.cpu_count() * 1e6 / level['per_second']:.0f} us of CPU per iteration"
        )
        shown = [name for name, _ in cpu.most_common(KINDS_SHOWN)]
        print("  CPU us:     " + ", ".join(f"{n} {cpu[n] / iterations:.0f}" for n in shown))
        shown = [name for name, _ in (sleeps + preempted).most_common(KINDS_SHOWN)]
        print(
            "  switches:   "
            + ", ".join(
                f"{n} {sleeps[n] / iterations:.2f} + {preempted[n] / iterations:.2f}" for n in shown
            )
            + "  (slept + preempted)"
        )


if __name__ == "__main__":
    main()
