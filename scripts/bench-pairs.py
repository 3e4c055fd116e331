#!/usr/bin/env python3
"""Prints the pairs of an interleaved A/B run (scripts/bench-ab.sh) side by side.

    scripts/bench-pairs.py DIR NAME BACKEND

reads DIR/NAME-{a,b}-r<N>-BACKEND.json and prints, for each round with both files, one Markdown
row per pair: for each side the level before the last (the peak, when the run had one) → the last
level's rate, how busy the machine was in it, its CPU per iteration, and the worst p99 among the
step-up's RPCs with the server's own in parentheses. Then how many pairs B's worst p99 was lower
and higher in. Only the last level is compared: with `--rate 70%` that is the paced one.
"""

import glob
import json
import os
import re
import sys

RPCS = ("CreateLoginFlow", "SubmitLoginCode", "WhoAmI")


def worst(level):
    present = [level["rpcs"][rpc] for rpc in RPCS if rpc in level["rpcs"]]
    if not present:
        present = list(level["rpcs"].values())
    slowest = max(present, key=lambda rpc: rpc["p99_ms"])
    own = (slowest.get("server") or {}).get("p99_ms")
    return slowest["p99_ms"], own


def cell(report):
    levels = report["levels"]
    last = levels[-1]
    rate = f"{last['per_second']:,.1f}/s"
    if len(levels) > 1:
        rate = f"{levels[-2]['per_second']:,.1f} → {rate}"
    busy = last["usage"]["machine_cpu_busy"]
    cores = report.get("machine", {}).get("cpus") or os.cpu_count()
    per_iteration = busy * cores * 1e6 / last["per_second"] if last["per_second"] else 0
    p99, own = worst(last)
    own_text = f" ({own:.1f})" if own is not None else ""
    return f"{rate}, {busy * 100:.0f} %, {per_iteration:,.0f} µs, {p99:.1f}{own_text} ms", p99


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: bench-pairs.py DIR NAME BACKEND")
    folder, name, backend = sys.argv[1:]
    rounds = sorted(
        int(match.group(1))
        for path in glob.glob(os.path.join(folder, f"{name}-a-r*-{backend}.json"))
        if (match := re.search(rf"-a-r(\d+)-{re.escape(backend)}\.json$", path))
    )
    rows = []
    lower = higher = 0
    for number in rounds:
        sides = []
        for side in ("a", "b"):
            path = os.path.join(folder, f"{name}-{side}-r{number}-{backend}.json")
            if not os.path.exists(path):
                break
            with open(path) as f:
                sides.append(cell(json.load(f)))
        if len(sides) < 2:
            continue
        (a_text, a_p99), (b_text, b_p99) = sides
        lower += b_p99 < a_p99
        higher += b_p99 > a_p99
        rows.append(f"| {number} | {a_text} | {b_text} |")
    if not rows:
        sys.exit(f"no pair of {name}-{{a,b}}-r<N>-{backend}.json in {folder}")
    print("| round | A | B |")
    print("|---|---|---|")
    print("\n".join(rows))
    print(f"\nB's worst p99 lower in {lower} pairs of {len(rows)}, higher in {higher}.")


if __name__ == "__main__":
    main()
