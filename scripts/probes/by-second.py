#!/usr/bin/env python3
"""A traced level's seconds beside what the machine did in each (see traced-level.sh).

    scripts/probes/by-second.py NAME

Reads bench-results/NAME-postgres.json (its last level), NAME.markers, NAME.perf.txt and
NAME.cpu.jsonl. Prints one row per second of the level: the worst p99 among its RPCs, the calls
finished, Postgres's fdatasync calls (how many, their mean and slowest time in the system call),
the new WAL segments Postgres created, the mean time the disk took for the WAL's writes (block
requests issued to completed, paired by sector), how busy the machine was (iowait counted as
idle), the share the hypervisor took (steal), the CPU time of a fixed loop (higher when the cores
ran slower) and the CPU of the server, Postgres's connections, the harness and Redis; then the
same averaged over the seconds over 20 ms and the others.
"""
import collections
import datetime
import json
import math
import re
import sys

TARGET_MS = 20.0
# Postgres's fsync of a new 16 MiB WAL segment took 6-8 ms here; its other fsyncs (the folder,
# small files) well under 1 ms.
SEGMENT_FSYNC_MS = 3.0
EVENT = re.compile(r"\s*(\S.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)")


def load_events(path):
    events = []
    with open(path) as f:
        for line in f:
            m = EVENT.match(line)
            if m:
                comm, pid, tid, at, event, rest = m.groups()
                events.append((float(at), comm, int(pid), int(tid), event, rest))
    return events


def perf_to_wall(events, markers_path):
    """The offset from perf's clock to the wall clock, from the markers' fdatasync calls: the
    first one's, checked against the last one's."""
    with open(markers_path) as f:
        markers = [line.split() for line in f if line.strip()]
    offsets = []
    for pid, wall in markers:
        for at, _comm, event_pid, _tid, event, _rest in events:
            if event_pid == int(pid) and event.endswith("sys_enter_fdatasync"):
                offsets.append(float(wall) - at)
                break
    if not offsets:
        sys.exit("no marker's fdatasync in the trace")
    drift_ms = (offsets[-1] - offsets[0]) * 1000
    if abs(drift_ms) > 1:
        print(f"warning: perf's clock drifted {drift_ms:.1f} ms from the wall clock",
              file=sys.stderr)
    return offsets[0]


def main():
    name = sys.argv[1]
    base = f"bench-results/{name}"
    with open(f"{base}-postgres.json") as f:
        level = json.load(f)["levels"][-1]
    started = datetime.datetime.fromisoformat(
        level["window_started_at"].replace("Z", "+00:00")
    ).timestamp()
    seconds = level["seconds"]

    events = load_events(f"{base}.perf.txt")
    offset = perf_to_wall(events, f"{base}.markers")

    def second(perf_at):
        # Floored, not truncated: an event just before the window is in second -1, not 0.
        return math.floor(perf_at + offset - started)

    syncs = collections.defaultdict(list)
    # A backend that fills its WAL segment creates the next one unless a checkpoint left an old
    # one to reuse: 16 MiB of zeros, then an fsync, with the WAL's lock held.
    new_segments = collections.defaultdict(list)
    writes = collections.defaultdict(list)
    entered = {}
    issued = {}
    for at, comm, _pid, tid, event, rest in events:
        if event.endswith(("sys_enter_fdatasync", "sys_enter_fsync")) and comm == "postgres":
            entered[tid] = at
        elif event.endswith("sys_exit_fdatasync") and tid in entered:
            began = entered.pop(tid)
            syncs[second(began)].append((at - began) * 1000)
        elif event.endswith("sys_exit_fsync") and tid in entered:
            began = entered.pop(tid)
            took = (at - began) * 1000
            if took >= SEGMENT_FSYNC_MS:
                new_segments[second(began)].append(took)
        elif event.endswith("block_rq_issue"):
            fields = rest.split()  # dev, rwbs, bytes, (), sector, +, sectors
            if fields[1] in ("WS", "WSM"):
                issued[(fields[1], fields[4])] = at
        elif event.endswith("block_rq_complete"):
            fields = rest.split()  # dev, rwbs, (), sector, +, sectors
            key = (fields[1], fields[3])
            if key in issued:
                began = issued.pop(key)
                writes[second(began)].append((at - began) * 1000)

    cpu = collections.defaultdict(list)
    with open(f"{base}.cpu.jsonl") as f:
        for line in f:
            sample = json.loads(line)
            # Only samples wholly inside the window: one that runs past its end holds a
            # fraction of a second without load.
            if sample["t"] < started or sample["t"] + sample["dt"] > started + len(seconds):
                continue
            middle = sample["t"] + sample["dt"] / 2
            cpu[math.floor(middle - started)].append(sample)

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    rows = []
    print(
        "second  worst p99  finished  pg fdatasync: n  mean  max  new segments  WAL write  "
        "machine  steal  loop  server  pg conns  harness  redis (CPU ms/s)"
    )
    for index, entry in enumerate(seconds):
        samples = cpu[index]
        used = collections.Counter()
        for sample in samples:
            used.update(sample["ms"])
        per_second = 1 / sum(sample["dt"] for sample in samples) if samples else float("nan")
        row = {
            "slow": entry["worst_p99_ms"] > TARGET_MS,
            "p99": entry["worst_p99_ms"],
            "finished": entry["finished"],
            "syncs": len(syncs[index]),
            "sync_mean": mean(syncs[index]),
            "sync_max": max(syncs[index], default=float("nan")),
            "segments": len(new_segments[index]),
            "write_mean": mean(writes[index]),
            "busy": 1 - mean([sample["idle"] + sample["iowait"] for sample in samples]),
            "steal": mean([sample["steal"] for sample in samples]),
            "loop": mean([sample["loop_cpu_ms"] for sample in samples]),
            "server": used["twofold"] * per_second,
            "pg": used["pg:client"] * per_second,
            "harness": used["twofold-bench"] * per_second,
            "redis": used["redis-server"] * per_second,
        }
        rows.append(row)
        print(
            f"{index:>6}  {row['p99']:>6.1f} ms  {row['finished']:>8}  {row['syncs']:>14}"
            f"  {row['sync_mean']:.2f}  {row['sync_max']:>4.1f}  {row['segments']:>12}"
            f"  {row['write_mean']:>6.3f} ms"
            f"  {row['busy']:>6.0%}  {row['steal']:>5.0%}  {row['loop']:>4.1f}"
            f"  {row['server']:>6.0f}  {row['pg']:>8.0f}"
            f"  {row['harness']:>7.0f}  {row['redis']:>5.0f}"
        )
    for slow in (True, False):
        group = [row for row in rows if row["slow"] == slow]
        if not group:
            continue
        label = f"over {TARGET_MS:.0f} ms" if slow else "the others"
        averaged = {key: mean([row[key] for row in group]) for key in group[0] if key != "slow"}
        print(
            f"{label} ({len(group)}): fdatasync {averaged['syncs']:.0f}/s,"
            f" mean {averaged['sync_mean']:.2f} ms; new segments {averaged['segments']:.2f}/s;"
            f" WAL write {averaged['write_mean']:.3f} ms;"
            f" machine {averaged['busy']:.0%}, steal {averaged['steal']:.0%},"
            f" fixed loop {averaged['loop']:.2f} ms; server {averaged['server']:.0f},"
            f" pg {averaged['pg']:.0f}, harness {averaged['harness']:.0f},"
            f" redis {averaged['redis']:.0f} ms/s; {averaged['finished']:.0f} calls"
        )


if __name__ == "__main__":
    main()
